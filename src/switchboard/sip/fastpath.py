"""The SIP core's fast path: the view of a message a proxy forwards, edited as bytes.

RFC 3261 §16.6 forbids a proxy to reorder same-named headers or touch the body, and
§16.3 says it must not refuse a request for a header it does not understand, so the
proxy never rebuilds a message from parsed objects: :func:`parse` splits the header
block into lines once, remembers *where* the headers it needs are (Via, Route,
Record-Route, Max-Forwards, Call-ID, CSeq, From, To, Content-Length, Proxy-Require),
and the proxy edits the line list (insert its own Via and Record-Route, drop its own
Route, rewrite Max-Forwards).  Every other header stays the raw bytes that arrived.

One grammar with :mod:`switchboard.sip.message`: :func:`parse` applies the same
framing, start-line and header-name rules as :func:`~switchboard.sip.message.parse_message`
(leading CRLFs, folding, bare CR/LF, token names, Content-Length, SIP version), and
:func:`validate` runs :func:`~switchboard.sip.message.check_fields` — the very function
behind ``parse_message(strict=True)`` — over the header lines it indexed, so a message
is valid here exactly when the full parser accepts it (``tests/sip/test_differential.py``
runs the RFC 4475 set, the property generators and a fuzz corpus through both).  The
values the proxy reads (Via, R-URI target, tags, CSeq…) come from the same parsers too.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Final

from switchboard.sip.errors import SipParseError
from switchboard.sip.headers import COMPACT_FORMS, KNOWN_METHODS
from switchboard.sip.headers import Via as CoreVia
from switchboard.sip.message import (
    CHECKED_KEYS,
    SIP_VERSION,
    _check_version,
    _tag_of,
    check_fields,
    check_line,
    check_request_uri,
)
from switchboard.sip.uri import TOKEN_CHARS, split_commas

#: Compact header forms (RFC 3261 §7.3.3, §20), bytes → full lower-case name.
COMPACT = {k.encode(): v.lower().encode() for k, v in COMPACT_FORMS.items()}
MAX_MESSAGE: Final = 65535
# The headers the proxy looks at, to one small int each so the per-line work is one
# slice, one lower() and one dict lookup (most lines are skipped).  Kinds from _CHECKED
# on are only read by validate().  Module constants are Final: compiled, each use is a C
# constant or static instead of a lookup in the module's dict (~50 per parse).
_VIA: Final = 0
_ROUTE: Final = 1
_RR: Final = 2
_CALL_ID: Final = 3
_CSEQ: Final = 4
_MAXFWD: Final = 5
_TO: Final = 6
_FROM: Final = 7
_CL: Final = 8
_PROXY_REQUIRE: Final = 9
_CONTACT: Final = 10
_CTYPE: Final = 11
_EXPIRES: Final = 12
CONTACT: Final = _CONTACT  # Message.checked's kind of a Contact line (the proxy's hiding)
_KIND_OF_NAME: Final = {
    b"via": _VIA,
    b"route": _ROUTE,
    b"record-route": _RR,
    b"call-id": _CALL_ID,
    b"cseq": _CSEQ,
    b"max-forwards": _MAXFWD,
    b"to": _TO,
    b"from": _FROM,
    b"content-length": _CL,
    b"proxy-require": _PROXY_REQUIRE,
    b"contact": _CONTACT,
    b"content-type": _CTYPE,
    b"expires": _EXPIRES,
}
# User-Agent and Server are not read by the proxy: their kind only records that the
# message has one (Message.product), so the scanner filter runs only on such requests.
_PRODUCT: Final = 13
_KIND = dict(_KIND_OF_NAME)
_KIND.update({k: _KIND_OF_NAME[v] for k, v in COMPACT.items() if v in _KIND_OF_NAME})
_KIND.update({b"user-agent": _PRODUCT, b"server": _PRODUCT})
_KEY_OF_KIND: Final = {kind: name.decode() for name, kind in _KIND_OF_NAME.items()}
# Header names as spelled on the wire → kind (-1: not read by the proxy), so the usual
# line costs one dict lookup; names are added once validated, up to a bound (a flood
# of invented names cannot grow it).
_NAME_KIND: Final[dict[bytes, int]] = {}
_NAME_KIND_MAX: Final = 4096
for _n, _k in _KIND.items():
    for _spelling in {_n, _n.upper(), _n.title(), _n.capitalize()}:
        _NAME_KIND[_spelling] = _k
_NAME_KIND.update({b"Call-ID": _CALL_ID, b"CSeq": _CSEQ, b"CSEQ": _CSEQ})
assert {k for k in _KEY_OF_KIND.values() if k != "proxy-require"} == CHECKED_KEYS
_UNFOLD: Final = re.compile(rb"[ \t]*\r\n[ \t]+")
_TOKEN: Final = frozenset(ord(c) for c in TOKEN_CHARS)
_METHODS: Final = frozenset(m.encode() for m in KNOWN_METHODS)
_VERSION: Final = SIP_VERSION.encode()
_DEFAULT_PORT: Final = {"udp": 5060, "tcp": 5060, "tls": 5061, "sctp": 5060, "ws": 80, "wss": 443}
_WS: Final = b" \t"


class BadMessage(SipParseError):
    """The peer sent something that is not a usable SIP message (blame: peer).

    ``status``/``reason`` is the response to send when the message is a request whose
    Via, From, To, Call-ID and CSeq could be read; otherwise the message is dropped.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}", status=status, reason=reason)


