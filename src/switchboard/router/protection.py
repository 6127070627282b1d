"""Source-address protection: the IP allow-list (ACL) and pike-style flood detection.

Pure: ``now`` is passed in. What it does and why: docs/router.md, "Flood detection".

Flood detection differs from Kamailio's pike tree on purpose:
the limit is exactly ``reqs_density_per_unit`` per ``sampling_time_unit`` per source IP
(not "between x and 3x"), the ban lasts ``ban_seconds`` (an explicit ban time, like the
``ipban`` htable of the default kamailio.cfg), allow-listed sources are never counted,
and memory is bounded: a flood of spoofed sources can only evict idle counters, never a
ban, and the tables never exceed ``max_sources`` entries each.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# How many times the density a banned source may send in one unit before its requests
# are dropped silently instead of answered 503 (issue 3 item 5).
DROP_FACTOR = 10
# Cached per-address decisions of the allow-lists (bounded).
_CACHE_MAX = 4096


class SourceKey:
    """What a source address counts as in pike and the authentication bans: an IPv4
    address itself, an IPv6 address by its ``/prefix`` network (default /64: one
    attacker holds a whole /64 and can take a new address for every request; 128 = each
    address alone). Bounded cache: the hot path pays the ipaddress work once per source."""

    def __init__(self, ipv6_prefix: int = 64) -> None:
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"security.ipv6_prefix: {ipv6_prefix} is not 1..128")
        self.prefix = ipv6_prefix
        self._cache: dict[str, str] = {}

    def __call__(self, ip: str) -> str:
        if ":" not in ip or self.prefix == 128:
            return ip
        key = self._cache.get(ip)
        if key is None:
            try:
                net = ipaddress.IPv6Network((ip.strip("[]"), self.prefix), strict=False)
            except ValueError:
                key = ip
            else:
                mapped = net.network_address.ipv4_mapped
                key = ip.strip("[]") if mapped is not None else str(net)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ip] = key
        return key


def parse_networks(entries: Iterable[str], *, key: str) -> tuple[Network, ...]:
    """``["10.0.0.1", "192.0.2.0/24", "::1"]`` → networks; errors name the key and entry."""
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{key}: {entry!r} is not an IP address or CIDR network") from None
    return tuple(nets)


class AddressList:
    """Membership test for IPs against a list of networks, with a bounded cache."""

    def __init__(self, entries: Iterable[str], *, key: str = "allow") -> None:
        self.networks = parse_networks(entries, key=key)
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            result = False
        else:
            result = any(addr in net for net in self.networks)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ip] = result
        return result


class Acl(AddressList):
    """[acl] allow: sources that may start dialogs; others get 403 Forbidden."""

    def allows(self, ip: str) -> bool:
        return ip in self


class Verdict(Enum):
    ALLOW = "allow"
    REJECT = "reject"  # answer 503 Too Many Requests with Retry-After
    DROP = "drop"  # discard silently


@dataclass(frozen=True)
class PikeResult:
    verdict: Verdict
    newly_blocked: bool = False  # log one WARNING "RATE LIMIT: <ip>" for this one
    retry_after: int = 0


_ALLOW = PikeResult(Verdict.ALLOW)


class Pike:
    """Per-source request density over fixed windows of ``sampling_time_unit`` seconds."""

    def __init__(
        self,
        *,
        sampling_time_unit: float = 2.0,
        reqs_density_per_unit: int = 30,
        ban_seconds: float = 300.0,
        allow: Iterable[str] = (),
        max_sources: int = 100_000,
        ipv6_prefix: int = 64,
    ) -> None:
        self.source = SourceKey(ipv6_prefix)  # IPv6 sources counted by their /64
        self.unit = float(sampling_time_unit)
        self.density = int(reqs_density_per_unit)
        self.ban_seconds = float(ban_seconds)
        self.allow = AddressList(allow, key="pike.allow")
        self.max_sources = max_sources
        # ip -> [window_start, count]; insertion order ≈ age, so eviction scans the oldest.
        self._counters: dict[str, list[float]] = {}
        # ip -> ban expiry
        self._bans: dict[str, float] = {}
        self.blocks_total = 0
        self.rejected_total = 0
        self.dropped_total = 0

    def check(self, ip: str, now: float) -> PikeResult:
        """Count one request from ``ip`` and say what to do with it."""
        addr = ip
        if ":" in ip:
            ip = self.source(ip)
        c = self._counters.get(ip)
        if c is None:
            if addr in self.allow:
                return _ALLOW
            if len(self._counters) >= self.max_sources:
                self._evict(now)
            c = self._counters[ip] = [now, 0.0]
        elif now - c[0] >= self.unit:
            c[0] = now
            c[1] = 0.0
        c[1] += 1
        count = c[1]
        until = self._bans.get(ip)
        if until is not None:
            if now < until:
                return self._refuse(count, until, now, newly=False)
            del self._bans[ip]
        if count <= self.density:
            return _ALLOW
        if addr in self.allow:  # counted only until proven allow-listed (cached lookup)
            del self._counters[ip]
            return _ALLOW
        until = now + self.ban_seconds
        if len(self._bans) >= self.max_sources:
            self._bans = {k: v for k, v in self._bans.items() if v > now}
            if len(self._bans) >= self.max_sources:
                # Keep the newest bans; an old ban falling out only costs a re-detection.
                for k in list(self._bans)[: len(self._bans) // 2]:
                    del self._bans[k]
        self._bans[ip] = until
        self.blocks_total += 1
        return self._refuse(count, until, now, newly=True)

    def _refuse(self, count: float, until: float, now: float, *, newly: bool) -> PikeResult:
        if count > DROP_FACTOR * self.density:
            self.dropped_total += 1
            return PikeResult(Verdict.DROP, newly)
        self.rejected_total += 1
        return PikeResult(Verdict.REJECT, newly, max(1, int(until - now + 0.999)))

    def _evict(self, now: float) -> None:
        # Drop counters idle for more than a unit (they carry no information), starting
        # with the oldest; if the table is still full (a flood of fresh spoofed sources),
        # drop the oldest quarter. Bans live in their own table and are never evicted here.
        cutoff = now - self.unit
        stale = [ip for ip, c in self._counters.items() if c[0] <= cutoff and ip not in self._bans]
        for ip in stale:
            del self._counters[ip]
        if len(self._counters) >= self.max_sources:
            for ip in list(self._counters)[: max(1, self.max_sources // 4)]:
                del self._counters[ip]

    def is_banned(self, ip: str, now: float) -> bool:
        until = self._bans.get(self.source(ip))
        return until is not None and now < until

    @property
    def tracked(self) -> int:
        return len(self._counters) + len(self._bans)

    def banned(self, now: float) -> list[str]:
        return [ip for ip, until in self._bans.items() if until > now]


# Known SIP scanners' User-Agent values (substrings, case-insensitive): SIPVicious
# (svmap/svwar/svcrack send "friendly-scanner" or "sipvicious"), sipcli, VaxSIPUserAgent,
# sip-scan, SIVuS, iWar, sundayddr and smap.
DEFAULT_SCANNERS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sip-scan",
    "SIVuS",
    "iWar",
    "sundayddr",
    "smap",
)


class ScannerFilter:
    """Requests whose User-Agent contains one of ``patterns`` (case-insensitive).

    :meth:`match` takes the raw message: one compiled search over the header block, so the
    router pays no header parsing for it."""

    def __init__(self, patterns: Iterable[str]) -> None:
        words = [p for p in patterns if p]
        self.patterns = tuple(words)
        self._re = (
            re.compile(
                rb"^(?:user-agent|server)[ \t]*:[^\r\n]*(?:"
                + b"|".join(re.escape(w.encode()) for w in words)
                + rb")",
                re.IGNORECASE | re.MULTILINE,
            )
            if words
            else None
        )

    def match(self, data: bytes) -> bool:
        if self._re is None:
            return False
        head = data.find(b"\r\n\r\n")
        end = head if head >= 0 else len(data)
        # The search only matches at a line starting "user-agent" or "server" (any
        # case): without one, skip it. A case-insensitive search from ``^`` at every
        # position of the head cost ~100,000 instructions per request (callgrind).
        low = data[:end].lower()
        if not (
            low.startswith((b"user-agent", b"server"))
            or low.find(b"\nuser-agent") >= 0
            or low.find(b"\nserver") >= 0
        ):
            return False
        return self._re.search(data, 0, end) is not None


@dataclass(frozen=True)
class Ban:
    """A source that just got banned (for the one log line per ban)."""

    ip: str
    failures: int
    window: float
    seconds: float
    network: str = ""  # an IPv6 source: the network banned with it ("" = the address)

    def log_line(self) -> str:
        """fail2ban-friendly: a fixed prefix, the bare address, nothing variable before it
        (``failregex = SECURITY BAN: source <HOST> ``); an IPv6 source's banned network
        follows at the end."""
        line = (
            f"SECURITY BAN: source {self.ip} banned for {self.seconds:g} s after "
            f"{self.failures} authentication failures in {self.window:g} s"
        )
        return f"{line} (network {self.network})" if self.network else line


class AuthBans:
    """Authentication failures per source address; more than ``limit`` within ``window``
    seconds bans the source for ``ban_seconds`` (its requests are dropped silently).

    Like fail2ban's maxretry/findtime/bantime, in the process itself. Sources in ``allow``
    are never banned. Memory is bounded by ``max_sources`` per table."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window: float = 60.0,
        ban_seconds: float = 600.0,
        allow: Iterable[str] = (),
        max_sources: int = 100_000,
        ipv6_prefix: int = 64,
    ) -> None:
        self.source = SourceKey(ipv6_prefix)  # IPv6 sources counted by their /64
        self.limit = limit
        self.window = float(window)
        self.ban_seconds = float(ban_seconds)
        self.allow = AddressList(allow, key="security.auth_ban_allow")
        self.max_sources = max_sources
        self._failures: dict[str, list[float]] = {}  # ip -> failure times (last limit+1)
        self._bans: dict[str, float] = {}  # ip -> ban expiry
        self.failures_total = 0
        self.bans_total = 0
        self.dropped_total = 0

    def failed(self, ip: str, now: float) -> Ban | None:
        """Count one authentication failure of ``ip``; a :class:`Ban` when it is banned now."""
        self.failures_total += 1
        if ip in self.allow:
            return None
        addr, ip = ip.strip("[]"), self.source(ip)
        times = self._failures.get(ip)
        if times is None:
            if len(self._failures) >= self.max_sources:
                cutoff = now - self.window
                self._failures = {k: v for k, v in self._failures.items() if v[-1] > cutoff}
                if len(self._failures) >= self.max_sources:
                    self._failures.clear()
            times = self._failures[ip] = []
        times.append(now)
        cutoff = now - self.window
        while times and times[0] <= cutoff:
            times.pop(0)
        if len(times) <= self.limit or self.ban_seconds <= 0:
            del times[: max(0, len(times) - self.limit - 1)]
            return None
        del self._failures[ip]
        if len(self._bans) >= self.max_sources:
            self._bans = {k: v for k, v in self._bans.items() if v > now}
        self._bans[ip] = now + self.ban_seconds
        self.bans_total += 1
        return Ban(addr, len(times), self.window, self.ban_seconds, "" if ip == addr else ip)

    @property
    def active(self) -> bool:
        """Any ban in the table (the hot path checks this before a lookup)."""
        return bool(self._bans)

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` (or its IPv6 network) is banned (counted as a dropped request)."""
        if ":" in ip:
            ip = self.source(ip)
        until = self._bans.get(ip)
        if until is None:
            return False
        if now < until:
            self.dropped_total += 1
            return True
        del self._bans[ip]
        return False

    def banned(self, now: float) -> list[str]:
        return [ip for ip, until in self._bans.items() if until > now]
