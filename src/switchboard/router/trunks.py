"""Carrier trunks at the edge: who sent a call, and may it come in.

A trunk is a carrier interconnect (``[trunks.NAME]``, docs/router.md "Trunks"): the
source addresses it sends from, its direction, its limits (calls per second, concurrent
calls), how its numbers are normalised to E.164 (ITU-T E.164: a country code and a
national number, at most 15 digits), its tech prefix, caller-ID policy, the billing
account it bills to and the destinations it may reach.

Pure (``now`` is passed in): the proxy asks :meth:`TrunkTable.identify` for the trunk of
a new request's source, :meth:`TrunkTable.admit` for a new INVITE (normalised numbers or
the SIP refusal to answer), and calls :meth:`TrunkState.release` when the call ends.

Decisions, each answered with the response a carrier expects:

* no trunk (and not in ``[acl] allow``): 403 Forbidden (the proxy's ACL answer);
* a trunk that only receives our calls (``direction = "outbound"``): 403;
* tech prefix missing: 403; called number that does not normalise: 484 Address
  Incomplete when it is too short to be an E.164 number, 404 Not Found otherwise;
  destination outside ``allowed_prefixes``: 403; anonymous caller on a trunk with
  ``caller_id = "reject_anonymous"``: 433 Anonymity Disallowed (RFC 5079);
* ``max_calls`` reached or ``cps`` exceeded: 503 Service Unavailable + Retry-After (RFC
  3261 §21.5.4: the caller retries later, on another route or after the delay).

Limits are exact: ``cps`` is a sliding one-second window over admitted calls (a limit of
50 admits exactly 50 calls in any second; refused attempts use no budget), ``max_calls``
counts calls from admission until their INVITE fails or their dialog ends.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from switchboard.router.stir import AttestationRules, parse_rules

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

WINDOW = 1.0  # seconds: the cps window
E164_MIN_DIGITS = 7  # shorter is "incomplete" (484); E.164 numbers run up to 15 digits
E164_MAX_DIGITS = 15
DIRECTIONS = ("inbound", "outbound", "both")
CALLER_ID_POLICIES = ("pass", "replace", "reject_anonymous")
ACL_TRUNK = "acl"  # the trunk formed by [acl] allow addresses that match no [trunks.*]
_ANONYMOUS = frozenset({"", "anonymous", "unknown", "restricted", "unavailable", "private"})
_CACHE_MAX = 8192
_TRANSPORTS = ("udp", "tcp", "tls")

# Rejection reasons (metric label values) and the SIP answer for each.
REJECTIONS: dict[str, tuple[int, bytes]] = {
    "direction": (403, b"Trunk Does Not Send Calls"),
    "tech_prefix": (403, b"Tech Prefix Required"),
    "forbidden_destination": (403, b"Destination Not Allowed"),
    "anonymous": (433, b"Anonymity Disallowed"),
    "incomplete_number": (484, b"Address Incomplete"),
    "invalid_number": (404, b"Not Found"),
    "max_calls": (503, b"Trunk Capacity Exceeded"),
    "cps": (503, b"Trunk CPS Exceeded"),
    "tls_client": (403, b"Client Certificate Required"),
}


class TrunkConfigError(ValueError):
    """A trunk definition cannot be used; the message names the key (``trunks.NAME.key``)."""


class TrunkSettings(Protocol):
    """What a ``[trunks.NAME]`` section provides (config.TrunkSection)."""

    sources: list[str]
    direction: str
    cps: float
    max_calls: int
    retry_after: int
    called_strip: int
    called_prefix: str
    called_regex: str
    called_replace: str
    calling_strip: int
    calling_prefix: str
    calling_regex: str
    calling_replace: str
    tech_prefix: str
    caller_id: str
    caller_id_number: str
    account: str
    allowed_prefixes: list[str]
    tls_client_names: list[str]
    stir_sign: bool
    stir_attestation: list[str]
    country: str


@dataclass(frozen=True, slots=True)
class Source:
    """One source entry: a network, optionally one port and one transport."""

    network: Network
    port: int = 0  # 0: any
    transport: str = ""  # "": any

    def matches(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int,
                transport: str) -> bool:  # fmt: skip
        return (
            addr in self.network
            and (not self.port or self.port == port)
            and (not self.transport or self.transport == transport)
        )

    def overlaps(self, other: Source) -> bool:
        return (
            self.network.version == other.network.version
            and self.network.overlaps(other.network)
            and (not self.port or not other.port or self.port == other.port)
            and (not self.transport or not other.transport or self.transport == other.transport)
        )

    def __str__(self) -> str:
        text = str(self.network)
        if self.port:
            text = f"[{text}]:{self.port}" if self.network.version == 6 else f"{text}:{self.port}"
        return f"{self.transport}:{text}" if self.transport else text


def parse_source(entry: str, *, key: str) -> Source:
    """``"192.0.2.10"``, ``"192.0.2.0/24"``, ``"192.0.2.10:5060"``, ``"udp:192.0.2.10:5060"``,
    ``"tcp:[2001:db8::1]:5061"``, ``"2001:db8::/32"``."""
    text = entry.strip()
    transport = ""
    head, sep, rest = text.partition(":")
    if sep and head.lower() in _TRANSPORTS:
        transport, text = head.lower(), rest
    port = 0
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        if tail:
            if not tail.startswith(":") or not tail[1:].isdigit():
                raise TrunkConfigError(f"{key}: {entry!r}: expected [IPv6]:PORT")
            port = int(tail[1:])
        text = host
    elif text.count(":") == 1:
        text, _, p = text.partition(":")
        if not p.isdigit():
            raise TrunkConfigError(f"{key}: {entry!r}: the port is not a number")
        port = int(p)
    if port > 65535:
        raise TrunkConfigError(f"{key}: {entry!r}: port out of range")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise TrunkConfigError(f"{key}: {entry!r} is not an IP address or CIDR network") from None
    return Source(network, port, transport)


_GROUP_REF = re.compile(r"\\(\d+)|\\g<(\w+)>")


def _template(replace: str, regex: re.Pattern[str]) -> str | None:
    r"""``replace`` (``\1``, ``\g<1>``, ``\g<name>``) as a str.format() pattern over
    ``(group 0, group 1, ...)``, or None when it holds other escapes (then Match.expand).
    Match.expand() parses its template on every call (in Python 3.11: most of an
    admission's CPU, measured); format() with the groups is one C call."""
    out = []
    pos = 0
    for m in _GROUP_REF.finditer(replace):
        literal = replace[pos : m.start()]
        if "\\" in literal:
            return None
        ref = m.group(1) or m.group(2)
        index = int(ref) if ref.isdigit() else regex.groupindex[ref]
        out.append(literal.replace("{", "{{").replace("}", "}}") + "{" + str(index) + "}")
        pos = m.end()
    tail = replace[pos:]
    if "\\" in tail:
        return None
    return "".join(out) + tail.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True, slots=True)
