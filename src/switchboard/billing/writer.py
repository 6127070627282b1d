"""The CDR writer a media node uses: ``submit()`` never blocks call handling.

Theory of operation:

* ``submit(cdr)`` is synchronous and O(1): it appends to an in-memory queue and wakes the
  writer task. Call it from the event loop's thread.
* The writer task collects up to ``batch_size`` CDRs or waits ``flush_interval`` seconds,
  then stores the batch with :func:`switchboard.billing.ingest.write_batch` (COPY + dedupe,
  priced by the database trigger).
* If the database is unreachable (connection refused, server shut down, timeout), the batch
  is appended to the local :class:`~switchboard.billing.spool.Spool` and the writer retries
  every ``retry_interval`` seconds. While the spool holds anything, new batches go to the
  end of the spool too, so the database receives CDRs in submission order. When the database
  is back the spool is replayed from its offset in batches; ingest is idempotent on call_id,
  so nothing is lost and nothing is stored twice.
* A batch the database refuses for its content (not connectivity) is retried row by row;
  rows still refused go to ``cdr-rejected.jsonl`` next to the spool and are counted, so one
  bad record never blocks the others.
* Under a backlog, up to ``connections`` full batches are written at once, each on its own
  connection, so the database works on them in parallel (ingest is idempotent and the
  rows' order in the table carries no meaning); spool replay is sequential, in order.
* ``close()`` drains: everything submitted is in the database or the spool on return.

Spool file IO runs in a worker thread so an fsync never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from switchboard.billing import metrics
from switchboard.billing.cdr import Cdr
from switchboard.billing.database import PARTITION_MONTHS_AHEAD, PARTITION_MONTHS_BACK
from switchboard.billing.ingest import write_batch
from switchboard.billing.spool import FsyncPolicy, Spool

log = logging.getLogger(__name__)

PARTITION_CHECK = 6 * 3600.0  # seconds between checks that next months' partitions exist

# psycopg errors that mean "the database is not there right now", not "this data is bad".
UNREACHABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)


class CdrWriter:
    """Batched, idempotent, spooling CDR writer (see the module docstring)."""

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
        connect_timeout: float = 3.0,
        fsync: FsyncPolicy = "batch",
        connections: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.spool = Spool(spool_dir, fsync)
        self.reject_path = spool_dir / "cdr-rejected.jsonl"
        self.written = 0
        self.duplicates = 0
        self.rejected = 0
        self._pending: deque[tuple[Cdr, float]] = deque()
        self._wake = asyncio.Event()
        # Under a backlog, up to this many full batches are written at once on their own
        # connections (ingest is idempotent and order-free); spool replay stays sequential.
        self._conns: list[psycopg.AsyncConnection | None] = [None] * max(1, connections)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._partitions_checked: float | None = None
        self._spool_since: float | None = None
        self._update_spool_metrics()

    # -- public API ----------------------------------------------------------------------
    def submit(self, cdr: Cdr) -> None:
        """Queue one CDR for storage. O(1), never blocks, never raises on DB trouble."""
        self._pending.append((cdr, self.clock()))
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        """Start the background task (replays a spool left by an earlier run)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cdr-writer")
            if self.spool:
                self._idle.clear()
                self._wake.set()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every CDR submitted so far is in the database (not merely spooled)."""
        self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop: store what is queued, spool what cannot be stored, close the connection."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._pending:  # the database never answered in time: keep them on disk
            batch = [c for c, _ in self._pending]
            self._pending.clear()
            await asyncio.to_thread(self.spool.append, batch)
            self._update_spool_metrics()
        for slot in range(len(self._conns)):
            await self._drop_connection(slot)

    @property
    def queued(self) -> int:
        """CDRs in memory, not yet stored or spooled."""
        return len(self._pending)

    @property
    def database_up(self) -> bool:
        return any(c is not None and not c.closed for c in self._conns)

    # -- the task ------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._pending and not self.spool:
                self._idle.set()
                self._update_lag()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            batch = self._take()
            if self.spool:
                if batch:
                    await asyncio.to_thread(self.spool.append, batch)
                    self._update_spool_metrics()
                if not await self._replay() and not self._closing:
                    await self._pause()
                elif self._closing and not self.database_up:
                    # Shutting down with the database away: everything is on disk now.
                    await asyncio.to_thread(self.spool.append, self._take(len(self._pending)))
                    self._update_spool_metrics()
                    return
                continue
            batches = [batch]
            while len(batches) < len(self._conns) and len(self._pending) >= self.batch_size:
                batches.append(self._take())
            stored = await asyncio.gather(*(self._store(b, slot) for slot, b in enumerate(batches)))
            failed = [c for b, ok in zip(batches, stored, strict=True) if not ok for c in b]
            if failed:
                await asyncio.to_thread(self.spool.append, failed)
                self._update_spool_metrics()
                log.warning(
                    "CDR database unreachable: %d CDRs spooled to %s", len(failed), self.spool.path
                )
                if not self._closing:
                    await self._pause()

    async def _gather(self) -> None:
        """Wait for a full batch or the flush interval, whichever comes first."""
        if self._closing or len(self._pending) >= self.batch_size or not self._pending:
            return
        deadline = self.clock() + self.flush_interval
        while len(self._pending) < self.batch_size and not self._closing:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _take(self, limit: int | None = None) -> list[Cdr]:
        n = min(len(self._pending), limit or self.batch_size)
        return [self._pending.popleft()[0] for _ in range(n)]

    async def _pause(self) -> None:
        """Back off before the next attempt; a close() request cuts the wait short."""
        self._update_lag()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.retry_interval)

    async def _connection(self, slot: int = 0) -> psycopg.AsyncConnection:
        conn = self._conns[slot]
        if conn is None or conn.closed:
            conn = self._conns[slot] = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
            metrics.DB_UP.set(1)
            log.info("CDR writer connected to the database")
            if slot == 0:
                self._partitions_checked = None
        now = self.clock()
        if slot == 0 and (
            self._partitions_checked is None or now - self._partitions_checked > PARTITION_CHECK
        ):
            # Monthly partitions ahead of time, also for processes that run for months.
            self._partitions_checked = now
            try:
                await conn.execute(
                    "SELECT cdr_ensure_partitions(%s, %s)",
                    (PARTITION_MONTHS_BACK, PARTITION_MONTHS_AHEAD),
                )
            except psycopg.OperationalError:
                raise  # the connection is gone: the caller spools
            except psycopg.Error as exc:  # e.g. schema not migrated yet: CDRs still go in
                log.warning("CDR partitions not checked: %s", exc)
        return conn

    async def _drop_connection(self, slot: int = 0) -> None:
        metrics.DB_UP.set(0)
        conn, self._conns[slot] = self._conns[slot], None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _store(self, batch: Sequence[Cdr], slot: int = 0) -> bool:
        """Write one batch; False when the database is unreachable (nothing was stored)."""
        if not batch:
            return True
        try:
            conn = await self._connection(slot)
            result = await asyncio.wait_for(write_batch(conn, batch), self.connect_timeout * 10)
        except UNREACHABLE as exc:
            log.debug("CDR batch not stored: %s", exc)
            await self._drop_connection(slot)
            return False
        except psycopg.Error as exc:
            log.error("CDR batch refused (%s); retrying row by row", exc)
            return await self._store_one_by_one(batch, slot)
        self._count(result.inserted, result.duplicates)
        return True

    async def _store_one_by_one(self, batch: Sequence[Cdr], slot: int = 0) -> bool:
        for cdr in batch:
            try:
                conn = await self._connection(slot)
                result = await write_batch(conn, [cdr])
            except UNREACHABLE:
                await self._drop_connection(slot)
                return False  # whole batch goes to the spool; stored rows dedupe on replay
            except psycopg.Error as exc:
                log.error("CDR %s rejected by the database: %s", cdr.call_id, exc)
                await asyncio.to_thread(self._reject, cdr, str(exc))
                continue
            self._count(result.inserted, result.duplicates)
        return True

    def _reject(self, cdr: Cdr, reason: str) -> None:
        record = {**json.loads(cdr.to_json()), "_error": reason[:500]}
        with self.reject_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.rejected += 1
        metrics.CDR_REJECTED.inc()

    def _count(self, inserted: int, duplicates: int) -> None:
        self.written += inserted
        self.duplicates += duplicates
        metrics.CDR_WRITTEN.inc(inserted)
        if duplicates:
            metrics.CDR_DUPLICATES.inc(duplicates)

    async def _replay(self) -> bool:
        """Send the spool to the database in order; False if it became unreachable."""
        while self.spool:
            batch, offset = await asyncio.to_thread(self.spool.read, self.batch_size)
            if not await self._store(batch):
                return False
            await asyncio.to_thread(self.spool.commit, offset, len(batch))
            self._update_spool_metrics()
            log.info("replayed %d spooled CDRs (%d left)", len(batch), self.spool.records)
        return True

    def _update_spool_metrics(self) -> None:
        metrics.CDR_SPOOL_BYTES.set(self.spool.size)
        metrics.CDR_SPOOL_RECORDS.set(self.spool.records)
        if not self.spool:
            self._spool_since = None
        elif self._spool_since is None:
            self._spool_since = self.clock()
        self._update_lag()

    def _update_lag(self) -> None:
        """Age of the oldest CDR not in the database: spooled ones first, then queued."""
        oldest = [t for t in (self._spool_since,) if t is not None]
        if self._pending:
            oldest.append(self._pending[0][1])
        metrics.CDR_WRITE_LAG.set(max(0.0, self.clock() - min(oldest)) if oldest else 0.0)
