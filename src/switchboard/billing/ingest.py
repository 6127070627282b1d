"""Idempotent batched CDR ingest: COPY into a staging table, then insert what is new.

Per batch, in one transaction (billing-dialer-monitoring.md §4.4, §4.7):

1. ``COPY cdr_stage FROM STDIN`` (a temporary table emptied at commit);
2. carriers named by the batch that the database does not know yet are created, so the CDR
   can reference them;
3. ``INSERT INTO cdr_seen ... ON CONFLICT DO NOTHING RETURNING call_id`` keeps only call_ids
   never stored before; ``DISTINCT ON (call_id)`` also drops duplicates inside the batch;
4. those rows go into ``cdr``; its BEFORE INSERT trigger prices each one.

``cdr_seen`` is not partitioned, so its primary key is call_id alone: a CDR re-sent with a
different start_time is still recognised (a unique key on the partitioned ``cdr`` would have
to include start_time). A crash between commit and the caller noting success only means
the batch is sent again and dropped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from switchboard.billing.cdr import Cdr

STAGE_COLUMNS = (
    "seq",
    "call_id",
    "caller_id",
    "destination",
    "start_time",
    "answer_time",
    "end_time",
    "duration",
    "billsec",
    "disposition",
    "sip_code",
    "hangup_cause",
    "pdd_ms",
    "account",
    "carrier",
    "direction",
    "codec",
    "node",
)

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS cdr_stage (
    seq integer, call_id text, caller_id text, destination text, start_time timestamptz,
    answer_time timestamptz, end_time timestamptz, duration integer, billsec integer,
    disposition text, sip_code smallint, hangup_cause text, pdd_ms integer, account text,
    carrier text, direction text, codec text, node text
) ON COMMIT DELETE ROWS
"""

COPY_STAGE = f"COPY cdr_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN"

NEW_CARRIERS = """
INSERT INTO carrier (name)
SELECT DISTINCT s.carrier FROM cdr_stage AS s
WHERE s.carrier <> '' AND NOT EXISTS (SELECT 1 FROM carrier AS c WHERE c.name = s.carrier)
ON CONFLICT (name) DO NOTHING
"""

INSERT_NEW = """
WITH fresh AS (
    INSERT INTO cdr_seen (call_id, start_time)
    SELECT DISTINCT ON (call_id) call_id, start_time FROM cdr_stage ORDER BY call_id, seq
    ON CONFLICT (call_id) DO NOTHING
    RETURNING call_id, start_time
)
INSERT INTO cdr (call_id, caller_id, destination, start_time, answer_time, end_time, duration,
                 billsec, disposition, carrier_id, sip_code, hangup_cause, pdd_ms, account_id,
                 direction, codec, node)
SELECT DISTINCT ON (s.call_id)
       s.call_id, s.caller_id, s.destination, s.start_time, s.answer_time, s.end_time,
       s.duration, s.billsec, s.disposition, c.id, s.sip_code, s.hangup_cause, s.pdd_ms, a.id,
       s.direction, s.codec, s.node
FROM cdr_stage AS s
JOIN fresh AS f ON f.call_id = s.call_id AND f.start_time = s.start_time
LEFT JOIN carrier AS c ON c.name = s.carrier AND s.carrier <> ''
LEFT JOIN account AS a ON a.name = s.account AND s.account <> ''
ORDER BY s.call_id, s.seq
"""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How many CDRs of a batch were stored, and how many were already there."""

    inserted: int
    duplicates: int


def _row(seq: int, c: Cdr) -> tuple[object, ...]:
    return (
        seq,
        c.call_id,
        c.caller_id,
        c.destination,
        c.start_time,
        c.answer_time,
        c.end_time,
        c.duration,
        c.billsec,
        c.disposition,
        c.sip_code,
        c.hangup_cause,
        c.pdd_ms,
        c.account,
        c.carrier,
        c.direction,
        c.codec,
        c.node,
    )


async def write_batch(conn: psycopg.AsyncConnection, cdrs: Sequence[Cdr]) -> BatchResult:
    """Store a batch of CDRs idempotently in one transaction (see the module docstring)."""
    if not cdrs:
        return BatchResult(0, 0)
    async with conn.transaction():
        await conn.execute(CREATE_STAGE)
        async with conn.cursor() as cur:
            async with cur.copy(COPY_STAGE) as copy:
                for seq, cdr in enumerate(cdrs):
                    await copy.write_row(_row(seq, cdr))
            await cur.execute(NEW_CARRIERS)
            await cur.execute(INSERT_NEW)
            inserted = cur.rowcount
    return BatchResult(inserted, len(cdrs) - inserted)


def write_batch_sync(conn: psycopg.Connection, cdrs: Sequence[Cdr]) -> BatchResult:
    """The same for synchronous callers (imports, tools)."""
    if not cdrs:
        return BatchResult(0, 0)
    with conn.transaction():
        conn.execute(CREATE_STAGE)
        with conn.cursor() as cur:
            with cur.copy(COPY_STAGE) as copy:
                for seq, cdr in enumerate(cdrs):
                    copy.write_row(_row(seq, cdr))
            cur.execute(NEW_CARRIERS)
            cur.execute(INSERT_NEW)
            inserted = cur.rowcount
    return BatchResult(inserted, len(cdrs) - inserted)
