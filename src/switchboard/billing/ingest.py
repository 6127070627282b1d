"""Idempotent batched CDR ingest: COPY into a staging table, then insert what is new.

Per batch, in one transaction (docs/billing.md, "CDR ingest"):

1. ``COPY cdr_stage FROM STDIN`` (a temporary table emptied at commit);
2. carriers named by the batch that the database does not know yet are created, so the CDR
   can reference them;
3. ``INSERT INTO cdr_seen ... ON CONFLICT DO NOTHING RETURNING call_id`` keeps only call_ids
   never stored before; ``DISTINCT ON (call_id)`` also drops duplicates inside the batch;
4. those rows go into ``cdr``, priced in the same statement: every prefix of every number
   is joined to the rate rows of the CDR's decks at once and the longest match per side
   kept, with the same SQL functions as the ``before_cdr_insert`` trigger (which prices
   any row inserted unpriced by other means, and which this statement's rows skip because
   they arrive with ``rated_at`` set). One set-based lookup per batch instead of two
   PL/pgSQL lookups per row is what lets ingest exceed 20,000 CDRs/s. A bridge's B-leg
   (``originating_leg`` set) gets no sell price, as in ``cdr_apply_rating``: the call's
   sell side is charged on its A-leg (migration 0003).

call_id is one call *leg* (a media node's channel uuid); the SIP Call-ID, which the legs of
a call through two media nodes share, is stored in ``sip_call_id`` and is not a key.
``cdr_seen`` is not partitioned, so its primary key is call_id alone: a CDR re-sent with a
different start_time is still recognised (a unique key on the partitioned ``cdr`` would have
to include start_time). A crash between commit and the caller noting success only means
the batch is sent again and dropped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
    "sip_call_id",
    "originating_leg",
    "trunk",
    "routing_number",
    "emergency",
    "verstat",
    "attestation",
)

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS cdr_stage (
    seq integer, call_id text COLLATE "C", caller_id text, destination text, start_time timestamptz,
    answer_time timestamptz, end_time timestamptz, duration integer, billsec integer,
    disposition text, sip_code smallint, hangup_cause text, pdd_ms integer, account text,
    carrier text, direction text, codec text, node text, sip_call_id text COLLATE "C",
    originating_leg text COLLATE "C", trunk text, routing_number text, emergency boolean,
    verstat text, attestation text
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
),
batch AS MATERIALIZED (
    SELECT DISTINCT ON (s.call_id) s.*, c.id AS carrier_id, c.deck_id AS buy_deck,
           a.id AS account_id, a.deck_id AS own_deck,
           (SELECT id FROM rate_deck WHERE name = 'default') AS default_deck,
           -- a ported number is priced by its routing number (cdr_apply_rating's rule)
           sb_number(coalesce(nullif(s.routing_number, ''), s.destination)) AS number,
           nullif(s.originating_leg, '') IS NOT NULL AS b_leg
    FROM cdr_stage AS s
    JOIN fresh AS f ON f.call_id = s.call_id AND f.start_time = s.start_time
    LEFT JOIN carrier AS c ON c.name = s.carrier AND s.carrier <> ''
    LEFT JOIN account AS a ON a.name = s.account AND s.account <> ''
    ORDER BY s.call_id, s.seq
),
-- Every (CDR, prefix of its number) pair joined to every rate row in one of its decks:
-- the longest-prefix match of the whole batch in one join (cdr_apply_rating's rules).
-- CDRs are keyed by their integer seq from here on: cheaper to hash and sort than call_id.
-- Only prefix lengths some deck has are tried (min/max length: one index probe each).
-- A bridge's B-leg (originating_leg set) has no sell side (its A-leg is charged): its
-- candidates see no sell deck, only its carrier's buy deck; with no carrier, none at all.
candidates AS MATERIALIZED (
    SELECT b.seq, b.start_time,
           CASE WHEN NOT b.b_leg THEN b.own_deck END AS own_deck,
           CASE WHEN NOT b.b_leg THEN b.default_deck END AS default_deck,
           b.buy_deck, left(b.number, n) AS prefix
    FROM batch AS b
    CROSS JOIN LATERAL generate_series(
        greatest((SELECT min(length(prefix)) FROM rate_table), 1),
        least(length(b.number), (SELECT max(length(prefix)) FROM rate_table), 16)) AS n
    WHERE b.number IS NOT NULL AND (NOT b.b_leg OR b.buy_deck IS NOT NULL)
),
matches AS MATERIALIZED (
    SELECT c.seq, r.prefix, r.rate, r.connect_fee, r.increment_initial,
           r.increment, r.min_duration, r.effective_from,
           coalesce(r.deck_id = c.buy_deck, false) AS is_buy,
           (r.deck_id IS DISTINCT FROM c.own_deck) AS is_fallback
    FROM candidates AS c
    JOIN rate_table AS r ON r.prefix = c.prefix
    WHERE r.deck_id IN (c.own_deck, c.default_deck, c.buy_deck)
      AND r.effective_from <= c.start_time
      AND (r.effective_to IS NULL OR r.effective_to > c.start_time)
),
sell AS (
    SELECT DISTINCT ON (seq) * FROM matches WHERE NOT is_buy
    ORDER BY seq, is_fallback, length(prefix) DESC, effective_from DESC
),
buy AS (
    SELECT DISTINCT ON (seq) * FROM matches WHERE is_buy
    ORDER BY seq, length(prefix) DESC, effective_from DESC
),
priced AS (
    SELECT b.*,
           sr.prefix AS s_prefix, sr.rate AS s_rate,
           CASE WHEN sr.prefix IS NOT NULL THEN sb_call_cost(sr.rate, sr.connect_fee,
               sb_billable_seconds(b.billsec, sr.increment_initial, sr.increment, sr.min_duration)
           ) END AS s_exact,
           sb_billable_seconds(b.billsec, sr.increment_initial, sr.increment, sr.min_duration)
               AS s_billed,
           br.prefix AS b_prefix, br.rate AS b_rate,
           CASE WHEN br.prefix IS NOT NULL THEN sb_call_cost(br.rate, br.connect_fee,
               sb_billable_seconds(b.billsec, br.increment_initial, br.increment, br.min_duration)
           ) END AS b_exact
    FROM batch AS b
    LEFT JOIN sell AS sr ON sr.seq = b.seq
    LEFT JOIN buy AS br ON br.seq = b.seq
)
INSERT INTO cdr (call_id, caller_id, destination, start_time, answer_time, end_time, duration,
                 billsec, disposition, carrier_id, sip_code, hangup_cause, pdd_ms, account_id,
                 direction, codec, node, rate, cost, cost_exact, billed_seconds, sell_prefix,
                 buy_rate, buy_cost, buy_cost_exact, buy_prefix, rating_status, rated_at,
                 sip_call_id, originating_leg, trunk, routing_number, emergency, verstat,
                 attestation)
SELECT p.call_id, p.caller_id, p.destination, p.start_time, p.answer_time, p.end_time,
       p.duration, p.billsec, p.disposition, p.carrier_id, p.sip_code, p.hangup_cause,
       p.pdd_ms, p.account_id, p.direction, p.codec, p.node,
       CASE WHEN p.number IS NULL THEN NULL ELSE p.s_rate END,
       CASE WHEN p.number IS NULL THEN 0 ELSE round(p.s_exact, 4) END,
       CASE WHEN p.number IS NULL THEN 0 ELSE p.s_exact END,
       CASE WHEN p.number IS NULL OR p.s_prefix IS NULL THEN 0 ELSE p.s_billed END,
       CASE WHEN p.number IS NULL THEN NULL ELSE p.s_prefix END,
       CASE WHEN p.number IS NULL THEN NULL ELSE p.b_rate END,
       CASE WHEN p.number IS NULL THEN 0 ELSE round(p.b_exact, 4) END,
       CASE WHEN p.number IS NULL THEN 0 ELSE p.b_exact END,
       CASE WHEN p.number IS NULL THEN NULL ELSE p.b_prefix END,
       CASE WHEN p.number IS NULL THEN 'internal'
            WHEN (p.s_prefix IS NULL AND NOT p.b_leg)
                 OR (p.carrier_id IS NOT NULL AND p.b_prefix IS NULL)
                THEN 'unmatched'
            ELSE 'rated' END,
       now(),
       p.sip_call_id,
       nullif(p.originating_leg, ''),
       nullif(p.trunk, ''),
       nullif(p.routing_number, ''),
       coalesce(p.emergency, false),
       nullif(p.verstat, ''),
       nullif(p.attestation, '')
FROM priced AS p
"""

