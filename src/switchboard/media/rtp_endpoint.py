"""asyncio RTP/RTCP endpoint: one UDP socket pair per call leg, paced by the process tick.

Send path (per tick, per stream): take the next pre-encoded payload from the source,
rewrite seq/ts in a preallocated header with ``struct.pack_into``, ``sendto`` on the
stream's own non-blocking socket. No task, timer or allocation per packet.

Receive path: the socket's readiness callback reads one datagram (``recv`` once the
socket is connected to the latched peer, ``recvfrom`` before) → symmetric-RTP latch check → one
``struct.unpack_from`` (:func:`~switchboard.rtp.packet.peek_header`) → RFC 3550 A.1/A.8
statistics → telephone-event, relay hook, jitter buffer or sink. Malformed datagrams
are counted and dropped; the endpoint never raises on a peer's bytes.

DTMF: telephone-events (RFC 4733) are sent with :meth:`RtpEndpoint.send_dtmf` and
received into ``on_dtmf``; in-band tones are detected (Goertzel) when
``detect_inband_dtmf`` is on. RTCP (RFC 3550 §6) SR/RR+SDES go out on port+1 at the
§6.3 interval, checked once per tick (no timer of its own); BYE on close.

Symmetric RTP (RFC 4961; NAT traversal as FreeSWITCH/rtpengine do it): the first valid
RTP packet fixes the remote address we send to ("latching"), whatever the SDP said;
packets from any other source are dropped afterwards until :meth:`RtpEndpoint.relatch`
(call it on a re-INVITE that changes the remote media address).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import random
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from switchboard.media.ports import PortAllocator
from switchboard.media.scheduler import MediaScheduler, get_scheduler
from switchboard.media.srtp import SrtpError, SrtpStream
from switchboard.rtp.codec import PCM, PCMU, Codec, CodecError
from switchboard.rtp.dtmf import (
    DtmfError,
    DtmfEvent,
    DtmfReceiver,
    DtmfSender,
    InbandDtmfDetector,
    digit_code,
)
from switchboard.rtp.jitter import JitterBuffer
from switchboard.rtp.mixer import ConferenceMixer
from switchboard.rtp.packet import MalformedPacket, RtpHeaderWriter, peek_header
from switchboard.rtp.relay import RelayPath
from switchboard.rtp.rtcp import Bye, RtcpSession, SenderState
from switchboard.rtp.source import FrameSink, FrameSource, Player, Prompt
from switchboard.rtp.stats import ReceiverStats

log = logging.getLogger(__name__)

Address = tuple[str, int]
# (endpoint, payload_type, marker, seq, timestamp, ssrc, payload): relays and custom consumers.
PacketHook = Callable[["RtpEndpoint", int, bool, int, int, int, bytes], None]
DtmfHook = Callable[["RtpEndpoint", DtmfEvent], None]

_REST_OF_HEADER = struct.Struct("!BHII")  # RFC 3550 §5.1 after the first octet

# Largest RTP datagram read: 20 ms of L16 at 48 kHz stereo (3,840 octets) and headers fit;
# UDP truncates anything longer, which no audio codec here produces.
_MAX_DATAGRAM = 4096

DEFAULT_EVENT_PT = 101  # the usual dynamic PT for telephone-event (FreeSWITCH's and most phones')


def _libc_connect() -> Callable[..., int] | None:
    """The C library's ``connect``: Python's ``socket.connect`` cannot pass AF_UNSPEC."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name, use_errno=True), "connect", None)
    except OSError:
        return None


_connect = _libc_connect()
# A sockaddr whose family is AF_UNSPEC (0): connect(2) with it dissolves a UDP socket's
# association (Linux inet_dgram_connect, both families; the BSDs alike).
_UNSPEC = ctypes.create_string_buffer(16)