class Message:
    """One parsed SIP message (request or response) as a list of raw header lines."""

    __slots__ = (
        "body",
        "call_id",
        "checked",
        "cl",
        "cseq_method",
        "cseq_num",
        "from_",
        "lines",
        "maxfwd",
        "method",
        "product",
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
        self.product = False  # a User-Agent or Server line (any spelling of the name)
        # (kind, line index) of every line validate() reads, in order
        self.checked: list[tuple[int, int]] = []

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def value(self, index: int) -> bytes:
        """The value of header line ``index`` (after the colon, LWS stripped)."""
        line = self.lines[index]
        return line[colon(line) + 1 :].strip(_WS)

    def top_via(self) -> bytes:
        value = self.value(self.vias[0])
        # first_value(value)[0] without splitting the whole list: a response's Via line
        # often joins two Vias (ours first).  When every byte is printable ASCII or HTAB
        # without '"' and '<' (split_commas' own shortcut, see first_value), the first
        # element is what precedes the first comma, if anything does.
        table = _PLAIN_LIST_BYTE
        comma = -1
        for i in range(len(value)):
            c = value[i]
            if c == 44:  # ","
                if comma < 0:
                    comma = i
            elif not table[c]:
                return first_value(value)[0] if value.find(b",") >= 0 else value
        if comma < 0:
            return value
        first = value[:comma].rstrip(_WS)  # value() stripped the front
        return first if first else first_value(value)[0]

    def to_tag(self) -> bytes:
        return tag_of(self.value(self.to)) if self.to >= 0 else b""

    def from_tag(self) -> bytes:
        return tag_of(self.value(self.from_)) if self.from_ >= 0 else b""

    def header_lines(self, index: int) -> bytes:
        return self.lines[index] if index >= 0 else b""


# Substring tests on this path are written bytes.find(x) >= 0, not ``x in data``: CPython's
# bytes.__contains__ first tries x as an integer and formats (then clears) a TypeError
# for every bytes operand, ~1,800 instructions per test (callgrind).
def parse(data: bytes, *, stream: bool = False) -> Message:
    """Split a SIP message into lines and index the headers a proxy needs (§7, §18.3).

    The framing and syntax rules are :func:`switchboard.sip.message.parse_message`'s:
    CRLFs before the start line ignored (§7.5), folded lines joined (§7.3.1), no bare
    CR or LF in the header block, header names are tokens, a 3-digit status code, the
    request line is exactly ``method SP Request-URI SP SIP-Version`` (505 for another
    version), several Content-Length lines must agree.  On a datagram the body is cut
    at Content-Length (extra bytes are discarded; a datagram shorter than
    Content-Length is an error); on a stream the framer already delivered exactly one
    message, which must carry Content-Length (§18.3).
    """
    if len(data) > MAX_MESSAGE:
        raise BadMessage(513, "Message Too Large")
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise BadMessage(400, "Missing Empty Line After Headers")
    head = data[:end]
    lines = head.split(b"\r\n")
    if _folded(lines):
        # Folded continuation lines (§7.3.1) are joined before anything reads a value.
        head = _UNFOLD.sub(b" ", head)
        lines = head.split(b"\r\n")
    # A CR or LF outside CRLF would let a header smuggle a line break through to
    # whoever receives the forwarded copy: any left in a line split at CRLF. Joined
    # and searched (memchr): two bytes.count of the header block counted byte by byte,
    # ~4,000 instructions a message (callgrind).
    joined = b"".join(lines)
    if joined.find(b"\r") >= 0 or joined.find(b"\n") >= 0:
        raise BadMessage(400, "Bare CR or LF")
    m = Message()
    first = lines[0]
    if first.startswith(b"SIP/"):
        # version SP 3DIGIT SP reason, split by compiled scans (each bytes method call
        # costs ~1,000 instructions of lookup and argument handling, see colon)
        sp = _find_sp(first, 0)
        if sp < 0:
            raise BadMessage(400, "Bad Status Line")
        version = first[:sp]
        sp2 = _find_sp(first, sp + 1)
        code_end = sp2 if sp2 >= 0 else len(first)
        if code_end - sp != 4:
            raise BadMessage(400, "Bad Status Line")
        status = 0
        for k in range(sp + 1, code_end):
            digit = first[k]
            if digit < 48 or digit > 57:
                raise BadMessage(400, "Bad Status Line")
            status = status * 10 + digit - 48
        if version != _VERSION:
            _version(version)
        m.status = status
        if m.status < 100:
            raise BadMessage(400, "Bad Status Code")
        m.reason = first[sp2 + 1 :] if sp2 >= 0 else b""
    else:
        parts = first.split(b" ")
        if len(parts) != 3:
            raise BadMessage(400, "Bad Request Line")
        method, uri, version = parts
        if method not in _METHODS and (not method or not _TOKEN.issuperset(method)):
            raise BadMessage(400, "Bad Method")
        if not uri or _has_tab(uri) or colon(uri) < 0 or not _alpha_start(uri):
            raise BadMessage(400, "Bad Request-URI")
        if version != _VERSION:
            _version(version)
        m.method = method
        m.ruri = uri
    m.lines = lines
    checked = m.checked
    for i in range(1, len(lines)):
        line = lines[i]
        c = colon(line)
        kind = _NAME_KIND.get(line[:c]) if c > 0 else None
        if kind is None:
            kind = _name_kind(line, c)
        if kind < 0:
            continue
        if kind == _VIA:
            m.vias.append(i)
        elif kind == _CALL_ID:
            if not m.call_id:
                m.call_id = _strip_ws(line, c + 1, len(line))
        elif kind == _CSEQ:
            if not m.cseq_num:
                # CSeq = 1*DIGIT LWS Method (§20.16)
                m.cseq_num, m.cseq_method = _cseq(line, c + 1)
        elif kind == _TO:
            if m.to < 0:
                m.to = i
        elif kind == _FROM:
            if m.from_ < 0:
                m.from_ = i
        elif kind == _ROUTE:
            m.routes.append(i)
        elif kind == _RR:
            m.rrs.append(i)
        elif kind == _MAXFWD:
            if m.maxfwd < 0:
                m.maxfwd = i
        elif kind == _CL:
            if m.cl < 0:
                m.cl = i
            elif m.value(i) != m.value(m.cl):
                raise BadMessage(400, "Conflicting Content-Length")
        elif kind == _PROXY_REQUIRE:
            if m.proxy_require < 0:
                m.proxy_require = i
            continue
        elif kind == _PRODUCT:
            m.product = True
            continue
        checked.append((kind, i))
    body_start = end + 4
    if m.cl >= 0:
        line = lines[m.cl]
        raw = _strip_ws(line, colon(line) + 1, len(line))
        # 1 to 10 ASCII digits (bytes.isdigit), read as int() would
        if not raw or len(raw) > 10:
            raise BadMessage(400, "Bad Content-Length")
        length = 0
        for k in range(len(raw)):
            digit = raw[k]
            if digit < 48 or digit > 57:
                raise BadMessage(400, "Bad Content-Length")
            length = length * 10 + digit - 48
        if len(data) - body_start < length:
            raise BadMessage(400, "Truncated Body")
        m.body = data[body_start : body_start + length]
    elif stream:
        raise BadMessage(400, "Missing Content-Length")
    else:
        m.body = data[body_start:]
    return m


def _find_sp(line: bytes, start: int) -> int:
    """``line.find(b" ", start)`` by a compiled scan (see colon)."""
    n = len(line)
    i = start
    while i < n and line[i] != 32:
        i += 1
    return i if i < n else -1


def _strip_ws(line: bytes, start: int, end: int) -> bytes:
    """``line[start:end].strip(_WS)`` (SP and HTAB) by compiled scans (see colon)."""
    while start < end and (line[start] == 32 or line[start] == 9):
        start += 1
    while end > start and (line[end - 1] == 32 or line[end - 1] == 9):
        end -= 1
    return line[start:end]


# What bytes.split() with no separator and bytes.strip() with no argument take as
# whitespace: SP, HTAB, LF, VT, FF, CR.
_SPACE: Final = bytes(1 if c in (9, 10, 11, 12, 13, 32) else 0 for c in range(256))


def _cseq(line: bytes, start: int) -> tuple[bytes, bytes]:
    """``parts = line[start:].split(None, 1)``, then ``(parts[0], parts[1].strip())``
    with b"-" for no number and b"" for no method, by compiled scans (see colon)."""
    n = len(line)
    space = _SPACE
    i = start
    while i < n and space[line[i]]:
        i += 1
    if i == n:
        return b"-", b""
    j = i
    while j < n and not space[line[j]]:
        j += 1
    k = j
    while k < n and space[line[k]]:
        k += 1
    if k == n:
        return line[i:j], b""
    end = n
    while space[line[end - 1]]:
        end -= 1
    return line[i:j], line[k:end]


def _name_kind(line: bytes, colon: int) -> int:
    """The kind of a header line whose name is not in _NAME_KIND yet (-1: a header the
    proxy does not read); raises BadMessage for a line that is not ``token ":" ...``
    (the core's rule: the name may be followed by LWS, §7.3.1)."""
    if colon <= 0:
        raise BadMessage(400, "Malformed Header Line")
    raw = line[:colon]
    name = raw.rstrip(_WS)
    if not name or not _TOKEN.issuperset(name):
        raise BadMessage(400, "Malformed Header Line")
    kind = _KIND.get(name.lower(), -1)
    if len(_NAME_KIND) < _NAME_KIND_MAX:
        _NAME_KIND[raw] = kind
    return kind


def _alpha_start(uri: bytes) -> bool:
    # the full parser tests the first *character* (str.isalpha), not the first octet
    return uri[:1].isalpha() or (uri[0] >= 0x80 and _text(uri)[0].isalpha())


def _version(version: bytes) -> None:
    try:
        _check_version(version.decode("utf-8", "surrogateescape"))
    except SipParseError as exc:
        raise BadMessage(exc.status, exc.reason) from None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# What passed the core's checks before, so a call's later messages cost little: most
# of their lines (From, Contact, Route, the caller's Via in the responses...) and their
# shape were already checked in an earlier message.  Exact bytes as keys; each memo is
# cleared when it reaches MEMO_MAX entries.
MEMO_MAX: Final = 16384
_GOOD_LINES: Final[dict[bytes, None]] = {}  # header lines whose check_line passed
_GOOD_SHAPES: Final[dict[tuple[int, ...], None]] = {}  # kind sequences check_structure passed
_GOOD_URIS: Final[dict[bytes, None]] = {}  # Request-URIs check_request_uri passed
_TARGETS: Final[dict[bytes, tuple[str, str, int, bool]]] = {}  # uri_target results
_TAGS: Final[dict[bytes, bytes]] = {}  # tag_of results
# Via readings by their value with the branch taken out (Via.__init__)
_VIAS: Final[dict[bytes, tuple[str, str, int, bytes, bytes | None, bytes]]] = {}
# The top Via validate() just parsed (value bytes, core Via): the proxy reads it next.
_LAST_TOP: Final[list[tuple[bytes, CoreVia] | None]] = [None]


def _plain(kind: int, line: bytes) -> bool:
    """A line whose part in check_structure is its kind alone: not a Contact that may
    be ``*``, not an empty Route / Record-Route."""
    if kind == _CONTACT:
        return line.find(b"*") < 0
    if kind in (_ROUTE, _RR):
        return bool(line[colon(line) + 1 :].strip(_WS))
    return True


# Via, From and To lines that differ only in branch (§8.1.1.7) or tag (§19.3) values share
# their verdict: each new transaction and dialog brings new ones, so the exact-bytes memo
# above missed about 6 lines of every call (the caller's and our own Via in each
# response, the new tags), each a parse by the core.  The memo key replaces every such
# value with a fixed one when it is made only of characters that every grammar position
# where ``;branch=`` / ``;tag=`` can stand accepts alike — a header or Via parameter
# (token), a URI parameter (paramchar), a URI user part or header, a quoted string —
# namely alphanumerics and ``-.!*_+'~``.  Each run is maximal (it ends at a character
# outside the set, and the next ``;branch=`` starts with ``;``), so what surrounds it is
# unchanged: the check's verdict on the key is its verdict on the line, one substitution
# at a time.  Every value, not just the last: a response's Via line often carries two
# comma-joined Vias (SIPp's ``[last_Via:]``, many UAs), ours with a new branch first.
_ID_SAFE: Final = bytes(
    1 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "-.!*_+'~") else 0 for c in range(256)
)
_ID_FIXED: Final = b"z9hG4bK"


