"""The media node's collector policy: no full collection while calls are up.

A full (generation-2) collection scans every live object and stopped a loaded node for
seconds (docs/media.md, "Memory"); media/collector.py leaves the young generations to the
interpreter and runs full collections itself when the node is idle, or at the latest
every ``max_interval``. Observed here through ``gc.callbacks``, as the loop-lag monitor
sees them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.media.collector import (
    FULL_NEVER,
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


async def test_full_collection_at_the_latest_after_max_interval(
    full_collections: list[str],
) -> None:
    policy = CollectorPolicy(lambda: 500, check=0.02, idle_after=0.1, max_interval=0.2)
    policy.start()
    try:
        await async_wait_until(lambda: policy.collections >= 2, timeout=5.0,
                               what="two collections under calls")  # fmt: skip
        assert set(full_collections) == {"policy"}
    finally:
        policy.stop()


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


async def test_a_second_idle_pass_when_the_last_transactions_are_gone(
    full_collections: list[str],
) -> None:
    # The first idle pass comes 5 s after the last call, while the calls' transactions
    # (32 s) still hold their messages; the second, once they are gone, gives back what
    # reference counting freed since — with no young collection in between to prompt it.
    calls = [1]
    policy = CollectorPolicy(
        lambda: calls[0], check=0.02, idle_after=0.05, settled_after=0.5, max_interval=3600
    )
    policy.start()
    try:
        churn(50_000)
        calls[0] = 0
        await async_wait_until(lambda: policy.collections >= 1, timeout=5.0, what="first pass")
        first = policy.collections
        assert not policy._settled
        await async_wait_until(lambda: policy._settled, timeout=5.0, what="the settled pass")
        assert policy.collections == first + 1
        if _malloc_trim() is not None:
            assert policy.trims == first + 1
        await asyncio.sleep(0.3)
        assert policy.collections == first + 1  # once per idle period
        assert "interpreter" not in full_collections
    finally:
        policy.stop()
