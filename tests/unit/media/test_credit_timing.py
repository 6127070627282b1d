"""A prepaid call is cut when the time it bought has passed on the wall clock, not a
millisecond before: billsec rounds down, so a cut at 7.999 s bills 7 s of 8 bought (seen
in the crash-recovery e2e: uvloop's timers fire up to ~1 ms early, one time in five)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import uvloop

from switchboard.media.credit import CallCredit


@dataclass
class FakeSession:
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    is_hungup: bool = False


def test_the_wait_for_a_credit_limit_never_ends_before_the_wall_clock_reaches_it() -> None:
    async def run() -> list[float]:
        s = FakeSession()
        early = []
        for i in range(60):
            when = time.time() + 0.002 + (i % 7) * 0.0013
            assert await CallCredit._ends_before(s, when) is False  # type: ignore[arg-type]
            if (now := time.time()) < when:
                early.append(when - now)
        return early

    assert uvloop.run(run()) == []


def test_a_leg_that_ends_first_is_reported_at_once() -> None:
    async def run() -> tuple[bool, float]:
        s = FakeSession()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, s.ended.set)
        t0 = time.monotonic()
        ended = await CallCredit._ends_before(s, time.time() + 5)  # type: ignore[arg-type]
        return ended, time.monotonic() - t0

    ended, took = uvloop.run(run())
    assert ended and took < 1
