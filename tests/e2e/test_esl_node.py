"""Event Socket against a real media node: SIP to SIPp, third-party ESL clients.

The node (switch core + SIP UA + ESL server) runs in the test's event loop on free
loopback ports; SIPp plays the carrier (gateway ``carrier``) and user 1000's phone.
genesis, greenswitch and modesl drive it exactly as operators' programs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from switchboard.config import load
from switchboard.media.cdr import MemoryCdrSink
from switchboard.media.node import MediaNode
from tests.support.esl.client import EslClient
from tests.support.esl.thirdparty import CLIENTS, run_genesis_concurrent
from tests.support.net import free_port
from tests.support.sipp import SCENARIOS

pytestmark = [
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (APT_PACKAGES)"),
]
SIPP_DIR = SCENARIOS
PLAY_SECONDS = 2.2  # the prompt the carrier hears; billsec counts whole seconds: 2


def tone(path: Path, seconds: float) -> Path:
    """A 8 kHz mono 16-bit WAV of a 440 Hz tone (made here: no fixture files needed)."""
    import math

    n = int(8000 * seconds)
    frames = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return path


class Sipp:
    """One SIPp process on a free UDP port; stopped (and reaped) by the fixture."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    async def stop(self) -> str:
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), 10)
        except TimeoutError:
            self.proc.kill()
            _, err = await self.proc.communicate()
        return (err or b"").decode(errors="replace")[-2000:]


@pytest.fixture
async def sipp(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Sipp] = []

    async def start(scenario: str, *args: str, remote: str | None = None) -> Sipp:
        port = free_port("udp")
        cmd = ["sipp", "-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-p", str(port),
               "-mp", str(free_port("udp")), "-nostdin", "-trace_err", *args]  # fmt: skip
        if remote:
            cmd.append(remote)
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        s = Sipp(proc, port)
        started.append(s)
        await asyncio.sleep(0.2)  # bound its socket
        return s

    yield start
    for s in started:
        await s.stop()


@pytest.fixture
async def carrier(sipp: Callable[..., Any]) -> Sipp:
    return await sipp("esl_uas.xml", "-d", "100", "-l", "200")


@pytest.fixture
async def node(tmp_path: Path, carrier: Sipp) -> AsyncIterator[MediaNode]:
    rtp = random.randrange(20000, 60000, 2000)
    cfg = load(
        environ={},
        overrides={
            "media": {
                "listen": ["udp:127.0.0.1:0"],
                "rtp_port_start": rtp,
                "rtp_port_end": rtp + 1999,
            },
            "esl": {"listen": "127.0.0.1:0", "heartbeat": 0},
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.port}"}},
            "users": {"1000": {"password": "secret1000"}, "1002": {"password": "x"}},
            "limits": {"max_sessions": 1000, "sessions_per_second": 1000},
        },
    )
    sink = MemoryCdrSink()
    n = MediaNode(cfg, "media-1", state_dir=tmp_path, cdr_sink=sink, admin=False)
    await n.start()
    n.cdrs = sink  # type: ignore[attr-defined]
    yield n
    await n.stop()


def esl_port(node: MediaNode) -> int:
    return int(node.esl.port)


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_playback_call_via_gateway_with_third_party_client(
    node: MediaNode, client: str, tmp_path: Path
) -> None:
    wav = tone(tmp_path / "message.wav", PLAY_SECONDS)
    cid = str(random.randrange(10**9, 10**10))
    out = await CLIENTS[client](
        esl_port(node), cid, "sofia/gateway/carrier/15551230000", f"&playback({wav})", False
    )
    assert out.get("returncode", 0) == 0, out
    assert out["bad_auth"] and "accepted" not in str(out["bad_auth"]), out  # wrong password
    assert out["status"].startswith("UP 0 years, 0 days, "), out
    names = [e["name"] for e in out["events"]]
    assert names == ["CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"], out
    assert {e["cid"] for e in out["events"]} == {cid}  # the client's filter held
    done = out["events"][-1]
    assert done["cause"] == "NORMAL_CLEARING", out  # the one-app extension ran out
    assert done["billsec"] == "2", out  # 2.2 s of audio → 2 whole seconds, as FS counts
    assert int(done["duration"]) >= 2
    result = out.get("originate") or out.get("bgapi")
    assert result == f"+OK {done['uuid']}\n", out
    (cdr,) = [c for c in node.cdrs.records if c.caller_id == cid]  # type: ignore[attr-defined]
    assert (cdr.billsec, cdr.disposition, cdr.carrier) == (2, "ANSWERED", "carrier")


