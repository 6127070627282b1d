"""Session limits, like FreeSWITCH's switch.conf ``max-sessions`` and ``sessions-per-second``.

Semantics (``switch_core_session.c`` and ``switch_time.c``, with one deliberate difference):

* Every new leg — inbound INVITE, originate, each bridge B-leg — asks :meth:`admit`.
* ``max_sessions``: refused when ``active + 1 > max_sessions`` (FreeSWITCH's check).
* ``sessions_per_second``: a **sliding one-second window** over *admitted* legs: a leg is
  admitted when fewer than ``sessions_per_second`` legs were admitted in ``(now - 1, now]``.
  So a limit of 30 admits exactly 30 legs in any one-second span — FreeSWITCH's
  decrement-then-check on a fixed tick admits only 29 and lets a burst straddling the
  tick through twice; we chose the exact reading the issue asks for.
  Refused attempts do not consume the budget (they are still counted in ``sps_last``).
* Emergency calls (docs/compliance.md "Emergency calls") ignore ``sessions_per_second``
  and may use ``emergency_reserve`` sessions beyond ``max_sessions``: a node full of
  ordinary calls still carries them (both legs of each).
* Refusal surfaces as ``503 Maximum Calls In Progress`` + ``Retry-After`` for an
  inbound INVITE and as cause ``DESTINATION_OUT_OF_ORDER`` for an outbound leg
  (``sofia_outgoing_channel``'s default cause).

Time is a parameter: ``now`` is a monotonic clock reading in seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

WINDOW = 1.0  # seconds: the sessions-per-second window


class Refusal(Enum):
    """Why :meth:`SessionLimiter.admit` refused (FreeSWITCH log wording)."""

    THROTTLE = "Throttle Error!"  # sessions-per-second exceeded
    OVER_LIMIT = "Over Session Limit!"  # max-sessions reached


@dataclass
class SessionLimiter:
    """Admission control for new legs; ``active`` is maintained by :meth:`release`."""

    max_sessions: int = 10000
    sessions_per_second: int = 400
    emergency_reserve: int = 10
    active: int = 0
    since_startup: int = 0
    peak: int = 0
    sps_peak: int = 0
    _admitted: deque[float] = field(default_factory=deque)
    _attempts: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        horizon = now - WINDOW
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        while self._attempts and self._attempts[0] <= horizon:
            self._attempts.popleft()

    def admit(self, now: float, *, emergency: bool = False) -> Refusal | None:
        """Admit one new leg at ``now``: None when admitted, else why it is refused.
        ``emergency``: no rate limit, and the reserve beyond ``max_sessions`` is open."""
        self._expire(now)
        self._attempts.append(now)
        if emergency:
            if self.active + 1 > self.max_sessions + self.emergency_reserve:
                return Refusal.OVER_LIMIT
        else:
            if self.sessions_per_second > 0 and len(self._admitted) >= self.sessions_per_second:
                return Refusal.THROTTLE
            if self.active + 1 > self.max_sessions:
                return Refusal.OVER_LIMIT
        self._admitted.append(now)
        self.active += 1
        self.since_startup += 1
        self.peak = max(self.peak, self.active)
        self.sps_peak = max(self.sps_peak, len(self._admitted))
        return None

    def release(self) -> None:
        """One admitted leg ended."""
        if self.active > 0:
            self.active -= 1

    def sps_last(self, now: float) -> int:
        """Attempts (admitted or refused) in the last second — ``Session-Per-Sec-Last``."""
        self._expire(now)
        return len(self._attempts)

    def sps_current(self, now: float) -> int:
        """Admitted legs in the last second."""
        self._expire(now)
        return len(self._admitted)
