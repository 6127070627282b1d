"""A media node lost with its box (docs/router.md "A media node lost with its box"): no
reaper on that box can end its calls, so the router, which record-routes every dialog,
ends them itself once the node has been inactive for ``lost_node_timeout`` — BYE to the
caller and to the carrier of each call the node held — and writes each leg's CDR under
the channel uuid the node's tag names (router/lost_node.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from switchboard.net.tcp import Peer
from switchboard.router.dispatcher import DestinationState
from switchboard.router.lost_node import carrier_of, leg_cdr
from switchboard.router.proxy import FarEnd, Proxy, ProxySettings
from switchboard.sip.ids import leg_of_tag, leg_tag
from tests.support import proxy_core
from tests.support.proxy_core import M1, UAC, to
from tests.support.sipmsg import header, invite, response_to, start_line

CARRIER = ("127.0.0.1", 5090)
REASON = ['Q.850;cause=38;text="NETWORK_OUT_OF_ORDER"']


def make_proxy(timeout: float = 60.0) -> Proxy:
    # algorithm 8, the list's order: calls go to M1; no probing: the tests set its state
    return proxy_core.make_proxy(algorithm=8, settings=ProxySettings(lost_node_timeout=timeout))


def bridged_call(p: Proxy, a_tag: str = "node1", b_tag: str = "from1") -> None:
    """A caller's call dispatched to M1 and answered there (M1's To tag ``a_tag``); M1's
    leg to the carrier through the router (its From tag ``b_tag``), answered by the
    carrier. Both ACKed."""
    fwd = to(p.receive(invite(), "udp", UAC, None, 0.0), M1)[0]
    ok = response_to(fwd, 200, to_tag=a_tag, contact="127.0.0.1:5081")
    assert [start_line(d) for d in to(p.receive(ok, "udp", M1, None, 0.1), UAC)] == [
        "SIP/2.0 200 OK"
    ]
    leg = invite(call_id="leg-b@node1", via="127.0.0.1:5081", branch="z9hG4bK-node-1",
                 ruri="sip:carrier@127.0.0.1:5090", route="<sip:127.0.0.1:5060;lr>", cseq=7)  # fmt: skip
    leg = leg.replace(b"tag=from1", b"tag=" + b_tag.encode())
    out = to(p.receive(leg, "udp", M1, None, 0.2), CARRIER)
    assert len(out) == 1
    ok = response_to(out[0], 200, to_tag="carr", contact="127.0.0.1:5090")
    assert len(to(p.receive(ok, "udp", CARRIER, None, 0.3), M1)) == 1


def lose_m1(p: Proxy, at: float) -> None:
    d1 = p.dispatcher.find(1, "sip:127.0.0.1:5081")
    assert d1 is not None
    p.dispatcher.set_state(d1, DestinationState.INACTIVE)
    p.handle_timer(at)


def test_calls_of_a_node_inactive_past_lost_node_timeout_are_ended_at_both_far_ends() -> None:
    p = make_proxy()
    bridged_call(p)
    assert p.dialog_count == 1 and len(p.far_ends) == 2
    lose_m1(p, 10.0)
    quiet = [s for t in range(11, 70) for s in p.handle_timer(float(t))]
    assert quiet == []  # a restart, its warm spare and its reaper have their minute
    out = p.handle_timer(70.5)
    (caller_bye,) = to(out, UAC)
    (carrier_bye,) = to(out, CARRIER)
    # the caller's dialog as the node held it: to the caller's Contact, the node's tag
    assert start_line(caller_bye) == "BYE sip:alice@127.0.0.1:5070 SIP/2.0"
    assert header(caller_bye, "From") == ["<sip:echo@127.0.0.1:5060>;tag=node1"]
    assert header(caller_bye, "To") == ["<sip:alice@carrier>;tag=from1"]
    assert header(caller_bye, "Call-ID") == ["call-1@carrier"]
    assert header(caller_bye, "Reason") == REASON
    # the carrier's: to its Contact, the node's From, a CSeq above the node's own
    assert start_line(carrier_bye) == "BYE sip:uas@127.0.0.1:5090 SIP/2.0"
    assert header(carrier_bye, "From") == ["<sip:alice@carrier>;tag=from1"]
    assert header(carrier_bye, "To") == ["<sip:echo@127.0.0.1:5060>;tag=carr"]
    assert header(carrier_bye, "Call-ID") == ["leg-b@node1"]
    assert header(carrier_bye, "CSeq") == ["100007 BYE"]
    assert header(carrier_bye, "Reason") == REASON
    assert header(carrier_bye, "Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
    assert p.dialog_count == 0 and p.far_ends == {}
    assert p.stats.lost_node_calls_ended == 2
    # retransmitted (Timer E) until answered; the caller answers, the carrier does not
    again = p.handle_timer(71.0)
    assert to(again, UAC) == [caller_bye] and to(again, CARRIER) == [carrier_bye]
    assert p.receive(response_to(caller_bye, 200), "udp", UAC, None, 71.1) == []
    later = [s for t in range(72, 120) for s in p.handle_timer(float(t))]
    assert to(later, UAC) == [] and carrier_bye in to(later, CARRIER)
    assert p.handle_timer(200.0) == []  # given up after Timer F


def test_a_node_back_in_time_or_calls_ended_normally_get_no_bye() -> None:
    p = make_proxy()
    bridged_call(p)
    lose_m1(p, 10.0)
    d1 = p.dispatcher.find(1, "sip:127.0.0.1:5081")
    assert d1 is not None
    p.dispatcher.set_state(d1, DestinationState.ACTIVE)  # its restart resumed the calls
    assert [s for t in range(11, 200) for s in p.handle_timer(float(t))] == []
    assert len(p.far_ends) == 2
    # its reaper (or the node) ends them: the BYEs pass through the router
    bye = invite(method="BYE", call_id="leg-b@node1", via="127.0.0.1:5081", branch="z9hG4bK-b2",
                 ruri="sip:uas@127.0.0.1:5090", route="<sip:127.0.0.1:5060;lr>", cseq=8,
                 to_tag="carr", body="")  # fmt: skip
    fwd = to(p.receive(bye, "udp", M1, None, 200.0), CARRIER)[0]
    p.receive(response_to(fwd, 200), "udp", CARRIER, None, 200.1)
    assert list(p.far_ends) == [b"call-1@carrier"]
    lose_m1(p, 201.0)
    out = p.handle_timer(262.0)
    assert to(out, CARRIER) == [] and len(to(out, UAC)) == 1  # only what is still up


def test_off_keeps_no_table() -> None:
    p = make_proxy(timeout=0.0)
    bridged_call(p)
    assert p.far_ends == {} and p.dialog_count == 1
    lose_m1(p, 10.0)
    assert [s for t in range(11, 200, 5) for s in p.handle_timer(float(t))] == []


A_LEG = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
B_LEG = "11223344-5566-4778-8899-aabbccddeeff"


def test_a_node_tag_names_its_channel_and_a_b_leg_its_a_leg() -> None:
    rand = bytes(10)
    a, b = leg_tag(rand, A_LEG), leg_tag(rand, B_LEG, A_LEG)
    assert a == "sbl-0f1e2d3c4b5a49688776a5b4c3d2e1f0"
    assert leg_of_tag(a) == (A_LEG, "") and leg_of_tag(b) == (B_LEG, A_LEG)
    fresh = str(uuid.uuid4())
    assert leg_of_tag(leg_tag(rand, fresh)) == (fresh, "")
    # a uuid of a client's choosing is no UUID: a random tag, which names no channel
    assert leg_tag(rand, "my-call-7") == rand.hex() and leg_of_tag(rand.hex()) is None
    for bad in ("sbl-", "sbl-xyz", "sbl-" + "g" * 32, f"{a}-{a[4:]}-{a[4:]}", "SBL" + a[3:]):
        assert leg_of_tag(bad) is None


def test_the_router_writes_the_cdr_of_each_leg_it_ended_under_the_node_channel_uuid() -> None:
    """Both legs of the lost node's call: the inbound leg by the 2xx's To tag, the outbound
    one by its INVITE's From tag (with its A-leg); start at the INVITE, answer at the 2xx,
    end at the router's BYE; the cause says the node was lost."""
    p = make_proxy()
    ended: list[tuple[FarEnd, float]] = []
    p.on_lost_leg = lambda fe, now: ended.append((fe, now))
    bridged_call(p, leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG))
    lose_m1(p, 10.0)
    assert [s for t in range(11, 70) for s in p.handle_timer(float(t))] == []
    assert ended == []
    p.handle_timer(70.5)
    assert len(ended) == 2
    wall = 1_800_000_000.0  # the proxy's clock 0 is this Unix time
    cdrs = {c.direction: c for fe, now in ended
            if (c := leg_cdr(fe, now, wall, node="sip:127.0.0.1:5081",
                             gateways={"carrier": "127.0.0.1:5090", "other": "10.0.0.9"},
                             prefixes={"carrier": "car"})) is not None}  # fmt: skip
    inbound, outbound = cdrs["inbound"], cdrs["outbound"]
    assert inbound.call_id == A_LEG and inbound.originating_leg == ""
    assert inbound.sip_call_id == "call-1@carrier" and inbound.caller_id == "alice"
    assert inbound.destination == "echo" and inbound.carrier == ""
    assert inbound.start_time.timestamp() == wall + 0.0
    assert inbound.answer_time is not None and inbound.answer_time.timestamp() == wall + 0.1
    assert inbound.end_time is not None and inbound.end_time.timestamp() == wall + 70.5
    assert (inbound.duration, inbound.billsec) == (70, 70)
    assert outbound.call_id == B_LEG and outbound.originating_leg == A_LEG
    assert outbound.sip_call_id == "leg-b@node1" and outbound.carrier == "carrier"
    assert outbound.destination == "rier"  # the gateway's prefix "car" taken off
    assert outbound.start_time.timestamp() == wall + 0.2
    assert (outbound.duration, outbound.billsec) == (70, 70)
    for c in (inbound, outbound):
        assert c.disposition == "ANSWERED" and c.sip_code == 200
        assert c.hangup_cause == "NETWORK_OUT_OF_ORDER" and c.node == "sip:127.0.0.1:5081"