# A hash join of the batch's candidate prefixes against rate_table reads the whole table
# once per batch; index probes cost one btree descent per candidate. The hash join wins
# (measured ~3x at 5,000 CDRs against 2 x 100,000 prefixes) while the table has fewer than
# about HASH_ROWS_PER_CDR rows per CDR in the batch; beyond that (many large decks) the
# planner's index probes are kept. Small batches always use the probes.
HASH_JOIN_MIN_CDRS = 500
HASH_ROWS_PER_CDR = 40
# ... and the hash and sorts of a 10,000-CDR batch (~70,000 candidate prefixes) must stay
# in memory: the default 4 MB work_mem spills them to disk.
LARGE_BATCH_SETTINGS = "SET LOCAL enable_nestloop = off; SET LOCAL work_mem = '64MB'"
RATE_TABLE_ROWS = "SELECT reltuples FROM pg_class WHERE oid = 'rate_table'::regclass"


def _use_hash_join(cdrs: int, rate_rows: float) -> bool:
    return cdrs >= HASH_JOIN_MIN_CDRS and rate_rows <= HASH_ROWS_PER_CDR * cdrs


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How many CDRs of a batch were stored, and how many were already there."""

    inserted: int
    duplicates: int


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    """A text field in COPY text format (PostgreSQL docs, COPY "Text Format")."""
    return value.translate(_ESCAPES) if value else ""


def _opt(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def copy_text(cdrs: Sequence[Cdr]) -> bytes:
    """The whole batch as COPY text in one buffer: ~5x faster than a write_row per CDR."""
    lines = []
    for seq, c in enumerate(cdrs):
        lines.append(
            "\t".join(
                (
                    str(seq),
                    _text(c.call_id),
                    _text(c.caller_id),
                    _text(c.destination),
                    c.start_time.isoformat(),
                    _opt(c.answer_time),
                    _opt(c.end_time),
                    str(int(c.duration)),
                    str(int(c.billsec)),
                    _text(c.disposition),
                    _opt(c.sip_code),
                    _text(c.hangup_cause),
                    _opt(c.pdd_ms),
                    _text(c.account),
                    _text(c.carrier),
                    _text(c.direction),
                    _text(c.codec),
                    _text(c.node),
                    _text(c.sip_call_id),
                    _text(c.originating_leg),
                    _text(c.trunk),
                    _text(c.routing_number),
                    "t" if c.emergency else "f",
                    _text(c.verstat),
                    _text(c.attestation),
                )
            )
        )
    lines.append("")
    return "\n".join(lines).encode()


async def write_batch(conn: psycopg.AsyncConnection, cdrs: Sequence[Cdr]) -> BatchResult:
    """Store a batch of CDRs idempotently in one transaction (see the module docstring)."""
    if not cdrs:
        return BatchResult(0, 0)
    async with conn.transaction():
        await conn.execute(CREATE_STAGE)
        async with conn.cursor() as cur:
            async with cur.copy(COPY_STAGE) as copy:
                await copy.write(copy_text(cdrs))
            await cur.execute(NEW_CARRIERS)
            if len(cdrs) >= HASH_JOIN_MIN_CDRS:
                await cur.execute(RATE_TABLE_ROWS)
                row = await cur.fetchone()
                if _use_hash_join(len(cdrs), float(row[0]) if row else 0.0):
                    await cur.execute(LARGE_BATCH_SETTINGS)
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
                copy.write(copy_text(cdrs))
            cur.execute(NEW_CARRIERS)
            if len(cdrs) >= HASH_JOIN_MIN_CDRS:
                row = cur.execute(RATE_TABLE_ROWS).fetchone()
                if _use_hash_join(len(cdrs), float(row[0]) if row else 0.0):
                    cur.execute(LARGE_BATCH_SETTINGS)
            cur.execute(INSERT_NEW)
            inserted = cur.rowcount
    return BatchResult(inserted, len(cdrs) - inserted)
