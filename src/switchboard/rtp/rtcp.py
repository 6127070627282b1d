"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE packets, compound parsing, report timing.

Packets parse and serialise symmetrically (``parse_compound(data)`` /
``serialise_compound(packets)``); unknown packet types (APP, RTPFB, XR…) are kept as
:class:`RtcpUnknown` so a relay can pass them on. Malformed input raises
:class:`~switchboard.rtp.packet.MalformedPacket`.

:class:`RtcpSession` is the pure per-stream RTCP state: it reports its next send time
with ``get_timer()`` and, in ``handle_timer(now, wallclock, rand)``, returns the compound
packet to send (SR when we sent RTP since the last report, else RR; always with an SDES
CNAME, §6.1). The interval follows §6.2/§6.3 and Appendix A.7; the randomisation
factor ``rand`` ∈ [0, 1) is passed in by the caller so this module stays deterministic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from switchboard.rtp.packet import MalformedPacket
from switchboard.rtp.stats import ReceiverStats

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix), RFC 5905


class RtcpType(IntEnum):
    """RTCP packet types, RFC 3550 §12.1."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204


class SdesItem(IntEnum):
    """SDES item types, RFC 3550 §6.5 / §12.2."""

    END = 0
    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


_HDR = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IIIIII")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since last SR, 1/65536 s

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | lost,
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fl, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, fl >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (SdesItem, text)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 §6.6)."""

    sources: tuple[int, ...]
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """Any other packet type, kept verbatim (header count field and body)."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _header(count: int, pt: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP body must be a multiple of 4 octets")
    return _HDR.pack(0x80 | count, pt, len(body) // 4) + body


def serialise(packet: RtcpPacket) -> bytes:
    """One RTCP packet to bytes (no padding bit: our bodies are always 32-bit aligned)."""
    match packet:
        case SenderReport(ssrc, ntp, rtp_ts, pc, oc, reports):
            if len(reports) > 31:
                raise ValueError("at most 31 report blocks per packet")
            body = _SR_INFO.pack(
                ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, pc & 0xFFFFFFFF, oc & 0xFFFFFFFF
            )
            return _header(len(reports), RtcpType.SR, body + b"".join(r.pack() for r in reports))
        case ReceiverReport(ssrc, reports):
            if len(reports) > 31:
                raise ValueError("at most 31 report blocks per packet")
            return _header(
                len(reports),
                RtcpType.RR,
                struct.pack("!I", ssrc) + b"".join(r.pack() for r in reports),
            )
        case SourceDescription(chunks):
            body = b""
            for chunk in chunks:
                items = b"".join(
                    bytes((t, len(v))) + v for t, v in chunk.items if t != SdesItem.END
                )
                # Item list ends with at least one null octet, then pads to 32 bits (§6.5).
                raw = struct.pack("!I", chunk.ssrc) + items + b"\x00"
                body += _pad4(raw)
            return _header(len(chunks), RtcpType.SDES, body)
        case Bye(sources, reason):
            body = b"".join(struct.pack("!I", s) for s in sources)
            if reason:
                body += _pad4(bytes((len(reason),)) + reason)
            return _header(len(sources), RtcpType.BYE, body)
        case RtcpUnknown(pt, count, body):
            return _header(count, pt, body)
    raise TypeError(f"not an RTCP packet: {packet!r}")


def serialise_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    return b"".join(serialise(p) for p in packets)


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    if pt == RtcpType.SR:
        if len(body) < 24 + 24 * count:
            raise MalformedPacket("SR shorter than its report count")
        ssrc, ntp_hi, ntp_lo, rtp_ts, pc, oc = _SR_INFO.unpack_from(body)
        reports = tuple(ReportBlock.unpack(body, 24 + 24 * i) for i in range(count))
        return SenderReport(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, pc, oc, reports)
    if pt == RtcpType.RR:
        if len(body) < 4 + 24 * count:
            raise MalformedPacket("RR shorter than its report count")
        reports = tuple(ReportBlock.unpack(body, 4 + 24 * i) for i in range(count))
        return ReceiverReport(struct.unpack_from("!I", body)[0], reports)
    if pt == RtcpType.SDES:
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise MalformedPacket("SDES chunk runs past the packet")
            ssrc = struct.unpack_from("!I", body, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise MalformedPacket("SDES item list not terminated")
                kind = body[pos]
                if kind == SdesItem.END:
                    pos += 1
                    pos += -pos % 4  # chunk padding to the next 32-bit boundary
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise MalformedPacket("SDES item runs past the packet")
                n = body[pos + 1]
                items.append((kind, bytes(body[pos + 2 : pos + 2 + n])))
                pos += 2 + n
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return SourceDescription(tuple(chunks))
    if pt == RtcpType.BYE:
        if len(body) < 4 * count:
            raise MalformedPacket("BYE shorter than its source count")
        sources = struct.unpack_from(f"!{count}I", body)
        reason = b""
        pos = 4 * count
        if pos < len(body):
            n = body[pos]
            if pos + 1 + n > len(body):
                raise MalformedPacket("BYE reason runs past the packet")
            reason = bytes(body[pos + 1 : pos + 1 + n])
        return Bye(tuple(sources), reason)
    return RtcpUnknown(pt, count, bytes(body))


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 §6.1, validity checks of Appendix A.2).

    Checks: version 2 on every packet, the first is SR or RR, padding only on the last,
    and the length fields add up to the datagram size.
    """
    out: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n < 4:
        raise MalformedPacket("RTCP packet too short")
    while pos < n:
        if pos + 4 > n:
            raise MalformedPacket("trailing bytes after the last RTCP packet")
        b0, pt, words = _HDR.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise MalformedPacket(f"RTCP version {b0 >> 6}, expected 2")
        if pos == 0 and pt not in (RtcpType.SR, RtcpType.RR):
            raise MalformedPacket("a compound RTCP packet must start with SR or RR")
        end = pos + 4 + 4 * words
        if end > n:
            raise MalformedPacket("RTCP length field runs past the datagram")
        body = data[pos + 4 : end]
        if b0 & 0x20:
            if end != n:
                raise MalformedPacket("padding on a packet that is not the last")
            pad = data[end - 1]
            if pad == 0 or pad > len(body):
                raise MalformedPacket("invalid RTCP padding")
            body = body[:-pad]
        out.append(_parse_one(pt, b0 & 0x1F, bytes(body)))
        pos = end
    return out