def _disconnect(sock: socket.socket) -> bool:
    """Undo ``connect`` on a UDP socket, so it receives from any source again."""
    if _connect is None:
        return False
    return _connect(sock.fileno(), _UNSPEC, len(_UNSPEC)) == 0


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
    (decoded, through a jitter buffer unless disabled), or raw to ``on_packet``
    (see :func:`bridge` and :meth:`echo`).
    """

    # Slots: a node holds thousands of these and the tick touches each one every 20 ms;
    # compact objects keep that walk cache-friendly and attribute access fast.
    __slots__ = (
        "_allocator",
        "_closed",
        "_connected",
        "_dtmf_done",
        "_dtmf_duration_ms",
        "_dtmf_gap",
        "_dtmf_gap_ticks",
        "_dtmf_packets",
        "_dtmf_rx",
        "_dtmf_rx_open",
        "_dtmf_tx",
        "_external",
        "_inband",
        "_jb",
        "_loop",
        "_marker_next",
        "_paused_rcvbuf",
        "_pinned",
        "_playback_done",
        "_reading",
        "_rtcp_due",
        "_rtcp_sock",
        "_rtcp_transport",
        "_scheduler",
        "_send_pcm",
        "_silence",
        "_sink",
        "_sock",
        "_source",
        "_srtp",
        "_ts_step",
        "codec",
        "event_pt",
        "foreign",
        "latched",
        "local_address",
        "malformed",
        "on_dtmf",
        "on_packet",
        "packets_received",
        "remote",
        "remote_rtcp",
        "remote_ssrc",
        "rtcp",
        "rtcp_bye",
        "rtcp_received",
        "rtcp_sent",
        "send_errors",
        "srtp_failures",
        "stats",
        "symmetric",
        "tap",
        "writer",
    )

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
        event_pt: int | None,
        rtcp_min_interval: float,
    ) -> None:
        self._sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self._paused_rcvbuf = 0  # the receive buffer's size while pause_reading shrank it
        self.codec = codec
        self.event_pt = event_pt
        self._scheduler = scheduler
        self._allocator = allocator
        self._loop = asyncio.get_running_loop()
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
        self._marker_next = True  # RFC 3551 §4.1: marker on the first packet of a talkspurt
        self._sink: FrameSink | None = None
        self._jb: JitterBuffer | None = None
        self._external = False  # a conference pulls received audio itself
        self._silence: PCM = np.zeros(codec.sample_rate // 50, np.int16)
        self.on_packet: PacketHook | None = None
        # lawful recording (media/intercept.py): sees every received packet after the relay
        # forwarded it, so the parties get no extra delay; independent of record sinks
        self.tap: PacketHook | None = None
        self.on_dtmf: DtmfHook | None = None
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_rx_open = False  # an RFC 4733 event is open: check its timeout per tick
        self._inband: InbandDtmfDetector | None = None
        self._dtmf_tx: deque[str] = deque()
        self._dtmf_packets: deque[tuple[bytes, bool, int]] = deque()
        self._dtmf_gap = 0
        self._dtmf_gap_ticks = 3
        self._dtmf_duration_ms = 100
        self._dtmf_done: asyncio.Future[None] | None = None
        self.stats: ReceiverStats | None = None
        self.remote_ssrc: int | None = None
        self.packets_received = 0
        self.malformed = 0
        self.foreign = 0  # packets from a source other than the latched one
        self.send_errors = 0
        self._srtp: SrtpStream | None = None
        self.srtp_failures = 0  # SRTP/SRTCP packets that failed authentication or replay
        self.rtcp_sent = 0
        self.rtcp_received = 0
        self.rtcp_bye = False  # the peer said BYE (RFC 3550 §6.6)
        self.rtcp: RtcpSession | None = None
        if rtcp_sock is not None:
            self.rtcp = RtcpSession(
                ssrc=ssrc,
                cname=f"{ssrc:08x}@{self.local_address[0]}".encode(),
                clock_rate=codec.clock_rate,
                min_time=rtcp_min_interval,
            )
        self._rtcp_due = float("inf")
        self._reading = False  # the RTP socket's fd is registered with the loop (add_reader)
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._closed = False
        # The socket is connect()ed to the latched remote: the kernel then drops other
        # sources itself and sends without a per-packet address and route lookup.
        self._connected = False
        # Bound to a port we chose (allocator or explicit): only then may the socket be
        # connected, because disconnecting a socket bound to port 0 gives its port back
        # (Linux keeps the port across AF_UNSPEC connect only when bind named it).
        self._pinned = False

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
        rtcp_min_interval: float = 5.0,
        symmetric: bool = True,
        event_pt: int | None = DEFAULT_EVENT_PT,
        ssrc: int | None = None,
        seq: int | None = None,
        ts: int | None = None,
    ) -> RtpEndpoint:
        """Bind an RTP socket (and RTCP on +1) and register with the process tick.

        With ``allocator`` the port comes from the configured range; otherwise ``port``
        (0 = any free port; RTCP then takes port+1 when free, else any port).
        ``event_pt`` is the negotiated telephone-event payload type (None = not offered).
        With ``allocator`` and ``port`` that exact port is taken from the range, and
        ``ssrc``/``seq``/``ts`` continue a stream (a call resumed after a restart).
        """
        loop = asyncio.get_running_loop()
        rtcp_sock: socket.socket | None
        if allocator is not None:
            if port:
                rtp_sock, rtcp_sock = allocator.bind_exact(host, port)
            else:
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
            # RFC 3550 §5.1: random initial seq and timestamp
            seq if seq is not None else secrets.randbits(16),
            ts if ts is not None else secrets.randbits(32),
            symmetric,
            event_pt,
            rtcp_min_interval,
        )
        ep._pinned = allocator is not None or port != 0
        # The RTP socket is read by the endpoint's own readiness callback, not through a
        # datagram transport: see _readable.
        loop.add_reader(rtp_sock.fileno(), ep._readable)
        ep._reading = True
        if rtcp_sock is not None:
            rtcp_sock.setblocking(False)
            ep._rtcp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpProtocol(ep), sock=rtcp_sock
            )
        ep._scheduler.add(ep)
        return ep

    def pause_reading(self) -> None:
        """Leave the RTP socket unread until :meth:`resume_reading` — a restart
        rebuilding a thousand journaled legs must not spend its loop on the packets far
        ends keep sending to legs not bridged yet. The socket's receive buffer shrinks to
        the kernel's minimum meanwhile (a few datagrams): what arrives while paused is
        stale audio, and a thousand legs' second of it (~50,000 datagrams) read at
        resume held the loop before the bridges could start relaying."""
        if self._reading and not self._closed:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())
            sock = self._sock
            self._paused_rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # clamped to the minimum

    def resume_reading(self) -> None:
        if not self._reading and not self._closed:
            if self._paused_rcvbuf:
                # getsockopt reports the doubled size the kernel keeps (socket(7))
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._paused_rcvbuf // 2)
                self._paused_rcvbuf = 0
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._reading = True

    @property
    def port(self) -> int:
        return self.local_address[1]

    @property
    def rtcp_port(self) -> int | None:
        return self._rtcp_sock.getsockname()[1] if self._rtcp_sock is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop sending (RTCP BYE first), close the sockets, give the port back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._scheduler.remove(self)
        self._finish_playback()
        self._finish_dtmf()
        if self.rtcp is not None and self.remote_rtcp is not None and self._rtcp_sock is not None:
            with contextlib.suppress(OSError):
                self._rtcp_sock.sendto(self.rtcp.bye(), self.remote_rtcp)
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._rtcp_transport is not None:
            self._rtcp_transport.close()
        if self._allocator is not None:
            self._allocator.release(self.port)
        # Hooks are closures over the call (the echo relay points back at this very
        # endpoint): dropping them leaves no cycle for the garbage collector.
        self.on_packet = None
        self.tap = None
        self.on_dtmf = None
        self._sink = None
        self._source = None

    # -- addressing -------------------------------------------------------------------

    def set_remote(self, address: Address, rtcp_address: Address | None = None) -> None:
        """Where to send (from the SDP). Symmetric RTP may later latch to the seen source."""
        remote = (address[0], int(address[1]))
        if self._connected and remote != self.remote:
            self._unconnect()
        self.remote = remote
        self.remote_rtcp = rtcp_address or (address[0], int(address[1]) + 1)
        if self.rtcp is not None and self.rtcp.next_time is None:
            self.rtcp.start(self._loop.time(), random.random())
            self._rtcp_due = self.rtcp.next_time or float("inf")

    def set_codec(self, codec: Codec, event_pt: int | None = DEFAULT_EVENT_PT) -> None:
        """Switch codec (re-INVITE with a new answer). The SSRC and clock continue.

        A prompt being played is re-encoded for the new codec from its current position;
        the jitter buffer restarts (old-codec payloads in it are dropped).
        """
        self.codec = codec
        self.event_pt = event_pt
        self.writer.payload_type = codec.payload_type
        self._ts_step = codec.clock_rate // 50
        self._silence = np.zeros(codec.sample_rate // 50, np.int16)
        source = self._source
        if isinstance(source, Player) and source.codec is not None:
            fresh = source.with_codec(codec)
            self._source = fresh
            self._send_pcm = not fresh.encoded_for(codec)
        if self._jb is not None:
            self._jb = None
            self._ensure_jitter_buffer()
        self._marker_next = True

    def relatch(self) -> None:
        """Accept the next source seen as the new remote (after a re-INVITE)."""
        self.latched = False
        self.stats = None
        if self._connected:
            self._unconnect()

    def _connect_latched(self) -> None:
        """Tie the socket to the latched remote (RFC 4961 symmetric RTP done by the kernel).

        A connected UDP socket gets only that source's datagrams (the others are dropped
        by the kernel, as the latch would drop them here, uncounted) and sends with
        ``send``: no address to convert and no route to look up per packet, ~1.1 µs less
        CPU per packet sent (``bench/media``). Only when it can be undone (``relatch``,
        a new remote): with the C library's ``connect`` at hand, on a port we bound by
        number (a node's ports come from its RTP range).
        """
        remote = self.remote
        if _connect is None or remote is None or self._closed or not self._pinned:
            return
        try:
            self._sock.connect(remote)
        except OSError:  # e.g. a family mismatch: stay unconnected, sendto still works
            return
        self._connected = True

    def _unconnect(self) -> None:
        self._connected = False
        if not _disconnect(self._sock):
            log.warning("RTP socket %s could not be disconnected", self.local_address)

    # -- sending ----------------------------------------------------------------------

    def play(self, source: FrameSource | Prompt, loops: int = 1) -> asyncio.Future[None]:
        """Send ``source`` from the next tick on; the future completes when it ends or is replaced.

        A :class:`Prompt` is wrapped in a :class:`Player` for this stream's codec, so its
        frames are pre-encoded and cached. Other sources are read as PCM and encoded
        per frame (tones, mixers, queues).
        """
        self._finish_playback()
        if self._closed:  # nothing will ever tick it: report it finished at once
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        if isinstance(source, Prompt):
            source = Player(source, self.codec, loops)
        self._source = source
        self._send_pcm = not (isinstance(source, Player) and source.encoded_for(self.codec))
        self._marker_next = True
        self._playback_done = self._loop.create_future()
        return self._playback_done

    def stop_playback(self) -> None:
        self._finish_playback()

    @property
    def playing(self) -> bool:
        return self._source is not None

    def _finish_playback(self) -> None:
        self._source = None
        fut = self._playback_done
        self._playback_done = None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def send_dtmf(
        self, digits: str, duration_ms: int = 100, gap_ms: int = 60
    ) -> asyncio.Future[None]:
        """Queue RFC 4733 telephone-events; the future completes after the last end packet.

        Raises :class:`~switchboard.rtp.dtmf.DtmfError` for a non-DTMF character (nothing
        is queued then) and ``RuntimeError`` when no telephone-event PT was negotiated.
        """
        if self.event_pt is None:
            raise RuntimeError("telephone-event was not negotiated on this stream")
        for d in digits:
            digit_code(d)
        if self._closed:
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        self._dtmf_duration_ms = duration_ms
        self._dtmf_gap_ticks = max(gap_ms // 20, 0)
        self._dtmf_tx.extend(digits)
        if self._dtmf_done is None or self._dtmf_done.done():
            self._dtmf_done = self._loop.create_future()
        return self._dtmf_done

    def _finish_dtmf(self) -> None:
        self._dtmf_tx.clear()
        self._dtmf_packets.clear()
        if self._dtmf_done is not None and not self._dtmf_done.done():
            self._dtmf_done.set_result(None)

    def set_srtp(
        self, suite: str | None, local_key: bytes | None, remote_key: bytes | None
    ) -> None:
        """Protect this stream with SRTP (RFC 3711) from now on, or plain RTP (None).
        Unchanged keys keep the running sessions (their replay windows and rollover)."""
        if suite is None or local_key is None or remote_key is None:
            self._srtp = None
            return
        cur = self._srtp
        if cur is not None and cur.suite == suite and cur.keys == (local_key, remote_key):
            return
        self._srtp = SrtpStream(suite, local_key, remote_key)

    @property
    def srtp_suite(self) -> str | None:
        return self._srtp.suite if self._srtp is not None else None

    def _sendto(self, pkt: memoryview) -> None:
        remote = self.remote
        if remote is None:
            return
        srtp = self._srtp
        try:
            if self._connected:
                self._sock.send(pkt if srtp is None else srtp.tx.protect(bytes(pkt)))
            else:
                self._sock.sendto(pkt if srtp is None else srtp.tx.protect(bytes(pkt)), remote)
        except OSError:  # EAGAIN (socket buffer full) or ICMP-reported error: drop, count
            self.send_errors += 1

    def send_payload(
        self, payload: bytes, marker: bool = False, pt: int = -1, timestamp: int = -1
    ) -> None:
        """Send one packet now (relay/echo path). ``timestamp`` ≥ 0 sets the stream clock."""
        if self.remote is None or self._closed:
            return
        writer = self.writer
        if timestamp >= 0:
            writer.timestamp = timestamp
        self._sendto(writer.packet(payload, 0, marker, pt))

    def on_tick(self, frames: int, skipped: int) -> None:
        """Called by the scheduler: send ``frames`` packets after skipping ``skipped`` frames."""
        if self._jb is not None and not self._external:
            self._playout(frames + skipped)
        now = self._scheduler.now
        if now >= self._rtcp_due:
            self._send_rtcp(now)
        if self._dtmf_rx_open:
            self._dtmf_timeout(now)
        if (self._dtmf_tx or self._dtmf_packets) and self._dtmf_tick(frames, skipped):
            return
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
        connected = self._connected
        srtp = self._srtp
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
                if srtp is not None:
                    pkt = srtp.tx.protect(bytes(pkt))  # type: ignore[assignment]
                if connected:
                    sock.send(pkt)
                else:
                    sock.sendto(pkt, remote)
            except OSError:
                self.send_errors += 1

    def _dtmf_timeout(self, now: float) -> None:
        rx = self._dtmf_rx
        for event in rx.handle_timer(now):
            self._emit_dtmf(event)
        self._dtmf_rx_open = rx.open

    def _dtmf_tick(self, frames: int, skipped: int) -> bool:
        """Send this tick's telephone-event packet; True when it replaced the audio frame."""
        step = self._ts_step
        if not self._dtmf_packets:
            if self._dtmf_gap > 0:
                self._dtmf_gap -= 1
                return False
            digit = self._dtmf_tx.popleft()
            sender = DtmfSender(
                digit, self.writer.timestamp, self._dtmf_duration_ms, self.codec.clock_rate
            )
            self._dtmf_packets.extend(sender.packets())
        self.writer.skip(step * skipped)
        assert self.event_pt is not None
        for _ in range(frames):
            if not self._dtmf_packets:
                break
            payload, marker, ts = self._dtmf_packets.popleft()
            self._sendto(self.writer.packet(payload, step, marker, self.event_pt, ts))
        if not self._dtmf_packets:
            self._dtmf_gap = self._dtmf_gap_ticks
            self._marker_next = True  # audio after an event starts a new talkspurt
            if not self._dtmf_tx:
                self._finish_dtmf()
        return True

    def _send_rtcp(self, now: float) -> None:
        session = self.rtcp
        if session is None or self.remote_rtcp is None or self._rtcp_sock is None:
            self._rtcp_due = float("inf")
            return
        w = self.writer
        if w.packets_sent:
            session.note_sent()
        data = session.handle_timer(
            now,
            time.time(),
            random.random(),
            SenderState(w.packets_sent, w.octets_sent, w.timestamp),
            self.stats,
        )
        self._rtcp_due = session.next_time or float("inf")
        if data is not None:
            try:
                srtp = self._srtp
                if srtp is not None:
                    data = srtp.tx.protect_rtcp(data)  # SRTCP (RFC 3711 §3.4)
                self._rtcp_sock.sendto(data, self.remote_rtcp)
                self.rtcp_sent += 1
            except OSError:
                self.send_errors += 1

    # -- receiving --------------------------------------------------------------------

    def record(
        self, sink: FrameSink | None, jitter_buffer: bool = True, max_delay_ms: int = 200
    ) -> None:
        """Deliver received audio, decoded to PCM, to ``sink`` (None stops).

        With ``jitter_buffer`` (terminating media: recording, IVR, conference) frames are
        reordered and played out one per tick, lost frames concealed with silence, so
        the sink sees a steady 50 frames/s. Without it, each packet is decoded on arrival.
        """
        self._sink = sink
        if (sink is not None and jitter_buffer) or self._inband is not None or self._external:
            self._ensure_jitter_buffer(max_delay_ms)
        else:
            self._jb = None

    def _ensure_jitter_buffer(self, max_delay_ms: int = 200) -> None:
        if self._jb is None:
            max_frames = max(max_delay_ms // 20, 1)
            self._jb = JitterBuffer(self._ts_step, self.codec.clock_rate, max_frames=max_frames)

    @property
    def jitter_buffer(self) -> JitterBuffer | None:
        return self._jb

    def pull_pcm(self) -> PCM | None:
        """Take the frame due now from the jitter buffer, decoded (None: nothing to play).

        For a tick owner that pulls audio itself (a conference); the endpoint then stops
        its own playout to the sink (see :meth:`external_playout`).
        """
        jb = self._jb
        if jb is None:
            return None
        payload = jb.get()
        if payload is None:
            return None
        try:
            pcm = self.codec.decode(payload)
        except CodecError:
            self.malformed += 1
            return None
        if self._inband is not None:
            self._inband_feed(pcm)
        return pcm

    def external_playout(self, enabled: bool = True) -> None:
        """Let another tick owner pull received audio with :meth:`pull_pcm`."""
        self._external = enabled
        if enabled:
            self._ensure_jitter_buffer()

    def send_pcm(self, pcm: PCM) -> None:
        """Encode and send one frame now (the conference's per-tick output)."""
        if self.remote is None or self._closed:
            return
        self._sendto(self.writer.packet(self.codec.encode(pcm), self._ts_step, self._marker_next))
        self._marker_next = False

    def detect_inband_dtmf(self, enabled: bool = True) -> None:
        """Run the Goertzel detector on received audio (carriers without telephone-event)."""
        self._inband = InbandDtmfDetector(self.codec.sample_rate) if enabled else None
        if enabled:
            # Detection runs on the played-out stream, so silence while the peer sends
            # nothing still ends a digit.
            self._ensure_jitter_buffer()

    def echo(self) -> None:
        """Send every received packet back to its sender (the ``echo`` application)."""
        bridge(self, self)

    def _playout(self, frames: int) -> None:
        jb = self._jb
        sink = self._sink
        assert jb is not None
        for _ in range(frames):
            payload = jb.get()
            if payload is None:
                if jb.received == 0:
                    continue  # nothing has arrived yet: no recording before the first packet
                pcm = self._silence
            else:
                try:
                    pcm = self.codec.decode(payload)
                except CodecError:
                    self.malformed += 1
                    pcm = self._silence
            if self._inband is not None:
                self._inband_feed(pcm)
            if sink is not None:
                sink.write_pcm(pcm)

    def _inband_feed(self, pcm: PCM) -> None:
        det = self._inband
        if det is None:
            return
        for event in det.feed(pcm):
            self._emit_dtmf(event)

    def _emit_dtmf(self, event: DtmfEvent) -> None:
        log.debug("DTMF %s", event)
        hook = self.on_dtmf
        if hook is not None:
            hook(self, event)

    def _readable(self) -> None:
        """The RTP socket is readable: take one datagram (the loop calls again while more wait).

        The endpoint reads its socket itself rather than through a datagram transport:
        a latched leg's socket is connected, so ``recv`` needs no source address, where
        the transport built one (address string and tuple) for every packet, and read
        until EAGAIN — a second, failing ``recvmsg`` for the one packet a 20 ms stream
        has ready per wake-up.
        """
        try:
            if self._connected:
                data = self._sock.recv(_MAX_DATAGRAM)
                addr = self.remote
            else:
                data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # ICMP port unreachable reported on the connected socket (a peer that went
            # away), or the socket closed under us: not our failure, nothing to read.
            self.send_errors += 1
            return
        self._on_rtp(data, addr)

    def _on_rtp(self, data: bytes, addr: Any) -> None:
        srtp = self._srtp
        if srtp is not None:
            # Before anything else, latching included: an unauthenticated packet (forged,
            # replayed, or plain RTP where SRTP was agreed) is counted and dropped.
            try:
                data = srtp.rx.unprotect(data)
            except SrtpError:
                self.srtp_failures += 1
                return
        if len(data) >= 12 and data[0] == 0x80:
            # Fast path: version 2, no padding, extension or CSRCs (every G.711 phone).
            b1, seq, ts, ssrc = _REST_OF_HEADER.unpack_from(data, 1)
            pt, marker, off = b1 & 0x7F, b1 > 0x7F, 12
        else:
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
                    if self.remote_rtcp is None or remote is None or self.remote_rtcp[0] != addr[0]:
                        self.remote_rtcp = (addr[0], addr[1] + 1)
                    if self.rtcp is not None and self.rtcp.next_time is None:
                        self.rtcp.start(self._loop.time(), random.random())
                        self._rtcp_due = self.rtcp.next_time or float("inf")
                self._connect_latched()
            elif remote is None or addr[1] != remote[1] or addr[0] != remote[0]:
                self.foreign += 1
                return
        self.packets_received += 1
        now = self._loop.time()
        stats = self.stats
        if stats is None or stats.ssrc != ssrc:
            self.stats = stats = ReceiverStats(ssrc, seq, self.codec.clock_rate)
            self.remote_ssrc = ssrc
        stats.update(seq, ts, now)
        if pt == self.event_pt and pt is not None:
            try:
                events = self._dtmf_rx.feed(data[off:], ts, now)
            except DtmfError:
                self.malformed += 1
                return
            self._dtmf_rx_open = self._dtmf_rx.open
            for event in events:
                self._emit_dtmf(event)
        hook = self.on_packet
        if hook is not None:
            hook(self, pt, marker, seq, ts, ssrc, data[off:])
        tap = self.tap
        if tap is not None:
            tap(self, pt, marker, seq, ts, ssrc, data[off:])
        if hook is not None and self._jb is None and self._sink is None:
            return  # pure relay; otherwise also tap it (recording a bridged call)
        if pt != self.codec.payload_type:
            return
        jb = self._jb
        if jb is not None:
            jb.put(ts, data[off:], now)
            return
        sink = self._sink
        if sink is not None or self._inband is not None:
            try:
                pcm = self.codec.decode(data[off:])
            except CodecError:
                self.malformed += 1
                return
            self._inband_feed(pcm)
            if sink is not None:
                sink.write_pcm(pcm)

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        session = self.rtcp
        if session is None:
            return
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.rx.unprotect_rtcp(data)
            except SrtpError:
                self.srtp_failures += 1
                return
        try:
            packets = session.handle_packet(data, self._loop.time(), time.time())
        except MalformedPacket:
            self.malformed += 1
            return
        self.rtcp_received += 1
        if any(isinstance(p, Bye) for p in packets):
            self.rtcp_bye = True


def bridge(a: RtpEndpoint, b: RtpEndpoint) -> tuple[RelayPath, RelayPath]:
    """Relay media between two legs, packet by packet (no jitter buffer: the far ends have theirs).

    Audio is transcoded when the codecs differ; telephone-events pass through with each
    leg's negotiated PT. ``bridge(a, a)`` is an echo. Undo with :func:`unbridge`.
    """
    a_to_b = RelayPath(a.codec, b.codec, a.event_pt, b.event_pt)
    b_to_a = a_to_b if a is b else RelayPath(b.codec, a.codec, b.event_pt, a.event_pt)

    def forward(path: RelayPath, dst: RtpEndpoint) -> PacketHook:
        def hook(
            src: RtpEndpoint, pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes
        ) -> None:
            out = path.map(ssrc, pt, marker, ts, payload, dst.writer.timestamp)
            if out is not None:
                dst.send_payload(out.payload, out.marker, out.payload_type, out.timestamp)

        if not path.same_codec:
            return hook
        audio_pt = path.src.payload_type
        writer = dst.writer

        def same_codec(
            src: RtpEndpoint, pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes
        ) -> None:
            # Nearly every packet of a call: audio in the codec both legs agreed, from the
            # source the mapping is anchored on. Its timestamp moves by the fixed offset
            # (same clock rate), the payload goes out as it came — what path.map and
            # send_payload would do, without their two calls and the Relayed object
            # (bench/media relay: ~1.5 µs of ~8 µs per packet). Anything else (the first
            # packet, a new SSRC, telephone-event, CN, a stray PT) takes the general path.
            offset = path.anchor
            if pt != audio_pt or offset is None or ssrc != path.anchor_ssrc:
                hook(src, pt, marker, seq, ts, ssrc, payload)
                return
            path.relayed += 1
            if dst.remote is None or dst._closed:
                return
            writer.timestamp = (ts + offset) & 0xFFFFFFFF
            dst._sendto(writer.packet(payload, 0, marker))

        return same_codec

    a.on_packet = forward(a_to_b, b)
    if a is not b:
        b.on_packet = forward(b_to_a, a)
    return a_to_b, b_to_a


def unbridge(a: RtpEndpoint, b: RtpEndpoint) -> None:
    a.on_packet = None
    b.on_packet = None


class ConferenceRoom:
    """A conference on the process tick: pull every member's frame, mix N−1, send.

    Members are :class:`RtpEndpoint` legs (any codec at 8 kHz audio); each tick the room
    takes one jitter-buffered frame from every member, mixes with
    :class:`~switchboard.rtp.mixer.ConferenceMixer` (energy gate, mute, deaf, clipping)
    and sends each member its mix. Members who are not speaking all get the same
    total mix, encoded once per codec.
    """

    def __init__(self, scheduler: MediaScheduler | None = None, energy_level: int = 100) -> None:
        self._scheduler = scheduler or get_scheduler()
        self.mixer = ConferenceMixer(energy_level=energy_level)
        self.members: dict[str, RtpEndpoint] = {}

    def join(
        self, member_id: str, endpoint: RtpEndpoint, muted: bool = False, deaf: bool = False
    ) -> None:
        if endpoint.codec.sample_rate != 8000:
            raise CodecError("the conference mixes at 8 kHz; use a narrowband codec for this leg")
        endpoint.stop_playback()
        endpoint.external_playout(True)
        self.members[member_id] = endpoint
        self.mixer.add(member_id, muted, deaf)
        if len(self.members) == 1:
            self._scheduler.add(self)

    def leave(self, member_id: str) -> None:
        endpoint = self.members.pop(member_id, None)
        self.mixer.remove(member_id)
        if endpoint is not None:
            endpoint.external_playout(False)
        if not self.members:
            self._scheduler.remove(self)

    def mute(self, member_id: str, muted: bool = True) -> None:
        self.mixer.set_mute(member_id, muted)

    def deaf(self, member_id: str, deaf: bool = True) -> None:
        self.mixer.set_deaf(member_id, deaf)

    def on_tick(self, frames: int, skipped: int) -> None:
        members = self.members
        if skipped:  # stall: keep every member's RTP clock on wall-clock time
            for ep in members.values():
                ep.writer.skip(ep._ts_step * skipped)
        for _ in range(frames):
            inputs = {m: ep.pull_pcm() for m, ep in members.items()}
            outputs = self.mixer.mix(inputs)
            encoded: dict[tuple[int, str], bytes] = {}
            for m, ep in members.items():
                if ep.closed or ep.remote is None:
                    continue
                pcm = outputs[m]
                key = (id(pcm), ep.codec.name)
                payload = encoded.get(key)
                if payload is None:
                    payload = encoded[key] = ep.codec.encode(pcm)
                ep._sendto(ep.writer.packet(payload, ep._ts_step, ep._marker_next))
                ep._marker_next = False
