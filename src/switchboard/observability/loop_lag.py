"""Event-loop lag and garbage-collector pauses, on every process's ``/metrics``.

A Switchboard process is one asyncio event loop: whatever blocks it — a synchronous
database call, a blocking write, a long garbage collection — delays every call it
handles by as much. :class:`LoopLagMonitor` makes such stalls visible:

* a timer asks to run every ``interval`` seconds and measures how late it actually ran
  (``switchboard_event_loop_lag_seconds``, a histogram; a stall of D seconds shows as a
  sample of at least D − ``interval``);
* ``switchboard_event_loop_lag_max_seconds`` is the largest lateness seen in the current
  and the previous ``window`` seconds (so a scrape every ``window`` seconds sees every
  stall's peak);
* ``switchboard_event_loop_stall_max_seconds``: the same peak with the time the loop's
  thread spent runnable but waiting for a CPU taken out (``/proc/thread-self/schedstat``,
  its run-queue wait). On a machine busy with other work a process is late without being
  at fault; what remains is what it blocked itself — a long callback, a blocking system
  call, a garbage collection. Where schedstat is missing it equals the lag;
* a ``gc.callbacks`` hook times each collection the interpreter runs
  (``switchboard_gc_pause_seconds{generation}``): a full (generation 2) collection blocks
  the loop for as long as it scans the heap;
* a tick later than ``STALL_LOG`` (50 ms) is logged at WARNING — at most one line per
  window, with the count of the others — with what the loop's thread did meanwhile
  (schedstat): *running* (its own work: a long callback or many, a collection),
  *waiting for a CPU* (the machine's doing), *asleep* (the wait for the timer to be due,
  plus any blocking: a system call, a lock, the GIL held by another thread), and how
  much of the span garbage collections took. Without schedstat the line gives the
  lateness (and the collections) alone.

Use: ``mon = LoopLagMonitor(registry); mon.start()`` from the running loop; ``mon.stop()``.
A service starts sampling when it is up: its start-up (imports, binding, the first full
collection) runs before it serves anything and took 100-300 ms on every process of
``switchboard up``, which a scrape in the next 20 s read as a stall of the running
service. A stall of a running service is never left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, disable_created_metrics

from switchboard.observability.metrics import build

INTERVAL = 0.02  # s: 50 samples per second; a few µs each
WINDOW = 10.0  # s: the max gauge covers the current and the previous window
STALL_LOG = 0.05  # s: a tick this late is logged with what the loop's thread did

RECENT = 0.5  # s: behind() covers the current and the previous such window

log = logging.getLogger(__name__)


class LoopLagMonitor:
    """Samples the running loop's lateness and times garbage collections (see module doc)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval: float = INTERVAL,
        window: float = WINDOW,
        gc_pauses: bool = True,
    ) -> None:
        disable_created_metrics()  # as new_registry does: no `_created` companion series
        lag = build(registry, "switchboard_event_loop_lag_seconds")
        peak = build(registry, "switchboard_event_loop_lag_max_seconds")
        stall = build(registry, "switchboard_event_loop_stall_max_seconds")
        assert isinstance(lag, Histogram) and isinstance(peak, Gauge)
        assert isinstance(stall, Gauge)
        self.lag, self.peak, self.stall_peak = lag, peak, stall
        self.gc_pause: Histogram | None = None
        if gc_pauses:
            pause = build(registry, "switchboard_gc_pause_seconds")
            assert isinstance(pause, Histogram)
            self.gc_pause = pause
        self.interval = interval
        self.window = window
        self.max_seen = 0.0  # largest lateness since start (seconds), for tests and benches
        self.max_stall = 0.0  # largest lateness not spent waiting for a CPU, since start
        self._sched_fd = -1  # /proc/thread-self/schedstat of the loop's thread
        self._waited = 0  # its run-queue wait so far (ns)
        self._ran = 0  # its time on a CPU so far (ns)
        self._logged_window = -1.0  # window end of the last stall line
        self._unlogged = 0  # stalls over STALL_LOG since that line, not logged
        self._stall_window = 0.0
        self._stall_previous = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._window_end = 0.0
        self._window_max = 0.0
        self._previous_max = 0.0
        self._gc_started = 0.0
        self._gc_in_span = 0.0  # seconds of collections since the last tick
        self._gc_oldest = -1  # the oldest generation collected since the last tick
        self._recent_end = 0.0
        self._recent_max = 0.0
        self._recent_previous = 0.0
        self._last_late = 0.0  # the last tick's lateness
        self.on_tick: Callable[[float], None] | None = None  # each tick's lateness (s)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):  # opened by the loop's thread: its own counters
            self._sched_fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            self._ran, self._waited = self._schedstat()
        now = time.perf_counter()
        self._window_end = now + self.window
        self._schedule(now)
        if self.gc_pause is not None and self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._sched_fd >= 0:
            os.close(self._sched_fd)
            self._sched_fd = -1

    def _schedstat(self) -> tuple[int, int]:
        """Nanoseconds the loop's thread has run on a CPU and waited on a run queue
        (schedstat fields 1 and 2)."""
        try:
            fields = os.pread(self._sched_fd, 128, 0).split()
            return int(fields[0]), int(fields[1])
        except (OSError, IndexError, ValueError):
            return self._ran, self._waited

    # -- sampling ------------------------------------------------------------------------
    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution and is
        # cached per loop iteration.
        self._due = now + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        late = max(0.0, now - self._due)
        self.lag.observe(late)
        if late > self.max_seen:
            self.max_seen = late
        stall = late
        ran = waited = -1.0  # seconds this tick's interval spent running / runnable
        if self._sched_fd >= 0:
            ran_ns, waited_ns = self._schedstat()
            ran, waited = (ran_ns - self._ran) / 1e9, (waited_ns - self._waited) / 1e9
            self._ran, self._waited = ran_ns, waited_ns
            stall = max(0.0, late - waited)
        if stall > self.max_stall:
            self.max_stall = stall
        collecting, self._gc_in_span = self._gc_in_span, 0.0
        oldest, self._gc_oldest = self._gc_oldest, -1
        if late > STALL_LOG:
            self._log_stall(late, ran, waited, collecting, oldest)
        if now >= self._window_end:
            self._previous_max = self._window_max
            self._window_max = 0.0
            self._stall_previous = self._stall_window
            self._stall_window = 0.0
            self._window_end = now + self.window
        if late > self._window_max:
            self._window_max = late
        if stall > self._stall_window:
            self._stall_window = stall
        if now >= self._recent_end:
            self._recent_previous = self._recent_max if now < self._recent_end + RECENT else 0.0
            self._recent_max = 0.0
            self._recent_end = now + RECENT
        if late > self._recent_max:
            self._recent_max = late
        self._last_late = late
        if self.on_tick is not None:
            self.on_tick(late)
        self.peak.set(max(self._window_max, self._previous_max))
        self.stall_peak.set(max(self._stall_window, self._stall_previous))
        self._schedule(now)

    def _log_stall(
        self, late: float, ran: float, waited: float, collecting: float, oldest: int
    ) -> None:
        """One WARNING per window at most: a stalled process must not also flood its log."""
        if self._logged_window == self._window_end:
            self._unlogged += 1
            return
        self._logged_window = self._window_end
        others = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        self._unlogged = 0
        # collections are timed only with gc_pauses (the gc callback); wall time, and a
        # collection holds the GIL, so it stalled the loop whichever thread ran it
        gc_note = (
            f", {collecting * 1e3:.0f} ms of it garbage collection (generation {oldest}"
            f"{' the oldest' if oldest else ''})"
            if collecting
            else ""
        )
        if ran < 0:
            log.warning("event loop stalled: a tick %.0f ms late%s%s", late * 1e3, gc_note, others)
            return
        span = late + self.interval  # since the previous tick asked to run again
        asleep = max(0.0, span - ran - waited)
        log.warning(
            "event loop stalled: a tick %.0f ms late; over those %.0f ms the loop's thread"
            " ran %.0f ms, waited %.0f ms for a CPU, slept %.0f ms%s%s",
            late * 1e3, span * 1e3, ran * 1e3, waited * 1e3, asleep * 1e3, gc_note, others,
        )  # fmt: skip

    def behind(self) -> float:
        """How far behind the loop is now (seconds): the largest lateness of the last
        0.5-1 s, or the lateness of the sample now overdue if that is more (a loop that
        is stuck in a long run of work has not run the sample yet). 0 before start()."""
        if self._handle is None:
            return 0.0
        overdue = time.perf_counter() - self._due
        return max(self._recent_max, self._recent_previous, overdue)

    def current(self) -> float:
        """How late the loop runs now (seconds): the last tick's lateness, or the sample
        now overdue if that is more — without :meth:`behind`'s memory of the last second,
        which keeps a stall that is over in view. 0 before start()."""
        if self._handle is None:
            return 0.0
        return max(self._last_late, time.perf_counter() - self._due)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.gc_pause is not None and self._gc_started:
            took = time.perf_counter() - self._gc_started
            self._gc_started = 0.0
            self._gc_in_span += took
            self._gc_oldest = max(self._gc_oldest, int(info.get("generation", 0)))
            self.gc_pause.labels(generation=str(info.get("generation", ""))).observe(took)