def test_legs_whose_tag_names_no_channel_get_no_cdr_and_ended_normally_none() -> None:
    p = make_proxy()
    ended: list[FarEnd] = []
    p.on_lost_leg = lambda fe, now: ended.append(fe)
    bridged_call(p)  # tags node1/from1: not a media node's channel tags
    lose_m1(p, 10.0)
    p.handle_timer(70.5)
    assert len(ended) == 2
    assert [leg_cdr(fe, 70.5, 0.0, node="n") for fe in ended] == [None, None]
    # a call ended through the router before the loss is not the router's to bill
    q = make_proxy()
    q.on_lost_leg = lambda fe, now: ended.append(fe)
    bridged_call(q, leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG))
    bye = invite(method="BYE", call_id="leg-b@node1", via="127.0.0.1:5081", branch="z9hG4bK-b2",
                 ruri="sip:uas@127.0.0.1:5090", route="<sip:127.0.0.1:5060;lr>", cseq=8,
                 to_tag="carr", body="")  # fmt: skip
    fwd = to(q.receive(bye, "udp", M1, None, 5.0), CARRIER)[0]
    q.receive(response_to(fwd, 200), "udp", CARRIER, None, 5.1)
    lose_m1(q, 10.0)
    q.handle_timer(70.5)
    assert [fe.call_id for fe in ended[2:]] == [b"call-1@carrier"]


