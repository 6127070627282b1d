"""One 20 ms media tick per process, driving every outgoing RTP stream.

Why one tick: a task, timer or ``sleep`` per packet costs an event-loop round trip per
stream and drifts (the choppy audio pyVoIP users report). Here a single timer fires
at absolute deadlines ``start + n·20 ms`` taken from the loop's monotonic clock, so
lateness never accumulates, and each wake-up walks a flat tuple of bound methods.

Catch-up / skip policy (:class:`TickClock`): when the loop wakes ``k`` intervals late
(a GC pause, a CPU-starved process):

* ``k ≤ max_catchup`` (default 3, i.e. ≤ 60 ms): every missed frame is sent now,
  back to back. The far end's jitter buffer absorbs a short burst, and no audio or
  RTP timestamps are lost.
* ``k > max_catchup``: only the current frame is sent; the other ``k-1`` are *skipped*:
  streams advance their source position and RTP timestamp by that many frames without
  sending, so playback stays aligned with wall-clock time and the receiver sees a
  timestamp gap (what a lost burst looks like) instead of a long burst that would
  overflow its buffer.

Streams implement ``on_tick(frames, skipped)``: send ``frames`` packets now, after
advancing by ``skipped`` frames. An exception from one stream is logged and that
stream is removed; the tick and the other streams go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

TICK_INTERVAL = 0.020  # 20 ms ptime, RFC 3551 §4.5 default packetisation for G.711
MAX_CATCHUP = 3


class Tickable(Protocol):
    def on_tick(self, frames: int, skipped: int) -> None: ...


@dataclass
class TickClock:
    """Pure deadline arithmetic (fake-clock testable): deadline_n = start + n·interval."""

    start: float
    interval: float = TICK_INTERVAL
    max_catchup: int = MAX_CATCHUP
    n: int = 1  # index of the next tick; tick 0 is ``start`` itself

    @property
    def deadline(self) -> float:
        return self.start + self.n * self.interval

    def on_wake(self, now: float) -> tuple[int, int]:
        """Account a wake-up at ``now``; return ``(frames_to_send, frames_skipped)``.

        Early wake-ups (timer granularity) send nothing: ``(0, 0)``.
        """
        if now < self.deadline:
            return 0, 0
        due = int((now - self.start) / self.interval) - self.n + 1
        due = max(due, 1)
        self.n += due
        if due <= self.max_catchup:
            return due, 0
        return 1, due - 1


class MediaScheduler:
    """The process-wide media tick. Use :func:`get_scheduler` for the shared instance."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        interval: float = TICK_INTERVAL,
        max_catchup: int = MAX_CATCHUP,
        history: int = 4096,
    ) -> None:
        self._loop = loop
        self.interval = interval
        self.max_catchup = max_catchup
        self._streams: dict[int, Callable[[int, int], None]] = {}
        self._calls: tuple[Callable[[int, int], None], ...] = ()
        self._clock: TickClock | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._running = False
        self.ticks = 0
        self.now = 0.0  # loop time of the current/last tick, for streams' own timers
        self.late_frames = 0
        self.skipped_frames = 0
        self.errors = 0
        # Ring buffers of recent wake-up lateness and tick work time, seconds.
        self._lateness = np.zeros(history)
        self._busy = np.zeros(history)

    # -- registration -----------------------------------------------------------------

    def add(self, stream: Tickable) -> None:
        """Drive ``stream.on_tick`` from the next tick on (starts the tick if needed)."""
        self._streams[id(stream)] = stream.on_tick
        self._calls = tuple(self._streams.values())
        if self._handle is None:
            self.start()

    def remove(self, stream: Tickable) -> None:
        """Stop driving ``stream``; the tick itself stops when nothing is left."""
        if self._streams.pop(id(stream), None) is not None:
            self._calls = tuple(self._streams.values())
        if not self._streams:
            self.stop()

    def __len__(self) -> int:
        return len(self._streams)

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if self._handle is not None:
            return
        self._clock = TickClock(loop.time(), self.interval, self.max_catchup)
        self._handle = loop.call_at(self._clock.deadline, self._tick)
        self._running = True

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        clock = self._clock
        assert loop is not None and clock is not None
        now = loop.time()
        self.now = now
        deadline = clock.deadline
        frames, skipped = clock.on_wake(now)
        if frames:
            i = self.ticks % len(self._lateness)
            self._lateness[i] = now - deadline
            self.ticks += 1
            if frames > 1:
                self.late_frames += frames - 1
            self.skipped_frames += skipped
            for call in self._calls:
                try:
                    call(frames, skipped)
                except Exception:
                    self.errors += 1
                    log.exception("media stream failed in tick; removing it")
                    self._remove_call(call)
            self._busy[i] = loop.time() - now
        if self._running and self._streams:
            self._handle = loop.call_at(clock.deadline, self._tick)
        else:
            self._running = False
            self._handle = None

    def _remove_call(self, call: Callable[[int, int], None]) -> None:
        for key, value in list(self._streams.items()):
            if value == call:
                del self._streams[key]
        self._calls = tuple(self._streams.values())

    def lateness_percentile(self, q: float) -> float:
        """Percentile ``q`` (0–100) of recent wake-up lateness, seconds."""
        n = min(self.ticks, len(self._lateness))
        return float(np.percentile(self._lateness[:n], q)) if n else 0.0

    def busy_percentile(self, q: float) -> float:
        """Percentile ``q`` of recent per-tick work time (all streams), seconds."""
        n = min(self.ticks, len(self._busy))
        return float(np.percentile(self._busy[:n], q)) if n else 0.0


def set_realtime_priority(priority: int = 10) -> bool:
    """Run this process under SCHED_FIFO, as FreeSWITCH's ``-rp`` does for its media threads.

    On a busy machine an ordinary process waits behind others when its tick timer fires
    (measured by ``bench/media``: tens of ms at p99 under load, < 1 ms with SCHED_FIFO).
    The kernel still reserves 5 % of each CPU for non-realtime work
    (``sched_rt_runtime_us``), and a single-threaded media process can use at most one
    CPU. Returns False (and changes nothing) when not permitted (needs CAP_SYS_NICE).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.warning("realtime priority not available: %s", exc)
        return False
    return True


_schedulers: dict[int, MediaScheduler] = {}


def get_scheduler() -> MediaScheduler:
    """The one scheduler of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    sched = _schedulers.get(id(loop))
    if sched is None or sched._loop is not loop:
        for key, old in list(_schedulers.items()):  # forget schedulers of closed loops
            if old._loop is None or old._loop.is_closed():
                del _schedulers[key]
        sched = MediaScheduler(loop)
        _schedulers[id(loop)] = sched
    return sched
