"""The router under overload (docs/router.md "Overload"): a node's shed 503 is tried on the
next node and, when every node shed the call, the caller gets the router's own 503 with
Retry-After; a node that answered 100 Trying is never failed over on timeout."""

from __future__ import annotations

from switchboard.router.dispatcher import DestinationState
from switchboard.router.emergency import EmergencyNumbers
from switchboard.router.overload import MAX_SHARE, STEP_DOWN, WINDOW, EdgeShedding
from switchboard.router.proxy import SHED_RETRY_MAX, Proxy, ProxySettings
from tests.support import proxy_core
from tests.support.proxy_core import M1, M2, UAC, one, to
from tests.support.sipmsg import header, invite, response_to, start_line


def make_proxy(**settings: bool) -> Proxy:
    return proxy_core.make_proxy(
        settings=ProxySettings(**settings),  # type: ignore[arg-type]
        emergency=EmergencyNumbers({"*": ["112", "911"]}),
    )


def shed(request: bytes, retry: int | None = 1, reason: bytes = b"") -> bytes:
    """A node's 503: overloaded, come back in ``retry`` seconds (None: no Retry-After)."""
    extra = b"" if retry is None else b"Retry-After: %d\r\n" % retry
    return response_to(request, 503, "Service Unavailable").replace(
        b"Content-Length: 0", extra + reason + b"Content-Length: 0"
    )


def states(p: Proxy) -> list[DestinationState]:
    return [d.state for d in p.dispatcher.sets[1].destinations]


def test_every_node_shedding_gives_the_caller_503_with_the_smallest_retry_after() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1, 3), "udp", M1, None, 0.01), M2)  # failed over at once
    # every node shed it: tried once more after the smallest Retry-After (1 s), not before
    assert to(p.receive(shed(fwd2, 1), "udp", M2, None, 0.02), UAC) == []
    assert p.handle_timer(0.9) == []
    # M1 asked for 3 s: only M2, whose second away is over, is asked again
    again = p.handle_timer(1.02)
    assert to(again, M1) == [] and start_line(one(again, M2)).startswith("INVITE ")
    out = p.receive(shed(one(again, M2), 1), "udp", M2, None, 1.03)
    final = to(out, UAC)
    assert [start_line(x) for x in final] == ["SIP/2.0 503 Service Unavailable"]
    assert header(final[0], "Retry-After") == ["1"]
    assert p.stats.overload_rejects == 1 and p.stats.failovers == 1
    assert p.stats.shed_retries == 1
    # a shedding node is busy, not dead: both stay active, no failure counted
    assert states(p) == [DestinationState.ACTIVE, DestinationState.ACTIVE]
    assert all(d.failures == 0 for d in p.dispatcher.sets[1].destinations)


def test_one_node_shedding_the_other_answering_connects_the_call() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1), "udp", M1, None, 0.01), M2)
    ok = p.receive(response_to(fwd2, 200), "udp", M2, None, 0.02)
    assert [start_line(x) for x in to(ok, UAC)] == ["SIP/2.0 200 OK"]
    assert p.stats.overload_rejects == 0


def test_a_503_without_retry_after_or_with_a_q850_reason_is_not_shedding() -> None:
    for retry, reason in ((None, b""), (1, b"Reason: Q.850;cause=41\r\n")):
        p = make_proxy()
        fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
        fwd2 = one(p.receive(shed(fwd1), "udp", M1, None, 0.01), M2)
        last = shed(fwd2, retry, reason)
        out = p.receive(last, "udp", M2, None, 0.02)
        # §16.7 step 6 as before: 503s that do not all say "overloaded" become one 500
        assert [start_line(x) for x in to(out, UAC)] == ["SIP/2.0 500 Server Internal Error"]
        assert p.stats.overload_rejects == 0


def test_a_node_that_sent_100_trying_is_not_failed_over_on_timeout() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    assert p.receive(response_to(fwd1, 100, "Trying"), "udp", M1, None, 0.3) == []
    # long past failover_timeout (2 s): the node is working on it; no second INVITE
    for t in (1.0, 2.5, 5.0, 30.0):
        assert to(p.handle_timer(t), M2) == []
    assert p.stats.failovers == 0 and p.stats.branch_timeouts == 0
    assert states(p) == [DestinationState.ACTIVE, DestinationState.ACTIVE]
    ok = p.receive(response_to(fwd1, 200), "udp", M1, None, 31.0)
    assert [start_line(x) for x in to(ok, UAC)] == ["SIP/2.0 200 OK"]


