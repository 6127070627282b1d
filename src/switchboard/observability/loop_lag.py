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
* a ``gc.callbacks`` hook times each collection the interpreter runs
  (``switchboard_gc_pause_seconds{generation}``): a full (generation 2) collection blocks
  the loop for as long as it scans the heap.

Use: ``mon = LoopLagMonitor(registry); mon.start()`` from the running loop; ``mon.stop()``.
A service starts sampling when it is up: its start-up (imports, binding, the first full
collection) runs before it serves anything and took 100-300 ms on every process of
``switchboard up``, which a scrape in the next 20 s read as a stall of the running
service. A stall of a running service is never left out.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, disable_created_metrics

from switchboard.observability.metrics import build

INTERVAL = 0.02  # s: 50 samples per second; a few µs each
WINDOW = 10.0  # s: the max gauge covers the current and the previous window


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
        assert isinstance(lag, Histogram) and isinstance(peak, Gauge)
        self.lag, self.peak = lag, peak
        self.gc_pause: Histogram | None = None
        if gc_pauses:
            pause = build(registry, "switchboard_gc_pause_seconds")
            assert isinstance(pause, Histogram)
            self.gc_pause = pause
        self.interval = interval
        self.window = window
        self.max_seen = 0.0  # largest lateness since start (seconds), for tests and benches
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._window_end = 0.0
        self._window_max = 0.0
        self._previous_max = 0.0
        self._gc_started = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
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
        if now >= self._window_end:
            self._previous_max = self._window_max
            self._window_max = 0.0
            self._window_end = now + self.window
        if late > self._window_max:
            self._window_max = late
        self.peak.set(max(self._window_max, self._previous_max))
        self._schedule(now)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.gc_pause is not None and self._gc_started:
            took = time.perf_counter() - self._gc_started
            self._gc_started = 0.0
            self.gc_pause.labels(generation=str(info.get("generation", ""))).observe(took)
