"""The media node's collector policy: no full collection while calls are up.

A full (generation-2) collection scans every live object and stopped a loaded node for
seconds (docs/media.md, "Memory"); media/collector.py leaves the young generations to the
interpreter and runs full collections itself when the node is idle, or at the latest
every ``max_interval``. Observed here through ``gc.callbacks``, as the loop-lag monitor
sees them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.media.collector import (
    FULL_NEVER,
    QUIET_TRANSACTIONS,
    YOUNG_COLLECTIONS,
    CollectorPolicy,
    _malloc_trim,
)
from tests.support.net import async_wait_until

pytestmark = [pytest.mark.timeout(30)]


class Node:
    """Something with a reference cycle, as a leaked call object would be."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def full_collections() -> Iterator[list[str]]:
    """Who ran each full collection: 'policy' (collect() on its stack) or 'interpreter'."""
    seen: list[str] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append("policy" if policy_running[0] else "interpreter")

    policy_running = [False]
    original = CollectorPolicy.collect

    def collect(self: CollectorPolicy) -> int:
        policy_running[0] = True
        try:
            return original(self)
        finally:
            policy_running[0] = False

    CollectorPolicy.collect = collect  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    saved = gc.get_threshold()
    try:
        yield seen
    finally:
        gc.callbacks.remove(on_gc)
        CollectorPolicy.collect = original  # type: ignore[method-assign]
        gc.set_threshold(*saved)


def churn(rounds: int) -> None:
    """Many young collections, with survivors promoted to the old generation."""
    keep: list[list[int]] = []
    for i in range(rounds):
        keep.append([i])
        if len(keep) > 20_000:
            keep = keep[10_000:]


async def test_no_full_collection_under_calls_one_when_idle(full_collections: list[str]) -> None:
    calls = [3]
    policy = CollectorPolicy(lambda: calls[0], check=0.02, idle_after=0.1, max_interval=3600)
    before = gc.get_threshold()
    policy.start()
    try:
        # young collections kept, the middle generation's every 2nd young one instead of
        # every 10th (its pauses bounded), no automatic full one
        assert gc.get_threshold() == (before[0], YOUNG_COLLECTIONS, FULL_NEVER)
        leaked = Node()
        ref = weakref.ref(leaked)
        gen1_before = gc.get_stats()[1]["collections"]
        churn(100_000)  # the object outlives young collections: now in the old generation
        assert gc.get_stats()[1]["collections"] - gen1_before >= 2
        del leaked  # garbage only the full collection can find
        for _ in range(10):  # a busy node's allocations, calls up throughout
            churn(50_000)
            await asyncio.sleep(0.02)
        assert gc.get_stats()[1]["collections"] - gen1_before > 10  # the young ones ran
        assert full_collections == []  # ... and no full one
        assert ref() is not None  # the promoted cycle waits for the idle collection
        calls[0] = 0
        await async_wait_until(lambda: full_collections == ["policy"], timeout=5.0,
                               what="a full collection once idle")  # fmt: skip
        assert ref() is None
        assert policy.collections == 1
        await asyncio.sleep(0.3)  # idle still, but nothing new to scan: no second one
        assert policy.collections == 1
    finally:
        policy.stop()
    assert gc.get_threshold() == before


async def test_young_generations_are_collected_on_the_clock(
    full_collections: list[str],
) -> None:
    # Allocations less deallocations (old objects' too) is what trips the youngest
    # generation's threshold: under a steady load it hardly moves, and the generation
    # grew to seconds of objects. The policy's clock collects it anyway.
    young: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            young.append(info["generation"])

    saved = gc.get_threshold()
    gc.set_threshold(10**9, saved[1], saved[2])  # the threshold alone would never trip
    policy = CollectorPolicy(lambda: 5, check=0.02, young_interval=0.01, max_interval=3600)
    policy.start()
    gc.callbacks.append(on_gc)
    try:
        made = Node()  # young until a collection promotes it
        await async_wait_until(lambda: young.count(1) >= 2, timeout=5.0,
                               what="clock-driven collections of the middle generation")  # fmt: skip
        assert young.count(0) >= 2 and 2 not in young  # every 2nd one reaches generation 1
        assert any(o is made for o in gc.get_objects(2))  # promoted by them
        assert policy.young_collections >= 4
    finally:
        gc.callbacks.remove(on_gc)
        policy.stop()
    assert full_collections == []