def _memo_key(kind: int, line: bytes) -> bytes:
    """The memo key of a header line of ``kind`` (see _ID_SAFE): Via, From and To only."""
    if kind == _VIA:
        name = b";branch="
    elif kind in (_FROM, _TO):
        name = b";tag="
    else:
        return line
    # One split (an argument-clinic method: cheap to call, unlike bytes.find) and a
    # compiled scan of each value; the name starts with ";", which is not in _ID_SAFE,
    # so each run ends before the next occurrence and occurrences cannot overlap.
    parts = line.split(name)
    if len(parts) == 1:
        return line
    safe = _ID_SAFE
    for k in range(1, len(parts)):
        part = parts[k]
        n = len(part)
        end = 0
        while end < n and safe[part[end]]:
            end += 1
        if end:
            parts[k] = _ID_FIXED + part[end:]
    return name.join(parts)


def _folded(lines: list[bytes]) -> bool:
    """A header line after the first starts with SP or HTAB: a continuation (§7.3.1)."""
    for i in range(1, len(lines)):
        line = lines[i]
        if line and (line[0] == 32 or line[0] == 9):
            return True
    return False


def _has_tab(text: bytes) -> bool:
    """``text.find(b"\t") >= 0`` for a short value (see colon)."""
    i = 0
    n = len(text)
    while i < n and text[i] != 9:
        i += 1
    return i < n