def test_a_call_every_node_shed_in_a_moment_of_stall_is_connected_a_second_later() -> None:
    """Both nodes shed a call (one stalled while the other's crash recovery took the CPU):
    the caller keeps our 100 Trying, and the node that has room a second later takes it."""
    p = make_proxy()
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    assert [start_line(x) for x in to(out, UAC)] == ["SIP/2.0 100 Trying"]
    fwd2 = one(p.receive(shed(one(out, M1)), "udp", M1, None, 0.01), M2)
    assert to(p.receive(shed(fwd2), "udp", M2, None, 0.02), UAC) == []
    # a retransmitted INVITE meanwhile gets the 100 again, no node is asked
    out = p.receive(invite(), "udp", UAC, None, 0.5)
    assert [start_line(x) for x in to(out, UAC)] == ["SIP/2.0 100 Trying"]
    assert to(out, M1) == to(out, M2) == []
    again = p.handle_timer(1.02)
    fwd = (to(again, M1) + to(again, M2))[0]
    node = M1 if to(again, M1) else M2
    ok = p.receive(response_to(fwd, 200), "udp", node, None, 1.05)
    assert [start_line(x) for x in to(ok, UAC)] == ["SIP/2.0 200 OK"]
    assert (p.stats.shed_retries, p.stats.overload_rejects) == (1, 0)


def test_a_call_cancelled_while_waiting_for_the_retry_ends_at_once() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1), "udp", M1, None, 0.01), M2)
    p.receive(shed(fwd2), "udp", M2, None, 0.02)
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"1 INVITE", b"1 CANCEL")
    out = p.receive(cancel, "udp", UAC, None, 0.3)
    assert sorted(start_line(x) for x in to(out, UAC)) == [
        "SIP/2.0 200 OK",
        "SIP/2.0 487 Request Terminated",
    ]
    assert to(p.handle_timer(1.1), M1) == to(p.handle_timer(1.1), M2) == []  # nobody asked


def test_a_long_retry_after_is_not_waited_for() -> None:
    """A node that asks for more than SHED_RETRY_MAX seconds is overloaded for longer than
    a caller should wait: the caller gets the 503 at once, as before."""
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1, SHED_RETRY_MAX + 1), "udp", M1, None, 0.01), M2)
    out = p.receive(shed(fwd2, SHED_RETRY_MAX + 1), "udp", M2, None, 0.02)
    assert [start_line(x) for x in to(out, UAC)] == ["SIP/2.0 503 Service Unavailable"]
    assert p.stats.shed_retries == 0


def test_a_call_one_node_shed_is_not_tried_on_a_node_that_sheds_too() -> None:
    """Within a node's Retry-After the router knows it sheds: a call the other node shed
    gets the router's 503 at once instead of more work for a node that refuses it."""
    p = make_proxy()
    fwd1 = one(p.receive(invite(call_id="c1", branch="z9hG4bK-c1"), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1), "udp", M1, None, 0.01), M2)
    p.receive(shed(fwd2), "udp", M2, None, 0.02)
    # the next call starts on M2 (round robin); M1 shed 0.1 s ago, Retry-After 1
    fwd = one(p.receive(invite(call_id="c2", branch="z9hG4bK-c2"), "udp", UAC, None, 0.1), M2)
    out = p.receive(shed(fwd), "udp", M2, None, 0.11)
    assert to(out, M1) == to(out, UAC) == []  # not M1: the retry a second later
    p.handle_timer(1.02)  # c1's retry (it is left unanswered: Timer B's business)
    again = p.handle_timer(1.11)  # c2's retry: both nodes' second is over, one is asked
    assert len(to(again, M1) + to(again, M2)) == 1
    assert p.stats.failovers == 1 and p.stats.shed_retries == 2
    # past the Retry-After a shed call is tried on the other node again
    out = p.receive(invite(call_id="c3", branch="z9hG4bK-c3"), "udp", UAC, None, 2.5)
    node, other = (M1, M2) if to(out, M1) else (M2, M1)
    assert to(p.receive(shed(one(out, node)), "udp", node, None, 2.51), other) != []
    assert p.stats.failovers == 2


# -- edge shedding (router/overload.py) -------------------------------------------------
N1, N2 = "sip:127.0.0.1:5081", "sip:127.0.0.1:5082"


def window(
    e: EdgeShedding, now: float, tries: int, sheds: dict[str, int], offered: int = 100
) -> None:
    """One window: ``offered`` new calls (each asks the edge), ``tries`` INVITEs sent,
    ``sheds`` of them shed by each destination."""
    for _ in range(offered):
        e.refuse()
    for _ in range(tries):
        e.tried()
    for uri, n in sheds.items():
        for _ in range(n):
            e.shed(uri, 1)
    assert e.due(now)
    e.update(now, [N1, N2])


def refusals(e: EdgeShedding, calls: int) -> list[bool]:
    return [e.refuse() for _ in range(calls)]


def test_the_edge_takes_over_the_share_every_node_sheds_spread_evenly() -> None:
    e = EdgeShedding()
    window(e, 0.0, 0, {})
    assert e.share == 0.0 and not any(refusals(e, 100))
    # both nodes shed half of what they got: the edge refuses every second call
    window(e, WINDOW, 20, {N1: 5, N2: 5})
    assert e.share == 0.5
    assert refusals(e, 6) == [False, True] * 3
    # half of what the edge let through was shed again: 1 - 0.5 * 0.5
    window(e, 2 * WINDOW, 10, {N1: 3, N2: 2})
    assert e.share == 0.75
    assert refusals(e, 8).count(True) == 6