class Clock:
    """A loop stand-in for driving the policy's timer by hand: its time is ours to set."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> None:
        return None

    def run_in_executor(self, executor: Any, fn: Any) -> concurrent.futures.Future[Any]:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(fn())
        return done


def policy_on(clock: Clock, calls: list[int], **kw: float) -> CollectorPolicy:
    policy = CollectorPolicy(lambda: calls[0], **kw)
    policy._loop = clock  # type: ignore[assignment]
    return policy


def run_for(policy: CollectorPolicy, clock: Clock, seconds: float, step: float = 1.0) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        policy._tick()


def test_one_idle_pass_once_the_last_calls_transactions_are_gone() -> None:
    # The pass 5 s after the last call scanned the calls' transactions, alive for 32 s
    # more (150k objects after a load, nothing unreachable): the idle pass waits them out.
    clock, calls = Clock(), [200]
    policy = policy_on(clock, calls, idle_after=40.0, max_interval=3600.0)
    run_for(policy, clock, 600)
    assert policy.collections == 0  # calls up throughout
    calls[0] = 0
    run_for(policy, clock, 39)
    assert policy.collections == 0  # idle, but the transactions are still there
    run_for(policy, clock, 2)
    assert policy.collections == 1
    run_for(policy, clock, 300)
    assert policy.collections == 1  # once per idle period
    calls[0] = 1  # a call comes and goes: a new idle period, a new pass 40 s after it
    run_for(policy, clock, 10)
    calls[0] = 0
    run_for(policy, clock, 39)
    assert policy.collections == 1
    run_for(policy, clock, 2)
    assert policy.collections == 2


def test_the_hourly_pass_waits_for_a_moment_without_calls() -> None:
    clock, calls = Clock(), [500]
    policy = policy_on(clock, calls, idle_after=40.0, max_interval=3600.0)
    run_for(policy, clock, 3600 + 600, step=10.0)
    assert policy.collections == 0  # due, but calls are up
    calls[0] = 0
    run_for(policy, clock, 10, step=10.0)
    assert policy.collections == 1  # at the first moment without calls, not 40 s later


def test_a_node_never_without_calls_gets_the_pass_after_twice_the_interval() -> None:
    clock, calls = Clock(), [500]
    policy = policy_on(clock, calls, idle_after=40.0, max_interval=3600.0)
    run_for(policy, clock, 2 * 3600 - 10, step=10.0)
    assert policy.collections == 0
    run_for(policy, clock, 20, step=10.0)
    assert policy.collections == 1  # cycles made off the call path stay bounded
    run_for(policy, clock, 3600, step=10.0)
    assert policy.collections == 1


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="C library without malloc_trim")
async def test_idle_collection_gives_free_heap_pages_back(full_collections: list[str]) -> None:
    calls = [1]
    policy = CollectorPolicy(lambda: calls[0], check=0.02, idle_after=0.05, max_interval=3600)
    policy.start()
    try:
        # A load's worth of 1 KiB messages (malloc's heap, not Python's arenas), one in a
        # hundred still referenced when the calls are over: the freed pages stay resident.
        blocks = [os.urandom(8) * 128 for _ in range(60_000)]
        keep = blocks[::100]
        del blocks
        churn(50_000)  # something promoted: the idle collection has work
        before = rss_mb()
        calls[0] = 0
        await async_wait_until(lambda: policy.trims == 1, timeout=5.0, what="the idle trim")
        after = rss_mb()
        assert before - after > 30, (before, after)
        assert len(keep) == 600
    finally:
        policy.stop()


def test_records_past_their_time_are_dropped_before_the_idle_pass() -> None:
    clock, calls = Clock(), [10]
    seen: list[int] = []

    def expire() -> None:
        seen.append(policy.collections)

    def broken() -> None:
        raise RuntimeError("housekeeping bug")

    policy = CollectorPolicy(lambda: calls[0], idle_after=40.0, before_idle=[broken, expire])
    policy._loop = clock  # type: ignore[assignment]
    run_for(policy, clock, 100)
    assert seen == []  # calls up: records are pruned as calls end, not here
    calls[0] = 0
    run_for(policy, clock, 100)
    assert seen == [0]  # once, before the pass (which ran despite the broken one)
    assert policy.collections == 1


def test_the_idle_pass_waits_for_the_sip_layer_to_quieten() -> None:
    # A call in setup has no channel yet, and a caller's retransmissions outlive the
    # calls: 40 s without calls, the transactions (and their messages) may still be there.
    clock, calls, transactions = Clock(), [0], [5_000]
    policy = CollectorPolicy(
        lambda: calls[0], idle_after=40.0, transactions=lambda: transactions[0]
    )
    policy._loop = clock  # type: ignore[assignment]
    run_for(policy, clock, 120)
    assert policy.collections == 0
    transactions[0] = QUIET_TRANSACTIONS  # the routers' probes: an idle node's own
    run_for(policy, clock, 2)
    assert policy.collections == 1
