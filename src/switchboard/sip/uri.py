"""SIP, SIPS and tel URIs and the name-addr / addr-spec forms (RFC 3261 §19.1, §20.10, §25.1).

Wire values keep their escaping: ``SipUri.user`` is the user part exactly as sent
(``%41lice`` stays ``%41lice``) so serialising never changes a URI a proxy only
forwards; :func:`unescape` and ``SipUri.user_unescaped`` give the decoded text for
comparisons (§19.1.4) and dialplans.  Parameter *names* are lower-cased because
they compare case-insensitively; values keep their case.

This module also holds the small grammar helpers the header parsers share
(token checks, quoted strings, ``;param`` lists, comma splitting outside quotes
and angle brackets), so the grammar lives in one place.
"""

from __future__ import annotations

import copy as _copy
import re
from dataclasses import dataclass, field, replace
from typing import Any

from switchboard.sip.errors import SipParseError, UnsupportedUriScheme

# --- RFC 3261 §25.1 character classes -------------------------------------------------

#: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_URI_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
# The hot regexes use plain character classes that include '%' (one sre opcode per
# run instead of an alternation per character); escapes are then checked once with
# _BAD_ESCAPE_RE when the text contains a '%'.
_PCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
_HCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]"
_USERINFO_RE = re.compile(r"([A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,%]*))?")
_SIP_REST_RE = re.compile(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    r"(?::([0-9]{1,5}))?"
    rf"((?:;{_PCHAR}+(?:={_PCHAR}+)?)*)"
    rf"(?:\?({_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?"
)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# telephone-subscriber (RFC 3966 §3), loosely: digits, hex, * # + and visual separators.
_TEL_RE = re.compile(r"\+?(?:[0-9A-Fa-f*#\-.()]|%[0-9A-Fa-f]{2})+")
# ;name[=value] lists without LWS or quotes, validated in one C-level match.
_FAST_PARAMS_RE = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"<>,=]+)?)+")
_BAD_PARAM_VALUE_RE = re.compile(r'[ \t"<>,]')
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_WS = " \t"


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 3261 token (method names, param names, tags)."""
    return _TOKEN_RE.fullmatch(text) is not None


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 §19.1.2); bytes that are not UTF-8 stay escaped
    as surrogates so the result always re-encodes losslessly."""
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw


def quote_string(text: str) -> str:
    """Serialise ``text`` as a quoted-string, escaping ``"``, ``\\`` and control
    characters as quoted-pairs (RFC 3261 §25.1)."""
    out = ['"']
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string opening at ``text[start] == '"'``.

    Returns the unescaped content and the index just past the closing quote.
    Raises :class:`SipParseError` when the quote is never closed (RFC 4475 §3.1.2.8).
    """
    end = text.find('"', start + 1)
    if end > 0 and text.find("\\", start + 1, end) < 0:
        return text[start + 1 : end], end + 1  # no quoted-pairs: one slice
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            ch = text[i + 1]
            if ch in "\r\n":
                raise SipParseError("CR or LF in quoted-pair")
            i += 2
        else:
            i += 1
        out.append(ch)
    raise SipParseError("unterminated quoted string")


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted-string opening at ``text[start]``."""
    end = text.find('"', start + 1)
    if end > 0 and text.find("\\", start + 1, end) < 0:
        return end + 1
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return i + 1
        i += 2 if ch == "\\" else 1
    raise SipParseError("unterminated quoted string")


