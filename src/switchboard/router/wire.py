"""The proxy's lean view of a SIP message: only what forwarding needs, edited as bytes.

RFC 3261 §16.6 forbids a proxy to reorder same-named headers or touch the body, and
§16.3 says it must not refuse a request for a header it does not understand, so the
proxy never rebuilds a message from parsed objects: it splits the header block into
lines once, remembers *where* the headers it needs are (Via, Route, Record-Route,
Max-Forwards, Call-ID, CSeq, From, To, Content-Length, Proxy-Require), and edits the
line list (insert its own Via and Record-Route, drop its own Route, rewrite
Max-Forwards). Every other header stays the raw bytes that arrived.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import re
import zlib

# Compact header forms (RFC 3261 §7.3.3, §20) that matter to a proxy.
COMPACT = {
    b"v": b"via",
    b"i": b"call-id",
    b"f": b"from",
    b"t": b"to",
    b"l": b"content-length",
    b"m": b"contact",
}
MAX_MESSAGE = 65535
# The headers the proxy looks at, full and compact names, to one small int each so the
# per-line work is one slice, one lower() and one dict lookup (most lines are skipped).
_VIA, _ROUTE, _RR, _CALL_ID, _CSEQ, _MAXFWD, _TO, _FROM, _CL, _PROXY_REQUIRE = range(10)
_KIND = {
    b"via": _VIA,
    b"v": _VIA,
    b"route": _ROUTE,
    b"record-route": _RR,
    b"call-id": _CALL_ID,
    b"i": _CALL_ID,
    b"cseq": _CSEQ,
    b"max-forwards": _MAXFWD,
    b"to": _TO,
    b"t": _TO,
    b"from": _FROM,
    b"f": _FROM,
    b"content-length": _CL,
    b"l": _CL,
    b"proxy-require": _PROXY_REQUIRE,
}
_FOLD = b" \t"
_UNFOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")
_DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}


class BadMessage(Exception):
    """The peer sent something that is not a usable SIP message (blame: peer).

    ``status``/``reason`` is the response to send when the message is a request whose
    Via, From, To, Call-ID and CSeq could be read; otherwise the message is dropped.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Message:
    """One parsed SIP message (request or response) as a list of raw header lines."""

    __slots__ = (
        "body",
        "call_id",
        "cl",
        "cseq_method",
        "cseq_num",
        "from_",
        "lines",
        "maxfwd",
        "method",
        "proxy_require",
        "reason",
        "routes",
        "rrs",
        "ruri",
        "status",
        "to",
        "vias",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.body = b""
        self.method = b""  # b"" for a response
        self.ruri = b""
        self.status = 0
        self.reason = b""
        self.vias: list[int] = []
        self.routes: list[int] = []
        self.rrs: list[int] = []
        self.maxfwd = -1
        self.call_id = b""
        self.cseq_num = b""
        self.cseq_method = b""
        self.to = -1
        self.from_ = -1
        self.cl = -1
        self.proxy_require = -1

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def value(self, index: int) -> bytes:
        """The value of header line ``index`` (after the colon, stripped)."""
        line = self.lines[index]
        return line[line.find(b":") + 1 :].strip()

    def top_via(self) -> bytes:
        value = self.value(self.vias[0])
        comma = value.find(b",")
        return value[:comma].rstrip() if comma >= 0 else value

    def to_tag(self) -> bytes:
        return header_param(self.value(self.to), b"tag") if self.to >= 0 else b""

    def from_tag(self) -> bytes:
        return header_param(self.value(self.from_), b"tag") if self.from_ >= 0 else b""

    def header_lines(self, index: int) -> bytes:
        return self.lines[index] if index >= 0 else b""


def parse(data: bytes, *, stream: bool = False) -> Message:
    """Split a SIP message into lines and index the headers a proxy needs (§7, §18.3).

    On a datagram the body is cut at Content-Length (extra bytes are discarded; a
    datagram shorter than Content-Length is an error); on a stream the framer already
    delivered exactly one message.
    """
    if len(data) > MAX_MESSAGE:
        raise BadMessage(513, "Message Too Large")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise BadMessage(400, "Missing Empty Line After Headers")
    head = data[:end]
    if b"\r\n " in head or b"\r\n\t" in head:
        # Folded continuation lines (§7.3.1) are joined before anything reads a value.
        head = _UNFOLD.sub(b" ", head)
    lines = head.split(b"\r\n")
    m = Message()
    first = lines[0]
    if first.startswith(b"SIP/2.0 "):
        code = first[8:11]
        if not code.isdigit() or (len(first) > 11 and first[11:12] != b" "):
            raise BadMessage(400, "Bad Status Line")
        m.status = int(code)
        if not 100 <= m.status <= 699:
            raise BadMessage(400, "Bad Status Code")
        m.reason = first[12:]
    else:
        parts = first.split(b" ")
        if len(parts) != 3 or parts[2] != b"SIP/2.0" or not parts[1]:
            raise BadMessage(400, "Bad Request Line")
        if not parts[0] or not _TOKEN.issuperset(parts[0]):
            raise BadMessage(400, "Bad Method")
        m.method = parts[0]
        m.ruri = parts[1]
    kind_of = _KIND.get
    i = 1
    n = len(lines)
    while i < n:
        line = lines[i]
        c = line.find(b":")
        if c <= 0:
            raise BadMessage(400, "Malformed Header Line")
        kind = kind_of(line[:c].lower())
        if kind is None:
            if line[c - 1] not in _FOLD:
                i += 1
                continue
            kind = kind_of(line[:c].rstrip().lower())
            if kind is None:
                i += 1
                continue
        if kind == _VIA:
            m.vias.append(i)
        elif kind == _ROUTE:
            m.routes.append(i)
        elif kind == _RR:
            m.rrs.append(i)
        elif kind == _CALL_ID:
            m.call_id = line[c + 1 :].strip()
        elif kind == _CSEQ:
            num, _, meth = line[c + 1 :].strip().partition(b" ")
            m.cseq_num = num
            m.cseq_method = meth.strip()
        elif kind == _MAXFWD:
            m.maxfwd = i
        elif kind == _TO:
            m.to = i
        elif kind == _FROM:
            m.from_ = i
        elif kind == _CL:
            m.cl = i
        else:
            m.proxy_require = i
        i += 1
    m.lines = lines
    body = data[end + 4 :]
    if m.cl >= 0:
        raw = m.value(m.cl)
        if not raw.isdigit():
            raise BadMessage(400, "Bad Content-Length")
        length = int(raw)
        if len(body) < length:
            raise BadMessage(400, "Truncated Body")
        body = body[:length]
    elif stream:
        raise BadMessage(400, "Missing Content-Length")
    m.body = body
    return m


_TOP_VIA = re.compile(rb"\r\n(?:via|v)[ \t]*:[ \t]*([^\r\n]*)(?=\r\n)", re.IGNORECASE)
_CSEQ_RE = re.compile(rb"\r\ncseq[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)


class QuickResponse:
    """The parts of a response the proxy needs to relay it (status, top Via branch, CSeq
    method), found by regex without splitting the message; ``strip_top_via`` returns the
    bytes without the first Via line (§16.7 step 3)."""

    __slots__ = ("branch", "cseq_method", "data", "end", "start", "status")

    def __init__(
        self, data: bytes, status: int, branch: bytes, method: bytes, start: int, end: int
    ) -> None:
        self.data = data
        self.status = status
        self.branch = branch
        self.cseq_method = method
        self.start = start
        self.end = end

    def strip_top_via(self) -> bytes:
        return self.data[: self.start] + self.data[self.end :]


def quick_response(data: bytes) -> QuickResponse | None:
    """A 1xx/2xx datagram in the plain shape (one Via value on the first Via line, no
    folding) → QuickResponse; anything else → None (use :func:`parse`)."""
    code = data[8:11]
    if not code.isdigit() or code[0] > 0x32:  # only 1xx and 2xx take the fast path
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    v = _TOP_VIA.search(data, 0, end + 2)
    c = _CSEQ_RE.search(data, 0, end + 2)
    if v is None or c is None:
        return None
    value = v.group(1)
    if b"," in value or data[v.end() + 2 : v.end() + 3] in (b" ", b"\t"):
        return None  # several values or a folded line: the full parser handles it
    return QuickResponse(data, int(code), branch_of(value), c.group(1), v.start(), v.end())


def check_mandatory(m: Message) -> None:
    """§8.1.1 / §16.3 step 1: the headers every request and response must carry."""
    if not m.vias:
        raise BadMessage(400, "Missing Via")
    if not m.call_id:
        raise BadMessage(400, "Missing Call-ID")
    if not m.cseq_num.isdigit() or not m.cseq_method:
        raise BadMessage(400, "Bad CSeq")
    if m.to < 0 or m.from_ < 0:
        raise BadMessage(400, "Missing From or To")
    if m.method and m.method != m.cseq_method:
        raise BadMessage(400, "CSeq Method Does Not Match")


def header_param(value: bytes, name: bytes) -> bytes:
    """A ``;name=value`` parameter of a header value (after any ``<uri>``), or b""."""
    gt = value.rfind(b">")
    params = value[gt + 1 :] if gt >= 0 else value
    for part in params.split(b";")[1 if gt < 0 else 0 :]:
        k, _, v = part.partition(b"=")
        if k.strip().lower() == name:
            return v.strip()
    return b""


class Via:
    """A parsed Via value (§20.42): transport, sent-by and the raw parameters."""

    __slots__ = ("branch", "host", "params", "port", "received", "rport", "sent_by", "transport")

    def __init__(self, value: bytes) -> None:
        proto, _, rest = value.partition(b" ")
        slash = proto.rfind(b"/")
        if not proto.upper().startswith(b"SIP/2.0/") or slash < 0:
            raise BadMessage(400, "Bad Via")
        self.transport = proto[slash + 1 :].decode("ascii", "replace").lower()
        rest = rest.strip()
        semi = rest.find(b";")
        sent_by = rest if semi < 0 else rest[:semi]
        self.sent_by = sent_by.strip()
        self.params = b"" if semi < 0 else rest[semi:]
        host, port = split_hostport(self.sent_by)
        if not host:
            raise BadMessage(400, "Bad Via")
        self.host = host
        self.port = port if port else _DEFAULT_PORT.get(self.transport, 5060)
        self.branch = b""
        self.rport: bytes | None = None
        self.received = b""
        for part in self.params.split(b";")[1:]:
            k, eq, v = part.partition(b"=")
            k = k.strip().lower()
            if k == b"branch":
                self.branch = v.strip()
            elif k == b"rport":
                self.rport = v.strip() if eq else b""
            elif k == b"received":
                self.received = v.strip()

    def reply_address(self, src: tuple[str, int] | None = None) -> tuple[str, int]:
        """Where responses go (§18.2.2 and RFC 3581 §4): received/rport if present."""
        host = self.received.decode() if self.received else self.host
        if self.rport:
            return host, int(self.rport)
        return host, self.port


def split_hostport(hp: bytes) -> tuple[str, int]:
    """``host[:port]`` / ``[v6][:port]`` → (host, port or 0). Host keeps IPv6 brackets."""
    if hp.startswith(b"["):
        end = hp.find(b"]")
        if end < 0:
            return "", 0
        host = hp[: end + 1]
        tail = hp[end + 1 :]
        port = tail[1:] if tail.startswith(b":") else b""
    else:
        host, _, port = hp.partition(b":")
    if port and not port.isdigit():
        return "", 0
    p = int(port) if port else 0
    if p > 65535:
        return "", 0
    return host.decode("ascii", "replace").lower(), p


def uri_target(uri: bytes) -> tuple[str, str, int, bool]:
    """A SIP URI (``<…>`` allowed) → (transport, host, port, lr) for sending (§19.1.1).

    ``transport`` is "" when the URI names none (the caller picks, §18.1.1 / RFC 3263),
    except for sips (tls). Raises BadMessage(416) for a scheme other than sip/sips.
    """
    lt = uri.find(b"<")
    if lt >= 0:
        gt = uri.find(b">", lt)
        uri = uri[lt + 1 : gt if gt > 0 else len(uri)]
    uri = uri.strip()
    colon = uri.find(b":")
    scheme = uri[:colon].lower() if colon > 0 else b""
    if scheme not in (b"sip", b"sips"):
        raise BadMessage(416, "Unsupported URI Scheme")
    rest = uri[colon + 1 :]
    q = rest.find(b"?")
    if q >= 0:
        rest = rest[:q]
    semi = rest.find(b";")
    hostpart = rest if semi < 0 else rest[:semi]
    params = b"" if semi < 0 else rest[semi + 1 :]
    at = hostpart.rfind(b"@")
    if at >= 0:
        hostpart = hostpart[at + 1 :]
    transport = "tls" if scheme == b"sips" else ""
    lr = False
    maddr = b""
    if params:
        for part in params.split(b";"):
            k, _, v = part.partition(b"=")
            k = k.strip().lower()
            if k == b"transport":
                transport = v.strip().lower().decode("ascii", "replace")
            elif k == b"lr":
                lr = True
            elif k == b"maddr":
                maddr = v.strip()
    host, port = split_hostport(hostpart)
    if maddr:
        host = maddr.decode("ascii", "replace").lower()
    if not host:
        raise BadMessage(400, "Bad URI Host")
    return transport, host, port or _DEFAULT_PORT.get(transport or "udp", 5060), lr


def first_value(value: bytes) -> tuple[bytes, bytes]:
    """Split a comma-joined header value into its first element and the rest (§7.3.1).

    Commas inside ``<…>`` or quotes do not separate values.
    """
    if b"," not in value:
        return value.strip(), b""
    depth = 0
    quoted = False
    for i, ch in enumerate(value):
        if ch == 0x22:  # "
            quoted = not quoted
        elif quoted:
            continue
        elif ch == 0x3C:  # <
            depth += 1
        elif ch == 0x3E:  # >
            depth -= 1
        elif ch == 0x2C and depth == 0:  # ,
            return value[:i].strip(), value[i + 1 :].strip()
    return value.strip(), b""


def branch_of(via_value: bytes) -> bytes:
    """The branch parameter of one Via value (fast path for response matching)."""
    i = via_value.find(b"branch=")
    if i < 0:
        i = via_value.lower().find(b"branch=")
        if i < 0:
            return b""
    j = i + 7
    end = len(via_value)
    for stop in (b";", b",", b" "):
        k = via_value.find(stop, j)
        if 0 <= k < end:
            end = k
    return via_value[j:end]


def header_name(line: bytes) -> bytes:
    return line[: line.find(b":")].rstrip()


def loop_hash(m: Message) -> str:
    """The §16.6 step 8 loop-detection part of a branch: a hash over the fields that stay
    the same when a request comes back to this proxy (not over the method, so CANCEL and
    ACK share it; not over the top Via, which the looping hop replaced)."""
    h = zlib.crc32(m.ruri)
    h = zlib.crc32(m.call_id, h)
    h = zlib.crc32(m.cseq_num, h)
    # the raw From/To values carry the tags and never change hop by hop
    h = zlib.crc32(m.lines[m.from_], h)
    h = zlib.crc32(m.lines[m.to], h)
    if m.proxy_require >= 0:
        h = zlib.crc32(m.lines[m.proxy_require], h)
    return f"{h:08x}"


def build(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