def colon(line: bytes) -> int:
    """``line.find(b":")`` for a header line, where the colon is a few bytes in: bytes.find
    takes its arguments the slow way (~700 instructions of argument parsing per call,
    callgrind), this loop compiles to a few per byte."""
    n = len(line)
    i = 0
    while i < n:
        if line[i] == 58:  # ":"
            return i
        i += 1
    return -1


def _remember(memo: dict[Any, None], key: Any) -> None:
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[key] = None


def validate(m: Message, ruri_known: bool = False) -> None:
    """The full parser's verdict on ``m`` — :func:`~switchboard.sip.message.check_fields`
    over the header lines :func:`parse` indexed and, for a request, the Request-URI and
    method — raising :class:`BadMessage` with the same status (400, 416, 501).
    ``ruri_known``: the Request-URI is one the caller wrote itself and knows valid (the
    router's topology-hiding Contact, new in every call): not read again, nor remembered.

    check_fields is check_structure + check_line per line + check_request, each a pure
    function of its input, so what passed before is not checked again: lines by their
    exact bytes, the structure by the sequence of header kinds (for messages whose
    structure depends on nothing else, see _plain), Request-URIs by their bytes.
    """
    lines = m.lines
    checked = m.checked
    good = _GOOD_LINES
    keys = [_memo_key(kind, lines[i]) for kind, i in checked]
    fresh = [(kind, i, keys[n]) for n, (kind, i) in enumerate(checked) if keys[n] not in good]
    shape = tuple([kind for kind, _ in checked])
    if (
        shape in _GOOD_SHAPES
        and (not m.method or m.cseq_method == m.method)
        and all(_plain(kind, lines[i]) for kind, i, _ in fresh)
    ):
        # Structure as before; only the new lines are checked, in order, so the first
        # bad one gives the error check_fields would give, then a new Request-URI
        # (check_request's other part, the CSeq method, is the equality just tested).
        # In-dialog requests have a new Request-URI per call (the remote target), and
        # their other lines were mostly seen in the call's earlier messages.
        top = m.vias[0] if m.vias else -1
        for kind, i, key in fresh:
            line = lines[i]
            value = line[colon(line) + 1 :].strip(_WS)
            try:
                vias = check_line(_KEY_OF_KIND[kind], _text(value))
            except SipParseError as exc:
                raise BadMessage(exc.status, exc.reason) from None
            if i == top and vias is not None and len(vias) == 1:
                _LAST_TOP[0] = (value, vias[0])  # Via() of this value reuses it
            _remember(good, key)
        if m.method and not ruri_known and m.ruri not in _GOOD_URIS:
            try:
                check_request_uri(_text(m.ruri))
            except SipParseError as exc:
                raise BadMessage(exc.status, exc.reason) from None
            _remember(_GOOD_URIS, m.ruri)
        return
    names = _KEY_OF_KIND
    fields = []
    for kind, i in checked:
        line = lines[i]
        fields.append((names[kind], _text(line[line.find(b":") + 1 :].strip(_WS))))
    try:
        if m.method:
            check_fields(fields, _text(m.method), _text(m.ruri))
        else:
            check_fields(fields)
    except SipParseError as exc:
        raise BadMessage(exc.status, exc.reason) from None
    plain = True
    for n, (kind, i) in enumerate(checked):
        if _plain(kind, lines[i]):
            _remember(good, keys[n])
        else:
            plain = False
    if plain:
        _remember(_GOOD_SHAPES, shape)
    if m.method and not ruri_known:
        _remember(_GOOD_URIS, m.ruri)


