"""Transaction-stateful SIP proxy core with dispatcher, failover, ACL and flood control.

RFC 3261 §16 (proxy behaviour) and §17 (transactions), RFC 3581 (rport). Pure: the
service feeds datagrams/stream messages with ``now`` and transmits the returned
:class:`Send` tuples; timers are data (:meth:`Proxy.get_timer`, :meth:`Proxy.handle_timer`).

Theory of operation
-------------------
* A request is parsed by :mod:`switchboard.sip.fastpath` (lines + header indexes; no
  header objects), validated with the SIP core's own checks (one grammar with
  :mod:`switchboard.sip.message`; §16.3: 400, 416, 420, 482, 483), checked against pike
  (every request) and the ACL (requests that would start something new), and then either
  absorbed as a retransmission of a known server transaction (answered with the last
  response), or given a server transaction and forwarded through one client branch.
* Initial requests addressed to the router (R-URI is the router, no Route left) go to the
  dispatcher, which returns the whole failover order; the request is forwarded to the
  first destination (``$du`` semantics: the R-URI is left alone, as ``ds_select_dst``).
  On a final response in ``failover_codes`` (default 408|5xx) or no response at all
  within ``failover_timeout``, the next destination gets a new branch (serial forking,
  §16.7 step 10 / Kamailio failure_route). A destination that never answered counts
  toward its probing failures. A final response carrying ``Reason: Q.850;cause=N``
  (RFC 3326) is the call's outcome at the far end — a media node marks every failure
  response of a call it handled that way, as FreeSWITCH does — and is never failed over:
  another node would dial the same carrier again. The timeout stops at the first
  response, 100 Trying included (Kamailio's fr_timer; Timer C then, as fr_inv_timer).
* Requests with a Route set (ACK for 2xx, BYE, re-INVITE) are loose-routed (§16.4): the
  router's own Route entries are removed, the request goes to the next Route or the R-URI.
  ACK for 2xx is forwarded statelessly (§16.11); ACK for a non-2xx final the router sent
  is absorbed (hop-by-hop, §17.2.1).
* Responses are matched to a client branch by the top Via branch and CSeq method
  (§17.1.3); the router's Via is removed and the response goes upstream by the server
  transaction's source (§16.7). 100 is never forwarded; 1xx and 2xx at once; the final
  response is chosen once no more branches will be tried (6xx first, then lowest class,
  and a lone 503 becomes 500, §16.7 step 6). Responses without a branch (late 2xx) are
  forwarded statelessly by the next Via.
* CANCEL (§16.10): answered 200 at once; sent to the pending branch once it has had a
  provisional response (§9.1), otherwise on the first provisional; the 487 is relayed.
  A CANCEL matching no transaction is forwarded statelessly (§16.10 "MUST statelessly
  forward") to where §16.11 would have sent its INVITE: the next Route / the R-URI, or,
  addressed to the router, the dispatcher's choice when that is a function of the
  message (algorithm 0, Call-ID hash). With any other algorithm there is no such target
  and it gets 481 (what the INVITE's holder would answer, §9.2).

Completed transactions are kept ``wait_time`` seconds (Kamailio ``wt_timer``, default
T4 = 5 s) to absorb retransmissions; on UDP the router retransmits requests downstream
(Timers A/E) and non-2xx finals upstream (Timer G) until they are answered/ACKed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from switchboard.router.dispatcher import (
    Destination,
    DestinationState,
    Dispatcher,
    ProbeRequest,
    StateChanged,
)
from switchboard.router.emergency import EmergencyNumbers
from switchboard.router.overload import EdgeShedding
from switchboard.router.protection import Acl, AuthBans, Pike, ScannerFilter, Verdict
from switchboard.router.stir import NOT_VERIFIED
from switchboard.router.stir import Verdict as StirVerdict
from switchboard.router.trunks import TrunkState, TrunkTable, disposition
from switchboard.sip import fastpath as wire
from switchboard.sip.fastpath import BadMessage, Message, Via

log = logging.getLogger(__name__)

# RFC 3261 Table 4 (Appendix A).
T1: Final = 0.5
_MAX_FIFOS: Final = 16  # timer delays with their own FIFO (Proxy._after); others: the heap
T2: Final = 4.0
T4: Final = 5.0
TIMER_B: Final = 64 * T1  # INVITE client transaction timeout
TIMER_F: Final = 64 * T1  # non-INVITE client transaction timeout
TIMER_H: Final = 64 * T1  # wait for ACK of a non-2xx final
TIMER_C: Final = 180.0  # §16.6 item 11: "larger than 3 minutes"
TIMER_L: Final = 64 * T1  # RFC 6026 §7.1: an INVITE server transaction stays Accepted
TIMER_J: Final = 64 * T1  # §17.2.2: a non-INVITE server transaction stays Completed (UDP)
# a call every node shed is tried again once after their Retry-After, if it is this short
SHED_RETRY_MAX: Final = 2

MAGIC: Final = b"z9hG4bK"
# §16.7 step 6: within 4xx these are preferred because the caller can act on them.
_PREFERRED_4XX: Final = frozenset((401, 407, 415, 420, 484))
_DIALOG_CREATING: Final = frozenset((b"INVITE", b"SUBSCRIBE", b"REFER"))
_METHOD_NAMES: Final = {
    m.encode(): m
    for m in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "INFO",
        "PRACK",
        "UPDATE",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    ]
}

_REASONS: Final = {
    100: b"Trying",
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    416: b"Unsupported URI Scheme",
    420: b"Bad Extension",
    481: b"Call/Transaction Does Not Exist",
    482: b"Loop Detected",
    483: b"Too Many Hops",
    487: b"Request Terminated",
    500: b"Server Internal Error",
    503: b"Service Unavailable",
    513: b"Message Too Large",
}

# Timer kinds in the heap.
(
    _RETRANS,
    _FAILOVER,
    _RESP_RETRANS,
    _CLEANUP,
    _CANCEL_GIVEUP,
    _CANCEL_RETRANS,
    _FORGET,
    _OWN_BYE,
    _LOST_SWEEP,
    _SHED_RETRY,
) = range(10)


class Send(NamedTuple):
    """Transmit ``data`` to ``addr`` over ``transport``; ``conn`` is the stream to reuse
    (the one the request came on) and ``branch`` lets the service report a transport
    error back with :meth:`Proxy.transport_error`."""

    transport: str
    addr: tuple[str, int]
    data: bytes
    conn: Any = None
    branch: bytes = b""


def iface_key(transport: str, host: str) -> str:
    """The interface table key of a transport towards ``host`` (an IPv6 host has a
    colon, bracketed or not): a message leaves from an address of the peer's family."""
    return transport + "6" if ":" in host else transport


@dataclass(frozen=True)
class Interface:
    """One listening socket as others must address it (Via sent-by, Record-Route)."""

    transport: str
    host: str
    port: int
    # the host Record-Route names instead of ``host`` ([router] record_route_host: a
    # floating address shared by two routers)
    rr_host: str = ""
    # the host the Via of a forwarded request names instead of ``host`` ([router]
    # via_host, Kamailio's advertise: the floating address this router holds), so the
    # responses of a call in setup reach whichever router holds that address when this
    # one dies; the router there has no transaction and forwards them statelessly by
    # the next Via (§16.11, _stateless_response). Probes keep ``host``: their answers
    # must come back to the router that asked.
    via_host: str = ""

    @property
    def key(self) -> str:
        """``udp``/``tcp`` for IPv4, ``udp6``/``tcp6`` for IPv6 (see :func:`iface_key`)."""
        return iface_key(self.transport, self.host)

    @property
    def hostport(self) -> bytes:
        return f"{self.host}:{self.port}".encode()

    @property
    def via(self) -> bytes:
        return (
            b"Via: SIP/2.0/" + self.transport.upper().encode() + b" " + self.hostport + b";branch="
        )

    @property
    def forward_via(self) -> bytes:
        """The Via of a forwarded request: ``via_host`` when one is configured."""
        if not self.via_host:
            return self.via
        return (
            b"Via: SIP/2.0/"
            + self.transport.upper().encode()
            + f" {self.via_host}:{self.port}".encode()
            + b";branch="
        )

    @property
    def record_route(self) -> bytes:
        return (
            b"Record-Route: <sip:"
            + f"{self.rr_host or self.host}:{self.port}".encode()
            + b";transport="
            + self.transport.encode()
            + b";lr>"
        )


@dataclass(frozen=True)
class ProxySettings:
    setid: int = 1
    failover_timeout: float = 2.0
    failover_codes: frozenset[int] = frozenset({408, *range(500, 600)})
    unavailable_reason: str = "No Media Server Available"
    retry_after: int = 5
    wait_time: float = T4
    timer_c: float = TIMER_C
    dialog_expire: float = 7200.0  # Kamailio ds_hash_expire
    emergency_setid: int = 0  # [emergency] route_set: tried first for emergency calls
    edge_shedding: bool = True  # [dispatcher] edge_shedding (router/overload.py)
    # a media node inactive this long still holding dialogs: the router ends them (BYE to
    # their far ends); 0 = off. docs/router.md "A media node lost with its box"
    lost_node_timeout: float = 0.0


@dataclass
class Stats:
    """Counters the admin API and /metrics read (plain ints: nothing on the hot path)."""

    requests: dict[str, int] = field(default_factory=dict)  # received, by method
    replies: dict[int, int] = field(default_factory=dict)  # sent upstream, by code
    failovers: int = 0
    acl_rejects: int = 0
    pike_rejects: int = 0
    pike_drops: int = 0
    pike_blocks: int = 0
    bad_messages: int = 0
    retransmissions: int = 0
    branch_timeouts: int = 0
    transactions_total: int = 0
    scanner_drops: int = 0  # requests with a scanner's User-Agent, dropped silently
    auth_failures: int = 0  # 401/403/407 answers to requests that carried credentials
    auth_bans: int = 0  # sources banned for too many authentication failures
    auth_ban_drops: int = 0  # requests of banned sources, dropped silently
    acl_drops: int = 0  # requests from outside [acl] allow dropped ([security] outside_acl)
    overload_rejects: int = 0  # calls answered 503 + Retry-After: every destination shed them
    edge_sheds: int = 0  # ... of which the edge refused for the shedding nodes (overload.py)
    shed_retries: int = 0  # calls every node shed, sent to the nodes again after Retry-After
    late_answers_ended: int = 0  # 2xx on a branch given up: ACKed and ended with BYE
    lost_node_calls_ended: int = 0  # far ends sent BYE because their node was lost
    # the CDRs of those legs (router/lost_node.py), counted by the service that writes
    # them, and the legs whose node tag named no channel (not billed by the router)
    lost_node_cdrs: int = 0
    lost_node_legs_unbilled: int = 0
    emergency: dict[str, int] = field(default_factory=dict)  # emergency calls by country


class ServerTxn:
    __slots__ = (
        "acked",
        "branch",
        "branches",
        "call_id",
        "cancelled",
        "conn",
        "dead",
        "dest",
        "dispatched",
        "final",
        "first",
        "fwd",
        "g_interval",
        "hidden_vias",
        "hide",
        "in_iface",
        "is_invite",
        "key",
        "last",
        "loop",
        "method",
        "msg",
        "no_cl",
        "order",
        "record_route",
        "reply_addr",
        "responses",
        "shed_retry",
        "started",
        "t0",
        "transport",
        "trunk",
    )

    def __init__(self) -> None:
        self.key: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self.method = b""
        self.is_invite = False
        self.msg = Message()
        self.transport = "udp"
        self.reply_addr: tuple[str, int] = ("", 0)
        self.call_id = b""
        self.loop = b""
        self.in_iface: Interface | None = None
        self.trunk: TrunkState | None = None  # admitted on this trunk: counts until the end
        self.t0 = -1.0  # when a trunk call was admitted (post-dial delay); -1 once measured
        self.started = 0.0  # when the request arrived (a lost node's CDR: the leg's start)
        self.record_route = False
        self.first = b""
        self.fwd: list[bytes] = []
        self.no_cl = False
        self.branch: Branch | None = None
        self.branches: list[Branch] = []
        self.acked = False
        self.cancelled = False
        self.dead = False
        self.dest: Destination | None = None
        self.dispatched = False
        self.final = 0
        self.last: bytes | None = None
        self.order: list[Destination] = []
        self.responses: list[tuple[int, bytes | None]] = []
        self.shed_retry = 0  # 1: every node shed it, tried again after Retry-After; 2: done
        self.g_interval = T1
        self.conn: Any = None
        # Topology hiding: ``hide`` is the dialog when this transaction's messages cross
        # to a carrier; ``hidden_vias`` the internal Via lines kept back from a request
        # sent to a carrier (put back on its responses).
        self.hide: HiddenDialog | None = None
        self.hidden_vias: list[bytes] = []


class Branch:
    __slots__ = (
        "abandoned",
        "addr",
        "cancel",
        "cancel_answered",
        "cancel_interval",
        "cancel_pending",
        "data",
        "dest",
        "final",
        "id",
        "interval",
        "is_invite",
        "keep_until",
        "late_ack",
        "late_final",
        "method",
        "provisional",
        "responded",
        "timer_c_at",
        "transport",
        "txn",
        "via_line",
    )

    def __init__(self, bid: bytes, txn: ServerTxn, transport: str, addr: tuple[str, int]) -> None:
        self.id = bid
        self.txn = txn
        self.transport = transport
        self.addr = addr
        self.method = txn.method
        self.is_invite = txn.is_invite
        self.responded = False
        self.provisional = False
        self.final = 0
        self.cancel: bytes | None = None
        self.cancel_answered = False
        self.cancel_pending = False
        self.cancel_interval = T1
        self.interval = T1
        self.timer_c_at = 0.0
        self.dest: Destination | None = None
        self.data = b""
        self.via_line = b""
        # Given up by the router (no answer in time, Timer C, transport error, CANCEL
        # unanswered) while the call went on elsewhere: see Proxy._abandon.
        self.abandoned = False
        self.keep_until = 0.0
        self.late_final = 0  # a final response that arrived after it was given up
        self.late_ack: bytes | None = (
            None  # the ACK sent for a late 2xx (resent on its retransmissions)
        )


