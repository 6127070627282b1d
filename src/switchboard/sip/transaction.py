"""SIP transactions: the four RFC 3261 §17 state machines and the table that holds them.

Theory of operation
===================

A transaction is a request and every response to it (§17).  Four machines exist:

* INVITE client (§17.1.1, Figure 5, with RFC 6026 §8.4 "Accepted" state),
* non-INVITE client (§17.1.2, Figure 6),
* INVITE server (§17.2.1, Figure 7, with RFC 6026 §8.5–8.7 "Accepted" state),
* non-INVITE server (§17.2.2, Figure 8).

Each machine is a transition table below: ``(state, input) -> (next state, actions)``.
Inputs are messages from the network (``RECV_*``), responses handed down by the
transaction user (``TU_*``), timers firing (``TIMER_*``) and transport failures.
Actions are the side effects the RFC prescribes on that arrow: (re)transmit, pass a
message up, start or stop timers.  A network input missing from a table is absorbed
(the RFC's "discarded"/"absorbed" arrows are spelled out; anything else is a stray
duplicate and is dropped with a debug log); a TU input missing from the table is the
caller's bug and raises :class:`TransactionStateError`.

Nothing here does IO or reads a clock.  :class:`TransactionLayer` owns every
transaction of one SIP element.  Each of its methods takes ``now`` (seconds on any
monotonic clock, e.g. ``loop.time()``) and returns a list of outputs, in order:

* :class:`Transmit` — bytes to send to a :class:`Peer` (the net adapter sends them),
* TU events — :class:`RequestReceived`, :class:`ResponseReceived`,
  :class:`AckReceived`, :class:`TimedOut`, :class:`TransportFailed`,
  :class:`Terminated`.

Timers are data: all running timers of all transactions sit in one heap, so the
adapter keeps ONE timer per layer: after every call it re-arms at
:meth:`TransactionLayer.get_timer` and, when that fires, calls
:meth:`TransactionLayer.handle_timer`.  Tests drive the same methods with a fake
clock.  On a reliable transport Timers A, E and G never start and Timers D, I, J and
K are zero (the transition happens at once, inside the same call).

Matching (§17.1.3, §17.2.3): a response matches the client transaction whose branch
and CSeq method it carries; a request matches the server transaction with the same
branch, sent-by and method (ACK matches its INVITE).  A branch without the RFC 3261
magic cookie ``z9hG4bK`` came from an RFC 2543 element and is matched on Request-URI,
tags, Call-ID, CSeq and top Via instead.

ACK for a 2xx is its own end-to-end transaction and never matches by branch; it goes
to the TU as :class:`AckReceived`.  A UAS layer (``retransmit_2xx=True``) retransmits
its 2xx itself (§13.3.1.4) until such an ACK arrives; a proxy leaves that to the UAS.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace
from typing import Any, NamedTuple

from switchboard.sip.dialog import build_cancel
from switchboard.sip.errors import SipError, SipParseError
from switchboard.sip.headers import Via
from switchboard.sip.message import Request, Response, make_response
from switchboard.sip.timers import DEFAULT_TIMERS, TimerValues

log = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element."""

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})
DEFAULT_PORTS = {"TLS": 5061, "WSS": 443, "WS": 80}


class Peer(NamedTuple):
    """Where a message came from or goes to: transport (upper case), host, port.

    For TCP the adapter keys its connections by (host, port), so a response sent to
    the request's source peer leaves on the connection the request came in on
    (§18.2.2).
    """

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True for stream transports, where Timers A/E/G are off and D/I/J/K zero."""
        return self.transport in RELIABLE_TRANSPORTS


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``data`` to ``peer``; ``transaction`` is told about a transport failure."""

    data: bytes
    peer: Peer
    transaction: Transaction | None = None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request created ``transaction`` (§17.2); the TU must answer on it."""

    request: Request
    transaction: ServerTransaction
    peer: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU.  ``transaction`` is None for a stray response (no
    matching client transaction): a proxy forwards it statelessly (§16.7), a UAC
    core treats a stray 2xx as a retransmission to re-ACK (§13.2.2.4)."""

    response: Response
    transaction: ClientTransaction | None
    peer: Peer


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK the transaction layer does not absorb: the ACK for a 2xx (§13.3.1.4,
    §17.2.3).  ``transaction`` is the INVITE server transaction still in Accepted, or
    None once it is gone (a proxy then forwards the ACK statelessly, §16.11)."""

    request: Request
    transaction: ServerTransaction | None
    peer: Peer


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B/F (no final response: act as if 408 arrived, §8.1.3.1), Timer H (no
    ACK for a non-2xx, §17.2.1), no final response 64·T1 after a CANCEL (§9.1) or, for
    a retransmitting UAS, no ACK for its 2xx within 64·T1 (§13.3.1.4: send BYE) — the
    transaction is terminated.  Timer C (§16.8) alone leaves it running: the proxy
    should CANCEL it now."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver (§17.1.4, §17.2.4): treat as 503 (§8.1.3.1)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction reached Terminated and left the table."""

    transaction: Transaction