class NumberRule:
    """strip N leading characters, prepend ``prefix``, then ``regex`` → ``replace``."""

    strip: int = 0
    prefix: str = ""
    regex: re.Pattern[str] | None = None
    replace: str = ""
    fmt: str | None = None  # ``replace`` for str.format (see _template); None: expand()

    def apply(self, number: str) -> str | None:
        """The rewritten number, or None when ``regex`` is set and does not match."""
        n = number[self.strip :] if self.strip else number
        if self.prefix:
            n = self.prefix + n
        if self.regex is not None:
            m = self.regex.fullmatch(n)
            if m is None:
                return None
            if not self.replace:
                return n
            if self.fmt is not None:  # unmatched groups are "" (as expand() makes them)
                return self.fmt.format(n, *m.groups(""))
            return m.expand(self.replace)
        return n


def _rule(t: TrunkSettings, side: str, key: str) -> NumberRule:
    pattern = getattr(t, f"{side}_regex")
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise TrunkConfigError(
                f"{key}.{side}_regex: {pattern!r} does not compile: {exc}"
            ) from None
        replace = getattr(t, f"{side}_replace")
        for num, name in re.findall(r"\\(\d+)|\\g<(\w+)>", replace):
            ref = num or name
            ok = int(ref) <= regex.groups if ref.isdigit() else ref in regex.groupindex
            if not ok:
                raise TrunkConfigError(
                    f"{key}.{side}_replace: {replace!r} refers to group {ref}, which "
                    f"{side}_regex does not have"
                )
    replace = getattr(t, f"{side}_replace")
    fmt = _template(replace, regex) if regex is not None and replace else None
    return NumberRule(getattr(t, f"{side}_strip"), getattr(t, f"{side}_prefix"), regex,
                      replace, fmt)  # fmt: skip


