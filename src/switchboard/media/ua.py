"""The media node's SIP user agent and B2BUA legs (RFC 3261 UA core over the SIP stack).

Inbound: an INVITE (UDP or TCP) is checked (SDP parse → 400, no common codec → 488,
session limits → 503 ``Maximum Calls In Progress`` + Retry-After), gets an RTP endpoint
and a channel, and runs the dialplan; applications drive 180/183/200 through
:class:`InboundLeg`. CANCEL → 200 + 487 (cause ORIGINATOR_CANCEL); BYE → 200
(NORMAL_CLEARING, or the Reason header's cause, RFC 3326); re-INVITE → hold/unhold,
codec change, address change (RFC 3264 §8); INFO ``application/dtmf-relay`` → DTMF;
OPTIONS → 200 with ``X-Switchboard-Calls: <live channels>`` (for the router's
call-load dispatching); REGISTER → the registrar.

Outbound (bridge/originate): :meth:`UserAgent.place` sends an INVITE with our offer to
a gateway (``sofia/gateway/<gw>/<number>``), a registered user (``user/<id>``) or a SIP
URI, answers digest challenges for gateways with credentials, maps the final response
to a cause (as sofia_glue.c does, :mod:`switchboard.media.causes`), ACKs 2xx, and
CANCELs/BYEs when told to.

The SIP stack is the pure :class:`~switchboard.sip.transaction.TransactionLayer`
driven by one :class:`~switchboard.net.endpoint.SipEndpoint`; this module is the TU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
import uuid as uuid_mod
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from switchboard.esl.dialstring import (
    DialLeg,
    GatewayEndpoint,
    SipUriEndpoint,
    SofiaEndpoint,
    UserEndpoint,
)
from switchboard.media.causes import Cause, cause_to_sip, reason_header, sip_to_cause
from switchboard.media.cdr import ROUTING_NUMBER_VAR
from switchboard.media.channel import (
    BODY_PARTS,
    EMERGENCY_VAR,
    ORIGINATING_LEG_VAR,
    PAI_VAR,
    CallerProfile,
)
from switchboard.media.core import GatewayInfo, OriginateError, Session, Switch
from switchboard.media.digest import authorization
from switchboard.media.portability import LOOKED_UP_VAR, request_user
from switchboard.media.ports import PortAllocator, PortsExhausted
from switchboard.media.registrar import Registrar
from switchboard.media.rtp_endpoint import RtpEndpoint
from switchboard.media.rtp_timeout import RtpInactivity
from switchboard.net.address import own_address
from switchboard.net.endpoint import SipEndpoint
from switchboard.net.tls import TlsFiles, client_context, server_context
from switchboard.rating.portability import canonical
from switchboard.router.protection import AddressList, AuthBans
from switchboard.rtp.codec import Codec, CodecError, codec_by_name
from switchboard.sdp import (
    CodecSpec,
    Negotiated,
    NegotiationError,
    SdpError,
    SessionDescription,
    answer_offer,
    create_offer,
    parse_sdp,
    process_answer,
)
from switchboard.sdp.crypto import KEY_LENGTH
from switchboard.sip import multipart
from switchboard.sip.dialog import Dialog, build_cancel
from switchboard.sip.errors import SipError
from switchboard.sip.ids import leg_tag, new_branch, new_call_id, new_tag
from switchboard.sip.message import Request, Response, make_response
from switchboard.sip.timers import DEFAULT_TIMERS, TIMER_C, TimerValues
from switchboard.sip.transaction import (
    AckReceived,
    ClientTransaction,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    Terminated,
    TimedOut,
    TransactionLayer,
    Transmit,
    TransportFailed,
)
from switchboard.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from switchboard.media.overload import ShedReason
    from switchboard.media.settings import GatewaySection, UserSection

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER, UPDATE"
CALLS_HEADER = "X-Switchboard-Calls"  # live channel count on OPTIONS answers (router call-load)
ACK_WAIT = 2.0  # seconds a UAS waits for the ACK of its 2xx before sending BYE anyway
SIP_SOCKET_BUFFER = 4 << 20
"""SO_RCVBUF/SO_SNDBUF of the SIP UDP sockets ([media] sip_socket_buffer): a burst of
hundreds of originates and their answers must queue in the kernel, not be dropped (the
Linux default, ~200 KB, overflowed at ~250 simultaneous calls: half the legs timed out)."""


def _rand() -> bytes:
    return os.urandom(10)


def codec_specs(names: Sequence[str]) -> list[CodecSpec]:
    """SDP codec specs for configured codec names (preference order)."""
    table = {
        "PCMU": CodecSpec("PCMU", 8000, 0),
        "PCMA": CodecSpec("PCMA", 8000, 8),
        "G722": CodecSpec("G722", 8000, 9),
        "L16": CodecSpec("L16", 8000, 118),
    }
    return [table[n.upper()] for n in names if n.upper() in table]


def engine_codec(neg: Negotiated) -> Codec:
    return codec_by_name(neg.codec, neg.payload_type, neg.clock_rate)


def set_stream_codec(ep: RtpEndpoint, codec: Codec, event_pt: int | None) -> None:
    """Switch an open RTP stream to ``codec`` (SDP answer or re-INVITE changed it)."""
    if ep.codec is codec and ep.event_pt == event_pt:
        return
    ep.set_codec(codec, event_pt)


def _to_uri(target: SipUri) -> SipUri:
    """The To of a new call: the Request-URI without number portability's ``;npdi;rn=``
    (RFC 4694 §4: they are Request-URI information for the next network; the called party
    stays the number dialled)."""
    user = target.user or ""
    if ";" not in user:
        return target
    return dataclasses.replace(target, user=user.split(";", 1)[0])


def peer_for_uri(uri: SipUri, default_transport: str = "UDP") -> Peer:
    transport = (uri.params.get("transport") or default_transport).upper()
    host = uri.host.strip("[]")
    port = uri.port or (5061 if transport == "TLS" else 5060)
    return Peer(transport, host, port)


class EndedDialogs:
    """Dialogs this node ended in the last ``keep`` seconds (64·T1 by default, the time a
    peer goes on retransmitting a request: RFC 3261 §17.1.2.2, Timer F; §17.2.2 Timer J).

    A BYE retransmission normally meets its server transaction, which answers it again
    (§17.2.2). One that comes back through another proxy (the second router after the
    floating address moved: a new top Via branch, §16.6 step 8) matches no transaction,
    and the dialog is gone: 481 would tell the caller the call never ended cleanly. Its
    dialog is remembered here, so that BYE is answered 200 like the first copy was.
    Entries are kept in end order and pruned from the front: O(1) per call."""

    def __init__(self, keep: float = 32.0) -> None:
        self.keep = keep
        self._until: dict[tuple[str, str], float] = {}  # insertion order = expiry order

    def note(self, key: tuple[str, str], now: float) -> None:
        self._until.pop(key, None)
        self._until[key] = now + self.keep
        self._prune(now)

    def recent(self, key: tuple[str, str], now: float) -> bool:
        self._prune(now)
        return key in self._until

    def expire(self) -> None:
        """Drop the dialogs past their time now, not at the next call's end (an idle node
        would keep a load's last 32 s of them, and the memory pages they sit in)."""
        self._prune(time.monotonic())

    def _prune(self, now: float) -> None:
        until = self._until
        while until:
            key = next(iter(until))
            if until[key] > now:
                break
            del until[key]

    def __len__(self) -> int:
        return len(self._until)


