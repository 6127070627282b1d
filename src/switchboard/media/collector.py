"""When a media node's garbage collector may run a full collection: not under calls.

CPython's cyclic collector runs a full (generation 2) collection on its own whenever
enough objects survived the younger generations, and a full collection scans every
live object: a node carrying a few hundred calls and the transactions of the calls that
ended in the last 32 s (64·T1, RFC 3261 §17) holds several hundred thousand of them, so
under load the node stopped for 0.1-2.5 s once every few seconds (bench/platform-load,
docs/media.md "Memory"). Nothing needs those collections: a finished call's objects are
freed by reference counting the moment it ends (tests/integration/media/
test_media_call_garbage.py fails on any cycle a call leaves behind).

So :class:`CollectorPolicy` keeps the young generations' automatic collections (they
scan only recently allocated objects and still free short-lived cycles such as an
exception's traceback) and takes the automatic full collection away
(``gc.set_threshold(t0, YOUNG_COLLECTIONS, FULL_NEVER)``). The middle generation is
collected after every :data:`YOUNG_COLLECTIONS` (2) collections of the youngest, not
CPython's 10: a call's objects outlive the youngest generation's collections (a call
lasts seconds), so the middle one held ten collections' worth of survivors and each of
its collections scanned them all — 42-48 ms of a node's CPU at most at 150 calls/s
(thread CPU per collection, load 8.6), a stall of the loop on its own. With 2: at most
13-14 ms (load 19), the youngest's at most 4.5-6 ms instead of 15-22, and the same total
(~0.75 s of CPU per node for 40 s of load: every object is still scanned once in each
young generation). 5,000 and 3 were worse: 63 ms at most, a quarter more in total.
The full collection runs from a timer instead, at a moment when nobody waits for it
and when it has little to scan:

* once per idle period, when the node has been without calls for ``idle_after`` seconds
  (40): the last calls' transactions live 32 s after them (64·T1, RFC 3261 §17) and
  hold their messages until then. A pass 5 s after the last call (the rule before)
  scanned those transactions for nothing — after 60 s at 150 calls/s, 145-150k objects
  beyond the frozen start-up heap (ServerTransaction/ClientTransaction, their Request,
  Response, Headers, Via, SipUri), 0 of them unreachable, 0.3 s of blocked loop on a
  quiet machine and 0.9-1.1 s at load 8; at 40 s the same node held ~500 objects (3-19
  ms);
  It waits, too, until the node's SIP layer holds at most :data:`QUIET_TRANSACTIONS`
  transactions (an idle node's own: the routers' OPTIONS probes, 32 s each): a call in
  setup has no channel yet and does not count as a call, and callers' retransmissions
  and late BYEs after an overloaded load keep transactions alive past the 40 s — in
  one such run 1,100 of them (19.7k objects) were still there and the pass took
  97-222 ms;
* when ``max_interval`` (1 h) has passed since the previous one, at the first moment
  without calls — the safety net for cycles made outside the call path (admin API, ESL
  clients), bounding what they can hold; a node that has not been without calls for
  another ``max_interval`` after that runs it under calls (a carrier node that never
  idles would otherwise keep such cycles for ever: one pause per two hours, the size of
  what the node holds, instead).

The young generations are also collected on a clock, every :data:`YOUNG_INTERVAL`
(50 ms; the middle one every second time), besides their own threshold. CPython counts
the youngest generation's objects as allocations *less deallocations*, and a
deallocation of any object counts, old ones included: under a steady load the calls'
objects and transactions made 32 s before die about as fast as new ones are made, so
the count creeps towards the threshold (700) while the generation itself holds
everything made meanwhile. Counted inside both nodes of ``bench/platform-load`` (150
calls/s, a ``gc.callbacks`` probe, load 3-5): without the clock a middle collection
scanned 5,700-5,900 young objects at the median and up to 13,000-17,000 (thresholds
suggest ~2,100), 11-18 ms of the loop's CPU at most; with it 39-44 at the median and
8,100 at most, 6-7 ms at most (the youngest's: 9 ms → 1-2 ms). Every object is still
scanned once in each young generation: the same work, in smaller pieces.

Each collection is timed by the loop-lag monitor's ``switchboard_gc_pause_seconds``.

After each idle collection the C allocator is asked to give its free pages back to the
system (glibc ``malloc_trim``): SIP messages, SDP bodies and RTP payloads are over
512 bytes, so they live in malloc's heap rather than Python's own arenas, and the pages
of a load's worth of them stayed resident after the calls ended (free, but counted in
the node's RSS). Not under calls: the trim walks the heap — in a worker thread, so
the loop goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

FULL_NEVER = 2**31 - 1  # generation-1 collections between automatic full ones: never
YOUNG_COLLECTIONS = 2  # generation-0 collections between generation-1 ones (CPython: 10)
CHECK = 1.0  # s between looks at the node
YOUNG_INTERVAL = 0.05  # s between the clock's young collections (generation 1 every 2nd)
# s without calls before the idle pass: the last calls' transactions have ended by then
# (they live 64·T1 = 32 s after their last message, RFC 3261 §17) and so has what they held.
IDLE_AFTER = 40.0
# SIP transactions an idle node may hold for its idle pass (a few thousand objects, a few
# ms to scan); the routers' OPTIONS probes alone keep a few dozen alive.
QUIET_TRANSACTIONS = 256
# s: a full collection at least this often — at the first moment without calls, or under
# calls once twice this long has passed.
MAX_INTERVAL = 3600.0


def _malloc_trim() -> Callable[[int], Any] | None:
    """glibc's ``malloc_trim``, or None (another C library, or none found)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


