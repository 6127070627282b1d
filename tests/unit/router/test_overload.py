"""The router under overload (docs/router.md "Overload"): a node's shed 503 is tried on the
next node and, when every node shed the call, the caller gets the router's own 503 with
Retry-After; a node that answered 100 Trying is never failed over on timeout."""

from __future__ import annotations

from switchboard.router.dispatcher import DestinationState, Dispatcher, ProbingConfig, parse_list
from switchboard.router.emergency import EmergencyNumbers
from switchboard.router.overload import GROWTH, MIN_SHARE, WINDOW, EdgeShedding
from switchboard.router.proxy import Interface, Proxy, ProxySettings, Send
from tests.support.sipmsg import header, invite, response_to, start_line

UAC = ("127.0.0.1", 5070)
M1 = ("127.0.0.1", 5081)
M2 = ("127.0.0.1", 5082)


def make_proxy(**settings: bool) -> Proxy:
    d = Dispatcher(
        parse_list("1 sip:127.0.0.1:5081\n1 sip:127.0.0.1:5082\n"),
        algorithm=4,
        probing=ProbingConfig(
            ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
        ),
        now=1e9,  # no probing in these tests
    )
    ifaces = [Interface("udp", "127.0.0.1", 5060), Interface("tcp", "127.0.0.1", 5060)]
    return Proxy(
        ifaces, d, settings=ProxySettings(**settings), secret=b"test",  # type: ignore[arg-type]
        emergency=EmergencyNumbers({"*": ["112", "911"]}),
    )  # fmt: skip


def one(sends: list[Send], addr: tuple[str, int]) -> bytes:
    found = [s.data for s in sends if s.addr == addr]
    assert len(found) == 1, (addr, sends)
    return found[0]


def to(sends: list[Send], addr: tuple[str, int]) -> list[bytes]:
    return [s.data for s in sends if s.addr == addr]


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
    out = p.receive(shed(fwd2, 1), "udp", M2, None, 0.02)
    final = to(out, UAC)
    assert [start_line(x) for x in final] == ["SIP/2.0 503 Service Unavailable"]
    assert header(final[0], "Retry-After") == ["1"]
    assert p.stats.overload_rejects == 1 and p.stats.failovers == 1
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


