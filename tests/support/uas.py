"""A minimal UAS built on the SIP core: transaction layer + dialogs + net adapter.

It answers OPTIONS with 200, INVITE with 180 then 200 (SDP answer) — only 180 for
``sip:ring@...`` —, confirms the
dialog on ACK, ends it on BYE (200), answers CANCEL (200 + 487), anything else with
405, and in-dialog requests for unknown dialogs with 481 (§12.2.2).  The core
(:class:`Uas`) is pure — entropy is injected — and is driven by
:class:`~switchboard.net.endpoint.SipEndpoint`.

Run standalone (e.g. as a stand-in media node)::

    .venv/bin/python -m tests.support.uas --host 127.0.0.1 --port 5099
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from switchboard.net import loop as sbloop
from switchboard.net.endpoint import SipEndpoint
from switchboard.sip.dialog import Dialog, DialogId, uas_dialog_id
from switchboard.sip.errors import SipError
from switchboard.sip.ids import new_tag
from switchboard.sip.message import Request, Response, make_response
from switchboard.sip.transaction import (
    AckReceived,
    Output,
    Peer,
    RequestReceived,
    ServerTransaction,
    State,
    TimedOut,
    TransactionLayer,
    Transmit,
)

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
RING_ONLY = "ring"
"""Request-URI user for which the UAS rings and never answers (to be CANCELled)."""
SDP_ANSWER = (
    b"v=0\r\n"
    b"o=switchboard 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class UasStats:
    """What the UAS saw, for tests to compare with what SIPp reports."""

    invites: int = 0
    acks: int = 0
    """ACK requests passed up (a peer may repeat its ACK for a retransmitted 2xx)."""
    acked: set[str] = field(default_factory=set)
    """Call-IDs whose 2xx was acknowledged."""
    byes: int = 0
    options: int = 0
    cancels: int = 0
    rejected: int = 0
    ack_timeouts: int = 0
    transports: set[str] = field(default_factory=set)


class Uas:
    """Pure UAS core; implements the :class:`~switchboard.net.endpoint.SipCore` protocol.

    Args:
        contacts: our Contact URI per transport (``{"UDP": "sip:uas@127.0.0.1:5099"}``).
        rand: entropy source for To tags (``os.urandom`` in production).
    """

    def __init__(self, contacts: dict[str, str], rand: Callable[[int], bytes]) -> None:
        self.layer = TransactionLayer(retransmit_2xx=True)
        self.contacts = contacts
        self.rand = rand
        self.dialogs: dict[DialogId, Dialog] = {}
        self.stats = UasStats()

    # SipCore protocol --------------------------------------------------------

    def receive(self, message: Request | Response, peer: Peer, now: float) -> list[Output]:
        return self._handle(self.layer.receive(message, peer, now), now)

    def get_timer(self) -> float | None:
        return self.layer.get_timer()

    def handle_timer(self, now: float) -> list[Output]:
        return self._handle(self.layer.handle_timer(now), now)

    def transport_failed(self, transaction: ServerTransaction, now: float) -> list[Output]:
        return self._handle(self.layer.transport_failed(transaction, now), now)

    # TU ----------------------------------------------------------------------

    def _handle(self, outputs: Iterable[Output], now: float) -> list[Output]:
        result: list[Output] = []
        for output in outputs:
            match output:
                case Transmit():
                    result.append(output)
                case RequestReceived(request=request, transaction=txn, peer=peer):
                    result.extend(self._on_request(request, txn, peer, now))
                case AckReceived(request=ack):
                    self.stats.acks += 1
                    self.stats.acked.add(ack.call_id)
                    dialog = self.dialogs.get(uas_dialog_id(ack))
                    if dialog is not None:
                        dialog.confirm()
                case TimedOut(timer="L"):
                    # §13.3.1.4: our 2xx was never ACKed; a fuller UA would send BYE.
                    self.stats.ack_timeouts += 1
                case _:
                    pass
        return result

    def _respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        now: float,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> list[Output]:
        response = make_response(request, status, to_tag=to_tag, headers=headers, body=body)
        return self.layer.send_response(txn, response, now)

    def _on_request(
        self, request: Request, txn: ServerTransaction, peer: Peer, now: float
    ) -> list[Output]:
        method = request.method
        self.stats.transports.add(peer.transport)
        try:
            if request.to_tag is not None and method not in ("CANCEL",):
                return self._in_dialog(request, txn, now)
            match method:
                case "OPTIONS":
                    self.stats.options += 1
                    allow = [("Allow", ALLOW), ("Accept", "application/sdp")]
                    return self._respond(txn, request, 200, now, to_tag=self._tag(), headers=allow)
                case "INVITE":
                    return self._on_invite(request, txn, peer, now)
                case "CANCEL":
                    return self._on_cancel(request, txn, now)
                case _:
                    self.stats.rejected += 1
                    allow = [("Allow", ALLOW)]
                    return self._respond(txn, request, 405, now, to_tag=self._tag(), headers=allow)
        except SipError as exc:
            self.stats.rejected += 1
            return self._respond(txn, request, exc.status, now, to_tag=self._tag())

    def _on_invite(
        self, request: Request, txn: ServerTransaction, peer: Peer, now: float
    ) -> list[Output]:
        self.stats.invites += 1
        tag = self._tag()
        contact = [("Contact", f"<{self.contacts[peer.transport]}>")]
        out = self._respond(txn, request, 180, now, to_tag=tag, headers=contact)
        if request.ruri.user == RING_ONLY:
            return out  # ring until the caller CANCELs (§9.2)
        ok = make_response(
            request,
            200,
            to_tag=tag,
            headers=[*contact, ("Allow", ALLOW), ("Content-Type", "application/sdp")],
            body=SDP_ANSWER,
        )
        dialog = Dialog.from_request(request, ok)
        self.dialogs[dialog.id] = dialog
        out.extend(self.layer.send_response(txn, ok, now))
        return out

    def _on_cancel(self, request: Request, txn: ServerTransaction, now: float) -> list[Output]:
        # §9.2: 200 to the CANCEL; if the INVITE is still pending, 487 to it.
        self.stats.cancels += 1
        invite = self.layer.find_invite_for_cancel(request)
        if invite is None:
            return self._respond(txn, request, 481, now, to_tag=self._tag())
        out = self._respond(txn, request, 200, now, to_tag=self._tag())
        if invite.state is State.PROCEEDING:
            out.extend(self._respond(invite, invite.request, 487, now, to_tag=self._tag()))
        return out

    def _in_dialog(self, request: Request, txn: ServerTransaction, now: float) -> list[Output]:
        dialog = self.dialogs.get(uas_dialog_id(request))
        if dialog is None:
            self.stats.rejected += 1
            return self._respond(txn, request, 481, now)  # §12.2.2
        dialog.on_request(request)  # raises 500 on an out-of-order CSeq
        if request.method == "BYE":
            self.stats.byes += 1
            dialog.terminate()
            del self.dialogs[dialog.id]
            return self._respond(txn, request, 200, now)
        if request.method == "OPTIONS":
            return self._respond(txn, request, 200, now, headers=[("Allow", ALLOW)])
        self.stats.rejected += 1
        return self._respond(txn, request, 405, now, headers=[("Allow", ALLOW)])

    def _tag(self) -> str:
        return new_tag(self.rand(8))


async def start_uas(host: str = "127.0.0.1", port: int = 0) -> tuple[Uas, SipEndpoint]:
    """Listen on UDP and TCP at ``host:port``, one port number for both (0: any free)."""
    uas = Uas({}, os.urandom)
    for _ in range(20):
        endpoint = SipEndpoint(uas)
        try:
            _, bound = await endpoint.listen_udp(host, port)
            await endpoint.listen_tcp(host, bound)
        except OSError:
            await endpoint.close()
            if port:
                raise
            continue  # the TCP twin of a free UDP port was taken: try another
        uas.contacts.update(
            {"UDP": f"sip:uas@{host}:{bound}", "TCP": f"sip:uas@{host}:{bound};transport=tcp"}
        )
        return uas, endpoint
    raise OSError("no port free on both UDP and TCP")


async def _serve(host: str, port: int) -> None:
    _, endpoint = await start_uas(host, port)
    log.info("UAS listening on udp+tcp %s:%s", host, endpoint.udp_address)
    try:
        await asyncio.Event().wait()
    finally:
        await endpoint.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    sbloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