async def registered_contacts(node: MediaNode, user: str, timeout: float = 5.0) -> list[str]:
    """The Contacts the node's registrar holds for ``user``, once it holds any."""
    assert node.ua is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (bound := node.ua.registrar.contacts(user, time.time())):
        assert loop.time() < deadline, f"{user} not registered within {timeout} s"
        await asyncio.sleep(0.05)
    return [str(b.contact.uri) for b in bound]


async def test_user_park_to_registered_sipp_phone(
    node: MediaNode, sipp: Callable[..., Any]
) -> None:
    c = await EslClient.connect(esl_port(node))
    assert await c.api("originate user/1000 &park") == "-ERR USER_NOT_REGISTERED\n"
    # SIPp registers itself as 1000 (401, then MD5 digest with the config's password) and
    # takes the node's call in its out-of-call scenario; see phone_register.xml.
    password = node.cfg.users["1000"].password
    phone = await sipp(
        "phone_register.xml", "-oocsf", str(SIPP_DIR / "phone_answer.xml"),
        "-s", "1000", "-au", "1000", "-ap", password, "-m", "1", "-timeout", "40s",
        remote=f"127.0.0.1:{node.sip_port}",
    )  # fmt: skip
    assert await registered_contacts(node, "1000") == [f"sip:1000@127.0.0.1:{phone.port}"]
    await c.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    body = await c.api("originate {origination_caller_id_number=4444}user/1000 &park")
    assert body.startswith("+OK "), body
    uuid = body[4:].strip()
    answer = await c.event("CHANNEL_ANSWER", Unique_ID=uuid)
    assert answer["Caller-Caller-ID-Number"] == "4444"
    assert answer["Caller-Destination-Number"] == "1000"
    assert await c.api(f"uuid_kill {uuid}") == "+OK\n"
    ev = await c.event("CHANNEL_HANGUP_COMPLETE", Unique_ID=uuid)
    assert ev["Hangup-Cause"] == "NORMAL_CLEARING"
    assert await c.api("originate user/1001 &park") == "-ERR SUBSCRIBER_ABSENT\n"
    assert await c.api("originate user/1002 &park") == "-ERR USER_NOT_REGISTERED\n"
    await c.close()
    with contextlib.suppress(TimeoutError):  # the phone ends by itself after its call (-m 1)
        await asyncio.wait_for(phone.proc.wait(), 10)
    err = await phone.stop()
    assert phone.proc.returncode == 0, err  # registered, then INVITE, ACK, BYE: one call


async def test_100_concurrent_originates_over_10_connections(node: MediaNode) -> None:
    """Ten genesis connections, ten ``bgapi originate`` each, all in flight at once."""
    out = await run_genesis_concurrent(
        esl_port(node), 10, 10, "sofia/gateway/carrier/1555", "&park"
    )
    assert out.get("returncode", 0) == 0, out
    replies = out["replies"]
    jobs = {r["job_uuid"] for r in replies}
    assert len(replies) == 100 and len(jobs) == 100, replies
    assert all(r["reply_text"].startswith("+OK Job-UUID: ") for r in replies), replies
    results: dict[str, str] = out["results"]
    assert not out["timed_out"] and set(results) == jobs, (len(results), out["stderr"])
    bad = sorted({b for b in results.values() if not b.startswith("+OK ")})
    assert not bad, bad[:5]
    assert out["count"] == "\n100 total.\n", out["count"]
    assert out["hupall"].startswith("+OK hangup all channels"), out["hupall"]


async def test_client_disconnecting_mid_originate_call_completes_and_is_recorded(
    node: MediaNode, tmp_path: Path
) -> None:
    wav = tone(tmp_path / "short.wav", 0.5)
    watcher = await EslClient.connect(esl_port(node))
    await watcher.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    await watcher.command("filter Caller-Caller-ID-Number 5550001")
    quitter = await EslClient.connect(esl_port(node))
    quitter.send(
        f"api originate {{origination_caller_id_number=5550001}}sofia/gateway/carrier/1777 "
        f"&playback({wav})"
    )
    await asyncio.sleep(0.05)
    quitter.writer.transport.abort()  # gone before the carrier answers (-d 100)
    answer = await watcher.event("CHANNEL_ANSWER", timeout=10)
    done = await watcher.event("CHANNEL_HANGUP_COMPLETE", timeout=10)
    assert done["Unique-ID"] == answer["Unique-ID"] and done["Hangup-Cause"] == "NORMAL_CLEARING"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not [c for c in node.cdrs.records if c.caller_id == "5550001"]:  # type: ignore[attr-defined]
        assert loop.time() < deadline, "no CDR for the call"
        await asyncio.sleep(0.02)
    await watcher.close()