def e164(number: str) -> str | bool | None:
    """``+CCNNN…`` for a number of 7–15 digits (a leading ``+`` allowed); False when it is
    digits but too short (incomplete), None when it is not a number at all."""
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit() or len(digits) > E164_MAX_DIGITS or digits[0] == "0":
        return None
    if len(digits) < E164_MIN_DIGITS:
        return False
    return "+" + digits


@dataclass
class TrunkStats:
    """Counters of one trunk; kept across reloads while the trunk exists."""

    calls: dict[str, int] = field(default_factory=dict)  # by disposition
    rejected: dict[str, int] = field(default_factory=dict)  # by reason
    admitted: int = 0
    pdd_sum: float = 0.0
    pdd_count: int = 0
    pdd_buckets: list[int] = field(default_factory=list)


# Upper bounds (seconds) of the per-trunk PDD histogram: the media node's PDD buckets
# (3 s perceived delay and 7 s carrier threshold are boundaries), kept equal by a test.
PDD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0)


class TrunkState:
    """One trunk: its settings and its live state (concurrent calls, the cps window)."""

    __slots__ = (
        "_window",
        "account",
        "active",
        "allowed",
        "attest",
        "called",
        "caller_id",
        "caller_id_number",
        "calling",
        "country",
        "cps",
        "direction",
        "header",
        "max_calls",
        "name",
        "retry_after",
        "settings",
        "sources",
        "stats",
        "tech_prefix",
        "tls_names",
    )

    def __init__(self, name: str, t: TrunkSettings | None, sources: tuple[Source, ...],
                 key: str) -> None:  # fmt: skip
        self.name = name
        self.settings = t
        self.sources = sources
        self.active = 0
        self.stats = TrunkStats(pdd_buckets=[0] * (len(PDD_BUCKETS) + 1))
        self._window: deque[float] = deque()
        if t is None:  # the [acl] trunk: no limits, numbers as they come
            self.direction, self.cps, self.max_calls, self.retry_after = "both", 0.0, 0, 5
            self.called = self.calling = NumberRule()
            self.tech_prefix = self.account = self.caller_id_number = ""
            self.caller_id = "pass"
            self.allowed: tuple[str, ...] = ()
            self.attest: AttestationRules | None = None
            self.tls_names: frozenset[str] = frozenset()
            self.country = ""
        else:
            self.direction = t.direction
            self.cps = float(t.cps)
            self.max_calls = int(t.max_calls)
            self.retry_after = int(t.retry_after)
            self.called = _rule(t, "called", key)
            self.calling = _rule(t, "calling", key)
            self.tech_prefix = t.tech_prefix
            self.caller_id = t.caller_id
            self.caller_id_number = t.caller_id_number
            self.account = t.account
            self.allowed = tuple(p.lstrip("+") for p in t.allowed_prefixes)
            self.tls_names = frozenset(t.tls_client_names)
            # STIR/SHAKEN signing of calls we send on this trunk (docs/compliance.md)
            try:
                rules = parse_rules(t.stir_attestation, key=f"{key}.stir_attestation")
            except ValueError as exc:
                raise TrunkConfigError(str(exc)) from None
            self.attest = rules if t.stir_sign else None
            self.country = t.country.upper()
        self.header = b"X-Switchboard-Trunk: " + name.encode()
        if self.account:
            self.header += b"\r\nX-Switchboard-Account: " + self.account.encode()

    def cps_now(self, now: float) -> int:
        """Calls admitted in the last second."""
        self._expire(now)
        return len(self._window)

    def _expire(self, now: float) -> None:
        w = self._window
        horizon = now - WINDOW
        while w and w[0] <= horizon:
            w.popleft()

    def reject(self, reason: str) -> tuple[int, bytes, int]:
        r = self.stats.rejected
        r[reason] = r.get(reason, 0) + 1
        status, phrase = REJECTIONS[reason]
        return status, phrase, self.retry_after if status == 503 else 0

    def tls_allows(self, names: frozenset[str] | None) -> bool:
        """Mutual TLS per trunk: does a connection whose verified client certificate
        names ``names`` (None: no certificate, or not TLS) carry this trunk's calls?"""
        return not self.tls_names or (names is not None and not self.tls_names.isdisjoint(names))

    def release(self) -> None:
        """A call admitted on this trunk ended (its INVITE failed, or its dialog ended)."""
        if self.active > 0:
            self.active -= 1

    def count(self, disposition: str, pdd: float | None = None) -> None:
        """A call's outcome: ``answered``, ``busy``, ``no_answer``, ``cancelled`` or
        ``failed`` (the final response to its INVITE), with its post-dial delay."""
        c = self.stats.calls
        c[disposition] = c.get(disposition, 0) + 1
        if pdd is not None:
            self.observe_pdd(pdd)

    def observe_pdd(self, pdd: float) -> None:
        """Post-dial delay: INVITE → first ringing/progress, or → final response."""
        s = self.stats
        s.pdd_sum += pdd
        s.pdd_count += 1
        s.pdd_buckets[bisect.bisect_left(PDD_BUCKETS, pdd)] += 1  # le: bound included

    def snapshot(self, now: float) -> dict[str, Any]:
        s = self.stats
        return {
            "name": self.name,
            "direction": self.direction,
            "sources": [str(x) for x in self.sources],
            "cps": self.cps,
            "max_calls": self.max_calls,
            "account": self.account,
            "active_calls": self.active,
            "calls_per_second": self.cps_now(now),
            "admitted": s.admitted,
            "calls": dict(s.calls),
            "rejected": dict(s.rejected),
            "pdd_avg_ms": round(1000 * s.pdd_sum / s.pdd_count) if s.pdd_count else None,
        }


