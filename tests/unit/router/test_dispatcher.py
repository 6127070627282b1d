"""Dispatcher: list-file parsing, algorithms 0/4/8/9/10, probing state machine (fake clock)."""

from __future__ import annotations

from collections import Counter

import pytest

from switchboard.router.dispatcher import (
    Destination,
    DestinationState,
    Dispatcher,
    DispatcherError,
    ProbingConfig,
    match_codes,
    match_ping_codes,
    parse_line,
    parse_list,
)

LIST = """\
# carrier media nodes
1 sip:127.0.0.1:5081 0 10 duid=m1;weight=50;maxload=2
1 sip:127.0.0.1:5082;transport=tcp 8 20 duid=m2;weight=30
1 sip:[::1]:5083 0 0
2 sip:10.0.0.9 5
"""


def test_list_file_parses_kamailio_format() -> None:
    specs = parse_list(LIST)
    assert [(s.setid, s.host, s.port, s.transport) for s in specs] == [
        (1, "127.0.0.1", 5081, "udp"),
        (1, "127.0.0.1", 5082, "tcp"),
        (1, "[::1]", 5083, "udp"),
        (2, "10.0.0.9", 5060, "udp"),
    ]
    assert specs[0].duid == "m1" and specs[0].maxload == 2 and specs[0].weight == 50
    assert specs[1].flags == 8 and specs[1].priority == 20
    assert specs[3].flags == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x sip:1.2.3.4", "setid 'x'"),
        ("1", "expected 'setid uri"),
        ("1 http://a", "sip: or sips:"),
        ("1 sip:1.2.3.4:99999", "bad port"),
        ("1 sip:1.2.3.4;transport=sctp", "not supported"),
        ("1 sip:1.2.3.4 zz", "flags 'zz'"),
        ("1 sip:1.2.3.4 0 0 maxload=lots", "maxload='lots'"),
    ],
)
def test_bad_lines_name_the_problem_and_line(line: str, message: str) -> None:
    with pytest.raises(DispatcherError) as exc:
        parse_list("# ok\n" + line, name="d.list")
    assert message in str(exc.value)
    assert "d.list:2" in str(exc.value)


def test_comments_and_blank_lines_are_skipped() -> None:
    assert parse_line("   ") is None
    assert parse_line("# 1 sip:1.2.3.4") is None


def test_initial_flags_give_states() -> None:
    d = Dispatcher(parse_list("1 sip:a 1\n1 sip:b 2\n1 sip:c 4\n1 sip:d 32\n1 sip:e 0"))
    states = {x.spec.host: (x.state, x.probing) for x in d.destinations()}
    assert states == {
        "a": (DestinationState.INACTIVE, True),
        "b": (DestinationState.TRYING, True),
        "c": (DestinationState.DISABLED, True),
        "d": (DestinationState.ACTIVE, False),
        "e": (DestinationState.ACTIVE, True),
    }
    assert d.select(1, "x")[0].spec.host in ("b", "d", "e")
    assert {x.spec.host for x in d.select(1, "x")} == {"b", "d", "e"}


def make(alg: int, text: str) -> Dispatcher:
    return Dispatcher(parse_list(text), algorithm=alg)


FOUR = "".join(f"1 sip:10.0.0.{i}\n" for i in range(1, 5))


def test_round_robin_alternates_and_lists_failover() -> None:
    d = make(4, FOUR)
    firsts = [d.select(1, f"c{i}")[0].spec.host for i in range(8)]
    assert firsts == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] * 2
    order = d.select(1, "z")
    assert len(order) == 4 and len({x.uri for x in order}) == 4


def test_round_robin_spreads_a_dead_destinations_share() -> None:
    d = make(4, FOUR)
    dead = d.sets[1].destinations[1]
    dead.state = DestinationState.INACTIVE
    counts = Counter(d.select(1, f"c{i}")[0].spec.host for i in range(300))
    assert counts == {"10.0.0.1": 100, "10.0.0.3": 100, "10.0.0.4": 100}


def test_failover_order_spreads_too() -> None:
    # Before a dead destination is detected, calls that fail over from it must not all
    # land on the same next destination.
    d = make(4, FOUR)
    second = Counter()
    for i in range(400):
        order = d.select(1, f"c{i}")
        if order[0].spec.host == "10.0.0.2":
            second[order[1].spec.host] += 1
    assert set(second) == {"10.0.0.1", "10.0.0.3", "10.0.0.4"}
    assert max(second.values()) - min(second.values()) <= 2


