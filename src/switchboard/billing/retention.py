"""CDR retention: monthly partitions archived to compressed CSV, restored, exported.

``switchboard cdr archive`` (docs/billing.md, "CDR retention and archives") takes every
monthly ``cdr_YYYY_MM`` partition whose month ended more than ``[billing]
retention_months`` months ago and, one partition at a time:

1. detaches it from ``cdr`` (a short transaction; CDRs of that month arriving later land
   in ``cdr_default`` and are folded back in by a restore),
2. writes it with ``COPY ... TO STDOUT (FORMAT csv, HEADER)`` through gzip to
   ``cdr_YYYY_MM.csv.gz`` (temporary name, fsync, rename),
3. verifies the file as a restore would read it: SHA-256, row count and the sums of the
   money and duration columns, recomputed from the decompressed CSV, must equal what
   PostgreSQL counted in the table,
4. writes ``cdr_YYYY_MM.manifest.json`` (file name, SHA-256, rows, sums, columns, month),
5. drops the table and the month's ``cdr_seen`` keys, and writes an ``archive`` row to
   ``audit_log`` carrying both hashes.

A crash between steps leaves a detached ``cdr_YYYY_MM`` table that the next run picks up;
nothing is dropped before its archive is verified. ``restore-archive`` checks the file's
hash against the manifest (and both against the audit row when the database still has it)
before reading a byte of it, loads it into a fresh table, checks rows and sums again, and
attaches it. ``export`` answers a records request from the live partitions.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

PARTITION_NAME = re.compile(r"cdr_(\d{4})_(\d{2})")
# Columns whose sums the manifest keeps: what an auditor reconciles against invoices.
SUM_COLUMNS = (
    "duration",
    "billsec",
    "billed_seconds",
    "cost",
    "cost_exact",
    "buy_cost",
    "buy_cost_exact",
)
MANIFEST_FORMAT = 1
# CSV written and read in one fixed session setup, so timestamps round-trip whatever the
# server's or the operator's defaults are.
SESSION_SETUP = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'"
DETACH_LOCK_TIMEOUT = "10s"  # detaching waits for in-flight CDR inserts; never for ever


class ArchiveError(Exception):
    """An archive cannot be written, verified or restored; nothing was dropped or loaded."""


@dataclass(frozen=True, slots=True)
class Archived:
    month: str  # YYYY-MM
    rows: int
    csv_path: Path
    manifest_path: Path
    sha256: str


def month_of(name: str) -> date | None:
    """``cdr_2026_01`` → 2026-01-01; None for any other table name."""
    match = PARTITION_NAME.fullmatch(name)
    if not match or not 1 <= int(match[2]) <= 12:
        return None
    return date(int(match[1]), int(match[2]), 1)


def add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def cutoff(retention_months: int, now: datetime | None = None) -> date:
    """The first month kept: months before it are archived. The running month counts as
    month 1 of ``retention_months`` (retention 1 keeps only the current month)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return add_months(today.replace(day=1), -(retention_months - 1))


def _bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = add_months(month, 1)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=UTC)


def set_actor(conn: psycopg.Connection, actor: str) -> None:
    """Name the operator in the audit rows this session writes (``audit_log.actor``)."""
    conn.execute("SELECT set_config('switchboard.actor', %s, false)", (actor,))


def audit(conn: psycopg.Connection, obj: str, action: str, key: str = "", new: Any = None) -> None:
    """Append one row to ``audit_log`` (the database refuses to change or delete it)."""
    conn.execute(
        "INSERT INTO audit_log (object, action, key, new) VALUES (%s, %s, %s, %s)",
        (obj, action, key, None if new is None else json.dumps(new, default=str)),
    )


def partitions(conn: psycopg.Connection) -> list[tuple[str, date, bool]]:
    """Every ``cdr_YYYY_MM`` table: (name, month, attached to cdr), oldest first. Detached
    ones are the leftovers of an interrupted archive run."""
    rows = conn.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid"
        "  AND i.inhparent = 'cdr'::regclass)"
        " FROM pg_class c WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'cdr\\_%%'"
        " AND c.relnamespace = 'public'::regnamespace"
    ).fetchall()
    found = []
    for name, attached in rows:
        month = month_of(name)
        if month is not None:
            found.append((name, month, bool(attached)))
    return sorted(found, key=lambda r: r[1])