def test_carrier_of_matches_the_gateway_proxy() -> None:
    gws = {"a": "10.0.0.1", "b": "10.0.0.2:5080", "v6": "[2001:db8::1]:5062"}
    assert carrier_of(b"INVITE sip:123@10.0.0.1 SIP/2.0", gws) == "a"
    assert carrier_of(b"INVITE sip:123@10.0.0.1:5060;user=phone SIP/2.0", gws) == "a"
    assert carrier_of(b"INVITE sip:123@10.0.0.2:5080 SIP/2.0", gws) == "b"
    assert carrier_of(b"INVITE sip:123@10.0.0.2 SIP/2.0", gws) == ""
    assert carrier_of(b"INVITE sip:123@[2001:DB8::1]:5062 SIP/2.0", gws) == "v6"
    assert carrier_of(b"garbage", gws) == ""


def test_a_caller_on_tcp_gets_the_bye_over_the_connection_it_opened() -> None:
    p = make_proxy()
    caller = ("127.0.0.1", 40123)  # the caller's ephemeral port: its Contact says 5070
    conn = Peer("TCP", *caller)
    msg = invite().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    fwd = to(p.receive(msg, "tcp", caller, conn, 0.0), M1)[0]
    ok = response_to(fwd, 200, to_tag=leg_tag(bytes(10), A_LEG), contact="127.0.0.1:5081")
    assert len(to(p.receive(ok, "udp", M1, None, 0.1), caller)) == 1
    lose_m1(p, 10.0)
    out = p.handle_timer(70.5)
    (bye,) = [s for s in out if s.addr == caller]
    assert bye.transport == "tcp" and bye.conn is conn
    assert start_line(bye.data) == "BYE sip:alice@127.0.0.1:5070 SIP/2.0"
    assert header(bye.data, "Via")[0].startswith("SIP/2.0/TCP ")
    assert header(bye.data, "Reason") == REASON
    assert p.stats.lost_node_calls_ended == 1


