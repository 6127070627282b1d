"""A carrier's SIP server for ``switchboard up --demo``: answers what the gateway sends.

It stands where the upstream carrier would (``[gateways.carrier] proxy``, 127.0.0.1:5090 by
default) so a newcomer's first transit calls have somewhere to go. It behaves like a
termination carrier with a realistic mix, decided by the dialled number so results are
reproducible: numbers ending in 9 are busy (486), in 8 ring and go unanswered (480 after
the ring time), in 7 are not routable (404); the others ring for a post-dial delay and
answer with SDP (RFC 3264) pointing at an RTP sink. BYE and CANCEL (RFC 3261 §9.2) are
honoured; OPTIONS probes are answered. UDP only; a datagram that does not parse is dropped
(the simulator never dies on a peer's bytes).

It also originates, as a carrier sending traffic in: :meth:`CarrierSimulator.call` places
an INVITE at the router, follows the dialog's route set from Record-Route for ACK and BYE
(RFC 3261 §12.1.2, loose routing §16.12) and reports the outcome and post-dial delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from dataclasses import dataclass, field

from switchboard.sip.errors import SipError
from switchboard.sip.message import Request, Response, make_response, parse_message

log = logging.getLogger(__name__)

BUSY, NO_ANSWER, NOT_FOUND = "9", "8", "7"


@dataclass
class _Call:
    invite: Request
    to_tag: str
    last: bytes = b""  # last response sent, resent on a retransmitted INVITE
    task: asyncio.Task[None] | None = None
    answered: bool = False


@dataclass
class CarrierStats:
    invites: int = 0
    answered: int = 0
    busy: int = 0
    no_answer: int = 0
    not_found: int = 0
    cancelled: int = 0
    byes: int = 0
    calls: dict[str, str] = field(default_factory=dict)  # call-id → outcome


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a call the simulator placed came to."""

    number: str
    status: int  # final response code (0: no final response)
    pdd: float | None  # INVITE → first 18x or final response, seconds
    call_id: str


