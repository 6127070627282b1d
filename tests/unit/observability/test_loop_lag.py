"""The event-loop lag monitor sees a stall of the loop and times garbage collections."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time

import pytest
from prometheus_client import CollectorRegistry

from switchboard.observability.loop_lag import LoopLagMonitor
from switchboard.observability.metrics import render


def _value(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    v = reg.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


async def test_a_blocked_loop_shows_in_the_histogram_and_the_max_gauge() -> None:
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg, interval=0.01, window=5.0)
    mon.start()
    try:
        await asyncio.sleep(0.1)
        assert mon.max_seen < 0.05, mon.max_seen  # an idle loop runs its timer on time
        quiet = _value(reg, "switchboard_event_loop_lag_seconds_count")
        assert quiet >= 3
        time.sleep(0.12)  # the stall under test: the loop can run nothing for 120 ms
        await asyncio.sleep(0.05)
        assert mon.max_seen >= 0.1
        assert _value(reg, "switchboard_event_loop_lag_max_seconds") >= 0.1
        le_50ms = _value(reg, "switchboard_event_loop_lag_seconds_bucket", {"le": "0.05"})
        total = _value(reg, "switchboard_event_loop_lag_seconds_count")
        assert total - le_50ms == 1  # exactly one sample above 50 ms: the stall
        assert "switchboard_event_loop_lag_seconds_bucket" in render(reg).decode()
    finally:
        mon.stop()


async def test_the_max_gauge_forgets_a_stall_after_two_windows() -> None:
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg, interval=0.01, window=0.1, gc_pauses=False)
    mon.start()
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.08)
        await asyncio.sleep(0.02)
        assert _value(reg, "switchboard_event_loop_lag_max_seconds") >= 0.06
        await asyncio.sleep(0.35)
        assert _value(reg, "switchboard_event_loop_lag_max_seconds") < 0.05
        assert mon.max_seen >= 0.06  # the run's maximum is kept for benchmarks
    finally:
        mon.stop()


async def test_full_collections_are_timed_by_generation_and_stop_unhooks() -> None:
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg)
    mon.start()
    try:
        gc.collect(2)
        gc.collect(0)
        assert _value(reg, "switchboard_gc_pause_seconds_count", {"generation": "2"}) >= 1
        assert _value(reg, "switchboard_gc_pause_seconds_count", {"generation": "0"}) >= 1
    finally:
        mon.stop()
    assert mon._on_gc not in gc.callbacks
    before = _value(reg, "switchboard_gc_pause_seconds_count", {"generation": "2"})
    gc.collect(2)
    assert _value(reg, "switchboard_gc_pause_seconds_count", {"generation": "2"}) == before


async def test_a_loop_blocked_by_its_own_work_or_a_blocking_call_is_a_stall() -> None:
    """The stall gauge keeps what the process blocked itself — 120 ms of its own CPU in
    one callback, a 120 ms blocking call — and takes out only the time the loop's thread
    waited on the run queue (the kernel's schedstat, Linux): it is never above the lag."""
    if not os.path.exists("/proc/thread-self/schedstat"):
        pytest.skip("no schedstat")
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg, interval=0.01, window=5.0, gc_pauses=False)
    mon.start()
    try:
        await asyncio.sleep(0.05)
        end = time.thread_time() + 0.12
        while time.thread_time() < end:  # 120 ms of this thread's CPU, however long it takes
            pass
        await asyncio.sleep(0.03)
        # late >= own CPU + run-queue wait - interval, and the wait is what is taken out
        assert mon.max_stall >= 0.1, (mon.max_stall, mon.max_seen)
        assert mon.max_stall <= mon.max_seen
        busy = _value(reg, "switchboard_event_loop_stall_max_seconds")
        assert busy == mon.max_stall
        time.sleep(0.25)  # a blocking call: no CPU, no run queue — still the loop's stall
        await asyncio.sleep(0.03)
        assert mon.max_stall >= 0.2
    finally:
        mon.stop()


async def test_a_stall_is_logged_once_per_window_with_what_the_loop_thread_did(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 120 ms callback that computes shows as the thread running, one that sleeps in a
    system call as the thread asleep; a second stall in the same window is counted on the
    next line, not logged on its own."""
    caplog.set_level("WARNING", logger="switchboard.observability.loop_lag")
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg, interval=0.01, window=1.5, gc_pauses=False)
    mon.start()
    try:
        await asyncio.sleep(0.05)
        end = time.thread_time() + 0.12
        while time.thread_time() < end:  # the stall under test: 120 ms of CPU work
            pass
        await asyncio.sleep(0.03)
        time.sleep(0.08)  # a second stall in the same window: counted, not logged
        await asyncio.sleep(1.6)  # the next window
        time.sleep(0.12)  # blocked in a system call for 120 ms
        await asyncio.sleep(0.05)
    finally:
        mon.stop()
    lines = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(lines) == 2, lines
    nums = [[float(x) for x in re.findall(r"(\d+) ms", line)] for line in lines]
    late, _span, ran, _waited, _slept = nums[0]
    assert late >= 100 and ran >= 80, lines[0]  # running: its own work
    late, _span, ran, _waited, slept = nums[1]
    assert late >= 100 and slept >= 100 and ran < 50, lines[1]  # asleep: blocked
    assert "(1 more since the last line)" in lines[1]


async def test_behind_sees_a_stall_while_it_lasts_and_forgets_it_within_a_second() -> None:
    """What the media node's overload guard reads (media/overload.py)."""
    mon = LoopLagMonitor(CollectorRegistry(), interval=0.01, gc_pauses=False)
    assert mon.behind() == 0.0  # not started
    mon.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the stall under test; behind() read from inside it:
        assert mon.behind() >= 0.25  # the overdue sample, before any sample ran late
        await asyncio.sleep(0.02)
        assert mon.behind() >= 0.25  # the late sample is remembered...
        await asyncio.sleep(1.1)
        assert mon.behind() < 0.25  # ...for 0.5-1 s (what is left: a busy machine's lateness)
    finally:
        mon.stop()


async def test_a_stall_line_says_how_much_of_it_was_garbage_collection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full collection of a large heap on the loop's thread is named in the stall line."""
    caplog.set_level("WARNING", logger="switchboard.observability.loop_lag")
    reg = CollectorRegistry()
    mon = LoopLagMonitor(reg, interval=0.01, window=5.0)
    heap = [[i] for i in range(200_000)]  # containers for the collector to scan
    mon.start()
    try:
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.06:  # at least 60 ms of collections
            gc.collect()
        await asyncio.sleep(0.05)
    finally:
        mon.stop()
        del heap
    lines = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(lines) == 1, lines
    found = re.search(r"(\d+) ms of it garbage collection \(generation 2 the oldest\)", lines[0])
    assert found and int(found.group(1)) >= 50, lines[0]