class Admission:
    """A new INVITE's verdict: ``status`` 0 = admitted (then ``called``/``calling`` are
    the numbers to forward, None = unchanged), else the refusal to answer. A plain
    slotted class: one is made per admitted call (a frozen dataclass costs ~1 µs more)."""

    __slots__ = ("called", "calling", "emergency", "reason", "retry_after", "status")

    def __init__(self, status: int = 0, reason: bytes = b"", retry_after: int = 0,
                 called: str | None = None, calling: str | None = None,
                 emergency: str = "") -> None:  # fmt: skip
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.called = called
        self.calling = calling
        self.emergency = emergency  # the emergency number dialled (docs/compliance.md)


ADMITTED = Admission()


def disposition(status: int) -> str:
    """A final response's disposition (the CDR's vocabulary)."""
    if 200 <= status < 300:
        return "answered"
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if status == 487:
        return "cancelled"
    return "failed"


class TrunkTable:
    """Every trunk, built from ``[trunks.*]`` and ``[acl] allow``; validated as a whole."""

    def __init__(self, trunks: Mapping[str, TrunkSettings], acl: Iterable[str] = (),
                 *, previous: TrunkTable | None = None) -> None:  # fmt: skip
        self.trunks: dict[str, TrunkState] = {}
        entries: list[tuple[Source, TrunkState]] = []
        for name, t in trunks.items():
            key = f"trunks.{name}"
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == ACL_TRUNK:
                raise TrunkConfigError(f"{key}: a trunk name is letters, digits, '_', '.', '-' "
                                       f"(and not {ACL_TRUNK!r}, the [acl] trunk)")  # fmt: skip
            if t.direction not in DIRECTIONS:
                raise TrunkConfigError(f"{key}.direction: one of {', '.join(DIRECTIONS)}")
            if t.caller_id not in CALLER_ID_POLICIES:
                raise TrunkConfigError(f"{key}.caller_id: one of {', '.join(CALLER_ID_POLICIES)}")
            if t.caller_id == "replace" and not t.caller_id_number:
                raise TrunkConfigError(f"{key}.caller_id_number: needed with caller_id = 'replace'")
            if t.direction != "outbound" and not t.sources:
                raise TrunkConfigError(f"{key}.sources: a trunk that sends calls needs sources")
            for p in t.allowed_prefixes:
                if not p.lstrip("+").isdigit():
                    raise TrunkConfigError(f"{key}.allowed_prefixes: {p!r} is not a number prefix")
            sources = tuple(parse_source(s, key=f"{key}.sources") for s in t.sources)
            state = TrunkState(name, t, sources, key)
            self.trunks[name] = state
            for src in sources:
                for other_src, other in entries:
                    if other is not state and src.overlaps(other_src):
                        raise TrunkConfigError(
                            f"{key}.sources: {src} overlaps trunks.{other.name}.sources "
                            f"{other_src}: a call's trunk must be unambiguous"
                        )
                entries.append((src, state))
        acl_sources = tuple(parse_source(s, key="acl.allow") for s in acl)
        if acl_sources:
            self.trunks[ACL_TRUNK] = TrunkState(ACL_TRUNK, None, acl_sources, "acl")
        # Most specific first: a port- or transport-bound entry, then longer prefixes; the
        # [acl] trunk last (explicit trunks win over the allow-list).
        entries.sort(key=lambda e: (-(bool(e[0].port) + bool(e[0].transport)),
                                    -e[0].network.prefixlen))  # fmt: skip
        self._entries = entries + [(s, self.trunks[ACL_TRUNK]) for s in acl_sources]
        self._cache: dict[tuple[str, int, str], TrunkState | None] = {}
        self._known: dict[str, bool] = {}
        if previous is not None:
            # Counters and live calls survive a reload for every trunk that still exists.
            for name, state in self.trunks.items():
                old = previous.trunks.get(name)
                if old is not None:
                    state.stats = old.stats
                    state.active = old.active
                    state._window = old._window

    def identify(self, ip: str, port: int, transport: str) -> TrunkState | None:
        """The trunk of a request from ``ip:port`` over ``transport`` (udp/tcp/tls)."""
        k = (ip, port, transport)
        try:
            return self._cache[k]
        except KeyError:
            pass
        found = None
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            addr = None
        if addr is not None:
            for src, state in self._entries:
                if src.matches(addr, port, transport):
                    found = state
                    break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[k] = found
        return found

    def known(self, ip: str) -> bool:
        """Is ``ip`` a source of some trunk (any port, any transport)? Pike skips them."""
        hit = self._known.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                hit = False
            else:
                hit = any(addr in src.network for src, _ in self._entries)
            if len(self._known) >= _CACHE_MAX:
                self._known.clear()
            self._known[ip] = hit
        return hit

    def admit(self, trunk: TrunkState, called: str, calling: str, now: float) -> Admission:
        """Check and count a new INVITE on ``trunk``: numbers, policy, limits."""
        if trunk.direction == "outbound":
            return Admission(*trunk.reject("direction"))
        out_called: str | None = None
        out_calling: str | None = None
        if trunk.settings is not None:
            number = called
            if trunk.tech_prefix:
                if not number.startswith(trunk.tech_prefix):
                    return Admission(*trunk.reject("tech_prefix"))
                number = number[len(trunk.tech_prefix) :]
            rewritten = trunk.called.apply(number)
            normal = e164(rewritten) if rewritten is not None else None
            if normal is None:
                return Admission(*trunk.reject("invalid_number"))
            if normal is False:
                return Admission(*trunk.reject("incomplete_number"))
            assert isinstance(normal, str)
            if trunk.allowed and not normal[1:].startswith(trunk.allowed):
                return Admission(*trunk.reject("forbidden_destination"))
            out_called = normal
            if trunk.caller_id == "replace":
                out_calling = trunk.caller_id_number
            elif trunk.caller_id == "reject_anonymous" and calling.lower() in _ANONYMOUS:
                return Admission(*trunk.reject("anonymous"))
            if out_calling is None and calling.lower() not in _ANONYMOUS:
                c = trunk.calling.apply(calling)
                n = e164(c) if c is not None else None
                out_calling = n if isinstance(n, str) else None  # else: as it came
        if trunk.max_calls and trunk.active >= trunk.max_calls:
            return Admission(*trunk.reject("max_calls"))
        # The window is kept on every trunk: it is the cps limit and the calls/s gauge.
        trunk._expire(now)
        if trunk.cps and len(trunk._window) >= trunk.cps:
            return Admission(*trunk.reject("cps"))
        trunk._window.append(now)
        trunk.active += 1
        trunk.stats.admitted += 1
        if out_called is None and out_calling is None:
            return ADMITTED
        return Admission(called=out_called, calling=out_calling)

    def admit_emergency(self, trunk: TrunkState, number: str, dialled: str,
                        now: float) -> Admission:  # fmt: skip
        """An emergency call on ``trunk``: admitted whatever the limits and policy, its
        numbers left as they came (the tech prefix removed); counted like any call, so
        the trunk's live count and window stay right."""
        if trunk.cps:
            trunk._expire(now)
            trunk._window.append(now)
        trunk.active += 1
        trunk.stats.admitted += 1
        return Admission(called=number if number != dialled else None, emergency=number)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [t.snapshot(now) for t in self.trunks.values()]