def test_hash_is_sticky_per_call_id_and_spreads_on_failure() -> None:
    d = make(0, FOUR)
    ids = [f"call-{i}@carrier" for i in range(4000)]
    before = {cid: d.select(1, cid)[0].spec.host for cid in ids}
    assert all(d.select(1, cid)[0].spec.host == before[cid] for cid in ids[:50])
    counts = Counter(before.values())
    assert all(800 <= n <= 1200 for n in counts.values()), counts
    d.sets[1].destinations[0].state = DestinationState.INACTIVE  # 10.0.0.1 dies
    after = {cid: d.select(1, cid)[0].spec.host for cid in ids}
    moved = [cid for cid in ids if before[cid] != after[cid]]
    # only the dead destination's calls move...
    assert all(before[cid] == "10.0.0.1" for cid in moved)
    assert len(moved) == counts["10.0.0.1"]
    # ...and they are spread over all three survivors, not dumped on the next one
    spread = Counter(after[cid] for cid in moved)
    assert set(spread) == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}
    assert max(spread.values()) < 2 * min(spread.values()), spread


def test_priority_prefers_larger_value_then_fails_over_in_order() -> None:
    d = make(8, "1 sip:low 0 1\n1 sip:high 0 9\n1 sip:mid 0 5\n")
    assert [x.spec.host for x in d.select(1, "a")] == ["high", "mid", "low"]
    assert [x.spec.host for x in d.select(1, "b")] == ["high", "mid", "low"]
    d.find(1, "sip:high").state = DestinationState.INACTIVE  # type: ignore[union-attr]
    assert [x.spec.host for x in d.select(1, "c")] == ["mid", "low"]


def test_weight_follows_percentages_and_renormalises() -> None:
    d = make(9, "1 sip:a 0 0 weight=50\n1 sip:b 0 0 weight=30\n1 sip:c 0 0 weight=20\n")
    counts = Counter(d.select(1, str(i))[0].spec.host for i in range(1000))
    assert counts == {"a": 500, "b": 300, "c": 200}
    d.find(1, "sip:a").state = DestinationState.INACTIVE  # type: ignore[union-attr]
    counts = Counter(d.select(1, str(i))[0].spec.host for i in range(1000))
    assert counts == {"b": 600, "c": 400}


def test_weight_rules_of_kamailio() -> None:
    # over-100 entries ignored, out of range → 0, the last fills the remainder
    d = make(
        9,
        "1 sip:a 0 0 weight=70\n1 sip:b 0 0 weight=40\n1 sip:c 0 0 weight=500\n1 sip:d 0 0 weight=10\n",
    )
    assert [x.weight for x in d.sets[1].destinations] == [70, 0, 0, 30]


def test_call_load_uses_the_nodes_own_report_when_higher() -> None:
    # b already carries 5 calls from elsewhere (another router, ESL originates)
    d = Dispatcher(parse_list("1 sip:a 0 0 duid=a\n1 sip:b 0 0 duid=b;maxload=6\n"),
                   algorithm=10, probing=PROBE)  # fmt: skip
    a, b = d.destinations()
    ids = {r.destination.spec.host: r.probe_id for r in d.handle_timer(0.0)[0]}
    d.probe_answered(ids["a"], 200, 0.01, calls=0)
    d.probe_answered(ids["b"], 200, 0.01, calls=5)
    assert (a.load, b.load) == (0, 5)
    picks = []
    for i in range(6):
        first = d.select(1, str(i))[0]
        first.active_calls += 1  # the router's own count moves between probes
        picks.append(first.spec.host)
    assert picks.count("a") == 5 and picks.count("b") == 1  # b reached maxload 6
    assert (a.load, b.load) == (5, 6)
    b.active_calls -= 1  # our call on b ended: the estimate follows until the next probe
    assert b.load == 5
    # a node that reports fewer than the router knows of (report older than our calls)
    ids = {r.destination.spec.host: r.probe_id for r in d.handle_timer(5.0)[0]}
    d.probe_answered(ids["a"], 200, 5.01, calls=2)
    assert a.load == 5  # never below the router's own count


