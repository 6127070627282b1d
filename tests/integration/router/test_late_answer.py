"""A media node that answers a call after the router gave it up.

A node restarted after a crash reads the INVITE retransmission that was queued for it and
answers it, while the router — its ``failover_timeout`` expired — has sent the call to the
other node. The caller must keep exactly one answered call and the late node's leg must
not stay up: the router ACKs that late 2xx and ends it with BYE itself (docs/router.md
"Failover")."""

from __future__ import annotations

from pathlib import Path

from switchboard.sip.message import Request, Response
from tests.support.net import free_port
from tests.support.router import router_sections, running_router
from tests.support.sip_peer import Peer, ProbedNode, ok_to, request


def is_req(method: str) -> object:
    return lambda m: isinstance(m, Request) and m.method == method


def to_tag(m: Response | Request) -> str:
    return (m.headers.get("To") or "").partition(";tag=")[2].partition(";")[0]


async def test_a_late_answer_is_acked_and_ended_by_the_router_not_given_to_the_caller(
    tmp_path: Path,
) -> None:
    rport = free_port()
    late, live = await ProbedNode.udp(), await ProbedNode.udp()
    caller = await Peer.udp()
    late.router_port = live.router_port = rport
    sections = router_sections(
        rport,
        [f"sip:127.0.0.1:{late.port}", f"sip:127.0.0.1:{live.port}"],
        dispatcher={"algorithm": 8},  # the list's order: the late node first
    )
    try:
        async with running_router(tmp_path, sections) as router:
            sdp = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
            caller.send(
                request(caller, "INVITE", rport, call_id="late-1", cseq=1, branch="c1", body=sdp),
                rport,
            )
            # The late node is silent (down) until the router gives it up (1 s) ...
            inv1 = await late.expect(is_req("INVITE"))
            inv2 = await live.expect(is_req("INVITE"))
            assert isinstance(inv1, Request) and isinstance(inv2, Request)
            live.send(
                ok_to(inv2, tag="live", sdp=sdp, contact=f"sip:n@127.0.0.1:{live.port}"), rport
            )
            ok = await caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
            assert isinstance(ok, Response) and to_tag(ok) == "live"
            # ... then it is back and answers the INVITE it had been sent.
            late.send(
                ok_to(inv1, tag="late", sdp=sdp, contact=f"sip:n@127.0.0.1:{late.port}"), rport
            )
            ack = await late.expect(is_req("ACK"))
            bye = await late.expect(is_req("BYE"))
            for r in (ack, bye):
                assert isinstance(r, Request)
                assert r.call_id == "late-1" and to_tag(r) == "late"
                assert str(r.uri) == f"sip:n@127.0.0.1:{late.port}"
            assert isinstance(bye, Request)
            assert bye.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
            late.send(ok_to(bye), rport)
            # The caller's own call goes on with the live node and ends normally; it
            # never saw the late node's answer (the BYE's 200 comes after it would have).
            bye_text = request(
                caller, "BYE", rport, call_id="late-1", cseq=2, branch="c2", to_tag="live",
                extra=f"Route: <sip:127.0.0.1:{rport};lr>\n",
            )  # fmt: skip
            rest = bye_text.partition("\n")[2]
            caller.send(f"BYE sip:n@127.0.0.1:{live.port} SIP/2.0\n{rest}", rport)
            bye2 = await live.expect(is_req("BYE"))
            assert isinstance(bye2, Request)
            live.send(ok_to(bye2), rport)
            await caller.expect(lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
            seen = []
            while not caller.inbox.empty():
                seen.append(caller.inbox.get_nowait())
            answers = [m for m in seen if isinstance(m, Response) and m.cseq.method == "INVITE"]
            assert all(to_tag(m) == "live" for m in answers), answers
            assert router.proxy.stats.late_answers_ended == 1
    finally:
        for p in (late, live, caller):
            p.close()
