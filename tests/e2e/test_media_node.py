"""Media node end to end: SIPp callers and carriers, test RTP sockets, a real node.

Each test starts an in-process node on free ports, drives it with SIPp (signalling) and a
test RTP socket (the caller's audio), and checks what a caller would see: the SIP
responses, the audio that comes back (decoded, frequency-checked), the recordings, the
CDRs and hangup causes.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from switchboard.media.core import Session
from switchboard.media.events import Event
from switchboard.rtp.codec import ulaw_decode, ulaw_encode
from switchboard.rtp.wav import decode_wav
from tests.support.media import RtpPeer, dominant_frequency, finished_wav, start_node
from tests.support.net import async_wait_until, free_port
from tests.support.sipp import HAVE_SIPP, SCENARIOS, SippResult, finish_sipp, run_sipp

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not HAVE_SIPP, reason="sipp (Debian sip-tester) not installed"),
]


def inbound(node) -> list[Session]:  # type: ignore[no-untyped-def]
    return [s for s in node.switch.sessions if s.channel.direction == "inbound"]


def room_size(node, name: str) -> int:  # type: ignore[no-untyped-def]
    room = getattr(node.switch, "conference_rooms", {}).get(name)
    return 0 if room is None else len(room.members)


def events(node) -> list[Event]:  # type: ignore[no-untyped-def]
    got: list[Event] = []
    node.switch.events.subscribe(got.append)
    return got


def ok(result: SippResult | asyncio.subprocess.Process) -> None:
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output[-3000:] + result.errors[-3000:]


async def caller_port(node) -> int:  # type: ignore[no-untyped-def]
    await async_wait_until(
        lambda: any(s.media is not None for s in inbound(node)), what="inbound call"
    )
    return int(inbound(node)[0].media.port)


async def test_playback_sends_the_prompt_and_hangs_up(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path)
    peer = await RtpPeer.open()
    try:
        sipp = await run_sipp("media_call_wait_bye.xml", node.sip_port, tmp_path, service="playback",
                              keys={"rtp_port": peer.port}, background=True)  # fmt: skip
        port = await caller_port(node)
        peer.send_tone(("127.0.0.1", port), 700, 2.0)  # the caller talks meanwhile
        ok(await finish_sipp(sipp))  # SIPp got the node's BYE after the prompt
        from switchboard.media.sounds import bundled_prompt

        prompt = np.concatenate(bundled_prompt().pcm_frames)
        expected = ulaw_decode(ulaw_encode(prompt))
        got = peer.audio(pt=0)
        assert abs(len(got) - len(expected)) <= 160 * 5
        n = min(len(got), len(expected))
        matching = np.mean(got[:n] == expected[:n])
        assert matching > 0.95, f"only {matching:.1%} of the prompt samples arrived intact"
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        cdr = cdrs.records[0]
        assert (cdr.disposition, cdr.hangup_cause, cdr.direction) == (
            "ANSWERED",
            "NORMAL_CLEARING",
            "inbound",
        )
        assert cdr.destination == "playback" and cdr.codec == "PCMU" and cdr.node == "media-1"
    finally:
        peer.close()
        await node.stop()


async def test_echo_returns_the_callers_audio(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path)
    peer = await RtpPeer.open()
    try:
        sipp = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="echo",
                              keys={"rtp_port": peer.port}, pause_ms=2500, background=True)  # fmt: skip
        port = await caller_port(node)
        peer.send_tone(("127.0.0.1", port), 1000, 1.5)
        await peer.wait_sent()
        ok(await finish_sipp(sipp))
        audio = peer.audio(pt=0)
        assert len(audio) >= 160 * 60, f"echoed {len(audio) // 160} frames"
        assert abs(dominant_frequency(audio) - 1000) < 20
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].billsec >= 2
    finally:
        peer.close()
        await node.stop()


async def test_ivr_digit_sent_as_rfc4733_runs_the_menu_entry(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path,
        {"dialplan": {"ivr": {"demo": {"greeting": "prompt", "timeout": 10,
                                       "entries": {"2": "hangup CALL_REJECTED"}}}}},
    )  # fmt: skip
    got = events(node)
    try:
        ok(await run_sipp("media_call_dtmf.xml", node.sip_port, tmp_path, service="ivr"))
        digits = [
            (e.headers["DTMF-Digit"], e.headers["DTMF-Source"]) for e in got if e.name == "DTMF"
        ]
        assert digits == [("2", "RTP")]
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].hangup_cause == "CALL_REJECTED"
        hangup = next(e for e in got if e.name == "CHANNEL_HANGUP_COMPLETE")
        assert hangup.headers["variable_ivr_selection"] == "2"
        assert hangup.headers["variable_hangup_cause_q850"] == "21"
    finally:
        await node.stop()


async def test_record_writes_the_callers_audio(tmp_path: Path) -> None:
    rec = tmp_path / "rec" / "caller.wav"
    node, _cdrs = await start_node(
        tmp_path,
        {"dialplan": {"rules": [{"name": "rec", "destination": "^rec$",
                                 "actions": ["answer", f"record {rec} 2", "hangup"]}]}},
    )  # fmt: skip
    peer = await RtpPeer.open()
    try:
        sipp = await run_sipp("media_call_wait_bye.xml", node.sip_port, tmp_path, service="rec",
                              keys={"rtp_port": peer.port}, background=True)  # fmt: skip
        port = await caller_port(node)
        peer.send_tone(("127.0.0.1", port), 1000, 3.0)
        ok(await finish_sipp(sipp))
        pcm, rate = decode_wav(rec.read_bytes())
        assert rate == 8000
        assert 1.6 <= len(pcm) / rate <= 2.2
        assert abs(dominant_frequency(pcm) - 1000) < 20
        with wave.open(str(rec)) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
    finally:
        peer.close()
        await node.stop()


async def test_conference_three_legs_hear_each_other_but_not_themselves(tmp_path: Path) -> None:
    node, _cdrs = await start_node(tmp_path)
    peers = [await RtpPeer.open() for _ in range(3)]
    csv = tmp_path / "ports.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{p.port}\n" for p in peers))
    try:
        sipp = await run_sipp("media_conf_member.xml", node.sip_port, tmp_path, service="conf-room1",
                              calls=3, rate=10, pause_ms=4000, background=True,
                              extra=["-inf", str(csv)])  # fmt: skip
        await async_wait_until(lambda: room_size(node, "room1") == 3, what="3 members")
        # map peers to node ports through the SDP each call offered
        by_remote = {}
        for s in inbound(node):
            by_remote[s.media.remote[1]] = s.media.port
        await asyncio.sleep(0.5)  # join tones are over
        loop = asyncio.get_running_loop()
        talker = peers[0]
        talker.send_tone(("127.0.0.1", by_remote[talker.port]), 1000, 1.5)
        await asyncio.sleep(0.5)
        since = loop.time()
        await talker.wait_sent()
        ok(await finish_sipp(sipp))
        for listener in peers[1:]:
            audio = listener.audio(since=since)
            assert len(audio) > 160 * 20
            assert abs(dominant_frequency(audio) - 1000) < 20
            assert np.abs(audio.astype(np.int32)).mean() > 1000
        own = talker.audio(since=since)
        assert np.abs(own.astype(np.int32)).mean() < 200, "the talker hears itself"
        assert "room1" not in getattr(node.switch, "conference_rooms", {})  # destroyed when empty
    finally:
        for p in peers:
            p.close()
        await node.stop()


async def test_bridge_through_gateway_transcodes_pcmu_to_pcma(tmp_path: Path) -> None:
    """Also records the bridged call with record_session (stereo: caller left, carrier right)."""
    carrier_port = free_port()
    rec = tmp_path / "calls" / "bridged.wav"
    node, cdrs = await start_node(
        tmp_path,
        {
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier_port}"}},
            "dialplan": {"rules": [{"name": "transit", "destination": r"^(\+?\d{3,})$", "actions": [
                "set RECORD_STEREO=true", f"record_session {rec}", "bridge sofia/gateway/carrier/$1"]}]},
        },
    )  # fmt: skip
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    try:
        uas = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SCENARIOS / "media_carrier_uas.xml"),
            "-i", "127.0.0.1", "-p", str(carrier_port), "-m", "1", "-nostdin",
            "-timeout", "30s", "-key", "rtp_port", str(carrier.port), "-key", "codecs", "8",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        sipp = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="15551230000",
                              keys={"rtp_port": caller.port, "codecs": "0"}, pause_ms=3000,
                              background=True)  # fmt: skip
        await async_wait_until(
            lambda: any(s.bridged_to is not None for s in node.switch.sessions), what="bridge"
        )
        a = inbound(node)[0]
        b = a.bridged_to
        assert b is not None and (a.channel.read_codec, b.channel.read_codec) == ("PCMU", "PCMA")
        assert (a.channel.state.name, b.channel.state.name) == ("CS_EXECUTE", "CS_EXCHANGE_MEDIA")
        assert a.channel.other_leg == b.uuid and b.channel.other_leg == a.uuid
        caller.send_tone(("127.0.0.1", a.media.port), 1000, 1.0, pt=0)
        carrier.send_tone(("127.0.0.1", b.media.port), 500, 1.0, pt=8)
        await caller.wait_sent()
        await carrier.wait_sent()
        ok(await finish_sipp(sipp))
        ok(await finish_sipp(uas))
        assert carrier.payload_types() == {8}
        assert abs(dominant_frequency(carrier.audio(pt=8)) - 1000) < 20
        assert abs(dominant_frequency(caller.audio(pt=0)) - 500) < 20
        await async_wait_until(lambda: len(cdrs.records) == 2, what="2 CDRs")
        legs = {c.direction: c for c in cdrs.records}
        assert legs["outbound"].carrier == "carrier" and legs["outbound"].codec == "PCMA"
        assert legs["outbound"].destination == "15551230000"
        assert legs["outbound"].pdd_ms is not None
        assert legs["inbound"].disposition == legs["outbound"].disposition == "ANSWERED"
        await finished_wav(rec)  # record_session closes the file as the call ends
        with wave.open(str(rec)) as w:
            assert w.getnchannels() == 2
            frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
        left, right = frames[:, 0], frames[:, 1]
        assert abs(dominant_frequency(left) - 1000) < 20  # what the caller said
        assert abs(dominant_frequency(right) - 500) < 20  # what the carrier said
    finally:
        caller.close()
        carrier.close()
        await node.stop()


async def test_cancel_during_ringing(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path,
        {"dialplan": {"rules": [{"name": "ring", "destination": "^ring$",
                                 "actions": ["ring_ready", "sleep 10000", "answer", "echo"]}]}},
    )  # fmt: skip
    try:
        ok(await run_sipp("media_call_cancel.xml", node.sip_port, tmp_path, service="ring",
                          keys={"rtp_port": free_port()}))  # fmt: skip
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        cdr = cdrs.records[0]
        assert (cdr.disposition, cdr.hangup_cause, cdr.sip_code) == (
            "CANCEL",
            "ORIGINATOR_CANCEL",
            487,
        )
        assert not node.switch.channels and node.switch.limits.active == 0
    finally:
        await node.stop()


async def test_caller_hangs_up_during_ivr(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path)
    got = events(node)
    try:
        ok(await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="ivr",
                          keys={"rtp_port": free_port()}, pause_ms=1000))  # fmt: skip
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].hangup_cause == "NORMAL_CLEARING"
        done = [
            e
            for e in got
            if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.headers["Application"] == "ivr"
        ]
        assert len(done) == 1
        assert [e.name for e in got][-1] == "CHANNEL_DESTROY"
        assert not node.switch.channels and node.switch.limits.active == 0
    finally:
        await node.stop()


async def test_sessions_per_second_30_admits_exactly_30_of_35(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path, {"limits": {"sessions_per_second": 30, "max_sessions": 1000}}
    )
    try:
        result = await run_sipp("media_call_limit.xml", node.sip_port, tmp_path, service="echo",
                                keys={"rtp_port": free_port()}, calls=35, rate=500,
                                pause_ms=300, timeout=30)  # fmt: skip
        assert isinstance(result, SippResult)
        await async_wait_until(
            lambda: len(cdrs.records) == 30 and not node.switch.channels, what="30 CDRs"
        )
        answered = [c for c in cdrs.records if c.disposition == "ANSWERED"]
        assert len(answered) == 30
        rejected = node.metrics.sessions_rejected.labels(reason="sessions_per_second")._value.get()
        assert rejected == 5
    finally:
        await node.stop()


async def test_malformed_sdp_gets_400_no_codec_488_and_disturbs_nothing(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path)
    peer = await RtpPeer.open()
    try:
        call = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="echo",
                              keys={"rtp_port": peer.port}, pause_ms=3000, background=True)  # fmt: skip
        port = await caller_port(node)
        peer.send_tone(("127.0.0.1", port), 1000, 2.5)
        ok(await run_sipp("media_call_bad_sdp.xml", node.sip_port, tmp_path, service="echo"))
        ok(await run_sipp("media_call_no_codec.xml", node.sip_port, tmp_path, service="echo"))
        assert len(node.switch.channels) == 1  # only the good call
        ok(await finish_sipp(call))
        assert abs(dominant_frequency(peer.audio(pt=0)) - 1000) < 20
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert cdrs.records[0].disposition == "ANSWERED"
        assert node.switch.limits.active == 0
    finally:
        peer.close()
        await node.stop()


async def test_gateway_registers_with_digest_and_user_endpoint_rings_the_contact(
    tmp_path: Path,
) -> None:
    """Node B registers to node A as user 1000 (gateway with registration + digest);
    a caller on A dials ``user/1000`` and reaches B's echo: audio goes A → B → A."""
    a, a_cdrs = await start_node(
        tmp_path / "a",
        {
            "users": {"1000": {"password": "s3cret"}},
            "media": {"digest_algorithms": ["SHA-256", "MD5"]},  # B answers the SHA-256 one
            "dialplan": {
                "rules": [
                    {"name": "u", "destination": "^call-1000$", "actions": ["bridge user/1000"]}
                ]
            },
        },
    )
    b, b_cdrs = await start_node(
        tmp_path / "b",
        {
            "gateways": {"a": {"proxy": f"127.0.0.1:{a.sip_port}", "registration": True,
                               "username": "1000", "password": "s3cret"}},
            "dialplan": {"rules": [{"name": "echo", "destination": "^1000$", "actions": ["answer", "echo"]}]},
        },
    )  # fmt: skip
    peer = await RtpPeer.open()
    try:
        await async_wait_until(lambda: b.switch.gateways["a"].state == "REGED", what="registration")
        assert a.ua.registrar.contacts("1000", __import__("time").time())
        sipp = await run_sipp("media_call_hangup.xml", a.sip_port, tmp_path, service="call-1000",
                              keys={"rtp_port": peer.port}, pause_ms=2500, background=True)  # fmt: skip
        port = await caller_port(a)
        await async_wait_until(
            lambda: any(s.bridged_to is not None for s in a.switch.sessions), what="bridge"
        )
        peer.send_tone(("127.0.0.1", port), 1000, 1.2)
        await peer.wait_sent()
        ok(await finish_sipp(sipp))
        assert abs(dominant_frequency(peer.audio(pt=0)) - 1000) < 20
        await async_wait_until(
            lambda: len(b_cdrs.records) == 1 and len(a_cdrs.records) == 2, what="CDRs"
        )
        assert b_cdrs.records[0].destination == "1000"
        assert b_cdrs.records[0].disposition == "ANSWERED"
    finally:
        peer.close()
        await b.stop()
        await a.stop()