# --- timing and sessions -----------------------------------------------------------------

RTCP_MIN_TIME = 5.0  # seconds, RFC 3550 §6.2
RTCP_SENDER_BW_FRACTION = 0.25
RTCP_RCVR_BW_FRACTION = 0.75
COMPENSATION = 2.71828 - 1.5  # e − 3/2, RFC 3550 §6.3.1 / A.7


def rtcp_interval(
    members: int,
    senders: int,
    rtcp_bw: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rand: float,
    min_time: float = RTCP_MIN_TIME,
) -> float:
    """Deterministic core of RFC 3550 Appendix A.7 ``rtcp_interval()``.

    ``rtcp_bw`` is the RTCP bandwidth in octets/s (5 % of the session bandwidth, §6.2);
    ``rand`` ∈ [0, 1) replaces ``drand48()`` so the result spans [0.5, 1.5)·T / (e − 3/2).
    """
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    rtcp_min_time = min_time / 2 if initial else min_time
    n = members
    if senders <= members * RTCP_SENDER_BW_FRACTION:
        if we_sent:
            rtcp_bw *= RTCP_SENDER_BW_FRACTION
            n = senders
        else:
            rtcp_bw *= RTCP_RCVR_BW_FRACTION
            n -= senders
    t = avg_rtcp_size * max(n, 1) / rtcp_bw if rtcp_bw > 0 else rtcp_min_time
    t = max(t, rtcp_min_time)
    return t * (rand + 0.5) / COMPENSATION