class OwnBye:
    """A BYE the router sends itself (a late 2xx's dialog, a far end of a lost node): a
    non-INVITE client transaction of its own (Timer E retransmissions on UDP, given up
    after Timer F)."""

    __slots__ = ("addr", "answered", "data", "id", "interval", "transport", "until")

    def __init__(
        self, bid: bytes, transport: str, addr: tuple[str, int], data: bytes, until: float
    ) -> None:
        self.id = bid
        self.transport = transport
        self.addr = addr
        self.data = data
        self.until = until
        self.interval = T1
        self.answered = False


class Timers:
    """The transaction timers: (time, kind, object), taken in time order, ties in the
    order they were set.

    A timer set a fixed delay from now (T1, failover_timeout, Timer B/F/H, wait_time…)
    goes to that delay's FIFO: appended in time order, each FIFO is sorted, and the
    earliest timer is the least of a few heads. Others (and a clock that went back) go
    to a heap. In one heap of ~40,000 timers at 1,000 calls/s every pop sifted through
    ~15 levels of tuple comparisons (perf: ~5 % of the router process)."""

    __slots__ = ("fifo_list", "fifos", "heap", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, Any]] = []
        self.fifos: dict[float, deque[tuple[float, int, int, Any]]] = {}
        self.fifo_list: list[deque[tuple[float, int, int, Any]]] = []
        self.seq = 0

    def at(self, when: float, kind: int, obj: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, kind, obj))

    def after(self, now: float, delay: float, kind: int, obj: Any) -> None:
        when = now + delay
        q = self.fifos.get(delay)
        if q is None:
            if len(self.fifos) >= _MAX_FIFOS:
                self.at(when, kind, obj)
                return
            q = deque()
            self.fifos[delay] = q
            self.fifo_list.append(q)
        if q and q[-1][0] > when:  # the clock went back (a test's): q stays sorted
            self.at(when, kind, obj)
            return
        self.seq += 1
        q.append((when, self.seq, kind, obj))

    def next(self) -> float:
        """When the earliest timer is due (inf: none)."""
        t = self.heap[0][0] if self.heap else math.inf
        for q in self.fifo_list:
            if q:
                w = q[0][0]
                if w < t:
                    t = w
        return t

    def pop_due(self, now: float) -> tuple[int, Any] | None:
        """The earliest timer due at ``now`` (removed): (kind, object), or None."""
        heap = self.heap
        when = heap[0][0] if heap else math.inf
        seq = heap[0][1] if heap else 0
        first: deque[tuple[float, int, int, Any]] | None = None
        for q in self.fifo_list:
            if q:
                head = q[0]
                if head[0] < when or (head[0] == when and head[1] < seq):
                    when, seq, first = head[0], head[1], q
        if when > now:
            return None
        if first is None:
            _, _, kind, obj = heapq.heappop(heap)
        else:
            _, _, kind, obj = first.popleft()
        return kind, obj

    def __len__(self) -> int:
        return len(self.heap) + sum(len(q) for q in self.fifo_list)


class HiddenDialog:
    """A dialog with a carrier under topology hiding: the carrier knows it only by the
    router's Contact ``sip:sbth-KEY@router``; the router knows the media node's target."""

    __slots__ = ("call_id", "contact", "created", "key", "node_target", "uri")

    def __init__(
        self, key: bytes, call_id: bytes, contact: bytes, created: float, uri: bytes = b""
    ) -> None:
        self.key = key
        self.call_id = call_id
        self.contact = contact  # the Contact header line carriers see
        # that Contact's URI, as the router wrote it: a carrier's in-dialog Request-URI
        # with exactly these bytes is known valid (see Proxy._issued)
        self.uri = uri
        self.node_target = b""  # the media node's Contact URI (its remote target)
        self.created = created


class FarEnd:
    """What the router needs to end one dialog of a media node on the node's behalf —
    the BYE the node would send to that far end (the caller of a dispatched call, or the
    carrier of a call the node placed through the router). Raw lines, kept as they came
    (read only if the node is lost: nothing parsed per call)."""

    __slots__ = (
        "bye_at",
        "call_id",
        "caller_line",
        "conn",
        "conn_addr",
        "created",
        "cseq",
        "from_line",
        "node",
        "request_line",
        "routes",
        "started",
        "target",
        "to_caller",
        "to_line",
        "transport",
        "trunk",
    )  # fmt: skip

    def __init__(
        self, node: str, call_id: bytes, transport: str, target: bytes, routes: list[bytes],
        from_line: bytes, to_line: bytes, cseq: int, created: float, *, to_caller: bool,
    ) -> None:  # fmt: skip
        self.node = node  # the destination's URI
        self.call_id = call_id
        self.transport = transport
        self.target = target  # the far end's Contact line
        self.routes = routes  # Record-Route lines: the request's, or the 2xx's
        self.from_line = from_line  # the INVITE's From
        self.to_line = to_line  # the 2xx's To
        self.cseq = cseq
        self.created = created  # when the 2xx passed: the leg's answer time
        # a BYE to the caller goes the other way: From/To swapped (§12.1.1)
        self.to_caller = to_caller
        # for the leg's CDR (router/lost_node.py): the INVITE's request line (its
        # destination), when it arrived, the trunk a dispatched call came in on
        self.request_line = b""
        self.started = created
        self.trunk: TrunkState | None = None
        self.caller_line = from_line  # the From the node got (a trunk may rewrite its user)
        # a caller on TCP/TLS: the connection it opened (reached over it, not its Contact)
        self.conn: Any = None
        self.conn_addr: tuple[str, int] | None = None
        # a BYE for this dialog that got no 2xx (its node gone?): when it arrived — the
        # leg's end; the far end needs no BYE from the router then
        self.bye_at = 0.0


def _ignore_lost_leg(fe: FarEnd, now: float) -> None:
    """The default :attr:`Proxy.on_lost_leg`: no CDR (the router has no database)."""


class Dialog:
    __slots__ = ("created", "dest", "trunk")

    def __init__(
        self, dest: Destination | None, created: float, trunk: TrunkState | None = None
    ) -> None:
        self.dest = dest
        self.created = created
        self.trunk = trunk  # the trunk the call came in on: released when the dialog ends


def _user(uri: bytes) -> bytes:
    """The user part of a SIP URI (``sip:+4930123;npdi@host`` → ``+4930123``)."""
    colon = uri.find(b":")
    at = uri.find(b"@")
    if colon < 0 or at < colon:
        return b""
    return uri[colon + 1 : at].split(b";", 1)[0]


def _from_user(m: Message) -> str:
    if m.from_ < 0:
        return ""
    value = m.value(m.from_)
    start = value.find(b"sip")
    return _user(value[start:]).decode("utf-8", "replace") if start >= 0 else ""


def _replace_user(line: bytes, user: bytes) -> bytes:
    """``line`` with the user part of its (first) SIP URI replaced."""
    start = line.find(b"sip:")
    if start < 0:
        start = line.find(b"sips:")
        if start < 0:
            return line
    colon = line.find(b":", start)
    at = line.find(b"@", colon)
    if at < 0:
        return line
    user_end = colon + 1 + len(line[colon + 1 : at].split(b";", 1)[0])
    return line[: colon + 1] + user + line[user_end:]


_TRUNK_HEADERS: Final = (
    b"x-switchboard-trunk",
    b"x-switchboard-account",
    b"x-switchboard-verstat",
    b"x-switchboard-attestation",
    b"x-switchboard-emergency",
)


def _is_trunk_header(line: bytes) -> bool:
    """Our headers (trunk, account, STIR verdict), which only the router may set: dropped
    from outside input."""
    if line[:14].lower() != b"x-switchboard-":
        return False
    return line.partition(b":")[0].strip().lower() in _TRUNK_HEADERS


def _from_far_end(m: Message) -> bool:
    """A ``Reason: Q.850;...`` header (RFC 3326): the response reports how the call ended
    beyond the destination (a carrier's busy, no answer, rejection), not that the
    destination itself failed. Read only for failure responses, off the hot path."""
    for line in m.lines:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"reason" and value.lower().find(b"q.850") >= 0:
            return True
    return False


def _shed_retry_after(responses: list[tuple[int, bytes | None]]) -> int | None:
    """When every destination answered 503 with a ``Retry-After`` and no Q.850 ``Reason``
    (each shed the call: it is overloaded — RFC 3261 §21.5.4, RFC 7339), the smallest
    Retry-After; otherwise None. Read only when a 503 is the best final response."""
    retry: int | None = None
    for status, data in responses:
        if status != 503 or data is None:
            return None
        value = _header_value(data, b"retry-after")
        if value is None or _header_value(data, b"reason") is not None:
            return None
        digits = value.split(b";")[0].split(b"(")[0].strip()
        if not digits.isdigit():
            return None
        seconds = int(digits)
        retry = seconds if retry is None else min(retry, seconds)
    return retry


