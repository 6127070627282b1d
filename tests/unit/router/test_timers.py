"""The proxy's transaction timers (router/proxy.py Timers): fixed delays in FIFOs, the
rest in a heap, taken in one order — by time, ties in the order they were set."""

from __future__ import annotations

import heapq
import random

from switchboard.router.proxy import Timers


def test_timers_come_out_in_time_order_then_setting_order() -> None:
    rng = random.Random(7)
    timers = Timers()
    reference: list[tuple[float, int, int]] = []
    now = 0.0
    fired: list[int] = []
    expected: list[int] = []
    for n in range(3000):
        step = rng.choice([0.0, 0.0, 0.25, 0.5, 1.0, -2.0])  # equal instants, a clock back
        now = max(0.0, now + step)
        if rng.random() < 0.3:
            when = now + rng.choice([0.5, 0.7, 3.0])
            timers.at(when, n, None)
        else:
            delay = rng.choice([0.5, 2.0, 5.0, 32.0, 0.0, 1.0] + [float(k) for k in range(20)])
            when = now + delay
            timers.after(now, delay, n, None)
        heapq.heappush(reference, (when, n, n))
        if rng.random() < 0.2:  # take what is due now and then
            t = now + rng.choice([0.0, 1.0, 10.0])
            while (due := timers.pop_due(t)) is not None:
                fired.append(due[0])
            while reference and reference[0][0] <= t:
                expected.append(heapq.heappop(reference)[2])
            assert timers.next() == (reference[0][0] if reference else float("inf"))
    assert len(timers) == len(reference)
    while (due := timers.pop_due(1e9)) is not None:
        fired.append(due[0])
    expected += [heapq.heappop(reference)[2] for _ in range(len(reference))]
    assert fired == expected
    assert len(timers) == 0 and timers.next() == float("inf")