def tag_of(value: bytes) -> bytes:
    """The ``tag`` parameter of a From/To value, or b"" (the core's reading of it)."""
    tag = _TAGS.get(value)
    if tag is None:
        try:
            tag = _bytes(_tag_of(_text(value)) or "")
        except SipParseError:
            tag = b""  # only an unvalidated message gets here (answering it with 400)
        if len(_TAGS) >= MEMO_MAX:
            _TAGS.clear()
        _TAGS[value] = tag
    return tag


class Via:
    """A Via value (§20.42) as the proxy uses it, read by the core's Via parser
    (:class:`switchboard.sip.headers.Via`): transport (lower case), host (lower case,
    IPv6 in brackets), port (the transport's default when absent), branch, received,
    rport (``None`` absent, ``b""`` empty), ``sent_by`` as ``host[:port]`` and the raw
    parameter text from the first ``;`` (for rewriting received/rport in place)."""

    __slots__ = ("branch", "host", "params", "port", "received", "rport", "sent_by", "transport")
    rport: bytes | None

    def __init__(self, value: bytes) -> None:
        semi = value.find(b";")
        self.params = b"" if semi < 0 else value[semi:]
        # Each request brings a new branch in an otherwise familiar Via: one whose only
        # difference from a Via read before is its branch value (one ``;branch=``, a run
        # of _ID_SAFE characters up to the next parameter or the end, no quotes) has
        # that Via's reading with its own branch (same argument as _memo_key).
        key = b""
        j = value.find(b";branch=")
        if j >= 0 and value.find(b'"') < 0 and value.lower().count(b"branch") == 1:
            start = j + 8
            end = start
            n = len(value)
            safe = _ID_SAFE
            while end < n and safe[value[end]]:
                end += 1
            if end > start and (end == n or value[end] == 59):  # 59: ";"
                key = value[:start] + value[end:]
                known = _VIAS.get(key)
                if known is not None:
                    self.transport, self.host, self.port, self.sent_by = known[:4]
                    self.rport, self.received = known[4], known[5]
                    self.branch = value[start:end]
                    return
        last = _LAST_TOP[0]
        if last is not None and last[0] == value:
            core = last[1]
        else:
            try:
                core = CoreVia.parse(_text(value))
            except SipParseError:
                raise BadMessage(400, "Bad Via") from None
        self.transport = core.transport.lower()
        self.host = core.host.lower()
        self.port = core.port if core.port is not None else _DEFAULT_PORT.get(self.transport, 5060)
        self.sent_by = _bytes(core.host if core.port is None else f"{core.host}:{core.port}")
        p = core.params
        branch = p.get("branch")
        self.branch = _bytes(branch) if branch else b""
        self.rport = _bytes(p["rport"] or "") if "rport" in p else None
        received = p.get("received")
        self.received = _bytes(received) if received else b""
        if key:
            if len(_VIAS) >= MEMO_MAX:
                _VIAS.clear()
            _VIAS[key] = (self.transport, self.host, self.port, self.sent_by, self.rport,
                          self.received)  # fmt: skip

    def reply_address(self, src: tuple[str, int] | None = None) -> tuple[str, int]:
        """Where responses go (§18.2.2 and RFC 3581 §4): received/rport if present."""
        host = _text(self.received) if self.received else self.host
        if self.rport and self.rport.isdigit() and len(self.rport) <= 5:
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
    found = _TARGETS.get(uri)
    if found is None:
        found = _uri_target(uri)
        if len(_TARGETS) >= MEMO_MAX:
            _TARGETS.clear()
        _TARGETS[uri] = found
    return found


