"""Header names, the ordered header list, and the structured headers a proxy needs
(RFC 3261 §7.3, §20).

:class:`Headers` stores each header field line as received — ``(name, value)`` with
the value still a raw string — and parses nothing until asked.  Lookups are
case-insensitive and know the compact forms (§7.3.3), so ``get("Call-ID")`` finds an
``i:`` line.  Serialising reuses each untouched line's original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from switchboard.sip.errors import SipParseError
from switchboard.sip.uri import (
    _TOKEN_RE,
    format_params,
    parse_params,
    split_commas,
)

#: Compact forms (RFC 3261 §7.3.3 and the extensions that registered one).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

#: Canonical spelling of well-known header names, keyed by lower-case name.
CANONICAL_NAMES: dict[str, str] = {
    n.lower(): n
    for n in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "History-Info",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Service-Route",
        "Session-Expires",
        "SIP-ETag",
        "SIP-If-Match",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

#: Headers whose grammar is ``#element`` so several values may share one line joined
#: by commas (§7.3.1).  Everything else — notably WWW-Authenticate, Authorization,
#: Proxy-Authenticate, Proxy-Authorization, Date, Retry-After and every unknown
#: header — is never split.
LIST_HEADERS: frozenset[str] = frozenset(
    n.lower()
    for n in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Privacy",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)

# Memo of "name as received" -> lower-case canonical key; bounded so a flood of
# random header names cannot grow it without limit.
_KEYS: dict[str, str] = {}
_KEYS_MAX = 4096


def header_key(name: str) -> str:
    """Lower-case full name used for lookups: ``"v"``, ``"VIA"`` → ``"via"``."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    low = name.lower()
    key = COMPACT_FORMS[low].lower() if len(low) == 1 and low in COMPACT_FORMS else low
    # Only token names are memoised: the parser trusts a memo hit as validated.
    if len(_KEYS) < _KEYS_MAX and _TOKEN_RE.fullmatch(name):
        _KEYS[name] = key
    return key


for _name in [*CANONICAL_NAMES.values(), *COMPACT_FORMS]:
    for _spelling in {_name, _name.lower(), _name.upper()}:
        header_key(_spelling)


