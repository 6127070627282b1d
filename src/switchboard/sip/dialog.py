"""SIP dialogs (RFC 3261 §12) and CANCEL construction (§9.1).

A dialog is the peer-to-peer relationship an INVITE sets up: Call-ID, local and remote
tags, local and remote CSeq, the remote target (the peer's Contact) and the route set
(the Record-Route path).  Both sides create one from a non-failure response carrying a
To tag — the UAC from the response it receives (§12.1.2), the UAS from the request and
the response it sends (§12.1.1) — and then build every in-dialog request from it
(§12.2.1.1): ACK for a 2xx, BYE, re-INVITE, INFO, UPDATE...

Pure like the rest of ``sip/``: the Via of each request (with a fresh branch from
:func:`switchboard.sip.ids.new_branch`) is passed in by the caller, so there is no
randomness here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from switchboard.sip.errors import SipError
from switchboard.sip.headers import CSeq, Via
from switchboard.sip.message import Request, Response
from switchboard.sip.uri import NameAddr, SipUri

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Requests whose Contact replaces the remote target (§12.2, RFC 3311, RFC 6665)."""

INITIAL_LOCAL_SEQ = 1
"""§12.2.1.1: a UAS that never sent a request starts its CSeq here (§8.1.1.5 allows any
value below 2**31; a small one leaves room to count up)."""


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogId(NamedTuple):
    """§12: Call-ID, local tag, remote tag — as seen from this side."""

    call_id: str
    local_tag: str
    remote_tag: str


def uas_dialog_id(request: Request) -> DialogId:
    """The id of the dialog a received in-dialog request belongs to (§12.2.2):
    our tag is in To, the peer's in From."""
    return DialogId(request.call_id, request.to_tag or "", request.from_tag or "")


def uac_dialog_id(response: Response) -> DialogId:
    """The id of the dialog a received response belongs to (§12.1.2, §13.2.2.4)."""
    return DialogId(response.call_id, response.from_tag or "", response.to_tag or "")


class OutOfOrderRequest(SipError):
    """An in-dialog request with a CSeq lower than the last one: 500 (§12.2.2)."""

    status = 500
    reason = "Server Internal Error"
    blame = "peer"


