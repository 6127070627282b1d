"""SDP (RFC 4566 / RFC 8866): parse and serialise session descriptions.

Grammar kept in one place: a description is ``v= o= s= [i= u= e= p=] [c=] [b=]* t= [r=]*
[z=] [k=] [a=]*`` followed by media sections ``m= [i=] [c=] [b=]* [k=] [a=]*``
(RFC 4566 §5). Unknown attributes and lines are kept verbatim so an SDP we relay or
answer loses nothing. Parsing is strict where a wrong value would mislead media
(``m=`` port and format list, ``c=`` address, ``o=`` fields) and lenient elsewhere
(LF-only line ends, trailing whitespace).

:func:`parse_sdp` raises :class:`SdpError` (the UA answers 400 Bad Request / 488).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from switchboard.sdp.errors import SdpError

_LINE_RE = re.compile(r"^([a-z])=(.*)$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> IN <IP4|IP6> <address>`` (RFC 4566 §5.2)."""

    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=IN IP4 <address>`` (RFC 4566 §5.7); ``0.0.0.0`` is RFC 2543 hold."""

    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_hold(self) -> bool:
        return self.address in ("0.0.0.0", "::")


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`` (RFC 4566 §6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        ch = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{ch}"


# RFC 3551 §6 static payload types used on telephony audio.
STATIC_RTPMAP = {
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000),
}


@dataclass
class Media:
    """One ``m=`` section with its attributes (in order) and optional ``c=``."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    info: str | None = None
    port_count: int | None = None

    # -- attribute helpers -------------------------------------------------------------
    def attr(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v if v is not None else ""
        return None

    def attrs(self, name: str) -> list[str]:
        return [v or "" for k, v in self.attributes if k == name]

    @property
    def direction(self) -> str:
        for k, _ in self.attributes:
            if k in DIRECTIONS:
                return k
        return "sendrecv"

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """rtpmap per payload type, static defaults filled in (RFC 3551 §6)."""
        out: dict[int, RtpMap] = {}
        for f in self.formats:
            if f.isdigit() and int(f) in STATIC_RTPMAP:
                out[int(f)] = STATIC_RTPMAP[int(f)]
        for value in self.attrs("rtpmap"):
            rm = parse_rtpmap(value)
            out[rm.payload_type] = rm
        return out

    @property
    def fmtps(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for value in self.attrs("fmtp"):
            pt, _, params = value.partition(" ")
            if pt.isdigit():
                out[int(pt)] = params.strip()
        return out

    @property
    def ptime(self) -> int | None:
        v = self.attr("ptime")
        return int(v) if v and v.isdigit() else None


@dataclass
class SessionDescription:
    """A whole SDP. ``media`` in ``m=`` order (RFC 3264 §6 keeps that order in answers)."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    timing: str = "0 0"
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)
    version: int = 0
    bandwidths: list[str] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # i= u= e= p= r= z= k=

    def connection_for(self, media: Media) -> Connection | None:
        """Media-level c= wins over session-level c= (RFC 4566 §5.7)."""
        return media.connection or self.connection

    def uses_ipv6(self) -> bool:
        """Does the audio stream (else the session) name an IPv6 address (``c=IN IP6``,
        RFC 4566 §5.7)? The media of the answer must be of the same family."""
        m = self.audio()
        conn = self.connection_for(m) if m is not None else self.connection
        return conn is not None and conn.addrtype == "IP6"

    def audio(self) -> Media | None:
        """The first audio stream with a non-zero port, if any."""
        for m in self.media:
            if m.kind == "audio" and m.port != 0:
                return m
        return None

    def with_version(self, version: int) -> SessionDescription:
        return replace(self, origin=replace(self.origin, version=version))

    def to_bytes(self) -> bytes:
        return serialise_sdp(self).encode("utf-8")


def parse_rtpmap(value: str) -> RtpMap:
    m = re.fullmatch(r"\s*(\d{1,3})\s+([^/\s]+)/(\d+)(?:/(\d+))?\s*", value)
    if not m or int(m[1]) > 127:
        raise SdpError(f"bad rtpmap {value!r}")
    return RtpMap(int(m[1]), m[2], int(m[3]), int(m[4]) if m[4] else 1)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value!r}")
    addr = parts[2].split("/")[0]
    if parts[1] == "IP4" and not re.fullmatch(r"[0-9.]+|[A-Za-z0-9.\-]+", addr):
        raise SdpError(f"bad IPv4 connection address {addr!r}")
    return Connection(parts[0], parts[1], addr)


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6 or not parts[2].isdigit():
        raise SdpError(f"bad o= line {value!r}")
    return Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])


def _parse_media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"bad m= line {value!r}: needs media, port, proto and formats")
    kind, port_text, proto, *formats = parts
    count: int | None = None
    if "/" in port_text:
        port_text, _, count_text = port_text.partition("/")
        if not count_text.isdigit():
            raise SdpError(f"bad m= port {value!r}")
        count = int(count_text)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"bad m= port in {value!r}")
    if not _TOKEN_RE.match(kind) or not formats:
        raise SdpError(f"bad m= line {value!r}")
    if proto.startswith("RTP/") and not all(f.isdigit() and int(f) <= 127 for f in formats):
        raise SdpError(f"bad RTP payload type list in {value!r}")
    return Media(kind, int(port_text), proto, formats, port_count=count)


def _parse_attr(value: str) -> tuple[str, str | None]:
    name, sep, v = value.partition(":")
    if not name:
        raise SdpError(f"bad a= line {value!r}")
    return name, v if sep else None


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpError` naming the offending line."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
    else:
        text = data
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0 (RFC 4566 §5.1)")
    origin: Origin | None = None
    sd: SessionDescription | None = None
    name = "-"
    conn: Connection | None = None
    timing: str | None = None
    sess_attrs: list[tuple[str, str | None]] = []
    bandwidths: list[str] = []
    extra: list[tuple[str, str]] = []
    media: list[Media] = []
    current: Media | None = None
    for ln in lines[1:]:
        m = _LINE_RE.match(ln)
        if not m:
            raise SdpError(f"bad SDP line {ln!r}")
        key, value = m[1], m[2]
        if current is None:
            if key == "o":
                origin = _parse_origin(value)
            elif key == "s":
                name = value
            elif key == "c":
                conn = _parse_connection(value)
            elif key == "t":
                timing = value
            elif key == "a":
                sess_attrs.append(_parse_attr(value))
            elif key == "b":
                bandwidths.append(value)
            elif key == "m":
                current = _parse_media(value)
                media.append(current)
            elif key == "v":
                raise SdpError("repeated v= line")
            else:
                extra.append((key, value))
        else:
            if key == "m":
                current = _parse_media(value)
                media.append(current)
            elif key == "c":
                current.connection = _parse_connection(value)
            elif key == "a":
                current.attributes.append(_parse_attr(value))
            elif key == "b":
                current.bandwidths.append(value)
            elif key == "i":
                current.info = value
            elif key in ("k",):
                current.attributes.append((f"k={value}", None))
            else:
                raise SdpError(f"{key}= line not allowed in a media section")
    if origin is None:
        raise SdpError("SDP has no o= line")
    if timing is None:
        raise SdpError("SDP has no t= line")
    for md in media:
        if md.port != 0 and md.connection is None and conn is None:
            raise SdpError(f"m={md.kind} has no connection address (c=)")
        for rm_value in md.attrs("rtpmap"):
            parse_rtpmap(rm_value)
    sd = SessionDescription(
        origin=origin,
        name=name,
        connection=conn,
        timing=timing,
        attributes=sess_attrs,
        media=media,
        bandwidths=bandwidths,
        extra=extra,
    )
    return sd


def _attr_line(name: str, value: str | None) -> str:
    if name.startswith("k="):
        return name
    return f"a={name}" if value is None else f"a={name}:{value}"


def serialise_sdp(sd: SessionDescription) -> str:
    """Serialise in RFC 4566 §5 order with CRLF line ends."""
    out = ["v=0", f"o={sd.origin}", f"s={sd.name or '-'}"]
    out += [f"{k}={v}" for k, v in sd.extra if k in "iuep"]
    if sd.connection is not None:
        out.append(f"c={sd.connection}")
    out += [f"b={b}" for b in sd.bandwidths]
    out.append(f"t={sd.timing}")
    out += [f"{k}={v}" for k, v in sd.extra if k in "rzk"]
    out += [_attr_line(k, v) for k, v in sd.attributes]
    for m in sd.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        out.append(f"m={m.kind} {port} {m.proto} {' '.join(m.formats)}")
        if m.info is not None:
            out.append(f"i={m.info}")
        if m.connection is not None:
            out.append(f"c={m.connection}")
        out += [f"b={b}" for b in m.bandwidths]
        out += [_attr_line(k, v) for k, v in m.attributes]
    return "\r\n".join(out) + "\r\n"
