"""asyncio RTP endpoint on loopback: play a prompt, record to WAV, latching, bad input."""

from __future__ import annotations

import asyncio
import io
import socket
import wave

import numpy as np
import pytest

from switchboard.media.ports import PortAllocator
from switchboard.media.rtp_endpoint import ConferenceRoom, RtpEndpoint, bridge, unbridge
from switchboard.rtp.codec import PCMA, PCMU
from switchboard.rtp.dtmf import DtmfEnd, DtmfError, DtmfEvent, dtmf_tone
from switchboard.rtp.packet import RtpPacket
from switchboard.rtp.source import Player, Prompt, WavRecorder, tone_prompt
from switchboard.rtp.wav import decode_wav, encode_wav
from tests.support.net import async_wait_until


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


async def test_play_wav_prompt_and_record_it_at_the_far_end() -> None:
    # A 44.1 kHz stereo WAV of 700 Hz, as an operator would upload it.
    t = np.arange(44100 * 4 // 10) / 44100
    tone = np.rint(12000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    prompt = Prompt.from_wav(encode_wav(np.repeat(tone, 2), 44100, 2))
    a = await RtpEndpoint.open(codec=PCMA)
    b = await RtpEndpoint.open(codec=PCMA)
    try:
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        out = io.BytesIO()
        rec = WavRecorder(out)
        b.record(rec)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(a.play(prompt), 5)
        elapsed = asyncio.get_running_loop().time() - started
        sent = a.writer.packets_sent
        jb = b.jitter_buffer
        assert jb is not None
        # Every packet that arrived has been played out (late ones are counted, not played).
        await async_wait_until(
            lambda: (
                b.packets_received == sent and jb.played + jb.late + jb.shrunk + jb.overflow >= sent
            )
        )
        b.record(None)
        rec.close()
        pcm, rate = decode_wav(out.getvalue())
        assert rate == 8000
        # Concealment may insert silence on a loaded machine, but the tone is all there.
        voiced = pcm[np.abs(pcm) > 0]
        assert len(voiced) >= 0.9 * len(prompt) * 160
        assert abs(dominant_hz(pcm) - 700) < 5
        # Paced in real time (20 frames × 20 ms), not sent as a burst; no sequence gaps.
        assert sent == len(prompt) or a._scheduler.skipped_frames > 0
        assert 0.35 < elapsed < 1.5
        assert b.stats is not None and b.stats.lost == 0
        assert a.rtcp_port is not None
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("ranged", [False, True], ids=["any-port", "port-range"])
async def test_symmetric_rtp_latches_to_the_source_seen_and_drops_others(ranged: bool) -> None:
    # From a port range (as a node opens its legs) the latched socket is connected to its
    # peer and the kernel drops other sources; on an ephemeral port the endpoint does.
    if ranged:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] & ~1
        probe.close()
        ep = await RtpEndpoint.open(allocator=PortAllocator(base, base + 199))
    else:
        ep = await RtpEndpoint.open()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    try:
        ep.set_remote(("127.0.0.1", 9))  # what the SDP said (wrong, e.g. behind NAT)
        intruder.sendto(b"junk, not RTP", ep.local_address)  # must not latch
        await async_wait_until(lambda: ep.malformed == 1)
        assert not ep.latched
        peer.sendto(bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received == 1)
        assert ep.remote == peer.getsockname()
        # Latched: the socket is connected to the peer, so the kernel drops the intruder's
        # packet (sent first) and only the peer's next one arrives.
        intruder.sendto(bytes(RtpPacket(0, 2, 320, 43, b"\xff" * 160)), ep.local_address)
        peer.sendto(bytes(RtpPacket(0, 2, 320, 42, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received == 2)
        assert ep.remote == peer.getsockname() and ep.remote_ssrc == 42
        assert ep._connected is ranged and ep.foreign == (0 if ranged else 1)
        # Outgoing media now goes to the latched address.
        ep.play(tone_prompt([1000], on_ms=100))
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(peer, 2048), 2)
        pkt = RtpPacket.parse(data)
        assert pkt.payload_type == 0 and pkt.marker and len(pkt.payload) == 160
        ep.relatch()
        intruder.sendto(bytes(RtpPacket(0, 5, 320, 43, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.remote == intruder.getsockname())
        # ... and the new latch holds: the old peer is the stranger now, the port unchanged.
        peer.sendto(bytes(RtpPacket(0, 3, 480, 42, b"\xff" * 160)), ep.local_address)
        intruder.sendto(bytes(RtpPacket(0, 6, 480, 43, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received == 4)
        assert ep.remote_ssrc == 43 and ep._connected is ranged
        assert ep._sock.getsockname()[1] == ep.port
    finally:
        ep.close()
        peer.close()
        intruder.close()


async def test_a_latched_leg_outlives_its_peer_going_away_and_coming_back() -> None:
    # A connected socket gets the ICMP port-unreachable for what it sent to a vanished
    # peer as an error on its next read: counted, and the leg reads on when the peer
    # (same address) sends again.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1] & ~1
    probe.close()
    ep = await RtpEndpoint.open(allocator=PortAllocator(base, base + 199))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    address = peer.getsockname()
    try:
        ep.set_remote(address)
        peer.sendto(bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received == 1)
        assert ep._connected
        peer.close()
        ep.play(tone_prompt([1000], on_ms=200))
        await async_wait_until(lambda: ep.send_errors >= 1)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(address)
        peer.sendto(bytes(RtpPacket(0, 2, 320, 42, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received == 2)
    finally:
        ep.close()
        peer.close()


async def test_allocator_ports_are_released_on_close() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1] & ~1
    probe.close()
    alloc = PortAllocator(base, base + 199)
    ep = await RtpEndpoint.open(allocator=alloc)
    assert ep.port % 2 == 0 and ep.rtcp_port == ep.port + 1 and alloc.in_use == 1
    ep.close()
    ep.close()  # idempotent
    assert alloc.in_use == 0


async def test_playback_future_completes_when_replaced_or_closed() -> None:
    ep = await RtpEndpoint.open()
    ep.set_remote(("127.0.0.1", 9))
    first = ep.play(tone_prompt([400], on_ms=1000), loops=0)
    second = ep.play(tone_prompt([400], on_ms=1000), loops=0)
    assert first.done() and not second.done()
    ep.close()
    assert second.done()


async def test_rfc4733_dtmf_between_endpoints() -> None:
    a = await RtpEndpoint.open()
    b = await RtpEndpoint.open()
    got: list[DtmfEvent] = []
    b.on_dtmf = lambda ep, ev: got.append(ev)
    try:
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        a.play(tone_prompt([400], on_ms=1000), loops=0)  # audio pauses during the events
        await asyncio.wait_for(a.send_dtmf("1#9", duration_ms=80), 5)
        await async_wait_until(lambda: sum(isinstance(e, DtmfEnd) for e in got) == 3)
        assert "".join(e.digit for e in got if isinstance(e, DtmfEnd)) == "1#9"
        assert all(e.duration == 640 for e in got if isinstance(e, DtmfEnd))
        with pytest.raises(DtmfError):
            a.send_dtmf("1x")
    finally:
        a.close()
        b.close()


async def test_inband_dtmf_detected_from_received_audio() -> None:
    a = await RtpEndpoint.open(event_pt=None)
    b = await RtpEndpoint.open(event_pt=None)
    got: list[DtmfEvent] = []
    b.on_dtmf = lambda ep, ev: got.append(ev)
    b.detect_inband_dtmf()
    try:
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        tones = np.concatenate(
            [
                np.concatenate([dtmf_tone(d, 80, level_dbfs=-12), np.zeros(480, np.int16)])
                for d in "42"
            ]
        )
        await asyncio.wait_for(a.play(Prompt(tones)), 5)
        await async_wait_until(lambda: sum(isinstance(e, DtmfEnd) for e in got) == 2)
        assert [e.digit for e in got if isinstance(e, DtmfEnd)] == ["4", "2"]
        assert all(e.source == "INBAND_AUDIO" for e in got)
        with pytest.raises(RuntimeError):
            a.send_dtmf("1")  # no telephone-event negotiated
    finally:
        a.close()
        b.close()


async def test_rtcp_reports_flow_and_bye_on_close() -> None:
    a = await RtpEndpoint.open(rtcp_min_interval=0.1)
    b = await RtpEndpoint.open(rtcp_min_interval=0.1)
    try:
        a.set_remote(b.local_address, (b.local_address[0], b.rtcp_port or 0))
        b.set_remote(a.local_address, (a.local_address[0], a.rtcp_port or 0))
        a.play(tone_prompt([1000], on_ms=1000), loops=0)
        b.play(tone_prompt([500], on_ms=1000), loops=0)
        await async_wait_until(
            lambda: (
                a.rtcp_received >= 2
                and b.rtcp_received >= 2
                and a.rtcp is not None
                and a.rtcp.rtt is not None
            )
        )
        assert a.rtcp is not None and a.rtcp.rtt is not None and 0 <= a.rtcp.rtt < 0.2
        assert b.rtcp is not None and b.rtcp.remote_ssrc == a.writer.ssrc
    finally:
        a.close()
    await async_wait_until(lambda: b.rtcp_bye)
    b.close()


async def test_bridge_transcodes_pcmu_to_pcma_and_relays_dtmf() -> None:
    caller = await RtpEndpoint.open()  # PCMU phone
    leg_a = await RtpEndpoint.open()  # our PCMU leg towards the caller
    leg_b = await RtpEndpoint.open(codec=PCMA, event_pt=96)  # our PCMA leg towards the carrier
    carrier = await RtpEndpoint.open(codec=PCMA, event_pt=96)
    eps = (caller, leg_a, leg_b, carrier)
    got: list[DtmfEvent] = []
    carrier.on_dtmf = lambda ep, ev: got.append(ev)
    try:
        caller.set_remote(leg_a.local_address)
        leg_a.set_remote(caller.local_address)
        leg_b.set_remote(carrier.local_address)
        carrier.set_remote(leg_b.local_address)
        bridge(leg_a, leg_b)
        out = io.BytesIO()
        rec = WavRecorder(out)
        carrier.record(rec)
        await asyncio.wait_for(caller.play(tone_prompt([1200], on_ms=400)), 5)
        await asyncio.wait_for(caller.send_dtmf("7"), 5)
        await async_wait_until(lambda: any(isinstance(e, DtmfEnd) for e in got))
        rec.close()
        pcm, _ = decode_wav(out.getvalue())
        assert abs(dominant_hz(pcm[:3200]) - 1200) < 5
        assert [e.digit for e in got if isinstance(e, DtmfEnd)] == ["7"]
        # And back the other way: the carrier's audio reaches the caller.
        back = io.BytesIO()
        rec2 = WavRecorder(back)
        caller.record(rec2)
        await asyncio.wait_for(carrier.play(tone_prompt([600], on_ms=300)), 5)
        await async_wait_until(lambda: rec2.frames_written >= 2400)
        rec2.close()
        pcm2, _ = decode_wav(back.getvalue())
        assert abs(dominant_hz(pcm2[:2400]) - 600) < 5
        unbridge(leg_a, leg_b)
        assert leg_a.on_packet is None
    finally:
        for ep in eps:
            ep.close()


async def test_echo_returns_the_callers_audio() -> None:
    phone = await RtpEndpoint.open()
    node = await RtpEndpoint.open()
    try:
        phone.set_remote(node.local_address)
        node.set_remote(("127.0.0.1", 9))  # SDP says otherwise; latching fixes it
        node.echo()
        out = io.BytesIO()
        rec = WavRecorder(out)
        phone.record(rec)
        await asyncio.wait_for(phone.play(tone_prompt([900], on_ms=300)), 5)
        await async_wait_until(lambda: rec.frames_written >= 2400)
        rec.close()
        pcm, _ = decode_wav(out.getvalue())
        assert abs(dominant_hz(pcm[:2400]) - 900) < 5
        assert node.remote == phone.local_address
    finally:
        phone.close()
        node.close()


async def test_garbage_and_truncated_packets_never_break_the_endpoint() -> None:
    ep = await RtpEndpoint.open()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    got: list[DtmfEvent] = []
    ep.on_dtmf = lambda e, ev: got.append(ev)
    frames: list[np.ndarray] = []

    class Sink:
        def write_pcm(self, pcm: np.ndarray) -> None:
            frames.append(pcm)

    ep.record(Sink())
    try:
        rng = np.random.default_rng(1)
        good = bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160))
        peer.sendto(good, ep.local_address)
        for _ in range(200):
            peer.sendto(rng.bytes(int(rng.integers(0, 64))), ep.local_address)
        peer.sendto(
            bytes(RtpPacket(101, 2, 320, 42, b"\x01")), ep.local_address
        )  # short telephone-event
        peer.sendto(b"\x80\xc8\x00\x10garbage", (ep.local_address[0], ep.rtcp_port or 0))
        peer.sendto(bytes(RtpPacket(0, 3, 480, 42, b"\xff" * 160)), ep.local_address)
        await async_wait_until(lambda: ep.packets_received >= 3)
        assert ep.malformed >= 2 and not ep.closed
        await async_wait_until(lambda: len(frames) >= 2)  # the valid audio still plays out
    finally:
        ep.close()
        peer.close()


async def test_g722_wideband_stream_records_at_16khz() -> None:
    from switchboard.rtp.codec import G722

    a = await RtpEndpoint.open(codec=G722())
    b = await RtpEndpoint.open(codec=G722())
    try:
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        out = io.BytesIO()
        rec = WavRecorder(out, rate=16000)
        b.record(rec)
        # 5 kHz is above the narrowband limit: only a real wideband path carries it.
        await asyncio.wait_for(a.play(tone_prompt([5000], rate=16000, on_ms=400)), 5)
        await async_wait_until(lambda: rec.frames_written >= 6400)
        b.record(None)
        rec.close()
        pcm, rate = decode_wav(out.getvalue())
        assert rate == 16000 and abs(dominant_hz(pcm[:6400], 16000) - 5000) < 10
        assert b.stats is not None and b.stats.lost == 0
    finally:
        a.close()
        b.close()


def band_energy(pcm: np.ndarray, freq: float, rate: int = 8000) -> float:
    """Share of the signal's power within ±5 Hz of ``freq``."""
    power = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm)))) ** 2
    k = round(freq * len(pcm) / rate)
    width = max(round(5 * len(pcm) / rate), 2)
    return float(power[k - width : k + width + 1].sum() / power.sum())


async def test_conference_each_member_hears_the_others_not_itself() -> None:
    freqs = {"a": 500.0, "b": 1100.0, "c": 1700.0}
    phones: dict[str, RtpEndpoint] = {}
    legs: dict[str, RtpEndpoint] = {}
    recs: dict[str, WavRecorder] = {}
    outs: dict[str, io.BytesIO] = {}
    room = ConferenceRoom(energy_level=50)
    try:
        for m in freqs:
            codec = PCMA if m == "b" else PCMU  # mixed codecs in one room
            phones[m] = await RtpEndpoint.open(codec=codec)
            legs[m] = await RtpEndpoint.open(codec=codec)
            phones[m].set_remote(legs[m].local_address)
            legs[m].set_remote(phones[m].local_address)
            outs[m] = io.BytesIO()
            recs[m] = WavRecorder(outs[m])
            phones[m].record(recs[m])
            room.join(m, legs[m])
        for m, f in freqs.items():
            phones[m].play(tone_prompt([f], on_ms=1000), loops=0)
        await async_wait_until(lambda: all(r.frames_written >= 8000 for r in recs.values()))
        room.mute("b")
        for r in recs.values():
            r.close()
        heard = {m: decode_wav(o.getvalue())[0][1600:8000] for m, o in outs.items()}
        for m, pcm in heard.items():
            for other, f in freqs.items():
                if other == m:
                    assert band_energy(pcm, f) < 0.01, f"{m} hears itself"
                else:
                    assert band_energy(pcm, f) > 0.3, f"{m} does not hear {other}"
        # Muted b: a now hears only c.
        out = io.BytesIO()
        rec = WavRecorder(out)
        phones["a"].record(rec)
        await async_wait_until(lambda: rec.frames_written >= 4000)
        phones["a"].record(None)
        rec.close()
        pcm = decode_wav(out.getvalue())[0][800:]
        assert band_energy(pcm, freqs["b"]) < 0.01 and band_energy(pcm, freqs["c"]) > 0.8
        room.leave("a")
        assert "a" not in room.members
    finally:
        for m in list(room.members):
            room.leave(m)
        for ep in (*phones.values(), *legs.values()):
            ep.close()


async def test_recording_a_bridged_call_one_channel_per_leg() -> None:
    caller = await RtpEndpoint.open()
    leg_a = await RtpEndpoint.open()
    leg_b = await RtpEndpoint.open(codec=PCMA)
    callee = await RtpEndpoint.open(codec=PCMA)
    eps = (caller, leg_a, leg_b, callee)
    try:
        caller.set_remote(leg_a.local_address)
        leg_a.set_remote(caller.local_address)
        leg_b.set_remote(callee.local_address)
        callee.set_remote(leg_b.local_address)
        bridge(leg_a, leg_b)
        out = io.BytesIO()
        rec = WavRecorder(out, legs=2, split=True)
        leg_a.record(rec.leg(0))  # what the caller says
        leg_b.record(rec.leg(1))  # what the callee says
        caller.play(tone_prompt([600], on_ms=1000), loops=0)
        callee.play(tone_prompt([1400], on_ms=1000), loops=0)
        await async_wait_until(lambda: rec.frames_written >= 4000)
        leg_a.record(None)
        leg_b.record(None)
        rec.close()
        with wave.open(io.BytesIO(out.getvalue())) as w:
            assert w.getnchannels() == 2
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        assert abs(dominant_hz(frames[400:4000, 0]) - 600) < 5
        assert abs(dominant_hz(frames[400:4000, 1]) - 1400) < 5
        # The relay kept working while being recorded.
        assert callee.packets_received >= 20 and caller.packets_received >= 20
    finally:
        for ep in eps:
            ep.close()


async def test_codec_change_mid_call_keeps_playing() -> None:
    a = await RtpEndpoint.open()
    b = await RtpEndpoint.open()
    seen: list[int] = []
    try:
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        b.on_packet = lambda ep, pt, m, seq, ts, ssrc, payload: seen.append(pt)
        a.play(tone_prompt([800], on_ms=1000), loops=0)
        await async_wait_until(lambda: len(seen) >= 5)
        a.set_codec(PCMA)  # re-INVITE answered with PCMA
        await async_wait_until(lambda: seen.count(8) >= 5)
        first_pcma = seen.index(8)
        assert set(seen[:first_pcma]) == {0} and set(seen[first_pcma:]) == {8}
        assert a.playing
    finally:
        a.close()
        b.close()


class FakeScheduler:
    """Stands in for the process tick: the test decides when ticks happen."""

    def __init__(self) -> None:
        self.now = 0.0
        self.streams: list[object] = []

    def add(self, stream: object) -> None:
        self.streams.append(stream)

    def remove(self, stream: object) -> None:
        self.streams.remove(stream)


async def test_pacing_catch_up_and_skip_on_rtp_timestamps() -> None:
    fake = FakeScheduler()
    ep = await RtpEndpoint.open(scheduler=fake, rtcp=False)  # type: ignore[arg-type]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    try:
        assert fake.streams == [ep]
        ep.set_remote(peer.getsockname())
        ep.play(tone_prompt([1000], on_ms=1000))
        ep.on_tick(1, 0)  # on time
        ep.on_tick(3, 0)  # woke 40 ms late: catch up with a burst of 3
        ep.on_tick(1, 9)  # stalled 200 ms: skip 9 frames, send the current one
        pkts = [RtpPacket.parse(peer.recv(2048)) for _ in range(5)]
        seqs = [(p.sequence_number - pkts[0].sequence_number) & 0xFFFF for p in pkts]
        tss = [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts]
        assert seqs == [0, 1, 2, 3, 4]  # no sequence gap: nothing was lost
        assert tss == [0, 160, 320, 480, 160 * 13]  # frames 4..12 skipped: clock on wall time
        assert pkts[0].marker and not any(p.marker for p in pkts[1:])
        # The prompt also advanced past the skipped frames (audio stays in real time).
        player = ep._source
        assert isinstance(player, Player) and player._pos == 14
    finally:
        ep.close()
        peer.close()
    assert fake.streams == []


async def test_packets_with_csrcs_and_header_extension_are_decoded() -> None:
    ep = await RtpEndpoint.open(rtcp=False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    frames: list[np.ndarray] = []

    class Sink:
        def write_pcm(self, pcm: np.ndarray) -> None:
            frames.append(pcm)

    ep.record(Sink(), jitter_buffer=False)
    try:
        payload = PCMU.encode(np.full(160, 1000, np.int16))
        plain = RtpPacket(0, 1, 160, 9, payload)
        mixed = RtpPacket(
            0, 2, 320, 9, payload, csrc=(1, 2), extension=(0xBEDE, b"\x10\x01\x00\x00")
        )
        for pkt in (plain, mixed):
            peer.sendto(bytes(pkt), ep.local_address)
        await async_wait_until(lambda: len(frames) == 2)
        assert all(np.array_equal(f, PCMU.decode(payload)) for f in frames)
        assert ep.malformed == 0 and ep.stats is not None and ep.stats.max_seq == 2
    finally:
        ep.close()
        peer.close()


async def test_play_and_dtmf_on_a_closed_endpoint_complete_at_once() -> None:
    ep = await RtpEndpoint.open()
    ep.close()
    assert ep.play(tone_prompt([400], on_ms=100)).done()
    assert ep.send_dtmf("1").done()
    assert not ep.playing