def split_commas(value: str) -> list[str]:
    """Split a header value at commas that are outside quoted strings and ``<...>``
    (RFC 3261 §7.3.1), stripping whitespace and dropping empty elements.
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [v for v in (p.strip() for p in value.split(",")) if v]
    out: list[str] = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            i = _quoted_end(value, i)
            continue
        if ch == "<":
            gt = value.find(">", i)
            if gt < 0:
                raise SipParseError("unterminated '<' in header value")
            i = gt + 1
            continue
        if ch == ",":
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def split_semicolons(text: str) -> list[str]:
    """Split ``text`` at semicolons outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i = _quoted_end(text, i)
            continue
        if ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name[=value]`` generic-params (RFC 3261 §25.1 ``generic-param``).

    ``text`` starts at the first ``;`` (or is empty).  Names are lower-cased; values
    are kept as sent (quoted strings keep their quotes).  LWS around ``;`` and ``=``
    is allowed.  Raises :class:`SipParseError` for empty or non-token names.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    if _FAST_PARAMS_RE.fullmatch(text) is not None:
        # Common case: no LWS, no quotes; the regex validated names and values.
        for part in text[1:].split(";"):
            name, eq, val = part.partition("=")
            params[name.lower()] = val if eq else None
        return params
    parts = split_semicolons(text)
    if parts[0].strip():
        raise SipParseError(f"garbage before parameters: {parts[0]!r}")
    for part in parts[1:]:
        name, eq, val = part.partition("=")
        name = name.strip(_WS)
        if not name or not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name {name!r}")
        if eq:
            val = val.strip(_WS)
            if not val:
                raise SipParseError(f"empty value for parameter {name!r}")
            if val[0] == '"':
                if _quoted_end(val, 0) != len(val):
                    raise SipParseError(f"bad quoted value for parameter {name!r}")
            elif _BAD_PARAM_VALUE_RE.search(val):
                raise SipParseError(f"bad value for parameter {name!r}")
            params[name.lower()] = val
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialise a params dict as ``;name=value;flag``."""
    if not params:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --- URIs --------------------------------------------------------------------------------


@dataclass(slots=True)
class SipUri:
    """A ``sip:``, ``sips:`` or ``tel:`` URI (RFC 3261 §19.1.1, RFC 3966).

    For ``tel:`` the telephone-subscriber is in ``user`` and ``host`` is empty.  URIs
    of other schemes (allowed only where the grammar takes an absoluteURI, e.g. in
    To/From; see ``SipUri.parse(..., allow_other=True)``) keep the text after the
    colon in ``opaque``.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str, *, allow_other: bool = False) -> SipUri:
        """Parse a URI.

        Raises :class:`UnsupportedUriScheme` (416) for a scheme other than sip, sips or
        tel unless ``allow_other``; :class:`SipParseError` (400) for bad syntax.
        """
        if text.startswith("sip:"):  # the common case, without the scheme checks
            return _parse_sip("sip", text[4:], text)
        colon = text.find(":")
        if colon <= 0:
            raise SipParseError(f"URI without scheme: {text!r}")
        scheme = text[:colon]
        if not _SCHEME_RE.fullmatch(scheme):
            raise SipParseError(f"bad URI scheme in {text!r}")
        scheme = scheme.lower()
        rest = text[colon + 1 :]
        if scheme == "sip" or scheme == "sips":
            return _parse_sip(scheme, rest, text)
        if scheme == "tel":
            return _parse_tel(rest, text)
        if not allow_other:
            raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")
        if not rest or any(c in rest for c in ' \t\r\n<>"'):
            raise SipParseError(f"bad absolute URI {text!r}")
        return cls(scheme=scheme, opaque=rest)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            if self.scheme != "tel":
                parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.append(format_params(self.params))
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    def with_(self, **changes: Any) -> SipUri:
        """A copy with ``changes`` applied (params/headers dicts are copied)."""
        new = self.copy()
        return replace(new, **changes) if changes else new

    def copy(self) -> SipUri:
        """A deep copy: mutating the copy's params never touches this URI."""
        return _copy.deepcopy(self)

    @property
    def user_unescaped(self) -> str | None:
        """The user part with ``%HH`` escapes decoded (RFC 3261 §19.1.2)."""
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` URI parameter, lower-cased (RFC 3261 §19.1.1)."""
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def lr(self) -> bool:
        """True for a loose-routing URI (``;lr``, RFC 3261 §19.1.1, §16.4)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def host_port(self) -> tuple[str, int | None]:
        return self.host, self.port

    def equivalent(self, other: SipUri) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (escapes decoded, host and scheme
        case-insensitive, transport/user/ttl/method/maddr must match when present
        on either side, other params only when present on both)."""
        if self.scheme != other.scheme or self.opaque != other.opaque:
            return False
        if self.user_unescaped != other.user_unescaped:
            return False
        if (self.password and unescape(self.password)) != (
            other.password and unescape(other.password)
        ):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in ("transport", "user", "ttl", "method", "maddr"):
            a, b = self.params.get(name), other.params.get(name)
            if (a.lower() if a else a) != (b.lower() if b else b):
                return False
        for name, a in self.params.items():
            if name in other.params:
                b = other.params[name]
                if (unescape(a).lower() if a else a) != (unescape(b).lower() if b else b):
                    return False
        mine = {k.lower(): unescape(v) for k, v in self.headers.items()}
        theirs = {k.lower(): unescape(v) for k, v in other.headers.items()}
        return mine == theirs


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")  # '@' cannot appear unescaped after the userinfo
    if at >= 0:
        ui = _USERINFO_RE.fullmatch(rest, 0, at)
        if ui is None:
            raise SipParseError(f"bad userinfo in URI {text!r}")
        user, password = ui.group(1), ui.group(2)
    # host, port, ;params and ?headers in one unambiguous, linear-time match
    m = _SIP_REST_RE.fullmatch(rest, at + 1)
    if m is None:
        raise SipParseError(f"bad URI {text!r}")
    if "%" in rest and _BAD_ESCAPE_RE.search(rest):
        raise SipParseError(f"bad %-escape in URI {text!r}")
    host, port_text, ptext, htext = m.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SipParseError(f"port out of range in URI {text!r}")
    params: dict[str, str | None] = {}
    if ptext:
        for part in ptext[1:].split(";"):
            name, eq, val = part.partition("=")
            params[name.lower()] = val if eq else None
    headers: dict[str, str] = {}
    if htext is not None:
        for part in htext.split("&"):
            name, eq, val = part.partition("=")
            if not name or not eq:
                raise SipParseError(f"bad URI header {part!r} in {text!r}")
            headers[name] = val
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str, text: str) -> SipUri:
    number, semi, ptext = rest.partition(";")
    if not _TEL_RE.fullmatch(number):
        raise SipParseError(f"bad telephone number in {text!r}")
    params: dict[str, str | None] = {}
    if semi:
        for part in ptext.split(";"):
            name, eq, val = part.partition("=")
            if not _URI_PARAM_RE.fullmatch(name) or (eq and not _URI_PARAM_RE.fullmatch(val)):
                raise SipParseError(f"bad tel URI parameter {part!r}")
            params[name.lower()] = val if eq else None
    return SipUri("tel", number, None, "", None, params)


# --- name-addr / addr-spec ----------------------------------------------------------------


@dataclass(slots=True)
class NameAddr:
    """``[display] <uri>;params`` or ``uri;params`` (RFC 3261 §20.10, §25.1).

    ``display`` is the decoded display name (quotes and quoted-pairs removed), ``None``
    when absent; ``params`` are the header parameters (tag, expires, q, ...).
    """

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one From/To/Contact/Route element; raises :class:`SipParseError`."""
        if text[:1] == "<" and text[-1:] == ">" and text.count(">") == 1:
            # Fast path: "<uri>" (Route, Record-Route, most Contacts).
            uri_text = text[1:-1]
            if uri_text and uri_text[0] not in _WS and uri_text[-1] not in _WS:
                return cls(None, SipUri.parse(uri_text, allow_other=True), {})
        text = text.strip(_WS)
        display: str | None = None
        if not text:
            raise SipParseError("empty address")
        if text[0] == '"':
            display, end = read_quoted(text, 0)
            rest = text[end:].lstrip(_WS)
            if not rest.startswith("<"):
                raise SipParseError("quoted display name without <URI>")
            return cls._angle(display, rest)
        lt = text.find("<")
        if lt >= 0:
            name = text[:lt].strip(_WS)
            if name:
                for word in name.split():
                    if not _TOKEN_RE.fullmatch(word):
                        raise SipParseError(f"bad display name {name!r}")
                display = " ".join(name.split())
            return cls._angle(display, text[lt:])
        # addr-spec: parameters after the URI belong to the header (§20.10), and a URI
        # with ',', '?' or ';' of its own must have used <> (RFC 4475 §3.1.2.14).
        semi = text.find(";")
        uri_text = text if semi < 0 else text[:semi]
        uri_text = uri_text.rstrip(_WS)
        if any(c in uri_text for c in " \t?,>"):
            raise SipParseError(f"addr-spec must be enclosed in <>: {text!r}")
        uri = SipUri.parse(uri_text, allow_other=True)
        params = parse_params(text[semi:]) if semi >= 0 else {}
        return cls(None, uri, params)

    @classmethod
    def _angle(cls, display: str | None, rest: str) -> NameAddr:
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("missing '>' in address")
        uri_text = rest[1:gt]
        if not uri_text or uri_text[0] in _WS or uri_text[-1] in _WS:
            raise SipParseError(f"whitespace inside <>: {rest!r}")
        uri = SipUri.parse(uri_text, allow_other=True)
        return cls(display, uri, parse_params(rest[gt + 1 :].strip(_WS)))

    def __str__(self) -> str:
        if self.display is None:
            head = f"<{self.uri}>"
        elif self.display and all(w and set(w) <= TOKEN_CHARS for w in self.display.split(" ")):
            head = f"{self.display} <{self.uri}>"
        else:
            head = f"{quote_string(self.display)} <{self.uri}>"
        return head + format_params(self.params) if self.params else head

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To, RFC 3261 §19.3)."""
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter in seconds (RFC 3261 §20.10)."""
        v = self.params.get("expires")
        if v is None:
            return None
        if not v.isdigit():
            raise SipParseError(f"bad expires parameter {v!r}")
        return int(v)

    @property
    def q(self) -> float | None:
        """The Contact ``q`` preference (RFC 3261 §20.10)."""
        v = self.params.get("q")
        if v is None:
            return None
        try:
            q = float(v)
        except ValueError:
            raise SipParseError(f"bad q parameter {v!r}") from None
        if not 0.0 <= q <= 1.0:
            raise SipParseError(f"q parameter out of range {v!r}")
        return q

    def with_(self, **changes: Any) -> NameAddr:
        new = self.copy()
        return replace(new, **changes) if changes else new

    def copy(self) -> NameAddr:
        return _copy.deepcopy(self)