def due(
    conn: psycopg.Connection,
    retention_months: int,
    now: datetime | None = None,
    *,
    adopt: bool = False,
) -> list[str]:
    """The partitions ``archive`` would take now, oldest first.

    CDRs of months that never had a partition (they arrived long after their time, or
    before partitions were made that far back) sit in ``cdr_default``; those months are
    due too. With ``adopt`` their rows are moved into a ``cdr_YYYY_MM`` table of their own
    (not attached: the archive run takes it as it takes an interrupted run's leftover)."""
    first_kept = cutoff(retention_months, now)
    tables = partitions(conn)
    known = {month for _, month, _ in tables}
    rows = conn.execute(
        "SELECT DISTINCT date_trunc('month', start_time AT TIME ZONE 'UTC')::date"
        " FROM cdr_default WHERE start_time < %s",
        (datetime(first_kept.year, first_kept.month, 1, tzinfo=UTC),),
    ).fetchall()
    stray = sorted(m for (m,) in rows if m not in known)
    names = {name: month for name, month, _ in tables if month < first_kept}
    for month in stray:
        name = f"cdr_{month:%Y_%m}"
        names[name] = month
        if adopt:
            start, end = _bounds(month)
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (LIKE cdr INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    ).format(sql.Identifier(name))
                )
                conn.execute(
                    sql.SQL(
                        "WITH moved AS (DELETE FROM cdr_default WHERE start_time >= %s"
                        " AND start_time < %s RETURNING *) INSERT INTO {} SELECT * FROM moved"
                    ).format(sql.Identifier(name)),
                    (start, end),
                )
    return sorted(names, key=lambda n: names[n])


