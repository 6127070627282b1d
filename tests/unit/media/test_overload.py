"""The media node's overload admission (media/overload.py): when a new call is shed."""

from __future__ import annotations

import itertools

import pytest

from switchboard.media.overload import OverloadGuard, ShedReason, idle_percent, parse_proc_stat
from switchboard.media.settings import LimitsSection


def shed_count(guard: OverloadGuard, delay: float, calls: int = 100) -> list[int]:
    """Which of ``calls`` new calls at ``delay`` are shed (their indexes)."""
    return [i for i in range(calls) if guard.check(delay=delay, idle_cpu=None) is not None]


def test_defaults_admit_everything_up_to_half_a_second_behind() -> None:
    guard = OverloadGuard()
    assert guard.enabled and guard.max_delay == 0.5
    assert shed_count(guard, 0.0) == []
    assert shed_count(guard, 0.5) == []  # at the threshold: admitted
    assert len(shed_count(guard, 1.0)) == 100
    assert guard.check(delay=0.0, idle_cpu=0.0) is None  # min_idle_cpu is off by default


def test_the_shed_share_grows_with_the_delay_and_is_spread_evenly() -> None:
    guard = OverloadGuard(max_delay=0.5)
    assert guard.shed_fraction(0.625) == pytest.approx(0.25)
    shed = shed_count(guard, 0.625)
    assert len(shed) == 25
    assert {b - a for a, b in itertools.pairwise(shed)} == {4}  # every 4th call
    assert len(shed_count(guard, 0.75)) == 50
    assert len(shed_count(guard, 1.0)) == 100  # from twice the threshold: every call
    assert len(shed_count(guard, 30.0)) == 100
    assert guard.check(delay=1.0, idle_cpu=None) is ShedReason.DELAY


def test_caught_up_the_node_admits_at_once_and_starts_afresh() -> None:
    guard = OverloadGuard(max_delay=0.5)
    assert guard.check(delay=0.6, idle_cpu=None) is None  # 0.2 of a call owed
    assert guard.check(delay=0.1, idle_cpu=None) is None  # caught up: the debt is gone
    assert shed_count(guard, 0.6, 4) == []  # 0.8 owed after four: none shed yet
    assert guard.check(delay=0.6, idle_cpu=None) is ShedReason.DELAY


def test_the_configuration_defaults_are_the_guards_defaults() -> None:
    lim = LimitsSection()
    assert (lim.overload_delay, lim.min_idle_cpu, lim.overload_retry_after) == (
        OverloadGuard().max_delay,
        OverloadGuard().min_idle_cpu,
        OverloadGuard().retry_after,
    )


def test_min_idle_cpu_sheds_every_call_below_the_threshold_once_measured() -> None:
    guard = OverloadGuard(max_delay=0.0, min_idle_cpu=25.0)
    assert guard.check(delay=5.0, idle_cpu=None) is None  # delay check off, no reading yet
    assert guard.check(delay=5.0, idle_cpu=25.0) is None
    assert all(guard.check(delay=0.0, idle_cpu=24.9) is ShedReason.IDLE_CPU for _ in range(5))


def test_every_guard_off_admits_anything() -> None:
    guard = OverloadGuard(max_delay=0.0, min_idle_cpu=0.0)
    assert not guard.enabled
    assert guard.check(delay=60.0, idle_cpu=0.0) is None


@pytest.mark.parametrize("bad", [{"overload_delay": -1}, {"min_idle_cpu": 101},
                                 {"overload_retry_after": -2}])  # fmt: skip
def test_bad_values_are_refused_naming_the_key(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LimitsSection(**bad)


def test_idle_percent_from_two_proc_stat_readings() -> None:
    first = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n"
    # 200 more jiffies: 40 user, 10 system, 120 idle, 30 iowait -> 75 % idle
    second = "cpu  140 0 60 920 80 0 0 0 0 0\n"
    a, b = parse_proc_stat(first), parse_proc_stat(second)
    assert a == (850, 1000) and b == (1000, 1200)
    assert idle_percent(a, b) == pytest.approx(75.0)
    assert idle_percent(b, b) is None  # no time between them
    assert parse_proc_stat("intr 1 2 3\n") is None
    assert parse_proc_stat("cpu  x y z\n") is None


def test_a_stall_leaves_one_stale_reading_and_sheds_nothing() -> None:
    """The loop stood still 2.4 s (its CPU taken by a peer's crash recovery): the probe
    queued before the stall comes out 2.4 s late, the next one shows the backlog cleared —
    the node was catching up, not overloaded, and admits every call meanwhile."""
    guard = OverloadGuard(max_delay=0.5)
    guard.reading(0.02)
    guard.reading(2.4)  # the stale probe
    assert not guard.sustained
    assert shed_count(guard, 2.4) == []  # the stall's batch of INVITEs: admitted
    guard.reading(0.1)  # sent after the stall: the backlog cleared at once
    assert shed_count(guard, 0.1) == []
    guard.reading(2.8)  # another stall, seconds later: still one reading each
    assert shed_count(guard, 2.8) == []


def test_a_delay_confirmed_by_the_next_reading_sheds_as_before() -> None:
    guard = OverloadGuard(max_delay=0.5)
    guard.reading(0.7)
    assert shed_count(guard, 1.0, 10) == []  # one reading: not yet
    guard.reading(1.0)  # the next probe waited as long: the node stays behind
    assert guard.sustained
    assert len(shed_count(guard, 1.0)) == 100
    guard.reading(0.8)
    assert len(shed_count(guard, 0.75)) == 50  # the share by delay, as without readings
    guard.reading(0.3)  # caught up: the next excursion must be confirmed again
    assert not guard.sustained
    assert shed_count(guard, 1.0, 10) == []
    guard.reading(0.6)
    guard.reading(0.6)
    assert guard.check(delay=1.0, idle_cpu=None) is ShedReason.DELAY


def test_either_measurement_confirms_the_delay_on_its_own() -> None:
    """A stall leaves one late probe and one late loop tick: two readings over the
    threshold, but one of each — not sustained. Two late ticks in a row are."""
    guard = OverloadGuard(max_delay=0.5)
    guard.reading(2.4, 0)
    guard.reading(2.4, 1)
    assert not guard.sustained
    guard.reading(0.05, 0)
    guard.reading(0.9, 1)  # the next tick is late too: the loop stays behind
    assert guard.sustained
    guard.reading(0.05, 1)
    assert not guard.sustained


def test_without_readings_the_delay_sheds_at_once() -> None:
    """A node with no receive-queue probe (no UDP socket) sheds by its loop lag alone."""
    guard = OverloadGuard(max_delay=0.5)
    assert guard.sustained
    assert guard.check(delay=1.0, idle_cpu=None) is ShedReason.DELAY