def canonical_name(name: str) -> str:
    """Preferred long spelling: ``"i"`` → ``"Call-ID"``, ``"x-foo"`` → ``"x-foo"``."""
    key = header_key(name)
    return CANONICAL_NAMES.get(key, name if len(name) > 1 else key)


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    Each field is one header *line* as received, kept in four parallel lists (name
    as spelled, value, lower-case full-name key, original line text — or ``None``
    once modified) so the parser can fill them with C-level list operations instead
    of a Python loop per line.  A parsed line's value is cut out of its original
    text only when first read (a proxy reads 6 of ~15 headers); ``None`` in
    ``_values`` means "not cut yet", and the original text is then always there.  Values are raw strings;
    :meth:`get_all` splits comma-joined values for list headers (§7.3.1).  Mutating
    methods clear :attr:`cache`, which :class:`~switchboard.sip.message.Message`
    uses for its lazily parsed properties.
    """

    __slots__ = ("_keys", "_names", "_raws", "_values", "cache")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._names: list[str] = []
        self._values: list[str | None] = []
        self._keys: list[str] = []
        self._raws: list[str | None] = []
        self.cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(
        cls,
        names: list[str],
        values: list[str | None],
        keys: list[str],
        raws: list[str | None],
    ) -> Headers:
        h = cls.__new__(cls)
        h._names = names
        h._values = values
        h._keys = keys
        h._raws = raws
        h.cache = {}
        return h

    # -- lookup ---------------------------------------------------------------
    # Lookups scan the key list in C (list.index/count): for ~20 headers that is
    # cheaper than building a dict per message, and mutations need no upkeep.
    def _find(self, key: str) -> int | None:
        keys = self._keys
        return keys.index(key) if key in keys else None

    def _positions(self, key: str) -> list[int]:
        keys = self._keys
        n = keys.count(key)
        if n == 0:
            return []
        if n == 1:
            return [keys.index(key)]
        return [i for i, k in enumerate(keys) if k == key]

    def _value(self, i: int) -> str:
        v = self._values[i]
        if v is None:
            raw: str = self._raws[i]  # type: ignore[assignment]
            v = self._values[i] = raw[raw.find(":") + 1 :].strip(" \t")
        return v

    def _all_values(self) -> list[str]:
        values = self._values
        if None in values:
            for i, v in enumerate(values):
                if v is None:
                    self._value(i)
        return values  # type: ignore[return-value]

    def _changed(self) -> None:
        if self.cache:
            self.cache = {}

    def first_value(self, key: str) -> str | None:
        """Value of the first *line* with lower-case full name ``key`` (no comma
        splitting, no name normalisation): the hot path of Message properties."""
        keys = self._keys
        if key not in keys:
            return None
        i = keys.index(key)
        v = self._values[i]
        return self._value(i) if v is None else v

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name``: for list headers the first comma-separated element,
        otherwise the first line's value.  ``default`` when absent."""
        key = _KEYS.get(name) or header_key(name)
        keys = self._keys
        if key not in keys:
            return default
        i = keys.index(key)
        value = self._values[i]
        if value is None:
            value = self._value(i)
        if "," in value and key in LIST_HEADERS:
            parts = split_commas(value)
            return parts[0] if parts else default
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-splitting list headers (§7.3.1)."""
        key = _KEYS.get(name) or header_key(name)
        value = self._value
        pos = self._positions(key)
        if key in LIST_HEADERS:
            out: list[str] = []
            for i in pos:
                v = value(i)
                if "," in v:
                    out.extend(split_commas(v))
                elif v:
                    out.append(v)
            return out
        return [value(i) for i in pos]

    def get_lines(self, name: str) -> list[str]:
        """Values of every line named ``name``, without comma splitting."""
        value = self._value
        return [value(i) for i in self._positions(_KEYS.get(name) or header_key(name))]

    def count(self, name: str) -> int:
        """Number of header field lines named ``name``."""
        return self._keys.count(_KEYS.get(name) or header_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (_KEYS.get(name) or header_key(name)) in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return zip(self._names, self._all_values(), strict=True)

    def items(self) -> list[tuple[str, str]]:
        return list(zip(self._names, self._all_values(), strict=True))

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._names == other._names and self._all_values() == other._all_values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    # -- mutation -------------------------------------------------------------
    @staticmethod
    def _check(name: str, value: str) -> None:
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"CR/LF in value of {name}")

    def _put(self, at: int, name: str, value: str, key: str) -> None:
        self._names.insert(at, name)
        self._values.insert(at, value)
        self._keys.insert(at, key)
        self._raws.insert(at, None)

    def _delete(self, i: int) -> None:
        del self._names[i], self._values[i], self._keys[i], self._raws[i]

    def add(self, name: str, value: str) -> None:
        """Append a header field line at the bottom."""
        self._check(name, value)
        self._put(len(self._names), name, value, header_key(name))
        self._changed()

    def insert(self, name: str, value: str) -> None:
        """Prepend before the first line of the same header, or at the very top when
        there is none (Via, Record-Route: RFC 3261 §16.6 steps 4 and 8)."""
        self._check(name, value)
        key = header_key(name)
        i = self._find(key)
        self._put(0 if i is None else i, name, value, key)
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line (at the first one's position,
        keeping the name as it was spelled there), or append it."""
        self._check(name, value)
        key = header_key(name)
        pos = self._positions(key)
        if not pos:
            self._put(len(self._names), name, value, key)
        else:
            self._values[pos[0]] = value
            self._raws[pos[0]] = None
            for i in reversed(pos[1:]):
                self._delete(i)
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; returns how many were removed."""
        pos = self._positions(header_key(name))
        for i in reversed(pos):
            self._delete(i)
        if pos:
            self._changed()
        return len(pos)

    def remove_first(self, name: str) -> str | None:
        """Pop the first value of ``name``: a whole line, or the first element of a
        comma-joined list line (Route on loose routing §16.4, Via on responses §16.7).
        Returns the removed value, ``None`` when absent."""
        key = header_key(name)
        i = self._find(key)
        if i is None:
            return None
        value = self._value(i)
        if "," in value and key in LIST_HEADERS:
            parts = split_commas(value)
            if len(parts) > 1:
                self._values[i] = ", ".join(parts[1:])
                self._raws[i] = None
                self._changed()
                return parts[0]
        self._delete(i)
        self._changed()
        return value

    def copy(self) -> Headers:
        return Headers._from_parsed(
            list(self._names), list(self._values), list(self._keys), list(self._raws)
        )

    # -- serialisation --------------------------------------------------------
    def lines(self) -> list[str]:
        """Header field lines, original text for untouched ones."""
        raws = self._raws
        if None not in raws:
            return list(raws)  # type: ignore[arg-type]
        return [
            r if r is not None else f"{n}: {v}"
            for n, v, r in zip(self._names, self._values, raws, strict=True)
        ]


# --- Via (RFC 3261 §20.42, §18.2.1, RFC 3581) ----------------------------------------

_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z0-9]+) "
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"<>,=]+)?)*)"
)
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*"
)


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...`` (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP"
    version: str = "2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm (no commas); raises :class:`SipParseError`."""
        f = _VIA_FAST_RE.fullmatch(text)
        if f is not None:
            # Fast path for the canonical form every modern element sends.
            transport, host, port_text, ptext = f.groups()
            params: dict[str, str | None] = {}
            if ptext:
                for part in ptext[1:].split(";"):
                    name, eq, val = part.partition("=")
                    params[name.lower()] = val if eq else None
                if "ttl" in params:
                    ttl = params["ttl"]
                    if ttl is None or not ttl.isdigit() or int(ttl) > 255:
                        raise SipParseError(f"bad Via ttl in {text!r}")
            port = None if port_text is None else int(port_text)
            if port is not None and port > 65535:
                raise SipParseError(f"Via port out of range in {text!r}")
            return cls(transport.upper(), host, port, params)
        m = _VIA_RE.match(text)
        if m is None:
            raise SipParseError(f"bad Via {text!r}")
        rest = text[m.end() :]
        params = parse_params(rest) if rest else {}
        port = None
        if m.group(5) is not None:
            port = int(m.group(5))
            if port > 65535:
                raise SipParseError(f"Via port out of range in {text!r}")
        if "ttl" in params:
            ttl = params["ttl"]
            if ttl is None or not ttl.isdigit() or int(ttl) > 255:
                raise SipParseError(f"bad Via ttl in {text!r}")
        return cls(m.group(3).upper(), m.group(4), port, params, m.group(1), m.group(2))

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return (
            f"{self.protocol}/{self.version}/{self.transport} {self.host}{port}"
            f"{format_params(self.params)}"
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """``None`` absent, ``""`` present without value (a request asking for it,
        RFC 3581 §3), else the port the response went back to."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        v = self.params.get("ttl")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def is_rfc3261_branch(self) -> bool:
        """True when the branch carries the ``z9hG4bK`` magic cookie (§8.1.1.7)."""
        b = self.params.get("branch")
        # A bare cookie carries no identifier: fall back to RFC 2543 matching
        # (RFC 4475 §3.2.1 "badbranch").
        return b is not None and len(b) > 7 and b.startswith("z9hG4bK")


def parse_vias(value: str) -> list[Via]:
    """All Via values on one (possibly comma-joined) header line."""
    return [Via.parse(v) for v in split_commas(value)]


# --- CSeq (RFC 3261 §20.16) ----------------------------------------------------------

_CSEQ_RE = re.compile(r"[ \t]*([0-9]+)[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")
CSEQ_MAX = 2**31 - 1
#: Methods of RFC 3261 and the extensions a carrier sees (3262, 3265/6665, 3311,
#: 3428, 3515, 3903, 6086).
KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)  # §8.1.1.5: the sequence number MUST be less than 2**31


class CSeq(NamedTuple):
    """``CSeq: 4711 INVITE`` — sequence number and method (case-sensitive).

    A NamedTuple rather than a frozen dataclass: immutable, hashable and several
    times cheaper to build on the proxy hot path.
    """

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        num, sp, method = text.partition(" ")
        if sp and 0 < len(num) <= 10 and num.isdigit() and num.isascii():
            # Fast path: "4711 INVITE".
            seq = int(num)
            if seq <= CSEQ_MAX and (method in KNOWN_METHODS or _TOKEN_RE.fullmatch(method)):
                return tuple.__new__(cls, (seq, method))  # skips the generated __new__
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"bad CSeq {text!r}")
        digits = m.group(1).lstrip("0") or "0"
        if len(digits) > 10 or int(digits) > CSEQ_MAX:
            raise SipParseError(f"CSeq number too large in {text!r}")
        return cls(int(digits), m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