async def test_unregistered_user_and_unknown_gateway_give_fs_causes(tmp_path: Path) -> None:
    node, cdrs = await start_node(
        tmp_path,
        {
            "users": {"1000": {"password": "x"}},
            "dialplan": {"rules": [
                {"name": "u", "destination": "^u$", "actions": ["bridge user/1000"]},
                {"name": "g", "destination": "^g$", "actions": ["bridge sofia/gateway/nope/123"]},
            ]},
        },
    )  # fmt: skip
    try:
        for service, status in (("u", 480), ("g", 484)):
            res = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service=service,
                                 keys={"rtp_port": free_port()})  # fmt: skip
            assert isinstance(res, SippResult) and f"{status}" in res.errors + res.output
        # every leg has a CDR: the callers' and the B-legs that could not be placed
        await async_wait_until(lambda: len(cdrs.records) == 4, what="CDRs")
        callers = [c for c in cdrs.records if c.direction == "inbound"]
        assert sorted(c.hangup_cause for c in callers) == ["INVALID_GATEWAY", "USER_NOT_REGISTERED"]
        assert sorted(c.sip_code for c in callers) == [480, 484]  # type: ignore[type-var]
    finally:
        await node.stop()


async def test_bridge_passes_early_media_and_gateway_max_calls(tmp_path: Path) -> None:
    carrier_port = free_port()
    node, cdrs = await start_node(
        tmp_path, {"gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier_port}", "max_calls": 1}}}
    )
    got = events(node)
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    try:
        uas = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SCENARIOS / "media_carrier_early.xml"),
            "-i", "127.0.0.1", "-p", str(carrier_port), "-m", "1", "-nostdin",
            "-timeout", "30s", "-key", "rtp_port", str(carrier.port), "-key", "codecs", "0",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        sipp = await run_sipp("media_call_early.xml", node.sip_port, tmp_path, service="4930123",
                              keys={"rtp_port": caller.port, "codecs": "0"}, pause_ms=1000,
                              background=True)  # fmt: skip
        await async_wait_until(
            lambda: any(e.name == "CHANNEL_PROGRESS_MEDIA" for e in got), what="183"
        )
        b = next(s for s in node.switch.sessions if s.channel.direction == "outbound")
        carrier.send_tone(("127.0.0.1", b.media.port), 500, 1.0)  # ringback/announcement
        # the gateway is at max_calls: a second call fails at once (503, congestion)
        busy = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="4930124",
                              keys={"rtp_port": free_port()})  # fmt: skip
        assert isinstance(busy, SippResult) and "503" in busy.errors + busy.output
        loop = asyncio.get_running_loop()
        await async_wait_until(lambda: any(e.name == "CHANNEL_ANSWER" and e.headers["Call-Direction"] == "inbound"
                                     for e in got), what="answer")  # fmt: skip
        answered_at = loop.time()
        early = [d for t, d in caller.received if t < answered_at - 0.2]
        assert len(early) > 20, "no early media reached the caller before the answer"
        ok(await finish_sipp(sipp))
        ok(await finish_sipp(uas))
        assert abs(dominant_frequency(caller.audio(pt=0)) - 500) < 20
        await async_wait_until(lambda: len(cdrs.records) == 4, what="CDRs")
        causes = sorted(c.hangup_cause for c in cdrs.records if c.destination == "4930124")
        assert "NORMAL_CIRCUIT_CONGESTION" in causes
        from switchboard.observability.metrics import render

        text = render(node.registry).decode()
        assert 'voip_calls_total{direction="outbound",disposition="answered"} 1.0' in text
        assert 'switchboard_media_pdd_seconds_count{gateway="carrier"} 1.0' in text
        assert 'switchboard_media_sessions_rejected_total{reason="gateway_limit"} 1.0' in text
    finally:
        caller.close()
        carrier.close()
        await node.stop()


