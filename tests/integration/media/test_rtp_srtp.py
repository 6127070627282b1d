"""SRTP on the RTP endpoint (libsrtp via pylibsrtp) on loopback: a tone protected both
ways and heard, an SRTP ↔ plain RTP bridge, and forged, replayed or plain packets on an
SRTP stream counted and dropped (the endpoint keeps working)."""

from __future__ import annotations

import asyncio
import io
import os
import socket

import numpy as np
from pylibsrtp import Policy, Session

from switchboard.media.rtp_endpoint import RtpEndpoint, bridge
from switchboard.rtp.codec import PCMU
from switchboard.rtp.packet import RtpPacket
from switchboard.rtp.source import WavRecorder, tone_prompt
from switchboard.rtp.wav import decode_wav
from tests.support.net import async_wait_until

SUITE = "AES_CM_128_HMAC_SHA1_80"


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


async def record_tone(src: RtpEndpoint, dst: RtpEndpoint, hz: int) -> np.ndarray:
    out = io.BytesIO()
    rec = WavRecorder(out)
    dst.record(rec, jitter_buffer=False)
    sent, got = src.writer.packets_sent, dst.packets_received
    await asyncio.wait_for(src.play(tone_prompt([hz], on_ms=400)), 5)
    n = src.writer.packets_sent - sent
    await async_wait_until(lambda: dst.packets_received - got >= n, 5)
    dst.record(None)
    rec.close()
    return decode_wav(out.getvalue())[0]


async def test_srtp_both_ways_and_bridged_to_plain_rtp() -> None:
    ka, kb = os.urandom(30), os.urandom(30)
    a = await RtpEndpoint.open(codec=PCMU)
    b = await RtpEndpoint.open(codec=PCMU)
    plain = await RtpEndpoint.open(codec=PCMU)
    b_plain = await RtpEndpoint.open(codec=PCMU)
    sniff = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.set_srtp(SUITE, ka, kb)
        b.set_srtp(SUITE, kb, ka)
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        pcm = await record_tone(a, b, 1000)
        assert abs(dominant_hz(pcm) - 1000) < 10 and b.srtp_failures == 0
        pcm = await record_tone(b, a, 600)
        assert abs(dominant_hz(pcm) - 600) < 10 and a.srtp_failures == 0
        # On the wire it is not RTP a plain receiver can decode: payload ≠ the G.711 one.
        sniff.bind(("127.0.0.1", 0))
        a.set_remote(sniff.getsockname()[:2])
        a.send_payload(PCMU.encode(np.full(160, 1000, dtype=np.int16)))
        wire = sniff.recv(2048)
        assert len(wire) == 12 + 160 + 10  # RTP header, payload, 80-bit auth tag
        assert wire[12:172] != PCMU.encode(np.full(160, 1000, dtype=np.int16))
        # SRTP ↔ RTP: b (SRTP from a) bridged to b_plain (plain RTP to `plain`)
        a.set_remote(b.local_address)
        b_plain.set_remote(plain.local_address)
        plain.set_remote(b_plain.local_address)
        bridge(b, b_plain)
        pcm = await record_tone(a, plain, 800)
        assert abs(dominant_hz(pcm) - 800) < 10
        pcm = await record_tone(plain, a, 400)
        assert abs(dominant_hz(pcm) - 400) < 10
    finally:
        for ep in (a, b, plain, b_plain):
            ep.close()
        sniff.close()


async def test_forged_replayed_and_plain_packets_are_counted_and_dropped() -> None:
    ka, kb = os.urandom(30), os.urandom(30)
    b = await RtpEndpoint.open(codec=PCMU)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    try:
        b.set_srtp(SUITE, kb, ka)
        b.set_remote(attacker.getsockname()[:2])
        tx = Session(Policy(key=ka, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))  # fmt: skip

        def packet(seq: int) -> bytes:
            return bytes(RtpPacket(0, seq, seq * 160, 7, b"\xff" * 160))

        good = tx.protect(packet(1))
        forged = bytearray(tx.protect(packet(2)))
        forged[20] ^= 1
        for data in (good, good, bytes(forged), packet(3), b"\x80junk"):
            attacker.sendto(data, b.local_address)
        await async_wait_until(lambda: b.srtp_failures == 4, 5)  # replay, forged, plain, junk
        assert b.packets_received == 1  # only the authentic packet got through
        attacker.sendto(tx.protect(packet(4)), b.local_address)  # still working
        await async_wait_until(lambda: b.packets_received == 2, 5)
    finally:
        b.close()
        attacker.close()