Output = (
    Transmit
    | RequestReceived
    | ResponseReceived
    | AckReceived
    | TimedOut
    | TransportFailed
    | Terminated
)


class TransactionStateError(SipError):
    """The TU asked for something the transaction's state forbids (our bug)."""

    status = 500
    reason = "Server Internal Error"
    blame = "local"


# --------------------------------------------------------------------------- tables


class Kind(Enum):
    # Members are singletons: identity hashing keeps table lookups in C (Enum's
    # own __hash__ is a Python function).
    __hash__ = object.__hash__

    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class State(Enum):
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(Enum):
    __hash__ = object.__hash__

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FAILURE = "300-699 received"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    TU_1XX = "TU sends 1xx"
    TU_2XX = "TU sends 2xx"
    TU_FAILURE = "TU sends 300-699"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_C = "C"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_2XX = "2xx retransmit"
    TIMER_CANCEL = "CANCEL sent 64*T1 ago"
    TRANSPORT_ERROR = "transport error"


TU_INPUTS = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_FAILURE})


class Act(Enum):
    __hash__ = object.__hash__

    PASS_RESPONSE = "pass response to TU"
    SEND_ACK = "send ACK (§17.1.1.3)"
    RETRANSMIT_REQUEST = "retransmit request"
    SEND_RESPONSE = "send TU's response, remember it"
    RESEND_RESPONSE = "retransmit last response"
    PASS_ACK = "pass ACK to TU"
    REPORT_TIMEOUT = "inform TU of timeout"
    REPORT_TRANSPORT_ERROR = "inform TU of transport error"
    REPORT_ACK_TIMEOUT = "inform TU if its 2xx was never ACKed"
    STOP_TIMERS = "stop running timers"
    STOP_2XX = "stop 2xx retransmission"
    STOP_A_B = "stop Timers A and B"
    RESET_C = "restart Timer C on 101-199, keep it on 100 (§16.7 step 2)"
    BACKOFF_A = "restart A at twice its interval"
    BACKOFF_E = "restart E at min(2E, T2)"
    RESET_E_T2 = "restart E at T2"
    BACKOFF_G = "restart G at min(2G, T2)"
    BACKOFF_2XX = "restart 2xx retransmit at min(2x, T2)"
    START_D = "start D"
    START_H = "start H"
    START_G = "start G (unreliable only)"
    START_I = "start I"
    START_J = "start J"
    START_K = "start K"
    START_L = "start L"
    START_M = "start M"
    START_2XX = "start 2xx retransmit (UAS on unreliable transport)"


S, In, A = State, Input, Act
Table = dict[tuple[State, Input], tuple[State, tuple[Act, ...]]]

# §17.1.1.2 Figure 5, 2xx arrows as amended by RFC 6026 §8.4 (Calling/Proceeding -> Accepted).
# Creation: Calling, request sent, Timer A (unreliable) and Timer B started.
INVITE_CLIENT: Table = {
    (S.CALLING, In.TIMER_A): (S.CALLING, (A.RETRANSMIT_REQUEST, A.BACKOFF_A)),
    (S.CALLING, In.TIMER_B): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.CALLING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.CALLING, In.RECV_1XX): (S.PROCEEDING, (A.STOP_A_B, A.PASS_RESPONSE, A.RESET_C)),
    (S.CALLING, In.RECV_2XX): (S.ACCEPTED, (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_M)),
    (S.CALLING, In.RECV_FAILURE): (
        S.COMPLETED,
        (A.STOP_TIMERS, A.SEND_ACK, A.PASS_RESPONSE, A.START_D),
    ),
    (S.PROCEEDING, In.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE, A.RESET_C)),
    (S.PROCEEDING, In.RECV_2XX): (S.ACCEPTED, (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_M)),
    (S.PROCEEDING, In.RECV_FAILURE): (
        S.COMPLETED,
        (A.STOP_TIMERS, A.SEND_ACK, A.PASS_RESPONSE, A.START_D),
    ),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    # §16.8: Timer C (proxies only) tells the TU to CANCEL; the transaction stays.
    (S.PROCEEDING, In.TIMER_C): (S.PROCEEDING, (A.REPORT_TIMEOUT,)),
    # §9.1: no final response 64*T1 after the CANCEL: consider the INVITE cancelled.
    (S.PROCEEDING, In.TIMER_CANCEL): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    # §17.1.1.2: a retransmitted final response is answered with the same ACK, not passed up.
    (S.COMPLETED, In.RECV_FAILURE): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.TIMER_D): (S.TERMINATED, ()),
    # RFC 6026 §8.4: further 2xx (retransmissions, other forks) go to the TU to be ACKed.
    (S.ACCEPTED, In.RECV_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (S.ACCEPTED, In.TIMER_M): (S.TERMINATED, ()),
}