@dataclass(eq=False)
class SipLeg:
    """SIP state of one channel (shared by inbound and outbound legs)."""

    ua: UserAgent
    session: Session
    peer: Peer
    call_id: str
    local_tag: str
    rtp: RtpEndpoint
    codecs: list[CodecSpec]
    dialog: Dialog | None = None
    negotiated: Negotiated | None = None
    sdp_session_id: str = field(default_factory=lambda: str(int(time.time())))
    sdp_version: int = 1
    local_sdp: SessionDescription | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    bye_sent: bool = False
    srtp: str = "off"  # SRTP policy of this leg (sdp.crypto)
    srtp_key: bytes = field(default_factory=lambda: os.urandom(KEY_LENGTH))  # our master key+salt
    # the dialog's remote target and its parse (in_dialog_peer)
    _target: tuple[str, SipUri] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    def apply_negotiated(self, neg: Negotiated) -> None:
        """Point the RTP stream at the negotiated codec and address (RFC 3264 §8)."""
        old = self.negotiated
        self.negotiated = neg
        try:
            set_stream_codec(self.rtp, engine_codec(neg), neg.event_pt)
        except CodecError as exc:  # only codecs we offered/accepted reach here
            log.error("negotiated codec unusable: %s", exc)
        if old is None or (old.remote_address, old.remote_port) != (
            neg.remote_address,
            neg.remote_port,
        ):
            rtcp = (neg.remote_address, neg.remote_rtcp_port) if neg.remote_rtcp_port else None
            if neg.remote_address not in ("0.0.0.0", "::"):
                self.rtp.set_remote((neg.remote_address, neg.remote_port), rtcp)
                if old is not None:
                    self.rtp.relatch()
        # SRTP: our key protects what we send, the peer's what it sends (RFC 4568 §6.1).
        self.rtp.set_srtp(neg.srtp_suite, neg.srtp_local_key, neg.srtp_remote_key)
        ch = self.session.channel
        ch.read_codec = neg.codec
        if neg.srtp_suite:
            ch.set_var("rtp_secure_media", neg.srtp_suite)
        ch.codec_rate = neg.clock_rate
        ch.set_var("read_codec", neg.codec)
        ch.set_var("write_codec", neg.codec)
        ch.set_var("remote_media_ip", neg.remote_address)
        ch.set_var("remote_media_port", str(neg.remote_port))

    def in_dialog_peer(self) -> Peer:
        """Where in-dialog requests go: the route set / remote target (§12.2.1.1); over
        TCP the connection the dialog came in on."""
        dialog = self.dialog
        if self.peer.transport in ("TCP", "TLS") or dialog is None:
            return self.peer
        # Sent for every ACK and BYE (and again for each retransmitted 2xx): the route set
        # is already parsed, and the remote target's parse is kept while it is unchanged,
        # rather than printing and re-parsing both each time (~15 µs a parse).
        routes = dialog.route_set
        if routes and "lr" in routes[0].uri.params:
            target = routes[0].uri  # loose routing: to the first route (§12.2.1.1)
        elif routes:
            _ruri, strict = dialog.request_uri_and_routes()
            try:
                target = NameAddr.parse(strict[0]).uri
            except SipError:
                return self.peer
        else:
            cached = self._target
            remote = dialog.remote_target
            if cached is not None and cached[0] == remote:
                target = cached[1]
            else:
                try:
                    target = SipUri.parse(remote)
                except SipError:
                    return self.peer
                self._target = (remote, target)
        return peer_for_uri(target, self.peer.transport)

    def send_in_dialog(self, method: str, **kw: Any) -> ClientTransaction | None:
        if self.dialog is None:
            return None
        peer = self.in_dialog_peer()
        req = self.dialog.create_request(method, self.ua.via(peer), **kw)
        # weak: the transaction outlives the call by up to 64·T1 and must not keep it
        return self.ua.send_request(req, peer, context=("in-dialog", weakref.ref(self)))

    def bye(self, cause: Cause) -> None:
        if self.bye_sent or self.dialog is None:
            return
        self.bye_sent = True
        self.send_in_dialog("BYE", headers=[("Reason", reason_header(cause))])
        self.session.channel.hangup_disposition = "send_bye"

    async def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """RFC 4733 when telephone-event was negotiated, else SIP INFO (dtmf-relay)."""
        if self.rtp.event_pt is not None:
            await self.rtp.send_dtmf(digits, duration_ms)
            return
        for d in digits:
            body = f"Signal={d}\r\nDuration={duration_ms}\r\n".encode()
            self.send_in_dialog("INFO", body=body, content_type="application/dtmf-relay")

    async def hold(self, on: bool) -> None:
        """Re-INVITE with ``sendonly`` (hold) or ``sendrecv`` (resume), RFC 3264 §8.4."""
        if self.dialog is None or self.local_sdp is None:
            return
        self.sdp_version += 1
        offer = create_offer(
            codecs=self.codecs,
            address=self.ua.sdp_ip,
            port=self.rtp.port,
            session_id=self.sdp_session_id,
            version=self.sdp_version,
            direction="sendonly" if on else "sendrecv",
            srtp=self._reoffer_srtp(),
            srtp_key=self.srtp_key,
        )
        self.local_sdp = offer
        self.send_in_dialog("INVITE", body=offer.to_bytes(), content_type="application/sdp")
        self.session.channel.held = on
        self.ua.switch._fire("CHANNEL_HOLD" if on else "CHANNEL_UNHOLD", self.session)

    def _reoffer_srtp(self) -> str:
        """A re-offer keeps the stream as it is: SRTP stays SRTP (RTP/SAVP when it was)."""
        neg = self.negotiated
        if neg is None or not neg.srtp_suite:
            return "off"
        sdp = self.local_sdp
        savp = sdp is not None and any(m.proto.startswith("RTP/SAVP") for m in sdp.media)
        return "mandatory" if savp else "optional"

    def close(self) -> None:
        self.ua.legs.pop(self.key, None)
        if self.dialog is not None:
            self.ua.ended.note(self.key, time.monotonic())


@dataclass(eq=False)
class InboundLeg(SipLeg):
    """The UAS side of a call that reached the node."""

    invite: Request | None = None
    txn: ServerTransaction | None = None
    final_sent: bool = False
    answered: bool = False
    received_at: float = 0.0
    contact: str = ""
    # the 2xx to the INVITE, until its ACK (§13.3.1.4), and when it was sent (wall clock):
    # the journal keeps them so that a restart retransmits a 2xx the caller never got
    # (media/recovery.py); the live node's transaction retransmits it meanwhile
    ok_2xx: Response | bytes | None = None
    ok_at: float = 0.0

    def _respond(self, status: int, *, body: bytes = b"", reason: str | None = None,
                 extra: Sequence[tuple[str, str]] = ()) -> None:  # fmt: skip
        assert self.invite is not None and self.txn is not None
        headers: list[tuple[str, str]] = list(extra)
        if status < 300 and status > 100:
            headers.append(("Contact", self.contact))
            headers.append(("Allow", ALLOW))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers.extend(self.ua.ua_header)
        resp = make_response(
            self.invite, status, reason, to_tag=self.local_tag, headers=headers, body=body
        )
        if 100 < status < 300 and self.dialog is None:
            self.dialog = Dialog.from_request(self.invite, resp)
            self.ua.legs[self.key] = self
        txn = self.txn
        if status >= 200:
            self.final_sent = True
            # The transaction (its context holds this leg) answers retransmissions on its
            # own from now on; dropping our reference leaves no leg ↔ transaction cycle.
            self.txn = None
        self.ua.send_response(txn, resp)
        if 200 <= status < 300 and not self.acked.is_set():
            # the bytes the transaction sent (and retransmits), not a second serialisation
            sent = txn.last_response_data if txn.last_response is resp else None
            self.ok_2xx, self.ok_at = sent or resp, time.time()

    def _answer_sdp(self) -> bytes:
        assert self.local_sdp is not None
        return self.local_sdp.to_bytes()

    async def ring(self) -> None:
        if not self.final_sent:
            self._respond(180)

    async def pre_answer(self) -> None:
        if not self.final_sent:
            self._respond(183, body=self._answer_sdp())

    async def answer(self) -> None:
        if self.final_sent:
            return
        self._respond(200, body=self._answer_sdp())
        self.answered = True
        if self.dialog is not None:
            self.dialog.confirm()
        self.ua.observe_setup(time.monotonic() - self.received_at)

    async def terminate(self, cause: Cause) -> None:
        ch = self.session.channel
        if not self.final_sent:
            status = cause_to_sip(cause, ch.variables.get("proto_specific_hangup_cause"))
            ch.sip_status = status
            ch.hangup_disposition = "send_refuse"
            self._respond(status, extra=[("Reason", reason_header(cause))])
        elif self.answered:
            if not self.acked.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.acked.wait(), ACK_WAIT)
            self.bye(cause)
        self.close()