def _header_value(data: bytes, name: bytes) -> bytes | None:
    """The value of the first header ``name`` (lower case, full form) of a message."""
    head = data[: data.find(b"\r\n\r\n")] if data.find(b"\r\n\r\n") >= 0 else data
    for line in head.split(b"\r\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            return value.strip()
    return None


def _is_identity(line: bytes) -> bool:
    name = line.partition(b":")[0].strip().lower()
    return name in (b"identity", b"y")


def _is_pai(line: bytes) -> bool:
    return line[:20].lower() == b"p-asserted-identity:"


def _asserted_user(lines: list[bytes]) -> str:
    """The user part of the first P-Asserted-Identity URI (the caller a network asserts)."""
    for line in lines:
        if _is_pai(line):
            value = line[20:]
            start = value.find(b"sip")
            if start >= 0:
                return _user(value[start:]).decode("utf-8", "replace")
            start = value.find(b"tel:")
            if start >= 0:
                return (
                    value[start + 4 :]
                    .split(b">", 1)[0]
                    .split(b";", 1)[0]
                    .strip()
                    .decode("utf-8", "replace")
                )
    return ""


def _add_verstat(lines: list[bytes], verstat: bytes) -> None:
    """``verstat`` on the caller's number in P-Asserted-Identity (3GPP TS 24.229
    §7.2A.20): a tel URI parameter, inside the user part of a sip URI; a PAI built from
    the From URI when the request has none. Any verstat from outside is replaced."""
    index = next((i for i, line in enumerate(lines) if _is_pai(line)), -1)
    if index < 0:
        frm = next((line for line in lines if line[:5].lower() == b"from:"
                    or line[:2].lower() == b"f:"), b"")  # fmt: skip
        lt, gt = frm.find(b"<"), frm.find(b">")
        if lt < 0 or gt < lt:
            return
        lines.append(b"P-Asserted-Identity: " + frm[lt : gt + 1])
        index = len(lines) - 1
    line = lines[index]
    lt, gt = line.find(b"<"), line.find(b">")
    if lt < 0 or gt < lt:
        return
    uri = line[lt + 1 : gt]
    scheme, colon, rest = uri.partition(b":")
    if not colon:
        return
    at = rest.find(b"@")
    user, host = (rest[:at], rest[at:]) if at >= 0 else (rest, b"")
    parts = [p for p in user.split(b";") if not p.lower().startswith(b"verstat=")]
    user = b";".join([*parts, b"verstat=" + verstat])
    lines[index] = line[: lt + 1] + scheme + b":" + user + host + line[gt:]


def _release(dest: Destination | None) -> None:
    if dest is not None and dest.active_calls > 0:
        dest.active_calls -= 1


def _is_ip(host: str) -> bool:
    h = host.strip("[]")
    if h.count(".") == 3 and h.replace(".", "").isdigit():
        return True
    return ":" in h


def default_resolve(host: str) -> str | None:
    """IP literals only (plus ``localhost``); the service injects a real resolver."""
    if host == "localhost":
        return "127.0.0.1"
    return host.strip("[]") if _is_ip(host) else None


class Proxy:
    """The router's SIP core. Feed it with :meth:`receive` and :meth:`handle_timer`."""

    def __init__(
        self,
        interfaces: list[Interface],
        dispatcher: Dispatcher,
        *,
        acl: Acl | None = None,
        pike: Pike | None = None,
        settings: ProxySettings | None = None,
        secret: bytes = b"\x00" * 8,
        resolve: Callable[[str], str | None] = default_resolve,
        aliases: tuple[tuple[str, int], ...] = (),
        via_interfaces: list[Interface] | None = None,
        bans: AuthBans | None = None,
        scanners: ScannerFilter | None = None,
        server: str = "",
        acl_drop: bool = False,
        hide_topology: bool = False,
        trunks: TrunkTable | None = None,
        verify_identity: bool = False,
        verstat_to_callee: bool = False,
        signer: Callable[[TrunkState, str, str], bytes | None] | None = None,
        emergency: EmergencyNumbers | None = None,
    ) -> None:
        if not interfaces:
            raise ValueError("the proxy needs at least one interface")
        # Record-Route names the shared listening sockets; the Via may name a private
        # per-worker socket so responses come back to the worker holding the transaction.
        # Keyed by transport and address family ("udp", "udp6", "tcp", "tcp6"): a request
        # leaves from, and names in Via/Record-Route, an address of the family of the next
        # hop, so a dual-stack router bridges IPv6 carriers and IPv4 media nodes.
        self.interfaces: dict[str, Interface] = {}
        for i in interfaces:
            self.interfaces.setdefault(i.key, i)
        self.via_interfaces = dict(self.interfaces)
        self.via_interfaces.update({i.key: i for i in via_interfaces or ()})
        vias = list(self.via_interfaces.values())
        self.local = {(i.host.lower(), i.port) for i in [*interfaces, *vias]} | set(aliases)
        # A Via naming any of these is this router's: its own sockets, its via_host and
        # its aliases (the peer's floating address: a response of a call the dead peer
        # was setting up is forwarded statelessly, §16.11)
        self._sent_by = list(
            {i.hostport for i in [*interfaces, *vias]}
            | {f"{i.via_host}:{i.port}".encode() for i in [*interfaces, *vias] if i.via_host}
            | {f"{h}:{p}".encode() for h, p in aliases}
        )
        self.dispatcher = dispatcher
        self.acl = acl or Acl(["0.0.0.0/0", "::/0"])
        # Trunks (docs/router.md "Trunks"): a new call's trunk by its source; its sources
        # are exempt from pike (trunk limits govern them). None: the ACL alone decides.
        self.trunks = trunks
        # The names in the verified client certificate of the TLS connection from a
        # source (host, port), or None — set by the service (mutual TLS per trunk).
        self.tls_peer_names: Callable[[tuple[str, int]], frozenset[str] | None] | None = None
        # STIR/SHAKEN (docs/compliance.md "STIR/SHAKEN"): the edge's verdict on a new
        # call's Identity comes with receive(); without one a verifying router says
        # No-TN-Validation. The signer returns the Identity value for a call leaving on
        # a trunk that signs (or None).
        self.verify_identity = verify_identity
        self.verstat_to_callee = verstat_to_callee
        self.signer = signer
        # Emergency numbers (docs/compliance.md "Emergency calls"): such a call is never
        # refused by pike, draining or trunk limits, and goes to the emergency set first.
        self.emergency = emergency if emergency else None
        self.pike = pike
        self.bans = bans
        self.scanners = scanners
        # The Server header of the router's own answers: none by default, so an answer
        # does not tell a scanner which product (and which exploits) is behind the port.
        self.server_line = b"Server: " + server.encode() if server else b""
        self.acl_drop = acl_drop
        # Topology hiding (Kamailio topos): dialogs dispatched from the edge show the
        # carrier only the router — see _hide_response / _hide_request.
        self.hide_topology = hide_topology
        self.hidden: dict[bytes, HiddenDialog] = {}  # by key (the Contact user part)
        self.hidden_calls: dict[bytes, HiddenDialog] = {}  # by Call-ID
        self.settings = settings or ProxySettings()
        self.resolve = resolve
        self.stats = Stats()
        # destination URI -> until when it sheds new calls (its last shed 503's
        # Retry-After): a call one node shed is not tried on a node that sheds too
        self._shedding: dict[str, float] = {}
        # the share of new calls refused here for shedding nodes (docs/router.md "Overload")
        self.edge: EdgeShedding | None = EdgeShedding() if self.settings.edge_shedding else None
        self.txns: dict[tuple[bytes, bytes, bytes], ServerTxn] = {}
        self.branches: dict[bytes, Branch] = {}
        self.dialogs: dict[bytes, Dialog] = {}
        self.probes: dict[bytes, int] = {}
        self._own_byes: dict[bytes, OwnBye] = {}  # by Via branch
        # INVITEs answered 2xx whose transaction ended (RFC 6026 "Accepted"): key ->
        # until when their retransmissions are absorbed; (until, key) oldest first
        self._accepted: dict[tuple[bytes, bytes, bytes], float] = {}
        self._accepted_order: deque[tuple[float, tuple[bytes, bytes, bytes]]] = deque()
        # BYEs over UDP answered whose transaction ended: key -> (until, the answer sent,
        # where); (until, key) oldest first — Timer J without the transaction (_bye_done)
        self._byes_done: dict[tuple[bytes, bytes, bytes], tuple[float, bytes, tuple[str, int]]] = {}
        self._byes_done_order: deque[tuple[float, tuple[bytes, bytes, bytes]]] = deque()
        # dialogs of the media nodes by Call-ID, when lost_node_timeout is on (one per
        # call leg the router carries: the caller's and the carrier's)
        self.far_ends: dict[bytes, FarEnd] = {}
        self._down_since: dict[str, float] = {}  # node URI -> first seen inactive
        self._node_addrs: dict[tuple[str, int], str] = {}  # a node's (ip, port) -> URI
        self._sweeping = False
        self.draining = False
        self._secret = zlib.crc32(secret).to_bytes(4, "big").hex().encode()
        self._prefix = MAGIC + b"sb"
        self._counter = itertools.count(1)
        self._timers = Timers()
        self._next_sweep = 0.0
        self._next_c_sweep = 0.0
        self._ringing: dict[Branch, None] = {}
        self.on_state_change: Callable[[StateChanged], None] = _log_state_change
        # a call leg of a lost node the router ended (its CDR: router/lost_node.py)
        self.on_lost_leg: Callable[[FarEnd, float], None] = _ignore_lost_leg

    # ------------------------------------------------------------------ helpers
    def _token(self) -> bytes:
        return self._secret + b"%x" % next(self._counter)

    def _at(self, when: float, kind: int, obj: Any) -> None:
        self._timers.at(when, kind, obj)

    def _after(self, now: float, delay: float, kind: int, obj: Any) -> None:
        self._timers.after(now, delay, kind, obj)

    def is_local(self, host: str, port: int) -> bool:
        return (host, port) in self.local

    def _count_reply(self, status: int) -> None:
        r = self.stats.replies
        r[status] = r.get(status, 0) + 1

    def _reply(
        self,
        m: Message,
        status: int,
        reason: bytes | None = None,
        extra: tuple[bytes, ...] = (),
    ) -> bytes:
        """A locally generated response (§8.2.6): Vias, From, To (+tag), Call-ID, CSeq."""
        self._count_reply(status)
        lines = [b"SIP/2.0 %d %s" % (status, reason or _REASONS.get(status, b"Error"))]
        lines.extend(m.lines[i] for i in m.vias)
        if m.from_ >= 0:
            lines.append(m.lines[m.from_])
        if m.to >= 0:
            to = m.lines[m.to]
            if status > 100 and not m.to_tag():
                to += b";tag=" + self._token()
            lines.append(to)
        if m.call_id:
            lines.append(b"Call-ID: " + m.call_id)
        if m.cseq_num:
            lines.append(b"CSeq: " + m.cseq_num + b" " + m.cseq_method)
        lines.extend(extra)
        if self.server_line:
            lines.append(self.server_line)
        lines.append(b"Content-Length: 0")
        return wire.build(lines, b"")

    def _retry_after(self, seconds: int) -> tuple[bytes, ...]:
        return (b"Retry-After: %d" % seconds,) if seconds else ()

    def answer(
        self, m: Message, status: int, reason: bytes, transport: str, src: tuple[str, int],
        conn: Any,
    ) -> list[Send]:  # fmt: skip
        """A stateless answer to a request refused before it reached the proxy's logic
        (the edge's STIR policy): addressed like any local reply (RFC 3581 rport)."""
        try:
            via = Via(m.top_via())
        except BadMessage:
            return []
        addr = (
            src if transport != "udp" else (src[0], src[1] if via.rport is not None else via.port)
        )
        return [Send(transport, addr, self._reply(m, status, reason), conn)]

    # ------------------------------------------------------------------ input
    def receive(
        self,
        data: bytes,
        transport: str,
        src: tuple[str, int],
        conn: Any,
        now: float,
        stir: StirVerdict | None = None,
    ) -> list[Send]:
        """One datagram or one framed stream message from ``src`` (``stir``: the edge's
        verification of its Identity header, for a new INVITE)."""
        # CRLF keep-alive (RFC 5626 §4.4.1); the adapter answers pings.  The first byte
        # tells every real message apart without copying it (strip() made a copy).
        if not data or ((data[0] == 13 or data[0] == 10) and not data.strip(b"\r\n")):
            return []
        try:
            m = wire.parse(data, stream=transport != "udp")
            if not m.method:
                # A response is relayed only when the full parser would accept it too
                # (requests are checked in _on_request, after the flood check).
                wire.validate(m)
        except BadMessage as exc:
            self.stats.bad_messages += 1
            return self._reply_unparsable(data, exc, transport, src, conn)
        if m.method:
            return self.receive_request(m, data, transport, src, conn, now, stir)
        return self._on_response(m, now)

    def receive_request(
        self,
        m: Message,
        data: bytes,
        transport: str,
        src: tuple[str, int],
        conn: Any,
        now: float,
        stir: StirVerdict | None = None,
    ) -> list[Send]:
        """A request ``data`` the caller has parsed already into ``m`` (the service's
        load shedding reads a new INVITE before it decides): as :meth:`receive`."""
        scanners = self.scanners
        # Only a request with a User-Agent or Server line can match (parse noted it).
        if scanners is not None and m.product and scanners.match(data):
            self.stats.scanner_drops += 1
            return []  # no answer at all: the scanner's list stays empty
        return self._on_request(m, transport, src, conn, now, stir)

    def _reply_unparsable(
        self, data: bytes, exc: BadMessage, transport: str, src: tuple[str, int], conn: Any
    ) -> list[Send]:
        # §16.3 step 1: answer a malformed request with 400 when there is enough left to
        # address a response (Via, From, To, Call-ID, CSeq); otherwise drop it.
        if data.startswith(b"SIP/") or len(data) > wire.MAX_MESSAGE:
            return []
        m = Message()
        end = data.find(b"\r\n\r\n")
        lines = (data if end < 0 else data[:end]).split(b"\r\n")
        request_line = lines[0].count(b" ") == 2 and lines[0].upper().endswith(b"SIP/2.0")
        if not request_line and exc.status != 505:  # 505: another SIP-Version, answerable
            return []
        m.lines = lines
        for i, line in enumerate(lines[1:], 1):
            colon = line.find(b":")
            if colon <= 0:
                continue
            raw = line[:colon].strip().lower()
            name = wire.COMPACT.get(raw, raw)
            value = line[colon + 1 :].strip()
            if name == b"via":
                m.vias.append(i)
            elif name == b"from":
                m.from_ = i
            elif name == b"to":
                m.to = i
            elif name == b"call-id":
                m.call_id = value
            elif name == b"cseq":
                num, _, meth = value.partition(b" ")
                m.cseq_num, m.cseq_method = num, meth.strip()
        if not m.vias or m.from_ < 0 or m.to < 0 or not m.call_id or not m.cseq_num:
            return []
        if lines[0].startswith(b"ACK "):
            return []
        try:
            via = Via(m.top_via())
        except BadMessage:
            return []
        addr = (src[0], src[1] if via.rport is not None else via.port)
        return [Send(transport, addr, self._reply(m, exc.status, exc.reason.encode()), conn)]

    # ------------------------------------------------------------------ requests
    def _on_request(
        self,
        m: Message,
        transport: str,
        src: tuple[str, int],
        conn: Any,
        now: float,
        stir: StirVerdict | None = None,
    ) -> list[Send]:
        method = m.method
        req = self.stats.requests
        # Known methods by name; anything else under OTHER, so a peer inventing method
        # names cannot grow the table (or the metric's label set) without bound.
        name = _METHOD_NAMES.get(method, "OTHER")
        req[name] = req.get(name, 0) + 1
        ip = src[0]
        if ip[:1] == "[":  # stream peers are named like URI hosts; received= has no brackets
            ip = ip[1:-1]
        bans = self.bans
        if bans is not None and bans.active and bans.is_banned(ip, now):
            self.stats.auth_ban_drops += 1
            return []
        trunks = self.trunks
        if self.pike is not None and (trunks is None or not trunks.known(ip)):
            verdict = self.pike.check(ip, now)
            if verdict.verdict is not Verdict.ALLOW and not self.is_emergency(m):
                return self._flooding(m, verdict, transport, src, conn)
        # A carrier's in-dialog request to the Contact topology hiding gave it: a new
        # Request-URI per call, which the core's URI parser would read for every ACK and
        # BYE (~12,000 instructions each); the bytes are the router's own, known valid.
        issued = self._issued(m) if self.hidden else None
        try:
            wire.validate(m, issued is not None)
            via = Via(m.top_via())
        except BadMessage as exc:
            self.stats.bad_messages += 1
            if method == b"ACK" or not m.vias:
                return []
            return [Send(transport, src, self._reply(m, exc.status, exc.reason.encode()), conn)]
        # RFC 3581 §4 / §18.2.1: record where the request really came from.
        if (via.host != ip and via.host[1:-1] != ip) or via.rport is not None:
            i = m.vias[0]
            line = m.lines[i]
            top = m.top_via()
            pos = line.find(top) + len(top)
            params = via.params
            if via.rport is not None:
                params = _set_param(params, b"rport", str(src[1]).encode())
            params = _set_param(params, b"received", ip.encode())
            start = pos - len(top)
            m.lines[i] = line[:start] + top[: len(top) - len(via.params)] + params + line[pos:]
        reply_addr = (ip, src[1]) if via.rport is not None else (ip, via.port)
        if transport != "udp":
            reply_addr = src
        if method == b"ACK":
            return self._on_ack(m, via, now, issued)
        key = (via.branch or m.call_id + b"/" + m.cseq_num, via.sent_by, method)
        txn = self.txns.get(key)
        if txn is not None:
            self.stats.retransmissions += 1
            if txn.last is not None:
                return [Send(txn.transport, txn.reply_addr, txn.last, txn.conn)]
            return []
        if self._accepted and key in self._accepted and self._accepted[key] > now:
            self.stats.retransmissions += 1  # an answered INVITE again: absorbed
            return []
        if self._byes_done and method == b"BYE":
            done = self._byes_done.get(key)
            if done is not None and done[0] > now:
                self.stats.retransmissions += 1  # an answered BYE again: the same answer
                return [Send("udp", done[2], done[1], None)]
        if method == b"CANCEL":
            return self._on_cancel(m, via, transport, reply_addr, conn, now)
        try:
            return self._route_request(
                m, via, key, transport, reply_addr, conn, now, src[1], stir, issued
            )
        except BadMessage as exc:
            self.stats.bad_messages += 1
            return [
                Send(transport, reply_addr, self._reply(m, exc.status, exc.reason.encode()), conn)
            ]

    def _flooding(
        self, m: Message, verdict: Any, transport: str, src: tuple[str, int], conn: Any
    ) -> list[Send]:
        if verdict.newly_blocked:
            self.stats.pike_blocks += 1
            log.warning("RATE LIMIT: %s", src[0])
        if verdict.verdict is Verdict.DROP or m.method == b"ACK":
            self.stats.pike_drops += 1
            return []
        self.stats.pike_rejects += 1
        try:
            wire.validate(m)
            via = Via(m.top_via())
        except BadMessage:
            return []
        addr = (src[0], src[1] if via.rport is not None else via.port)
        extra = self._retry_after(verdict.retry_after)
        return [Send(transport, addr, self._reply(m, 503, b"Too Many Requests", extra), conn)]

    def _strip_own_routes(self, m: Message) -> tuple[list[bytes], str, int]:
        """§16.4: remove the Route entries that name this proxy from the top.

        Returns the remaining Route values and the transport of the last removed entry
        (with double Record-Route it says which side the request leaves on)."""
        values: list[bytes] = []
        for i in m.routes:
            rest = m.value(i)
            while rest:
                first, rest = wire.first_value(rest)
                values.append(first)
        popped_transport = ""
        n = 0
        for v in values:
            t, host, port, _ = wire.uri_target(v)
            if not self.is_local(host, port):
                break
            popped_transport = t or popped_transport
            n += 1
        return values[n:], popped_transport, n

    def _prepare(self, m: Message, kept: list[bytes] | None) -> list[bytes]:
        """The forwarded header lines after the start line (§16.6 steps 1–6): own Route
        entries gone, Max-Forwards decremented (or 70 added)."""
        out = m.lines[1:]  # a C-level copy; then edit the few lines that change
        mf = m.maxfwd
        if mf > 0:
            out[mf - 1] = b"Max-Forwards: %d" % (int(m.value(mf)) - 1)
        if kept is not None and m.routes:
            first = m.routes[0] - 1
            for i in reversed(m.routes[1:]):
                del out[i - 1]
            if kept:
                out[first] = b"Route: " + b", ".join(kept)
            else:
                del out[first]
        if mf < 0:
            out.append(b"Max-Forwards: 70")
        return out

    def _route_request(
        self,
        m: Message,
        via: Via,
        key: tuple[bytes, bytes, bytes],
        transport: str,
        reply_addr: tuple[str, int],
        conn: Any,
        now: float,
        src_port: int = 0,
        stir: StirVerdict | None = None,
        issued: HiddenDialog | None = None,
    ) -> list[Send]:
        method = m.method

        def reply(
            status: int, reason: bytes | None = None, extra: tuple[bytes, ...] = ()
        ) -> list[Send]:
            return [Send(transport, reply_addr, self._reply(m, status, reason, extra), conn)]

        # §16.3 validation.
        if m.maxfwd >= 0:
            mf = m.value(m.maxfwd)
            if not mf.isdigit():
                return reply(400, b"Bad Max-Forwards")
            if int(mf) == 0:
                return reply(483)
        if m.proxy_require >= 0:
            return reply(420, None, (b"Unsupported: " + m.value(m.proxy_require),))
        loop = wire.loop_hash(m).encode()
        for i in m.vias:
            line = m.lines[i]
            if any(line.find(sb) >= 0 for sb in self._sent_by) and (
                line.find(self._prefix + loop) >= 0
            ):
                return reply(482)
        # §16.4 route preprocessing and §16.5 target.
        kept: list[bytes] | None = None
        popped = ""
        n_own = 0
        if m.routes:
            kept, popped, n_own = self._strip_own_routes(m)
        to_tag = m.to_tag()
        dispatched = False
        if kept:
            t, host, port, _ = wire.uri_target(kept[0])
            out_transport = t or "udp"
        elif issued is not None and to_tag:
            # our own sbth- URI, as written (no ;alias=): the node's target
            out_transport, host, port = self._retarget(m, issued)
        else:
            t, host, port, _ = wire.uri_target(m.ruri)
            out_transport = t or popped or "udp"
            alias = _take_alias(m)
            hidden = self._hidden_target(m) if to_tag and self.hidden else None
            if alias is not None:
                out_transport, host, port = alias
            elif hidden is not None:
                out_transport, host, port = hidden
            elif self.is_local(host, port):
                if to_tag:
                    return reply(404, b"Not Here")
                dispatched = True
        trunk: TrunkState | None = None
        if not to_tag and self.trunks is not None:
            trunk = self.trunks.identify(reply_addr[0], src_port, transport[:3])
            allowed = trunk is not None
        else:
            allowed = bool(to_tag) or self.acl.allows(reply_addr[0])
        if not allowed:
            # Before the router's own OPTIONS answer: a scanner outside the allow list
            # learns nothing (drop), or only "Forbidden" with no product name.
            if self.acl_drop:
                self.stats.acl_drops += 1
                return []
            self.stats.acl_rejects += 1
            return reply(403)
        if dispatched and method == b"OPTIONS" and m.ruri.find(b"@") < 0:
            return reply(200, None, (b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",))
        order: list[Destination] = []
        admission = None
        emergency = ""
        if dispatched:
            if method == b"INVITE" and self.emergency is not None:
                emergency = self._emergency_number(m, trunk)
            if self.draining and method == b"INVITE" and not emergency:
                return reply(503, b"Shutting Down", self._retry_after(self.settings.retry_after))
            cid = m.call_id.decode("utf-8", "replace")
            order = self.dispatcher.select(self.settings.setid, cid)
            if emergency and self.settings.emergency_setid:
                first = self.dispatcher.select(self.settings.emergency_setid, cid)
                order = first + [d for d in order if d not in first]
            if not order:
                return reply(
                    503,
                    self.settings.unavailable_reason.encode(),
                    self._retry_after(self.settings.retry_after),
                )
            if self.edge is not None and method == b"INVITE" and not emergency:
                refused = self._edge_shed(order, now)
                if refused:
                    return reply(503, None, refused)
            if trunk is not None and method == b"INVITE" and emergency:
                assert self.trunks is not None
                admission = self.trunks.admit_emergency(
                    trunk, emergency, _user(m.ruri).decode("utf-8", "replace"), now
                )
                country = trunk.country or "any"
                self.stats.emergency[country] = self.stats.emergency.get(country, 0) + 1
                log.warning("emergency call to %s on trunk %s (%s)", emergency, trunk.name,
                            m.call_id.decode("utf-8", "replace"))  # fmt: skip
            elif trunk is not None and method == b"INVITE":
                assert self.trunks is not None
                if trunk.tls_names:
                    # mutual TLS on this trunk: over TLS, with a certificate naming it
                    names = None
                    if transport == "tls" and self.tls_peer_names is not None:
                        names = self.tls_peer_names(reply_addr)  # streams: the connection
                    if not trunk.tls_allows(names):
                        status, reason, _ = trunk.reject("tls_client")
                        return reply(status, reason)
                admission = self.trunks.admit(
                    trunk, _user(m.ruri).decode("utf-8", "replace"), _from_user(m), now
                )
                if admission.status:
                    return reply(
                        admission.status, admission.reason, self._retry_after(admission.retry_after)
                    )
            else:
                trunk = None
        txn = ServerTxn()
        txn.key = key
        txn.method = method
        txn.is_invite = method == b"INVITE"
        txn.msg = m
        txn.transport = transport
        txn.reply_addr = reply_addr
        txn.conn = conn
        txn.call_id = m.call_id
        txn.started = now
        txn.loop = loop
        txn.dispatched = dispatched
        txn.in_iface = self.interfaces.get(iface_key(transport, reply_addr[0]))
        txn.record_route = not to_tag and method in _DIALOG_CREATING
        txn.first = m.lines[0]
        txn.fwd = self._prepare(m, kept if n_own else None)
        if trunk is not None:
            self._trunk_request(txn, trunk, admission, now, stir)
        if self.hide_topology:
            self._hide_request(txn, m, dispatched, now)
        if transport != "udp" and method != b"REGISTER":
            # A caller on TCP/TLS is reached back over its own connection, not by opening
            # one to its Contact (a phone or carrier without a server certificate cannot
            # accept TLS): the Contact carries where the connection came from.
            _add_alias(txn.fwd, transport, reply_addr)
        txn.no_cl = m.cl < 0
        self.txns[key] = txn
        self.stats.transactions_total += 1
        out: list[Send] = []
        if txn.is_invite:
            # §16.2 / §17.2.1: an INVITE gets 100 Trying from the proxy itself; it is also
            # what a retransmitted INVITE gets until something better arrives.
            txn.last = self._reply(m, 100)
            out.append(Send(transport, reply_addr, txn.last, conn))
        if dispatched:
            txn.order = order
            out.extend(self._next_destination(txn, now))
        else:
            addr = self.resolve(host)
            if addr is None:
                return out + self._finish(txn, 503, None, now, b"Unresolvable Destination")
            if self.signer is not None and txn.is_invite and not to_tag:
                self._sign(txn, m, addr, port, out_transport)
            out.extend(self._forward(txn, out_transport, (addr, port), None, now))
        return out

    def _forward(
        self,
        txn: ServerTxn,
        transport: str,
        addr: tuple[str, int],
        dest: Destination | None,
        now: float,
    ) -> list[Send]:
        """§16.6 steps 7–11: own Via with a unique branch, Record-Route, new client branch."""
        key = iface_key(transport, addr[0])
        iface = self.interfaces.get(key)
        via_iface = self.via_interfaces.get(key)
        if iface is None or via_iface is None:
            br = Branch(b"", txn, transport, addr)
            br.dest = dest
            return self._branch_failed(br, 503, now, None)
        bid = self._prefix + txn.loop + b"." + self._token()
        via_line = via_iface.forward_via + bid
        lines = [txn.first, via_line]
        if txn.record_route:
            lines.append(iface.record_route)
            if txn.in_iface is not None and txn.in_iface is not iface:
                # Double Record-Route across transports so each side sees a URI it can use.
                lines.append(txn.in_iface.record_route)
        lines.extend(txn.fwd)
        body = txn.msg.body
        if txn.no_cl and transport != "udp":
            lines.append(b"Content-Length: %d" % len(body))
        data = wire.build(lines, body)
        br = Branch(bid, txn, transport, addr)
        br.dest = dest
        br.data = data
        br.via_line = via_line
        txn.branch = br
        txn.branches.append(br)
        self.branches[bid] = br
        if transport == "udp":
            self._after(now, T1, _RETRANS, br)
        if dest is not None:
            self._after(now, self.settings.failover_timeout, _FAILOVER, br)
        else:
            self._after(now, TIMER_B if txn.is_invite else TIMER_F, _FAILOVER, br)
        return [Send(transport, addr, data, None, bid)]

    def _next_destination(self, txn: ServerTxn, now: float) -> list[Send]:
        while txn.order:
            dest = txn.order.pop(0)
            if not dest.selectable:
                continue
            addr = self.resolve(dest.spec.host)
            if addr is None:
                continue
            if txn.is_invite:
                _release(txn.dest)
                dest.active_calls += 1
                if self.edge is not None:
                    self.edge.tried()
            txn.dest = dest
            return self._forward(txn, dest.transport, (addr, dest.spec.port), dest, now)
        return self._finish(txn, 0, None, now)

    def _on_ack(
        self, m: Message, via: Via, now: float, issued: HiddenDialog | None = None
    ) -> list[Send]:
        txn = self.txns.get((via.branch, via.sent_by, b"INVITE"))
        if txn is not None and txn.final >= 300:
            if not txn.acked:
                # §17.2.1: the ACK for our non-2xx final ends the exchange hop-by-hop.
                txn.acked = True
                self._after(now, T4 if txn.transport == "udp" else 0.0, _CLEANUP, txn)
            return []
        # ACK for 2xx: its own transaction end to end, forwarded statelessly (§16.11).
        if m.maxfwd >= 0:
            mf = m.value(m.maxfwd)
            if not mf.isdigit() or int(mf) == 0:
                return []
        hidden: tuple[str, str, int] | None = None
        try:
            kept, popped, n_own = self._strip_own_routes(m) if m.routes else (None, "", 0)
            if kept:
                t, host, port, _ = wire.uri_target(kept[0])
                transport = t or "udp"
            elif issued is not None:
                hidden = self._retarget(m, issued)
                transport, host, port = hidden
            else:
                t, host, port, _ = wire.uri_target(m.ruri)
                transport = t or popped or "udp"
                alias = _take_alias(m)
                hidden = self._hidden_target(m) if self.hidden else None
                if alias is not None:
                    transport, host, port = alias
                elif hidden is not None:
                    transport, host, port = hidden
                elif self.is_local(host, port):
                    return []
        except BadMessage:
            return []
        addr = self.resolve(host)
        iface = self.via_interfaces.get(iface_key(transport, addr)) if addr else None
        if addr is None or iface is None:
            return []
        # §16.11: a stateless branch is a function of the incoming one, so a
        # retransmitted ACK gets the same branch.
        bid = self._prefix + b"%08x" % zlib.crc32(via.branch + via.sent_by) + b".a"
        fwd = self._prepare(m, kept if n_own else None)
        h = self.hidden_calls.get(m.call_id) if self.hidden else None
        if h is not None and hidden is None:  # the node's ACK towards the carrier
            fwd = [
                h.contact if _is_contact(ln) else ln
                for ln in fwd
                if not _is_via(ln) and not _is_product(ln)
            ]
        lines = [m.lines[0], iface.forward_via + bid, *fwd]
        if m.cl < 0 and transport != "udp":
            lines.append(b"Content-Length: %d" % len(m.body))
        return [Send(transport, (addr, port), wire.build(lines, m.body))]

    def _on_cancel(
        self,
        m: Message,
        via: Via,
        transport: str,
        reply_addr: tuple[str, int],
        conn: Any,
        now: float,
    ) -> list[Send]:
        """§16.10: 200 at once, then CANCEL the pending branch."""
        inv = self.txns.get((via.branch, via.sent_by, b"INVITE"))
        if inv is None:
            return self._forward_unmatched_cancel(m, via, transport, reply_addr, conn)
        out = [Send(transport, reply_addr, self._reply(m, 200), conn)]
        if inv.final:
            return out
        inv.cancelled = True
        if inv.shed_retry == 1:  # no branch pending: waiting to try the nodes again
            return out + self._finish(inv, 487, None, now)
        br = inv.branch
        if br is not None and not br.final and br.cancel is None:
            if br.provisional:
                out.extend(self._send_cancel(br, now))
            else:
                br.cancel_pending = True  # §9.1: wait for a provisional response
        return out

    def _forward_unmatched_cancel(
        self, m: Message, via: Via, transport: str, reply_addr: tuple[str, int], conn: Any
    ) -> list[Send]:
        """§16.10: no response context — "It MUST statelessly forward the CANCEL request
        (it may have statelessly forwarded the associated request previously)": e.g. the
        INVITE went through the other router of a keepalived pair, or before a restart.
        The target is chosen as §16.11 requires for the INVITE: only from the message."""

        def reply(status: int) -> list[Send]:
            return [Send(transport, reply_addr, self._reply(m, status), conn)]

        if m.maxfwd >= 0:
            mf = m.value(m.maxfwd)
            if not mf.isdigit():
                return reply(400)
            if int(mf) == 0:
                return reply(483)
        try:
            kept, popped, n_own = self._strip_own_routes(m) if m.routes else (None, "", 0)
            if kept:
                t, host, port, _ = wire.uri_target(kept[0])
                out_transport = t or "udp"
            else:
                t, host, port, _ = wire.uri_target(m.ruri)
                out_transport = t or popped or "udp"
                if self.is_local(host, port):
                    # Dispatched: deterministic only for the Call-ID hash (rendezvous:
                    # the same live destination the INVITE got); round-robin, weight,
                    # priority rotation and call-load cannot be replayed.
                    if self.dispatcher.algorithm != 0:
                        return reply(481)
                    order = self.dispatcher.select(
                        self.settings.setid, m.call_id.decode("utf-8", "replace")
                    )
                    if not order:
                        return reply(481)
                    dest = order[0]
                    host, port, out_transport = dest.spec.host, dest.spec.port, dest.transport
        except BadMessage as exc:
            self.stats.bad_messages += 1
            return reply(exc.status)
        if not self.acl.allows(reply_addr[0]):  # not an open CANCEL relay either
            self.stats.acl_rejects += 1
            return reply(403)
        addr = self.resolve(host)
        iface = self.via_interfaces.get(iface_key(out_transport, addr)) if addr else None
        if addr is None or iface is None:
            return reply(481)
        # §16.11: the branch is a function of the incoming one (retransmissions match).
        bid = self._prefix + b"%08x" % zlib.crc32(via.branch + via.sent_by) + b".c"
        lines = [m.lines[0], iface.forward_via + bid, *self._prepare(m, kept if n_own else None)]
        if m.cl < 0 and out_transport != "udp":
            lines.append(b"Content-Length: %d" % len(m.body))
        return [Send(out_transport, (addr, port), wire.build(lines, m.body))]

    def _send_cancel(self, br: Branch, now: float) -> list[Send]:
        """§9.1: same R-URI, Call-ID, From, To, CSeq number, Route and top Via branch."""
        txn = br.txn
        m = txn.msg
        br.cancel_pending = False
        lines = [
            b"CANCEL " + m.ruri + b" SIP/2.0",
            br.via_line,
            *_route_lines(txn),
            m.lines[m.from_],
            m.lines[m.to],
            b"Call-ID: " + m.call_id,
            b"CSeq: " + m.cseq_num + b" CANCEL",
            b"Max-Forwards: 70",
            b"Content-Length: 0",
        ]
        br.cancel = wire.build(lines, b"")
        if br.transport == "udp":
            self._after(now, T1, _CANCEL_RETRANS, br)
        self._after(now, TIMER_F, _CANCEL_GIVEUP, br)
        return [Send(br.transport, br.addr, br.cancel, None)]

    def _ack_for(self, br: Branch, resp: Message) -> Send:
        """§17.1.1.3: the client transaction ACKs a non-2xx final itself."""
        m = br.txn.msg
        lines = [
            b"ACK " + m.ruri + b" SIP/2.0",
            br.via_line,
            *_route_lines(br.txn),
            m.lines[m.from_],
            resp.lines[resp.to] if resp.to >= 0 else m.lines[m.to],
            b"Call-ID: " + m.call_id,
            b"CSeq: " + m.cseq_num + b" ACK",
            b"Max-Forwards: 70",
            b"Content-Length: 0",
        ]
        return Send(br.transport, br.addr, wire.build(lines, b""))

    # ------------------------------------------------------------------ responses
    def _on_response(self, m: Message, now: float) -> list[Send]:
        if not m.vias:
            return []
        branch = wire.branch_of(m.top_via())
        br = self.branches.get(branch)
        if br is None:
            if self._own_byes and branch in self._own_byes:
                return self._own_bye_answered(branch, m)
            try:
                via = Via(m.top_via())
            except BadMessage:
                self.stats.bad_messages += 1
                return []
            pid = self.probes.pop(via.branch, None)
            if pid is not None:
                calls = reported_calls(m) if m.status < 300 else None
                ch = self.dispatcher.probe_answered(pid, m.status, now, calls)
                if ch is not None:
                    self.on_state_change(ch)
                return []
            return self._stateless_response(m, via)
        return self._on_branch_response(m, br, now)

    def _on_branch_response(self, m: Message, br: Branch, now: float) -> list[Send]:
        """§16.7 for a response that matched one of our client branches."""
        if m.cseq_method != br.method:
            if m.cseq_method == b"CANCEL":
                br.cancel_answered = True
            return []
        dest = br.dest
        if dest is not None and dest.failures and not br.responded:
            # The destination answers calls: earlier silences were not "consecutive"
            # failures (a busy moment must not mark a working media node inactive).
            ch = self.dispatcher.report_success(dest)
            if ch is not None:
                self.on_state_change(ch)
        txn = br.txn
        status = m.status
        if status < 200:
            return self._provisional(br, txn, m, now)
        if br.abandoned:
            return self._late_final(br, m, now)
        if br.final:
            # A retransmitted final: re-ACK a non-2xx, pass a 2xx on (the UAC ACKs it).
            if status >= 300:
                return [self._ack_for(br, m)] if br.is_invite else []
            if br.is_invite and 200 <= br.final < 300:
                return self._upstream(txn, self._relay(txn, m, status), status, count=True)
            if br.is_invite and txn.dispatched:
                # a 2xx after this branch's failure: a new life of the node answered a
                # retransmission of the INVITE it had refused — ended like a late answer
                return self._late_final(br, m, now)
            return []
        br.final = status
        br.responded = True
        if status < 300:
            if self.settings.lost_node_timeout and txn.is_invite and not txn.final:
                self._remember_far_end(txn, m, now)  # before _relay: m's indexes hold
            data = self._relay(txn, m, status)
            if txn.final and not txn.is_invite:
                return []
            if not txn.final:
                txn.final = status
                txn.last = data
                self._after(now, self.settings.wait_time, _CLEANUP, txn)
            if txn.is_invite and txn.dispatched:
                trunk = txn.trunk
                if trunk is not None:
                    self._trunk_final(txn, status, now, ended=False)
                self.dialogs[txn.call_id] = Dialog(txn.dest, now, trunk)
            elif txn.method == b"BYE":
                self._end_dialog(txn.call_id)
            return self._upstream(txn, data, status, count=True)
        if status in _AUTH_FAILED and _has_credentials(txn):
            self._auth_failed(txn, now)
        out: list[Send] = [self._ack_for(br, m)] if br.is_invite else []
        if txn.final:
            return out
        txn.responses.append((status, self._strip(m)))
        # (every node's shed 503 is noted, the last one tried included)
        shed_everywhere = status == 503 and txn.dispatched and self._shed_everywhere(br, txn, now)
        if (
            txn.dispatched
            and not txn.cancelled
            and status in self.settings.failover_codes
            and not _from_far_end(m)
            and any(d.selectable for d in txn.order)
            and not shed_everywhere
        ):
            self.stats.failovers += 1
            return out + self._next_destination(txn, now)
        if shed_everywhere and self._shed_retry(txn, now):
            return out
        return out + self._finish(txn, 0, None, now)

    def _shed_retry(self, txn: ServerTxn, now: float) -> bool:
        """Every node shed this new call: send it to them again once, after the smallest
        Retry-After they gave (RFC 3261 §21.5.4: the time after which the client may try
        again), instead of answering the caller 503 at once. A node's shedding can be a
        transient — a second's stall while a peer node's crash recovery takes the box's
        CPU — and the caller, who has our 100 Trying, waits a second rather than losing
        the call. Once per call and only for a short Retry-After (at most
        :data:`SHED_RETRY_MAX` s): an overloaded platform answers 503 on the second
        round, and a node still shedding then is not asked (its Retry-After has not
        run out: :meth:`_shed_everywhere`). True when the retry is scheduled."""
        if txn.shed_retry or txn.cancelled or not txn.is_invite:
            return False
        retry = _shed_retry_after(txn.responses)
        if retry is None or retry > SHED_RETRY_MAX:
            return False
        txn.shed_retry = 1
        self.stats.shed_retries += 1
        self._at(now + max(retry, 1), _SHED_RETRY, txn)
        return True

    def _shed_everywhere(self, br: Branch, txn: ServerTxn, now: float) -> bool:
        """A 503 from ``br``'s destination: when it shed the call (Retry-After, no Reason:
        docs/router.md "Overload"), note until when it sheds; True when every node left to
        try is shedding too — trying them would only give them more work to refuse."""
        if br.dest is None or txn.responses[-1][1] is None:
            return False
        retry = _shed_retry_after(txn.responses[-1:])
        if retry is None:
            return False
        shedding = self._shedding
        shedding[br.dest.spec.uri] = now + max(retry, 1)
        if self.edge is not None:
            self.edge.shed(br.dest.spec.uri, retry)
        if len(shedding) > 64:  # destinations removed by a reload
            for uri in [u for u, until in shedding.items() if until <= now]:
                del shedding[uri]
        return all(shedding.get(d.spec.uri, 0.0) > now for d in txn.order if d.selectable)

    def _edge_shed(self, order: list[Destination], now: float) -> tuple[bytes, ...]:
        """Refuse this new call here, for the nodes that are shedding (router/overload.py)?
        Its 503's Retry-After line when so, () when the call goes to a node."""
        edge = self.edge
        assert edge is not None
        if edge.due(now):
            edge.update(now, [d.spec.uri for d in order])
        if not edge.refuse():
            return ()
        self.stats.overload_rejects += 1
        self.stats.edge_sheds += 1
        return self._retry_after(edge.retry_after) or (b"Retry-After: 1",)

    def _provisional(self, br: Branch, txn: ServerTxn, m: Message, now: float) -> list[Send]:
        out: list[Send] = []
        first = not br.responded
        br.responded = True
        br.provisional = True
        if br.final or txn.branch is not br or txn.final:
            # A branch we gave up on woke up: cancel it (§16.7 step 10).
            if br.cancel is None and not 200 <= br.final < 300 and not br.late_final:
                out.extend(self._send_cancel(br, now))
                if br.abandoned:
                    br.keep_until = max(br.keep_until, now + TIMER_F)
            return out
        if br.cancel_pending:
            out.extend(self._send_cancel(br, now))
        if m.status > 100 and txn.t0 >= 0 and txn.trunk is not None:
            txn.trunk.observe_pdd(now - txn.t0)
            txn.t0 = -1.0
        if m.status > 100:
            # §16.7 step 5: forward provisionals other than 100 at once; reset Timer C.
            # hidden once, and kept hidden for a retransmitted INVITE (txn.last)
            data = self._relay(txn, m, m.status)
            txn.last = data
            out.extend(self._upstream(txn, data, m.status, count=True))
        if txn.is_invite:
            # Timer C lives in a small dict swept once a second, not in the heap: a heap
            # entry would pin the transaction in memory for its full 3 minutes.
            br.timer_c_at = now + self.settings.timer_c
            if first:
                self._ringing[br] = None
        return out

    def _strip(self, m: Message) -> bytes:
        """§16.7 step 3: remove the topmost Via (ours)."""
        self._strip_via(m)
        return wire.build(m.lines, m.body)

    def _strip_via(self, m: Message) -> None:
        """Our Via out of ``m.lines`` (its line, or its value when the line joins more)."""
        i = m.vias[0]
        if m.lines[i].find(b",") >= 0:
            _, rest = wire.first_value(m.value(i))
            if rest:
                m.lines[i] = wire.header_name(m.lines[i]) + b": " + rest
            else:
                del m.lines[i]
        else:
            del m.lines[i]

    def _upstream(self, txn: ServerTxn, data: bytes, status: int, *, count: bool) -> list[Send]:
        """``data`` (from :meth:`_relay`: hidden already) to the transaction's source."""
        if count:
            self._count_reply(status)
        return [Send(txn.transport, txn.reply_addr, data, txn.conn)]

    def _relay(self, txn: ServerTxn, m: Message, status: int) -> bytes:
        """Response ``m`` as it goes upstream: our Via gone (§16.7 step 3) and, when its
        transaction crosses the edge, hidden as :meth:`_outward` hides — here on the
        parsed lines, with their kinds from the parse, and built once (splitting the
        built bytes again and classifying every line cost ~17,000 instructions per
        response: callgrind). A Server/User-Agent line (not indexed) takes the bytes way."""
        h = txn.hide
        if txn.hidden_vias:
            self._strip_via(m)
            lines = m.lines
            return wire.build([lines[0], *txn.hidden_vias, *lines[1:]], m.body)
        if h is None:
            return self._strip(m)
        if m.product:
            return self._outward(txn, self._strip(m), status)
        lines = list(m.lines)
        i = m.vias[0]
        top = lines[i]
        lines[i] = b""  # no header line is empty: b"" marks the lines left out
        if top.find(b",") >= 0:
            _, rest = wire.first_value(m.value(i))
            if rest:
                lines[i] = wire.header_name(top) + b": " + rest
        for r in m.rrs:
            lines[r] = b""
        dialog = h is not _NO_DIALOG
        target = dialog and txn.is_invite and status < 300
        for kind, c in m.checked:
            if kind == wire.CONTACT:
                if target:
                    h.node_target = _contact_uri(lines[c]) or h.node_target
                lines[c] = h.contact if dialog else b""
        return wire.build([ln for ln in lines if ln], m.body)

    # ------------------------------------------------------------------ topology hiding
    def _hide_request(self, txn: ServerTxn, m: Message, dispatched: bool, now: float) -> None:
        """Decide how this transaction crosses the edge (Kamailio topos semantics).

        * A new dialog from a carrier (dispatched INVITE): its responses show a Contact
          of the router (``sbth-KEY``) and no Record-Route, so the carrier's in-dialog
          requests come back to the router, which sends them to the node's target.
        * Any other dispatched request: responses lose Contact and Record-Route.
        * A request of a hidden dialog from the node towards the carrier: it leaves with
          only the router's Via and Contact; the node's Vias are put back on responses.
        """
        if dispatched:
            if txn.is_invite:
                key = b"%x" % zlib.crc32(m.call_id + self._token()) + self._token()
                iface = txn.in_iface or self.interfaces.get(txn.transport)
                uri = b""
                if iface is not None:
                    uri = b"sip:sbth-" + key + b"@" + iface.hostport + b";transport="
                    uri += iface.transport.encode()
                    contact = b"Contact: <" + uri + b">"
                else:
                    contact = b"Contact: <sip:sbth-" + key + b"@>"
                h = HiddenDialog(key, m.call_id, contact, now, uri)
                self.hidden[key] = h
                self.hidden_calls[m.call_id] = h
                txn.hide = h
            else:
                txn.hide = _NO_DIALOG
            return
        found = self.hidden_calls.get(m.call_id)
        if found is None:
            return
        h = found
        if txn.msg.ruri == h.node_target:
            txn.hide = h  # from the carrier: its answers are hidden like the INVITE's
            return
        # From the media node towards the carrier.
        fwd = txn.fwd
        txn.hidden_vias = [ln for ln in fwd if _is_via(ln)]
        txn.fwd = [
            h.contact if _is_contact(ln) else ln
            for ln in fwd
            if not _is_via(ln) and not _is_product(ln)
        ]

    def _hidden_dialog(self, m: Message) -> HiddenDialog | None:
        """The hidden dialog whose ``sbth-KEY`` the Request-URI names (any form), once
        the node's target is known."""
        ruri = m.ruri
        at = ruri.find(b"sbth-")
        if at < 0:
            return None
        end = at + 5
        n = len(ruri)
        alnum = _ALNUM  # a table: a slice and isalnum() per byte cost ~300 instructions
        while end < n and alnum[ruri[end]]:
            end += 1
        h = self.hidden.get(ruri[at + 5 : end])
        if h is None or not h.node_target:
            return None
        return h

    def _issued(self, m: Message) -> HiddenDialog | None:
        """The hidden dialog when the Request-URI is byte for byte the Contact URI the
        router gave the carrier (a URI it wrote: valid, sip:, no parameters of the
        carrier's) — the carrier's usual in-dialog request."""
        if not m.method or m.ruri[:9] != b"sip:sbth-":
            return None
        h = self._hidden_dialog(m)
        return h if h is not None and h.uri == m.ruri else None

    def _retarget(self, m: Message, h: HiddenDialog) -> tuple[str, str, int]:
        """The Request-URI rewritten to the node's target; (transport, host, port)."""
        t, host, port, _ = wire.uri_target(h.node_target)
        m.lines[0] = m.lines[0].replace(m.ruri, h.node_target, 1)
        m.ruri = h.node_target
        return t or "udp", host, port

    def _hidden_target(self, m: Message) -> tuple[str, str, int] | None:
        """A carrier's in-dialog request to ``sbth-KEY@router``: the node's target, with
        the Request-URI rewritten to it."""
        h = self._hidden_dialog(m)
        return None if h is None else self._retarget(m, h)

    def _outward(self, txn: ServerTxn, data: bytes, status: int) -> bytes:
        """A response leaving for the side it came from: hidden towards a carrier, the
        kept-back Vias restored towards a node."""
        if txn.hidden_vias:
            first, _, rest = data.partition(b"\r\n")
            return first + b"\r\n" + b"\r\n".join(txn.hidden_vias) + b"\r\n" + rest
        h = txn.hide
        if h is None:
            return data
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        out = [lines[0]]
        for ln in lines[1:]:
            role = _role(ln)
            if role == _CONTACT_LINE:
                if h is not _NO_DIALOG:
                    if txn.is_invite and status < 300:
                        h.node_target = _contact_uri(ln) or h.node_target
                    out.append(h.contact)
            elif role != _RR_LINE and role != _PRODUCT_LINE:
                out.append(ln)
        return b"\r\n".join(out) + sep + body

    def _drop_hidden(self, h: HiddenDialog) -> None:
        if h is _NO_DIALOG:
            return
        self.hidden.pop(h.key, None)
        if self.hidden_calls.get(h.call_id) is h:
            del self.hidden_calls[h.call_id]

    def _stateless_response(self, m: Message, via: Via) -> list[Send]:
        """§16.7 / §16.11: a response with no client transaction (a late 2xx) goes up by
        the next Via, if the top one is ours."""
        if via.sent_by not in self._sent_by or (
            len(m.vias) < 2 and m.value(m.vias[0]).find(b",") < 0
        ):
            return []
        data = self._strip(m)
        try:
            nxt = Via(m.top_via())
        except BadMessage:
            return []
        host, port = nxt.reply_address()
        addr = self.resolve(host)
        if addr is None:
            return []
        self._count_reply(m.status)
        return [Send(nxt.transport, (addr, port), data)]

    def _finish(
        self,
        txn: ServerTxn,
        status: int,
        data: bytes | None,
        now: float,
        reason: bytes | None = None,
    ) -> list[Send]:
        """Send the final response upstream. ``status`` 0: choose the best one (§16.7 step 6)."""
        if txn.final:
            return []
        extra: tuple[bytes, ...] = ()
        if status == 0:
            if txn.cancelled:
                status, data = 487, None
            elif not txn.responses:
                status, data = 503, None
                reason = self.settings.unavailable_reason.encode()
            else:
                six = [r for r in txn.responses if r[0] >= 600]
                status, data = (
                    six[0]
                    if six
                    else min(
                        txn.responses,
                        key=lambda r: (r[0] // 100, r[0] not in _PREFERRED_4XX, r[0] == 503),
                    )
                )
                if status == 503:
                    retry = _shed_retry_after(txn.responses)
                    if retry is not None:
                        # Every destination shed the call (overloaded): the platform is,
                        # so the caller gets our own 503 and when to come back.
                        self.stats.overload_rejects += 1
                        data, extra = None, self._retry_after(retry)
                    else:
                        # §16.7 step 6: a lone 503 means only "this hop is busy": answer 500.
                        status, data = 500, None
        txn.final = status
        if txn.trunk is not None:
            self._trunk_final(txn, status, now, ended=True)
        if data is None:
            data = self._reply(txn.msg, status, reason, extra)
        else:
            self._count_reply(status)
            data = self._outward(txn, data, status)
        txn.last = data
        if txn.hide is not None and txn.is_invite and not txn.msg.to_tag():
            self._drop_hidden(txn.hide)  # the dialog was never established
        if txn.is_invite:
            _release(txn.dest)
            txn.dest = None
            if txn.transport == "udp":
                self._after(now, T1, _RESP_RETRANS, txn)
            self._after(now, TIMER_H, _CLEANUP, txn)
        else:
            self._after(now, self.settings.wait_time, _CLEANUP, txn)
        if txn.method == b"BYE":
            # no 2xx: the leg ended for the BYE's sender all the same (§15.1.1). Nothing
            # answered at all: its node may be gone — a lost node's leg is then billed up
            # to this BYE, not sent one (a final from the other end: it is not gone)
            answered = any(data is not None for _, data in txn.responses)
            self._end_dialog(txn.call_id, bye_failed=0.0 if answered else txn.started)
        return [Send(txn.transport, txn.reply_addr, data, txn.conn)]

    def _auth_failed(self, txn: ServerTxn, now: float) -> None:
        """A request that carried credentials was refused: count it against its source
        (the edge is where a password guesser is stopped, whatever node refused it)."""
        self.stats.auth_failures += 1
        ip = txn.reply_addr[0]
        log.info("authentication failed for %s from %s", txn.method.decode(), ip)
        if self.bans is None:
            return
        ban = self.bans.failed(ip, now)
        if ban is not None:
            self.stats.auth_bans += 1
            log.warning(ban.log_line())

    def _end_dialog(self, call_id: bytes, bye_failed: float = 0.0) -> None:
        if self.far_ends:
            if bye_failed:
                fe = self.far_ends.get(call_id)
                if fe is not None and not fe.bye_at:
                    fe.bye_at = bye_failed  # kept for its CDR if the node is lost
            else:
                self.far_ends.pop(call_id, None)
        d = self.dialogs.pop(call_id, None)
        if d is not None:
            _release(d.dest)
            if d.trunk is not None:
                d.trunk.release()
        h = self.hidden_calls.get(call_id)
        if h is not None:
            self._drop_hidden(h)

    # ------------------------------------------------------------------ trunks
    def _trunk_request(
        self,
        txn: ServerTxn,
        trunk: TrunkState,
        admission: Any,
        now: float,
        stir: StirVerdict | None = None,
    ) -> None:
        """An admitted trunk INVITE: the normalised numbers in the R-URI and From, the
        trunk's name (and account) and the STIR verdict for the media node — never a
        value from outside."""
        txn.trunk = trunk
        txn.t0 = now
        fwd = [line for line in txn.fwd if not _is_trunk_header(line)]
        if admission is not None and admission.called is not None:
            txn.first = _replace_user(txn.first, admission.called.encode())
        if admission is not None and admission.calling is not None:
            for i, line in enumerate(fwd):
                if line[:5].lower() == b"from:" or line[:2].lower() == b"f:":
                    fwd[i] = _replace_user(line, admission.calling.encode())
                    break
        fwd.append(trunk.header)
        if admission is not None and admission.emergency:
            fwd.append(b"X-Switchboard-Emergency: " + admission.emergency.encode())
        if stir is None and self.verify_identity:
            stir = NOT_VERIFIED
        if stir is not None:
            fwd.extend(stir.header_lines())
            if self.verstat_to_callee:
                _add_verstat(fwd, stir.verstat.encode())
        txn.fwd = fwd

    def is_emergency(self, m: Message, src: tuple[str, int] | None = None,
                     transport: str = "udp") -> bool:  # fmt: skip
        """A new INVITE to an emergency number, spared pike and load shedding: the number
        of any country, or (``src`` given) the number of the source's trunk after its
        tech prefix."""
        if self.emergency is None or m.method != b"INVITE" or m.to_tag():
            return False
        if _user(m.ruri).decode("utf-8", "replace") in self.emergency.all:
            return True
        if src is None or self.trunks is None:
            return False
        trunk = self.trunks.identify(src[0], src[1], transport[:3])
        return trunk is not None and bool(self._emergency_number(m, trunk))

    def _emergency_number(self, m: Message, trunk: TrunkState | None) -> str:
        """The emergency number a new INVITE dials on ``trunk`` ("" when it is not one)."""
        assert self.emergency is not None
        user = _user(m.ruri).decode("utf-8", "replace")
        if trunk is not None and trunk.tech_prefix and user.startswith(trunk.tech_prefix):
            user = user[len(trunk.tech_prefix) :]
        country = trunk.country if trunk is not None else ""
        return user if self.emergency.match(user, country) else ""

    def _sign(self, txn: ServerTxn, m: Message, addr: str, port: int, transport: str) -> None:
        """A new INVITE leaving towards a trunk that signs: add our Identity (RFC 8224)
        unless it already carries one."""
        if self.trunks is None or self.signer is None:
            return
        trunk = self.trunks.identify(addr, port, transport[:3])
        if trunk is None or any(_is_identity(line) for line in txn.fwd):
            return
        calling = _asserted_user(txn.fwd) or _from_user(m)
        called = _user(m.ruri).decode("utf-8", "replace")
        value = self.signer(trunk, calling, called)
        if value is not None:
            txn.fwd.append(b"Identity: " + value)

    def _trunk_final(self, txn: ServerTxn, status: int, now: float, *, ended: bool) -> None:
        """The INVITE's final response: count its disposition (and the post-dial delay if
        no ringing came first); a failed call releases its trunk slot now, an answered
        one when its dialog ends."""
        trunk = txn.trunk
        assert trunk is not None
        pdd = now - txn.t0 if txn.t0 >= 0 else None
        txn.t0 = -1.0
        trunk.count(disposition(status), pdd)
        if ended:
            trunk.release()
        txn.trunk = None

    # ------------------------------------------------------------------ failures
    def _branch_failed(self, br: Branch, status: int, now: float, report: str | None) -> list[Send]:
        br.final = status
        self._abandon(br, now)
        if report and br.dest is not None:
            ch = self.dispatcher.report_failure(br.dest, report)
            if ch is not None:
                self.on_state_change(ch)
        txn = br.txn
        if txn.final or txn.dead:
            return []
        if txn.cancelled:
            return self._finish(txn, 487, None, now)
        txn.responses.append((status, None))
        if (
            txn.dispatched
            and status in self.settings.failover_codes
            and any(d.selectable for d in txn.order)
        ):
            self.stats.failovers += 1
            return self._next_destination(txn, now)
        return self._finish(txn, 0, None, now)

    def _accept(self, key: tuple[bytes, bytes, bytes], now: float) -> None:
        """An INVITE answered 2xx leaves the transaction table after ``wait_time``, but
        its retransmissions are absorbed until Timer L (RFC 6026 §7.1, "Accepted"): a
        caller that missed the 100 and the 2xx (its socket overflowing under load) keeps
        retransmitting, and a copy arriving after the transaction ended was a new call —
        dispatched again and answered by a node a second time (bench/chaos at load 42:
        162 calls billed twice). Only the key is kept (~100 bytes), not the transaction."""
        acc, order = self._accepted, self._accepted_order
        until = now + TIMER_L
        acc[key] = until
        order.append((until, key))
        while order and order[0][0] <= now:
            t, k = order.popleft()
            if acc.get(k) == t:
                del acc[k]

    def _bye_done(self, txn: ServerTxn, now: float) -> None:
        """A BYE over UDP leaves the transaction table after ``wait_time`` (5 s), but its
        server transaction stays Completed until Timer J, 32 s (§17.2.2), answering each
        retransmission with the same response. A caller that missed the 200 (its socket
        overflowing under load) retransmits its BYE for up to 32 s (Timer E/F); a copy
        arriving after 5 s found no transaction and, its dialog and topology-hiding
        mapping gone, got ``404 Not Here`` — a failed call for the carrier (bench/chaos
        at load 27: 505 calls). Only the key, the answer and its address are kept
        (~500 bytes), not the transaction."""
        assert txn.last is not None
        done, order = self._byes_done, self._byes_done_order
        until = txn.started + TIMER_J
        if until <= now:
            return
        done[txn.key] = (until, txn.last, txn.reply_addr)
        order.append((until, txn.key))
        while order and order[0][0] <= now:
            t, k = order.popleft()
            entry = done.get(k)
            if entry is not None and entry[0] == t:
                del done[k]

    # ------------------------------------------------------------------ branches given up
    def _abandon(self, br: Branch, now: float) -> None:
        """The router gave ``br`` up without its final response (no answer within
        ``failover_timeout``, Timer C, a transport error, a CANCEL never answered).

        The destination may still have the INVITE — a media node restarted after a crash
        reads the retransmission queued for it — and answer it after the call went to
        another node. Such a branch is kept for Timer B (longer once it is cancelled):
        a provisional response gets it a CANCEL, retransmitted until answered (§9.1,
        §16.10); a final response is ACKed, a 2xx ended with ACK and BYE by the router
        itself (:meth:`_late_final`). Only for dispatched INVITEs: the router chose
        that destination, so the leg it left behind is the router's to clean up.
        """
        txn = br.txn
        if not br.id or not br.is_invite or not txn.dispatched or br.abandoned:
            return
        br.abandoned = True
        br.keep_until = now + TIMER_B

    def _late_final(self, br: Branch, m: Message, now: float) -> list[Send]:
        """A final response on a branch the router had given up (:meth:`_abandon`).

        A non-2xx is only ACKed (§17.1.1.3). A 2xx is not forwarded although §16.7 step
        5 forwards every 2xx: the caller already has its answer from another node (or
        its failure), and a second dialog from the same INVITE is the UAC's to end
        (§13.2.2.4) — a carrier's UAC that does not would leave the node's leg, and its
        carrier leg, up and billed until their RTP timeout. The router, which made the
        failover decision, ends it: ACK (§13.2.2.4, to the 2xx's Contact) and BYE with
        ``Reason: SIP;cause=200;text="Call completed elsewhere"`` (RFC 3326) to the
        destination the INVITE went to. A retransmitted 2xx gets the same ACK again.
        """
        if m.status >= 300:
            br.late_final = m.status
            return [self._ack_for(br, m)]
        if br.late_ack is not None:
            return [Send(br.transport, br.addr, br.late_ack, None)]
        if m.to < 0:
            return []
        br.late_final = m.status
        txn = br.txn
        im = txn.msg
        contact = next((line for line in m.lines if _is_contact(line)), None)
        target = _contact_uri(contact) if contact is not None else im.ruri
        via = br.via_line[: len(br.via_line) - len(br.id)]
        dialog = [im.lines[im.from_], m.lines[m.to], b"Call-ID: " + im.call_id]
        ack_id = self._prefix + self._token()
        br.late_ack = wire.build(
            [
                b"ACK " + target + b" SIP/2.0",
                via + ack_id,
                *dialog,
                b"CSeq: " + im.cseq_num + b" ACK",
                b"Max-Forwards: 70",
                b"Content-Length: 0",
            ],
            b"",
        )
        bye_id = self._prefix + self._token()
        cseq = int(im.cseq_num) + 1 if im.cseq_num.isdigit() else 2
        data = wire.build(
            [
                b"BYE " + target + b" SIP/2.0",
                via + bye_id,
                *dialog,
                b"CSeq: %d BYE" % cseq,
                b"Max-Forwards: 70",
                b'Reason: SIP;cause=200;text="Call completed elsewhere"',
                b"Content-Length: 0",
            ],
            b"",
        )
        self._own_bye(bye_id, br.transport, br.addr, data, now)
        self.stats.late_answers_ended += 1
        log.warning(
            "call %s answered by %s:%d after the router had given that node up: "
            "ACKed and ended with BYE (the caller's call is on another node)",
            im.call_id.decode("utf-8", "replace"),
            br.addr[0],
            br.addr[1],
        )
        return [
            Send(br.transport, br.addr, br.late_ack, None),
            Send(br.transport, br.addr, data, None),
        ]

    def _own_bye(
        self, bid: bytes, transport: str, addr: tuple[str, int], data: bytes, now: float
    ) -> None:
        bye = OwnBye(bid, transport, addr, data, now + TIMER_F)
        self._own_byes[bid] = bye
        self._at(now + T1 if transport == "udp" else bye.until, _OWN_BYE, bye)

    # ------------------------------------------------------------------ lost media nodes
    def _remember_far_end(self, txn: ServerTxn, m: Message, now: float) -> None:
        """A 2xx to an INVITE (``m``, indexes valid): if one end of the dialog is a media
        node, keep what ending it from the router takes (:class:`FarEnd`) — a dispatched
        call's caller, or the carrier of a call a node placed through the router. A caller
        on TCP/TLS is reached over the connection it opened (kept with the entry)."""
        im = txn.msg
        if m.to < 0 or im.from_ < 0:
            return
        if txn.dispatched:
            dest = txn.dest
            if dest is None:
                return
            contact = b""
            # the caller's Contact: its remote target (§12.1.1), by the parse's line kinds
            # (_is_contact on every line cost ~5,800 instructions per call: callgrind)
            for kind, i in im.checked:
                if kind == wire.CONTACT:
                    contact = im.lines[i]
                    break
            if not contact:
                return
            fe = FarEnd(dest.spec.uri, im.call_id, txn.transport, contact,
                        [im.lines[i] for i in im.rrs], im.lines[im.from_], m.lines[m.to],
                        _FAR_END_CSEQ, now, to_caller=True)  # fmt: skip
            if txn.trunk is not None:
                fe.trunk = txn.trunk
                for line in txn.fwd:  # the From as forwarded: a trunk may set its user
                    if line[:5].lower() == b"from:" or line[:2].lower() == b"f:":
                        fe.caller_line = line
                        break
            if txn.transport != "udp":
                fe.conn = txn.conn
                fe.conn_addr = txn.reply_addr
        else:
            br = txn.branch
            if br is None or im.to_tag():
                return
            if not self._node_addrs:
                self._refresh_node_addrs()
            node = self._node_addrs.get(txn.reply_addr)
            if node is None:
                return
            contact = b""
            for ln in m.lines:
                if _is_contact(ln):
                    contact = ln
                    break
            if not contact:
                return
            cseq = int(im.cseq_num) if im.cseq_num.isdigit() else 1
            fe = FarEnd(node, im.call_id, br.transport, contact, [m.lines[i] for i in m.rrs],
                        im.lines[im.from_], m.lines[m.to], cseq + _FAR_END_CSEQ, now,
                        to_caller=False)  # fmt: skip
        fe.request_line = txn.first  # as forwarded (a trunk's tech prefix removed)
        fe.started = txn.started
        self.far_ends[fe.call_id] = fe
        if not self._sweeping:
            self._sweeping = True
            self._after(now, 1.0, _LOST_SWEEP, None)

    def _refresh_node_addrs(self) -> None:
        addrs: dict[tuple[str, int], str] = {}
        for d in self.dispatcher.destinations():
            ip = self.resolve(d.spec.host)
            if ip is not None:
                addrs[(ip, d.spec.port)] = d.spec.uri
        self._node_addrs = addrs

    def _end_lost_nodes(self, now: float) -> list[Send]:
        """Once a second while the router holds node dialogs: a node inactive (no probe
        answered) for ``lost_node_timeout`` — longer than its own restart, warm spare and
        reaper take (docs/media.md "Crash recovery") — is taken for lost with its box, and
        the router ends its calls: BYE to every far end it still holds a dialog with
        (a reaper or a restarted node that ended them sent BYEs through the router, which
        removed them)."""
        timeout = self.settings.lost_node_timeout
        lost: set[str] = set()
        for d in self.dispatcher.destinations():
            uri = d.spec.uri
            if d.state is DestinationState.INACTIVE:
                if now - self._down_since.setdefault(uri, now) >= timeout:
                    lost.add(uri)
            else:
                self._down_since.pop(uri, None)
        self._refresh_node_addrs()
        out: list[Send] = []
        if lost:
            ended: dict[str, list[int]] = {}
            for cid, fe in list(self.far_ends.items()):
                if fe.node in lost:
                    n = ended.setdefault(fe.node, [0, 0])
                    if fe.bye_at:
                        n[1] += 1  # its far end hung up (its BYE went unanswered)
                    else:
                        out.extend(self._bye_far_end(fe, now))
                        n[0] += 1
                    self._end_dialog(cid)
                    self.on_lost_leg(fe, now)
            for uri, (byes, hung_up) in ended.items():
                self.stats.lost_node_calls_ended += byes
                log.warning(
                    "media node %s inactive for %.0f s (lost_node_timeout): %d call leg(s) "
                    "it held ended by the router, BYE to their far ends; %d more hung up "
                    "by their far ends meanwhile",
                    uri, now - self._down_since[uri], byes, hung_up,
                )  # fmt: skip
        if self.far_ends and not self._sweeping:
            self._sweeping = True
            self._after(now, 1.0, _LOST_SWEEP, None)
        return out

    def _bye_far_end(self, fe: FarEnd, now: float) -> list[Send]:
        """The BYE the lost node would have sent (§15.1.1, §12.2.1.1): to the far end's
        Contact by the dialog's route set — for the caller the INVITE's Record-Route in
        order, for a carrier the 2xx's entries beyond the router's own, reversed."""
        try:
            rrs = _rr_values(fe.routes)
            if not fe.to_caller:
                beyond: list[bytes] = []
                for v in rrs:
                    if any(hp in v for hp in self._sent_by):
                        break
                    beyond.append(v)
                rrs = beyond[::-1]
            target = _contact_uri(fe.target)
            t, host, port, _ = wire.uri_target(rrs[0] if rrs else target)
        except BadMessage:
            return []
        transport = t or fe.transport
        if fe.conn_addr is not None:
            # a caller on TCP/TLS: over the connection it opened (the next hop either way:
            # its first Record-Route is the proxy at the far end of that connection)
            transport = fe.transport
            host, port = fe.conn_addr
        addr = self.resolve(host)
        iface = self.via_interfaces.get(iface_key(transport, addr)) if addr else None
        if addr is None or iface is None:
            return []
        if fe.to_caller:
            dialog = [b"From: " + _value(fe.to_line), b"To: " + _value(fe.from_line)]
        else:
            dialog = [fe.from_line, fe.to_line]
        bid = self._prefix + self._token()
        data = wire.build(
            [
                b"BYE " + target + b" SIP/2.0",
                iface.forward_via + bid,
                *[b"Route: " + r for r in rrs],
                *dialog,
                b"Call-ID: " + fe.call_id,
                b"CSeq: %d BYE" % fe.cseq,
                b"Max-Forwards: 70",
                # what the node's reaper says (docs/media.md "Crash recovery")
                b'Reason: Q.850;cause=38;text="NETWORK_OUT_OF_ORDER"',
                b"Content-Length: 0",
            ],
            b"",
        )
        self._own_bye(bid, transport, (addr, port), data, now)
        return [Send(transport, (addr, port), data, fe.conn, bid)]

    def _own_bye_answered(self, branch: bytes, m: Message) -> list[Send]:
        if m.status >= 200:
            bye = self._own_byes.pop(branch)
            bye.answered = True
        return []

    def transport_error(self, branch: bytes, now: float) -> list[Send]:
        """The service could not send a request of ``branch`` (§16.9: as if 503)."""
        pid = self.probes.pop(branch, None)
        if pid is not None:
            ch = self.dispatcher.probe_failed(pid)
            if ch is not None:
                self.on_state_change(ch)
            return []
        br = self.branches.get(branch)
        if br is None or br.final or br.responded:
            return []
        return self._branch_failed(br, 503, now, "transport error")

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float:
        """The next instant :meth:`handle_timer` must run."""
        t = min(self.dispatcher.get_timer(), self._next_sweep)
        if self._ringing and self._next_c_sweep < t:
            t = self._next_c_sweep
        return min(t, self._timers.next())

    def heap_deadline(self) -> float:
        """The earliest transaction timer (the only deadline :meth:`receive` can move
        earlier); cheaper than :meth:`get_timer` for a per-message check."""
        return self._timers.next()

    def handle_timer(self, now: float) -> list[Send]:
        out: list[Send] = []
        timers = self._timers
        while True:
            due = timers.pop_due(now)
            if due is None:
                break
            out.extend(self._fire(due[0], due[1], now))
        if self.dispatcher.get_timer() <= now:
            requests, changes = self.dispatcher.handle_timer(now)
            for ch in changes:
                self.on_state_change(ch)
            for req in requests:
                s = self._probe(req)
                if s is not None:
                    out.append(s)
            if len(self.probes) > 64:
                self.probes = {
                    b: p for b, p in self.probes.items() if self.dispatcher.is_pending(p)
                }
        if self._ringing and now >= self._next_c_sweep:
            self._next_c_sweep = now + 1.0
            for br in list(self._ringing):
                if br.final or br.txn.dead:
                    del self._ringing[br]
                elif br.timer_c_at <= now:
                    del self._ringing[br]
                    # §16.8: Timer C fired after a provisional: CANCEL, then as on 408.
                    if br.cancel is None:
                        out.extend(self._send_cancel(br, now))
                    out.extend(self._branch_failed(br, 408, now, None))
        if now >= self._next_sweep:
            self._next_sweep = now + 60.0
            cutoff = now - self.settings.dialog_expire
            for cid, d in list(self.dialogs.items()):
                if d.created > cutoff:
                    break
                self._end_dialog(cid)
            for h in list(self.hidden_calls.values()):
                if h.created > cutoff:
                    break
                self._drop_hidden(h)
            for cid, fe in list(self.far_ends.items()):
                if fe.created > cutoff:
                    break
                del self.far_ends[cid]
        return out

    def _fire(self, kind: int, obj: Any, now: float) -> list[Send]:
        if kind == _RETRANS:
            br: Branch = obj
            if br.responded or br.final or br.txn.dead or br.txn.final:
                return []
            # Timers A (INVITE: doubling) and E (non-INVITE: capped at T2), UDP only.
            br.interval = br.interval * 2 if br.is_invite else min(br.interval * 2, T2)
            self._after(now, br.interval, _RETRANS, br)
            return [Send(br.transport, br.addr, br.data, None, br.id)]
        if kind == _FAILOVER:
            br = obj
            if br.responded or br.final:
                return []
            self.stats.branch_timeouts += 1
            return self._branch_failed(br, 408, now, "no answer" if br.dest is not None else None)
        if kind == _RESP_RETRANS:
            txn: ServerTxn = obj
            if txn.acked or txn.dead or txn.last is None:
                return []
            txn.g_interval = min(txn.g_interval * 2, T2)  # Timer G
            self._after(now, txn.g_interval, _RESP_RETRANS, txn)
            return [Send(txn.transport, txn.reply_addr, txn.last, txn.conn)]
        if kind == _CLEANUP:
            txn = obj
            if not txn.dead and self.txns.get(txn.key) is txn:
                txn.dead = True
                del self.txns[txn.key]
                if txn.is_invite and 200 <= txn.final < 300:
                    self._accept(txn.key, now)
                elif txn.method == b"BYE" and txn.transport == "udp" and txn.last is not None:
                    self._bye_done(txn, now)
                for b in txn.branches:
                    self._ringing.pop(b, None)
                    if b.abandoned and b.keep_until > now:
                        self._at(b.keep_until, _FORGET, b)  # a late answer still finds it
                    else:
                        self.branches.pop(b.id, None)
                # Break the txn <-> branch cycle so reference counting frees both at
                # once: no garbage-collector pauses under load.
                txn.branches = []
                txn.branch = None
            return []
        if kind == _SHED_RETRY:
            txn = obj
            if txn.dead or txn.final or txn.shed_retry != 1:
                return []
            txn.shed_retry = 2
            if not txn.cancelled:
                cid = txn.call_id.decode("utf-8", "replace")
                shedding = self._shedding  # a node that shed another call since: not asked
                txn.order = [d for d in self.dispatcher.select(self.settings.setid, cid)
                             if shedding.get(d.spec.uri, 0.0) <= now]  # fmt: skip
                if txn.order:
                    return self._next_destination(txn, now)
            return self._finish(txn, 0, None, now)  # 487 when cancelled, else the 503
        if kind == _CANCEL_RETRANS:
            br = obj
            if br.abandoned:
                # Given up: retransmitted until the node answers it or the branch's
                # own final arrives, for Timer F (the txn may be gone by then).
                if br.cancel_answered or br.late_final or br.cancel is None:
                    return []
                if now >= br.keep_until:
                    return []
            elif br.cancel_answered or br.final or br.cancel is None or br.txn.dead:
                return []
            br.cancel_interval = min(br.cancel_interval * 2, T2)
            self._after(now, br.cancel_interval, _CANCEL_RETRANS, br)
            return [Send(br.transport, br.addr, br.cancel, None)]
        if kind == _CANCEL_GIVEUP:
            br = obj
            if br.final:
                return []
            # §9.1: no final within 64·T1 after CANCEL: consider the branch cancelled.
            br.final = 487
            self._abandon(br, now)
            txn = br.txn
            return self._finish(txn, 487, None, now) if not txn.final else []
        if kind == _FORGET:
            br = obj
            if br.keep_until > now:
                self._at(br.keep_until, _FORGET, br)
            elif self.branches.get(br.id) is br:
                del self.branches[br.id]
            return []
        if kind == _LOST_SWEEP:
            self._sweeping = False
            return self._end_lost_nodes(now)
        if kind == _OWN_BYE:
            bye: OwnBye = obj
            if bye.answered or now >= bye.until:
                self._own_byes.pop(bye.id, None)
                return []
            if bye.transport == "udp":
                bye.interval = min(bye.interval * 2, T2)  # Timer E
                self._at(min(now + bye.interval, bye.until), _OWN_BYE, bye)
                return [Send(bye.transport, bye.addr, bye.data, None)]
            self._at(bye.until, _OWN_BYE, bye)
            return []
        return []  # pragma: no cover

    def _probe(self, req: ProbeRequest) -> Send | None:
        dest = req.destination
        addr = self.resolve(dest.spec.host)
        iface = self.via_interfaces.get(iface_key(dest.transport, addr)) if addr else None
        if iface is None or addr is None:
            ch = self.dispatcher.probe_failed(req.probe_id)
            if ch is not None:
                self.on_state_change(ch)
            return None
        bid = self._prefix + b"probe." + self._token()
        self.probes[bid] = req.probe_id
        uri = dest.uri.encode()
        lines = [
            b"OPTIONS " + uri + b" SIP/2.0",
            iface.via + bid + b";rport",
            b"Max-Forwards: 70",
            b"From: <sip:dispatcher@" + iface.hostport + b">;tag=" + self._token(),
            b"To: <" + uri + b">",
            b"Call-ID: " + bid[len(MAGIC) :] + b"@" + iface.host.encode(),
            b"CSeq: 1 OPTIONS",
            b"Content-Length: 0",
        ]
        return Send(dest.transport, (addr, dest.spec.port), wire.build(lines, b""), None, bid)

    # ------------------------------------------------------------------ inspection
    @property
    def transaction_count(self) -> int:
        return len(self.txns)

    @property
    def dialog_count(self) -> int:
        return len(self.dialogs)

    def pending_transactions(self) -> int:
        """Transactions still waiting for a final response (drain waits for these)."""
        return sum(1 for t in self.txns.values() if not t.final)


CALLS_HEADER: Final = b"x-switchboard-calls:"
"""A media node's live channel count on its OPTIONS answers (docs/media.md)."""


def reported_calls(m: Message) -> int | None:
    """The ``X-Switchboard-Calls`` value of a probe answer (None: absent or not a count)."""
    n = len(CALLS_HEADER)
    for line in m.lines[1:]:
        if line[:n].lower() == CALLS_HEADER:
            value = line[n:].strip()
            return int(value) if value.isdigit() and len(value) < 10 else None
    return None


_AUTH_FAILED: Final = frozenset((401, 403, 407))
_CREDENTIALS: Final = (b"authorization:", b"proxy-authorization:")


def _has_credentials(txn: ServerTxn) -> bool:
    """Did the request carry Authorization/Proxy-Authorization (a 401 to a request without
    is the normal first step of digest, not a failure)?"""
    return any(ln[:20].lower().startswith(_CREDENTIALS) for ln in txn.fwd)


_NO_DIALOG: Final = HiddenDialog(b"", b"", b"", 0.0)
"""Hiding without a dialog (a dispatched non-INVITE): responses lose Contact/Record-Route."""


def _is_via(line: bytes) -> bool:
    low = line[:4].lower()
    return low == b"via:" or low[:2] == b"v:" or (low == b"via " and line[:8].find(b":") >= 0)


_ALNUM: Final = bytes(1 if chr(c).isascii() and chr(c).isalnum() else 0 for c in range(256))
_OTHER: Final = 0
_CONTACT_LINE: Final = 1
_RR_LINE: Final = 2
_PRODUCT_LINE: Final = 3
_VIA_LINE: Final = 4
# Header name as spelled before the colon → its role for topology hiding; the spellings
# a peer uses are few, so a line costs a short scan, a slice and a dict lookup instead of
# three lower-cased prefixes (~2,900 instructions per line, callgrind). Bounded.
_ROLES: Final[dict[bytes, int]] = {}


def _role(line: bytes) -> int:
    """_CONTACT_LINE, _RR_LINE, _PRODUCT_LINE, _VIA_LINE or _OTHER (the _is_* tests)."""
    c = wire.colon(line)
    if c < 0:
        return _role_of(line)
    name = line[:c]
    role = _ROLES.get(name)
    if role is None:
        role = _role_of(line)
        if len(_ROLES) >= 1024:
            _ROLES.clear()
        _ROLES[name] = role
    return role


def _role_of(line: bytes) -> int:
    if _is_contact(line):
        return _CONTACT_LINE
    if _is_rr(line):
        return _RR_LINE
    if _is_product(line):
        return _PRODUCT_LINE
    if _is_via(line):
        return _VIA_LINE
    return _OTHER


def _is_contact(line: bytes) -> bool:
    low = line[:8].lower()
    return low == b"contact:" or low[:2] == b"m:" or low == b"contact "


def _is_rr(line: bytes) -> bool:
    return line[:13].lower() == b"record-route:" or line[:13].lower() == b"record-route "


def _is_product(line: bytes) -> bool:
    """Server / User-Agent: they name the internal product and version."""
    low = line[:11].lower()
    return low[:7] in (b"server:", b"server ") or low in (b"user-agent:", b"user-agent ")


def _contact_uri(line: bytes) -> bytes:
    lt = line.find(b"<")
    gt = line.find(b">", lt + 1)
    if lt >= 0 and gt > lt:
        return line[lt + 1 : gt]
    value = line.partition(b":")[2].strip()
    return value.partition(b";")[0]


_ALIAS: Final = b";alias="


def _add_alias(lines: list[bytes], transport: str, src: tuple[str, int]) -> None:
    """Append ``;alias=HOST~PORT~TRANSPORT`` (the connection's far end) to the first
    Contact URI (Kamailio's add_contact_alias), so in-dialog requests towards that
    Contact come back here and leave on the connection the caller opened."""
    for i, line in enumerate(lines):
        low = line[:8].lower()
        if not (low.startswith(b"contact:") or low.startswith(b"m:")):
            continue
        host = src[0] if src[0][:1] == "[" or ":" not in src[0] else f"[{src[0]}]"
        alias = _ALIAS + b"%s~%d~%s" % (host.encode(), src[1], transport.encode())
        lt = line.find(b"<")
        gt = line.find(b">", lt + 1)
        if lt >= 0 and gt > lt:
            lines[i] = line[:gt] + alias + line[gt:]
        else:
            name, _, value = line.partition(b":")
            value = value.strip()
            if value == b"*":
                return
            uri, semi, params = value.partition(b";")  # bare URI: ';' starts header params
            lines[i] = name + b": <" + uri + alias + b">" + semi + params
        return


def _take_alias(m: Message) -> tuple[str, str, int] | None:
    """A request whose R-URI carries our ``alias``: (transport, host, port) of the
    connection to use, and the parameter removed from the R-URI (§16.6: we added it)."""
    ruri = m.ruri
    at = ruri.find(_ALIAS)
    if at < 0:
        return None
    end = len(ruri)
    for stop in (b";", b"?", b">"):
        j = ruri.find(stop, at + len(_ALIAS))
        if 0 <= j < end:
            end = j
    host, _, rest = ruri[at + len(_ALIAS) : end].partition(b"~")
    port, _, transport = rest.partition(b"~")
    t = transport.decode("ascii", "replace").lower()
    if not port.isdigit() or t not in ("udp", "tcp", "tls") or not host:
        return None
    new = ruri[:at] + ruri[end:]
    m.lines[0] = m.lines[0].replace(ruri, new, 1)
    m.ruri = new
    return t, host.decode("ascii", "replace"), int(port)


_FAR_END_CSEQ: Final = 100_000


def _value(line: bytes) -> bytes:
    return line[wire.colon(line) + 1 :].strip()


def _rr_values(lines: list[bytes]) -> list[bytes]:
    """Record-Route lines → their values, one per URI, in order (§7.3.1 comma lists)."""
    out = []
    for line in lines:
        rest = _value(line)
        while rest:
            first, rest = wire.first_value(rest)
            if first:
                out.append(first)
    return out


def _route_lines(txn: ServerTxn) -> list[bytes]:
    """The Route header lines the request was forwarded with (for CANCEL and ACK, §9.1)."""
    return [ln for ln in txn.fwd if ln[:6].lower() == b"route:"]


def _set_param(params: bytes, name: bytes, value: bytes) -> bytes:
    """Set ``;name=value`` in a Via parameter string (replacing an existing one)."""
    parts = params.split(b";")
    for i, part in enumerate(parts[1:], 1):
        if part.partition(b"=")[0].strip().lower() == name:
            parts[i] = name + b"=" + value
            return b";".join(parts)
    return params + b";" + name + b"=" + value


def _log_state_change(ch: StateChanged) -> None:
    level = logging.WARNING if ch.new.value in ("inactive", "trying") else logging.INFO
    log.log(
        level,
        "destination %s (set %d): %s -> %s (%s)",
        ch.destination.uri,
        ch.destination.spec.setid,
        ch.old.value,
        ch.new.value,
        ch.reason,
    )
