"""RTP data packets (RFC 3550 §5.1) and the wrap-around arithmetic they need.

``RtpPacket.parse(data)`` and ``bytes(packet)`` are symmetric: CSRC list, header
extension (§5.3.1), padding (§5.1 P bit) and marker survive a round trip. Malformed
input raises :class:`MalformedPacket` (the peer's fault; the datagram is dropped,
nothing else changes).

The hot send path does not build ``RtpPacket`` objects: :class:`RtpHeaderWriter`
keeps one preallocated ``bytearray`` per stream and rewrites the sequence number,
timestamp and marker in place with ``struct.pack_into``. The hot receive path uses
:func:`peek_header` (one ``struct.unpack_from``) instead of a full parse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_VERSION = 2  # RFC 3550 §5.1 "V"
RTP_HEADER_SIZE = 12  # fixed header, RFC 3550 §5.1
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_HALF_SEQ = SEQ_MOD // 2
_HALF_TS = TS_MOD // 2

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")


class MalformedPacket(ValueError):
    """The peer sent bytes that are not a valid RTP/RTCP packet (peer's fault; drop it)."""


# --- sequence-number and timestamp arithmetic (RFC 3550 §5.1, A.1) -------------------


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16."""
    return (seq + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= _HALF_SEQ else d


def seq_gt(a: int, b: int) -> bool:
    """True when ``a`` comes after ``b`` in wrap-around order."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2**32."""
    return (ts + n) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit RTP timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - TS_MOD if d >= _HALF_TS else d


def ts_gt(a: int, b: int) -> bool:
    """True when timestamp ``a`` is later than ``b`` in wrap-around order."""
    return ts_diff(a, b) > 0


# --- packets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``extension`` is ``(profile, data)`` with ``len(data) % 4 == 0`` (§5.3.1);
    ``padding`` is the number of padding octets including the count octet (0 = none).
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0..127")
        if not 0 <= self.sequence_number < SEQ_MOD:
            raise ValueError(f"sequence number {self.sequence_number} out of range")
        if not 0 <= self.timestamp < TS_MOD or not 0 <= self.ssrc < TS_MOD:
            raise ValueError("timestamp and SSRC are 32-bit unsigned")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs (RFC 3550 §5.1 CC is 4 bits)")
        if self.extension is not None and len(self.extension[1]) % 4:
            raise ValueError("header extension length must be a multiple of 4 octets")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding is 0..255 octets")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raise :class:`MalformedPacket` if it is not valid."""
        n = len(data)
        if n < RTP_HEADER_SIZE:
            raise MalformedPacket(f"RTP packet too short ({n} bytes)")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise MalformedPacket(f"RTP version {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        pos = RTP_HEADER_SIZE + 4 * cc
        if pos > n:
            raise MalformedPacket("CSRC list runs past the end of the packet")
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE) if cc else ()
        extension = None
        if b0 & 0x10:
            if pos + 4 > n:
                raise MalformedPacket("header extension runs past the end of the packet")
            profile, words = _EXT.unpack_from(data, pos)
            pos += 4
            end = pos + 4 * words
            if end > n:
                raise MalformedPacket("header extension runs past the end of the packet")
            extension = (profile, bytes(data[pos:end]))
            pos = end
        padding = 0
        end = n
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > n:
                raise MalformedPacket(f"invalid padding count {padding}")
            end = n - padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        out = bytearray(_FIXED.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc))
        for c in self.csrc:
            out += struct.pack("!I", c)
        if self.extension is not None:
            profile, ext = self.extension
            out += _EXT.pack(profile, len(ext) // 4) + ext
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes((self.padding,))
        return bytes(out)


def peek_header(data: bytes) -> tuple[int, bool, int, int, int, int]:
    """Minimal receive-path parse: ``(payload_type, marker, seq, timestamp, ssrc, payload_offset)``.

    Skips CSRCs and the header extension and ignores padding (G.711 senders do not pad;
    :meth:`RtpPacket.parse` handles the general case). Raises :class:`MalformedPacket`.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise MalformedPacket("RTP packet too short")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        raise MalformedPacket("not RTP version 2")
    off = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if off + 4 > len(data):
            raise MalformedPacket("header extension runs past the end of the packet")
        off += 4 + 4 * _EXT.unpack_from(data, off)[1]
    if off > len(data):
        raise MalformedPacket("header runs past the end of the packet")
    return b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, off


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP packet types 192–223 occupy RTP PT 64–95 with M set."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True)
class RtpHeaderWriter:
    """Outgoing stream state with a preallocated packet buffer (RFC 3550 §5.1).

    The sequence number and timestamp start at values the caller draws at random
    (§5.1: "SHOULD be random"); randomness is passed in to keep this module pure.
    ``packet(payload, samples)`` returns a ``memoryview`` over the internal buffer,
    valid until the next call — hand it straight to ``sendto``.
    """

    ssrc: int
    payload_type: int
    sequence_number: int
    timestamp: int
    packets_sent: int = 0
    octets_sent: int = 0
    _buf: bytearray = field(default_factory=lambda: bytearray(RTP_HEADER_SIZE + 1500))
    _view: memoryview | None = None

    def packet(
        self, payload: bytes, samples: int, marker: bool = False, pt: int = -1, timestamp: int = -1
    ) -> memoryview:
        """Build the next packet around ``payload`` and advance seq by 1 and ts by ``samples``.

        ``pt`` overrides the payload type (telephone-event, CN); ``timestamp`` overrides
        the header's timestamp for this packet only (an RFC 4733 event keeps its start
        time while the stream clock runs on).
        """
        buf = self._buf
        n = len(payload)
        if n > len(buf) - RTP_HEADER_SIZE:
            self._buf = buf = bytearray(RTP_HEADER_SIZE + n)
            self._view = None
        _FIXED.pack_into(
            buf,
            0,
            0x80,
            (0x80 if marker else 0) | (self.payload_type if pt < 0 else pt),
            self.sequence_number,
            self.timestamp if timestamp < 0 else timestamp,
            self.ssrc,
        )
        buf[RTP_HEADER_SIZE : RTP_HEADER_SIZE + n] = payload
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += n
        # Reuse the packet-sized view while payloads keep their size (always, for G.711):
        # no allocation per packet.
        view = self._view
        if view is None or len(view) != RTP_HEADER_SIZE + n:
            self._view = view = memoryview(buf)[: RTP_HEADER_SIZE + n]
        return view

    def skip(self, samples: int) -> None:
        """Advance the timestamp without sending (frames skipped after a scheduler stall)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