class CarrierSimulator(asyncio.DatagramProtocol):
    """The demo carrier. ``pdd`` (seconds, range) is the ring delay before 180 → 200."""

    def __init__(
        self,
        *,
        pdd: tuple[float, float] = (0.2, 0.8),
        no_answer_after: float = 3.0,
        seed: int = 5090,
    ) -> None:
        self.pdd = pdd
        self.no_answer_after = no_answer_after
        self.rng = random.Random(seed)
        self.calls: dict[str, _Call] = {}
        self.stats = CarrierStats()
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self._dialing: dict[str, asyncio.Queue[Response]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def start(cls, host: str, port: int, **kwargs: object) -> CarrierSimulator:
        loop = asyncio.get_running_loop()
        sim = cls(**kwargs)  # type: ignore[arg-type]
        await loop.create_datagram_endpoint(lambda: sim, local_addr=(host, port))
        # one RTP sink for every call: the carrier's media is not the point of the demo
        rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(host, 0))
        sim.rtp = rtp
        sim.rtp_port = rtp.get_extra_info("sockname")[1]
        return sim

    def close(self) -> None:
        for call in self.calls.values():
            if call.task:
                call.task.cancel()
        if self.transport:
            self.transport.close()
        if self.rtp:
            self.rtp.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # -- SIP --------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse_message(data)
            call_id = msg.call_id
            if not isinstance(msg, Request):
                queue = self._dialing.get(call_id)
                if queue is not None:
                    queue.put_nowait(msg)
                return
            method = msg.method
        except (SipError, ValueError) as exc:
            log.debug("carrier simulator: dropped unparsable datagram from %s: %s", addr, exc)
            return
        match method:
            case "INVITE":
                self._invite(msg, call_id, addr)
            case "ACK":
                pass  # 2xx/non-2xx handshake complete; nothing to retransmit on loopback
            case "BYE":
                self.stats.byes += 1
                call = self.calls.pop(call_id, None)
                self._send(make_response(msg, 200, "OK").to_bytes(), addr)
                if call and call.task:
                    call.task.cancel()
            case "CANCEL":
                self._send(make_response(msg, 200, "OK").to_bytes(), addr)
                call = self.calls.get(call_id)
                if call and not call.answered:
                    if call.task:
                        call.task.cancel()
                    self.stats.cancelled += 1
                    self.stats.calls[call_id] = "cancelled"
                    self._reply(call, 487, "Request Terminated", addr)
            case "OPTIONS":
                self._send(make_response(msg, 200, "OK", to_tag=_tag()).to_bytes(), addr)
            case _:
                self._send(
                    make_response(msg, 405, "Method Not Allowed", to_tag=_tag()).to_bytes(), addr
                )

    def _invite(self, req: Request, call_id: str, addr: tuple[str, int]) -> None:
        known = self.calls.get(call_id)
        if known is not None:  # retransmission (§17.2.1): repeat the last response
            if known.last:
                self._send(known.last, addr)
            return
        if req.to_tag:  # re-INVITE (hold, codec change): accept with the same answer
            self._send(self._ok(req, req.to_tag), addr)
            return
        self.stats.invites += 1
        call = _Call(req, _tag())
        self.calls[call_id] = call
        self._send(make_response(req, 100, "Trying").to_bytes(), addr)
        call.task = asyncio.get_running_loop().create_task(self._progress(call, call_id, addr))

    async def _progress(self, call: _Call, call_id: str, addr: tuple[str, int]) -> None:
        number = call.invite.ruri.user or ""
        last = number[-1:] if number else ""
        if last == NOT_FOUND:
            self.stats.not_found += 1
            self.stats.calls[call_id] = "not_found"
            self._reply(call, 404, "Not Found", addr)
            return
        await asyncio.sleep(self.rng.uniform(*self.pdd))  # post-dial delay
        self._reply(call, 180, "Ringing", addr)
        if last == BUSY:
            self.stats.busy += 1
            self.stats.calls[call_id] = "busy"
            self._reply(call, 486, "Busy Here", addr)
            return
        if last == NO_ANSWER:
            await asyncio.sleep(self.no_answer_after)
            self.stats.no_answer += 1
            self.stats.calls[call_id] = "no_answer"
            self._reply(call, 480, "Temporarily Unavailable", addr)
            return
        await asyncio.sleep(self.rng.uniform(0.1, 0.4))
        call.answered = True
        self.stats.answered += 1
        self.stats.calls[call_id] = "answered"
        call.last = self._ok(call.invite, call.to_tag)
        self._send(call.last, addr)

    def _ok(self, req: Request, to_tag: str) -> bytes:
        host = self.transport.get_extra_info("sockname")[0] if self.transport else "127.0.0.1"
        pt = _offered_payload(req.body)
        sdp = (
            "v=0\r\n"
            f"o=carrier 1 1 IN IP4 {host}\r\n"
            "s=carrier\r\n"
            f"c=IN IP4 {host}\r\n"
            "t=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP {pt} 101\r\n"
            f"a=rtpmap:{pt} {'PCMA' if pt == 8 else 'PCMU'}/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=sendrecv\r\n"
        ).encode()
        port = self.transport.get_extra_info("sockname")[1] if self.transport else 5090
        return make_response(
            req,
            200,
            "OK",
            to_tag=to_tag,
            headers=[
                ("Contact", f"<sip:carrier@{host}:{port}>"),
                ("Content-Type", "application/sdp"),
            ],
            body=sdp,
        ).to_bytes()

    def _reply(self, call: _Call, status: int, reason: str, addr: tuple[str, int]) -> None:
        data = make_response(call.invite, status, reason, to_tag=call.to_tag).to_bytes()
        if status >= 300:
            call.last = data
            # the dialog never forms: forget it once the ACK had time to arrive
            asyncio.get_running_loop().call_later(32.0, self.calls.pop, call.invite.call_id, None)
        self._send(data, addr)

    # -- placing calls (UAC) -----------------------------------------------------------------

    async def call(
        self, router: tuple[str, int], number: str, *, hold: float, caller: str = "+15550100"
    ) -> CallResult:
        """Call ``number`` through ``router``; stay ``hold`` seconds after answer, then BYE."""
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        call_id = f"{secrets.token_hex(8)}@{host}"
        tag = _tag()
        target = f"sip:{number}@{router[0]}:{router[1]}"
        sdp = (
            f"v=0\r\no=carrier 1 1 IN IP4 {host}\r\ns=carrier\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
        common = (
            f"From: <sip:{caller}@{host}:{port}>;tag={tag}\r\n"
            f"Call-ID: {call_id}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:carrier@{host}:{port}>\r\n"
        )
        branch = "z9hG4bK" + secrets.token_hex(8)
        invite = (
            f"INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
            f"{common}To: <{target}>\r\nCSeq: 1 INVITE\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        queue: asyncio.Queue[Response] = asyncio.Queue()
        self._dialing[call_id] = queue
        loop = asyncio.get_running_loop()
        sent = loop.time()
        pdd: float | None = None
        try:
            self._send(invite.encode(), router)
            while True:
                resp = await asyncio.wait_for(queue.get(), 32.0)  # Timer B: 64·T1
                if resp.cseq.method != "INVITE":
                    continue
                if pdd is None and resp.status >= 180:
                    pdd = loop.time() - sent
                if resp.status < 200:
                    continue
                to = resp.headers.get("To") or f"<{target}>"
                if resp.status >= 300:  # §17.1.1.3: ACK hop-by-hop, same branch
                    self._send(
                        (
                            f"ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
                            f"{common}To: {to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                        ).encode(),
                        router,
                    )
                    return CallResult(number, resp.status, pdd, call_id)
                # 2xx: the dialog's route set is the Record-Route list reversed (§12.1.2)
                routes = [str(r.uri) for r in reversed(resp.record_routes)]
                contacts = resp.contacts
                remote = str(contacts[0].uri) if contacts else target
                hop = router
                if routes:
                    first = resp.record_routes[-1].uri
                    hop = (first.host, first.port or 5060)
                route_hdr = "".join(f"Route: <{r}>\r\n" for r in routes)

                def in_dialog(
                    method: str,
                    cseq: int,
                    remote: str = remote,
                    to: str = to,
                    route_hdr: str = route_hdr,
                ) -> bytes:
                    via = f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"
                    return (
                        f"{method} {remote} SIP/2.0\r\nVia: {via}\r\n{route_hdr}{common}"
                        f"To: {to}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
                    ).encode()

                self._send(in_dialog("ACK", 1), hop)
                await asyncio.sleep(hold)
                self._send(in_dialog("BYE", 2), hop)
                with contextlib.suppress(TimeoutError):
                    while True:
                        bye = await asyncio.wait_for(queue.get(), 8.0)
                        if bye.cseq.method == "BYE" and bye.status >= 200:
                            break
                return CallResult(number, resp.status, pdd, call_id)
        except TimeoutError:
            return CallResult(number, 0, pdd, call_id)
        finally:
            del self._dialing[call_id]

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.sendto(data, addr)


def _tag() -> str:
    return secrets.token_hex(5)


def _offered_payload(body: bytes) -> int:
    """The first of PCMU (0) / PCMA (8) in the offer's m=audio line; PCMU otherwise."""
    for line in body.decode("ascii", "replace").splitlines():
        if line.startswith("m=audio"):
            for fmt in line.split()[3:]:
                if fmt in ("0", "8"):
                    return int(fmt)
    return 0


async def _serve(host: str, port: int) -> None:
    sim = await CarrierSimulator.start(host, port)
    log.info("carrier simulator on udp %s:%d (RTP sink %d)", host, port, sim.rtp_port)
    try:
        await asyncio.Event().wait()
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m switchboard.demo.carrier [HOST:PORT]``: a lab carrier (default 127.0.0.1:5090)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    host, _, port = (args[0] if args else "127.0.0.1:5090").rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host or "127.0.0.1", int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