async def test_conference_muted_member_is_not_heard_but_hears(tmp_path: Path) -> None:
    node, _cdrs = await start_node(
        tmp_path,
        {"dialplan": {"rules": [
            {"name": "muted", "destination": "^muted$", "actions": ["answer", "conference r2+flags{mute}"]},
            {"name": "plain", "destination": "^plain$", "actions": ["answer", "conference r2"]},
        ]}},
    )  # fmt: skip
    muted, plain = await RtpPeer.open(), await RtpPeer.open()
    try:
        calls = [
            await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service=name,
                           keys={"rtp_port": peer.port}, pause_ms=3500, background=True)
            for name, peer in (("muted", muted), ("plain", plain))
        ]  # fmt: skip
        rooms = lambda: getattr(node.switch, "conference_rooms", {})  # noqa: E731
        await async_wait_until(
            lambda: "r2" in rooms() and len(rooms()["r2"].members) == 2, what="2 members"
        )
        port = {s.media.remote[1]: s.media.port for s in inbound(node)}
        await asyncio.sleep(0.4)  # join tone over
        loop = asyncio.get_running_loop()
        muted.send_tone(("127.0.0.1", port[muted.port]), 1000, 1.0)
        plain.send_tone(("127.0.0.1", port[plain.port]), 700, 1.0)
        await asyncio.sleep(0.3)
        since = loop.time()
        await muted.wait_sent()
        for c in calls:
            ok(await finish_sipp(c))
        heard_by_plain = plain.audio(since=since)
        heard_by_muted = muted.audio(since=since)
        assert np.abs(heard_by_plain.astype(np.int32)).mean() < 200, "the muted member was heard"
        assert abs(dominant_frequency(heard_by_muted) - 700) < 20
    finally:
        muted.close()
        plain.close()
        await node.stop()


