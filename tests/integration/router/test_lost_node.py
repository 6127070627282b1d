"""A media node lost with its box: the router, which record-routes every call, ends the
calls the node held once it has been inactive for ``lost_node_timeout`` — BYE to the
caller and to the carrier, and writes each leg's CDR into the billing database
(docs/router.md "A media node lost with its box")."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from switchboard.billing.accounts import create_account, show, topup
from switchboard.billing.cdr import Cdr
from switchboard.billing.credit import CreditControl, Swept
from switchboard.billing.ingest import write_batch_sync
from switchboard.billing.rates import import_deck
from switchboard.sip.ids import leg_tag
from switchboard.sip.message import Request, Response
from switchboard.sip.transaction import Peer as SipPeer
from switchboard.sip.transaction import Transmit
from tests.support.media import RtpPeer, start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import router_sections, running_router, write_config
from tests.support.sip_peer import SDP as PEER_SDP
from tests.support.sip_peer import Peer, ProbedNode, ok_to, request

SDP = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"


def is_req(method: str) -> object:
    return lambda m: isinstance(m, Request) and m.method == method


A_LEG = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"  # the node's channels
B_LEG = "11223344-5566-4778-8899-aabbccddeeff"


async def test_the_router_ends_the_calls_of_a_node_that_stays_inactive(
    tmp_path: Path, db_url: str
) -> None:
    """... and bills them: one CDR per leg under the node's channel uuid (its tags), the
    cause NETWORK_OUT_OF_ORDER, answered at the 2xx, ended at the router's BYE; the
    prepaid caller's reservation, which no node will settle, is settled from it by the
    sweep; the CDRs the node writes when its box comes back are dropped as duplicates."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"])
        create_account(conn, "alice", gateways=["gw"])
        topup(conn, "alice", "3")
    pool = AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    credit = CreditControl(pool, grace_seconds=10)
    rport = free_port()
    node = await ProbedNode.udp()
    caller, carrier = await Peer.udp(), await Peer.udp()
    node.router_port = rport
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{node.port} 0 0 duid=media-7"], dispatcher={"lost_node_timeout": 1.0},
        database={"url": db_url}, platform={"state_dir": str(tmp_path / "state")},
        **{"gateways.carrier": {"proxy": f"127.0.0.1:{carrier.port}"}},
    )  # fmt: skip
    a_tag, b_tag = leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG)
    try:
        async with running_router(tmp_path, sections) as router:
            # the caller's call, answered by the node
            caller.send(
                request(caller, "INVITE", rport, call_id="in-1", cseq=1, branch="c1", body=SDP),
                rport,
            )
            inv = await node.expect(is_req("INVITE"))
            assert isinstance(inv, Request)
            # the node reserves the prepaid caller's credit under its channel uuid
            auth = await credit.authorise(A_LEG, "4420", gateway="gw", now=datetime.now(UTC))
            before_answer = time.time()
            node.send(ok_to(inv, tag=a_tag, sdp=SDP, contact=f"sip:n@127.0.0.1:{node.port}"), rport)
            await caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
            answered = time.time()
            # the node's leg to the carrier, through the router, answered
            leg = request(node, "INVITE", carrier.port, call_id="out-1", cseq=5, branch="n1",
                          body=SDP, extra=f"Route: <sip:127.0.0.1:{rport};lr>\n")  # fmt: skip
            node.send(leg.replace("tag=alice1", f"tag={b_tag}"), rport)
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
            ended = time.time()
            assert isinstance(bye_in, Request) and isinstance(bye_out, Request)
            assert bye_in.call_id == "in-1" and a_tag in (bye_in.headers.get("From") or "")
            assert bye_out.call_id == "out-1" and "tag=carr" in (bye_out.headers.get("To") or "")
            for bye in (bye_in, bye_out):
                assert (bye.headers.get("Reason") or "").startswith("Q.850;cause=38")
            caller.send(ok_to(bye_in), rport)
            carrier.send(ok_to(bye_out), rport)
            assert router.proxy.far_ends == {} and router.proxy.dialog_count == 0
            assert router.proxy.stats.lost_node_calls_ended == 2
            assert router.proxy.stats.lost_node_cdrs == 2
            assert router.proxy.stats.lost_node_legs_unbilled == 0
            assert router.lost_legs is not None
            await router.lost_legs.writer.flush(timeout=10)
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT call_id, sip_call_id, direction, hangup_cause, disposition, billsec,"
                " answer_time, end_time, originating_leg, caller_id, destination, node,"
                " (SELECT name FROM carrier WHERE id = cdr.carrier_id)"
                " FROM cdr ORDER BY direction"
            ).fetchall()
            assert [r[:5] for r in rows] == [
                (A_LEG, "in-1", "inbound", "NETWORK_OUT_OF_ORDER", "ANSWERED"),
                (B_LEG, "out-1", "outbound", "NETWORK_OUT_OF_ORDER", "ANSWERED"),
            ]
            inbound, outbound = rows
            assert inbound[8] is None and outbound[8] == A_LEG
            assert (inbound[9], inbound[10]) == ("alice", "echo") and outbound[12] == "carrier"
            assert inbound[11] == outbound[11] == "media-7"  # the destination's duid
            for r in rows:  # answered at the 2xx, ended at the router's BYE
                answer, end = r[6].timestamp(), r[7].timestamp()
                assert before_answer - 0.01 <= answer <= answered + 0.01 and end <= ended + 0.01
                assert r[5] == int(end - answer) and r[5] >= 1
            # no node settles the prepaid call: the sweep does, from the router's CDR
            expiry = datetime.now(UTC) + timedelta(seconds=auth.max_seconds + 11)
            assert await credit.sweep(expiry) == Swept(1, 0)
            state = conn.execute("SELECT state, billsec FROM reservation").fetchone()
            assert state == ("settled", inbound[5])
            view = show(conn, "alice")
            assert (
                view.reserved == 0 and view.balance == Decimal("3") - Decimal("0.01") * inbound[5]
            )
            # the node's box comes back: its journal ends the calls and writes their CDRs
            late = [Cdr.from_times(leg, datetime.now(UTC) - timedelta(seconds=90),
                                   datetime.now(UTC), datetime.now(UTC) - timedelta(seconds=80),
                                   hangup_cause="RECOVERY_ON_TIMER_EXPIRE", direction=d)
                    for leg, d in ((A_LEG, "inbound"), (B_LEG, "outbound"))]  # fmt: skip
            result = write_batch_sync(conn, late)
            assert (result.inserted, result.duplicates) == (0, 2)
            count = conn.execute("SELECT count(*), min(hangup_cause) FROM cdr").fetchone()
            assert count == (2, "NETWORK_OUT_OF_ORDER")
    finally:
        await pool.close()
        for p in (node, caller, carrier):
            p.close()