class CollectorPolicy:
    """Full collections only when the node is idle, or hourly (see the module doc)."""

    def __init__(
        self,
        active_calls: Callable[[], int],
        *,
        check: float = CHECK,
        idle_after: float = IDLE_AFTER,
        max_interval: float = MAX_INTERVAL,
        young_interval: float = YOUNG_INTERVAL,
        before_idle: Sequence[Callable[[], object]] = (),
        transactions: Callable[[], int] = lambda: 0,
    ) -> None:
        self.active_calls = active_calls
        self.transactions = transactions  # the node's live SIP transactions
        # Records the node keeps for a while after a call (pruned when the next call
        # comes), dropped before the idle pass once they are past their time: each one
        # left alive keeps a whole allocator arena of the load resident.
        self.before_idle = tuple(before_idle)
        self.check = check
        self.idle_after = idle_after
        self._idle_done = False  # this idle period's pass has run
        self.max_interval = max_interval
        self.collections = 0  # full collections this policy ran
        self.last_pause = 0.0  # seconds the last one took
        self._saved: tuple[int, int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.young_interval = young_interval  # 0: no young collections on the clock
        self._young_timer: asyncio.TimerHandle | None = None
        self._young_n = 0
        self.young_collections = 0  # young collections the clock ran
        self._last_full = 0.0
        self._idle_since: float | None = None
        self.trims = 0  # times free heap pages were given back (idle collections)
        self.last_trim = 0.0  # seconds the last one took (in a worker thread)
        self._trimming = False
        self._trim = _malloc_trim()

    def start(self) -> None:
        """Take over full collections (call from the running loop; ``stop`` gives them back)."""
        if self._saved is not None:
            return
        self._loop = asyncio.get_running_loop()
        t0, t1, t2 = gc.get_threshold()
        self._saved = (t0, t1, t2)
        gc.set_threshold(t0, YOUNG_COLLECTIONS, FULL_NEVER)
        self._last_full = self._loop.time()
        self._timer = self._loop.call_later(self.check, self._tick)
        if self.young_interval > 0:
            self._young_timer = self._loop.call_later(self.young_interval, self._young)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._young_timer is not None:
            self._young_timer.cancel()
            self._young_timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        calls = self.active_calls()
        if calls > 0:
            self._idle_since = None
            self._idle_done = False
        elif self._idle_since is None:
            self._idle_since = now
        idle_for = now - self._idle_since if self._idle_since is not None else -1.0
        since = now - self._last_full
        if (
            idle_for >= self.idle_after
            and not self._idle_done
            and self.transactions() <= QUIET_TRANSACTIONS
        ):
            self._idle_done = True
            for expire in self.before_idle:
                try:
                    expire()
                except Exception:  # a housekeeping bug must not stop the collections
                    log.exception("expiring records before the idle collection")
            self.collect()
            self._give_back()
        elif since >= self.max_interval and (calls == 0 or since >= 2 * self.max_interval):
            self.collect()
        self._timer = loop.call_later(self.check, self._tick)

    def _young(self) -> None:
        # generation 0 each time, 0 and 1 every second time (as the threshold's 2 would)
        assert self._loop is not None
        self._young_n += 1
        gc.collect(1 if self._young_n % YOUNG_COLLECTIONS == 0 else 0)
        self.young_collections += 1
        self._young_timer = self._loop.call_later(self.young_interval, self._young)

    def _give_back(self) -> None:
        # In a worker thread: the trim walks the C heap (25 ms for a 70 MB fragmented
        # one on this machine, in a test process; a node's loop ran 48 ms in one stall
        # after a load, 6 ms of it the collection), and ctypes lets go of the
        # interpreter lock while it runs.
        if self._trim is None or self._trimming or self._loop is None:
            return
        self._trimming = True
        done = self._loop.run_in_executor(None, self._timed_trim)
        done.add_done_callback(self._trimmed)

    def _timed_trim(self) -> float:
        assert self._trim is not None
        t0 = time.perf_counter()
        self._trim(0)
        return time.perf_counter() - t0

    def _trimmed(self, done: Any) -> None:
        self._trimming = False
        if done.cancelled() or done.exception() is not None:
            log.warning("malloc_trim failed: %r", None if done.cancelled() else done.exception())
            return
        self.last_trim = done.result()
        self.trims += 1
        log.debug("free heap pages given back in %.1f ms", self.last_trim * 1e3)

    def collect(self) -> int:
        """Run a full collection now; returns the number of unreachable objects found."""
        t0 = time.perf_counter()
        found = gc.collect()
        self.last_pause = time.perf_counter() - t0
        self.collections += 1
        if self._loop is not None:
            self._last_full = self._loop.time()
        log.debug(
            "full collection: %d unreachable object(s) in %.1f ms", found, self.last_pause * 1e3
        )
        return found