def test_call_load_picks_least_loaded_and_honours_maxload() -> None:
    d = make(10, "1 sip:a 0 0 duid=a;maxload=2\n1 sip:b 0 0 duid=b;maxload=1\n")
    a, b = d.sets[1].destinations
    picks = []
    for i in range(3):
        first = d.select(1, str(i))[0]
        first.active_calls += 1
        picks.append(first.spec.host)
    assert sorted(picks) == ["a", "a", "b"]
    assert d.select(1, "full") == []  # every destination at maxload → 503 upstream
    a.active_calls -= 1
    assert [x.spec.host for x in d.select(1, "again")] == ["a"]
    assert b.active_calls == 1


def test_nothing_selectable_gives_empty_order() -> None:
    d = make(4, "1 sip:a 4\n1 sip:b 1\n")
    assert d.select(1, "x") == []
    assert d.select(7, "x") == []  # unknown set


PROBE = ProbingConfig(
    ping_interval=5.0, ping_timeout=1.0, probing_threshold=3, inactive_threshold=2
)


def test_probing_marks_inactive_after_threshold_then_recovers() -> None:
    d = Dispatcher(parse_list("1 sip:a\n"), probing=PROBE, now=0.0)
    dest = d.destinations()[0]
    assert d.get_timer() == 0.0  # probe at once on start
    states = []
    now = 0.0
    for _ in range(3):  # three unanswered probes
        reqs, _ = d.handle_timer(now)
        assert [r.destination for r in reqs] == [dest]
        assert d.get_timer() == now + 1.0  # the probe's timeout
        d.handle_timer(now + 1.0)
        states.append(dest.state)
        now += 5.0
        assert d.get_timer() == now
    assert states == [DestinationState.TRYING, DestinationState.TRYING, DestinationState.INACTIVE]
    assert d.select(1, "c") == []
    # two answered probes bring it back (inactive_threshold=2)
    for expect in (DestinationState.INACTIVE, DestinationState.ACTIVE):
        reqs, _ = d.handle_timer(now)
        d.probe_answered(reqs[0].probe_id, 200, now + 0.004)
        assert dest.state is expect
        now += 5.0
    assert dest.latency_ms == pytest.approx(4.0)
    assert d.select(1, "c") == [dest]


def test_trying_goes_back_to_active_on_one_success() -> None:
    d = Dispatcher(parse_list("1 sip:a\n"), probing=PROBE)
    dest = d.destinations()[0]
    ch = d.report_failure(dest, "call timeout")
    assert ch is not None and ch.new is DestinationState.TRYING
    assert dest.timeouts == 1
    reqs, _ = d.handle_timer(0.0)
    ch = d.probe_answered(reqs[0].probe_id, 200, 0.01)
    assert ch is not None and (ch.old, ch.new) == (DestinationState.TRYING, DestinationState.ACTIVE)


def test_only_ping_reply_codes_prove_a_box_alive() -> None:
    # Kamailio ds_ping_reply_codes: by default only class 2; a 404 is a failed probe
    d = Dispatcher(parse_list("1 sip:a\n1 sip:b\n1 sip:c\n1 sip:d\n"), probing=PROBE)
    a, b, c, e = d.destinations()
    reqs, _ = d.handle_timer(0.0)
    ids = {r.destination.spec.host: r.probe_id for r in reqs}
    assert d.probe_answered(ids["a"], 100, 0.1) is None  # provisional: still pending
    d.probe_answered(ids["a"], 408, 0.2)
    d.probe_answered(ids["b"], 503, 0.2)
    d.probe_answered(ids["c"], 404, 0.2)
    d.probe_answered(ids["d"], 200, 0.2)
    assert (a.state, b.state, c.state, e.state) == (
        DestinationState.TRYING,
        DestinationState.TRYING,
        DestinationState.TRYING,
        DestinationState.ACTIVE,
    )
    assert d.pending_probes == 0
    assert d.probe_answered(ids["d"], 200, 0.3) is None  # late duplicate ignored


