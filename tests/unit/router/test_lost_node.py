"""A media node lost with its box (docs/router.md "A media node lost with its box"): no
reaper on that box can end its calls, so the router, which record-routes every dialog,
ends them itself once the node has been inactive for ``lost_node_timeout`` — BYE to the
caller and to the carrier of each call the node held."""

from __future__ import annotations

from switchboard.router.dispatcher import DestinationState
from switchboard.router.proxy import Proxy, ProxySettings
from tests.support import proxy_core
from tests.support.proxy_core import M1, UAC, to
from tests.support.sipmsg import header, invite, response_to, start_line

CARRIER = ("127.0.0.1", 5090)
REASON = ['Q.850;cause=38;text="NETWORK_OUT_OF_ORDER"']


def make_proxy(timeout: float = 60.0) -> Proxy:
    # algorithm 8, the list's order: calls go to M1; no probing: the tests set its state
    return proxy_core.make_proxy(algorithm=8, settings=ProxySettings(lost_node_timeout=timeout))


def bridged_call(p: Proxy) -> None:
    """A caller's call dispatched to M1 and answered there; M1's leg to the carrier
    through the router, answered by the carrier. Both ACKed."""
    fwd = to(p.receive(invite(), "udp", UAC, None, 0.0), M1)[0]
    ok = response_to(fwd, 200, to_tag="node1", contact="127.0.0.1:5081")
    assert [start_line(d) for d in to(p.receive(ok, "udp", M1, None, 0.1), UAC)] == [
        "SIP/2.0 200 OK"
    ]
    leg = invite(call_id="leg-b@node1", via="127.0.0.1:5081", branch="z9hG4bK-node-1",
                 ruri="sip:carrier@127.0.0.1:5090", route="<sip:127.0.0.1:5060;lr>", cseq=7)  # fmt: skip
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
