"""Ported numbers in PostgreSQL: bulk CSV import, and the cached asynchronous lookup media
nodes make at call setup (docs/compliance.md, "Number portability").

Import follows ``rates import``: the whole file is parsed and checked first (every bad line
reported), then written with COPY into a staging table and merged in one transaction; a
number already stored gets the new routing number; ``replace=True`` empties the table
first (a full refresh from the national database).

:class:`PortabilityLookup` never blocks the event loop: the query is an ``await`` on the
asynchronous pool credit control uses, bounded by ``timeout``; answers (ported or not) are
cached for ``ttl`` seconds in a bounded LRU, and concurrent lookups of one number share a
single query. A lookup the database cannot answer in time is **not** an error for the call:
the call is routed and rated on its dialled number (portability fails open, unlike credit
control), the failure is counted and logged.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from switchboard.rating.portability import canonical, parse_ported

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PortedImport:
    rows: int  # rows in the file
    total: int  # ported numbers stored after the import


def import_ported(
    conn: psycopg.Connection, lines: Iterable[str], *, replace: bool = False
) -> PortedImport:
    """Import a CSV of ported numbers; raises DeckError (nothing changed) on any bad line."""
    rows = parse_ported(lines)
    staged = io.StringIO()
    for r in rows:
        description = r.description.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", " ")
        staged.write(f"{r.number}\t{r.routing_number}\t{description}\n")
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE ported_stage (number text, routing_number text, description text)"
            " ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY ported_stage FROM STDIN") as copy:
            copy.write(staged.getvalue())
        if replace:
            conn.execute("DELETE FROM ported_number")
        conn.execute(
            "INSERT INTO ported_number (number, routing_number, description)"
            " SELECT number, routing_number, description FROM ported_stage"
            " ON CONFLICT (number) DO UPDATE SET routing_number = EXCLUDED.routing_number,"
            " description = EXCLUDED.description, updated_at = now()"
            " WHERE (ported_number.routing_number, ported_number.description)"
            "  IS DISTINCT FROM (EXCLUDED.routing_number, EXCLUDED.description)"
        )
        conn.execute("ANALYZE ported_number")
        row = conn.execute("SELECT count(*) FROM ported_number").fetchone()
    return PortedImport(len(rows), int(row[0]) if row else 0)


def lookup_sync(conn: psycopg.Connection, number: str) -> str | None:
    """The routing number of ``number`` (any visual form), None if it is not ported."""
    digits = canonical(number)
    if digits is None:
        return None
    row = conn.execute(
        "SELECT routing_number FROM ported_number WHERE number = %s", (digits,)
    ).fetchone()
    return str(row[0]) if row else None


class PortabilityLookup:
    """Cached asynchronous lookups (module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        ttl: float = 300.0,
        timeout: float = 0.5,
        cache_size: int = 100_000,
    ) -> None:
        self.pool = pool
        self.ttl = ttl
        self.timeout = timeout
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self.queries = 0
        self.hits = 0
        self.failures = 0

    async def routing_number(self, digits: str) -> str | None:
        """The routing number of a canonical number (digits), None if not ported or if the
        database could not answer within ``timeout``."""
        now = time.monotonic()
        cached = self._cache.get(digits)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(digits)
            self.hits += 1
            return cached[1]
        pending = self._pending.get(digits)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[digits] = future
        result: str | None = None
        try:
            result = await asyncio.wait_for(self._query(digits), self.timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.failures += 1
            log.warning("portability lookup of %s failed, routed as dialled: %s", digits, exc)
        else:
            self._cache[digits] = (time.monotonic() + self.ttl, result)
            self._cache.move_to_end(digits)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        finally:
            self._pending.pop(digits, None)
            if not future.done():  # also when cancelled (the caller hung up): waiters go on
                future.set_result(result)
        return result

    async def _query(self, digits: str) -> str | None:
        self.queries += 1
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT routing_number FROM ported_number WHERE number = %s", (digits,)
            )
            row = await cur.fetchone()
        return str(row[0]) if row else None