async def test_a_node_cut_off_from_the_router_leaves_one_cdr_per_leg_and_no_leg_up(
    tmp_path: Path, db_url: str
) -> None:
    """A real media node, alive, partitioned from the router (its SIP both ways dropped;
    its RTP still flows): the router ends the call at lost_node_timeout — BYE to the
    caller, the leg's CDR under the node's channel uuid. The caller hangs up and stops its
    RTP; the node ends its leg at rtp_timeout (its BYE lost in the partition) and writes
    its own CDR for the same leg — a duplicate billing drops. No channel is left."""
    rport = free_port()
    node, cdrs = await start_node(tmp_path, {"media": {"rtp_timeout": 3.0}})
    caller, rtp = await Peer.udp(), await RtpPeer.open()
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{node.sip_port}"], dispatcher={"lost_node_timeout": 1.0},
        database={"url": db_url}, platform={"state_dir": str(tmp_path / "router-state")},
    )  # fmt: skip
    ua = node.ua
    assert ua is not None and ua.endpoint is not None
    endpoint = ua.endpoint
    cut = False
    accept, transmit = endpoint.accept, endpoint.transmit

    def from_router(m: Request | Response | None, peer: SipPeer) -> bool:
        if cut and peer.port == rport:
            return False
        return accept is None or accept(m, peer)

    def to_router(out: Transmit) -> None:
        if not (cut and out.peer.port == rport):
            transmit(out)

    endpoint.accept = from_router
    endpoint.transmit = to_router  # type: ignore[method-assign]
    try:
        async with running_router(tmp_path, sections) as router:
            offer = PEER_SDP.format(ver=1, port=rtp.port, fmt="0", dir="sendrecv")
            caller.send(
                request(caller, "INVITE", rport, call_id="cut-1", cseq=1, branch="k1", body=offer),
                rport,
            )
            ok = await caller.expect(lambda m: isinstance(m, Response) and m.status == 200)
            assert isinstance(ok, Response)
            tag = ok.to_tag or ""
            contact = (ok.headers.get("Contact") or "").strip("<>")
            rr = ok.headers.get("Record-Route") or ""
            ack = request(caller, "ACK", rport, call_id="cut-1", cseq=1, branch="k2",
                          to_tag=tag, extra=f"Route: {rr}\n")  # fmt: skip
            caller.send(ack.replace(f"sip:echo@127.0.0.1:{rport}", contact, 1), rport)
            media_port = int(ok.body.decode().split("m=audio ", 1)[1].split()[0])
            rtp.send_tone(("127.0.0.1", media_port), 440.0, 30.0)
            await async_wait_until(lambda: len(rtp.received) > 10, what="the echo")
            (session,) = list(node.switch.sessions)
            channel = session.uuid
            cut = True  # the partition: the node's SIP to and from the router is lost
            bye = await caller.expect(is_req("BYE"), timeout=15)
            assert isinstance(bye, Request) and bye.call_id == "cut-1"
            rtp.close()  # the caller hangs up: its audio stops
            caller.send(ok_to(bye), rport)
            assert router.lost_legs is not None
            await router.lost_legs.writer.flush(timeout=10)
            # the node, alive, sees the audio stop and ends its leg itself
            await async_wait_until(lambda: len(cdrs.records) == 1, timeout=15,
                                   what="the node's own CDR")  # fmt: skip
            assert not node.switch.sessions  # no leg left up
        (own,) = cdrs.records
        assert own.call_id == channel and own.hangup_cause == "MEDIA_TIMEOUT"
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = conn.execute("SELECT call_id, hangup_cause FROM cdr").fetchall()
            assert rows == [(channel, "NETWORK_OUT_OF_ORDER")]  # the router's, first
            result = write_batch_sync(conn, [own])  # the node's writer stores its own
            assert (result.inserted, result.duplicates) == (0, 1)
            assert conn.execute("SELECT count(*) FROM cdr").fetchone() == (1,)
    finally:
        cut = False
        caller.close()
        rtp.close()
        await node.stop()


async def test_a_reload_that_turns_lost_node_timeout_on_bills_from_then_on(
    tmp_path: Path, db_url: str
) -> None:
    rport = free_port()
    sections = router_sections(
        rport, ["sip:127.0.0.1:5999"], dispatcher={"lost_node_timeout": 0.0},
        database={"url": db_url}, platform={"state_dir": str(tmp_path / "state")},
    )  # fmt: skip
    async with running_router(tmp_path, sections) as router:
        assert router.lost_legs is None  # off: no writer, no connection
        sections["dispatcher"]["lost_node_timeout"] = 1.0
        assert router.config_path is not None
        write_config(router.config_path, sections)
        router.reload()
        assert router.lost_legs is not None
        assert router.proxy.on_lost_leg == router.lost_legs.leg_ended
        assert router.proxy.settings.lost_node_timeout == 1.0