def ntp_from_unix(wallclock: float) -> int:
    """64-bit NTP timestamp (RFC 5905 §6) from Unix seconds."""
    secs = int(wallclock)
    frac = int((wallclock - secs) * (1 << 32)) & 0xFFFFFFFF
    return ((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | frac


@dataclass
class SenderState:
    """What an SR says about our own stream (fed from the RTP header writer)."""

    packets: int = 0
    octets: int = 0
    rtp_timestamp: int = 0


@dataclass
class RtcpSession:
    """Per-stream RTCP: send timing (§6.3), SR/RR building, LSR/DLSR and round-trip time.

    A point-to-point call has two members. ``session_bw`` is octets/s of RTP (G.711 at
    50 pps × 200 B ≈ 10 kB/s → RTCP 500 B/s); ``min_time`` defaults to RFC 3550's 5 s;
    FreeSWITCH-like deployments pass 1.0.
    """

    ssrc: int
    cname: bytes
    clock_rate: int = 8000
    session_bw: float = 10_000.0
    min_time: float = RTCP_MIN_TIME
    avg_rtcp_size: float = 100.0
    members: int = 2
    senders: int = 2
    initial: bool = True
    next_time: float | None = None
    rtt: float | None = None  # seconds, from the last report block about us (§6.4.1)
    remote_ssrc: int | None = None
    _last_sr_ntp_mid: int = 0
    _last_sr_arrival: float | None = None
    _sent_since_report: bool = False
    received: list[RtcpPacket] = field(default_factory=list)

    def start(self, now: float, rand: float) -> None:
        """Schedule the first report (half the minimum interval, §6.2)."""
        self.next_time = now + self._interval(rand)

    def _interval(self, rand: float) -> float:
        return rtcp_interval(
            self.members,
            self.senders,
            self.session_bw * 0.05,
            self._sent_since_report,
            self.avg_rtcp_size,
            self.initial,
            rand,
            self.min_time,
        )

    def get_timer(self) -> float | None:
        return self.next_time

    def note_sent(self) -> None:
        """We sent RTP since the last report (an SR is due rather than an RR)."""
        self._sent_since_report = True

    def build_report(
        self, now: float, wallclock: float, sender: SenderState | None, stats: ReceiverStats | None
    ) -> bytes:
        """Compound SR/RR + SDES CNAME for this moment (§6.4)."""
        blocks: tuple[ReportBlock, ...] = ()
        if stats is not None and stats.received:
            loss = stats.report()
            lsr = dlsr = 0
            if self._last_sr_arrival is not None:
                lsr = self._last_sr_ntp_mid
                dlsr = int((now - self._last_sr_arrival) * 65536) & 0xFFFFFFFF
            blocks = (
                ReportBlock(
                    stats.ssrc,
                    loss.fraction_lost,
                    loss.cumulative_lost,
                    loss.extended_highest_seq,
                    loss.jitter,
                    lsr,
                    dlsr,
                ),
            )
        first: RtcpPacket
        if sender is not None and self._sent_since_report:
            first = SenderReport(
                self.ssrc,
                ntp_from_unix(wallclock),
                sender.rtp_timestamp,
                sender.packets,
                sender.octets,
                blocks,
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        sdes = SourceDescription((SdesChunk(self.ssrc, ((SdesItem.CNAME, self.cname),)),))
        data = serialise_compound([first, sdes])
        # §6.3.3: avg_rtcp_size includes UDP and IP headers (28 octets for IPv4).
        self.avg_rtcp_size += (len(data) + 28 - self.avg_rtcp_size) / 16
        return data

    def handle_timer(
        self,
        now: float,
        wallclock: float,
        rand: float,
        sender: SenderState | None,
        stats: ReceiverStats | None,
    ) -> bytes | None:
        """When the report is due, return it and schedule the next one; else None."""
        if self.next_time is None or now < self.next_time:
            return None
        data = self.build_report(now, wallclock, sender, stats)
        self.initial = False
        self.next_time = now + self._interval(rand)
        self._sent_since_report = False
        return data

    def handle_packet(self, data: bytes, now: float, wallclock: float) -> list[RtcpPacket]:
        """Account a received compound packet; returns its packets. Raises MalformedPacket."""
        packets = parse_compound(data)
        self.avg_rtcp_size += (len(data) + 28 - self.avg_rtcp_size) / 16
        for pkt in packets:
            match pkt:
                case SenderReport(ssrc=ssrc, ntp_timestamp=ntp, reports=reports):
                    self.remote_ssrc = ssrc
                    self._last_sr_ntp_mid = (ntp >> 16) & 0xFFFFFFFF
                    self._last_sr_arrival = now
                    self._rtt_from(reports, wallclock)
                case ReceiverReport(reports=reports):
                    self._rtt_from(reports, wallclock)
        self.received = packets
        return packets

    def _rtt_from(self, reports: tuple[ReportBlock, ...], wallclock: float) -> None:
        for block in reports:
            if block.ssrc == self.ssrc and block.lsr:
                arrival_mid = (ntp_from_unix(wallclock) >> 16) & 0xFFFFFFFF
                rtt = ((arrival_mid - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536
                if rtt < 60:  # ignore nonsense from clock steps
                    self.rtt = rtt

    def bye(self, reason: bytes = b"") -> bytes:
        """Compound RR + BYE to send when the stream ends (§6.6)."""
        return serialise_compound([ReceiverReport(self.ssrc), Bye((self.ssrc,), reason)])
