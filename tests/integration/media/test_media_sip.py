"""The node's SIP user agent against a scripted peer on UDP and TCP: OPTIONS probes
(``X-Switchboard-Calls``), re-INVITE hold/resume and codec change, INFO DTMF, 481/405,
a call over TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchboard.media.events import Event
from switchboard.sdp import parse_sdp
from switchboard.sip.message import Response
from tests.support.media import start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import SDP, Peer, final, request

pytestmark = [pytest.mark.timeout(60)]


async def test_options_probe_reports_active_calls_and_hold_reinvite_info(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path, {"media": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]}}
    )
    got: list[Event] = []
    node.switch.events.subscribe(got.append)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "OPTIONS", port, call_id="o1", cseq=1, branch="o1"), port)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        assert r.headers.get("X-Switchboard-Calls") == "0" and "INVITE" in (
            r.headers.get("Allow") or ""
        )

        offer = SDP.format(ver=1, port=40000, fmt="0 8", dir="sendrecv")
        peer.send(
            request(peer, "INVITE", port, call_id="c1", cseq=1, branch="i1", body=offer), port
        )
        ok200 = await peer.expect(final)
        assert isinstance(ok200, Response) and ok200.status == 200
        tag = ok200.to_tag or ""
        answer = parse_sdp(ok200.body)
        assert answer.media[0].formats == ["0", "101"] and answer.media[0].direction == "sendrecv"
        peer.send(request(peer, "ACK", port, call_id="c1", cseq=1, branch="a1", to_tag=tag), port)

        peer.send(request(peer, "OPTIONS", port, call_id="o2", cseq=1, branch="o2"), port)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.headers.get("X-Switchboard-Calls") == "1"

        # hold (RFC 3264 §8.4), then resume with a codec change to PCMA
        hold = SDP.format(ver=2, port=40000, fmt="0", dir="sendonly")
        peer.send(
            request(peer, "INVITE", port, call_id="c1", cseq=2, branch="h1", to_tag=tag, body=hold),
            port,
        )
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        assert parse_sdp(r.body).media[0].direction == "recvonly"
        assert parse_sdp(r.body).origin.version > answer.origin.version
        peer.send(request(peer, "ACK", port, call_id="c1", cseq=2, branch="h2", to_tag=tag), port)
        await async_wait_until(
            lambda: any(e.name == "CHANNEL_HOLD" for e in got), what="CHANNEL_HOLD"
        )
        resume = SDP.format(ver=3, port=40002, fmt="8", dir="sendrecv")
        peer.send(
            request(
                peer, "INVITE", port, call_id="c1", cseq=3, branch="r1", to_tag=tag, body=resume
            ),
            port,
        )
        r = await peer.expect(final)
        assert isinstance(r, Response) and parse_sdp(r.body).media[0].formats[0] == "8"
        peer.send(request(peer, "ACK", port, call_id="c1", cseq=3, branch="r2", to_tag=tag), port)
        await async_wait_until(
            lambda: any(e.name == "CHANNEL_UNHOLD" for e in got), what="CHANNEL_UNHOLD"
        )
        [s] = list(node.switch.sessions)
        assert s.channel.read_codec == "PCMA" and s.media.codec.name == "PCMA"
        assert s.media.remote == ("127.0.0.1", 40002)

        # a bad re-offer is refused and changes nothing
        peer.send(request(peer, "INVITE", port, call_id="c1", cseq=4, branch="x1", to_tag=tag,
                          body=SDP.format(ver=4, port=40004, fmt="18", dir="sendrecv")), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 488
        peer.send(request(peer, "ACK", port, call_id="c1", cseq=4, branch="x1", to_tag=tag), port)
        assert s.media.codec.name == "PCMA" and s.media.remote == ("127.0.0.1", 40002)

        # SIP INFO DTMF (application/dtmf-relay)
        peer.send(request(peer, "INFO", port, call_id="c1", cseq=5, branch="d1", to_tag=tag,
                          body="Signal=7\nDuration=160\n", ctype="application/dtmf-relay"), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        dtmf = [e for e in got if e.name == "DTMF"]
        assert [(e.headers["DTMF-Digit"], e.headers["DTMF-Source"]) for e in dtmf] == [
            ("7", "ENDPOINT")
        ]

        # unknown dialog and unknown method
        peer.send(
            request(peer, "BYE", port, call_id="nope", cseq=1, branch="b0", to_tag="zz"), port
        )
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 481
        peer.send(request(peer, "PUBLISH", port, call_id="p1", cseq=1, branch="p1"), port)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 405

        peer.send(request(peer, "BYE", port, call_id="c1", cseq=6, branch="b1", to_tag=tag,
                          extra='Reason: Q.850;cause=17;text="USER_BUSY"\n'), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].hangup_cause == "USER_BUSY"  # RFC 3326 Reason wins
    finally:
        peer.close()
        await node.stop()


async def test_call_over_tcp_and_node_hangup_sends_bye(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path,
        {
            "media": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "dialplan": {"rules": [{"name": "s", "destination": "^echo$", "actions": ["answer", "sleep 300", "hangup USER_BUSY"]}]},
        },
    )  # fmt: skip
    assert node.ua is not None
    peer = await Peer.tcp(node.ua.tcp_port)
    try:
        offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
        peer.send(request(peer, "INVITE", 0, call_id="t1", cseq=1, branch="t1", body=offer), 0)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        assert "transport=tcp" in (r.headers.get("Contact") or "")
        peer.send(
            request(peer, "ACK", 0, call_id="t1", cseq=1, branch="t2", to_tag=r.to_tag or ""), 0
        )
        bye = await peer.expect(lambda m: not isinstance(m, Response))
        assert bye.method == "BYE"  # type: ignore[attr-defined]
        assert "cause=17" in (bye.headers.get("Reason") or "")  # type: ignore[attr-defined]
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].hangup_cause == "USER_BUSY"
    finally:
        peer.close()
        await node.stop()


async def test_late_offer_invite_without_sdp_gets_our_offer_and_the_ack_answers(
    tmp_path: Path,
) -> None:
    node, cdrs = await start_node(tmp_path)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "INVITE", port, call_id="l1", cseq=1, branch="l1"), port)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        offer = parse_sdp(r.body)
        assert offer.media[0].formats[:2] == ["0", "8"]  # our codecs, in preference order
        answer = SDP.format(ver=1, port=40010, fmt="8", dir="sendrecv")
        peer.send(request(peer, "ACK", port, call_id="l1", cseq=1, branch="l2", to_tag=r.to_tag or "",
                          body=answer), port)  # fmt: skip
        await async_wait_until(lambda: any(s.media is not None and s.media.remote == ("127.0.0.1", 40010)
                                     for s in node.switch.sessions), what="answer applied")  # fmt: skip
        [s] = list(node.switch.sessions)
        assert s.media.codec.name == "PCMA"
        peer.send(
            request(peer, "BYE", port, call_id="l1", cseq=2, branch="l3", to_tag=r.to_tag or ""),
            port,
        )
        assert isinstance(await peer.expect(final), Response)
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
    finally:
        peer.close()
        await node.stop()


async def test_bad_headers_and_garbage_get_errors_and_leave_the_node_working(
    tmp_path: Path,
) -> None:
    node, cdrs = await start_node(tmp_path)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        good = request(peer, "INVITE", port, call_id="g1", cseq=1, branch="g1",
                       body=SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv"))  # fmt: skip
        bad_from = good.replace("From: <sip:alice@127.0.0.1", "From: <sip:@").replace(
            "z9hG4bKg1", "z9hG4bKb1"
        )
        peer.send(bad_from, port)
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 400
        assert peer.transport is not None
        for junk in (b"\x00\xff" * 50, b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
            peer.transport.sendto(junk, ("127.0.0.1", port))
        peer.send(good, port)
        r = await peer.expect(lambda m: final(m) and m.call_id == "g1")  # type: ignore[attr-defined]
        assert isinstance(r, Response) and r.status == 200
        assert node.switch.limits.active == 1 and len(node.switch.channels) == 1
        peer.send(
            request(peer, "ACK", port, call_id="g1", cseq=1, branch="g2", to_tag=r.to_tag or ""),
            port,
        )
        peer.send(
            request(peer, "BYE", port, call_id="g1", cseq=2, branch="g3", to_tag=r.to_tag or ""),
            port,
        )
        await async_wait_until(
            lambda: len(cdrs.records) == 1 and node.switch.limits.active == 0, what="clean end"
        )
    finally:
        peer.close()
        await node.stop()


async def test_play_and_get_digits_collects_info_dtmf_and_the_dialplan_file_reloads(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "dialplan.toml"
    plan.write_text(
        "[[rules]]\nname = 'pagd'\ndestination = '^echo$'\nactions = ['answer', "
        "'play_and_get_digits 2 4 2 3000 # silence_stream://200 silence_stream://100 mydigits \\d+', "
        "'hangup']\n"
    )
    node, _cdrs = await start_node(tmp_path, {"dialplan": {"file": str(plan)}})
    got: list[Event] = []
    node.switch.events.subscribe(got.append)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "INVITE", port, call_id="d1", cseq=1, branch="d1",
                          body=SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        tag = r.to_tag or ""
        peer.send(request(peer, "ACK", port, call_id="d1", cseq=1, branch="d2", to_tag=tag), port)
        for i, digit in enumerate("42#"):
            peer.send(request(peer, "INFO", port, call_id="d1", cseq=2 + i, branch=f"n{i}", to_tag=tag,
                              body=f"Signal={digit}\nDuration=100\n", ctype="application/dtmf-relay"), port)  # fmt: skip
            await peer.expect(final)
        bye = await peer.expect(lambda m: not isinstance(m, Response))
        assert bye.method == "BYE"  # type: ignore[attr-defined]
        await async_wait_until(
            lambda: any(e.name == "CHANNEL_HANGUP_COMPLETE" for e in got), what="hangup"
        )
        done = next(e for e in got if e.name == "CHANNEL_HANGUP_COMPLETE")
        assert done.headers["variable_mydigits"] == "42"
        assert done.headers["variable_read_result"] == "success"

        # reload: the same destination now goes to another rule
        plan.write_text(
            "[[rules]]\nname = 'other'\ndestination = '^echo$'\nactions = ['hangup USER_BUSY']\n"
        )
        node.reload()
        assert node.switch.dialplan is not None
        m = node.switch.dialplan.match(destination="echo")
        assert m is not None and m.rule == "other"
        plan.write_text("[[rules]]\nname = 'broken'\ndestination = '('\nactions = ['echo']\n")
        node.reload()  # a broken file is refused and the previous dialplan stays
        m = node.switch.dialplan.match(destination="echo")
        assert m is not None and m.rule == "other"
    finally:
        peer.close()
        await node.stop()


async def test_ivr_invalid_digit_and_timeouts_lead_to_the_exit_action(tmp_path: Path) -> None:
    menu = {"greeting": "silence_stream://200", "invalid": "silence_stream://100", "timeout": 0.4,
            "max_failures": 3, "exit_action": "hangup CALL_REJECTED", "entries": {"1": "hangup USER_BUSY"}}  # fmt: skip
    node, cdrs = await start_node(tmp_path, {"dialplan": {"ivr": {"demo": menu}, "rules": [
        {"name": "ivr", "destination": "^echo$", "actions": ["ivr demo"]}]}})  # fmt: skip
    got: list[Event] = []
    node.switch.events.subscribe(got.append)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "INVITE", port, call_id="v1", cseq=1, branch="v1",
                          body=SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        tag = r.to_tag or ""
        peer.send(request(peer, "ACK", port, call_id="v1", cseq=1, branch="v2", to_tag=tag), port)
        peer.send(request(peer, "INFO", port, call_id="v1", cseq=2, branch="v3", to_tag=tag,
                          body="Signal=5\nDuration=100\n", ctype="application/dtmf-relay"), port)  # fmt: skip
        await peer.expect(final)
        bye = await peer.expect(lambda m: not isinstance(m, Response), timeout=10)
        assert bye.method == "BYE"  # type: ignore[attr-defined]
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].hangup_cause == "CALL_REJECTED"
        done = next(e for e in got if e.name == "CHANNEL_HANGUP_COMPLETE")
        assert done.headers["variable_ivr_invalid_digits"] == "5"
        assert done.headers["variable_ivr_menu_status"] == "failure"
        plays = [e for e in got if e.name == "PLAYBACK_START"]
        assert [e.headers["Playback-File-Path"] for e in plays].count("silence_stream://100") == 1
        assert [e.headers["Playback-File-Path"] for e in plays].count("silence_stream://200") == 3
    finally:
        peer.close()
        await node.stop()


@pytest.mark.parametrize(("pin", "joined"), [("1234", True), ("9999", False)])
async def test_conference_pin(tmp_path: Path, pin: str, joined: bool) -> None:
    node, cdrs = await start_node(tmp_path, {"dialplan": {"rules": [
        {"name": "c", "destination": "^echo$", "actions": ["conference pinroom+1234"]}]}})  # fmt: skip
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "INVITE", port, call_id="k1", cseq=1, branch="k1",
                          body=SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        tag = r.to_tag or ""
        peer.send(request(peer, "ACK", port, call_id="k1", cseq=1, branch="k2", to_tag=tag), port)
        seq = 2
        for _attempt in range(1 if joined else 3):
            for digit in pin + "#":
                peer.send(request(peer, "INFO", port, call_id="k1", cseq=seq, branch=f"k{seq}", to_tag=tag,
                                  body=f"Signal={digit}\nDuration=100\n", ctype="application/dtmf-relay"), port)  # fmt: skip
                seq += 1
                await peer.expect(final)
            await asyncio.sleep(0.3)
        rooms = getattr(node.switch, "conference_rooms", {})
        if joined:
            await async_wait_until(
                lambda: "pinroom" in rooms and len(rooms["pinroom"].members) == 1, what="member"
            )
            peer.send(
                request(peer, "BYE", port, call_id="k1", cseq=seq, branch="kb", to_tag=tag), port
            )
            await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
            assert "pinroom" not in rooms
        else:
            bye = await peer.expect(lambda m: not isinstance(m, Response), timeout=10)
            assert bye.method == "BYE"  # type: ignore[attr-defined]
            await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
            assert cdrs.records[0].hangup_cause == "CALL_REJECTED" and "pinroom" not in rooms
    finally:
        peer.close()
        await node.stop()


async def test_uuid_hold_sends_a_sendonly_reinvite_and_acks_the_answer(tmp_path: Path) -> None:
    node, _cdrs = await start_node(tmp_path)
    got: list[Event] = []
    node.switch.events.subscribe(got.append)
    peer = await Peer.udp()
    port = node.sip_port
    try:
        peer.send(request(peer, "INVITE", port, call_id="h1", cseq=1, branch="h1",
                          body=SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")), port)  # fmt: skip
        r = await peer.expect(final)
        assert isinstance(r, Response) and r.status == 200
        tag = r.to_tag or ""
        peer.send(request(peer, "ACK", port, call_id="h1", cseq=1, branch="h2", to_tag=tag), port)
        [s] = list(node.switch.sessions)
        await async_wait_until(lambda: s.channel.answered, what="answered")
        assert node.switch.hold(s.uuid, True)
        reinvite = await peer.expect(lambda m: not isinstance(m, Response))
        assert reinvite.method == "INVITE"  # type: ignore[attr-defined]
        offer = parse_sdp(reinvite.body)  # type: ignore[attr-defined]
        assert offer.media[0].direction == "sendonly"
        assert reinvite.to_tag == "alice1" and reinvite.from_tag == tag  # type: ignore[attr-defined]
        ok = (
            f"SIP/2.0 200 OK\nVia: {reinvite.headers.get('Via')}\nFrom: {reinvite.headers.get('From')}\n"  # type: ignore[attr-defined]
            f"To: {reinvite.headers.get('To')}\nCall-ID: h1\nCSeq: {reinvite.headers.get('CSeq')}\n"  # type: ignore[attr-defined]
            f"Contact: <sip:alice@127.0.0.1:{peer.port}>\nContent-Type: application/sdp\n"
        )
        body = SDP.format(ver=2, port=40000, fmt="0", dir="recvonly")
        peer.send(
            ok + f"Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}", port
        )
        ack = await peer.expect(lambda m: not isinstance(m, Response))
        assert ack.method == "ACK"  # type: ignore[attr-defined]
        assert any(e.name == "CHANNEL_HOLD" for e in got) and s.channel.held
    finally:
        peer.close()
        await node.stop()