def test_ping_reply_codes_widen_what_counts_as_alive() -> None:
    probing = ProbingConfig(1.0, 0.5, 3, 2, match_ping_codes("2xx|404"))
    d = Dispatcher(parse_list("1 sip:a\n1 sip:b\n"), probing=probing)
    a, b = d.destinations()
    for t in (0.0, 1.0):
        ids = {r.destination.spec.host: r.probe_id for r in d.handle_timer(t)[0]}
        d.probe_answered(ids["a"], 404, t + 0.1)
        d.probe_answered(ids["b"], 405, t + 0.1)
    assert (a.state, b.state) == (DestinationState.ACTIVE, DestinationState.TRYING)


@pytest.mark.parametrize(
    ("pattern", "inside", "outside"),
    [("2xx", [200, 202], [100, 404, 408, 503]), ("2xx|4xx", [200, 404, 488], [408, 500])],
)
def test_ping_reply_code_patterns(pattern: str, inside: list[int], outside: list[int]) -> None:
    codes = match_ping_codes(pattern)
    assert all(c in codes for c in inside) and not any(c in codes for c in outside)


@pytest.mark.parametrize("bad", ["408", "2xx|408", "", "1xx", "2x"])
def test_bad_ping_reply_codes(bad: str) -> None:
    with pytest.raises(DispatcherError):
        match_ping_codes(bad)


def test_disabled_is_neither_selected_nor_probed_and_admin_can_restore() -> None:
    d = Dispatcher(parse_list("1 sip:a\n1 sip:b\n"), probing=PROBE)
    a, b = d.destinations()
    ch = d.set_state(a, DestinationState.DISABLED)
    assert ch is not None and ch.reason == "admin"
    reqs, _ = d.handle_timer(0.0)
    assert [r.destination for r in reqs] == [b]
    assert {x.uri for x in d.select(1, "x")} == {"sip:b"}
    assert d.report_failure(a, "late timeout") is None and a.state is DestinationState.DISABLED
    d.set_state(a, DestinationState.ACTIVE)
    assert {x.uri for x in d.select(1, "y")} == {"sip:a", "sip:b"}


def test_reload_keeps_state_of_unchanged_destinations() -> None:
    d = Dispatcher(parse_list("1 sip:a\n1 sip:b\n"), probing=PROBE)
    a = d.find(1, "sip:a")
    assert a is not None
    a.state = DestinationState.INACTIVE
    a.active_calls = 3
    d.load(parse_list("1 sip:a\n1 sip:b\n1 sip:c\n"))
    assert d.find(1, "sip:a") is a and a.state is DestinationState.INACTIVE
    c = d.find(1, "sip:c")
    assert c is not None and c.state is DestinationState.ACTIVE
    reqs, _ = d.handle_timer(0.0)
    assert c in [r.destination for r in reqs]  # a destination added by reload is probed
    d.load(parse_list("1 sip:b\n"))
    assert d.find(1, "sip:a") is None
    with pytest.raises(DispatcherError, match="listed twice"):
        d.load(parse_list("1 sip:b\n1 sip:b\n"))


def test_probe_schedule_does_not_double_probe_a_pending_destination() -> None:
    cfg = ProbingConfig(ping_interval=1.0, ping_timeout=3.0)
    d = Dispatcher(parse_list("1 sip:a\n"), probing=cfg)
    assert len(d.handle_timer(0.0)[0]) == 1
    assert d.handle_timer(1.0)[0] == []  # still waiting for the first one
    assert d.get_timer() == 2.0


def test_letters() -> None:
    dest = Destination(parse_list("1 sip:a")[0])
    assert dest.flags_letters == "AP"
    dest.state, dest.probing = DestinationState.DISABLED, False
    assert dest.flags_letters == "DX"


@pytest.mark.parametrize(
    ("pattern", "inside", "outside"),
    [
        ("408|5xx", [408, 500, 503, 599], [404, 486, 600, 200]),
        ("50x", [500, 503, 509], [510, 408]),
        ("408|503", [408, 503], [500]),
        ("5..", [500, 555], [486]),
    ],
)
def test_failover_codes(pattern: str, inside: list[int], outside: list[int]) -> None:
    codes = match_codes(pattern)
    assert all(c in codes for c in inside)
    assert not any(c in codes for c in outside)


@pytest.mark.parametrize("bad", ["4", "abc", "x08", "5xxx"])
def test_bad_failover_codes(bad: str) -> None:
    with pytest.raises(DispatcherError):
        match_codes(bad)
