"""Shared helpers for the media node tests (no tests here; SIPp runners: tests.support.sipp).

* :func:`free_even_range` — a free RTP port range for a node.
* :class:`RtpPeer` — a test RTP socket: sends a tone (µ-law or A-law), keeps what it
  receives, measures the dominant frequency of the received audio.
* :func:`bridged` — a call from a scripted caller bridged by a node to a scripted
  carrier (the caller's 200 left un-ACKed).
* :func:`start_node` — an in-process :class:`~switchboard.media.node.MediaNode` on free
  ports with a given dialplan/config overlay.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from switchboard import config
from switchboard.media.cdr import MemoryCdrSink
from switchboard.media.node import MediaNode
from switchboard.rtp.codec import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from switchboard.rtp.wav import WavError, decode_wav
from switchboard.sip.message import Request, Response
from tests.support.net import free_port
from tests.support.sip_peer import SDP, Peer, ok_to, request


def free_even_range(size: int = 400) -> tuple[int, int]:
    """A start port for an RTP range: the allocator skips ports others hold."""
    p = free_port()
    start = max(20000, min(p - p % 2, 60000 - size))
    return start, start + size - 1


def dominant_frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    spectrum[:3] = 0
    return float(np.argmax(spectrum) * rate / len(pcm))


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer: RtpPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12:
            self.peer.received.append((asyncio.get_running_loop().time(), data))


@dataclass
class RtpPeer:
    """A caller's (or carrier's) RTP socket in a test."""

    port: int = 0
    received: list[tuple[float, bytes]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    _sender: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls) -> RtpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(peer), local_addr=("127.0.0.1", 0)
        )
        peer.transport = transport  # type: ignore[assignment]
        peer.port = transport.get_extra_info("sockname")[1]
        return peer

    def send_tone(self, dest: tuple[str, int], freq: float, seconds: float, pt: int = 0) -> None:
        """Stream a tone as 20 ms RTP packets (paced by the loop clock) in the background."""
        pcm = tone(freq, seconds)
        encode = ulaw_encode if pt == 0 else alaw_encode

        async def run() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(len(pcm) // 160):
                payload = encode(pcm[i * 160 : (i + 1) * 160])
                header = struct.pack("!BBHII", 0x80, pt, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 0x1234)
                assert self.transport is not None
                self.transport.sendto(header + payload, dest)
                await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))

        self._sender = asyncio.ensure_future(run())

    async def wait_sent(self) -> None:
        if self._sender is not None:
            await self._sender

    def payload_types(self) -> set[int]:
        return {d[1] & 0x7F for _, d in self.received}

    def audio(self, pt: int | None = None, since: float = 0.0) -> np.ndarray:
        """Decoded audio of received packets with payload type ``pt`` (0 or 8)."""
        frames = []
        for t, d in self.received:
            p = d[1] & 0x7F
            if t < since or p not in (0, 8) or (pt is not None and p != pt):
                continue
            payload = d[12 + 4 * (d[0] & 0x0F) :]
            frames.append(ulaw_decode(payload) if p == 0 else alaw_decode(payload))
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self.transport is not None:
            self.transport.close()


async def start_node(
    tmp: Path, overrides: Mapping[str, Any] | None = None
) -> tuple[MediaNode, MemoryCdrSink]:
    start, end = free_even_range()
    base: dict[str, Any] = {
        "media": {
            "listen": [f"udp:127.0.0.1:{free_port()}"],
            "rtp_port_start": start,
            "rtp_port_end": end,
            "recordings_dir": str(tmp / "recordings"),
        },
        "platform": {"state_dir": str(tmp / "state")},
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    cfg = config.load(environ={}, overrides=base)
    sink = MemoryCdrSink()
    node = MediaNode(cfg, "media-1", state_dir=tmp / "state", cdr_sink=sink, esl=False, admin=False)
    await node.start()
    return node, sink


@dataclass
class CrashLab:
    """A node bridging to a carrier gateway, its caller and carrier, and the journal a
    restart reads: the test "kills" the node by copying ``path`` to ``copy`` at the
    moment it chooses, then starts another node on ``tmp/"b"`` (:func:`start_node` with
    ``gateways``), which reads that copy as its own journal."""

    node: MediaNode
    caller: Peer
    carrier: Peer
    gateways: dict[str, Any]
    path: Path
    copy: Path

    async def close(self, restarted: MediaNode | None) -> None:
        """Close both peers and stop the node and the one started on its journal."""
        self.caller.close()
        self.carrier.close()
        if restarted is not None:
            await restarted.stop()
        await self.node.stop()


async def crash_lab(tmp: Path) -> CrashLab:
    carrier, caller = await Peer.udp(), await Peer.udp()
    gateways = {"gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.port}"}}}
    node, _ = await start_node(tmp / "a", gateways)
    path = tmp / "a" / "state" / "journal" / "media-1.jnl"
    copy = tmp / "b" / "state" / "journal" / "media-1.jnl"
    copy.parent.mkdir(parents=True)
    return CrashLab(node, caller, carrier, gateways, path, copy)


async def bridged(
    node: MediaNode, caller: Peer, carrier: Peer, call_id: str
) -> tuple[Request, Response]:
    """A call from ``caller`` bridged by ``node`` to ``carrier``: the carrier's INVITE and
    the caller's 200 (not ACKed: the test decides)."""
    offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
    invite = request(caller, "INVITE", node.sip_port, call_id=call_id, cseq=1,
                     branch=call_id, body=offer)  # fmt: skip
    caller.send(invite.replace("sip:echo@", "sip:+12155550131@", 2), node.sip_port)
    out = await carrier.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
    assert isinstance(out, Request)
    answer = SDP.format(ver=1, port=40002, fmt="0", dir="sendrecv")
    contact = f"sip:carrier@127.0.0.1:{carrier.port}"
    carrier.send(ok_to(out, tag="carrier1", sdp=answer, contact=contact), node.sip_port)
    ok = await caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
    assert isinstance(ok, Response)
    return out, ok


async def finished_wav(path: Path, timeout: float = 10.0) -> np.ndarray:
    """The audio of a WAV its writer (baresip, or the node at hangup) has finalised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            pcm, _ = decode_wav(path.read_bytes(), 8000)
            if len(pcm):  # a header not yet finalised reads as empty
                return pcm
        except (WavError, OSError):
            if loop.time() > deadline:
                raise
        if loop.time() > deadline:
            raise AssertionError(f"{path} stayed empty")
        await asyncio.sleep(0.1)


# The SIPp runners moved to tests.support.sipp; these names stay importable from here
# until branches written against the old place have landed. New code: tests.support.sipp.
from tests.support.sipp import HAVE_SIPP, SippResult, finish_sipp, run_sipp  # noqa: E402, F401
from tests.support.sipp import SCENARIOS as SIPP_DIR  # noqa: E402, F401


def ulaw_wav(path: Path, seconds: float = 1.0) -> Path:
    """A G.711 u-law WAV (format 7) for SIPp's ``rtp_stream`` (scenarios stream
    ``tone.wav`` from SIPp's working directory): a 400 Hz square wave."""
    import struct

    n = int(8000 * seconds)
    data = bytes(0x20 if (i // 10) % 2 else 0xA0 for i in range(n))
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + n) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", n) + data
    )  # fmt: skip
    return path
