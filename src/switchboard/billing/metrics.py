"""Billing metrics (Prometheus, default registry; names listed in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CDR_SPOOL_BYTES = Gauge(
    "switchboard_cdr_spool_bytes", "Bytes of CDRs waiting in the local spool for the database"
)
CDR_SPOOL_RECORDS = Gauge(
    "switchboard_cdr_spool_records", "CDRs waiting in the local spool for the database"
)
CDR_WRITTEN = Counter("switchboard_cdr_written", "CDRs stored in the database")
CDR_DUPLICATES = Counter(
    "switchboard_cdr_duplicates", "CDRs dropped because their call_id was already stored"
)
CDR_REJECTED = Counter(
    "switchboard_cdr_rejected", "CDRs the database refused (bad values); kept in the reject file"
)
CDR_WRITE_LAG = Gauge(
    "switchboard_cdr_write_lag_seconds",
    "Age of the oldest CDR submitted but not yet stored in the database",
)
DB_UP = Gauge("switchboard_cdr_database_up", "1 when the CDR writer can reach the database")

AUTH_SECONDS = Histogram(
    "switchboard_credit_authorisation_seconds",
    "Credit authorisation latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AUTHORISATIONS = Counter(
    "switchboard_credit_authorisations", "Credit authorisations by result", ["result"]
)
LOW_BALANCE = Counter(
    "switchboard_low_balance_events", "Accounts whose balance fell below their low-balance mark"
)
SWEPT = Counter(
    "switchboard_credit_reservations_swept",
    "Reservations left open past their expiry (their settlement was lost), by what the"
    " sweep did: settled from the call's CDR, or expired (released, nothing debited)",
    ["outcome"],
)