def _uri_target(uri: bytes) -> tuple[str, str, int, bool]:
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
    # The userinfo may hold ';', '?' and escaped '@' (RFC 4475 §3.1.1.10 "semiuri");
    # the one unescaped '@' ends it (§25.1: '@' is not allowed after it).
    at = rest.find(b"@")
    if at >= 0:
        rest = rest[at + 1 :]
    q = rest.find(b"?")
    if q >= 0:
        rest = rest[:q]
    semi = rest.find(b";")
    hostpart = rest if semi < 0 else rest[:semi]
    params = b"" if semi < 0 else rest[semi + 1 :]
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
    """Split a comma-joined header value into its first element and the rest (§7.3.1,
    the core's :func:`~switchboard.sip.uri.split_commas`: commas inside ``<…>`` or
    quotes do not separate values, empty elements are dropped)."""
    if value.find(b",") < 0:
        return value.strip(_WS), b""
    # split_commas' own shortcut (no quote, no ``<``), in bytes: for printable ASCII and
    # tabs, str.strip() strips exactly what strip(_WS) does (the core's split took
    # ~10,000 instructions per call).
    commas = _plain_commas(value)
    if commas == 1:
        # Two elements (a response's two joined Vias, ours first): around the comma.
        comma = _find_comma(value)
        first = _strip_ws(value, 0, comma)
        second = _strip_ws(value, comma + 1, len(value))
        return (first, second) if first else (second, b"")
    if commas > 1:
        elements = [e for e in (p.strip(_WS) for p in value.split(b",")) if e]
        if not elements:
            return b"", b""
        return elements[0], b", ".join(elements[1:])
    try:
        parts = split_commas(_text(value))
    except SipParseError:
        raise BadMessage(400, "Bad Header List") from None
    if not parts:
        return b"", b""
    return _bytes(parts[0]), _bytes(", ".join(parts[1:]))