def test_a_far_end_that_hung_up_meanwhile_is_billed_to_its_bye_and_sent_none() -> None:
    """The box dies; the caller hears nothing and hangs up: its BYE goes to the dead node,
    which never answers (408 after Timer F). That leg ended at the caller's BYE: its CDR
    ends there and the router sends the caller no BYE; the carrier leg is ended as usual."""
    p = make_proxy()
    ended: list[tuple[FarEnd, float]] = []
    p.on_lost_leg = lambda fe, now: ended.append((fe, now))
    bridged_call(p, leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG))
    bye = invite(method="BYE", call_id="call-1@carrier", branch="z9hG4bK-uac-bye", cseq=2,
                 ruri="sip:n@127.0.0.1:5081", to_tag=leg_tag(bytes(10), A_LEG), body="",
                 route="<sip:127.0.0.1:5060;lr>")  # fmt: skip
    assert len(to(p.receive(bye, "udp", UAC, None, 5.0), M1)) == 1
    answers = [s for t in range(6, 40) for s in p.handle_timer(float(t))]
    assert [start_line(d) for d in to(answers, UAC)] == ["SIP/2.0 408 Request Timeout"]
    assert p.dialog_count == 0 and len(p.far_ends) == 2  # kept for the CDR
    lose_m1(p, 40.0)
    out = p.handle_timer(100.5)
    assert to(out, UAC) == [] and len(to(out, CARRIER)) == 1
    assert p.stats.lost_node_calls_ended == 1 and p.far_ends == {}
    cdrs = {c.direction: c for fe, now in ended if (c := leg_cdr(fe, now, 0.0, node="n"))}
    inbound, outbound = cdrs["inbound"], cdrs["outbound"]
    assert inbound.end_time is not None and inbound.end_time.timestamp() == 5.0
    assert (inbound.billsec, inbound.duration) == (4, 5)
    assert outbound.end_time is not None and outbound.end_time.timestamp() == 100.5


