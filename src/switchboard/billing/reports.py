"""Traffic KPIs and CDR listings (``switchboard report``, ``switchboard cdr list``).

Definitions (ITU-T E.411 / RFC 6076; docs/metrics.md):

* seizures: every CDR (each carries a final outcome);
* ASR = answered / seizures × 100 (ITU-T E.411), answered = the call has an answer time;
* NER = (answered + user busy + no answer + terminal rejects) / seizures × 100: the final
  SIP codes 480, 486, 487, 600, 603 or dispositions BUSY / NO ANSWER count as the network
  having done its job;
* ACD = Σ billsec / answered, in seconds;
* PDD = mean ``pdd_ms`` (INVITE → first 18x, RFC 6076 Session Request Delay);
* minutes = Σ billsec / 60; cost = Σ buy cost (carriers); revenue = Σ sell cost
  (accounts); margin = revenue − cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

GroupBy = Literal["carrier", "destination", "account", "trunk", "period", "total"]
GROUPS: dict[str, str] = {
    "carrier": "coalesce(ca.name, '-')",
    # the trunk the call came in on (inbound legs; a bridge's B-leg has none: '-')
    "trunk": "coalesce(c.trunk, '-')",
    "destination": "coalesce(c.sell_prefix, 'unmatched')",
    "account": "coalesce(a.name, '-')",
    "total": "'total'",
}
NER_CODES = (480, 486, 487, 600, 603)


@dataclass(frozen=True, slots=True)
class KpiRow:
    key: str
    seizures: int
    answered: int
    asr: float | None
    ner: float | None
    acd: float | None
    pdd_ms: float | None
    minutes: Decimal
    cost: Decimal
    revenue: Decimal
    margin: Decimal
    unmatched: int

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Decimal) else v)
            for k, v in ((name, getattr(self, name)) for name in self.__dataclass_fields__)
        }


def report(
    conn: psycopg.Connection,
    by: GroupBy = "total",
    since: datetime | None = None,
    until: datetime | None = None,
    period: Literal["hour", "day", "month"] = "day",
) -> list[KpiRow]:
    """KPIs grouped ``by`` carrier, destination (matched prefix), account, trunk or period."""
    key: sql.Composable
    if by == "period":
        if period not in ("hour", "day", "month"):
            raise ValueError(f"period must be hour, day or month, got {period!r}")
        key = sql.SQL("to_char(date_trunc({}, c.start_time AT TIME ZONE 'UTC'), {})").format(
            sql.Literal(period),
            sql.Literal(
                {"hour": "YYYY-MM-DD HH24:00", "day": "YYYY-MM-DD", "month": "YYYY-MM"}[period]
            ),
        )
    elif by in GROUPS:
        key = sql.SQL(GROUPS[by])  # fixed strings from GROUPS, never user input
    else:
        raise ValueError(
            "report --by must be one of carrier, destination, account, trunk, period, total"
        )
    query = sql.SQL(
        """
        SELECT {key} AS key,
               count(*) AS seizures,
               count(*) FILTER (WHERE c.answer_time IS NOT NULL) AS answered,
               count(*) FILTER (WHERE c.answer_time IS NOT NULL
                                   OR c.sip_code = ANY(%(ner)s)
                                   OR c.disposition IN ('BUSY', 'NO ANSWER')) AS effective,
               sum(c.billsec) FILTER (WHERE c.answer_time IS NOT NULL) AS billsec,
               avg(c.pdd_ms) AS pdd_ms,
               coalesce(sum(c.buy_cost), 0) AS cost,
               coalesce(sum(c.cost), 0) AS revenue,
               count(*) FILTER (WHERE c.rating_status = 'unmatched') AS unmatched
        FROM cdr c
        LEFT JOIN carrier ca ON ca.id = c.carrier_id
        LEFT JOIN account a ON a.id = c.account_id
        WHERE (%(since)s::timestamptz IS NULL OR c.start_time >= %(since)s)
          AND (%(until)s::timestamptz IS NULL OR c.start_time < %(until)s)
        GROUP BY 1 ORDER BY 1
        """
    ).format(key=key)
    rows = conn.cursor(row_factory=dict_row).execute(
        query, {"since": since, "until": until, "ner": list(NER_CODES)}
    )
    out = []
    for r in rows.fetchall():
        seizures, answered = int(r["seizures"]), int(r["answered"])
        billsec = int(r["billsec"] or 0)
        cost, revenue = Decimal(r["cost"]), Decimal(r["revenue"])
        out.append(
            KpiRow(
                key=str(r["key"]),
                seizures=seizures,
                answered=answered,
                asr=round(100 * answered / seizures, 2) if seizures else None,
                ner=round(100 * int(r["effective"]) / seizures, 2) if seizures else None,
                acd=round(billsec / answered, 1) if answered else None,
                pdd_ms=round(float(r["pdd_ms"]), 1) if r["pdd_ms"] is not None else None,
                minutes=(Decimal(billsec) / 60).quantize(Decimal("0.01")),
                cost=cost,
                revenue=revenue,
                margin=revenue - cost,
                unmatched=int(r["unmatched"]),
            )
        )
    return out


CDR_LIST_COLUMNS = (
    "call_id",
    "sip_call_id",
    "start_time",
    "caller_id",
    "destination",
    "disposition",
    "sip_code",
    "hangup_cause",
    "duration",
    "billsec",
    "pdd_ms",
    "account",
    "carrier",
    "rate",
    "cost",
    "buy_cost",
    "rating_status",
    "originating_leg",
    "trunk",
)


def list_cdrs(
    conn: psycopg.Connection,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest CDRs first (``switchboard cdr list``)."""
    rows = conn.cursor(row_factory=dict_row).execute(
        "SELECT c.call_id, c.sip_call_id, c.start_time, c.caller_id, c.destination, c.disposition, c.sip_code,"
        " c.hangup_cause, c.duration, c.billsec, c.pdd_ms, a.name AS account,"
        " ca.name AS carrier, c.rate, c.cost, c.buy_cost, c.rating_status,"
        " coalesce(c.originating_leg, '') AS originating_leg, coalesce(c.trunk, '') AS trunk,"
        " c.emergency, coalesce(c.verstat, '') AS verstat,"
        " coalesce(c.attestation, '') AS attestation"
        " FROM cdr c LEFT JOIN account a ON a.id = c.account_id"
        " LEFT JOIN carrier ca ON ca.id = c.carrier_id"
        " WHERE (%(since)s::timestamptz IS NULL OR c.start_time >= %(since)s)"
        "   AND (%(until)s::timestamptz IS NULL OR c.start_time < %(until)s)"
        " ORDER BY c.start_time DESC, c.call_id LIMIT %(limit)s",
        {"since": since, "until": until, "limit": limit},
    )
    return list(rows.fetchall())
