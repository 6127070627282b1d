"""Monthly invoices per account: a CSV and a readable HTML page, totals by destination.

An invoice is a pure function of the CDRs of the month (UTC): no generation timestamp,
lines in a fixed order, the invoice number derived from month and account, so re-running
``switchboard invoice --month 2026-01`` produces byte-identical files. Unanswered calls
cost nothing and are not listed; CDRs no sell rate matched are counted on the invoice as
"unrated" so they are not silently lost from the bill.
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg


class InvoiceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    prefix: str
    description: str
    calls: int
    minutes: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Invoice:
    number: str
    account: str
    currency: str
    month: str
    lines: list[InvoiceLine]
    total: Decimal
    unrated_calls: int
    csv_path: Path | None = None
    html_path: Path | None = None


def month_bounds(month: str) -> tuple[datetime, datetime]:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise InvoiceError(f"--month must be YYYY-MM, got {month!r}")
    year, mon = int(month[:4]), int(month[5:])
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


def build_invoices(conn: psycopg.Connection, month: str) -> list[Invoice]:
    """Invoices of every account with calls in ``month``."""
    start, end = month_bounds(month)
    accounts = conn.execute(
        "SELECT DISTINCT a.id, a.name, a.currency FROM cdr c JOIN account a ON a.id = c.account_id"
        " WHERE c.start_time >= %s AND c.start_time < %s ORDER BY a.name",
        (start, end),
    ).fetchall()
    invoices = []
    for account_id, name, currency in accounts:
        rows = conn.execute(
            "SELECT c.sell_prefix, count(*), sum(c.billed_seconds), sum(c.cost),"
            " (SELECT r.description FROM rate_table r WHERE r.prefix = c.sell_prefix"
            "   AND r.description <> '' ORDER BY r.deck_id, r.effective_from DESC LIMIT 1)"
            " FROM cdr c WHERE c.account_id = %s AND c.start_time >= %s AND c.start_time < %s"
            " AND c.cost > 0 GROUP BY c.sell_prefix ORDER BY c.sell_prefix",
            (account_id, start, end),
        ).fetchall()
        lines = [
            InvoiceLine(
                prefix or "",
                description or "",
                int(calls),
                (Decimal(seconds or 0) / 60).quantize(Decimal("0.01")),
                Decimal(amount),
            )
            for prefix, calls, seconds, amount, description in rows
        ]
        (unrated,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM cdr WHERE account_id = %s AND start_time >= %s"
            " AND start_time < %s AND rating_status = 'unmatched' AND billsec > 0",
            (account_id, start, end),
        ).fetchone()
        total = sum((line.amount for line in lines), Decimal("0.0000"))
        number = f"INV-{month.replace('-', '')}-{account_id:06d}"
        invoices.append(Invoice(number, name, currency, month, lines, total, int(unrated)))
    return invoices


def render_csv(inv: Invoice) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["invoice", inv.number])
    w.writerow(["account", inv.account])
    w.writerow(["period", inv.month])
    w.writerow(["currency", inv.currency])
    w.writerow([])
    w.writerow(["prefix", "destination", "calls", "minutes", "amount"])
    for line in inv.lines:
        w.writerow([line.prefix, line.description, line.calls, line.minutes, line.amount])
    w.writerow([])
    w.writerow(["total", "", sum(line.calls for line in inv.lines), "", inv.total])
    if inv.unrated_calls:
        w.writerow(["unrated calls (no rate matched)", "", inv.unrated_calls, "", ""])
    return buf.getvalue()


def render_html(inv: Invoice) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(line.prefix)}</td><td>{e(line.description)}</td>"
        f'<td class="n">{line.calls}</td><td class="n">{line.minutes}</td>'
        f'<td class="n">{line.amount}</td></tr>'
        for line in inv.lines
    )
    unrated = (
        f'<p class="warn">{inv.unrated_calls} answered call(s) had no rate and are not billed'
        " here; they are flagged for review.</p>"
        if inv.unrated_calls
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Invoice {e(inv.number)} — {e(inv.account)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; min-width: 40em; }}
th, td {{ border-bottom: 1px solid #ccc; padding: .3em .8em; text-align: left; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tfoot td {{ font-weight: bold; border-top: 2px solid #222; }}
.warn {{ color: #a40; }}
</style></head>
<body>
<h1>Invoice {e(inv.number)}</h1>
<p>Account <strong>{e(inv.account)}</strong> · period {e(inv.month)} · currency {e(inv.currency)}</p>
<table>
<thead><tr><th>Prefix</th><th>Destination</th><th class="n">Calls</th><th class="n">Minutes</th><th class="n">Amount</th></tr></thead>
<tbody>
{rows}
</tbody>
<tfoot><tr><td colspan="2">Total</td><td class="n">{sum(line.calls for line in inv.lines)}</td><td></td><td class="n">{inv.total} {e(inv.currency)}</td></tr></tfoot>
</table>
{unrated}
</body></html>
"""


def write_invoices(conn: psycopg.Connection, month: str, out_dir: Path) -> list[Invoice]:
    """Write ``out_dir/YYYY-MM/<account>.csv`` and ``.html`` for every invoiced account."""
    invoices = build_invoices(conn, month)
    target = out_dir / month
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for inv in invoices:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", inv.account)
        csv_path, html_path = target / f"{safe}.csv", target / f"{safe}.html"
        csv_path.write_text(render_csv(inv))
        html_path.write_text(render_html(inv))
        written.append(
            Invoice(
                inv.number,
                inv.account,
                inv.currency,
                inv.month,
                inv.lines,
                inv.total,
                inv.unrated_calls,
                csv_path,
                html_path,
            )
        )
    return written
