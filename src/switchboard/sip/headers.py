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
from typing import Any

from switchboard.sip.errors import SipParseError
from switchboard.sip.uri import _TOKEN_RE, format_params, parse_params, split_commas

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


def canonical_name(name: str) -> str:
    """Preferred long spelling: ``"i"`` → ``"Call-ID"``, ``"x-foo"`` → ``"x-foo"``."""
    key = header_key(name)
    return CANONICAL_NAMES.get(key, name if len(name) > 1 else key)


_Entry = list[Any]  # [name, value, key, raw_line]; raw_line None once modified


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    Each entry is one header field *line* as received.  Values are raw strings;
    :meth:`get_all` splits comma-joined values for list headers (§7.3.1).  Mutating
    methods clear :attr:`cache`, which :class:`~switchboard.sip.message.Message`
    uses for its lazily parsed properties.
    """

    __slots__ = ("_entries", "_index", "cache")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._entries: list[_Entry] = []
        self._index: dict[str, list[int]] | None = None
        self.cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, entries: list[_Entry]) -> Headers:
        h = cls.__new__(cls)
        h._entries = entries
        h._index = None
        h.cache = {}
        return h

    # -- lookup ---------------------------------------------------------------
    def _idx(self) -> dict[str, list[int]]:
        index = self._index
        if index is None:
            index = {}
            for i, e in enumerate(self._entries):
                k = e[2]
                if k in index:
                    index[k].append(i)
                else:
                    index[k] = [i]
            self._index = index
        return index

    def _changed(self) -> None:
        self._index = None
        if self.cache:
            self.cache = {}

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name``: for list headers the first comma-separated element,
        otherwise the first line's value.  ``default`` when absent."""
        key = header_key(name)
        pos = self._idx().get(key)
        if not pos:
            return default
        value: str = self._entries[pos[0]][1]
        if key in LIST_HEADERS and ("," in value):
            parts = split_commas(value)
            return parts[0] if parts else default
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-splitting list headers (§7.3.1)."""
        key = header_key(name)
        pos = self._idx().get(key)
        if not pos:
            return []
        entries = self._entries
        if key in LIST_HEADERS:
            out: list[str] = []
            for i in pos:
                v = entries[i][1]
                if "," in v:
                    out.extend(split_commas(v))
                elif v:
                    out.append(v)
            return out
        return [entries[i][1] for i in pos]

    def get_lines(self, name: str) -> list[str]:
        """Values of every line named ``name``, without comma splitting."""
        pos = self._idx().get(header_key(name))
        return [self._entries[i][1] for i in pos] if pos else []

    def count(self, name: str) -> int:
        """Number of header field lines named ``name``."""
        pos = self._idx().get(header_key(name))
        return len(pos) if pos else 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._idx()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for e in self._entries:
            yield e[0], e[1]

    def items(self) -> list[tuple[str, str]]:
        return [(e[0], e[1]) for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.items() == other.items()

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    # -- mutation -------------------------------------------------------------
    @staticmethod
    def _check(name: str, value: str) -> None:
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"CR/LF in value of {name}")

    def add(self, name: str, value: str) -> None:
        """Append a header field line at the bottom."""
        self._check(name, value)
        self._entries.append([name, value, header_key(name), None])
        self._changed()

    def insert(self, name: str, value: str) -> None:
        """Prepend before the first line of the same header, or at the very top when
        there is none (Via, Record-Route: RFC 3261 §16.6 steps 4 and 8)."""
        self._check(name, value)
        key = header_key(name)
        pos = self._idx().get(key)
        at = pos[0] if pos else 0
        self._entries.insert(at, [name, value, key, None])
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line (at the first one's position,
        keeping the name as it was spelled there), or append it."""
        self._check(name, value)
        key = header_key(name)
        pos = self._idx().get(key)
        if not pos:
            self._entries.append([name, value, key, None])
        else:
            first = self._entries[pos[0]]
            self._entries[pos[0]] = [first[0], value, key, None]
            for i in reversed(pos[1:]):
                del self._entries[i]
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; returns how many were removed."""
        pos = self._idx().get(header_key(name))
        if not pos:
            return 0
        for i in reversed(pos):
            del self._entries[i]
        self._changed()
        return len(pos)

    def remove_first(self, name: str) -> str | None:
        """Pop the first value of ``name``: a whole line, or the first element of a
        comma-joined list line (Route on loose routing §16.4, Via on responses §16.7).
        Returns the removed value, ``None`` when absent."""
        key = header_key(name)
        pos = self._idx().get(key)
        if not pos:
            return None
        i = pos[0]
        entry = self._entries[i]
        value: str = entry[1]
        if key in LIST_HEADERS and "," in value:
            parts = split_commas(value)
            if len(parts) > 1:
                self._entries[i] = [entry[0], ", ".join(parts[1:]), key, None]
                self._changed()
                return parts[0]
        del self._entries[i]
        self._changed()
        return value

    def copy(self) -> Headers:
        return Headers._from_parsed([list(e) for e in self._entries])

    # -- serialisation --------------------------------------------------------
    def lines(self) -> list[str]:
        """Header field lines, original text for untouched ones."""
        return [e[3] if e[3] is not None else f"{e[0]}: {e[1]}" for e in self._entries]


# --- Via (RFC 3261 §20.42, §18.2.1, RFC 3581) ----------------------------------------

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
CSEQ_MAX = 2**31 - 1  # §8.1.1.5: the sequence number MUST be less than 2**31


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: 4711 INVITE`` — sequence number and method (case-sensitive)."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"bad CSeq {text!r}")
        digits = m.group(1).lstrip("0") or "0"
        if len(digits) > 10 or int(digits) > CSEQ_MAX:
            raise SipParseError(f"CSeq number too large in {text!r}")
        return cls(int(digits), m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