@dataclass(slots=True, eq=False)
class Dialog:
    """State of one dialog (§12.1).  Build with :meth:`from_response` (UAC) or
    :meth:`from_request` (UAS)."""

    call_id: str
    local: NameAddr
    """Our address with our tag: From on the UAC side, To on the UAS side."""
    remote: NameAddr
    """The peer's address with its tag."""
    remote_target: str
    """URI of the peer's Contact: the Request-URI of in-dialog requests."""
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int | None = None
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    is_uac: bool = True
    local_contact: str | None = None
    """Our Contact (name-addr text), sent on target-refresh requests (§12.2.1.1)."""
    invite_seq: int | None = None
    """CSeq number of the last INVITE we sent; the ACK for its 2xx reuses it (§13.2.2.4)."""

    # ----------------------------------------------------------------- creation

    @classmethod
    def from_response(
        cls, request: Request, response: Response, *, over_tls: bool = False
    ) -> Dialog:
        """UAC side (§12.1.2): the dialog a 1xx/2xx with a To tag creates.

        Route set = Record-Route of the response in *reverse* order; remote target =
        its Contact; local CSeq = the request's.  A 2xx without To tag (RFC 2543
        peer) gets an empty remote tag; a 1xx without one creates no dialog.
        """
        status = response.status
        if not 101 <= status < 300:
            raise ValueError(f"a {status} response creates no dialog (§12.1)")
        to_tag = response.to_tag
        if to_tag is None and status < 200:
            raise ValueError("a provisional response without To tag creates no dialog")
        local = request.from_
        if local.tag is None:
            raise ValueError("request has no From tag (§8.1.1.3)")
        remote = response.to  # without a tag from an RFC 2543 peer: remote tag ""
        contacts = response.contacts
        seq = request.cseq.seq
        return cls(
            call_id=request.call_id,
            local=local,
            remote=remote,
            remote_target=str(contacts[0].uri) if contacts else request.uri,
            route_set=list(reversed(response.record_routes)),
            local_seq=seq,
            remote_seq=None,
            secure=over_tls and request.uri[:5].lower() == "sips:",
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            is_uac=True,
            local_contact=request.headers.get("Contact"),
            invite_seq=seq if request.method == "INVITE" else None,
        )

    @classmethod
    def from_request(
        cls, request: Request, response: Response, *, over_tls: bool = False
    ) -> Dialog:
        """UAS side (§12.1.1): the dialog our 1xx/2xx with a To tag creates.

        Route set = Record-Route of the request in order; remote target = its
        Contact; remote CSeq = its CSeq; local CSeq empty.
        """
        status = response.status
        if not 101 <= status < 300:
            raise ValueError(f"a {status} response creates no dialog (§12.1)")
        local = response.to
        if not local.tag:
            raise ValueError("the response must carry our To tag (§12.1.1)")
        contacts = request.contacts
        return cls(
            call_id=request.call_id,
            local=local,
            remote=request.from_,
            remote_target=str(contacts[0].uri) if contacts else "",
            route_set=list(request.record_routes),
            local_seq=None,
            remote_seq=request.cseq.seq,
            secure=over_tls and request.uri[:5].lower() == "sips:",
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            is_uac=False,
            local_contact=response.headers.get("Contact"),
        )

    # ----------------------------------------------------------------- identity

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # ----------------------------------------------------------------- updates

    def on_response(self, request: Request, response: Response) -> None:
        """A response to a request we sent in this dialog (§12.2.1.2, §13.2.2.4).

        2xx to INVITE confirms an early dialog and recomputes its route set; a 1xx/2xx
        to a target refresh carrying Contact replaces the remote target; 481 and 408
        end the dialog.
        """
        status = response.status
        if status in (481, 408):
            self.state = DialogState.TERMINATED
            return
        if request.method == "INVITE" and 200 <= status < 300 and self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.record_routes))
            self.state = DialogState.CONFIRMED
            if not self.remote.tag and response.to_tag:
                self.remote = response.to
        if request.method in TARGET_REFRESH_METHODS and 101 <= status < 300:
            contacts = response.contacts
            if contacts:
                self.remote_target = str(contacts[0].uri)

    def on_request(self, request: Request) -> None:
        """A request received in this dialog (§12.2.2).

        Raises :class:`OutOfOrderRequest` (500) when its CSeq is below the remote
        sequence number; nothing changes then.  ACK and CANCEL reuse the INVITE's
        number and do not move it.  A target refresh with Contact replaces the remote
        target.
        """
        method = request.method
        seq = request.cseq.seq
        if method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise OutOfOrderRequest(f"CSeq {seq} lower than {self.remote_seq} (§12.2.2)")
            self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            contacts = request.contacts
            if contacts:
                self.remote_target = str(contacts[0].uri)

    def confirm(self) -> None:
        """The UAS sent its 2xx (or received the ACK): early → confirmed."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # ----------------------------------------------------------------- requests

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for an in-dialog request (§12.2.1.1).

        Empty route set: R-URI = remote target, no Route.  Loose routing (the first
        route has ``lr``): R-URI = remote target, Route = the route set.  Strict
        routing: R-URI = the first route's URI (stripped of what a Request-URI may not
        carry), Route = the rest plus the remote target as the last value.
        """
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        first = routes[0].uri
        if "lr" in first.params:
            return self.remote_target, [str(r) for r in routes]
        ruri = _strip_for_request_uri(first)
        rest = [str(r) for r in routes[1:]]
        rest.append(f"<{self.remote_target}>")
        return str(ruri), rest

    def create_request(
        self,
        method: str,
        via: Via | str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        max_forwards: int = 70,
    ) -> Request:
        """A new in-dialog request (§12.2.1.1): From = local, To = remote, the
        dialog's Call-ID, the next local CSeq (ACK and CANCEL excepted), R-URI and
        Route from the route set, our Contact on target refreshes."""
        if method == "ACK":
            raise ValueError("use ack() for the ACK of a 2xx (§13.2.2.4)")
        if method == "CANCEL":
            raise ValueError("use build_cancel() on the INVITE to cancel (§9.1)")
        if self.local_seq is None:
            self.local_seq = INITIAL_LOCAL_SEQ
        else:
            self.local_seq += 1
        if method == "INVITE":
            self.invite_seq = self.local_seq
        return self._build(method, via, self.local_seq, headers, body, content_type, max_forwards)

    def ack(
        self,
        via: Via | str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        seq: int | None = None,
    ) -> Request:
        """The ACK for a 2xx to our INVITE (§13.2.2.4): CSeq number of that INVITE,
        method ACK, routed like any in-dialog request; a new branch (it is its own
        transaction). ``seq``: the CSeq of the 2xx being acknowledged, when it may be
        another INVITE's than the last one sent (a retransmission of an earlier 2xx)."""
        seq = self.invite_seq if seq is None else seq
        if seq is None:
            raise ValueError("no INVITE sent in this dialog to acknowledge")
        return self._build("ACK", via, seq, headers, body, content_type, 70)

    def bye(self, via: Via | str, *, headers: Iterable[tuple[str, str]] = ()) -> Request:
        """BYE ends the dialog (§15.1.1)."""
        return self.create_request("BYE", via, headers=headers)

    def reinvite(
        self,
        via: Via | str,
        *,
        body: bytes = b"",
        content_type: str | None = "application/sdp",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A re-INVITE (§14.1), normally with a new SDP offer."""
        return self.create_request(
            "INVITE", via, body=body, content_type=content_type if body else None, headers=headers
        )

    def info(
        self,
        via: Via | str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """INFO (RFC 6086), e.g. ``application/dtmf-relay``."""
        return self.create_request(
            "INFO", via, body=body, content_type=content_type, headers=headers
        )

    def _build(
        self,
        method: str,
        via: Via | str,
        seq: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        max_forwards: int,
    ) -> Request:
        ruri, routes = self.request_uri_and_routes()
        extra = [("Route", r) for r in routes]
        extra.extend(headers)
        contact = self.local_contact if method in TARGET_REFRESH_METHODS else None
        return Request.build(
            method,
            ruri,
            via=via,
            from_=self.local,
            to=self.remote,
            call_id=self.call_id,
            cseq=CSeq(seq, method),
            max_forwards=max_forwards,
            contact=contact,
            content_type=content_type,
            headers=extra,
            body=body,
        )


def _strip_for_request_uri(uri: SipUri) -> SipUri:
    """§19.1.1 Table 1: a Request-URI carries no ``method`` parameter and no headers."""
    params = {k: v for k, v in uri.params.items() if k != "method"}
    if params == uri.params and not uri.headers:
        return uri
    return uri.with_(params=params, headers={})


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a request we sent (§9.1).

    Request-URI, Call-ID, From, To (exactly as sent: no tag added) and the CSeq number
    are the INVITE's, the CSeq method is CANCEL; a single Via equal to the INVITE's top
    Via (so it matches the same branch hop by hop); the INVITE's Route values; no
    Require/Proxy-Require, no body.  Send it only after a provisional response arrived
    (§9.1) and to the same destination as the INVITE.
    """
    h = invite.headers
    vias = h.get_all("Via")
    if not vias:
        raise ValueError("the request to cancel has no Via")
    extra = [("Route", r) for r in h.get_all("Route")]
    return Request.build(
        "CANCEL",
        invite.uri,
        via=vias[0],
        from_=h.get("From"),
        to=h.get("To"),
        call_id=invite.call_id,
        cseq=CSeq(invite.cseq.seq, "CANCEL"),
        max_forwards=70,
        headers=extra,
    )


def next_hop(request: Request) -> SipUri:
    """Where a UAC sends a request (§8.1.2): the first Route URI, else the Request-URI.
    (RFC 3263 then turns the URI into address, port and transport.)"""
    routes = request.routes
    if routes:
        return routes[0].uri
    return request.ruri
