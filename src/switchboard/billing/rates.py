"""Rate decks in the database: CSV import, re-rating, loading a deck into memory.

Import is all-or-nothing: the whole file is parsed and checked first (every bad line
reported with its number), then written with COPY into a staging table and merged in one
transaction. A row with the same deck, prefix and effective_from as a stored one replaces
it; other stored rows stay (effective-dated history). ``replace=True`` empties the target
decks first.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

from switchboard.rating import DeckRow, Increment, Rate, RateDeck, parse_deck

DEFAULT_DECK = "default"


class DeckImportError(ValueError):
    """The import cannot proceed (unknown account, wrong deck kind); nothing was written."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    rows: int
    decks: dict[str, int]  # deck name → rows written


def _deck_for(
    conn: psycopg.Connection,
    row: DeckRow,
    carrier: str | None,
    account: str | None,
    deck: str | None,
) -> str:
    owner_carrier = row.carrier or (None if row.account else carrier)
    owner_account = row.account or (None if row.carrier else account)
    if owner_carrier:
        from switchboard.billing.accounts import create_carrier

        create_carrier(conn, owner_carrier)
        found = conn.execute(
            "SELECT d.name FROM carrier c JOIN rate_deck d ON d.id = c.deck_id WHERE c.name = %s",
            (owner_carrier,),
        ).fetchone()
        assert found is not None
        return str(found[0])
    if owner_account:
        found = conn.execute(
            "SELECT a.id, d.name FROM account a LEFT JOIN rate_deck d ON d.id = a.deck_id"
            " WHERE a.name = %s",
            (owner_account,),
        ).fetchone()
        if found is None:
            raise DeckImportError(f"line {row.line}: no account named {owner_account!r}")
        if found[1] is not None:
            return str(found[1])
        name = f"account:{owner_account}"
        conn.execute(
            "INSERT INTO rate_deck (name, direction) VALUES (%s, 'sell') ON CONFLICT DO NOTHING",
            (name,),
        )
        conn.execute(
            "UPDATE account SET deck_id = (SELECT id FROM rate_deck WHERE name = %s) WHERE id = %s",
            (name, found[0]),
        )
        return name
    name = deck or DEFAULT_DECK
    conn.execute(
        "INSERT INTO rate_deck (name, direction) VALUES (%s, 'sell') ON CONFLICT DO NOTHING",
        (name,),
    )
    return name


def import_deck(
    conn: psycopg.Connection,
    lines: Iterable[str],
    *,
    carrier: str | None = None,
    account: str | None = None,
    deck: str | None = None,
    replace: bool = False,
) -> ImportResult:
    """Import a CSV deck (see module docstring). Raises DeckError / DeckImportError."""
    rows = parse_deck(lines)  # raises DeckError listing bad lines; nothing touched yet
    owners: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    with conn.transaction():
        staged = io.StringIO()
        for row in rows:
            key = (row.carrier or "", row.account or "")
            if key not in owners:
                owners[key] = _deck_for(conn, row, carrier, account, deck)
            deck_name = owners[key]
            counts[deck_name] = counts.get(deck_name, 0) + 1
            r = row.rate
            staged.write(
                "\t".join(
                    (
                        deck_name.replace("\\", "\\\\").replace("\t", "\\t"),
                        r.prefix,
                        str(r.rate),
                        str(r.connect_fee),
                        str(r.increment.initial),
                        str(r.increment.step),
                        str(r.min_duration),
                        r.effective_from.isoformat() if r.effective_from else "-infinity",
                        r.effective_to.isoformat() if r.effective_to else "\\N",
                        r.description.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", " "),
                    )
                )
                + "\n"
            )
        conn.execute(
            "CREATE TEMP TABLE rate_stage (deck text, prefix text, rate numeric,"
            " connect_fee numeric, increment_initial integer, increment integer,"
            " min_duration integer, effective_from timestamptz, effective_to timestamptz,"
            " description text) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY rate_stage FROM STDIN") as copy:
            copy.write(staged.getvalue())
        if replace:
            conn.execute(
                "DELETE FROM rate_table WHERE deck_id IN"
                " (SELECT d.id FROM rate_deck d WHERE d.name IN (SELECT DISTINCT deck FROM rate_stage))"
            )
        conn.execute(
            "INSERT INTO rate_table (deck_id, prefix, rate, connect_fee, increment_initial,"
            " increment, min_duration, effective_from, effective_to, description)"
            " SELECT d.id, s.prefix, s.rate, s.connect_fee, s.increment_initial, s.increment,"
            " s.min_duration, s.effective_from, s.effective_to, s.description"
            " FROM rate_stage s JOIN rate_deck d ON d.name = s.deck"
            " ON CONFLICT (deck_id, prefix, effective_from) DO UPDATE SET rate = EXCLUDED.rate,"
            " connect_fee = EXCLUDED.connect_fee, increment_initial = EXCLUDED.increment_initial,"
            " increment = EXCLUDED.increment, min_duration = EXCLUDED.min_duration,"
            " effective_to = EXCLUDED.effective_to, description = EXCLUDED.description"
        )
        # Fresh statistics: batch ingest picks its join strategy from the table's size.
        conn.execute("ANALYZE rate_table")
    return ImportResult(len(rows), counts)


@dataclass(frozen=True, slots=True)
class RerateResult:
    cdrs: int  # CDRs examined
    changed: int  # CDRs whose rate or cost changed
    adjustments: int  # balance adjustments written
    adjusted_amount: Decimal  # net amount credited back to accounts (negative: debited)