async def test_garbage_and_oversized_input_leave_the_node_serving(node: MediaNode) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", esl_port(node))
    await r.readuntil(b"\n\n")
    w.write(bytes(range(256)) * 4 + b"\n\n" + b"sendmsg\ncontent-length: 999999999\n\n")
    rest = await asyncio.wait_for(r.read(), 5)
    assert rest.count(b"Reply-Text: -ERR command not found") >= 1
    c = await EslClient.connect(esl_port(node))
    assert (await c.api("status")).startswith("UP ")
    await c.close()


async def test_record_and_conference_events(node: MediaNode, tmp_path: Path) -> None:
    c = await EslClient.connect(esl_port(node))
    await c.command("event json RECORD_START RECORD_STOP CUSTOM conference::maintenance")
    uuid = (await c.api("originate sofia/gateway/carrier/1888 &park"))[4:].strip()
    path = tmp_path / "rec.wav"
    assert await c.api(f"uuid_record {uuid} start {path}") == "+OK Success\n"
    start = await c.event("RECORD_START", Unique_ID=uuid)
    assert start["Record-File-Path"] == str(path)
    assert await c.api(f"uuid_kill {uuid}") == "+OK\n"
    stop = await c.event("RECORD_STOP", Unique_ID=uuid)
    assert stop["Record-File-Path"] == str(path) and path.exists()
    member = (await c.api("originate sofia/gateway/carrier/1999 &conference(sales)"))[4:].strip()
    ev = await c.event("CUSTOM", Unique_ID=member)
    assert ev["Event-Subclass"] == "conference::maintenance"
    assert ev["Conference-Name"] == "sales" and ev["Action"] == "add-member"
    assert (await c.api("hupall")).startswith("+OK")
    await c.close()


async def test_loopback_originate_runs_the_dialplan_on_the_b_leg(node: MediaNode) -> None:
    c = await EslClient.connect(esl_port(node))
    await c.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE DTMF")
    body = await c.api("originate {origination_caller_id_number=321}loopback/echo &park")
    assert body.startswith("+OK "), body
    a = body[4:].strip()
    answer = await c.event("CHANNEL_ANSWER", Unique_ID=a)
    assert answer["Channel-Name"] == "loopback/echo-a"
    rows = json.loads(await c.api("show channels as json"))["rows"]
    b = next(r for r in rows if r["name"] == "loopback/echo-b")
    assert b["dest"] == "echo" and b["cid_num"] == "321" and b["application"] == "echo"
    assert await c.api(f"uuid_send_dtmf {a} 5") == f"+OK {a} sent DTMF 5.\n"
    dtmf = await c.event("DTMF", Unique_ID=b["uuid"])  # the b-leg hears the a-leg's digit
    assert dtmf["DTMF-Digit"] == "5"
    assert await c.api(f"uuid_kill {a}") == "+OK\n"
    ended = {(await c.event("CHANNEL_HANGUP_COMPLETE"))["Unique-ID"] for _ in range(2)}
    assert ended == {a, b["uuid"]}
    # b-leg: answer, play the bundled prompt, hang up → the a-leg is hung up with it
    body = await c.api("originate loopback/playback &park")
    assert body.startswith("+OK "), body
    done = await c.event("CHANNEL_HANGUP_COMPLETE", timeout=15, Unique_ID=body[4:].strip())
    assert done["Hangup-Cause"] == "NORMAL_CLEARING" and int(done["variable_billsec"]) >= 1
    await c.close()


async def test_reloadxml_rereads_the_dialplan_file(tmp_path: Path) -> None:
    plan = tmp_path / "dialplan.toml"
    plan.write_text(
        '[[rules]]\nname = "old"\ndestination = "^old$"\nactions = ["answer", "park"]\n'
    )
    rtp = random.randrange(20000, 60000, 2000)
    cfg = load(
        environ={},
        overrides={
            "media": {
                "listen": ["udp:127.0.0.1:0"],
                "rtp_port_start": rtp,
                "rtp_port_end": rtp + 999,
            },
            "esl": {"listen": "127.0.0.1:0", "heartbeat": 0},
            "dialplan": {"file": str(plan)},
        },
    )
    n = MediaNode(cfg, "media-1", state_dir=tmp_path, cdr_sink=MemoryCdrSink(), admin=False)
    await n.start()
    try:
        c = await EslClient.connect(esl_port(n))
        assert (await c.api("originate loopback/old &park")).startswith("+OK ")
        assert await c.api("originate loopback/new &park") == "-ERR NO_ROUTE_DESTINATION\n"
        plan.write_text(
            '[[rules]]\nname = "new"\ndestination = "^new$"\nactions = ["answer", "park"]\n'
        )
        assert await c.api("reloadxml") == "+OK [Success]\n"
        assert (await c.api("originate loopback/new &park")).startswith("+OK ")
        assert await c.api("originate loopback/old &park") == "-ERR NO_ROUTE_DESTINATION\n"
        await c.close()
    finally:
        await n.stop()