def test_a_call_one_node_shed_is_not_tried_on_a_node_that_sheds_too() -> None:
    """Within a node's Retry-After the router knows it sheds: a call the other node shed
    gets the router's 503 at once instead of more work for a node that refuses it (edge
    shedding off: with it the router would refuse the third call itself, below)."""
    p = make_proxy(edge_shedding=False)
    fwd1 = one(p.receive(invite(call_id="c1", branch="z9hG4bK-c1"), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.receive(shed(fwd1), "udp", M1, None, 0.01), M2)
    p.receive(shed(fwd2), "udp", M2, None, 0.02)
    # the next call starts on M2 (round robin); M1 shed 0.1 s ago, Retry-After 1
    fwd = one(p.receive(invite(call_id="c2", branch="z9hG4bK-c2"), "udp", UAC, None, 0.1), M2)
    out = p.receive(shed(fwd), "udp", M2, None, 0.11)
    assert to(out, M1) == []
    assert [start_line(x) for x in to(out, UAC)] == ["SIP/2.0 503 Service Unavailable"]
    assert (p.stats.failovers, p.stats.overload_rejects) == (1, 2)
    # past the Retry-After a shed call is tried on the other node again
    fwd = one(p.receive(invite(call_id="c3", branch="z9hG4bK-c3"), "udp", UAC, None, 1.5), M1)
    assert to(p.receive(shed(fwd), "udp", M1, None, 1.51), M2) != []
    assert p.stats.failovers == 2


# -- edge shedding (router/overload.py) -------------------------------------------------
N1, N2 = "sip:127.0.0.1:5081", "sip:127.0.0.1:5082"


def window(e: EdgeShedding, now: float, tries: int, sheds: dict[str, int]) -> None:
    """One window ending at ``now``: ``tries`` INVITEs sent, ``sheds`` of them shed by
    each destination."""
    for _ in range(tries):
        e.tried()
    for uri, n in sheds.items():
        for _ in range(n):
            e.shed(uri, 1)
    assert e.due(now)
    e.update(now, [N1, N2])


def offer(e: EdgeShedding, start: float, rate: float, seconds: float) -> list[bool]:
    """New calls at ``rate``/s from ``start``: refused or not, each."""
    n = int(rate * seconds)
    return [e.refuse(start + i / rate) for i in range(n)]


def test_the_edge_passes_on_what_every_node_took_and_refuses_the_rest_evenly() -> None:
    e = EdgeShedding()
    window(e, 0.0, 0, {})
    assert e.rate is None and not any(offer(e, 0.0, 300, 0.5))
    # 150 INVITEs in the window (300/s), both nodes shed 90: they took 60 = 120/s
    window(e, WINDOW, 150, {N1: 45, N2: 45})
    assert e.rate == 120
    got = offer(e, WINDOW, 300, 1.0)  # 300/s offered: 120/s go on, spread evenly
    assert abs(got.count(False) - 120) <= 13  # (the bucket's BURST at most on top)
    assert max(len(run) for run in "".join("x" if r else "." for r in got).split(".")) <= 2
    # calls offered under the limit: none refused (a peak that ended goes through at once)
    assert not any(offer(e, 3 * WINDOW + 0.1, 100, 0.5))


def test_a_node_with_room_lets_the_limit_grow_and_the_overload_ends() -> None:
    e = EdgeShedding()
    window(e, 0.0, 20, {N1: 10})  # only N1 sheds: the router's failover places them on N2
    assert e.rate is None and not any(offer(e, 0.0, 100, 0.5))
    window(e, WINDOW, 100, {N1: 25, N2: 25})
    assert e.rate == 100
    window(e, 2 * WINDOW, 50, {N1: 4})  # N2 took all it got: the limit grows
    assert e.rate == 100 * GROWTH
    window(e, 3 * WINDOW, 65, {})  # no node shed anything: it doubles
    assert e.rate == 200 * GROWTH
    # the calls sent fell clearly under the limit: no limit any more
    window(e, 4 * WINDOW, 60, {})
    assert e.rate is None and not any(offer(e, 4 * WINDOW, 500, 0.5))


def test_the_edge_never_refuses_every_call() -> None:
    e = EdgeShedding()
    window(e, 0.0, 0, {})
    window(e, WINDOW, 100, {N1: 50, N2: 50})  # the nodes shed all they got
    assert e.rate == MIN_SHARE * 200
    assert offer(e, WINDOW, 200, 1.0).count(False) >= 10
    # with a limit set, a window of nothing taken (a backlog draining) halves it at most
    window(e, 3 * WINDOW, 100, {})
    assert e.rate == 4 * MIN_SHARE * 200
    window(e, 4 * WINDOW, 50, {N1: 25, N2: 25})
    assert e.rate == 2 * MIN_SHARE * 200


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
    # next window: the nodes took none of them, so the edge lets through only a trickle
    # (MIN_SHARE of what was sent): the router's 503 + the nodes' Retry-After at once,
    # nothing sent to a node
    before = p.stats.overload_rejects
    for i in range(20):
        out = p.receive(invite(call_id=f"e{i}", branch=f"z9hG4bK-e{i}"), "udp", UAC, None, 0.6)
        assert to(out, M1) == [] and to(out, M2) == []
        final = to(out, UAC)
        assert [start_line(x) for x in final] == ["SIP/2.0 503 Service Unavailable"]
        assert header(final[0], "Retry-After") == ["1"]
    assert (p.stats.edge_sheds, p.stats.overload_rejects) == (20, before + 20)
    # an emergency call is never refused here: it goes to a node
    for i in range(5):
        out = p.receive(invite(call_id=f"sos{i}", branch=f"z9hG4bK-sos{i}",
                               ruri="sip:911@127.0.0.1:5060"), "udp", UAC, None, 0.61)  # fmt: skip
        assert len(to(out, M1) + to(out, M2)) == 1, out
    assert p.stats.edge_sheds == 20
    # windows later no node shed anything (the overload is over): calls go to nodes again
    out = p.receive(invite(call_id="after", branch="z9hG4bK-after"), "udp", UAC, None, 2.0)
    assert len(to(out, M1) + to(out, M2)) == 1 and p.stats.edge_sheds == 20


def test_edge_shedding_off_sends_every_call_to_a_node() -> None:
    p = make_proxy(edge_shedding=False)
    assert p.edge is None
    shed_calls(p, 6, 0.1)
    for i in range(5):
        out = p.receive(invite(call_id=f"n{i}", branch=f"z9hG4bK-n{i}"), "udp", UAC, None, 0.7)
        assert len(to(out, M1) + to(out, M2)) == 1
    assert p.stats.edge_sheds == 0
