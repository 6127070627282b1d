"""SIP requests and responses: parse, inspect lazily, serialise (RFC 3261 §7, §8.2.6, §18.3).

Theory of operation
-------------------
:func:`parse_message` does the minimum a proxy needs to make a forwarding decision
safely: it checks the start line, splits the header block into ``(name, value)``
lines once (unfolding LWS, §7.3.1), checks each name is a token, and cuts the body by
Content-Length.  Header *values* stay raw strings.  The properties of
:class:`Message` (``top_via``, ``call_id``, ``cseq``, ``to_tag``, ``routes``...)
parse the one header they need on first access and cache the result in
``headers.cache``, which every header mutation clears.  :meth:`Message.parse_all`
builds every known header object and applies the message-level checks of §8.2
(mandatory headers, single-valued headers, CSeq method) — what a UAS does before
accepting a request, and what the RFC 4475 torture tests exercise.

Serialising (:meth:`Message.to_bytes`) writes every untouched header line exactly as
it was received, so forwarding a message changes only what the proxy changed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from switchboard.sip.errors import SipParseError, VersionNotSupported
from switchboard.sip.headers import (
    _KEYS,
    CANONICAL_NAMES,
    KNOWN_METHODS,
    CSeq,
    Headers,
    Via,
    header_key,
    parse_vias,
)
from switchboard.sip.status import reason_phrase
from switchboard.sip.uri import _TOKEN_RE, NameAddr, SipUri, parse_params, split_commas

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "make_response",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"
#: RFC 3261 §20.19/§20.10: expires values are delta-seconds up to 2**32-1.
EXPIRES_MAX = 2**32 - 1
#: Headers that may appear at most once (§20; RFC 4475 §3.3.8 "multi01").
SINGLE_HEADERS = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FOLD_RE = re.compile(rb"[ \t]*\r\n[ \t]+")
_MISSING: Any = object()


class Message:
    """Common part of :class:`Request` and :class:`Response`."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    # -- serialisation ------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length is rewritten (or added) to match ``body``."""
        h = self.headers
        lines = h.lines()
        n = str(len(self.body))
        pos = h._positions("content-length")
        if not pos:
            lines.append(f"Content-Length: {n}")
        elif len(pos) > 1 or h._value(pos[0]) != n:
            for i in reversed(pos[1:]):
                del lines[i]
            lines[pos[0]] = f"{h._names[pos[0]]}: {n}"
        text = self.start_line() + "\r\n" + "\r\n".join(lines) + "\r\n\r\n"
        return text.encode("utf-8", "surrogateescape") + self.body

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.start_line() == other.start_line()
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.start_line()!r} headers={len(self.headers)}>"

    # -- lazily parsed header properties ----------------------------------
    def _required(self, key: str) -> str:
        h = self.headers
        keys = h._keys
        if key not in keys:
            raise SipParseError(f"missing {key} header")
        i = keys.index(key)
        v = h._values[i]
        if v is None:  # Headers._value, inlined: this is the proxy's hot path
            raw: str = h._raws[i]  # type: ignore[assignment]
            v = h._values[i] = raw[raw.find(":") + 1 :].strip(" \t")
        return v

    @property
    def call_id(self) -> str:
        """Call-ID (§20.8); raises :class:`SipParseError` when missing or malformed."""
        c = self.headers.cache
        v = c.get("call_id")
        if v is None:
            v = c["call_id"] = check_call_id(self._required("call-id"))
        return v

    @property
    def cseq(self) -> CSeq:
        c = self.headers.cache
        v = c.get("cseq")
        if v is None:
            v = c["cseq"] = CSeq.parse(self._required("cseq"))
        return v

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (§20.42)."""
        c = self.headers.cache
        v = c.get("vias")
        if v is None:
            v = []
            for line in self.headers.get_lines("via"):
                v.extend(parse_vias(line))
            c["vias"] = v
        return v

    @property
    def top_via(self) -> Via:
        """The topmost Via (§17.2.3 matching, §18.2.2 response routing)."""
        c = self.headers.cache
        v = c.get("top_via")
        if v is None:
            first = self._required("via")
            if "," in first:
                first = split_commas(first)[0]
            v = c["top_via"] = Via.parse(first)
        return v

    @property
    def from_(self) -> NameAddr:
        c = self.headers.cache
        v = c.get("from")
        if v is None:
            v = c["from"] = NameAddr.parse(self._required("from"))
        return v

    @property
    def to(self) -> NameAddr:
        c = self.headers.cache
        v = c.get("to")
        if v is None:
            v = c["to"] = NameAddr.parse(self._required("to"))
        return v

    @property
    def from_tag(self) -> str | None:
        c = self.headers.cache
        v = c.get("from_tag", _MISSING)
        if v is _MISSING:
            v = c["from_tag"] = _tag_of(self._required("from"))
        return v

    @property
    def to_tag(self) -> str | None:
        """To tag without building the whole NameAddr (the proxy hot path)."""
        c = self.headers.cache
        v = c.get("to_tag", _MISSING)
        if v is _MISSING:
            v = c["to_tag"] = _tag_of(self._required("to"))
        return v

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (§20.22), ``None`` when absent; 0–255 else 400."""
        c = self.headers.cache
        v = c.get("max_forwards", _MISSING)
        if v is _MISSING:
            if "max-forwards" not in self.headers._keys:
                v = None
            else:
                v = check_max_forwards(self._required("max-forwards"))
            c["max_forwards"] = v
        return v

    def _addresses(self, key: str) -> list[NameAddr]:
        h = self.headers
        c = h.cache
        v = c.get(key)
        if v is None:
            keys = h._keys
            n = keys.count(key)
            if n == 0:
                v = []
            elif n == 1 and "," not in (one := h._value(keys.index(key))):
                v = [NameAddr.parse(one)]  # the usual single Route / Record-Route
            else:
                v = [NameAddr.parse(x) for x in h.get_all(key)]
            c[key] = v
        return v

    @property
    def routes(self) -> list[NameAddr]:
        return self._addresses("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._addresses("record-route")

    @property
    def is_star_contact(self) -> bool:
        """``Contact: *`` (REGISTER removing all bindings, §10.2.2)."""
        values = self.headers.get_all("contact")
        return len(values) == 1 and values[0] == "*"

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact addresses; empty for ``Contact: *`` (check :attr:`is_star_contact`)."""
        c = self.headers.cache
        v = c.get("contacts")
        if v is None:
            values = self.headers.get_all("contact")
            if "*" in values:
                if len(values) != 1:
                    raise SipParseError("Contact '*' mixed with addresses")
                v = []
            else:
                v = [NameAddr.parse(x) for x in values]
            c["contacts"] = v
        return v

    @property
    def content_length(self) -> int | None:
        """Content-Length header value (§20.14), ``None`` when absent."""
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        return _content_length(raw)

    @property
    def content_type(self) -> str | None:
        """Content-Type as sent (media type with parameters), ``None`` when absent."""
        return self.headers.get("content-type")

    @property
    def media_type(self) -> str | None:
        """Content-Type without parameters, lower-cased: ``"application/sdp"``."""
        ct = self.headers.get("content-type")
        if ct is None:
            return None
        return check_media_type(ct)

    @property
    def expires(self) -> int | None:
        """Expires header in seconds (§20.19), ``None`` when absent."""
        raw = self.headers.get("expires")
        if raw is None:
            return None
        return check_expires(raw)

    @property
    def date(self) -> datetime | None:
        """Date header (§20.17, RFC 1123 form, GMT only); ``None`` when absent.

        Not checked by :meth:`parse_all`: RFC 4475 §3.1.2.11 ("baddate") says an element
        should not reject a request for a bad Date unless it uses the value.
        """
        raw = self.headers.get("date")
        if raw is None:
            return None
        m = _DATE_RE.fullmatch(raw)
        if m is None:
            raise SipParseError(f"bad Date {raw!r} (RFC 1123 format in GMT required)")
        day, mon, year, hh, mm, ss = m.groups()
        try:
            return datetime(
                int(year),
                _MONTHS.index(mon) + 1,
                int(day),
                int(hh),
                int(mm),
                int(ss),
                tzinfo=UTC,
            )
        except ValueError:
            raise SipParseError(f"bad Date {raw!r}") from None

    # -- full validation ----------------------------------------------------
    def checked_fields(self) -> list[tuple[str, str]]:
        """``(key, value)`` of every header line :func:`check_fields` reads, in order."""
        h = self.headers
        value = h._value
        return [(k, value(i)) for i, k in enumerate(h._keys) if k in CHECKED_KEYS]

    def parse_all(self) -> Message:
        """Parse every known header and apply §8.2 message checks; returns ``self``.

        Raises :class:`SipParseError` (or a subclass carrying 416/501/505) for anything
        malformed: the "full parse" a UAS does before acting on a request, and what the
        RFC 4475 torture tests exercise.  The checks are :func:`check_fields`, which the
        router's byte-level fast path (:mod:`switchboard.sip.fastpath`) runs too.
        """
        check_fields(self.checked_fields())
        return self


class Request(Message):
    """A SIP request.  ``uri`` is the Request-URI text; :attr:`ruri` parses it."""

    __slots__ = ("_ruri", "_ruri_text", "method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._ruri: SipUri | None = None
        self._ruri_text: str | None = None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @property
    def ruri(self) -> SipUri:
        """Parsed Request-URI (cached); 416 for schemes other than sip/sips/tel."""
        if self._ruri_text is not self.uri or self._ruri is None:
            self._ruri = check_request_uri(self.uri)
            self._ruri_text = self.uri
        return self._ruri

    @ruri.setter
    def ruri(self, value: SipUri) -> None:
        self.uri = str(value)
        self._ruri = value
        self._ruri_text = self.uri

    def parse_all(self) -> Request:
        check_fields(self.checked_fields(), self.method, self.uri)
        return self

    @classmethod
    def build(
        cls,
        method: str,
        uri: str | SipUri,
        *,
        via: str | Via | Iterable[str | Via] | None = None,
        from_: str | NameAddr | None = None,
        to: str | NameAddr | None = None,
        call_id: str | None = None,
        cseq: int | CSeq | None = None,
        max_forwards: int | None = 70,
        contact: str | NameAddr | None = None,
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes = b"",
    ) -> Request:
        """Convenience constructor in the §8.1.1 header order; ``headers`` are appended
        after the standard ones.  Content-Length is written by :meth:`to_bytes`."""
        if not _TOKEN_RE.fullmatch(method):
            raise ValueError(f"bad method {method!r}")
        h = Headers()
        if via is not None:
            for v in [via] if isinstance(via, str | Via) else via:
                h.add("Via", str(v))
        if max_forwards is not None:
            h.add("Max-Forwards", str(max_forwards))
        if from_ is not None:
            h.add("From", str(from_))
        if to is not None:
            h.add("To", str(to))
        if call_id is not None:
            h.add("Call-ID", call_id)
        if cseq is not None:
            h.add("CSeq", str(cseq) if isinstance(cseq, CSeq) else f"{cseq} {method}")
        if contact is not None:
            h.add("Contact", str(contact))
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return cls(method, str(uri), h, body)


class Response(Message):
    """A SIP response (§7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.status = int(status)
        self.reason = reason_phrase(status) if reason is None else reason
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def parse_all(self) -> Response:
        super().parse_all()
        return self


def _tag_of(value: str) -> str | None:
    """The ``tag`` header parameter of a From/To value, found without parsing the
    URI.  Falls back to the full NameAddr parse for anything unusual."""
    if '"' in value:
        return NameAddr.parse(value).tag
    gt = value.rfind(">")
    if gt >= 0:
        tail = value[gt + 1 :]
    else:
        semi = value.find(";")
        if semi < 0:
            return None
        tail = value[semi:]
    if "tag" not in tail and "TAG" not in tail.upper():
        return None
    tail = tail.strip(" \t")
    return parse_params(tail).get("tag")


def _content_length(raw: str) -> int:
    if not raw.isdigit() or not raw.isascii() or len(raw) > 10:
        raise SipParseError(f"bad Content-Length {raw!r}")
    return int(raw)


def parse_message(data: bytes, *, strict: bool = False) -> Request | Response:
    """Parse one datagram into a :class:`Request` or :class:`Response`.

    The body is cut by Content-Length; bytes beyond it are discarded and a body
    shorter than Content-Length is an error (§18.3).  Without Content-Length (UDP)
    the body is the rest of the datagram.  ``strict`` also runs
    :meth:`Message.parse_all`.  Raises :class:`SipParseError` (or a subclass) and
    nothing else for any input.
    """
    try:
        msg = _parse(data)
        if strict:
            msg.parse_all()
        return msg
    except SipParseError:
        raise
    except (ValueError, IndexError, UnicodeError) as exc:  # defensive: never leak others
        raise SipParseError(f"malformed message: {exc}") from None


def _parse(data: bytes) -> Request | Response:
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")  # §7.5: ignore CRLFs before the start line
    try:
        return _parse_unfolded(data)
    except SipParseError:
        # Folded lines (§7.3.1) always fail the fast split (a continuation line has
        # no token name before a colon), so unfolding is only paid for when needed.
        end = data.find(b"\r\n\r\n")
        head = data[:end]
        if end > 0 and (b"\r\n " in head or b"\r\n\t" in head):
            return _parse_unfolded(_FOLD_RE.sub(b" ", head) + data[end:])
        raise


def _parse_unfolded(data: bytes) -> Request | Response:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("no blank line after headers (truncated message?)")
    head = data[:end].decode("utf-8", "surrogateescape")
    body_start = end + 4
    lines = head.split("\r\n")
    # A CR or LF outside CRLF would let a header smuggle a line break through to
    # whoever receives the re-serialised message; find() on one char is a memchr.
    joined = "".join(lines)
    if joined.find("\n") >= 0 or joined.find("\r") >= 0:
        raise SipParseError("bare CR or LF in header block")
    first = lines[0]
    msg: Request | Response
    if first.startswith("SIP/"):
        version, sp, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if not sp or len(code) != 3 or not code.isdigit() or not code.isascii():
            raise SipParseError(f"bad status line {first!r}")
        if version != SIP_VERSION:
            _check_version(version)
        status = int(code)
        if status < 100:
            raise SipParseError(f"bad status code {code}")
        msg = Response.__new__(Response)
        msg.status = status
        msg.reason = reason
        msg.version = version
    else:
        parts = first.split(" ")
        if len(parts) != 3:
            raise SipParseError(f"bad request line {first!r}")
        method, uri, version = parts
        if method not in KNOWN_METHODS and not _TOKEN_RE.fullmatch(method):
            raise SipParseError(f"bad method {method!r}")
        if not uri or "\t" in uri or ":" not in uri or not uri[0].isalpha():
            raise SipParseError(f"bad Request-URI {uri!r}")
        if version != SIP_VERSION:
            _check_version(version)
        req = Request.__new__(Request)
        req.method = method
        req.uri = uri
        req.version = version
        req._ruri = None
        req._ruri_text = None
        msg = req

    # Header lines: names cut and looked up with C-level list operations (a Python
    # loop per line costs more than the rest of the parse); values are cut out of
    # the line only when a header is read (Headers._value).
    del lines[0]
    names = [line.partition(":")[0] for line in lines]
    if any(map(operator.is_, names, lines)):
        # partition() hands back the line itself when it has no colon.
        raise SipParseError("header line without ':'")
    keys: list[str | None] = list(map(_KEYS.get, names))
    if None in keys:
        for i, key in enumerate(keys):
            if key is None:
                line = lines[i]
                name = names[i].rstrip(" \t")
                if not name or not _TOKEN_RE.fullmatch(name):
                    raise SipParseError(f"bad header line {line!r}")
                names[i] = name
                keys[i] = header_key(name)
    headers = msg.headers = Headers._from_parsed(
        names,
        [None] * len(names),
        keys,  # type: ignore[arg-type]
        lines,  # type: ignore[arg-type]
    )
    cl: str | None = None
    ncl = keys.count("content-length")
    if ncl:
        pos = [i for i, k in enumerate(keys) if k == "content-length"] if ncl > 1 else None
        cl = headers._value(keys.index("content-length"))
        if pos and any(headers._value(i) != cl for i in pos):
            raise SipParseError("conflicting Content-Length headers")

    if cl is None:
        msg.body = data[body_start:]
    else:
        n = _content_length(cl)
        if len(data) - body_start < n:
            raise SipParseError(f"body shorter than Content-Length {n}")
        msg.body = data[body_start : body_start + n]
    return msg


def _check_version(version: str) -> None:
    if version.upper() == SIP_VERSION:
        return
    if re.fullmatch(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+", version):
        raise VersionNotSupported(f"SIP version {version} not supported")
    raise SipParseError(f"bad SIP version {version!r}")


DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
"""Requests whose 101-299 response can establish a dialog (RFC 3261 §12.1, RFC 6665
§4.1.2.4 and §4.2.1, RFC 3515 §2.4.4: REFER's implicit subscription)."""


#: The header fields :func:`check_fields` reads (lower-case full names).
CHECKED_KEYS = frozenset(
    (
        "via",
        "call-id",
        "cseq",
        "from",
        "to",
        "max-forwards",
        "route",
        "record-route",
        "contact",
        "content-length",
        "content-type",
        "expires",
    )
)
_MANDATORY = ("to", "from", "call-id", "cseq", "via")


def _list_values(values: list[str]) -> list[str]:
    """Comma-split list-header values, empty elements dropped (``Headers.get_all``)."""
    out: list[str] = []
    for v in values:
        if "," in v:
            out.extend(split_commas(v))
        elif v:
            out.append(v)
    return out


def check_call_id(value: str) -> str:
    """Call-ID (§20.8): one non-empty word, no whitespace."""
    if not value or " " in value or "\t" in value:
        raise SipParseError(f"bad Call-ID {value!r}")
    return value


def check_max_forwards(raw: str) -> int:
    """Max-Forwards (§20.22): 0–255 (RFC 4475 §3.1.2.4 "scalar02" sends 300)."""
    if not raw.isdigit() or not raw.isascii():
        raise SipParseError(f"bad Max-Forwards {raw!r}")
    v = int(raw) if len(raw) < 6 else 1 << 20
    if v > 255:
        raise SipParseError(f"Max-Forwards out of range {raw!r}")
    return v


def check_expires(raw: str) -> int:
    """Expires / Contact ``expires`` (§20.19): delta-seconds up to 2**32-1."""
    if not raw.isdigit() or not raw.isascii() or len(raw) > 10 or int(raw) > EXPIRES_MAX:
        raise SipParseError(f"bad Expires {raw!r}")
    return int(raw)


def check_media_type(ct: str) -> str:
    """Content-Type (§20.15) without parameters, lower-cased: ``"application/sdp"``."""
    base = ct.split(";", 1)[0].strip().lower()
    t, slash, sub = base.partition("/")
    if not slash or not _TOKEN_RE.fullmatch(t) or not _TOKEN_RE.fullmatch(sub.strip()):
        raise SipParseError(f"bad Content-Type {ct!r}")
    return f"{t.strip()}/{sub.strip()}"


def check_request_uri(uri: str) -> SipUri:
    """Request-URI (§19.1): sip/sips/tel (else 416), no headers component (§19.1.1
    Table 1, RFC 4475 §3.1.2.10 "escruri")."""
    ruri = SipUri.parse(uri)
    if ruri.headers:
        raise SipParseError(f"headers not allowed in Request-URI {uri!r}")
    return ruri


def _name(key: str) -> str:
    return CANONICAL_NAMES.get(key, key)


def _check_line(key: str, value: str) -> list[Via] | None:
    """The checks of one header line's value that depend on nothing else (pure, so a
    caller may remember which ``(key, value)`` pairs passed).  Returns the parsed Vias
    of a Via line (the caller may need the top one), else None."""
    if key == "via":
        vias = parse_vias(value)
        if not vias:
            raise SipParseError("empty Via")  # Via = 1#via-parm (§20.42)
        return vias
    elif key == "from" or key == "to":
        if "," in value and len(split_commas(value)) > 1:
            raise SipParseError(f"more than one {key} value")
        NameAddr.parse(value)
    elif key == "cseq":
        CSeq.parse(value)
    elif key == "call-id":
        check_call_id(value)
    elif key == "route" or key == "record-route":
        # several lines or comma-joined values: empty elements are skipped (§7.3.1);
        # a lone empty line is refused by check_fields
        if "," in value:
            for element in split_commas(value):
                if element:
                    NameAddr.parse(element)
        elif value:
            NameAddr.parse(value)
    elif key == "contact":
        for element in split_commas(value) if "," in value else [value]:
            if element and element != "*":
                exp = NameAddr.parse(element).params.get("expires")
                if exp is not None:
                    check_expires(exp)
    elif key == "max-forwards":
        check_max_forwards(value)
    elif key == "content-length":
        _content_length(value)
    elif key == "content-type":
        check_media_type(value)
    elif key == "expires":
        check_expires(value)
    return None


def check_line(key: str, value: str) -> list[Via] | None:
    """The per-line part of :func:`check_fields`: a pure function of ``(key, value)``
    (so a caller may remember which lines passed); raises :class:`SipParseError`
    whose 400 reason names the header (``Bad Via``).  Returns a Via line's Vias."""
    try:
        return _check_line(key, value)
    except SipParseError as exc:
        if exc.status == 400 and exc.reason == SipParseError.reason:
            exc.reason = f"Bad {_name(key)}"  # the response names the header
        raise


def check_structure(fields: list[tuple[str, str]]) -> None:
    """The part of :func:`check_fields` about the message as a whole: single-valued
    headers at most once (RFC 4475 §3.3.8 "multi01"), the mandatory headers (§8.1.1),
    ``Contact: *`` alone, no lone empty Route/Record-Route line."""
    counts: dict[str, int] = {}
    for k, _ in fields:
        counts[k] = counts.get(k, 0) + 1
    for key in SINGLE_HEADERS:
        if counts.get(key, 0) > 1:
            raise SipParseError(f"more than one {key} header", reason=f"Duplicate {_name(key)}")
    for key in _MANDATORY:
        if key not in counts:
            raise SipParseError(f"missing mandatory {key} header", reason=f"Missing {_name(key)}")
    if "contact" in counts and any(k == "contact" and "*" in v for k, v in fields):
        contacts = _list_values([v for k, v in fields if k == "contact"])
        if "*" in contacts and len(contacts) != 1:
            raise SipParseError("Contact '*' mixed with addresses")
    for key in ("route", "record-route"):
        if counts.get(key) == 1 and (key, "") in fields:
            raise SipParseError(f"empty {key}", reason=f"Bad {_name(key)}")


def check_request(fields: list[tuple[str, str]], method: str, uri: str) -> None:
    """The request part of :func:`check_fields`: the Request-URI (416 for an unknown
    scheme) and the CSeq method against the request method (501 for an unknown method,
    RFC 4475 §3.1.2.17 "mismatch02").  Expects fields that passed the other checks."""
    check_request_uri(uri)
    # Max-Forwards is not required here: RFC 2543 peers omit it and §16.6 step 3
    # has the proxy add it (RFC 4475 §3.4 "inv2543").
    cseq = next(v for k, v in fields if k == "cseq")
    cseq_method = CSeq.parse(cseq).method
    if cseq_method != method:
        if method not in KNOWN_METHODS:
            raise SipParseError(
                f"unknown method {method} with CSeq {cseq_method}",
                status=501,
                reason="Not Implemented",
            )
        raise SipParseError(f"CSeq method {cseq_method} does not match {method}")


def check_fields(
    fields: list[tuple[str, str]], method: str | None = None, uri: str | None = None
) -> None:
    """The whole-message checks of a full parse (§8.2, §16.3 step 1, RFC 4475 §3.1.2,
    §3.3), over the ``(key, value)`` pairs of the header lines in :data:`CHECKED_KEYS`
    (keys lower-case full names, values stripped of surrounding LWS), in message order;
    ``method``/``uri`` are given for a request.

    This is the one definition of a valid message: :meth:`Message.parse_all` calls
    it, and the router's fast path (:func:`switchboard.sip.fastpath.validate`) calls its
    three parts — :func:`check_structure`, :func:`check_line` per line,
    :func:`check_request` — remembering what passed.  Raises :class:`SipParseError`
    (status 400, 416 or 501).
    """
    check_structure(fields)
    for k, v in fields:
        check_line(k, v)
    if method is not None and uri is not None:
        check_request(fields, method, uri)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` as §8.2.6.2 says: the Via lines (in order),
    From, To, Call-ID and CSeq are copied; ``to_tag`` is added to To when it has
    none — never on 100 Trying (§8.2.6.2, §16.2); 100 copies Timestamp (§8.2.6.1).

    A 101-299 response to a dialog-creating request (INVITE, SUBSCRIBE...) establishes
    a dialog, so it also carries every Record-Route of the request, values and order
    untouched (§12.1.1): the caller builds its route set from them, and without them its
    ACK, re-INVITE and BYE would bypass the proxies that asked to stay in the path.
    """
    src = request.headers
    names: list[str] = []
    values: list[str] = []
    keys: list[str] = []
    raws: list[str | None] = []
    copied = ["via", "from", "to", "call-id", "cseq"]
    if 100 < status < 300 and request.method in DIALOG_CREATING_METHODS:
        copied.insert(1, "record-route")
    if status == 100:
        copied.append("timestamp")
    for key in copied:
        for i in src._positions(key):
            value = src._value(i)
            raw = src._raws[i]
            if key == "to" and to_tag is not None and status != 100 and _tag_of(value) is None:
                value = f"{value};tag={to_tag}"
                raw = None
            names.append(src._names[i])
            values.append(value)
            keys.append(key)
            raws.append(raw)
    h = Headers._from_parsed(names, values, keys, raws)  # type: ignore[arg-type]
    for name, value in headers:
        h.add(name, value)
    return Response(status, reason, h, body, request.version)


def header_list_value(values: Iterable[str]) -> str:
    """Join values of a list header with ``", "`` (§7.3.1)."""
    return ", ".join(values)
