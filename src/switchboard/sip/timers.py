"""RFC 3261 timer values (Appendix A, Table 4) and RFC 6026 Timers L and M.

Every value is in seconds.  The module-level constants are the RFC defaults; a
:class:`TimerValues` instance carries a set derived from other base values (T1 may be
lowered on a LAN, §17.1.1.1 "T1 is an estimate of the round-trip time"), so a
transaction layer can be configured without touching the constants.

Transport matters (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): on a reliable transport
(TCP, TLS, SCTP) Timers A, E and G are never started and Timers D, I, J and K are
zero, because the transport already retransmits and cannot deliver duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

T1 = 0.5
"""RTT estimate (§17.1.1.1); base of every other timer."""
T2 = 4.0
"""Maximum retransmit interval for non-INVITE requests and INVITE responses (§17.1.2.2)."""
T4 = 5.0
"""Maximum duration a message remains in the network (§17.1.2.2)."""

TIMER_A = T1
"""INVITE request retransmit interval, unreliable transport only; doubles (§17.1.1.2)."""
TIMER_B = 64 * T1
"""INVITE client transaction timeout (§17.1.1.2)."""
TIMER_C = 181.0
"""Proxy INVITE transaction timeout, "greater than 3 minutes" (§16.6 item 11, §16.8)."""
TIMER_D = 32.0
"""Wait time for response retransmits, "at least 32 seconds" on UDP, 0 on reliable (§17.1.1.2)."""
TIMER_E = T1
"""Non-INVITE request retransmit interval, unreliable only; doubles up to T2 (§17.1.2.2)."""
TIMER_F = 64 * T1
"""Non-INVITE client transaction timeout (§17.1.2.2)."""
TIMER_G = T1
"""INVITE final response retransmit interval, unreliable only; doubles up to T2 (§17.2.1)."""
TIMER_H = 64 * T1
"""Wait time for ACK receipt (§17.2.1)."""
TIMER_I = T4
"""Wait time for ACK retransmits; 0 on reliable transports (§17.2.1)."""
TIMER_J = 64 * T1
"""Wait time for non-INVITE request retransmits; 0 on reliable transports (§17.2.2)."""
TIMER_K = T4
"""Wait time for response retransmits; 0 on reliable transports (§17.1.2.2)."""
TIMER_L = 64 * T1
"""RFC 6026 §8.7: INVITE server transaction's wait in Accepted for 2xx/ACK retransmits."""
TIMER_M = 64 * T1
"""RFC 6026 §8.4: INVITE client transaction's wait in Accepted for 2xx retransmits."""


@dataclass(frozen=True, slots=True)
class TimerValues:
    """One consistent set of timer durations, derived from T1, T2 and T4.

    ``TimerValues()`` is the RFC default.  ``TimerValues(t1=0.1)`` scales every
    64·T1 timer with it, as Table 4 defines them; ``timer_b``/``timer_f`` may be
    overridden separately (a router's failover timeout, §16.8 lets a proxy give up
    earlier).
    """

    t1: float = T1
    t2: float = T2
    t4: float = T4
    timer_b: float | None = None
    timer_f: float | None = None
    timer_d: float = TIMER_D

    @property
    def b(self) -> float:
        return self.timer_b if self.timer_b is not None else 64 * self.t1

    @property
    def f(self) -> float:
        return self.timer_f if self.timer_f is not None else 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def j(self) -> float:
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        return 64 * self.t1

    @property
    def m(self) -> float:
        return 64 * self.t1


DEFAULT_TIMERS = TimerValues()
