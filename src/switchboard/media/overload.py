"""Overload shedding: refuse a new call early and cheaply when the node is behind.

A node that admits every call while it is starved of CPU falls further behind with each
one: INVITEs wait in its socket, its 100 Trying comes after the router's
``failover_timeout``, the router moves the call to another node while this one still
bridges it — two carrier legs for one call — and the extra work feeds the overload. So
the throughput collapses instead of levelling off at the node's capacity. FreeSWITCH's
``min-idle-cpu`` (switch.conf: refuse new calls while the machine's idle CPU is below a
percentage) and RFC 7339/RFC 6357's SIP overload control (an overloaded server rejects
the excess with 503 + Retry-After, and its upstream sends that traffic elsewhere or
refuses it itself) are the models.

:meth:`OverloadGuard.check` decides, for one new inbound INVITE, from what the node
measured a moment ago:

* ``delay`` — how far behind the node is now (seconds): how long a datagram waits in its
  SIP socket's receive queue before it is read (net/queue_probe.py), or how late its
  event loop runs (the last loop-lag tick, or the one overdue now) if that is more. A new
  INVITE arriving now waits that long before anything answers it. Above ``max_delay`` a
  growing share of the new calls is shed — all of them at twice ``max_delay`` — spread
  evenly (every n-th call, not in bursts), so the node settles where the calls it admits
  are the calls it can carry (the router sheds its own receive queue the same way).

  Shedding by delay waits for the delay to be **sustained**: :meth:`OverloadGuard.reading`
  is fed every probe's wait and every loop-lag tick's lateness, and the delay counts
  only once :data:`CONFIRM` readings in a row of one of them were over ``max_delay``. A
  stall — the node's loop or its CPU taken away for a second or two, e.g. by a peer
  node's crash recovery on the same box — leaves one stale reading of each: no probe is
  sent and no tick runs while the loop stands still, so the ones due before the stall
  come out with its length, and the next ones, after it, with the time the backlog
  takes to clear. A node that was merely stalled clears it quickly and admits on; an
  overloaded node stays behind, and the very next reading confirms it (every probe and
  every tick is as late, a loop turn apart). Shedding on the stall alone refused a
  node's whole intake for a second while it had room (the loop's lateness was read as
  its peak of the last second), and with the other node doing the same the router
  answered the callers 503 (bench/chaos: 125 of 2,000 calls failed at load 4).
* ``idle_cpu`` — the machine's idle CPU in percent over the last second (None: not
  measured yet); below ``min_idle_cpu`` every new call is shed (0 turns the check off,
  as in FreeSWITCH, where the parameter is unset by default).

A shed INVITE is answered ``503 Service Unavailable`` with a short ``Retry-After``
before any SDP, RTP port, channel, journal record or CDR is made for it — a refusal costs
a parse and a response. It carries no Q.850 ``Reason``: it is the node's own state, so
the router tries the next node and answers the caller 503 itself when every node sheds
(docs/router.md "Overload"). Emergency calls are never shed. Pure: the node's IO side
feeds the measurements (media/node.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

CONFIRM = 2  # receive-queue readings in a row over max_delay before the delay sheds calls


class ShedReason(Enum):
    """Why a new call was shed (the ``reason`` label of the shed counter)."""

    DELAY = "delay"
    IDLE_CPU = "idle_cpu"


@dataclass
class OverloadGuard:
    """Admission of new calls by how far behind the node is ([limits] ``overload_delay``,
    ``min_idle_cpu``, ``overload_retry_after``)."""

    max_delay: float = 0.5  # seconds; 0 = off
    min_idle_cpu: float = 0.0  # percent of the machine's CPU; 0 = off
    retry_after: int = 1  # seconds, the shed 503's Retry-After
    _credit: float = 0.0  # shares of a call owed to shedding (spreads the shed calls)
    # per measurement (0: the receive-queue probe, 1: the loop's lag): readings in a row
    # over max_delay; -1 while none was fed
    _over: list[int] = field(default_factory=lambda: [-1, -1])

    def reading(self, wait: float, source: int = 0) -> None:
        """One measurement of how far behind the node is (seconds; ``source`` 0: a
        probe's wait in the SIP socket's receive queue, 1: a loop-lag tick's lateness):
        the delay is sustained once :data:`CONFIRM` of one source's in a row exceed
        ``max_delay``."""
        over = self._over
        over[source] = min(CONFIRM, max(over[source], 0) + 1) if wait > self.max_delay else 0

    @property
    def sustained(self) -> bool:
        """Is the delay confirmed by the readings (True when none are fed)?"""
        a, b = self._over
        return a >= CONFIRM or b >= CONFIRM or (a < 0 and b < 0)

    @property
    def enabled(self) -> bool:
        return self.max_delay > 0 or self.min_idle_cpu > 0

    def shed_fraction(self, delay: float) -> float:
        """The share of new calls shed at ``delay``: 0 up to ``max_delay``, 1 from twice it."""
        if self.max_delay <= 0 or delay <= self.max_delay:
            return 0.0
        return min(1.0, (delay - self.max_delay) / self.max_delay)

    def check(self, *, delay: float, idle_cpu: float | None) -> ShedReason | None:
        """None when this new call may be admitted, else why it is shed."""
        if self.min_idle_cpu > 0 and idle_cpu is not None and idle_cpu < self.min_idle_cpu:
            return ShedReason.IDLE_CPU
        fraction = self.shed_fraction(delay) if self.sustained else 0.0
        if fraction <= 0.0:
            self._credit = 0.0
            return None
        self._credit += fraction
        if self._credit < 1.0 - 1e-9:  # (five fifths add up to 0.9999999999999998)
            return None
        self._credit -= 1.0
        return ShedReason.DELAY


def idle_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Idle CPU in percent between two ``(idle, total)`` readings of the machine's CPU
    time (``/proc/stat``'s first line: idle + iowait, and the sum of every field);
    None when no time passed between them."""
    total = after[1] - before[1]
    if total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (after[0] - before[0]) / total))


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """``(idle, total)`` jiffies from the aggregate ``cpu`` line of ``/proc/stat``
    (proc(5): user nice system idle iowait irq softirq steal ...; guest time is already
    counted in user and nice, so only the first eight fields are summed)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            try:
                fields = [int(x) for x in line.split()[1:9]]
            except ValueError:
                return None
            if len(fields) < 5:
                return None
            return fields[3] + fields[4], sum(fields)
    return None
