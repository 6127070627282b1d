"""Originate pacing: a fixed-rate schedule with a concurrency cap.

A token bucket of depth 1 refilled at ``cps`` is the same thing as a schedule in which the
n-th originate is due at ``start + n / cps``. The schedule form is used because it does not
drift: each deadline is computed from the start, never from the previous send, so scheduling
jitter on one call does not shift all the following ones (the Go original's
``rate.NewLimiter(30, 1)`` behaves the same way).

When the dialer falls behind (blocked by the concurrency cap, or no contact ready), it must not
then burst to "catch up" and exceed the carrier's CPS limit: the schedule is re-anchored so that
at most ``burst`` originates are ever due at once. Lateness under one interval (the event loop
waking a little after the deadline) does not re-anchor, which is what keeps the rate exact.

Time is passed in; the asyncio runner sleeps until :meth:`Pacer.next_due`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Fixed-CPS schedule. ``take(now)`` consumes one slot if one is due."""

    cps: float
    burst: int = 1
    _start: float | None = field(default=None, init=False)
    _sent: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.cps > 0:
            raise ValueError(f"cps must be positive, got {self.cps}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")

    @property
    def interval(self) -> float:
        return 1.0 / self.cps

    def next_due(self, now: float) -> float:
        """When the next originate may be sent (``now`` or earlier means: now)."""
        if self._start is None:
            return now
        due = self._start + self._sent * self.interval
        # Late by less than one interval (an oversleep) keeps the schedule; fallen behind so
        # far that more than `burst` slots would be due at once: re-anchor instead of bursting.
        if now - due >= self.burst * self.interval:
            self._start = now - (self.burst - 1) * self.interval - self._sent * self.interval
            due = self._start + self._sent * self.interval
        return due

    def take(self, now: float) -> bool:
        """Consume a slot if one is due at ``now``; return whether one was."""
        if self._start is None:
            self._start = now
        if self.next_due(now) > now + 1e-9:  # float rounding of start + n·interval
            return False
        self._sent += 1
        return True

    def set_rate(self, cps: float, now: float) -> None:
        """Change the rate without a burst: the new schedule starts at the next due slot."""
        if not cps > 0:
            raise ValueError(f"cps must be positive, got {cps}")
        due = self.next_due(now) if self._start is not None else now
        self.cps = cps
        self._start, self._sent = due, 0
