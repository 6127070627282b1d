"""A media node lost with its box: the router, which record-routes every call, ends the
calls the node held once it has been inactive for ``lost_node_timeout`` — BYE to the
caller and to the carrier (docs/router.md "A media node lost with its box")."""

from __future__ import annotations

from pathlib import Path

from switchboard.sip.message import Request, Response
from tests.support.net import free_port
from tests.support.router import router_sections, running_router
from tests.support.sip_peer import Peer, ProbedNode, ok_to, request

SDP = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"


def is_req(method: str) -> object:
    return lambda m: isinstance(m, Request) and m.method == method


async def test_the_router_ends_the_calls_of_a_node_that_stays_inactive(tmp_path: Path) -> None:
    rport = free_port()
    node = await ProbedNode.udp()
    caller, carrier = await Peer.udp(), await Peer.udp()
    node.router_port = rport
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{node.port}"], dispatcher={"lost_node_timeout": 1.0}
    )
    try:
        async with running_router(tmp_path, sections) as router:
            # the caller's call, answered by the node
            caller.send(
                request(caller, "INVITE", rport, call_id="in-1", cseq=1, branch="c1", body=SDP),
                rport,
            )
            inv = await node.expect(is_req("INVITE"))
            assert isinstance(inv, Request)
            node.send(
                ok_to(inv, tag="node", sdp=SDP, contact=f"sip:n@127.0.0.1:{node.port}"), rport
            )
            await caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
            # the node's leg to the carrier, through the router, answered
            leg = request(node, "INVITE", carrier.port, call_id="out-1", cseq=5, branch="n1",
                          body=SDP, extra=f"Route: <sip:127.0.0.1:{rport};lr>\n")  # fmt: skip
            node.send(leg, rport)
            inv2 = await carrier.expect(is_req("INVITE"))
            assert isinstance(inv2, Request)
            ok2 = ok_to(inv2, tag="carr", sdp=SDP, contact=f"sip:k@127.0.0.1:{carrier.port}")
            carrier.send(ok2, rport)
            await node.expect(lambda m: isinstance(m, Response) and m.status == 200)
            assert len(router.proxy.far_ends) == 2
            # the node's box is gone: probes unanswered, inactive, then lost_node_timeout
            node.alive = False
            bye_in = await caller.expect(is_req("BYE"), timeout=15)
            bye_out = await carrier.expect(is_req("BYE"), timeout=15)
            assert isinstance(bye_in, Request) and isinstance(bye_out, Request)
            assert bye_in.call_id == "in-1" and "tag=node" in (bye_in.headers.get("From") or "")
            assert bye_out.call_id == "out-1" and "tag=carr" in (bye_out.headers.get("To") or "")
            for bye in (bye_in, bye_out):
                assert (bye.headers.get("Reason") or "").startswith("Q.850;cause=38")
            caller.send(ok_to(bye_in), rport)
            carrier.send(ok_to(bye_out), rport)
            assert router.proxy.far_ends == {} and router.proxy.dialog_count == 0
            assert router.proxy.stats.lost_node_calls_ended == 2
    finally:
        for p in (node, caller, carrier):
            p.close()