def _stats(conn: psycopg.Connection, table: str) -> tuple[int, dict[str, str]]:
    query = sql.SQL("SELECT count(*), {} FROM {}").format(
        sql.SQL(", ").join(
            sql.SQL("coalesce(sum({}), 0)::text").format(sql.Identifier(c)) for c in SUM_COLUMNS
        ),
        sql.Identifier(table),
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), {c: str(v) for c, v in zip(SUM_COLUMNS, row[1:], strict=True)}


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_sums(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(Decimal(a.get(c, "0")) == Decimal(b.get(c, "0")) for c in SUM_COLUMNS)


def read_csv_stats(path: Path) -> tuple[list[str], int, dict[str, str]]:
    """Columns, rows and sums of a gzipped CDR CSV, computed from its text (the check a
    restore makes, independent of the database that wrote it)."""
    sums = dict.fromkeys(SUM_COLUMNS, Decimal(0))
    rows = 0
    # Exact sums of numeric(20,4)/unbounded numerics: no rounding to 28 digits.
    with decimal.localcontext(decimal.Context(prec=200)):
        try:
            with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                where = [(c, header.index(c)) for c in SUM_COLUMNS if c in header]
                for record in reader:
                    rows += 1
                    for column, i in where:
                        if record[i]:
                            sums[column] += Decimal(record[i])
        except (OSError, EOFError, csv.Error, StopIteration, decimal.InvalidOperation) as exc:
            raise ArchiveError(f"{path}: not a readable CDR archive: {exc}") from None
        return header, rows, {c: str(v) for c, v in sums.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def archive_partition(conn: psycopg.Connection, name: str, out_dir: Path) -> Archived:
    """Archive one partition as described in the module docstring; return what was written.
    ``conn`` must be in autocommit mode (each step is its own transaction)."""
    month = month_of(name)
    if month is None:
        raise ArchiveError(f"{name} is not a monthly CDR partition")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{name}.csv.gz"
    manifest_path = out_dir / f"{name}.manifest.json"
    start, end = _bounds(month)

    attached = conn.execute(
        "SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s)"
        " AND inhparent = 'cdr'::regclass",
        (name,),
    ).fetchone()
    if attached:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'")
            conn.execute(
                sql.SQL("ALTER TABLE cdr DETACH PARTITION {}").format(sql.Identifier(name))
            )

    with conn.transaction():
        conn.execute(SESSION_SETUP)
        rows, sums = _stats(conn, name)
        columns = _columns(conn, name)
        tmp = csv_path.with_name(csv_path.name + ".tmp")
        # mtime=0: the same rows give the same bytes, so the same hash
        with tmp.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            with conn.cursor().copy(
                sql.SQL(
                    "COPY (SELECT * FROM {} ORDER BY start_time, call_id)"
                    " TO STDOUT (FORMAT csv, HEADER true)"
                ).format(sql.Identifier(name))
            ) as copy:
                for block in copy:
                    gz.write(block)
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        tmp.replace(csv_path)
        _fsync_dir(out_dir)

    digest = _sha256(csv_path)
    header, file_rows, file_sums = read_csv_stats(csv_path)
    if header != columns or file_rows != rows or not _same_sums(file_sums, sums):
        raise ArchiveError(
            f"{csv_path}: verification failed (file has {file_rows} rows, table {rows}; sums"
            f" {file_sums} vs {sums}); {name} is kept, detached, for the next run"
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "table": name,
        "month": f"{month:%Y-%m}",
        "from": start.isoformat(),
        "until": end.isoformat(),
        "file": csv_path.name,
        "sha256": digest,
        "rows": rows,
        "sums": sums,
        "columns": columns,
        "archived_at": datetime.now(UTC).isoformat(),
    }
    _write_json(manifest_path, manifest)
    _fsync_dir(out_dir)
    manifest_sha = _sha256(manifest_path)

    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        conn.execute(
            "DELETE FROM cdr_seen WHERE start_time >= %s AND start_time < %s", (start, end)
        )
        audit(
            conn,
            "cdr",
            "archive",
            name,
            {
                "file": str(csv_path),
                "sha256": digest,
                "manifest_sha256": manifest_sha,
                "rows": rows,
                "sums": sums,
            },
        )
    return Archived(f"{month:%Y-%m}", rows, csv_path, manifest_path, digest)


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable manifest: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ArchiveError(f"{path}: not a CDR archive manifest (format {MANIFEST_FORMAT})")
    for key in ("table", "file", "sha256", "rows", "sums", "columns", "from", "until"):
        if key not in data:
            raise ArchiveError(f"{path}: manifest lacks {key!r}")
    if month_of(str(data["table"])) is None or Path(str(data["file"])).name != data["file"]:
        raise ArchiveError(f"{path}: manifest names an unexpected table or file")
    return data


def find_manifest(target: str, archive_dir: Path) -> Path:
    """A manifest path from what the operator typed: the path itself, a month (2024-01) or
    a table name (cdr_2024_01) looked up in the archive directory."""
    candidate = Path(target)
    if candidate.suffix == ".json" or candidate.exists():
        return candidate
    match = re.fullmatch(r"(\d{4})-(\d{2})", target)
    table = f"cdr_{match[1]}_{match[2]}" if match else target
    return archive_dir / f"{table}.manifest.json"


def restore(conn: psycopg.Connection, manifest_path: Path) -> int:
    """Bring one archived month back as an attached partition; return its rows. A file
    whose hash, rows or sums differ from its manifest is refused and nothing is loaded."""
    manifest = load_manifest(manifest_path)
    name = str(manifest["table"])
    csv_path = manifest_path.parent / str(manifest["file"])
    if not csv_path.exists():
        raise ArchiveError(f"{csv_path}: archive file missing")
    digest = _sha256(csv_path)
    if digest != manifest["sha256"]:
        raise ArchiveError(
            f"{csv_path}: SHA-256 {digest} does not match the manifest's {manifest['sha256']}:"
            " the archive was altered or damaged; refused, nothing restored"
        )
    recorded = conn.execute(
        "SELECT new FROM audit_log WHERE object = 'cdr' AND action = 'archive' AND key = %s"
        " ORDER BY id DESC LIMIT 1",
        (name,),
    ).fetchone()
    if recorded is not None and recorded[0].get("sha256") != digest:
        raise ArchiveError(
            f"{csv_path}: SHA-256 {digest} differs from the {recorded[0].get('sha256')} recorded"
            f" in audit_log when {name} was archived: refused, nothing restored"
        )
    if recorded is not None and recorded[0].get("manifest_sha256") != _sha256(manifest_path):
        raise ArchiveError(
            f"{manifest_path}: differs from the manifest recorded in audit_log when {name} was"
            " archived: refused, nothing restored"
        )
    header, rows, sums = read_csv_stats(csv_path)
    if header != manifest["columns"] or rows != manifest["rows"]:
        raise ArchiveError(f"{csv_path}: {rows} rows/columns differ from the manifest: refused")
    if not _same_sums(sums, manifest["sums"]):
        raise ArchiveError(f"{csv_path}: sums {sums} differ from the manifest: refused")
    cdr_columns = set(_columns(conn, "cdr"))
    unknown = [c for c in header if c not in cdr_columns]
    if unknown:
        raise ArchiveError(f"{csv_path}: columns {unknown} no longer exist in cdr: refused")

    start, end = datetime.fromisoformat(manifest["from"]), datetime.fromisoformat(manifest["until"])
    with conn.transaction():
        conn.execute(SESSION_SETUP)
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,):
            raise ArchiveError(f"{name} exists in the database already: nothing restored")
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE cdr INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                sql.Identifier(name)
            )
        )
        with (
            gzip.open(csv_path, "rb") as fh,
            conn.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, header))
                )
            ) as copy,
        ):
            for block in iter(lambda: fh.read(1 << 20), b""):
                copy.write(block)
        loaded, loaded_sums = _stats(conn, name)
        if loaded != manifest["rows"] or not _same_sums(loaded_sums, manifest["sums"]):
            raise ArchiveError(f"{name}: loaded {loaded} rows, sums {loaded_sums}: refused")
        # CDRs of this month that arrived after it was archived wait in cdr_default; the
        # partition takes them (a re-sent copy of an archived leg is dropped), else
        # ATTACH would refuse.
        conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM cdr_default WHERE start_time >= %s"
                " AND start_time < %s RETURNING *)"
                " INSERT INTO {0} SELECT * FROM moved m WHERE NOT EXISTS"
                " (SELECT 1 FROM {0} t WHERE t.call_id = m.call_id)"
            ).format(sql.Identifier(name)),
            (start, end),
        )
        conn.execute(
            sql.SQL("ALTER TABLE cdr ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Literal(start.isoformat()), sql.Literal(end.isoformat())
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO cdr_seen (call_id, start_time) SELECT call_id, start_time FROM {}"
                " ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(name))
        )
        audit(conn, "cdr", "restore", name, {"file": str(csv_path), "sha256": digest, "rows": rows})
    return rows


def normalise_number(number: str) -> str:
    digits = number.strip().lstrip("+")
    if not digits.isdigit():
        raise ArchiveError(f"--number must be digits with an optional '+', got {number!r}")
    return digits


def export(
    conn: psycopg.Connection,
    out: IO[str],
    since: datetime,
    until: datetime,
    number: str | None = None,
) -> int:
    """Write the CDRs started in ``[since, until)`` (those to or from ``number`` when
    given) as CSV with a header, oldest first; log the request in ``audit_log``."""
    digits = normalise_number(number) if number else None
    match = (
        sql.SQL("AND (sb_number(caller_id) = {d} OR sb_number(destination) = {d})").format(
            d=sql.Literal(digits)
        )
        if digits
        else sql.SQL("")
    )
    selected = sql.SQL(
        "FROM cdr WHERE start_time >= {since} AND start_time < {until} {match}"
    ).format(since=sql.Literal(since), until=sql.Literal(until), match=match)
    with conn.transaction():
        # one snapshot: the count in the audit row is the rows written
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(SESSION_SETUP)
        row = conn.execute(sql.SQL("SELECT count(*) {}").format(selected)).fetchone()
        rows = int(row[0]) if row else 0
        decoder = codecs.getincrementaldecoder("utf-8")()
        with conn.cursor().copy(
            sql.SQL(
                "COPY (SELECT * {} ORDER BY start_time, call_id) TO STDOUT (FORMAT csv, HEADER true)"
            ).format(selected)
        ) as copy:
            for block in copy:
                out.write(decoder.decode(bytes(block)))
        out.write(decoder.decode(b"", final=True))
        audit(
            conn,
            "cdr",
            "export",
            digits or "",
            {"since": since.isoformat(), "until": until.isoformat(), "rows": rows},
        )
    return rows