# §17.1.2.2 Figure 6.  Creation: Trying, request sent, Timer E (unreliable) and F started.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, In.TIMER_E): (S.TRYING, (A.RETRANSMIT_REQUEST, A.BACKOFF_E)),
    (S.TRYING, In.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.TRYING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.TRYING, In.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.TRYING, In.RECV_2XX): (S.COMPLETED, (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_K)),
    (S.TRYING, In.RECV_FAILURE): (S.COMPLETED, (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_K)),
    # "If Timer E fires while in the Proceeding state ... reset with a value of T2".
    (S.PROCEEDING, In.TIMER_E): (S.PROCEEDING, (A.RETRANSMIT_REQUEST, A.RESET_E_T2)),
    (S.PROCEEDING, In.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, In.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, In.RECV_2XX): (S.COMPLETED, (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_K)),
    (S.PROCEEDING, In.RECV_FAILURE): (
        S.COMPLETED,
        (A.STOP_TIMERS, A.PASS_RESPONSE, A.START_K),
    ),
    # Completed buffers response retransmissions (absorbed) until K.
    (S.COMPLETED, In.RECV_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.RECV_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.RECV_FAILURE): (S.COMPLETED, ()),
    (S.COMPLETED, In.TIMER_K): (S.TERMINATED, ()),
}

# §17.2.1 Figure 7, 2xx arrows as amended by RFC 6026 §8.5-8.7 (Proceeding -> Accepted).
# Creation: Proceeding, request passed to the TU (and 100 Trying sent if configured).
INVITE_SERVER: Table = {
    (S.PROCEEDING, In.RECV_REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE, A.START_L, A.START_2XX)),
    (S.PROCEEDING, In.TU_FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.START_G, A.START_H)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.RECV_REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (S.COMPLETED, In.TIMER_G): (S.COMPLETED, (A.RESEND_RESPONSE, A.BACKOFF_G)),
    (S.COMPLETED, In.TIMER_H): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.COMPLETED, In.RECV_ACK): (S.CONFIRMED, (A.STOP_TIMERS, A.START_I)),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    # Confirmed exists to absorb ACK retransmissions (§17.2.1).
    (S.CONFIRMED, In.RECV_ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, In.RECV_REQUEST): (S.CONFIRMED, ()),
    (S.CONFIRMED, In.TIMER_I): (S.TERMINATED, ()),
    # RFC 6026 §8.7: INVITE retransmissions absorbed, ACKs and further 2xx pass through.
    (S.ACCEPTED, In.RECV_REQUEST): (S.ACCEPTED, ()),
    (S.ACCEPTED, In.RECV_ACK): (S.ACCEPTED, (A.STOP_2XX, A.PASS_ACK)),
    (S.ACCEPTED, In.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, In.TIMER_2XX): (S.ACCEPTED, (A.RESEND_RESPONSE, A.BACKOFF_2XX)),
    (S.ACCEPTED, In.TRANSPORT_ERROR): (S.ACCEPTED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.ACCEPTED, In.TIMER_L): (S.TERMINATED, (A.REPORT_ACK_TIMEOUT,)),
}