def test_a_node_with_room_is_not_refused_calls_and_the_share_steps_down() -> None:
    e = EdgeShedding()
    window(e, 0.0, 20, {N1: 10})  # only N1 sheds: the router's failover places them on N2
    assert e.share == 0.0 and not any(refusals(e, 50))
    window(e, WINDOW, 20, {N1: 5, N2: 5})
    assert e.share == 0.5
    window(e, 2 * WINDOW, 20, {N1: 4})  # N2 caught up: give the load back step by step
    assert e.share == 0.5 - STEP_DOWN
    window(e, 3 * WINDOW, 20, {N2: 1})
    assert round(e.share, 9) == round(0.5 - 2 * STEP_DOWN, 9)
    # no node shed anything: the overload is over, the share halves each window
    window(e, 4 * WINDOW, 20, {})
    assert round(e.share, 9) == round((0.5 - 2 * STEP_DOWN) / 2, 9)
    window(e, 5 * WINDOW, 20, {N1: 2, N2: 2})
    assert e.share > 0.3
    # idle for 5 s: halved for every window that passed (and dropped when that small)
    for _ in range(3):
        e.tried()
    e.update(5 * WINDOW + 5.0, [N1, N2])
    assert e.share == 0.0 and not any(refusals(e, 50))


def test_when_the_peak_is_over_the_edge_stops_refusing_at_once() -> None:
    e = EdgeShedding()
    window(e, 0.0, 0, {})
    window(e, WINDOW, 100, {N1: 30, N2: 30})  # 100 offered, both nodes shed 60 %
    assert e.share == 0.6
    # the backlog is still being shed, but fewer calls are offered (30) than the edge let
    # through (40): the peak is over, the nodes decide again
    window(e, 2 * WINDOW, 30, {N1: 20, N2: 10}, offered=30)
    assert e.share == 0.0 and not any(refusals(e, 50))


def test_the_edge_never_refuses_every_call() -> None:
    e = EdgeShedding()
    for i in range(5):
        window(e, i * WINDOW, 10, {N1: 5, N2: 5})
    assert e.share == MAX_SHARE
    assert refusals(e, 100).count(False) == 5


def shed_calls(p: Proxy, calls: int, now: float) -> int:
    """``calls`` new calls, each INVITE sent to a node shed by it; how many were sent."""
    sent = 0
    for i in range(calls):
        out = p.receive(invite(call_id=f"s{i}", branch=f"z9hG4bK-s{i}"), "udp", UAC, None, now)
        while out:
            s = out.pop()
            if s.addr in (M1, M2) and s.data.startswith(b"INVITE"):
                sent += 1
                out.extend(p.receive(shed(s.data), "udp", s.addr, None, now + 0.01))
    return sent


def test_the_router_refuses_at_its_edge_what_its_nodes_shed_but_never_an_emergency_call() -> None:
    p = make_proxy()
    # the first window: both nodes shed every INVITE they get (the failed-over ones too)
    assert shed_calls(p, 6, 0.1) >= 6 and p.stats.edge_sheds == 0
    # next window: every node shed all it got, so the edge refuses the most it may
    # (MAX_SHARE) itself — 503 + the nodes' Retry-After at once, nothing sent to a node
    before = p.stats.overload_rejects
    refused = forwarded = 0
    for i in range(20):
        out = p.receive(invite(call_id=f"e{i}", branch=f"z9hG4bK-e{i}"), "udp", UAC, None, 0.6)
        if to(out, M1) or to(out, M2):
            forwarded += 1
            continue
        final = to(out, UAC)
        assert [start_line(x) for x in final] == ["SIP/2.0 503 Service Unavailable"]
        assert header(final[0], "Retry-After") == ["1"]
        refused += 1
    assert (refused, forwarded) == (19, 1)
    assert (p.stats.edge_sheds, p.stats.overload_rejects) == (19, before + 19)
    # an emergency call is never refused here: it goes to a node
    for i in range(5):
        out = p.receive(invite(call_id=f"sos{i}", branch=f"z9hG4bK-sos{i}",
                               ruri="sip:911@127.0.0.1:5060"), "udp", UAC, None, 0.61)  # fmt: skip
        assert len(to(out, M1) + to(out, M2)) == 1, out
    assert p.stats.edge_sheds == 19


def test_edge_shedding_off_sends_every_call_to_a_node() -> None:
    p = make_proxy(edge_shedding=False)
    assert p.edge is None
    shed_calls(p, 6, 0.1)
    for i in range(5):
        out = p.receive(invite(call_id=f"n{i}", branch=f"z9hG4bK-n{i}"), "udp", UAC, None, 0.7)
        assert len(to(out, M1) + to(out, M2)) == 1
    assert p.stats.edge_sheds == 0
