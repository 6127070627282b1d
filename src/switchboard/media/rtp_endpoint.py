"""asyncio RTP/RTCP endpoint: one UDP socket pair per call leg, paced by the process tick.

Send path (per tick, per stream): take the next pre-encoded payload from the source,
rewrite seq/ts in a preallocated header with ``struct.pack_into``, ``sendto`` on the
stream's own non-blocking socket. No task, timer or allocation per packet.

Receive path: ``datagram_received`` → symmetric-RTP latch check → one
``struct.unpack_from`` (:func:`~switchboard.rtp.packet.peek_header`) → RFC 3550 A.1/A.8
statistics → telephone-event, relay hook, jitter buffer or sink. Malformed datagrams
are counted and dropped; the endpoint never raises on a peer's bytes.

Symmetric RTP (RFC 4961; NAT traversal as FreeSWITCH/rtpengine do it): the first valid
RTP packet fixes the remote address we send to ("latching"), whatever the SDP said;
packets from any other source are dropped afterwards until :meth:`RtpEndpoint.relatch`
(call it on a re-INVITE that changes the remote media address).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any

from switchboard.media.ports import PortAllocator
from switchboard.media.scheduler import MediaScheduler, get_scheduler
from switchboard.rtp.codec import PCMU, Codec, CodecError
from switchboard.rtp.packet import MalformedPacket, RtpHeaderWriter, peek_header
from switchboard.rtp.source import FrameSink, FrameSource, Player, Prompt
from switchboard.rtp.stats import ReceiverStats

log = logging.getLogger(__name__)

Address = tuple[str, int]
# (endpoint, payload_type, marker, seq, timestamp, payload) for relays and custom consumers.
PacketHook = Callable[["RtpEndpoint", int, bool, int, int, bytes], None]


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint._on_rtp(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: not our failure.
        self.endpoint.send_errors += 1


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint._on_rtcp(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class RtpEndpoint:
    """One RTP stream (both directions) on a local even port, RTCP on port+1.

    Create with ``await RtpEndpoint.open(...)``. Outgoing audio comes from a
    :class:`~switchboard.rtp.source.FrameSource` set with :meth:`play`; incoming audio
    goes to a :class:`~switchboard.rtp.source.FrameSink` set with :meth:`record`
    (decoded with the stream's codec), or raw to ``on_packet``.
    """

    def __init__(
        self,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket | None,
        codec: Codec,
        scheduler: MediaScheduler,
        allocator: PortAllocator | None,
        ssrc: int,
        seq: int,
        ts: int,
        symmetric: bool,
    ) -> None:
        self._sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self.codec = codec
        self._scheduler = scheduler
        self._allocator = allocator
        self.local_address: Address = rtp_sock.getsockname()[:2]
        self.symmetric = symmetric
        self.remote: Address | None = None
        self.remote_rtcp: Address | None = None
        self.latched = False
        self._ts_step = codec.clock_rate // 50
        self.writer = RtpHeaderWriter(
            ssrc=ssrc, payload_type=codec.payload_type, sequence_number=seq, timestamp=ts
        )
        self._source: FrameSource | None = None
        self._send_pcm = False
        self._playback_done: asyncio.Future[None] | None = None
        self._sink: FrameSink | None = None
        self.on_packet: PacketHook | None = None
        self.stats: ReceiverStats | None = None
        self.remote_ssrc: int | None = None
        self.packets_received = 0
        self.malformed = 0
        self.foreign = 0  # packets from a source other than the latched one
        self.send_errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._marker_next = True  # RFC 3551 §4.1: marker on the first packet of a talkspurt

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str = "127.0.0.1",
        *,
        port: int = 0,
        allocator: PortAllocator | None = None,
        codec: Codec = PCMU,
        scheduler: MediaScheduler | None = None,
        rtcp: bool = True,
        symmetric: bool = True,
        ssrc: int | None = None,
    ) -> RtpEndpoint:
        """Bind an RTP socket (and RTCP on +1) and register with the process tick.

        With ``allocator`` the port comes from the configured range; otherwise ``port``
        (0 = any free port, then RTCP gets an ephemeral port too).
        """
        loop = asyncio.get_running_loop()
        rtcp_sock: socket.socket | None
        if allocator is not None:
            _, rtp_sock, rtcp_sock = allocator.bind_pair(host)
            if not rtcp:
                rtcp_sock.close()
                rtcp_sock = None
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            rtp_sock = socket.socket(family, socket.SOCK_DGRAM)
            rtp_sock.bind((host, port))
            rtcp_sock = None
            if rtcp:
                rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtcp_sock.bind((host, rtp_sock.getsockname()[1] + 1))
                except OSError:
                    rtcp_sock.bind((host, 0))
        rtp_sock.setblocking(False)
        ep = cls(
            rtp_sock,
            rtcp_sock,
            codec,
            scheduler or get_scheduler(),
            allocator,
            ssrc if ssrc is not None else secrets.randbits(32),
            secrets.randbits(16),  # RFC 3550 §5.1: random initial seq and timestamp
            secrets.randbits(32),
            symmetric,
        )
        ep._transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(ep), sock=rtp_sock
        )
        if rtcp_sock is not None:
            rtcp_sock.setblocking(False)
            ep._rtcp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpProtocol(ep), sock=rtcp_sock
            )
        ep._scheduler.add(ep)
        return ep

    @property
    def port(self) -> int:
        return self.local_address[1]

    @property
    def rtcp_port(self) -> int | None:
        return self._rtcp_sock.getsockname()[1] if self._rtcp_sock is not None else None

    def close(self) -> None:
        """Stop sending, close the sockets, give the port back to the allocator."""
        if self._closed:
            return
        self._closed = True
        self._scheduler.remove(self)
        self._finish_playback()
        if self._transport is not None:
            self._transport.close()
        if self._rtcp_transport is not None:
            self._rtcp_transport.close()
        if self._allocator is not None:
            self._allocator.release(self.port)

    # -- addressing -------------------------------------------------------------------

    def set_remote(self, address: Address, rtcp_address: Address | None = None) -> None:
        """Where to send (from the SDP). Symmetric RTP may later latch to the seen source."""
        self.remote = (address[0], int(address[1]))
        self.remote_rtcp = rtcp_address or (address[0], int(address[1]) + 1)

    def relatch(self) -> None:
        """Accept the next source seen as the new remote (after a re-INVITE)."""
        self.latched = False
        self.stats = None

    # -- sending ----------------------------------------------------------------------

    def play(self, source: FrameSource | Prompt, loops: int = 1) -> asyncio.Future[None]:
        """Send ``source`` from the next tick on; the future completes when it ends or is replaced.

        A :class:`Prompt` is wrapped in a :class:`Player` for this stream's codec, so its
        frames are pre-encoded and cached. Other sources may provide either payloads
        or PCM (encoded per frame).
        """
        self._finish_playback()
        if isinstance(source, Prompt):
            source = Player(source, self.codec, loops)
        self._source = source
        self._send_pcm = not isinstance(source, Player)
        self._marker_next = True
        self._playback_done = asyncio.get_running_loop().create_future()
        return self._playback_done

    def stop_playback(self) -> None:
        self._finish_playback()

    def _finish_playback(self) -> None:
        self._source = None
        fut = self._playback_done
        self._playback_done = None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def send_payload(
        self, payload: bytes, samples: int | None = None, marker: bool = False, pt: int = -1
    ) -> None:
        """Send one packet now (relay/echo path); advances seq, and ts by ``samples``."""
        remote = self.remote
        if remote is None or self._closed:
            return
        pkt = self.writer.packet(payload, self._ts_step if samples is None else samples, marker, pt)
        try:
            self._sock.sendto(pkt, remote)
        except OSError:  # EAGAIN (socket buffer full) or ICMP-reported error: drop, count
            self.send_errors += 1

    def on_tick(self, frames: int, skipped: int) -> None:
        """Called by the scheduler: send ``frames`` packets after skipping ``skipped`` frames."""
        source = self._source
        remote = self.remote
        if source is None or remote is None:
            return
        writer = self.writer
        step = self._ts_step
        if skipped:
            if isinstance(source, Player):
                source.skip(skipped)
            writer.skip(step * skipped)
        sock = self._sock
        for _ in range(frames):
            if self._send_pcm:
                pcm = source.read_pcm()
                payload = None if pcm is None else self.codec.encode(pcm)
            else:
                payload = source.read_payload()
            if payload is None:
                self._finish_playback()
                return
            pkt = writer.packet(payload, step, self._marker_next)
            self._marker_next = False
            try:
                sock.sendto(pkt, remote)
            except OSError:
                self.send_errors += 1

    # -- receiving --------------------------------------------------------------------

    def record(self, sink: FrameSink | None) -> None:
        """Deliver each received audio frame, decoded to PCM, to ``sink`` (None stops)."""
        self._sink = sink

    def _on_rtp(self, data: bytes, addr: Any) -> None:
        try:
            pt, marker, seq, ts, ssrc, off = peek_header(data)
        except MalformedPacket:
            self.malformed += 1
            return
        if self.symmetric:
            remote = self.remote
            if not self.latched:
                # Latch only on a valid RTP packet, so junk cannot hijack the stream.
                self.latched = True
                if remote != (addr[0], addr[1]):
                    log.debug("RTP latched to %s:%s (SDP said %s)", addr[0], addr[1], remote)
                    self.remote = (addr[0], addr[1])
                    self.remote_rtcp = (addr[0], addr[1] + 1)
            elif remote is None or addr[1] != remote[1] or addr[0] != remote[0]:
                self.foreign += 1
                return
        self.packets_received += 1
        stats = self.stats
        if stats is None or stats.ssrc != ssrc:
            self.stats = stats = ReceiverStats(ssrc, seq, self.codec.clock_rate)
            self.remote_ssrc = ssrc
        stats.update(seq, ts, self._loop.time())
        hook = self.on_packet
        if hook is not None:
            hook(self, pt, marker, seq, ts, data[off:])
            return
        sink = self._sink
        if sink is not None and pt == self.codec.payload_type:
            try:
                sink.write_pcm(self.codec.decode(data[off:]))
            except CodecError:
                self.malformed += 1

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        pass