def test_the_service_side_queues_one_cdr_per_billable_leg_and_warns_on_a_short_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from switchboard import config as config_mod
    from switchboard.router.lost_node_billing import LostLegBilling
    from switchboard.router.proxy import Stats

    stats = Stats()

    def billing(**over: dict[str, object]) -> LostLegBilling:
        cfg = config_mod.load(None, environ={}, overrides={
            "database": {"url": "postgresql://127.0.0.1:1/none"},
            "platform": {"state_dir": str(tmp_path)}, **over})  # fmt: skip
        return LostLegBilling(cfg, clock=lambda: 0.0, node_name=lambda uri: "m1", stats=stats)

    p = make_proxy()
    legs = billing()
    p.on_lost_leg = legs.leg_ended
    bridged_call(p, leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG))
    q = make_proxy()
    q.on_lost_leg = legs.leg_ended
    bridged_call(q)  # a node whose tags name no channel
    for proxy in (p, q):
        lose_m1(proxy, 10.0)
        proxy.handle_timer(70.5)
    assert (legs.written, legs.unbillable, legs.writer.queued) == (2, 2, 2)
    assert (stats.lost_node_cdrs, stats.lost_node_legs_unbilled) == (2, 2)  # the metrics
    assert not [r for r in caplog.records if "reservation_grace" in r.getMessage()]
    # prepaid with a grace the router cannot meet: probing 16 s + 110 s >= 120 s
    billing(billing={"credit_control": True}, dispatcher={"lost_node_timeout": 110.0})
    assert [r for r in caplog.records if "reservation_grace" in r.getMessage()]


def test_a_carrier_reached_over_tcp_gets_the_bye_over_tcp() -> None:
    p = make_proxy()
    leg = invite(call_id="leg-t@node1", via="127.0.0.1:5081", branch="z9hG4bK-node-t",
                 ruri="sip:carrier@127.0.0.1:5090;transport=tcp",
                 route="<sip:127.0.0.1:5060;lr>", cseq=7)  # fmt: skip
    leg = leg.replace(b"tag=from1", b"tag=" + leg_tag(bytes(10), B_LEG, A_LEG).encode())
    (fwd,) = [s for s in p.receive(leg, "udp", M1, None, 0.2) if s.addr == CARRIER]
    assert fwd.transport == "tcp"
    ok = response_to(fwd.data, 200, to_tag="carr", contact="127.0.0.1:5090;transport=tcp")
    assert len(to(p.receive(ok, "tcp", CARRIER, None, 0.3), M1)) == 1
    lose_m1(p, 10.0)
    (bye,) = [s for s in p.handle_timer(70.5) if s.addr == CARRIER]
    assert bye.transport == "tcp" and start_line(bye.data).startswith("BYE sip:uas@")
    assert header(bye.data, "Via")[0].startswith("SIP/2.0/TCP ")
    assert header(bye.data, "Reason") == REASON


def test_a_bye_the_other_end_refused_drops_the_entry() -> None:
    """A BYE answered with a failure (481: that end had no such dialog any more) was
    answered: nobody is lost there, the entry goes as with a 2xx (no stale entries)."""
    p = make_proxy()
    bridged_call(p, leg_tag(bytes(10), A_LEG), leg_tag(bytes(10), B_LEG, A_LEG))
    bye = invite(method="BYE", call_id="leg-b@node1", via="127.0.0.1:5081", branch="z9hG4bK-b3",
                 ruri="sip:uas@127.0.0.1:5090", route="<sip:127.0.0.1:5060;lr>", cseq=8,
                 to_tag="carr", body="")  # fmt: skip
    fwd = to(p.receive(bye, "udp", M1, None, 5.0), CARRIER)[0]
    p.receive(response_to(fwd, 481), "udp", CARRIER, None, 5.1)
    assert list(p.far_ends) == [b"call-1@carrier"]