# Printable ASCII and HTAB except ``"`` and ``<``: a list value split_commas splits at
# every comma (first_value).
_PLAIN_LIST_BYTE: Final = bytes(
    1 if (32 <= c < 127 and c not in (34, 60)) or c == 9 else 0 for c in range(256)
)


def _plain_commas(value: bytes) -> int:
    """The number of commas in ``value`` when every byte is in _PLAIN_LIST_BYTE, else
    -1 (a compiled scan, see colon)."""
    table = _PLAIN_LIST_BYTE
    commas = 0
    for i in range(len(value)):
        c = value[i]
        if c == 44:  # ","
            commas += 1
        elif not table[c]:
            return -1
    return commas


def _find_comma(value: bytes) -> int:
    """``value.find(b",")`` by a compiled scan (see colon)."""
    n = len(value)
    i = 0
    while i < n and value[i] != 44:
        i += 1
    return i if i < n else -1


_BRANCH_STOP: Final = bytes(1 if chr(c) in ";, \t" else 0 for c in range(256))


def branch_of(via_value: bytes) -> bytes:
    """The branch parameter of one Via value (response matching, §17.1.3): sliced out
    when it appears once in the plain ``;branch=value`` form, else the core's Via
    parser reads it (b"" when the value does not parse)."""
    i = via_value.find(b";branch=")
    if i >= 0 and via_value.find(b'"') < 0 and via_value.lower().count(b"branch") == 1:
        j = i + 8
        end = j
        n = len(via_value)
        stop = _BRANCH_STOP
        while end < n and not stop[via_value[end]]:
            end += 1
        if end > j:
            return via_value[j:end]
    try:
        return _bytes(CoreVia.parse(_text(via_value)).branch or "")
    except SipParseError:
        return b""


def header_name(line: bytes) -> bytes:
    return line[: colon(line)].rstrip()


def loop_hash(m: Message) -> str:
    """The §16.6 step 8 loop-detection part of a branch: a hash over the fields that stay
    the same when a request comes back to this proxy (not over the method, so CANCEL and
    ACK share it; not over the top Via, which the looping hop replaced)."""
    # the raw From/To values carry the tags and never change hop by hop.  One CRC of the
    # joined fields: the same value as a CRC chained field by field, in one call.
    parts = [m.ruri, m.call_id, m.cseq_num, m.lines[m.from_], m.lines[m.to]]
    if m.proxy_require >= 0:
        parts.append(m.lines[m.proxy_require])
    return f"{zlib.crc32(b''.join(parts)):08x}"


def build(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
