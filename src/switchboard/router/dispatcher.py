"""Destination sets, selection algorithms and OPTIONS probing (Kamailio dispatcher semantics).

Pure: no sockets, no clock. Time is passed in as ``now`` (seconds, monotonic); the probe
schedule is data (:meth:`Dispatcher.get_timer` / :meth:`Dispatcher.handle_timer`), and the
service that owns the sockets sends the OPTIONS requests this module asks for.

Theory of operation
-------------------
* A destination list comes from the Kamailio list-file format (``setid uri [flags
  [priority [attrs]]]``, Kamailio's dispatcher README) and/or ``[dispatcher]
  destinations`` (same line
  format, one entry per string).
* :meth:`DestinationSet.select` returns the whole failover order for one call: the first
  entry is where the call goes, the rest are tried serially on 408/5xx/timeout (Kamailio's
  ``ds_next_dst`` failover, flags bit 2 on by default). Only *active* and *trying*
  destinations are selectable (a trying destination can still be selected, as in Kamailio).
* When a destination dies its share is spread over the remaining ones rather than dumped
  on the next entry (Kamailio's hash does that: kamailio#2361): algorithm 0 is a
  rendezvous (highest-random-weight) hash of the Call-ID, algorithm 4 rotates over the
  live destinations only, algorithm 9 renormalises the weights of the live destinations,
  algorithm 10 picks the least loaded — by the router's own dialog count, or by what the
  node itself reports (``X-Switchboard-Calls`` on its OPTIONS answers: its live channels,
  calls from other routers included) when that is higher; see :attr:`Destination.load`.
* Probing state machine (Kamailio's ``ds_update_state``): a failed probe moves an
  active destination to *trying*; ``probing_threshold`` consecutive failures make it
  *inactive*; ``inactive_threshold`` consecutive successes make an inactive destination
  active again; one success makes a trying destination active. *Disabled* is set only by
  the operator (drain): never selected, never probed, existing dialogs continue.
* A probe answer proves the box alive only when its code is in ``ping_reply_codes``
  (Kamailio ``ds_ping_reply_codes``; default class 2). Anything else final — a 404, a
  503, a 408 — counts as a failed probe.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

# Per-line flags of the list file (Kamailio's dispatcher README).
FLAG_INACTIVE = 1
FLAG_TRYING = 2
FLAG_DISABLED = 4
FLAG_PROBING = 8
FLAG_NODNS = 16
FLAG_NOPING = 32

ALGORITHMS = {0: "hash Call-ID", 4: "round-robin", 8: "priority", 9: "weight", 10: "call-load"}

# EWMA factor of the probe latency estimate; Kamailio's default ds_latency_estimator_alpha
# is 0.1.
LATENCY_ALPHA = 0.1


class DispatcherError(ValueError):
    """A destination list or destination entry cannot be used; the message says where."""


class DestinationState(StrEnum):
    """Destination states and their ``dispatcher.list`` letters (Kamailio's, ``ds_print_sets``)."""

    ACTIVE = "active"
    TRYING = "trying"
    INACTIVE = "inactive"
    DISABLED = "disabled"

    @property
    def letter(self) -> str:
        return {"active": "A", "trying": "T", "inactive": "I", "disabled": "D"}[self.value]


@dataclass(frozen=True)
class DestinationSpec:
    """One line of a dispatcher list: where to send, and the operator's attributes."""

    setid: int
    uri: str
    flags: int = 0
    priority: int = 0
    attrs: tuple[tuple[str, str], ...] = ()
    transport: str = "udp"
    host: str = ""
    port: int = 5060

    def attr(self, name: str, default: str = "") -> str:
        for key, value in self.attrs:
            if key == name:
                return value
        return default

    @property
    def duid(self) -> str:
        return self.attr("duid") or self.uri

    @property
    def maxload(self) -> int:
        return _int_attr(self, "maxload")

    @property
    def weight(self) -> int:
        return _int_attr(self, "weight")

    @property
    def key(self) -> tuple[int, str]:
        return (self.setid, self.uri)


def _int_attr(spec: DestinationSpec, name: str) -> int:
    raw = spec.attr(name, "0")
    try:
        return int(raw)
    except ValueError:
        raise DispatcherError(f"{spec.uri}: attribute {name}={raw!r} is not an integer") from None


def parse_destination_uri(uri: str) -> tuple[str, str, int]:
    """``sip:host[:port][;transport=tcp]`` → (transport, host, port). RFC 3261 §19.1.1.

    Only what a dispatcher destination needs: scheme sip/sips, an IP or host name, an
    optional port and transport parameter. IPv6 references keep their brackets.
    """
    text = uri.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise DispatcherError(f"{uri!r}: expected a sip: or sips: URI")
    hostport, _, params = rest.partition(";")
    if "@" in hostport:
        hostport = hostport.rpartition("@")[2]
    transport = "tls" if scheme.lower() == "sips" else "udp"
    for param in params.split(";") if params else ():
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport":
            transport = value.strip().lower()
    if transport not in ("udp", "tcp", "tls"):
        raise DispatcherError(f"{uri!r}: transport {transport!r} is not supported (udp, tcp, tls)")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise DispatcherError(f"{uri!r}: unterminated IPv6 reference")
        host, portpart = hostport[: end + 1], hostport[end + 1 :]
        port_text = portpart[1:] if portpart.startswith(":") else ""
        if portpart and not portpart.startswith(":"):
            raise DispatcherError(f"{uri!r}: bad host:port")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise DispatcherError(f"{uri!r}: no host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DispatcherError(f"{uri!r}: bad port {port_text!r}")
        port = int(port_text)
    else:
        port = 5061 if transport == "tls" else 5060  # §19.1.2 default ports
    return transport, host, port


def parse_line(line: str, *, where: str = "") -> DestinationSpec | None:
    """One list-file line (Kamailio's format); ``None`` for blank lines and ``#`` comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(None, 4)
    prefix = f"{where}: " if where else ""
    if len(parts) < 2:
        raise DispatcherError(f"{prefix}expected 'setid uri [flags [priority [attrs]]]'")
    try:
        setid = int(parts[0])
    except ValueError:
        raise DispatcherError(f"{prefix}setid {parts[0]!r} is not an integer") from None
    try:
        flags = int(parts[2], 0) if len(parts) > 2 else 0
    except ValueError:
        try:
            flags = int(parts[2], 16)
        except ValueError:
            raise DispatcherError(f"{prefix}flags {parts[2]!r} is not a number") from None
    try:
        priority = int(parts[3]) if len(parts) > 3 else 0
    except ValueError:
        raise DispatcherError(f"{prefix}priority {parts[3]!r} is not an integer") from None
    attrs: list[tuple[str, str]] = []
    if len(parts) > 4:
        for item in parts[4].split(";"):
            item = item.strip()
            if not item:
                continue
            name, _, value = item.partition("=")
            attrs.append((name.strip().lower(), value.strip()))
    try:
        transport, host, port = parse_destination_uri(parts[1])
    except DispatcherError as exc:
        raise DispatcherError(f"{prefix}{exc}") from None
    spec = DestinationSpec(setid, parts[1], flags, priority, tuple(attrs), transport, host, port)
    try:
        spec.maxload  # noqa: B018 - validate numeric attributes now, not at call time
        spec.weight  # noqa: B018
    except DispatcherError as exc:
        raise DispatcherError(f"{prefix}{exc}") from None
    return spec


def parse_list(text: str, *, name: str = "dispatcher.list") -> list[DestinationSpec]:
    """Parse a whole Kamailio dispatcher list file; errors name the line."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        spec = parse_line(line, where=f"{name}:{number}")
        if spec is not None:
            specs.append(spec)
    return specs


@dataclass
class Destination:
    """A destination with its run-time state (probing counters, load, latency)."""

    spec: DestinationSpec
    state: DestinationState = DestinationState.ACTIVE
    probing: bool = True
    failures: int = 0  # consecutive failed probes / timed-out calls
    successes: int = 0  # consecutive successful probes while inactive
    latency_ms: float | None = None  # EWMA of OPTIONS round-trip time
    timeouts: int = 0  # total probes or calls that got no answer
    active_calls: int = 0  # dialogs (and pending INVITEs) on this destination
    reported_calls: int | None = None  # X-Switchboard-Calls of the last probe answer
    own_at_report: int = 0  # active_calls when that answer arrived
    weight: int = 0  # normalised alg-9 weight
    _swrr: int = field(default=0, repr=False)  # smooth weighted round-robin credit
    _seed: int = field(default=0, repr=False)

    @property
    def uri(self) -> str:
        return self.spec.uri

    @property
    def address(self) -> tuple[str, int]:
        return (self.spec.host, self.spec.port)

    @property
    def transport(self) -> str:
        return self.spec.transport

    @property
    def selectable(self) -> bool:
        return self.state is DestinationState.ACTIVE or self.state is DestinationState.TRYING

    @property
    def flags_letters(self) -> str:
        return self.state.letter + ("P" if self.probing else "X")

    @property
    def up(self) -> bool:
        return self.selectable

    @property
    def load(self) -> int:
        """Call load for algorithm 10 and ``maxload``: the router's own count, or the
        node's last report plus the router's net change since it (calls the router
        sent or ended after the probe), whichever is higher. The report covers calls
        that did not come through this router (other routers, ESL originates); the
        router's count is exact between probes and covers a node that does not report."""
        if self.reported_calls is None:
            return self.active_calls
        return max(self.active_calls, self.reported_calls + self.active_calls - self.own_at_report)


def _initial_state(flags: int) -> DestinationState:
    if flags & FLAG_DISABLED:
        return DestinationState.DISABLED
    if flags & FLAG_INACTIVE:
        return DestinationState.INACTIVE
    if flags & FLAG_TRYING:
        return DestinationState.TRYING
    return DestinationState.ACTIVE


def _mix64(x: int) -> int:
    """splitmix64 finaliser: turns a crc32 into a well-spread 64-bit score."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def normalise_weights(dests: list[Destination]) -> None:
    """Kamailio alg-9 weights: 1–100 percent; out of range → 0; entries
    that push the sum over 100 are ignored; the last destination fills a shortfall."""
    total = 0
    for d in dests:
        w = d.spec.weight
        if not 1 <= w <= 100 or total + w > 100:
            w = 0
        d.weight = w
        total += w
    if dests and total < 100:
        dests[-1].weight += 100 - total


class DestinationSet:
    """One set (group) of destinations and its selection algorithm (Kamailio's numbering)."""

    def __init__(self, setid: int, algorithm: int, destinations: Iterable[Destination]) -> None:
        if algorithm not in ALGORITHMS:
            raise DispatcherError(f"algorithm {algorithm} is not supported ({ALGORITHMS})")
        self.setid = setid
        self.algorithm = algorithm
        self.destinations: list[Destination] = list(destinations)
        self._rr = 0
        self._fo = 0
        self.reindex()

    def reindex(self) -> None:
        """Recompute orderings after the list changed (load or reload)."""
        for d in self.destinations:
            d._seed = zlib.crc32(d.uri.encode())
        if self.algorithm == 8:
            # Larger priority value first (dispatch.c ordering).
            self.destinations.sort(key=lambda d: -d.spec.priority)
        if self.algorithm == 9:
            normalise_weights(self.destinations)

    def live(self) -> list[Destination]:
        return [d for d in self.destinations if d.selectable]

    def select(self, call_id: str) -> list[Destination]:
        """The failover order for a new call; empty when nothing is selectable."""
        live = [d for d in self.destinations if d.selectable]
        if not live:
            return []
        match self.algorithm:
            case 0:
                return self._by_hash(live, call_id)
            case 4:
                return self._round_robin(live)
            case 8:
                return live
            case 9:
                return self._by_weight(live)
            case 10:
                return self._by_load(live)
        raise AssertionError(self.algorithm)  # pragma: no cover - checked in __init__

    def _rest(self, live: list[Destination], first: Destination) -> list[Destination]:
        # The failover order after `first` rotates too, so calls failing over from one
        # dead destination spread over all the others instead of piling on one.
        others = [d for d in live if d is not first]
        if len(others) > 1:
            k = self._fo % len(others)
            self._fo += 1
            others = others[k:] + others[:k]
        return [first, *others]

    def _by_hash(self, live: list[Destination], call_id: str) -> list[Destination]:
        # Rendezvous hashing: each call ranks every destination by hash(call_id, dest);
        # removing one destination only moves its own calls, and those go to each call's
        # second choice, which is spread evenly over the remaining destinations.
        h = zlib.crc32(call_id.encode())
        return sorted(live, key=lambda d: _mix64(h ^ (d._seed << 32)), reverse=True)

    def _round_robin(self, live: list[Destination]) -> list[Destination]:
        first = live[self._rr % len(live)]
        self._rr += 1
        return self._rest(live, first)

    def _by_weight(self, live: list[Destination]) -> list[Destination]:
        # Smooth weighted round-robin over the live destinations: the weights of dead
        # destinations simply drop out of the total, so the rest renormalise.
        weighted = [d for d in live if d.weight > 0] or live
        total = 0
        best = weighted[0]
        for d in weighted:
            w = d.weight or 1
            d._swrr += w
            total += w
            if d._swrr > best._swrr:
                best = d
        best._swrr -= total
        return [best, *sorted((d for d in live if d is not best), key=lambda d: -d.weight)]

    def _by_load(self, live: list[Destination]) -> list[Destination]:
        # Fewest active calls first; destinations at their maxload are skipped (0 = no
        # cap). Ties rotate so equal destinations share new calls evenly.
        room = [d for d in live if not d.spec.maxload or d.load < d.spec.maxload]
        if not room:
            return []
        n = len(room)
        k = self._rr % n
        self._rr += 1
        rotated = room[k:] + room[:k]
        return sorted(rotated, key=lambda d: d.load)


@dataclass(frozen=True)
class ProbeRequest:
    """The service must send an OPTIONS to ``destination`` and report back with ``probe_id``."""

    probe_id: int
    destination: Destination


@dataclass(frozen=True)
class StateChanged:
    """A destination changed state (reported for logs, metrics and events)."""

    destination: Destination
    old: DestinationState
    new: DestinationState
    reason: str


@dataclass
class _Probe:
    destination: Destination
    sent_at: float
    deadline: float


@dataclass(frozen=True)
class ProbingConfig:
    ping_interval: float = 5.0
    ping_timeout: float = 1.0
    probing_threshold: int = 3
    inactive_threshold: int = 2
    reply_codes: frozenset[int] = frozenset(range(200, 300))  # ds_ping_reply_codes


class Dispatcher:
    """All destination sets plus the OPTIONS probing schedule (timers as data)."""

    def __init__(
        self,
        specs: Iterable[DestinationSpec],
        *,
        algorithm: int = 4,
        probing: ProbingConfig | None = None,
        now: float = 0.0,
    ) -> None:
        self.algorithm = algorithm
        self.probing = probing or ProbingConfig()
        self.sets: dict[int, DestinationSet] = {}
        self._probes: dict[int, _Probe] = {}
        self._next_probe_id = 1
        self._next_round = (
            now  # probe at once on start: a dead box is known within one ping_timeout
        )
        self.load(specs)

    # -- list management -------------------------------------------------------------
    def load(self, specs: Iterable[DestinationSpec]) -> None:
        """Replace the destination list, keeping the run-time state of destinations that
        are unchanged (a diff-based reload: probing state and load survive a reload)."""
        old = {d.spec.key: d for d in self.destinations()}
        by_set: dict[int, list[Destination]] = {}
        seen: set[tuple[int, str]] = set()
        for spec in specs:
            if spec.key in seen:
                raise DispatcherError(f"set {spec.setid}: destination {spec.uri} listed twice")
            seen.add(spec.key)
            prev = old.get(spec.key)
            if prev is not None and prev.spec == spec:
                dest = prev
            elif prev is not None:
                dest = Destination(spec, state=_initial_state(spec.flags))
                dest.active_calls = prev.active_calls
                dest.latency_ms = prev.latency_ms
                dest.reported_calls, dest.own_at_report = prev.reported_calls, prev.own_at_report
            else:
                dest = Destination(spec, state=_initial_state(spec.flags))
            dest.probing = not spec.flags & FLAG_NOPING
            by_set.setdefault(spec.setid, []).append(dest)
        self.sets = {sid: DestinationSet(sid, self.algorithm, ds) for sid, ds in by_set.items()}
        live_ids = {id(d) for d in self.destinations()}
        self._probes = {k: p for k, p in self._probes.items() if id(p.destination) in live_ids}

    def destinations(self) -> list[Destination]:
        return [d for s in self.sets.values() for d in s.destinations]

    def find(self, setid: int, uri: str) -> Destination | None:
        s = self.sets.get(setid)
        if s is None:
            return None
        for d in s.destinations:
            if d.uri == uri:
                return d
        return None

    def select(self, setid: int, call_id: str) -> list[Destination]:
        s = self.sets.get(setid)
        return s.select(call_id) if s is not None else []

    def set_state(self, dest: Destination, state: DestinationState) -> StateChanged | None:
        """Operator change (admin API): counters restart from the new state."""
        old = dest.state
        dest.state = state
        dest.failures = dest.successes = 0
        return StateChanged(dest, old, state, "admin") if old is not state else None

    # -- health reports ----------------------------------------------------------------
    def report_failure(self, dest: Destination, reason: str) -> StateChanged | None:
        """A probe failed or a call got no answer at all (issue: a destination that timed
        out counts toward its probing failures)."""
        dest.timeouts += 1
        old = dest.state
        new: DestinationState
        match old:
            case DestinationState.ACTIVE | DestinationState.TRYING:
                dest.failures += 1
                dest.successes = 0
                new = (
                    DestinationState.INACTIVE
                    if dest.failures >= self.probing.probing_threshold
                    else DestinationState.TRYING
                )
            case DestinationState.INACTIVE:
                dest.successes = 0
                new = old
            case DestinationState.DISABLED:
                new = old
        dest.state = new
        return StateChanged(dest, old, new, reason) if new is not old else None

    def report_success(self, dest: Destination) -> StateChanged | None:
        """A probe was answered, or the destination answered a call it was sent."""
        old = dest.state
        new: DestinationState
        match old:
            case DestinationState.ACTIVE:
                dest.failures = 0
                new = old
            case DestinationState.TRYING:
                dest.failures = 0
                new = DestinationState.ACTIVE
            case DestinationState.INACTIVE:
                dest.successes += 1
                if dest.successes >= self.probing.inactive_threshold:
                    dest.successes = dest.failures = 0
                    new = DestinationState.ACTIVE
                else:
                    new = old
            case DestinationState.DISABLED:
                new = old
        dest.state = new
        return StateChanged(dest, old, new, "probe answered") if new is not old else None

    # -- probing timers (data) ----------------------------------------------------------
    def get_timer(self) -> float:
        """When :meth:`handle_timer` must next run."""
        deadline = self._next_round
        for p in self._probes.values():
            deadline = min(deadline, p.deadline)
        return deadline

    def handle_timer(self, now: float) -> tuple[list[ProbeRequest], list[StateChanged]]:
        """Expire unanswered probes and start a new probing round when one is due."""
        changes: list[StateChanged] = []
        for probe_id, p in list(self._probes.items()):
            if p.deadline <= now:
                del self._probes[probe_id]
                ch = self.report_failure(p.destination, "probe timeout")
                if ch:
                    changes.append(ch)
        requests: list[ProbeRequest] = []
        if now >= self._next_round:
            self._next_round = now + self.probing.ping_interval
            pending = {id(p.destination) for p in self._probes.values()}
            for d in self.destinations():
                if d.probing and d.state is not DestinationState.DISABLED and id(d) not in pending:
                    pid = self._next_probe_id
                    self._next_probe_id += 1
                    self._probes[pid] = _Probe(d, now, now + self.probing.ping_timeout)
                    requests.append(ProbeRequest(pid, d))
        return requests, changes

    def probe_answered(
        self, probe_id: int, status: int, now: float, calls: int | None = None
    ) -> StateChanged | None:
        """An OPTIONS reply arrived. Only a code in ``reply_codes`` (Kamailio
        ``ds_ping_reply_codes``, default class 2) proves the box alive; any other final
        reply is a failed probe. ``calls`` is the node's own
        ``X-Switchboard-Calls`` figure, kept for algorithm 10 (:attr:`Destination.load`)."""
        p = self._probes.pop(probe_id, None)
        if p is None or status < 200:
            if p is not None:
                self._probes[probe_id] = p  # provisional: keep waiting
            return None
        d = p.destination
        if status not in self.probing.reply_codes:
            return self.report_failure(d, f"probe answered {status}")
        if calls is not None:
            d.reported_calls, d.own_at_report = calls, d.active_calls
        rtt = (now - p.sent_at) * 1000.0
        d.latency_ms = (
            rtt if d.latency_ms is None else d.latency_ms + LATENCY_ALPHA * (rtt - d.latency_ms)
        )
        return self.report_success(d)

    def probe_failed(self, probe_id: int) -> StateChanged | None:
        """The probe could not be sent (transport error, §16.9: like a 503)."""
        p = self._probes.pop(probe_id, None)
        return self.report_failure(p.destination, "probe transport error") if p else None

    def is_pending(self, probe_id: int) -> bool:
        return probe_id in self._probes

    @property
    def pending_probes(self) -> int:
        return len(self._probes)


def match_ping_codes(pattern: str) -> frozenset[int]:
    """``[dispatcher] ping_reply_codes`` (same syntax as failover codes, e.g. ``"2xx"`` or
    ``"2xx|404"``) → the final codes that prove a probed box alive. 408 never counts (a
    class pattern skips it, naming it is an error): it is what a transaction layer
    generates when nothing answered, so a dead box would look alive."""
    if "408" in (item.strip() for item in pattern.split("|")):
        raise DispatcherError("ping reply code 408: a timeout must never count as alive")
    codes = frozenset(c for c in _expand(pattern, "ping reply code") if 200 <= c <= 699)
    if not codes:
        raise DispatcherError(f"ping reply codes {pattern!r}: no final response code")
    return codes - {408}


def match_codes(pattern: str) -> frozenset[int]:
    """Failover codes such as ``"408|5xx"`` or ``"408|500|503"`` → the set of codes.

    ``x`` is a digit wildcard, ``.`` too (Kamailio ``t_check_status("408|5[0-9][0-9]")``).
    """
    return frozenset(c for c in _expand(pattern, "failover code") if 300 <= c <= 699)


def _expand(pattern: str, what: str) -> set[int]:
    codes: set[int] = set()
    for raw in pattern.split("|"):
        item = raw.strip().lower()
        if not item:
            continue
        if len(item) != 3 or not all(c.isdigit() or c in "x." for c in item) or item[0] in "x.":
            raise DispatcherError(f"{what} {raw!r}: expected e.g. 408, 5xx or 50x")
        lo = int(item.replace("x", "0").replace(".", "0"))
        for code in range(lo, lo + 100):
            s = str(code)
            if all(p in "x." or p == c for p, c in zip(item, s, strict=True)):
                codes.add(code)
    return codes
