"""The process media tick: absolute deadlines (no drift), catch-up/skip policy, fault isolation."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.media.scheduler import MediaScheduler, TickClock, get_scheduler


def test_deadlines_are_absolute_and_do_not_drift() -> None:
    clock = TickClock(start=100.0)
    deadlines = []
    for _ in range(1000):
        deadlines.append(clock.deadline)
        # Wake 1.9 ms late every time: lateness must not accumulate.
        assert clock.on_wake(clock.deadline + 0.0019) == (1, 0)
    assert deadlines[-1] == pytest.approx(100.0 + 1000 * 0.020)


def test_early_wakeup_sends_nothing() -> None:
    clock = TickClock(start=0.0)
    assert clock.on_wake(0.0195) == (0, 0)
    assert clock.on_wake(0.020) == (1, 0)
    assert clock.deadline == pytest.approx(0.040)


def test_short_stall_is_caught_up_in_a_burst() -> None:
    clock = TickClock(start=0.0, max_catchup=3)
    assert clock.on_wake(0.061) == (3, 0)  # ticks 1, 2, 3 due
    assert clock.deadline == pytest.approx(0.080)


def test_long_stall_skips_and_stays_on_wall_clock() -> None:
    clock = TickClock(start=0.0, max_catchup=3)
    assert clock.on_wake(0.2005) == (1, 9)  # ticks 1..10 due: send 1, skip 9
    assert clock.deadline == pytest.approx(0.220)
    assert clock.on_wake(0.2201) == (1, 0)


class Recorder:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: list[tuple[float, int, int]] = []

    def on_tick(self, frames: int, skipped: int) -> None:
        self.calls.append((self.loop.time(), frames, skipped))


class Broken:
    def on_tick(self, frames: int, skipped: int) -> None:
        raise RuntimeError("boom")


async def test_scheduler_drives_streams_on_20ms_grid() -> None:
    loop = asyncio.get_running_loop()
    sched = MediaScheduler(loop)
    rec = Recorder(loop)
    broken = Broken()
    sched.add(broken)
    sched.add(rec)
    start = sched._clock.start  # type: ignore[union-attr]
    deadline = loop.time() + 2.0
    while len(rec.calls) < 10 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sched.stop()
    assert len(rec.calls) >= 10
    sent = 0
    for when, frames, skipped in rec.calls:
        sent += frames + skipped
        # Tick n is never early and, on an idle loop, at most a few ms late.
        assert when >= start + sent * 0.020 - 0.0015
    assert sched.errors == 1 and len(sched) == 1  # the failing stream was removed, the other kept
    assert sched.ticks >= 10 and sched.lateness_percentile(50) >= 0.0
    sched.remove(rec)
    assert len(sched) == 0


async def test_one_scheduler_per_loop() -> None:
    assert get_scheduler() is get_scheduler()


async def test_tick_stops_when_the_last_stream_leaves_and_restarts() -> None:
    loop = asyncio.get_running_loop()
    sched = MediaScheduler(loop)
    rec = Recorder(loop)
    sched.add(rec)
    deadline = loop.time() + 2.0
    while len(rec.calls) < 3 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sched.remove(rec)
    assert sched._handle is None and not sched._running
    ticks = sched.ticks
    await asyncio.sleep(0.08)
    assert sched.ticks == ticks  # no idle wake-ups
    sched.add(rec)
    while sched.ticks == ticks and loop.time() < deadline + 2.0:
        await asyncio.sleep(0.01)
    assert sched.ticks > ticks
    sched.remove(rec)