async def test_uuid_bridge_joins_two_parked_calls(tmp_path: Path) -> None:
    """What an ESL program does: two callers parked, then ``uuid_bridge`` (Switch.bridge)."""
    node, cdrs = await start_node(
        tmp_path,
        {
            "dialplan": {
                "rules": [{"name": "park", "destination": "^park$", "actions": ["answer", "park"]}]
            }
        },
    )
    p1, p2 = await RtpPeer.open(), await RtpPeer.open()
    try:
        calls = [
            await run_sipp(scenario, node.sip_port, tmp_path, service="park",
                           keys={"rtp_port": p.port}, pause_ms=3000, background=True)
            for scenario, p in (("media_call_hangup.xml", p1), ("media_call_wait_bye.xml", p2))
        ]  # fmt: skip
        await async_wait_until(lambda: len([c for c in node.switch.channels.values() if c.state.name == "CS_PARK"]) == 2,
                         what="2 parked")  # fmt: skip
        by_peer = {s.media.remote[1]: s for s in inbound(node)}
        a, b = by_peer[p1.port], by_peer[p2.port]
        assert await node.switch.bridge(a.uuid, b.uuid)
        await async_wait_until(lambda: a.bridged_to is b, what="bridged")
        p1.send_tone(("127.0.0.1", a.media.port), 1000, 1.0)
        p2.send_tone(("127.0.0.1", b.media.port), 600, 1.0)
        await p1.wait_sent()
        ok(await finish_sipp(calls[0]))  # caller 1 hangs up first ...
        ok(await finish_sipp(calls[1], timeout=10))  # ... so the node hangs up caller 2 (BYE)
        assert abs(dominant_frequency(p2.audio(pt=0)) - 1000) < 20
        assert abs(dominant_frequency(p1.audio(pt=0)) - 600) < 20
        await async_wait_until(lambda: len(cdrs.records) == 2, what="CDRs")
    finally:
        p1.close()
        p2.close()
        await node.stop()