def rerate(
    conn: psycopg.Connection, since: datetime, until: datetime | None = None
) -> RerateResult:
    """Re-price CDRs started in ``[since, until)`` with the decks as they are now.

    Changed CDRs get a new ``rating_version``; for calls debited through credit control,
    the difference between what was charged and the new cost is written to the account
    ledger as a ``rerate`` transaction and applied to the balance (never a silent
    overwrite of money: every change of a balance is a ledger row).
    """
    with conn.transaction():
        (examined,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM cdr WHERE start_time >= %s AND (%s::timestamptz IS NULL"
            " OR start_time < %s)",
            (since, until, until),
        ).fetchone()
        changed = conn.execute(
            "WITH n AS (SELECT c.call_id, c.start_time, cdr_apply_rating(c) AS r FROM cdr c"
            "  WHERE c.start_time >= %s AND (%s::timestamptz IS NULL OR c.start_time < %s))"
            " UPDATE cdr AS c SET rate = (n.r).rate, cost = (n.r).cost,"
            "  cost_exact = (n.r).cost_exact, buy_rate = (n.r).buy_rate,"
            "  buy_cost = (n.r).buy_cost, buy_cost_exact = (n.r).buy_cost_exact,"
            "  billed_seconds = (n.r).billed_seconds, sell_prefix = (n.r).sell_prefix,"
            "  buy_prefix = (n.r).buy_prefix, rating_status = (n.r).rating_status,"
            "  rated_at = now(), rating_version = c.rating_version + 1"
            " FROM n WHERE c.call_id = n.call_id AND c.start_time = n.start_time"
            "  AND ((n.r).cost IS DISTINCT FROM c.cost OR (n.r).buy_cost IS DISTINCT FROM c.buy_cost"
            "   OR (n.r).rate IS DISTINCT FROM c.rate OR (n.r).buy_rate IS DISTINCT FROM c.buy_rate"
            "   OR (n.r).rating_status IS DISTINCT FROM c.rating_status)"
            " RETURNING c.call_id",
            (since, until, until),
        ).fetchall()
        ids = [r[0] for r in changed]
        adjustments = conn.execute(
            "WITH charged AS (SELECT t.account_id, t.call_id, -sum(t.amount) AS amount"
            "  FROM account_transaction t WHERE t.call_id = ANY(%s) AND t.kind IN ('call', 'rerate')"
            "  GROUP BY t.account_id, t.call_id),"
            " delta AS (SELECT ch.account_id, ch.call_id, ch.amount - coalesce(c.cost, 0) AS amount"
            "  FROM charged ch JOIN cdr c ON c.call_id = ch.call_id"
            "  WHERE ch.amount IS DISTINCT FROM coalesce(c.cost, 0)),"
            " ledger AS (INSERT INTO account_transaction (account_id, amount, kind, call_id, note)"
            "  SELECT account_id, amount, 'rerate', call_id, 'rate deck change' FROM delta"
            "  RETURNING account_id, amount),"
            " per AS (SELECT account_id, sum(amount) AS amount, count(*) AS n FROM ledger GROUP BY 1)"
            " UPDATE account a SET balance = a.balance + per.amount FROM per"
            " WHERE a.id = per.account_id RETURNING per.n, per.amount",
            (ids,),
        ).fetchall()
    return RerateResult(
        examined,
        len(ids),
        sum(int(n) for n, _ in adjustments),
        sum((Decimal(a) for _, a in adjustments), Decimal(0)),
    )


def load_deck(conn: psycopg.Connection, deck: str = DEFAULT_DECK) -> RateDeck:
    """Load a whole deck into memory for real-time rating (far faster than an SQL probe per
    call: ``bench/billing``)."""
    rows = conn.execute(
        "SELECT r.prefix, r.rate, r.connect_fee, r.increment_initial, r.increment,"
        " r.min_duration, nullif(r.effective_from, '-infinity'), r.effective_to, r.description"
        " FROM rate_table r JOIN rate_deck d ON d.id = r.deck_id WHERE d.name = %s",
        (deck,),
    ).fetchall()
    rates = []
    for prefix, rate, fee, initial, step, minimum, start, end, description in rows:
        rates.append(
            Rate(
                prefix,
                rate,
                fee,
                Increment(initial, step),
                minimum,
                start,
                end,
                description,
            )
        )
    return RateDeck(rates)


def list_rates(
    conn: psycopg.Connection, deck: str | None = None, prefix: str = "", limit: int = 1000
) -> list[dict[str, object]]:
    """Rates of one deck or of all, by deck and prefix (``rates list``); ``prefix`` keeps
    the rows whose prefix starts with it or that a number starting with it would match."""
    from psycopg.rows import dict_row

    return list(
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT d.name AS deck, d.direction, r.prefix, r.rate, r.connect_fee,"
            " r.increment_initial || '/' || r.increment AS increment, r.min_duration,"
            " nullif(r.effective_from, '-infinity') AS effective_from, r.effective_to,"
            " r.description FROM rate_table r JOIN rate_deck d ON d.id = r.deck_id"
            " WHERE (%(deck)s::text IS NULL OR d.name = %(deck)s)"
            "   AND (r.prefix LIKE %(like)s OR %(prefix)s LIKE r.prefix || '%%')"
            " ORDER BY d.name, r.prefix, r.effective_from LIMIT %(limit)s",
            {"deck": deck, "like": prefix + "%", "prefix": prefix, "limit": limit},
        )
        .fetchall()
    )