@dataclass(eq=False)
class OutboundLeg(SipLeg):
    """The UAC side of a call the node places (bridge B-leg, originate)."""

    invite: Request | None = None
    txn: ClientTransaction | None = None
    provisional: bool = False
    cancel_wanted: bool = False
    answered: bool = False
    gateway: str = ""
    credentials: tuple[str, str] | None = None
    auth_tries: int = 0
    sent_at: float = 0.0
    pdd_observed: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the INVITE transaction has its outcome: a final response, a timeout or a
    transport failure."""

    async def ring(self) -> None:  # only inbound legs send provisional responses
        return None

    async def pre_answer(self) -> None:
        return None

    async def answer(self) -> None:
        return None

    async def terminate(self, cause: Cause) -> None:
        if self.answered:
            self.bye(cause)
        elif self.provisional:
            self._cancel(cause)
        else:
            self.cancel_wanted = True  # §9.1: CANCEL only after a provisional response
        self.session.channel.hangup_disposition = "send_bye" if self.answered else "send_cancel"
        if not self.cancel_wanted:
            self.close()
        if not self.answered and self.txn is not None:
            # The CDR is written when this returns: wait for the INVITE's outcome, so a
            # 2xx that crossed our CANCEL (BYEd at once) is in it. The transaction layer
            # ends a CANCELled INVITE 64·T1 after the CANCEL at the latest (§9.1).
            wait = 64 * self.ua.layer.timers.t1 + 2 * self.ua.layer.timers.t1 + 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), wait)

    def _cancel(self, cause: Cause) -> None:
        if self.txn is not None:
            self.ua.cancel_invite(self.txn, cause)


class UserAgent:
    """The SIP side of one media node. ``await start()`` binds; it registers itself as
    the switch's endpoint for ``sofia/gateway/``, ``user/``, ``sofia/`` and ``sip:`` legs."""

    def __init__(
        self,
        switch: Switch,
        *,
        host: str = "127.0.0.1",
        rtp_ip: str = "127.0.0.1",
        sdp_ip: str = "",
        rtp_ip6: str = "",
        sdp_ip6: str = "",
        ports: PortAllocator | None = None,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        gateways: Mapping[str, GatewaySection] | None = None,
        users: Mapping[str, UserSection] | None = None,
        realm: str = "switchboard",
        digest_algorithms: Sequence[str] = ("MD5",),
        retry_after: int = 300,
        user_agent: str = "",
        metrics: Any = None,
        timers: TimerValues = DEFAULT_TIMERS,
        timer_c: float | None = TIMER_C,
        sip_socket_buffer: int = SIP_SOCKET_BUFFER,
        rtp_timeout: float = 0.0,
        srtp: str = "optional",
        trunk_srtp: Mapping[str, str] | None = None,
        trusted: Sequence[str] = (),
        bans: AuthBans | None = None,
        trunk_sources: Sequence[str] = (),
    ) -> None:
        """``timer_c``: no final response this long after the last provisional (§16.6
        item 11, as sofia-sip's NTA applies it to a UA too) → CANCEL, the leg ends as
        408; ``sip_socket_buffer``: SO_RCVBUF/SO_SNDBUF of the UDP sockets (0 = kernel
        default); ``rtp_timeout``: hang up answered calls that receive no RTP this long
        (MEDIA_TIMEOUT; 0 = off); ``rtp_ip6``/``sdp_ip6``: the IPv6 media address of
        legs whose far end is IPv6 ("" = none)."""
        self.switch = switch
        self.host = host
        self.rtp_ip = rtp_ip
        self.sdp_ip = sdp_ip or rtp_ip
        self.rtp_ip6 = rtp_ip6
        self.sdp_ip6 = sdp_ip6 or rtp_ip6
        # Dual stack: the host and ports of our SIP sockets per address family (True =
        # IPv6); Via and Contact name the family of the peer they are sent to.
        self.hosts: dict[bool, str] = {}
        self.sip_ports: dict[tuple[str, bool], int] = {}
        self.ports = ports
        self.codecs = codec_specs(codecs)
        self.gateways = dict(gateways or {})
        self.users = dict(users or {})
        self.registrar = Registrar(
            {k: u.password for k, u in self.users.items()},
            realm,
            algorithms=tuple(digest_algorithms),
        )
        self.retry_after = retry_after
        # [limits] overload guards (media/overload.py), set by the node: why a new call is
        # shed now (None: admit), and the Retry-After of that 503
        self.overload: Callable[[], ShedReason | None] | None = None
        self.overload_retry_after = 1
        self._shed_logged = 0.0
        self._shed_unlogged = 0
        self.user_agent = user_agent
        # No product name by default: it tells a scanner which exploits to try.
        self.ua_header: list[tuple[str, str]] = [("User-Agent", user_agent)] if user_agent else []
        self.metrics = metrics
        self.layer = TransactionLayer(
            timers=timers, retransmit_2xx=True, send_trying=True, timer_c=timer_c
        )
        self.sip_socket_buffer = sip_socket_buffer
        self.rtp_timeout = rtp_timeout
        self.rtp_watch = RtpInactivity(rtp_timeout)
        self.srtp = srtp  # SRTP policy of calls coming in ([media] srtp)
        # per-trunk policies ([trunks.NAME] srtp) for calls the router marks with the
        # trunk's name (X-Switchboard-Trunk, which it drops from outside input)
        self.trunk_srtp = {k: v for k, v in (trunk_srtp or {}).items() if v}
        # [media] trusted plus the gateways' IP addresses (a gateway named by host name
        # must have its addresses in [media] trusted); empty: SIP from anyone.
        gw_ips = [h for h in (_ip_of(g.proxy) for g in self.gateways.values()) if h]
        self.trusted = AddressList([*trusted, *gw_ips], key="media.trusted") if trusted else None
        # Where X-Switchboard-Trunk/-Account are believed: the edge routers; () = nowhere.
        self.trunk_sources = (
            AddressList(trunk_sources, key="media.routers") if trunk_sources else None
        )
        self.bans = bans
        self.untrusted_drops = 0
        self.endpoint: SipEndpoint | None = None
        self.legs: dict[tuple[str, str], SipLeg] = {}
        # dialogs ended here in the last 64·T1: a BYE for one is a retransmission that
        # came back by another path (another router: a new Via branch) and gets its 200
        self.ended = EndedDialogs()
        # 2xx to INVITEs with no call here (sent before a restart), ACKed and BYE'd once;
        # each hook gets the response when one is first ended (recovery writes its CDR)
        self.strays: dict[tuple[str, str], Dialog] = {}
        self.stray_hooks: list[Any] = []
        # a new INVITE, called before anything yields — its 100 Trying has just left, so
        # the router waits for a final response from us: recovery journals the setup here
        # (each hook gets the pending context, whose uuid and tag the call will carry) —
        # and when its setup ends with no session (a refusal, a CANCEL before one existed)
        self.invite_hooks: list[Any] = []
        # the first ACK of an inbound leg's 2xx (each hook gets the leg): recovery journals
        # it, so a restart no longer retransmits that 2xx
        self.ack_hooks: list[Any] = []
        self.setup_refused_hooks: list[Any] = []
        self.gateway_calls: dict[str, int] = dict.fromkeys(self.gateways, 0)
        self.gateway_state: dict[str, str] = {}
        self.udp_port = 0
        self.tcp_port = 0
        self.tls_port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        for kind in ("gateway", "user", "sofia", "sip"):
            switch.endpoints[kind] = self
        switch.hangup_hooks.append(self._gateway_release)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, listen: Sequence[str], tls: TlsFiles | None = None) -> None:
        """Bind every ``udp:H:P`` / ``tcp:H:P`` / ``tls:H:P`` address (port 0 = any free);
        ``tls``: the node's certificate files (tls: addresses, TLS gateways). Raises
        :class:`~switchboard.net.tls.TlsConfigError` for files that do not load."""
        self.endpoint = SipEndpoint(self.layer, on_event=self._on_event)
        if self.trusted is not None or self.bans is not None:
            self.endpoint.accept = self._accept
        self.configure_tls(tls, listening=any(i.startswith("tls:") for i in listen))
        for item in listen:
            proto, _, addr = item.partition(":")
            h, _, p = addr.rpartition(":")
            v6 = ":" in h
            if proto == "udp":
                _, port = await self.endpoint.listen_udp(h.strip("[]"), int(p))
                self._size_buffers(self.endpoint.udp[-1].transport)
            elif proto == "tls":
                _, port = await self.endpoint.listen_tls(h.strip("[]"), int(p))
            else:
                _, port = await self.endpoint.listen_tcp(h.strip("[]"), int(p))
            transport = proto.upper()
            self.sip_ports.setdefault((transport, v6), port)
            # Contact: never a wildcard (0.0.0.0 / [::] → the host's own address)
            self.hosts.setdefault(v6, own_address(f"[{h.strip('[]')}]" if v6 else h))
        # the first address of each kind in listen order (what single-stack nodes had)
        first_v6 = ":" in listen[0].partition(":")[2].rpartition(":")[0] if listen else False
        self.host = self.hosts.get(first_v6, self.host)
        self.udp_port = self._first_port("UDP", first_v6)
        self.tcp_port = self._first_port("TCP", first_v6)
        self.tls_port = self._first_port("TLS", first_v6)
        self.switch._gateway_source = self.gateway_info
        for name, gw in self.gateways.items():
            if gw.registration:
                self._spawn(self._register_loop(name, gw))
        if self.rtp_timeout > 0:
            self._spawn(self._watch_rtp())

    def configure_tls(self, files: TlsFiles | None, *, listening: bool | None = None) -> None:
        """Build the TLS contexts: the node's own (tls: listen addresses) and one client
        context per TLS gateway (its CA, its client certificate). At start and on reload;
        raises TlsConfigError and changes nothing when a file does not load."""
        assert self.endpoint is not None
        if listening is None:
            listening = self.endpoint.tls is not None and self.endpoint.tls.ssl_server is not None
        tls_gateways = {n: g for n, g in self.gateways.items() if g.transport == "tls"}
        if not listening and not tls_gateways:
            return
        server = server_context(files) if listening and files is not None else None
        default_client = client_context(TlsFiles(where="media"))
        per_peer: dict[tuple[str, int], ssl.SSLContext] = {}
        for name, gw in tls_gateways.items():
            peer = peer_for_uri(SipUri.parse(f"sip:{gw.proxy};transport=tls"))
            per_peer[(peer.host, peer.port)] = client_context(
                TlsFiles(
                    gw.tls_cert,
                    gw.tls_key,
                    gw.tls_ca,
                    verify_server=gw.tls_verify,
                    where=f"gateways.{name}",
                )
            )
        transport = self.endpoint.enable_tls(server, default_client)
        transport.client_contexts = per_peer
        if self.metrics is not None:
            transport.on_handshake_failure = self.metrics.tls_handshake_failures.inc

    def _size_buffers(self, transport: asyncio.BaseTransport | None) -> None:
        """Enlarge the socket buffers (as the router does); the kernel caps SO_RCVBUF at
        ``net.core.rmem_max`` (SO_SNDBUF at ``wmem_max``) — tolerated, and logged."""
        size = self.sip_socket_buffer
        sock = transport.get_extra_info("socket") if transport is not None else None
        if size <= 0 or sock is None:
            return
        for opt, name in ((socket.SO_RCVBUF, "rmem_max"), (socket.SO_SNDBUF, "wmem_max")):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
                got = sock.getsockopt(socket.SOL_SOCKET, opt)
            except OSError as exc:
                log.warning("SIP UDP socket buffer not set: %s", exc)
                continue
            if got < size:  # Linux reports twice the value it granted
                log.info("SIP UDP socket buffer capped by the kernel at %d bytes "
                         "(raise net.core.%s for %d)", got, name, size)  # fmt: skip

    async def _watch_rtp(self) -> None:
        """FreeSWITCH ``rtp_timeout_sec``: an answered leg that received no RTP for
        ``rtp_timeout`` seconds is hung up with MEDIA_TIMEOUT (checked a few times per
        timeout; a leg on hold is not expected to send, so it is not counted)."""
        loop = asyncio.get_running_loop()
        period = min(1.0, self.rtp_timeout / 4)
        while True:
            await asyncio.sleep(period)
            self._check_rtp(loop.time())

    def _check_rtp(self, now: float) -> None:
        # a function of its own: no leg stays referenced by the sleeping watchdog's frame
        # (a finished call must be freed by reference counting, not wait for this loop)
        live: set[tuple[str, str]] = set()
        for key, leg in list(self.legs.items()):
            answered = getattr(leg, "answered", False)
            if not answered or leg.session.is_hungup or leg.rtp.closed:
                continue
            live.add(key)
            neg = leg.negotiated
            paused = neg is None or neg.remote_hold or leg.session.channel.held
            if self.rtp_watch.observe(key, leg.rtp.packets_received, paused, now):
                log.info("call %s: no RTP for %.0f s: MEDIA_TIMEOUT",
                         leg.call_id, self.rtp_timeout)  # fmt: skip
                self.switch.hangup(leg.session.uuid, Cause.MEDIA_TIMEOUT)
        self.rtp_watch.retain(live)

    def gateway_info(self) -> dict[str, GatewayInfo]:
        """``sofia status`` rows: NOREG (IP trunk), REGED, TRYING, FAIL_WAIT."""
        out = {}
        for name, gw in self.gateways.items():
            state = self.gateway_state.get(name, "NOREG" if not gw.registration else "TRYING")
            out[name] = GatewayInfo(name, f"sip:{gw.username or 'gw'}@{gw.proxy}", state,
                                    self.gateway_calls.get(name, 0))  # fmt: skip
        return out

    async def _register_loop(self, name: str, gw: GatewaySection) -> None:
        """Keep a registration with the carrier (RFC 3261 §10.2), digest on 401/407;
        re-register at 90 % of the granted expiry, retry after 30 s on failure."""
        call_id = new_call_id(_rand(), self.host)
        tag = new_tag(_rand())
        seq = 0
        host = gw.proxy.rpartition(":")[0]
        transport = f";transport={gw.transport}" if gw.transport != "udp" else ""
        ruri = f"sip:{host}{transport}"
        peer = peer_for_uri(SipUri.parse(f"sip:{gw.proxy}{transport}"))
        aor = f"<sip:{gw.username}@{host}>"
        while True:
            auth: tuple[str, str] | None = None
            granted = 0
            for _ in range(2):
                seq += 1
                headers = [("Expires", str(gw.expires)), *self.ua_header]
                if auth:
                    headers.append(auth)
                req = Request.build(
                    "REGISTER", ruri, via=self.via(peer), from_=f"{aor};tag={tag}", to=aor,
                    call_id=call_id, cseq=seq, contact=self.contact(peer.transport, gw.username or "gw", peer.host),
                    headers=headers,
                )  # fmt: skip
                fut: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
                self.send_request(req, peer, context=("register", fut))
                try:
                    resp = await asyncio.wait_for(fut, 40.0)
                except TimeoutError:
                    resp = None
                if resp is None:
                    break
                if resp.status in (401, 407) and auth is None and gw.username:
                    hdr = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
                    out = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                    for value in resp.headers.get_all(hdr):
                        a = authorization(value, method="REGISTER", uri=ruri, username=gw.username,
                                          password=gw.password, cnonce=os.urandom(8).hex(), realm=gw.realm)  # fmt: skip
                        if a is not None:
                            auth = (out, a)
                            break
                    if auth is not None:
                        continue
                if 200 <= resp.status < 300:
                    granted = gw.expires
                    for c in resp.contacts:
                        if c.expires is not None:
                            granted = c.expires
                    v = resp.headers.get("Expires")
                    if v and v.strip().isdigit() and not resp.contacts:
                        granted = int(v)
                break
            self.gateway_state[name] = "REGED" if granted else "FAIL_WAIT"
            log.info("gateway %s registration: %s", name, self.gateway_state[name])
            await asyncio.sleep(max(5.0, granted * 0.9) if granted else 30.0)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.endpoint is not None:
            await self.endpoint.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP handler failed", exc_info=task.exception())

    # ------------------------------------------------------------------ sending
    def _first_port(self, transport: str, v6: bool) -> int:
        return self.sip_ports.get((transport, v6)) or self.sip_ports.get((transport, not v6), 0)

    def host_for(self, peer_host: str | None) -> str:
        """Our SIP host as a peer at ``peer_host`` reaches it: the address of its family
        when we listen on one (dual stack), else the first listen address."""
        if peer_host is None or not self.hosts:
            return self.host
        return self.hosts.get(":" in peer_host, self.host)

    def port_for(self, transport: str, peer_host: str | None = None) -> int:
        if peer_host is not None and self.sip_ports:
            v6 = ":" in peer_host
            if v6 in self.hosts:
                found = self.sip_ports.get((transport, v6)) or self.sip_ports.get(("UDP", v6))
                if found:
                    return found
        if transport == "TLS" and self.tls_port:
            return self.tls_port
        return self.tcp_port if transport == "TCP" and self.tcp_port else self.udp_port

    def via(self, peer: Peer) -> str:
        return (
            f"SIP/2.0/{peer.transport} {self.host_for(peer.host)}:"
            f"{self.port_for(peer.transport, peer.host)};branch={new_branch(_rand())};rport"
        )

    def contact(
        self, transport: str, user: str = "switchboard", peer_host: str | None = None
    ) -> str:
        t = f";transport={transport.lower()}" if transport in ("TCP", "TLS") else ""
        host, port = self.host_for(peer_host), self.port_for(transport, peer_host)
        return f"<sip:{user}@{host}:{port}{t}>"

    def leg_sdp_ip(self, leg: SipLeg) -> str:
        """The SDP address of a leg's RTP socket (its family was chosen at setup)."""
        return self.sdp_ip6 if ":" in leg.rtp.local_address[0] else self.sdp_ip

    def media_address(self, v6: bool) -> tuple[str, str]:
        """(bind address, SDP address) of RTP for a far end of this family; raises
        :class:`NegotiationError` for IPv6 without ``rtp_ip6`` (the offer gets a 488)."""
        if not v6:
            return self.rtp_ip, self.sdp_ip
        if not self.rtp_ip6:
            raise NegotiationError("an IPv6 media address (c=IN IP6) and no [media] rtp_ip6")
        return self.rtp_ip6, self.sdp_ip6

    def send_request(self, req: Request, peer: Peer, *, context: Any = None) -> ClientTransaction:
        assert self.endpoint is not None
        txn, out = self.layer.send_request(req, peer, self.endpoint.loop.time(), context=context)
        self.endpoint.process(out)
        return txn

    def cancel_invite(self, txn: ClientTransaction, cause: Cause) -> bool:
        """CANCEL a ringing INVITE (§9.1) with ``Reason`` (RFC 3326), and arm the
        transaction layer's 64·T1 guard (:meth:`TransactionLayer.cancel_sent`, what
        ``send_cancel`` does; built here to carry the Reason): if no final response
        follows, the INVITE transaction ends with ``TimedOut`` and the leg with it.
        False when §9.1 forbids a CANCEL now (no provisional yet, or already final)."""
        if txn.state is not State.PROCEEDING or self.endpoint is None:
            return False
        cancel = build_cancel(txn.request)
        cancel.headers.add("Reason", reason_header(cause))
        now = self.endpoint.loop.time()
        _, out = self.layer.send_request(cancel, txn.peer, now, context=("cancel",))
        self.layer.cancel_sent(txn, now)
        self.endpoint.process(out)
        return True

    def send_response(self, txn: ServerTransaction, resp: Response) -> None:
        assert self.endpoint is not None
        try:
            self.endpoint.feed(lambda now: self.layer.send_response(txn, resp, now))
        except SipError as exc:  # the transaction moved on (e.g. CANCEL raced a 200)
            log.debug("response %s not sent: %s", resp.status, exc)

    def respond(
        self, txn: ServerTransaction, req: Request, status: int, reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (), body: bytes = b"", to_tag: str | None = None,
    ) -> None:  # fmt: skip
        tag = to_tag if to_tag is not None else (None if req.to_tag else new_tag(_rand()))
        extra = [*headers, *self.ua_header]
        self.send_response(
            txn, make_response(req, status, reason, to_tag=tag, headers=extra, body=body)
        )

    def observe_setup(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.setup_latency.observe(seconds)

    # ------------------------------------------------------------------ events from the stack
    def _on_event(self, ev: Any) -> None:
        match ev:
            case RequestReceived(request=req, transaction=txn, peer=peer):
                self._on_request(req, txn, peer)
            case ResponseReceived(response=resp, transaction=txn, peer=peer):
                self._on_response(resp, txn, peer)
            case AckReceived(request=req):
                leg = self.legs.get((req.call_id, req.to_tag or ""))
                if leg is not None:
                    if isinstance(leg, InboundLeg) and leg.ok_2xx is not None:
                        leg.ok_2xx = None  # ACKed: nothing to retransmit after a restart
                        for hook in self.ack_hooks:
                            hook(leg)
                    leg.acked.set()
                    if leg.dialog is not None:
                        leg.dialog.confirm()
                    if leg.negotiated is None and req.body and leg.local_sdp is not None:
                        self._late_answer(leg, req.body)
            case TimedOut(transaction=txn, timer=timer):
                self._on_timeout(txn, timer)
            case TransportFailed(transaction=txn):
                self._on_transport_failed(txn)
            case Terminated(transaction=txn):
                # The layer's timer heap may keep a stopped timer's transaction until
                # that timer's due time (Timer C: 3 minutes); the call it carried need
                # not wait with it.
                txn.context = None
            case _:
                pass

    def _on_request(self, req: Request, txn: ServerTransaction, peer: Peer) -> None:
        method = req.method
        if req.to_tag:
            leg = self.legs.get((req.call_id, req.to_tag))
            if leg is None:
                if method == "OPTIONS":
                    self._options(req, txn)
                elif method == "BYE" and self.ended.recent(
                    (req.call_id, req.to_tag), time.monotonic()
                ):
                    self.respond(txn, req, 200, "OK", to_tag=None)
                else:
                    self.respond(txn, req, 481, "Call/Transaction Does Not Exist")
                return
            self._in_dialog(leg, req, txn)
            return
        match method:
            case "INVITE":
                if self.overload is not None and self._shed(req, txn):
                    return
                leg_ctx = InboundPending(req, peer)
                txn.context = leg_ctx
                if self.invite_hooks:
                    leg_ctx.uuid = str(uuid_mod.uuid4())
                    leg_ctx.tag = leg_tag(_rand(), leg_ctx.uuid)
                    for hook in self.invite_hooks:
                        hook(leg_ctx)
                self._spawn(self._on_invite_guarded(leg_ctx, txn))
            case "CANCEL":
                self._on_cancel(req, txn)
            case "OPTIONS":
                self._options(req, txn)
            case "REGISTER":
                resp = self.registrar.handle(
                    req,
                    (peer.transport, peer.host, peer.port),
                    time.time(),
                    to_tag=new_tag(_rand()),
                )
                self.send_response(txn, resp)
                if resp.status == 403:
                    self._auth_failed(req, peer)
            case "BYE" | "INFO" | "UPDATE":
                self.respond(txn, req, 481, "Call/Transaction Does Not Exist")
            case _:
                self.respond(txn, req, 405, "Method Not Allowed", headers=[("Allow", ALLOW)])

    def _shed(self, req: Request, txn: ServerTransaction) -> bool:
        """Refuse a new call while the node is behind (media/overload.py): 503 with a short
        Retry-After before anything is made for it, no Q.850 Reason (the node's own state:
        the router tries another node). Emergency calls are never shed."""
        assert self.overload is not None
        reason = self.overload()
        if reason is None:
            return False
        try:
            if (req.ruri.user or "") in self.switch.emergency_numbers:
                return False
        except SipError:
            return False  # _on_invite answers the malformed request
        self.respond(txn, req, 503, "Service Unavailable",
                     headers=[("Retry-After", str(self.overload_retry_after))])  # fmt: skip
        if self.metrics is not None:
            self.metrics.overload_shed.labels(reason=reason.value).inc()
        # one line a second at most: logging every refusal is work an overloaded node lacks
        now = time.monotonic()
        self._shed_unlogged += 1
        if now - self._shed_logged >= 1.0:
            log.warning("overloaded (%s): %d new call(s) shed with 503",
                        reason.value, self._shed_unlogged)  # fmt: skip
            self._shed_logged, self._shed_unlogged = now, 0
        return True

    def _accept(self, message: Request | Response | None, peer: Peer) -> bool:
        """The endpoint's gate: SIP only from trusted networks; nothing from banned sources."""
        if self.trusted is not None and peer.host not in self.trusted:
            self._drop()
            return False
        bans = self.bans
        if (
            bans is not None
            and bans.active
            and isinstance(message, Request)
            and bans.is_banned(_auth_source(message, peer), time.monotonic())
        ):
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        self.untrusted_drops += 1
        if self.metrics is not None:
            self.metrics.untrusted_drops.inc()

    def _auth_failed(self, req: Request, peer: Peer) -> None:
        if self.metrics is not None:
            self.metrics.auth_failures.inc()
        if self.bans is None:
            return
        ban = self.bans.failed(_auth_source(req, peer), time.monotonic())
        if ban is not None:
            log.warning(ban.log_line())
            if self.metrics is not None:
                self.metrics.auth_bans.inc()

    def _options(self, req: Request, txn: ServerTransaction) -> None:
        self.respond(
            txn,
            req,
            200,
            "OK",
            headers=[
                ("Allow", ALLOW),
                ("Accept", "application/sdp, application/dtmf-relay"),
                (CALLS_HEADER, str(self.switch.active_calls)),
            ],
        )

    # ------------------------------------------------------------------ inbound INVITE
    async def _on_invite_guarded(self, pending: InboundPending, txn: ServerTransaction) -> None:
        """Our bug must not leave the caller without a final response (or the channel up)."""
        try:
            await self._on_invite(pending, txn)
        except Exception:
            log.exception("INVITE %s: setup failed", pending.request.call_id)
            leg = pending.leg
            if leg is not None:
                self.switch.hangup(leg.session.uuid, Cause.NORMAL_TEMPORARY_FAILURE)
            else:
                self.respond(txn, pending.request, 500, "Server Internal Error")
        finally:
            if pending.uuid and not pending.started:
                for hook in self.setup_refused_hooks:
                    hook(pending.uuid)

    async def _on_invite(self, pending: InboundPending, txn: ServerTransaction) -> None:
        req, peer = pending.request, pending.peer
        received = time.monotonic()
        try:  # headers are parsed lazily: a bad From/To/R-URI is the peer's 400, not our crash
            frm, to, ruri = req.from_, req.to, req.ruri
        except SipError as exc:
            self.respond(txn, req, exc.status, exc.reason)
            return
        offer: SessionDescription | None = None
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        sdp_body = req.body
        # Parts next to the SDP (RFC 5621), e.g. an emergency caller's PIDF-LO location
        # (RFC 6442 by value): kept for the B-leg of an emergency call.
        other_parts: list[multipart.Part] = []
        if req.body:
            if ctype == "multipart/mixed":
                parts = multipart.split(req.headers.get("Content-Type") or "", req.body)
                sdps = [p for p in parts or () if p.content_type == "application/sdp"]
                if parts is not None and len(sdps) <= 1:
                    sdp_body = sdps[0].body if sdps else b""
                    other_parts = [p for p in parts if p.content_type != "application/sdp"]
                    ctype = "application/sdp" if sdps else ""
                else:
                    ctype = "unusable multipart"
            if ctype != "application/sdp" and sdp_body:
                self.respond(
                    txn, req, 415, "Unsupported Media Type",
                    headers=[("Accept", "application/sdp, multipart/mixed")],
                )  # fmt: skip
                return
        if sdp_body:
            try:
                offer = parse_sdp(sdp_body)
            except SdpError as exc:
                log.info("INVITE %s: malformed SDP: %s", req.call_id, exc)
                self.respond(txn, req, 400, f"Bad Request (SDP: {exc})"[:120])
                return
        neg: Negotiated | None = None
        srtp_key = os.urandom(KEY_LENGTH)
        srtp = self.srtp
        if self.trunk_srtp:
            srtp = self.trunk_srtp.get(req.headers.get("X-Switchboard-Trunk") or "", srtp)
        rtp_ip, sdp_ip = self.rtp_ip, self.sdp_ip
        if offer is not None:
            try:
                # our media of the offer's family: an IPv6 far end gets IPv6 (RFC 4566 §5.7)
                rtp_ip, sdp_ip = self.media_address(offer.uses_ipv6())
                _, neg = answer_offer(offer, codecs=self.codecs, address=sdp_ip, port=9,
                                      session_id="0", version=0, srtp=srtp,
                                      srtp_key=srtp_key)  # fmt: skip
            except NegotiationError:
                self.respond(txn, req, 488, "Not Acceptable Here",
                             headers=[("Reason", reason_header(Cause.INCOMPATIBLE_DESTINATION))])  # fmt: skip
                self._count_refused("failed")
                return
        # An emergency call is known by its number ([emergency] numbers), never by a
        # header a caller could add: it bypasses the session limits (reserve) and credit.
        emergency = (ruri.user or "") in self.switch.emergency_numbers
        refusal = self.switch.admit(emergency=emergency)
        if refusal is not None:
            log.warning("INVITE %s refused: %s", req.call_id, refusal.value)
            # No Q.850 Reason: this 503 is the node's own overload, which the router
            # fails over (a Reason marks a call's outcome beyond the node: never retried).
            self.respond(txn, req, 503, "Maximum Calls In Progress",
                         headers=[("Retry-After", str(self.retry_after))])  # fmt: skip
            if self.metrics is not None:
                reason = "sessions_per_second" if refusal.name == "THROTTLE" else "max_sessions"
                self.metrics.sessions_rejected.labels(reason=reason).inc()
            self._count_refused("failed")
            return
        try:
            codec = engine_codec(neg) if neg else codec_by_name(self.codecs[0].name)
            rtp = await RtpEndpoint.open(
                rtp_ip, allocator=self.ports, codec=codec,
                event_pt=neg.event_pt if neg else None,
            )  # fmt: skip
        except (PortsExhausted, OSError, CodecError) as exc:
            log.error("INVITE %s: no RTP port: %s", req.call_id, exc)
            self.switch.limits.release()
            self.respond(txn, req, 503, "Service Unavailable")
            return
        if pending.cancelled:
            rtp.close()
            self.switch.limits.release()
            return
        profile = CallerProfile(
            caller_id_name=frm.display or frm.uri.user or "",
            caller_id_number=frm.uri.user or "",
            destination_number=ruri.user or to.uri.user or "",
            network_addr=peer.host,
            username=frm.uri.user or "",
        )
        variables = {
            "sip_call_id": req.call_id,
            "sip_from_user": frm.uri.user or "",
            "sip_from_host": frm.uri.host,
            "sip_to_user": to.uri.user or "",
            "sip_req_uri": req.uri,
            "sip_network_ip": peer.host,
            "sip_network_port": str(peer.port),
            "sip_transport": peer.transport.lower(),
            "sip_user_agent": req.headers.get("User-Agent") or "",
            "switch_r_sdp": sdp_body.decode("utf-8", "replace") if sdp_body else "",
        }
        # The edge router names the carrier trunk (and the account it bills to) and drops
        # these headers from outside input: believed only from a router's address, or
        # a phone or carrier that reaches the node directly could choose who pays.
        if self.trunk_sources is not None and peer.host in self.trunk_sources:
            variables["trunk"] = req.headers.get("X-Switchboard-Trunk") or ""
            account = req.headers.get("X-Switchboard-Account")
            if account:  # the trunk bills to this account (credit control, CDR, rating)
                variables["accountcode"] = account
            # The router's STIR/SHAKEN verdict (docs/compliance.md): its word, like the
            # trunk, so believed from the router only.
            verstat = req.headers.get("X-Switchboard-Verstat")
            if verstat:
                variables["stir_verstat"] = verstat
                variables["stir_attestation"] = req.headers.get("X-Switchboard-Attestation") or ""
                # [stir] verstat_to_callee: the router put the verdict on the caller's
                # P-Asserted-Identity; the B-leg carries it on to the callee.
                pai = req.headers.get("P-Asserted-Identity") or ""
                if "verstat=" in pai:
                    variables[PAI_VAR] = pai
        if emergency:
            variables[EMERGENCY_VAR] = "true"
            # RFC 6442 location conveyance: passed unchanged to the B-leg (headers here,
            # body parts by value through the session's data below).
            for name in ("Geolocation", "Geolocation-Routing"):
                values = req.headers.get_all(name)
                if values:
                    variables[f"sip_h_{name}"] = ", ".join(values)
            log.warning("INVITE %s: emergency call to %s from %s", req.call_id, ruri.user,
                        frm.uri.user)  # fmt: skip
            if self.metrics is not None:
                self.metrics.emergency_calls.inc()
        session = self.switch.create_session(
            direction="inbound",
            name=f"sofia/internal/{frm.uri.user or 'anonymous'}@{peer.host}:{peer.port}",
            profile=profile,
            variables=variables,
            uuid=pending.uuid or None,
        )
        pending.started = True
        if emergency and other_parts:
            session.data[BODY_PARTS] = other_parts
        leg = InboundLeg(
            ua=self, session=session, peer=peer, call_id=req.call_id,
            local_tag=pending.tag or leg_tag(_rand(), session.uuid), rtp=rtp, codecs=self.codecs,
            invite=req,
            txn=txn,
            received_at=received, contact=self.contact(peer.transport, peer_host=peer.host),
            srtp=srtp, srtp_key=srtp_key,
        )  # fmt: skip
        pending.leg = leg
        session.leg = leg
        session.media = rtp
        self._wire_media(leg)
        if offer is not None:
            assert neg is not None
            leg.local_sdp, neg = answer_offer(
                offer, codecs=self.codecs, address=sdp_ip, port=rtp.port,
                session_id=leg.sdp_session_id, version=leg.sdp_version,
                srtp=leg.srtp, srtp_key=leg.srtp_key,
            )  # fmt: skip
            leg.apply_negotiated(neg)
        else:  # late offer (RFC 3261 §13.2.1): we offer in the 2xx, the ACK answers
            leg.local_sdp = create_offer(
                codecs=self.codecs, address=sdp_ip, port=rtp.port,
                session_id=leg.sdp_session_id, version=leg.sdp_version,
                srtp=leg.srtp, srtp_key=leg.srtp_key,
            )  # fmt: skip
        session.channel.set_var("switch_l_sdp", leg.local_sdp.to_bytes().decode())
        if self.metrics is not None:
            self.metrics.call_attempts.labels(direction="inbound").inc()
        self.switch.start_inbound(session)

    def _late_answer(self, leg: SipLeg, body: bytes) -> None:
        """The answer to the offer we put in our 2xx (late offer, RFC 3261 §13.2.1)."""
        assert leg.local_sdp is not None
        try:
            leg.apply_negotiated(process_answer(leg.local_sdp, parse_sdp(body), codecs=leg.codecs))
        except (SdpError, NegotiationError) as exc:
            log.warning("call %s: unusable SDP in ACK: %s", leg.call_id, exc)
            self.switch.hangup(leg.session.uuid, Cause.INCOMPATIBLE_DESTINATION)

    def _wire_media(self, leg: SipLeg) -> None:
        sw, s = self.switch, leg.session

        def on_dtmf(ep: RtpEndpoint, event: Any) -> None:
            if type(event).__name__ == "DtmfEnd" or getattr(event, "duration", None) is not None:
                src = "INBAND_AUDIO" if getattr(event, "source", "") == "inband" else "RTP"
                sw.on_dtmf(s, event.digit, int(getattr(event, "duration", 0) or 0), src)

        leg.rtp.on_dtmf = on_dtmf

    def _count_refused(self, disposition: str) -> None:
        if self.metrics is not None:
            self.metrics.call_ended("inbound", disposition, 0.0)

    def _on_cancel(self, req: Request, txn: ServerTransaction) -> None:
        inv = self.layer.find_invite_for_cancel(req)
        if inv is None:
            self.respond(txn, req, 481, "Call/Transaction Does Not Exist")
            return
        self.respond(txn, req, 200, "OK", to_tag=None)
        pending = inv.context
        if not isinstance(pending, InboundPending):
            return
        pending.cancelled = True
        leg = pending.leg
        if leg is None:  # still being set up (or the call is over: the layer refuses the 487)
            if inv.state is State.PROCEEDING:
                self.respond(inv, pending.request, 487, "Request Terminated")
            return
        if leg.final_sent:
            return
        leg._respond(487, reason="Request Terminated")
        cause = sip_to_cause(487, req.headers.get("Reason"))
        self.switch.on_remote_hangup(leg.session, cause, sip_status=487, disposition="recv_cancel")
        leg.close()

    # ------------------------------------------------------------------ in-dialog requests
    def _in_dialog(self, leg: SipLeg, req: Request, txn: ServerTransaction) -> None:
        if leg.dialog is not None:
            try:
                leg.dialog.on_request(req)
            except SipError as exc:
                self.respond(txn, req, exc.status, exc.reason, to_tag=None)
                return
        match req.method:
            case "BYE":
                self.respond(txn, req, 200, "OK", to_tag=None)
                cause = sip_to_cause(200, req.headers.get("Reason"))
                leg.bye_sent = True
                self.switch.on_remote_hangup(leg.session, cause, disposition="recv_bye")
                leg.close()
            case "INVITE" | "UPDATE":
                self._reinvite(leg, req, txn)
            case "INFO":
                self._info(leg, req, txn)
            case "OPTIONS":
                self._options(req, txn)
            case _:
                self.respond(
                    txn, req, 405, "Method Not Allowed", headers=[("Allow", ALLOW)], to_tag=None
                )

    def _reinvite(self, leg: SipLeg, req: Request, txn: ServerTransaction) -> None:
        """RFC 3264 §8: hold/unhold, codec change, address change; 488 keeps the old session."""
        if not req.body:
            body = leg.local_sdp.to_bytes() if leg.local_sdp else b""
            self.respond(txn, req, 200, "OK", body=body, to_tag=None,
                         headers=[("Contact", self.contact(leg.peer.transport, peer_host=leg.peer.host)), ("Content-Type", "application/sdp")])  # fmt: skip
            return
        try:
            offer = parse_sdp(req.body)
            leg.sdp_version += 1
            answer, neg = answer_offer(
                offer, codecs=self.codecs, address=self.leg_sdp_ip(leg), port=leg.rtp.port,
                session_id=leg.sdp_session_id, version=leg.sdp_version,
                srtp="mandatory" if leg.negotiated and leg.negotiated.srtp_suite else leg.srtp,
                srtp_key=leg.srtp_key,
            )  # fmt: skip
        except SdpError as exc:
            self.respond(txn, req, 400, f"Bad Request (SDP: {exc})"[:120], to_tag=None)
            return
        except NegotiationError:
            self.respond(txn, req, 488, "Not Acceptable Here", to_tag=None)
            return
        was_held = leg.negotiated.remote_hold if leg.negotiated else False
        leg.apply_negotiated(neg)
        leg.local_sdp = answer
        self.respond(txn, req, 200, "OK", body=answer.to_bytes(), to_tag=None,
                     headers=[("Contact", self.contact(leg.peer.transport, peer_host=leg.peer.host)), ("Content-Type", "application/sdp")])  # fmt: skip
        ch = leg.session.channel
        if neg.remote_hold != was_held:
            ch.held = neg.remote_hold
            self.switch._fire("CHANNEL_HOLD" if neg.remote_hold else "CHANNEL_UNHOLD", leg.session)
        self.switch._fire("CALL_UPDATE", leg.session)

    def _info(self, leg: SipLeg, req: Request, txn: ServerTransaction) -> None:
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = req.body.decode("utf-8", "replace")
        digit, duration = "", 160
        if ctype == "application/dtmf-relay":
            for line in text.splitlines():
                k, _, v = line.partition("=")
                if k.strip().lower() == "signal":
                    digit = v.strip()
                elif k.strip().lower() == "duration" and v.strip().isdigit():
                    duration = int(v.strip()) * 8  # ms → samples at 8 kHz
        elif ctype == "application/dtmf":
            digit = text.strip()
        if digit and digit.upper() in set("0123456789*#ABCD"):
            self.respond(txn, req, 200, "OK", to_tag=None)
            self.switch.on_dtmf(leg.session, digit.upper(), duration, "ENDPOINT")
        elif req.body:
            self.respond(txn, req, 415, "Unsupported Media Type", to_tag=None)
        else:
            self.respond(txn, req, 200, "OK", to_tag=None)

    # ------------------------------------------------------------------ outbound legs
    async def place(self, session: Session, leg: DialLeg) -> None:
        """Endpoint.place for ``sofia/gateway/``, ``user/``, ``sofia/<profile>/`` and ``sip:``."""
        ep = leg.endpoint
        gateway = ""
        creds: tuple[str, str] | None = None
        from_user = session.channel.profile.caller_id_number or "switchboard"
        from_display = session.channel.profile.caller_id_name
        from_host = self.host
        srtp = "off"
        match leg.target:
            case GatewayEndpoint(gateway=gateway, number=number):
                gw = self.gateways.get(gateway)
                if gw is None:
                    raise OriginateError(Cause.INVALID_GATEWAY, gateway)
                if gw.max_calls and self.gateway_calls.get(gateway, 0) >= gw.max_calls:
                    if self.metrics is not None:
                        self.metrics.sessions_rejected.labels(reason="gateway_limit").inc()
                    raise OriginateError(Cause.NORMAL_CIRCUIT_CONGESTION, f"{gateway} at max_calls")
                number = gw.prefix + self._ported(session, number, gw.portability)[gw.strip :]
                transport = f";transport={gw.transport}" if gw.transport != "udp" else ""
                target = SipUri.parse(f"sip:{number}@{gw.proxy}{transport}")
                emergency = session.channel.variables.get(EMERGENCY_VAR) == "true"
                if not emergency:  # an emergency call shows the caller's own number
                    if gw.caller_id_number:
                        from_user = gw.caller_id_number
                    from_user = gw.caller_id_prefix + from_user
                    if gw.caller_id_name:
                        from_display = gw.caller_id_name
                    if gw.from_user:
                        from_user = gw.from_user
                from_host = gw.from_domain or gw.proxy.rpartition(":")[0]
                if gw.username:
                    creds = (gw.username, gw.password)
                srtp = gw.srtp
                session.channel.set_var("sip_gateway_name", gateway)
            case UserEndpoint(user=uid):
                if uid not in self.users:
                    raise OriginateError(Cause.SUBSCRIBER_ABSENT, uid)
                bindings = self.registrar.contacts(uid, time.time())
                if not bindings:
                    raise OriginateError(Cause.USER_NOT_REGISTERED, uid)
                target = max(bindings, key=lambda b: b.expires_at).contact.uri
                srtp = self.users[uid].srtp
            case SofiaEndpoint(uri=uri):
                text = uri if uri.startswith("sip") else f"sip:{uri}"
                try:
                    target = SipUri.parse(text)
                except SipError:
                    raise OriginateError(Cause.INVALID_URL, ep) from None
            case SipUriEndpoint(uri=uri):
                try:
                    target = SipUri.parse(uri)
                except SipError:
                    raise OriginateError(Cause.INVALID_URL, ep) from None
            case _:
                raise OriginateError(Cause.INVALID_URL, ep)
        await self._invite(
            session, target, from_user, from_display, from_host, gateway, creds, srtp
        )

    def _ported(self, session: Session, number: str, mode: str) -> str:
        """A gateway leg's number with its A-leg's portability answer applied
        (media/portability.py); the B-leg's CDR gets the routing number."""
        a_leg = self.switch.session(session.channel.variables.get(ORIGINATING_LEG_VAR, ""))
        if a_leg is None:
            return number
        av = a_leg.channel.variables
        looked_up = av.get(LOOKED_UP_VAR, "")
        routing = av.get(ROUTING_NUMBER_VAR)
        user = request_user(number, looked_up, routing, mode)
        if routing and canonical(number) == looked_up:
            session.channel.set_var(ROUTING_NUMBER_VAR, routing)
        return user

    async def _invite(
        self, session: Session, target: SipUri, from_user: str, from_display: str,
        from_host: str, gateway: str, creds: tuple[str, str] | None, srtp: str = "off",
    ) -> None:  # fmt: skip
        peer = peer_for_uri(target)
        if peer.transport == "TCP" and not self.tcp_port:
            raise OriginateError(Cause.INVALID_URL, "no TCP listener")
        if peer.transport == "TLS" and (self.endpoint is None or self.endpoint.tls is None):
            raise OriginateError(Cause.INVALID_URL, "no TLS configured")
        codecs = self.codecs
        gw = self.gateways.get(gateway)
        if gw is not None and gw.codecs:
            codecs = codec_specs(gw.codecs) or codecs
        # media of the far end's family: IPv6 towards an IPv6 gateway or phone when the
        # node has an IPv6 media address (else IPv4, for a dual-stack far end)
        rtp_ip, sdp_ip = self.media_address(":" in peer.host and bool(self.rtp_ip6))
        if from_host == self.host:
            from_host = self.host_for(peer.host)
        try:
            rtp = await RtpEndpoint.open(rtp_ip, allocator=self.ports,
                                         codec=codec_by_name(codecs[0].name))  # fmt: skip
        except (PortsExhausted, OSError) as exc:
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER, f"RTP: {exc}") from None
        call_id = new_call_id(_rand(), self.host_for(peer.host))
        leg = OutboundLeg(
            ua=self, session=session, peer=peer, call_id=call_id,
            # names the channel and its A-leg: the router bills this leg from it if the
            # node is lost with its box (sip/ids.py leg_tag)
            local_tag=leg_tag(_rand(), session.uuid,
                              session.channel.variables.get(ORIGINATING_LEG_VAR, "")),
            rtp=rtp, codecs=list(codecs), gateway=gateway, credentials=creds, srtp=srtp,
        )  # fmt: skip
        session.leg = leg
        session.media = rtp
        self._wire_media(leg)
        offer = create_offer(codecs=codecs, address=sdp_ip, port=rtp.port,
                             session_id=leg.sdp_session_id, version=leg.sdp_version,
                             srtp=srtp, srtp_key=leg.srtp_key)  # fmt: skip
        leg.local_sdp = offer
        disp = f'"{from_display}" ' if from_display else ""
        from_ = f"{disp}<sip:{from_user}@{from_host}>;tag={leg.local_tag}"
        content_type, body = "application/sdp", offer.to_bytes()
        parts = session.data.get(BODY_PARTS)
        if parts:  # an emergency call's location by value goes on next to our offer
            content_type, body = multipart.join(
                [multipart.Part("application/sdp", (), body), *parts], f"sb-{_rand().hex()}"
            )
        invite = Request.build(
            "INVITE", str(target), via=self.via(peer), from_=from_, to=f"<{_to_uri(target)}>",
            call_id=call_id, cseq=1, contact=self.contact(peer.transport, peer_host=peer.host),
            content_type=content_type,
            headers=[("Allow", ALLOW), *self.ua_header,
                     *_custom_headers(session.channel.variables)],
            body=body,
        )  # fmt: skip
        session.channel.set_var("sip_call_id", call_id)
        session.channel.set_var("switch_l_sdp", offer.to_bytes().decode())
        # the number, without RFC 4694's ;npdi;rn= (portability): what the CDR is rated on
        session.channel.profile.destination_number = (target.user or "").split(";", 1)[0]
        leg.invite = invite
        leg.sent_at = time.monotonic()
        if gateway:
            self.gateway_calls[gateway] = self.gateway_calls.get(gateway, 0) + 1
            if self.metrics is not None:
                self.metrics.gateway_calls.labels(gateway=gateway).set(self.gateway_calls[gateway])
            session.data["gateway"] = gateway
            session.data["gateway_slot"] = gateway  # released by _gateway_release
        if self.metrics is not None:
            self.metrics.call_attempts.labels(direction="outbound").inc()
        self.legs[leg.key] = leg
        leg.txn = self.send_request(invite, peer, context=leg)

    def _gateway_release(self, s: Session) -> None:
        """Hangup hook (one for the node, registered once): a gateway leg frees its slot.

        One hook reading ``session.data`` rather than a closure per call: a per-call hook
        that removes itself from the list is a reference cycle holding the whole call,
        and the list grows with the calls in progress."""
        gateway = s.data.pop("gateway_slot", None)
        if gateway is None:
            return
        self.gateway_calls[gateway] = max(0, self.gateway_calls.get(gateway, 1) - 1)
        if self.metrics is not None:
            self.metrics.gateway_calls.labels(gateway=gateway).set(self.gateway_calls[gateway])

    def _on_response(self, resp: Response, txn: ClientTransaction | None, peer: Peer) -> None:
        ctx = _context(txn) if txn is not None else None
        if isinstance(ctx, OutboundLeg):
            if resp.status >= 200 and txn is not None:
                if txn is ctx.txn:
                    ctx.txn = None  # no CANCEL after a final response: no leg ↔ txn cycle
                # The INVITE transaction stays 64·T1 for retransmitted 2xx (RFC 6026):
                # from now on it must not keep the call's objects alive.
                txn.context = weakref.ref(ctx)
            self._invite_response(ctx, resp)
            return
        if isinstance(ctx, tuple) and ctx[0] == "register":
            if resp.status >= 200 and not ctx[1].done():
                ctx[1].set_result(resp)
            return
        if isinstance(ctx, tuple) and ctx[0] == "in-dialog":
            leg = ctx[1]()
            if leg is not None and leg.dialog is not None and txn is not None:
                leg.dialog.on_response(txn.request, resp)
                if txn.request.method == "INVITE" and resp.status >= 200:
                    self._ack_reinvite(leg, txn.request, resp)
            return
        if txn is None and 200 <= resp.status < 300 and resp.cseq.method == "INVITE":
            # §13.2.2.4: a retransmitted 2xx (our ACK was lost) is ACKed again
            leg = self.legs.get((resp.call_id, resp.from_tag or ""))
            if isinstance(leg, OutboundLeg) and leg.dialog is not None:
                # with that 2xx's CSeq: a dialog rebuilt after a restart knows no INVITE
                # CSeq (or a later re-INVITE's), and the far end matches the ACK by it
                self._send_ack(leg, resp.cseq.seq)
            elif leg is None:
                self._end_stray_2xx(resp, peer)

    def _end_stray_2xx(self, resp: Response, peer: Peer) -> None:
        """§13.2.2.4: a 2xx to an INVITE we hold no call for — sent by this node before it
        was killed and restarted, its caller since served elsewhere — is ACKed and the
        dialog ended with BYE, or the far end keeps (and bills) a leg nobody hears."""
        key = (resp.call_id, resp.from_tag or "")
        dialog = self.strays.get(key)
        first = dialog is None
        if dialog is None:
            if not resp.from_tag or resp.to_tag is None:
                return
            contacts = resp.contacts
            if not contacts:
                return
            dialog = Dialog(
                call_id=resp.call_id,
                local=resp.from_,
                remote=resp.to,
                remote_target=str(contacts[0].uri),
                route_set=list(reversed(resp.record_routes)),
                local_seq=resp.cseq.seq,
                remote_seq=None,
                is_uac=True,
                invite_seq=resp.cseq.seq,
                local_contact=self.contact(peer.transport),
            )
            dialog.confirm()
            if len(self.strays) >= 1024:  # bounded: forget the oldest
                self.strays.pop(next(iter(self.strays)))
            self.strays[key] = dialog
        target = peer
        if peer.transport not in ("TCP", "TLS"):
            ruri, routes = dialog.request_uri_and_routes()
            with contextlib.suppress(SipError):
                uri = NameAddr.parse(routes[0]).uri if routes else SipUri.parse(ruri)
                target = peer_for_uri(uri, peer.transport)
        assert self.endpoint is not None
        self.endpoint.transmit(Transmit(dialog.ack(self.via(target)).to_bytes(), target))
        if first:
            log.warning("call %s: 2xx to an INVITE with no call here: ACK and BYE", resp.call_id)
            bye = dialog.bye(
                self.via(target),
                headers=[("Reason", reason_header(Cause.NORMAL_TEMPORARY_FAILURE))],
            )
            self.send_request(bye, target)
            for hook in self.stray_hooks:
                hook(resp)

    def _ack_reinvite(self, leg: SipLeg, req: Request, resp: Response) -> None:
        if 200 <= resp.status < 300 and leg.dialog is not None:
            peer = leg.in_dialog_peer()
            ack = leg.dialog.ack(self.via(peer))
            assert self.endpoint is not None
            self.endpoint.transmit(Transmit(ack.to_bytes(), peer))
            if resp.body and leg.local_sdp is not None:
                try:
                    leg.apply_negotiated(
                        process_answer(leg.local_sdp, parse_sdp(resp.body), codecs=leg.codecs)
                    )
                except (SdpError, NegotiationError) as exc:
                    log.warning("re-INVITE answer unusable: %s", exc)

    def _send_ack(self, leg: OutboundLeg, seq: int | None = None) -> None:
        assert leg.dialog is not None and self.endpoint is not None
        peer = leg.in_dialog_peer()
        ack = leg.dialog.ack(self.via(peer), seq=seq)
        self.endpoint.transmit(Transmit(ack.to_bytes(), peer))

    def _observe_pdd(self, leg: OutboundLeg) -> None:
        if not leg.pdd_observed:
            leg.pdd_observed = True
            pdd = time.monotonic() - leg.sent_at
            leg.session.channel.set_var("pdd_ms", str(int(pdd * 1000)))
            if self.metrics is not None and leg.gateway:
                self.metrics.pdd.labels(gateway=leg.gateway).observe(pdd)

    def _answer_from(self, leg: OutboundLeg, resp: Response) -> bool:
        if not resp.body or leg.local_sdp is None:
            return leg.negotiated is not None
        try:
            neg = process_answer(leg.local_sdp, parse_sdp(resp.body), codecs=leg.codecs)
        except (SdpError, NegotiationError) as exc:
            log.warning("call %s: unusable SDP answer: %s", leg.call_id, exc)
            return False
        leg.apply_negotiated(neg)
        leg.session.channel.set_var("switch_r_sdp", resp.body.decode("utf-8", "replace"))
        return True

    def _invite_response(self, leg: OutboundLeg, resp: Response) -> None:
        status = resp.status
        s = leg.session
        sw = self.switch
        if status == 100:
            return
        if status < 200:
            leg.provisional = True
            self._observe_pdd(leg)
            if leg.cancel_wanted:
                leg.cancel_wanted = False
                leg._cancel(s.channel.hangup_cause or Cause.NORMAL_CLEARING)
                leg.close()
                return
            if s.is_hungup:
                return
            if resp.body and self._answer_from(leg, resp):
                sw.on_early(s)
            else:
                sw.on_ringing(s)
            return
        if status < 300:
            assert leg.invite is not None
            if leg.dialog is None:
                leg.dialog = Dialog.from_response(leg.invite, resp)
            else:
                leg.dialog.on_response(leg.invite, resp)
            self.legs[leg.key] = leg
            self._send_ack(leg)
            leg.acked.set()
            self._observe_pdd(leg)
            if s.is_hungup or leg.cancel_wanted:
                # The far end answered a leg we had already hung up (its 2xx crossed our
                # CANCEL, §9.1): BYE at once; the leg's CDR shows the answer, 0 s billed,
                # and the hangup cause that ended it.
                first = not leg.answered
                leg.answered = True
                leg.bye(s.channel.hangup_cause or Cause.NORMAL_CLEARING)
                if first and s.is_hungup:
                    now = time.time()
                    ch = s.channel
                    ch.answered_at = ch.hangup_at = now
                    ch.sip_status = status
                    ch.hangup_disposition = "send_bye"
                    ch.set_var("answered_after_cancel", "true")
                    log.info("call %s: answered after our CANCEL: BYE sent", leg.call_id)
                leg.close()
                leg.ended.set()
                return
            if not self._answer_from(leg, resp):
                leg.answered = True
                leg.bye(Cause.INCOMPATIBLE_DESTINATION)
                sw.on_remote_hangup(s, Cause.INCOMPATIBLE_DESTINATION, sip_status=488,
                                    disposition="send_bye")  # fmt: skip
                leg.close()
                return
            leg.answered = True
            leg.ended.set()
            s.channel.sip_status = status
            sw.on_answer(s)
            return
        # final failure
        if (
            status in (401, 407)
            and leg.credentials
            and leg.auth_tries == 0
            and not s.is_hungup
            and self._retry_with_auth(leg, resp)
        ):
            return
        self._observe_pdd(leg)
        cause = sip_to_cause(status, resp.headers.get("Reason"))
        sw.on_remote_hangup(s, cause, sip_status=status, disposition="recv_refuse")
        leg.cancel_wanted = False
        leg.close()
        leg.ended.set()

    def _retry_with_auth(self, leg: OutboundLeg, resp: Response) -> bool:
        """Answer a 401/407 once with digest credentials (RFC 3261 §22.2)."""
        assert leg.invite is not None and leg.credentials is not None
        hdr = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        out_hdr = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        user, password = leg.credentials
        gw = self.gateways.get(leg.gateway)
        for value in resp.headers.get_all(hdr):
            auth = authorization(value, method="INVITE", uri=leg.invite.uri, username=user,
                                 password=password, cnonce=os.urandom(8).hex(),
                                 realm=gw.realm if gw is not None else "")  # fmt: skip
            if auth is None:
                continue
            old = leg.invite
            invite = Request.build(
                "INVITE", old.uri, via=self.via(leg.peer), from_=old.headers.get("From"),
                to=old.headers.get("To"), call_id=old.call_id, cseq=old.cseq.seq + 1,
                contact=old.headers.get("Contact"),
                content_type=old.headers.get("Content-Type") or "application/sdp",
                headers=[("Allow", ALLOW), *self.ua_header, (out_hdr, auth)],
                body=old.body,
            )  # fmt: skip
            leg.auth_tries += 1
            leg.invite = invite
            leg.txn = self.send_request(invite, leg.peer, context=leg)
            return True
        return False

    def _on_timeout(self, txn: Any, timer: str) -> None:
        ctx = _context(txn)
        if isinstance(ctx, tuple) and ctx[0] == "register" and not ctx[1].done():
            ctx[1].set_result(None)
            return
        if timer == "C":
            # §16.8: still no final response Timer C after the last provisional: CANCEL
            # (the layer then ends the INVITE at the 487, or 64·T1 later, §9.1).
            self.cancel_invite(txn, Cause.RECOVERY_ON_TIMER_EXPIRE)
        if isinstance(ctx, OutboundLeg):
            # Timer B/C, or no final response 64·T1 after our CANCEL: act as if 408
            # arrived (§8.1.3.1, §9.1) — unless the leg already ended (CANCEL guard).
            ctx.cancel_wanted = False
            if txn is ctx.txn:
                ctx.txn = None
                if not ctx.session.is_hungup:
                    self.switch.on_remote_hangup(ctx.session, Cause.RECOVERY_ON_TIMER_EXPIRE,
                                                 sip_status=408, disposition="recv_refuse")  # fmt: skip
                ctx.ended.set()
            ctx.close()
        elif isinstance(ctx, InboundPending) and ctx.leg is not None and timer in ("L", "H"):
            # 2xx never ACKed (§13.3.1.4) or failure never ACKed: end the call
            leg = ctx.leg
            if not leg.session.is_hungup:
                self.switch.hangup(leg.session.uuid, Cause.RECOVERY_ON_TIMER_EXPIRE)

    def _on_transport_failed(self, txn: Any) -> None:
        ctx = _context(txn)
        if isinstance(ctx, tuple) and ctx[0] == "register" and not ctx[1].done():
            ctx[1].set_result(None)
            return
        if isinstance(ctx, OutboundLeg):
            ctx.cancel_wanted = False
            if txn is ctx.txn:
                ctx.txn = None
            self.switch.on_remote_hangup(ctx.session, Cause.NORMAL_TEMPORARY_FAILURE,
                                         sip_status=503, disposition="recv_refuse")  # fmt: skip
            ctx.close()
            ctx.ended.set()


