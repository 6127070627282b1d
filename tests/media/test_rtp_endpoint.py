"""asyncio RTP endpoint on loopback: play a prompt, record to WAV, latching, bad input."""

from __future__ import annotations

import asyncio
import io
import socket

import numpy as np

from switchboard.media.ports import PortAllocator
from switchboard.media.rtp_endpoint import RtpEndpoint
from switchboard.rtp.codec import PCMA
from switchboard.rtp.packet import RtpPacket
from switchboard.rtp.source import Prompt, WavRecorder, tone_prompt
from switchboard.rtp.wav import decode_wav, encode_wav


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


async def wait_for(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


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
        await wait_for(lambda: b.packets_received >= len(prompt))
        rec.close()
        pcm, rate = decode_wav(out.getvalue())
        assert rate == 8000 and len(pcm) == len(prompt) * 160
        assert abs(dominant_hz(pcm) - 700) < 5
        assert 0.35 < elapsed < 0.6  # paced in real time: 20 frames × 20 ms, not a burst
        assert (
            b.stats is not None and b.stats.lost == 0 and b.stats.received == len(prompt) - 1
        )  # A.1 probation
        assert a.rtcp_port is not None
    finally:
        a.close()
        b.close()


async def test_symmetric_rtp_latches_to_the_source_seen_and_drops_others() -> None:
    ep = await RtpEndpoint.open()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    try:
        ep.set_remote(("127.0.0.1", 9))  # what the SDP said (wrong, e.g. behind NAT)
        intruder.sendto(b"junk, not RTP", ep.local_address)  # must not latch
        await wait_for(lambda: ep.malformed == 1)
        assert not ep.latched
        peer.sendto(bytes(RtpPacket(0, 1, 160, 42, b"\xff" * 160)), ep.local_address)
        await wait_for(lambda: ep.packets_received == 1)
        assert ep.remote == peer.getsockname()
        intruder.sendto(bytes(RtpPacket(0, 2, 320, 43, b"\xff" * 160)), ep.local_address)
        await wait_for(lambda: ep.foreign == 1)
        assert ep.remote == peer.getsockname() and ep.packets_received == 1
        # Outgoing media now goes to the latched address.
        ep.play(tone_prompt([1000], on_ms=100))
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(peer, 2048), 2)
        pkt = RtpPacket.parse(data)
        assert pkt.payload_type == 0 and pkt.marker and len(pkt.payload) == 160
        ep.relatch()
        intruder.sendto(bytes(RtpPacket(0, 5, 320, 43, b"\xff" * 160)), ep.local_address)
        await wait_for(lambda: ep.remote == intruder.getsockname())
    finally:
        ep.close()
        peer.close()
        intruder.close()


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
