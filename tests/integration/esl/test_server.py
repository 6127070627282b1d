"""The Event Socket server over a real Switch (scripted far end), with a strict raw client.

Protocol behaviour a client sees: greeting, auth, exactly one reply per command in
order, api/bgapi, events and filters, myevents/linger, sendmsg, security limits.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from switchboard.media.core import Switch
from switchboard.media.event_socket import EslSettings, EventSocketServer
from tests.support.esl.client import EslClient

GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


async def read_until_eof(client: EslClient, timeout: float = 5.0) -> bytes:
    data = await asyncio.wait_for(client.reader.read(), timeout)
    return data


async def test_auth_good_and_bad(esl_server: EventSocketServer) -> None:
    ok = await EslClient.connect(esl_server.port)
    await ok.close()
    bad = await EslClient.connect(esl_server.port, password=None)
    bad.send("api status")  # before auth: refused but the connection stays
    reply = await bad.read()
    assert reply.raw == b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
    bad.send("auth wrong")
    rest = await read_until_eof(bad)
    assert rest == (
        b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + GOODBYE
    )


async def test_exit_sends_bye_and_notice(esl_server: EventSocketServer) -> None:
    c = await EslClient.connect(esl_server.port)
    c.send("exit")
    assert await read_until_eof(c) == (
        b"Content-Type: command/reply\nReply-Text: +OK bye\n\n"
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + GOODBYE
    )


@pytest.mark.parametrize("esl_settings", [EslSettings(port=0, heartbeat=0, auth_timeout=0.3)])
async def test_unauthenticated_connection_closed_after_timeout(
    esl_server: EventSocketServer,
) -> None:
    c = await EslClient.connect(esl_server.port, password=None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await read_until_eof(c, 5) == b""
    assert 0.2 < loop.time() - start < 3


@pytest.mark.parametrize("esl_settings", [EslSettings(port=0, heartbeat=0, allow=("10.0.0.0/8",))])
async def test_allow_list_rejects_before_greeting(esl_server: EventSocketServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", esl_server.port)
    data = await asyncio.wait_for(reader.read(), 5)
    assert data == (
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + GOODBYE
    )
    writer.close()


async def test_api_status_version_unknown_and_crlf_terminator(
    esl_server: EventSocketServer,
) -> None:
    c = await EslClient.connect(esl_server.port)
    c.writer.write(b"api status\r\n\r\n")
    frame = await c.read()
    assert frame.content_type == "api/response"
    lines = frame.text.split("\n")
    assert lines[0].startswith("UP 0 years, 0 days, 0 hours, 0 minutes, ")
    assert lines[1].endswith(" is ready") and lines[5] == "1000 session(s) max"
    assert (await c.api("version")).startswith("FreeSWITCH Version 1.10.12")
    assert await c.api("bogus 1 2") == "-ERR bogus Command not found!\n"
    assert await c.api("global_getvar hostname") == "mediasrv1"
    assert await c.api("global_getvar nope") == "-ERR no reply\n"
    assert await c.api("reloadxml") == "+OK [Success]\n"
    assert len(await c.api("create_uuid")) == 36
    await c.close()


async def test_pipelined_commands_get_one_reply_each_in_order(
    esl_server: EventSocketServer,
) -> None:
    c = await EslClient.connect(esl_server.port)
    c.writer.write(
        b"api version short\n\nevent plain CHANNEL_ANSWER\n\nbogus\n\napi show channels count\n\n"
        b"filter Unique-ID x\n\nnoevents\n\nnoevents\n\n"
    )
    frames = [await c.read() for _ in range(7)]
    assert [f.content_type for f in frames] == [
        "api/response", "command/reply", "command/reply", "api/response",
        "command/reply", "command/reply", "command/reply",
    ]  # fmt: skip
    assert frames[0].text == "1.10.12\n"
    assert [f.headers.get("Reply-Text") for f in frames[1:3]] == [
        "+OK event listener enabled plain", "-ERR command not found",
    ]  # fmt: skip
    assert frames[3].text == "\n0 total.\n"
    assert frames[4].headers["Reply-Text"] == "+OK filter added. [Unique-ID]=[x]"
    assert frames[5].headers["Reply-Text"] == "+OK no longer listening for events"
    assert frames[6].headers["Reply-Text"] == "-ERR not listening for events"
    await c.close()


async def test_originate_events_and_no_event_before_the_reply(
    esl_server: EventSocketServer,
) -> None:
    c = await EslClient.connect(esl_server.port)
    await c.command("event plain ALL")
    c.send(
        "api originate {origination_caller_id_number=1234,x=a+b%}sofia/gateway/carrier/"
        "15551230000 &park()"
    )
    first = await c.read()
    assert first.content_type == "api/response"  # events fired during the api come after it
    assert first.text.startswith("+OK ") and len(first.text) == 41
    uuid = first.text[4:].strip()
    create = await c.event("CHANNEL_CREATE", Unique_ID=uuid)
    assert create["Caller-Caller-ID-Number"] == "1234"
    assert create["Caller-Destination-Number"] == "15551230000"
    assert create["variable_x"] == "a+b%"  # survived FS URL encoding + decoding
    answer = await c.event("CHANNEL_ANSWER", Unique_ID=uuid)
    assert answer["Answer-State"] == "answered" and answer["Call-Direction"] == "outbound"
    await c.event("CHANNEL_PARK", Unique_ID=uuid)
    assert await c.api(f"uuid_kill {uuid} USER_BUSY") == "+OK\n"
    hangup = await c.event("CHANNEL_HANGUP_COMPLETE", Unique_ID=uuid)
    assert hangup["Hangup-Cause"] == "USER_BUSY" and hangup["variable_hangup_cause_q850"] == "17"
    assert int(hangup["variable_billsec"]) >= 0 and hangup["variable_start_stamp"]
    await c.event("CHANNEL_DESTROY", Unique_ID=uuid)
    await c.close()


@pytest.mark.parametrize(
    ("dial", "body"),
    [
        ("sofia/gateway/carrier/busy &park", "-ERR USER_BUSY\n"),
        ("{originate_timeout=1}sofia/gateway/carrier/never &park", "-ERR NO_ANSWER\n"),
        ("bogus/1000 &park", "-ERR CHAN_NOT_IMPLEMENTED\n"),
        ("sofia/gateway/carrier &park", "-ERR INVALID_URL\n"),
        ("error/user_busy &park", "-ERR USER_BUSY\n"),
        ("user/1000", None),
    ],
)
async def test_originate_failures(
    esl_server: EventSocketServer, dial: str, body: str | None
) -> None:
    c = await EslClient.connect(esl_server.port)
    got = await c.api(f"originate {dial}")
    assert got == (body or got) and got.startswith("-")
    if body is None:
        assert got.startswith("-USAGE: originate <call url> ")
    await c.close()


async def test_bgapi_job_uuid_and_background_job_after_reply(esl_server: EventSocketServer) -> None:
    c = await EslClient.connect(esl_server.port)
    await c.command("event json BACKGROUND_JOB")
    reply = await c.command("bgapi status", {"Job-UUID": "job-1"})
    assert reply.raw == (
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: job-1\nJob-UUID: job-1\n\n"
    )
    job = await c.event("BACKGROUND_JOB", Job_UUID="job-1")
    assert job["Job-Command"] == "status" and "Job-Command-Arg" not in job
    assert job["Job-Owner-UUID"] == "" and job["_body"].startswith("UP ")
    await c.command("event plain BACKGROUND_JOB")
    reply = await c.command("bgapi originate sofia/gateway/carrier/busy &park")
    generated = reply.headers["Job-UUID"]
    assert reply.headers["Reply-Text"] == f"+OK Job-UUID: {generated}"
    job = await c.event("BACKGROUND_JOB", Job_UUID=generated)
    assert job["Job-Owner-UUID"] == "_undef_" and job["_body"] == "-ERR USER_BUSY\n"
    assert job["Job-Command-Arg"] == "sofia/gateway/carrier/busy &park"
    await c.close()


async def test_filters_select_one_call(esl_server: EventSocketServer) -> None:
    watcher = await EslClient.connect(esl_server.port)
    ctl = await EslClient.connect(esl_server.port)
    await watcher.command("event plain CHANNEL_ANSWER")
    a = (await ctl.api("originate sofia/gateway/carrier/111 &park"))[4:].strip()
    await watcher.event("CHANNEL_ANSWER", Unique_ID=a)
    reply = await watcher.command("filter Caller-Destination-Number /^22/")
    assert reply.headers["Reply-Text"] == "+OK filter added. [Caller-Destination-Number]=[/^22/]"
    await ctl.api("originate sofia/gateway/carrier/333 &park")
    b = (await ctl.api("originate sofia/gateway/carrier/222 &park"))[4:].strip()
    got = await watcher.event("CHANNEL_ANSWER")
    assert got["Unique-ID"] == b  # 333's answer was filtered out
    await watcher.command("filter delete all")
    await ctl.api("hupall")
    await watcher.close()
    await ctl.close()


async def test_custom_subclass_via_sendevent(esl_server: EventSocketServer) -> None:
    sub = await EslClient.connect(esl_server.port)
    other = await EslClient.connect(esl_server.port)
    await sub.command("event plain CUSTOM conference::maintenance")
    r = await other.command("sendevent CUSTOM", {"Event-Subclass": "sofia::register", "X": "1"})
    assert r.headers["Reply-Text"].startswith("+OK ")
    await other.command(
        "sendevent CUSTOM", {"Event-Subclass": "conference::maintenance", "Action": "add-member"}
    )
    ev = await sub.event("CUSTOM")
    assert ev["Event-Subclass"] == "conference::maintenance" and ev["Action"] == "add-member"
    await sub.close()
    await other.close()


async def test_myevents_linger_and_sendmsg(esl_server: EventSocketServer) -> None:
    ctl = await EslClient.connect(esl_server.port)
    uuid = (await ctl.api("originate sofia/gateway/carrier/1000 &park"))[4:].strip()
    mine = await EslClient.connect(esl_server.port)
    assert (await mine.command("linger")).headers["Reply-Text"] == "-ERR not controlling a session"
    assert (await mine.command("myevents nope")).headers["Reply-Text"] == "-ERR invalid uuid"
    assert (await mine.command(f"myevents {uuid} json")).headers[
        "Reply-Text"
    ] == "+OK Events Enabled"
    assert (await mine.command(f"myevents {uuid}")).headers["Reply-Text"] == "-ERR aready enabled."
    assert (await mine.command("linger 1")).headers["Reply-Text"] == "+OK will linger 1 seconds"
    r = await mine.command("sendmsg", {"call-command": "execute", "execute-app-name": "set",
                                       "execute-app-arg": "foo=bar", "Event-UUID": "app-1"})  # fmt: skip
    assert r.headers["Reply-Text"] == "+OK"
    done = await mine.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="app-1")
    assert done["Application"] == "set" and done["Unique-ID"] == uuid
    assert await ctl.api(f"uuid_getvar {uuid} foo") == "bar"
    bad = await mine.command("sendmsg 00000000-0000-0000-0000-000000000000",
                             {"call-command": "hangup"})  # fmt: skip
    assert (
        bad.headers["Reply-Text"]
        == "-ERR invalid session id [00000000-0000-0000-0000-000000000000]"
    )
    await mine.command("sendmsg", {"call-command": "hangup", "hangup-cause": "CALL_REJECTED"})
    ev = await mine.event("CHANNEL_HANGUP")
    assert ev["Hangup-Cause"] == "CALL_REJECTED"
    notice = await mine.read()
    assert notice.headers["Content-Disposition"] == "linger"
    assert notice.headers["Controlled-Session-UUID"] == uuid
    assert notice.headers["Linger-Time"] == "1" and notice.headers["Content-Length"] == "0"
    await mine.event("CHANNEL_HANGUP_COMPLETE")  # lingering: remaining events still arrive
    await mine.event("CHANNEL_DESTROY")
    tail = await read_until_eof(mine, 5)
    assert tail.startswith(b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: ")
    assert b"Content-Disposition: disconnect\n" in tail
    await ctl.close()


async def test_uuid_commands_and_show(esl_server: EventSocketServer) -> None:
    c = await EslClient.connect(esl_server.port)
    a = (
        await c.api("originate {origination_caller_id_name='Al ice'}sofia/gateway/carrier/1 &park")
    )[4:].strip()
    b = (await c.api("originate user/1001 &park"))[4:].strip()
    assert await c.api(f"uuid_exists {a}") == "true"
    assert await c.api("uuid_exists nope") == "false"
    assert await c.api(f"uuid_setvar {a} k some value") == "+OK\n"
    assert await c.api(f"uuid_getvar {a} k") == "some value"
    assert await c.api(f"uuid_getvar {a} unset") == "_undef_"
    assert await c.api("uuid_getvar nope k") == "-ERR No such channel!\n"
    assert await c.api(f"uuid_setvar {a}") == "-ERR No variable specified\n"
    assert await c.api("uuid_kill nope") == "-ERR No such channel!\n"
    assert await c.api(f"uuid_answer {a}") == "+OK\n"
    assert await c.api(f"uuid_broadcast {a} set::bar=1") == "+OK Message sent\n"
    assert await c.api("uuid_broadcast nope /x.wav") == "-ERR invalid uuid\n"
    assert await c.api(f"uuid_record {a} start /tmp/x.wav") in (
        "+OK Success\n",
        "-ERR Cannot record session!\n",
    )
    assert await c.api("uuid_record nope start /tmp/x.wav") == "-ERR Cannot locate session!\n"
    assert (await c.api(f"uuid_transfer {a}")).startswith("-USAGE")
    assert await c.api("uuid_transfer nope 1000") == "-ERR No such channel!\n"
    assert await c.api(f"uuid_send_dtmf {a} 123") == f"+OK {a} sent DTMF 123.\n"
    dump = await c.api(f"uuid_dump {a}")
    assert f"Unique-ID: {a}\n" in dump and "Caller-Caller-ID-Name: Al%20ice\n" in dump
    table = await c.api("show channels")
    lines = table.split("\n")
    assert lines[0].startswith("uuid,direction,created,created_epoch,name,state,cid_name")
    assert table.endswith("\n\n2 total.\n")
    rows = json.loads(await c.api("show channels as json"))
    assert rows["row_count"] == 2 and {r["uuid"] for r in rows["rows"]} == {a, b}
    assert all(isinstance(v, str) for r in rows["rows"] for v in r.values())
    assert await c.api("show calls count") == "\n2 total.\n"
    assert await c.api("hupall normal_clearing k other") == (
        "+OK hangup all channels matching [k]=[other] with cause: NORMAL_CLEARING\n"
    )
    assert await c.api(f"uuid_exists {a}") == "true"
    assert await c.api(f"uuid_bridge {a} {b}") == f"+OK {b}\n"
    assert await c.api("uuid_bridge nope nada") == "-ERR Invalid uuid\n"
    assert await c.api("hupall") == "+OK hangup all channels with cause MANAGER_REQUEST\n"
    deadline = asyncio.get_running_loop().time() + 3
    while await c.api("show channels as json") != '{"row_count": 0}\n':
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await c.close()


async def test_blocking_originate_does_not_stall_other_connections(
    esl_server: EventSocketServer,
) -> None:
    slow = await EslClient.connect(esl_server.port)
    slow.send("api originate sofia/gateway/carrier/slow800 &park")
    fast = await EslClient.connect(esl_server.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        assert (await fast.api("status")).startswith("UP ")
    assert loop.time() - start < 0.5
    reply = await slow.reply_frame(("api/response",), 5)
    assert reply.text.startswith("+OK ")
    await slow.close()
    await fast.close()


async def test_client_disconnecting_mid_originate_call_still_completes(
    esl_server: EventSocketServer, esl_switch: Switch
) -> None:
    watcher = await EslClient.connect(esl_server.port)
    await watcher.command("event plain CHANNEL_ANSWER")
    c = await EslClient.connect(esl_server.port)
    c.send("api originate {origination_caller_id_number=4242}sofia/gateway/carrier/slow200 &park")
    await asyncio.sleep(0.05)  # let the server read the command, then vanish
    c.writer.transport.abort()
    ev = await watcher.event("CHANNEL_ANSWER", Caller_Caller_ID_Number="4242")
    assert esl_switch.channel(ev["Unique-ID"]) is not None
    await watcher.close()


async def test_garbage_and_oversized_input(esl_server: EventSocketServer) -> None:
    g = await EslClient.connect(esl_server.port, password=None)
    g.writer.write(b"\x00\xff\xfe garbage\n\n\x01\x02\x03\n\n")
    for _ in range(2):
        assert (await g.read()).headers["Reply-Text"] == "-ERR command not found"
    g.writer.write(b"A" * 200_000)  # a header block that never ends
    assert await read_until_eof(g) == b""
    big = await EslClient.connect(esl_server.port)
    big.writer.write(b"sendmsg x\ncontent-length: 99999999\n\n")
    assert await read_until_eof(big) == b""  # dropped without a reply, as FS does
    neg = await EslClient.connect(esl_server.port)
    neg.writer.write(b"sendmsg x\ncontent-length: -5\n\n")
    assert await read_until_eof(neg) == b""
    ok = await EslClient.connect(esl_server.port)  # the server is still serving
    assert (await ok.api("status")).startswith("UP ")
    await ok.close()


@pytest.mark.parametrize(
    "esl_settings",
    [EslSettings(port=0, heartbeat=0, max_queue=50, max_lost=20, write_buffer_limit=8192)],
)
async def test_slow_subscriber_is_disconnected_memory_stays_bounded(
    esl_server: EventSocketServer, esl_switch: Switch
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", esl_server.port)
    writer.write(b"auth ClueCon\n\nevent plain ALL\n\n")
    await asyncio.sleep(0.1)  # commands processed; now never read again
    healthy = await EslClient.connect(esl_server.port)
    await healthy.command("event plain HEARTBEAT")
    filler = "x" * 4000
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    fired = 0
    max_queue_seen = 0
    while len(esl_server.connections) == 2 and loop.time() < deadline and fired < 50_000:
        for _ in range(50):
            esl_switch.fire(
                esl_switch.make_event("CUSTOM", {"Filler": filler}, subclass="test::fill")
            )
            fired += 1
        for conn in esl_server.connections:
            max_queue_seen = max(max_queue_seen, len(conn.queue))
        await asyncio.sleep(0.001)
    assert len(esl_server.connections) == 1, (
        f"slow subscriber not disconnected after {fired} events"
    )
    assert max_queue_seen <= 50 and esl_server.lost_events > 20
    esl_switch.fire(esl_switch.make_event("HEARTBEAT"))
    assert (await healthy.event("HEARTBEAT"))["Event-Name"] == "HEARTBEAT"
    data = b""
    while True:  # the slow client finally reads: its last frame is FreeSWITCH's kill notice
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        if not chunk:
            break
        data += chunk
    assert data.endswith(b"Content-Length: 39\n\nkilled listener because of lost events\n")
    writer.close()
    await healthy.close()


@pytest.mark.parametrize("esl_settings", [EslSettings(port=0, heartbeat=0.2)])
async def test_heartbeat(esl_server: EventSocketServer) -> None:
    c = await EslClient.connect(esl_server.port)
    await c.command("event json HEARTBEAT")
    hb = await c.event("HEARTBEAT", timeout=3)
    assert hb["Event-Info"] == "System Ready" and hb["Up-Time"].startswith("0 years, ")
    assert hb["Max-Sessions"] == "1000" and hb["Event-Sequence"].isdigit()
    await c.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "esl.crt", tmp / "esl.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls(esl_switch: Switch, tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    async with EventSocketServer(
        esl_switch, EslSettings(port=0, heartbeat=0, ssl=server_ctx)
    ) as srv:
        c = await EslClient.connect(srv.port, ssl_ctx=client_ctx)
        assert (await c.api("status")).startswith("UP ")
        await c.close()
        # A plaintext client gets no greeting from a TLS port: the handshake fails, closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"auth ClueCon\n\n" * 200)
        data = await asyncio.wait_for(reader.read(), 5)
        assert b"auth/request" not in data and b"accepted" not in data
        writer.close()


async def test_100_concurrent_originates_over_10_connections(
    esl_server: EventSocketServer, esl_switch: Switch
) -> None:
    clients = [await EslClient.connect(esl_server.port) for _ in range(10)]
    for c in clients:
        await c.command("event plain BACKGROUND_JOB")
    jobs: dict[str, EslClient] = {}
    for i, c in enumerate(clients):
        for j in range(10):
            job = f"job-{i}-{j}"
            jobs[job] = c
            c.send("bgapi originate sofia/gateway/carrier/slow300 &park", {"Job-UUID": job})
    results: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    for c in clients:
        while sum(1 for j, cc in jobs.items() if cc is c and j in results) < 10:
            assert loop.time() < deadline, f"only {len(results)} of 100 jobs finished"
            frame = await c.read(deadline - loop.time())
            if frame.content_type == "command/reply":
                assert frame.headers["Reply-Text"].startswith("+OK Job-UUID: job-")
                continue
            ev = frame.event()
            results[ev["Job-UUID"]] = ev["_body"]
    assert set(results) == set(jobs)
    uuids = {body[4:].strip() for body in results.values()}
    assert all(body.startswith("+OK ") for body in results.values()) and len(uuids) == 100
    assert len(esl_switch.channels) == 100  # all 100 parked at once: they were concurrent
    assert await clients[0].api("show channels count") == "\n100 total.\n"
    assert (await clients[0].api("hupall")).startswith("+OK")
    for c in clients:
        await c.close()


@pytest.mark.parametrize(
    "esl_settings", [EslSettings(port=0, heartbeat=0, write_buffer_limit=8192)]
)
async def test_pipelining_client_that_never_reads_stays_bounded(
    esl_server: EventSocketServer,
) -> None:
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a stalled reader
    sock.connect(("127.0.0.1", esl_server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    n = 20_000
    writer.write(b"auth ClueCon\n\n" + b"api status\n\n" * n)  # ~8 MB of replies owed
    loop = asyncio.get_running_loop()
    peak = 0
    deadline = loop.time() + 5
    while loop.time() < deadline:
        for conn in esl_server.connections:
            peak = max(peak, conn.writer.transport.get_write_buffer_size())
        if peak > 8192:  # backed up: keep watching a little while it stays blocked
            deadline = min(deadline, loop.time() + 0.3)
        await asyncio.sleep(0.005)
    assert 8192 < peak <= 8192 + 1024  # it did back up, by at most one reply past the limit
    marker = b"Content-Type: api/response"
    seen, tail = 0, b""  # now read everything: every command got its reply
    while seen < n:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
        assert chunk
        buf = tail + chunk
        seen += buf.count(marker)
        tail = buf[-(len(marker) - 1) :]
    assert seen == n
    writer.close()


async def test_every_frame_satisfies_go_eventsocket_rules(esl_server: EventSocketServer) -> None:
    """go-eventsocket exits on an unknown Content-Type, panics on an empty Reply-Text or a
    short ``-E`` text, and QueryUnescapes values (a raw '+' would become a space)."""
    import re

    c = await EslClient.connect(esl_server.port)
    await c.command("event plain ALL")
    for cmd in ["api originate {x=a+b c%,y=100%25}sofia/gateway/carrier/1 &park", "api bogus",
                "api uuid_kill nope", "api originate", "bgapi status", "filter X", "linger",
                "myevents nope", "sendmsg nope", "api global_getvar nope", "nixevent FOO",
                "api hupall", "log", "nolog", "api show calls as json"]:  # fmt: skip
        c.send(cmd)
    await asyncio.sleep(0.5)
    c.send("exit")
    data = await read_until_eof(c)
    allowed = {"command/reply", "api/response", "text/event-plain", "text/disconnect-notice"}
    frames = 0
    while data:
        head, _, rest = data.partition(b"\n\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\n"))
        length = int(headers.get("Content-Length", "0"))
        body, data = rest[:length], rest[length:]
        frames += 1
        kind = headers["Content-Type"]
        assert kind in allowed, kind
        if kind == "command/reply":
            text = headers["Reply-Text"]
            assert text and (not text.startswith("-E") or len(text) >= 5), text
        if kind == "api/response":
            assert len(body) >= 2 and (not body.startswith(b"-E") or len(body) >= 5), body
        if kind == "text/event-plain":
            inner, sep, _ = body.partition(b"\n\n")
            assert sep
            for line in inner.decode("ascii").split("\n"):
                name, value = line.split(": ", 1)
                assert re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name), name
                assert "+" not in value and " " not in value, line
                assert not re.search(r"%(?![0-9A-F]{2})", value), line
    assert frames > 30


async def test_originate_returns_on_early_media_unless_ignore_early_media(
    esl_server: EventSocketServer,
) -> None:
    c = await EslClient.connect(esl_server.port)
    body = await c.api("originate sofia/gateway/carrier/early &park")
    assert body.startswith(
        "+OK "
    )  # 183 with SDP counts as success by default (switch_ivr_originate.c)
    assert await c.api(f"uuid_getvar {body[4:].strip()} uuid") == body[4:].strip()
    body = await c.api(
        "originate {ignore_early_media=true,originate_timeout=1}sofia/gateway/carrier/early &park"
    )
    assert body == "-ERR NO_ANSWER\n"
    await c.close()