def _context(txn: Any) -> Any:
    """A transaction's context, a weak reference resolved (None once the call is gone)."""
    ctx = txn.context
    return ctx() if isinstance(ctx, weakref.ref) else ctx


@dataclass(eq=False)
class InboundPending:
    """The server transaction's context while an inbound INVITE is being set up.

    It does not point back at its transaction (the transaction holds it as ``context``):
    a finished call's objects must be freed by reference counting, not left in a cycle
    for the garbage collector's full collections (docs/media.md, "Memory")."""

    request: Request
    peer: Peer
    cancelled: bool = False
    # given at receipt when a hook journals the setup (UserAgent.invite_hooks): the
    # session's uuid and our To tag, so that a restart can answer this INVITE
    uuid: str = ""
    tag: str = ""
    started: bool = False  # a session was created for it (its end is the session's)
    # weak: the INVITE transaction (and this context with it) stays 64·T1 after the
    # final response; the leg lives as long as its session does, not that long
    _leg: weakref.ref[InboundLeg] | None = None

    @property
    def leg(self) -> InboundLeg | None:
        return self._leg() if self._leg is not None else None

    @leg.setter
    def leg(self, leg: InboundLeg | None) -> None:
        self._leg = weakref.ref(leg) if leg is not None else None


_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!%*_+`'~.-]*")


def _custom_headers(variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """FreeSWITCH's ``sip_h_<Name>`` channel variables: extra headers of the leg's INVITE
    (an emergency call's Geolocation comes this way). A name that is not a SIP token or
    a value with a line break is ignored: no header injection."""
    out = []
    for k, v in variables.items():
        if k.startswith("sip_h_"):
            name = k[6:]
            if _HEADER_NAME.fullmatch(name) and "\r" not in v and "\n" not in v:
                out.append((name, v))
    return out


def _ip_of(hostport: str) -> str:
    """The IP address of a gateway's HOST:PORT ("" for a host name)."""
    host = hostport.rpartition(":")[0] if hostport.count(":") == 1 or "]" in hostport else hostport
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""
    return host


def _auth_source(req: Request, peer: Peer) -> str:
    """The address an authentication failure is held against. A request that came through
    proxies (the router) carries the originator's address in its bottom Via (``received``
    where the first proxy stamped it): banning the proxy's address would lock everybody
    out. A request sent straight to the node is held against its peer address."""
    try:
        vias = req.vias
    except SipError:
        return peer.host.strip("[]")
    if len(vias) < 2:
        return peer.host.strip("[]")
    bottom = vias[-1]
    return (bottom.received or bottom.host).strip("[]")