async def test_gateway_number_and_caller_id_rules(tmp_path: Path) -> None:
    """Node A's gateway strips/prefixes the dialled number and rewrites the caller-id;
    node B (the 'carrier') sees the result."""
    b, b_cdrs = await start_node(
        tmp_path / "b",
        {
            "dialplan": {
                "rules": [{"name": "in", "destination": "^00", "actions": ["answer", "echo"]}]
            }
        },
    )
    a, _a_cdrs = await start_node(
        tmp_path / "a",
        {
            "gateways": {"b": {"proxy": f"127.0.0.1:{b.sip_port}", "strip": 1, "prefix": "00",
                               "caller_id_prefix": "+49", "caller_id_name": "Switchboard"}},
            "dialplan": {"rules": [{"name": "out", "destination": r"^x(\d+)$",
                                    "actions": ["bridge sofia/gateway/b/$1"]}]},
        },
    )  # fmt: skip
    try:
        ok(await run_sipp("media_call_hangup.xml", a.sip_port, tmp_path, service="x14155550100",
                          keys={"rtp_port": free_port()}, pause_ms=500))  # fmt: skip
        await async_wait_until(lambda: len(b_cdrs.records) == 1, what="carrier CDR")
        cdr = b_cdrs.records[0]
        assert cdr.destination == "004155550100"
        assert cdr.caller_id == "+491001"  # SIPp's From user is 100<call_number>
    finally:
        await a.stop()
        await b.stop()


async def test_max_sessions_refuses_with_503(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path, {"limits": {"max_sessions": 1}})
    try:
        first = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="echo",
                               keys={"rtp_port": free_port()}, pause_ms=2000, background=True)  # fmt: skip
        await async_wait_until(lambda: len(node.switch.channels) == 1, what="first call")
        second = await run_sipp("media_call_limit.xml", node.sip_port, tmp_path, service="echo",
                                keys={"rtp_port": free_port()})  # fmt: skip
        ok(second)  # the 503 path of the scenario
        ok(await finish_sipp(first))
        rejected = node.metrics.sessions_rejected.labels(reason="max_sessions")._value.get()
        assert rejected == 1
        await async_wait_until(lambda: len(cdrs.records) == 1, what="one CDR")
    finally:
        await node.stop()