# §17.2.2 Figure 8.  Creation: Trying, request passed to the TU.
NON_INVITE_SERVER: Table = {
    (S.TRYING, In.RECV_REQUEST): (S.TRYING, ()),
    (S.TRYING, In.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, In.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.TRYING, In.TU_FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, In.RECV_REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, In.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, In.TU_FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, In.RECV_REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    # "Any other final responses passed by the TU ... MUST be discarded" in Completed.
    (S.COMPLETED, In.TU_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.TU_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.TU_FAILURE): (S.COMPLETED, ()),
    (S.COMPLETED, In.TIMER_J): (S.TERMINATED, ()),
    (S.COMPLETED, In.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
}

TABLES: dict[Kind, Table] = {
    Kind.INVITE_CLIENT: INVITE_CLIENT,
    Kind.NON_INVITE_CLIENT: NON_INVITE_CLIENT,
    Kind.INVITE_SERVER: INVITE_SERVER,
    Kind.NON_INVITE_SERVER: NON_INVITE_SERVER,
}

INITIAL_STATE = {
    Kind.INVITE_CLIENT: State.CALLING,
    Kind.NON_INVITE_CLIENT: State.TRYING,
    Kind.INVITE_SERVER: State.PROCEEDING,
    Kind.NON_INVITE_SERVER: State.TRYING,
}

del S, In, A


# --------------------------------------------------------------------------- transactions


class Transaction:
    """State of one transaction.  Read-only for the TU except :attr:`context`."""

    __slots__ = (
        "_intervals",
        "_timers",
        "ack_data",
        "acked",
        "context",
        "data",
        "key",
        "kind",
        "last_response",
        "last_response_data",
        "peer",
        "request",
        "state",
        "table",
    )

    def __init__(self, kind: Kind, key: tuple[Any, ...], request: Request, peer: Peer) -> None:
        self.kind = kind
        self.key = key
        self.request = request
        self.peer = peer
        self.state = INITIAL_STATE[kind]
        self.table = TABLES[kind]
        self.data = b""
        self.last_response: Response | None = None
        self.last_response_data = b""
        self.ack_data = b""
        self.acked = False
        self.context: Any = None
        """Free slot for the TU (a proxy's response context, a UA's call)."""
        self._timers: dict[Input, int] = {}
        self._intervals: dict[Input, float] = {}

    @property
    def reliable(self) -> bool:
        return self.peer.transport in RELIABLE_TRANSPORTS

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def method(self) -> str:
        return self.request.method

    def __repr__(self) -> str:
        return (
            f"<{self.kind.value} transaction {self.request.method} {self.state.value} {self.key!r}>"
        )


class ClientTransaction(Transaction):
    """§17.1: created by :meth:`TransactionLayer.send_request`; ``peer`` is the next hop."""

    __slots__ = ()


class ServerTransaction(Transaction):
    """§17.2: created by a received request; ``peer`` is where responses go (§18.2.2)."""

    __slots__ = ()


# --------------------------------------------------------------------------- matching


def sent_by(via: Via) -> tuple[str, int]:
    """The sent-by of a Via as a comparable (host, port), default port filled in."""
    port = via.port if via.port is not None else DEFAULT_PORTS.get(via.transport, 5060)
    return (via.host.lower(), port)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """§17.1.3: a response matches by the top Via branch and the CSeq method."""
    return (branch, method)


def server_key(request: Request) -> tuple[Any, ...]:
    """§17.2.3 key of the server transaction a request belongs to.

    ACK maps to INVITE (it matches the INVITE transaction); a CANCEL has its own key.
    Without the magic cookie the RFC 2543 rule applies: Request-URI, From tag, Call-ID,
    CSeq number, top Via and method (the To tag is checked separately, since for an
    ACK it must equal the tag of the response the transaction sent).
    """
    via = request.top_via
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    # A bare cookie identifies nothing: RFC 2543 rules (RFC 4475 §3.2.1 "badbranch").
    if branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by(via), method)
    return (
        "rfc2543",
        request.uri,
        request.from_tag,
        request.call_id,
        request.cseq.seq,
        via.transport,
        sent_by(via),
        branch,
        method,
    )


def response_peer(via: Via, source: Peer) -> Peer:
    """Where responses to a request go (§18.2.2, RFC 3581 §4).

    Reliable: back to the source, i.e. on the connection the request came in on.
    Unreliable: ``maddr`` if present; with ``rport`` the source address and port;
    otherwise the source address (the "received" address) and the sent-by port.
    """
    if source.transport in RELIABLE_TRANSPORTS:
        return source
    default = DEFAULT_PORTS.get(via.transport, 5060)
    if via.maddr:
        return Peer(source.transport, via.maddr, via.port or default)
    if via.rport is not None:
        return source
    return Peer(source.transport, source.host, via.port or default)


def stamp_via(request: Request, source: Peer) -> None:
    """Add ``received`` (§18.2.1) and fill an empty ``rport`` (RFC 3581 §4) on the top
    Via of a request received from ``source``.  A proxy forwards it so; responses
    then find their way back through NATs."""
    via = request.top_via
    changed = False
    # §25.1: received = IPv4address / IPv6address — an IPv6 address without brackets
    ip = source.host.strip("[]")
    if via.host.strip("[]") != ip:
        via.params["received"] = ip
        changed = True
    if via.rport == "":
        via.params["rport"] = str(source.port)
        if "received" not in via.params:
            via.params["received"] = ip
        changed = True
    if changed:
        request.headers.remove_first("Via")
        request.headers.insert("Via", str(via))


# --------------------------------------------------------------------------- the layer


# Plain namespaces aliasing the enum members for the hot paths below: on CPython 3.11
# ``Act.X`` goes through EnumType.__getattr__ (~0.25 us, measured), a namespace
# attribute is a dict lookup.  Match value patterns and timer starts use these.
_A = SimpleNamespace(**Act.__members__)
_I = SimpleNamespace(**Input.__members__)
_S = SimpleNamespace(**State.__members__)
_K = SimpleNamespace(**Kind.__members__)


def _response_input(status: int, tu: bool) -> Input:
    if status < 200:
        return _I.TU_1XX if tu else _I.RECV_1XX
    if status < 300:
        return _I.TU_2XX if tu else _I.RECV_2XX
    return _I.TU_FAILURE if tu else _I.RECV_FAILURE


class TransactionLayer:
    """Every transaction of one SIP element, keyed by the §17.1.3/§17.2.3 rules.

    Args:
        timers: timer durations (RFC defaults).
        send_trying: answer every new INVITE with 100 Trying at once (§17.2.1: "MUST
            generate a 100 (Trying) response unless it knows that the TU will generate
            a provisional or final response within 200 ms").
        retransmit_2xx: this layer serves a UAS core, which retransmits its 2xx to
            INVITE until the ACK arrives (§13.3.1.4).  A proxy leaves this False.
        stamp_received: add ``received``/``rport`` to the top Via of each new request
            (§18.2.1, RFC 3581 §4), so responses and forwarded requests carry them.
        timer_c: a proxy's Timer C (§16.6 item 11: more than 3 minutes,
            :data:`~switchboard.sip.timers.TIMER_C`) for INVITE client transactions;
            when it fires the TU gets ``TimedOut(txn, "C")`` and should CANCEL (§16.8).
    """

    def __init__(
        self,
        *,
        timers: TimerValues = DEFAULT_TIMERS,
        send_trying: bool = True,
        retransmit_2xx: bool = False,
        stamp_received: bool = True,
        timer_c: float | None = None,
    ) -> None:
        self.timers = timers
        self.stamp_received = stamp_received
        self.timer_c = timer_c
        self.send_trying = send_trying
        self.retransmit_2xx = retransmit_2xx
        self.clients: dict[tuple[Any, ...], ClientTransaction] = {}
        self.servers: dict[tuple[Any, ...], ServerTransaction] = {}
        # INVITE server transactions in Accepted, by (Call-ID, CSeq number, From tag):
        # the ACK for their 2xx carries a new branch (§17.2.3 does not match it).
        self._accepted: dict[tuple[str, int, str | None], ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction, Input]] = []
        self._seq = 0
        self._live_timers = 0

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    # ----------------------------------------------------------------- TU -> network

    def send_request(
        self,
        request: Request,
        peer: Peer,
        now: float,
        *,
        data: bytes | None = None,
        context: Any = None,
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for ``request`` to ``peer`` (§17.1).

        The request must already carry its top Via with a unique ``z9hG4bK`` branch.
        ``data`` is the serialised request when the caller already has it (a proxy that
        edits bytes).  An ACK is never sent in a transaction: send it directly.
        """
        method = request.method
        if method == "ACK":
            raise TransactionStateError("ACK is not sent in a client transaction (§17.1)")
        branch = request.top_via.branch
        if not branch:
            raise TransactionStateError("request to send has no Via branch (§8.1.1.7)")
        key = client_key(branch, method)
        if key in self.clients:
            raise TransactionStateError(f"client transaction {key!r} already exists")
        kind = _K.INVITE_CLIENT if method == "INVITE" else _K.NON_INVITE_CLIENT
        txn = ClientTransaction(kind, key, request, peer)
        txn.context = context
        txn.data = data if data is not None else request.to_bytes()
        self.clients[key] = txn
        out: list[Output] = [Transmit(txn.data, peer, txn)]
        reliable = peer.transport in RELIABLE_TRANSPORTS
        t = self.timers
        if kind is _K.INVITE_CLIENT:
            if not reliable:
                self._start(txn, _I.TIMER_A, t.t1, now)
            self._start(txn, _I.TIMER_B, t.b, now)
            if self.timer_c is not None:
                self._start(txn, _I.TIMER_C, self.timer_c, now)
        else:
            if not reliable:
                self._start(txn, _I.TIMER_E, t.t1, now)
            self._start(txn, _I.TIMER_F, t.f, now)
        return txn, out

    def send_response(
        self,
        transaction: ServerTransaction,
        response: Response,
        now: float,
        *,
        data: bytes | None = None,
    ) -> list[Output]:
        """Hand a response to its server transaction, which sends it (and
        retransmits it where §17.2 says so).  Raises :class:`TransactionStateError`
        when the transaction's state does not allow it."""
        out: list[Output] = []
        inp = _response_input(response.status, tu=True)
        self._fire(transaction, inp, now, out, response, data)
        return out

    def send_cancel(
        self, invite: ClientTransaction, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        """CANCEL a pending INVITE (§9.1): build the CANCEL from the INVITE, send it in
        its own client transaction to the same peer, and arm the 64·T1 guard
        (:meth:`cancel_sent`).  Only after a provisional response arrived — before that
        the CANCEL "MUST NOT be sent" — so Calling raises :class:`TransactionStateError`
        (wait for the 1xx); so does an INVITE that already has its final response."""
        if invite.kind is not _K.INVITE_CLIENT or invite.state is not _S.PROCEEDING:
            raise TransactionStateError(
                f"cannot CANCEL a {invite.kind.value} transaction in {invite.state.value} (§9.1)"
            )
        cancel, out = self.send_request(build_cancel(invite.request), invite.peer, now)
        self.cancel_sent(invite, now)
        return cancel, out

    def cancel_sent(self, transaction: ClientTransaction, now: float) -> None:
        """The TU sent a CANCEL for this INVITE (§9.1): if no final response arrives
        within 64*T1 the transaction ends with ``TimedOut(txn, "CANCEL sent 64*T1 ago")``
        (the INVITE counts as cancelled); Timer C stops."""
        if transaction.kind is _K.INVITE_CLIENT and transaction.state in (
            _S.CALLING,
            _S.PROCEEDING,
        ):
            self._stop(transaction, _I.TIMER_C)
            if _I.TIMER_CANCEL not in transaction._timers:
                self._start(transaction, _I.TIMER_CANCEL, 64 * self.timers.t1, now)

    def transport_failed(self, transaction: Transaction, now: float) -> list[Output]:
        """The adapter could not send for ``transaction`` (§17.1.4, §17.2.4)."""
        out: list[Output] = []
        if transaction.state is not _S.TERMINATED:
            self._fire(transaction, _I.TRANSPORT_ERROR, now, out)
        return out

    # ----------------------------------------------------------------- network -> TU

    def receive(self, message: Request | Response, peer: Peer, now: float) -> list[Output]:
        """Feed one parsed message from ``peer``; see :meth:`receive_request` and
        :meth:`receive_response`."""
        if isinstance(message, Response):
            return self.receive_response(message, peer, now)
        return self.receive_request(message, peer, now)

    def receive_response(self, response: Response, peer: Peer, now: float) -> list[Output]:
        """Match a response to its client transaction (§17.1.3).

        Raises :class:`SipParseError` (nothing changed) when it lacks a Via or CSeq.
        """
        via = response.top_via
        key = (via.branch, response.cseq.method)
        txn = self.clients.get(key)
        if txn is None:
            return [ResponseReceived(response, None, peer)]
        out: list[Output] = []
        self._fire(txn, _response_input(response.status, tu=False), now, out, response)
        return out

    def receive_request(self, request: Request, peer: Peer, now: float) -> list[Output]:
        """Match a request to its server transaction (§17.2.3) or create one.

        Retransmissions are absorbed or answered with the last response; ACK for a
        non-2xx final response is absorbed; anything new is passed to the TU as
        :class:`RequestReceived`.  Raises :class:`SipParseError` (nothing changed) when
        the request lacks the headers matching needs (Via, CSeq, Call-ID).
        """
        method = request.method
        key = server_key(request)
        txn = self.servers.get(key)
        if txn is not None and key[0] == "rfc2543" and not _rfc2543_to_tag_matches(txn, request):
            txn = None
        out: list[Output] = []
        if txn is not None:
            if method == "ACK":
                if txn.kind is _K.INVITE_SERVER:
                    self._fire(txn, _I.RECV_ACK, now, out, ack=request)
            else:
                self._fire(txn, _I.RECV_REQUEST, now, out)
            return out
        if method == "ACK":
            accepted = self._accepted.get((request.call_id, request.cseq.seq, request.from_tag))
            if accepted is not None:
                self._fire(accepted, _I.RECV_ACK, now, out, ack=request)
            else:
                out.append(AckReceived(request, None, peer))
            return out
        if request.cseq.method != method:
            raise SipParseError("CSeq method does not match the request method (§8.1.1.5)")
        kind = _K.INVITE_SERVER if method == "INVITE" else _K.NON_INVITE_SERVER
        via = request.top_via
        stxn = ServerTransaction(kind, key, request, response_peer(via, peer))
        if self.stamp_received and (via.rport == "" or via.host != peer.host):
            stamp_via(request, peer)  # responses copy it (§18.2.1, RFC 3581 §4)
        self.servers[key] = stxn
        if kind is _K.INVITE_SERVER and self.send_trying:
            self._fire(stxn, _I.TU_1XX, now, out, make_response(request, 100))
        out.append(RequestReceived(request, stxn, peer))
        return out

    def answer_unseen(
        self, request: Request, peer: Peer, response: Response, now: float
    ) -> list[Output]:
        """Answer ``request`` with the final ``response`` in a server transaction the TU
        never sees: a request received in an earlier life of this element (a media node
        restarted after a crash hands back the INVITEs whose setup the crash cut short).

        The transaction is the one §17.2.1 describes, so a retransmission of the request
        gets the same response (Timer G retransmits it over UDP) and the ACK of a non-2xx
        is absorbed — a retransmitted INVITE read after the restart is not a new call.
        ``peer`` is where responses go. Nothing happens if the request already has a
        transaction."""
        key = server_key(request)
        if key in self.servers:
            return []
        kind = _K.INVITE_SERVER if request.method == "INVITE" else _K.NON_INVITE_SERVER
        txn = ServerTransaction(kind, key, request, peer)
        self.servers[key] = txn
        return self.send_response(txn, response, now)

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a received CANCEL refers to (§9.2): the
        §17.2.3 rules with the method taken as INVITE."""
        key = server_key(cancel)
        key = (*key[:-1], "INVITE")
        txn = self.servers.get(key)
        if txn is None or txn.kind is not _K.INVITE_SERVER:
            return None
        return txn

    # ----------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """Earliest deadline of any running timer, or None."""
        heap = self._heap
        while heap:
            deadline, seq, txn, inp = heap[0]
            if txn._timers.get(inp) == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``."""
        out: list[Output] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, txn, inp = heapq.heappop(heap)
            if txn._timers.get(inp) != seq:
                continue
            del txn._timers[inp]
            self._live_timers -= 1
            self._fire(txn, inp, now, out)
        return out

    def _start(self, txn: Transaction, inp: Input, interval: float, now: float) -> None:
        self._seq += 1
        if inp not in txn._timers:
            self._live_timers += 1
        txn._timers[inp] = self._seq
        txn._intervals[inp] = interval
        heapq.heappush(self._heap, (now + interval, self._seq, txn, inp))

    def _stop(self, txn: Transaction, inp: Input) -> None:
        if txn._timers.pop(inp, None) is not None:
            self._live_timers -= 1
            self._drop_stopped()

    def _stop_all(self, txn: Transaction) -> None:
        self._live_timers -= len(txn._timers)
        txn._timers.clear()
        self._drop_stopped()

    def _drop_stopped(self) -> None:
        """Rebuild the heap without its stopped timers once they outnumber the running ones.

        A stopped timer stays in the heap until its deadline comes round, and its entry
        holds the transaction — with its request, the SDP body and every parsed header:
        an answered INVITE's Timer C (181 s) kept them that long after the call, and
        after a load an idle node, which starts no timer, kept every one (media node:
        856 INVITE transactions 40 s after the last call, scanned by its idle
        collection and pinning the allocator's pages). Checked where timers stop, so it
        also happens when nothing new starts; amortised O(1): each rebuild removes at
        least as many entries as it keeps, plus 64. In place: :meth:`handle_timer` may be
        popping this heap when a fired timer stops another.
        """
        heap = self._heap
        if len(heap) > 2 * self._live_timers + 64:
            heap[:] = [e for e in heap if e[2]._timers.get(e[3]) == e[1]]
            heapq.heapify(heap)

    # ----------------------------------------------------------------- the machine

    def _fire(
        self,
        txn: Transaction,
        inp: Input,
        now: float,
        out: list[Output],
        response: Response | None = None,
        data: bytes | None = None,
        ack: Request | None = None,
    ) -> None:
        entry = txn.table.get((txn.state, inp))
        if entry is None:
            if inp in TU_INPUTS:
                raise TransactionStateError(
                    f"{txn.kind.value} transaction in state {txn.state.value} "
                    f"cannot take '{inp.value}' (RFC 3261 §17)"
                )
            log.debug("%r: %s ignored", txn, inp.value)
            return
        new_state, acts = entry
        t = self.timers
        reliable = txn.peer.transport in RELIABLE_TRANSPORTS
        immediate: list[Input] = []
        for act in acts:
            match act:
                # Ordered by how often each arm runs in a normal call.
                case _A.PASS_RESPONSE:
                    assert response is not None
                    out.append(ResponseReceived(response, txn, txn.peer))  # type: ignore[arg-type]
                case _A.SEND_RESPONSE:
                    assert response is not None
                    txn.last_response = response
                    txn.last_response_data = data if data is not None else response.to_bytes()
                    out.append(Transmit(txn.last_response_data, txn.peer, txn))
                case _A.STOP_TIMERS:
                    self._stop_all(txn)
                case _A.STOP_A_B:
                    self._stop(txn, _I.TIMER_A)
                    self._stop(txn, _I.TIMER_B)
                case _A.RESET_C:
                    assert response is not None
                    timers = txn._timers
                    if (
                        self.timer_c is not None
                        and _I.TIMER_CANCEL not in timers
                        and (response.status != 100 or _I.TIMER_C not in timers)
                    ):
                        self._start(txn, _I.TIMER_C, self.timer_c, now)
                case _A.START_L:
                    self._start(txn, _I.TIMER_L, t.l, now)
                    req = txn.request
                    self._accepted[(req.call_id, req.cseq.seq, req.from_tag)] = txn  # type: ignore[assignment]
                case _A.START_2XX:
                    if self.retransmit_2xx and not reliable:
                        self._start(txn, _I.TIMER_2XX, t.t1, now)
                case _A.START_M:
                    self._start(txn, _I.TIMER_M, t.m, now)
                case _A.START_K:
                    self._start_or_now(txn, _I.TIMER_K, 0.0 if reliable else t.t4, now, immediate)
                case _A.START_J:
                    self._start_or_now(txn, _I.TIMER_J, 0.0 if reliable else t.j, now, immediate)
                case _A.START_D:
                    self._start_or_now(
                        txn, _I.TIMER_D, 0.0 if reliable else t.timer_d, now, immediate
                    )
                case _A.START_I:
                    self._start_or_now(txn, _I.TIMER_I, 0.0 if reliable else t.t4, now, immediate)
                case _A.START_G:
                    if not reliable:
                        self._start(txn, _I.TIMER_G, t.t1, now)
                case _A.START_H:
                    self._start(txn, _I.TIMER_H, t.h, now)
                case _A.SEND_ACK:
                    assert response is not None
                    if not txn.ack_data:
                        txn.ack_data = build_ack_for_failure(txn.request, response)
                    out.append(Transmit(txn.ack_data, txn.peer, txn))
                case _A.PASS_ACK:
                    assert ack is not None
                    txn.acked = True
                    out.append(AckReceived(ack, txn, txn.peer))  # type: ignore[arg-type]
                case _A.STOP_2XX:
                    self._stop(txn, _I.TIMER_2XX)
                case _A.RESEND_RESPONSE:
                    if txn.last_response_data:
                        out.append(Transmit(txn.last_response_data, txn.peer, txn))
                case _A.RETRANSMIT_REQUEST:
                    out.append(Transmit(txn.data, txn.peer, txn))
                case _A.BACKOFF_A:
                    self._start(txn, _I.TIMER_A, 2 * txn._intervals[_I.TIMER_A], now)
                case _A.BACKOFF_E:
                    self._start(txn, _I.TIMER_E, min(2 * txn._intervals[_I.TIMER_E], t.t2), now)
                case _A.RESET_E_T2:
                    self._start(txn, _I.TIMER_E, t.t2, now)
                case _A.BACKOFF_G:
                    self._start(txn, _I.TIMER_G, min(2 * txn._intervals[_I.TIMER_G], t.t2), now)
                case _A.BACKOFF_2XX:
                    interval = min(2 * txn._intervals[_I.TIMER_2XX], t.t2)
                    self._start(txn, _I.TIMER_2XX, interval, now)
                case _A.REPORT_TIMEOUT:
                    out.append(TimedOut(txn, inp.value))
                case _A.REPORT_TRANSPORT_ERROR:
                    out.append(TransportFailed(txn))
                case _A.REPORT_ACK_TIMEOUT:
                    if self.retransmit_2xx and not txn.acked:
                        out.append(TimedOut(txn, inp.value))
        txn.state = new_state
        if new_state is _S.TERMINATED:
            self._terminate(txn, out)
            return
        for pending in immediate:
            if txn.state is not _S.TERMINATED:
                self._fire(txn, pending, now, out)

    def _start_or_now(
        self, txn: Transaction, inp: Input, interval: float, now: float, immediate: list[Input]
    ) -> None:
        # A zero timer (reliable transport) fires within the same call: the
        # transaction is terminated before the caller gets its outputs.
        if interval <= 0:
            immediate.append(inp)
        else:
            self._start(txn, inp, interval, now)

    def _terminate(self, txn: Transaction, out: list[Output]) -> None:
        self._stop_all(txn)
        if isinstance(txn, ClientTransaction):
            if self.clients.get(txn.key) is txn:
                del self.clients[txn.key]
        elif self.servers.get(txn.key) is txn:
            del self.servers[txn.key]
            if txn.kind is _K.INVITE_SERVER:
                req = txn.request
                akey = (req.call_id, req.cseq.seq, req.from_tag)
                if self._accepted.get(akey) is txn:
                    del self._accepted[akey]
        out.append(Terminated(txn))


def _rfc2543_to_tag_matches(txn: Transaction, request: Request) -> bool:
    """§17.2.3 RFC 2543 rule: an ACK's To tag must equal the tag of the response the
    transaction sent; any other request's To tag must equal the original's."""
    if request.method == "ACK":
        sent = txn.last_response
        return sent is None or sent.to_tag == request.to_tag
    return txn.request.to_tag == request.to_tag


def build_ack_for_failure(request: Request, response: Response) -> bytes:
    """The ACK an INVITE client transaction sends for a 300-699 response (§17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and the single top Via come from the
    INVITE; To from the response (it carries the UAS's tag); Route header fields are
    copied from the INVITE (§17.1.1.3).  Built as bytes: the transaction retransmits
    the same ACK for every retransmitted final response.
    """
    h = request.headers
    vias = h.get_all("Via")
    lines = [f"ACK {request.uri} SIP/2.0", f"Via: {vias[0]}"]
    lines.extend(f"Route: {route}" for route in h.get_all("Route"))
    lines.append("Max-Forwards: 70")
    lines.append(f"From: {h.get('From')}")
    lines.append(f"To: {response.headers.get('To')}")
    lines.append(f"Call-ID: {h.get('Call-ID')}")
    lines.append(f"CSeq: {request.cseq.seq} ACK")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
