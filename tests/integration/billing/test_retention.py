"""CDR retention on a real PostgreSQL through the `switchboard` CLI: archive months older
than the retention to gzipped CSV + SHA-256 manifest, drop them, restore them with the same
rows and sums; tampered archives refused; records export; the append-only audit trail."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from switchboard.billing.cdr import Cdr
from switchboard.billing.ingest import write_batch_sync
from switchboard.billing.retention import add_months
from switchboard.cli import app

NOW = datetime.now(UTC)
THIS_MONTH = NOW.date().replace(day=1)
RETENTION = 3  # keeps this month and the two before


def month_start(offset: int) -> datetime:
    m = add_months(THIS_MONTH, offset)
    return datetime(m.year, m.month, 1, tzinfo=UTC)


def table(offset: int) -> str:
    return f"cdr_{month_start(offset):%Y_%m}"


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[CliRunner]:
    yield CliRunner(
        env={
            "SWITCHBOARD_DATABASE__URL": db_url,
            "SWITCHBOARD_PLATFORM__STATE_DIR": str(tmp_path / "state"),
            "SWITCHBOARD_BILLING__RETENTION_MONTHS": str(RETENTION),
            "SWITCHBOARD_BILLING__ARCHIVE_DIR": str(tmp_path / "archive"),
        },
    )


def run(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def rows_of(conn: psycopg.Connection, since: datetime, until: datetime) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT * FROM cdr WHERE start_time >= %s AND start_time < %s ORDER BY call_id",
        (since, until),
    ).fetchall()


def sums_of(conn: psycopg.Connection, since: datetime, until: datetime) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT count(*), sum(cost), sum(cost_exact), sum(buy_cost), sum(billsec)"
        " FROM cdr WHERE start_time >= %s AND start_time < %s",
        (since, until),
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def history(cli: CliRunner, conn: psycopg.Connection, tmp_path: Path) -> list[Cdr]:
    """Six months of rated CDRs (three older than the retention), partitions made."""
    (tmp_path / "sell.csv").write_text("prefix,rate,increment\n44,0.0713,30/6\n1,0.011,1/1\n")
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.0301\n1,0.0049\n")
    run(cli, "rates", "import", str(tmp_path / "sell.csv"))
    run(cli, "rates", "import", str(tmp_path / "buy.csv"), "--carrier", "acme")
    conn.execute("SELECT cdr_ensure_partitions(6, 1)")
    cdrs = []
    for offset in range(-5, 1):
        base = month_start(offset) + timedelta(days=2)
        for i in range(40):
            start = base + timedelta(hours=i)
            billsec = (i * 37) % 300
            cdrs.append(
                Cdr(
                    f"m{offset}-{i}",
                    start,
                    caller_id="+4930111" if i % 4 == 0 else f"+1555000{i:04d}",
                    destination="+4420700" if i % 2 else "+12125550100",
                    answer_time=start + timedelta(seconds=2) if billsec else None,
                    end_time=start + timedelta(seconds=billsec + 2),
                    duration=billsec + 2,
                    billsec=billsec,
                    disposition="ANSWERED" if billsec else "NO ANSWER",
                    carrier="acme",
                )
            )
    write_batch_sync(conn, cdrs)
    return cdrs


def test_archive_drop_restore_round_trip(
    cli: CliRunner, conn: psycopg.Connection, history: list[Cdr], tmp_path: Path
) -> None:
    old_from, old_until = month_start(-5), month_start(-2)
    before = rows_of(conn, old_from, old_until)
    before_sums = sums_of(conn, old_from, old_until)
    kept_sums = sums_of(conn, old_until, month_start(2))
    assert before_sums[0] == 120 and before_sums[1] > 0 and before_sums[3] > 0

    dry = run(cli, "cdr", "archive", "--dry-run").stdout
    assert [line.split()[-1] for line in dry.splitlines() if line.startswith("would")] == [
        table(-6), table(-5), table(-4), table(-3)
    ]  # fmt: skip
    out = run(cli, "cdr", "archive").stdout
    assert "4 partitions archived (retention 3 months)" in out
    archive = tmp_path / "archive"
    for offset in (-5, -4, -3):
        assert to_regclass(conn, table(offset)) is None  # dropped
        manifest = json.loads((archive / f"{table(offset)}.manifest.json").read_text())
        assert manifest["rows"] == 40 and manifest["file"] == f"{table(offset)}.csv.gz"
        with gzip.open(archive / manifest["file"], "rt") as fh:
            assert sum(1 for _ in fh) == 41  # header + rows
    assert rows_of(conn, old_from, old_until) == []
    assert sums_of(conn, old_until, month_start(2)) == kept_sums  # the rest untouched
    cdr_seen_old = conn.execute(
        "SELECT count(*) FROM cdr_seen WHERE start_time < %s", (old_until,)
    ).fetchone()
    assert cdr_seen_old == (0,)
    # cron runs it again: nothing due
    assert "0 partitions archived" in run(cli, "cdr", "archive").stdout

    # by month, by table name, by manifest path
    run(cli, "cdr", "restore-archive", f"{month_start(-5):%Y-%m}")
    run(cli, "cdr", "restore-archive", table(-4))
    out = run(cli, "cdr", "restore-archive", str(archive / f"{table(-3)}.manifest.json")).stdout
    assert "restored 40 CDRs" in out
    assert rows_of(conn, old_from, old_until) == before
    assert sums_of(conn, old_from, old_until) == before_sums
    assert conn.execute(
        "SELECT count(*) FROM cdr_seen WHERE start_time >= %s AND start_time < %s",
        (old_from, old_until),
    ).fetchone() == (120,)
    # restored partitions are real partitions again: a re-sent CDR is still dropped once
    assert write_batch_sync(conn, [history[0]]).inserted == 0
    again = run(cli, "cdr", "restore-archive", table(-4), code=1)
    assert "exists in the database already" in again.stderr

    actions = conn.execute(
        "SELECT action, key, actor FROM audit_log WHERE object = 'cdr' ORDER BY id"
    ).fetchall()
    assert [a for a, _, _ in actions] == ["archive"] * 4 + ["restore"] * 3
    assert all(actor.startswith("os:") for _, _, actor in actions)


def to_regclass(conn: psycopg.Connection, name: str) -> Any:
    row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    assert row is not None
    return row[0]


def test_tampered_archive_refused(
    cli: CliRunner, conn: psycopg.Connection, history: list[Cdr], tmp_path: Path
) -> None:
    before = rows_of(conn, month_start(-4), month_start(-3))
    run(cli, "cdr", "archive")
    archive = tmp_path / "archive"
    name = table(-4)
    gz = archive / f"{name}.csv.gz"
    original = gz.read_bytes()
    original_manifest = (archive / f"{name}.manifest.json").read_bytes()
    text = gzip.decompress(original).decode()
    # one CDR made cheaper: same rows, a different sum
    lines = text.splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    fields = lines[5].split(",")
    fields[header.index("billsec")] = "1"
    lines[5] = ",".join(fields)
    gz.write_bytes(gzip.compress("".join(lines).encode()))
    refused = run(cli, "cdr", "restore-archive", name, code=1)
    assert "does not match the manifest" in refused.stderr
    assert to_regclass(conn, name) is None

    # the manifest edited to match the altered file: the audit row still knows better
    manifest_path = archive / f"{name}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(gz.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    refused = run(cli, "cdr", "restore-archive", name, code=1)
    assert "recorded in audit_log" in refused.stderr
    assert to_regclass(conn, name) is None

    # a truncated file (a damaged copy)
    gz.write_bytes(original[: len(original) // 2])
    assert run(cli, "cdr", "restore-archive", name, code=1).stderr
    assert to_regclass(conn, name) is None
    # the genuine file with its genuine manifest restores, rows as they were
    gz.write_bytes(original)
    manifest_path.write_bytes(original_manifest)
    run(cli, "cdr", "restore-archive", name)
    assert rows_of(conn, month_start(-4), month_start(-3)) == before


def test_late_cdr_and_interrupted_archive(
    cli: CliRunner, conn: psycopg.Connection, history: list[Cdr], tmp_path: Path
) -> None:
    # an interrupted run: the partition was detached but never exported
    conn.execute(f"ALTER TABLE cdr DETACH PARTITION {table(-5)}")
    run(cli, "cdr", "archive")
    assert to_regclass(conn, table(-5)) is None
    assert (tmp_path / "archive" / f"{table(-5)}.manifest.json").exists()
    # a CDR of an archived month arrives late: kept (default partition), folded in on restore
    late = Cdr("late-1", month_start(-5) + timedelta(days=9), destination="+4420700",
               duration=61, billsec=60, disposition="ANSWERED", carrier="acme")  # fmt: skip
    assert write_batch_sync(conn, [late]).inserted == 1
    run(cli, "cdr", "restore-archive", table(-5))
    rows = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE call_id = 'late-1') FROM {table(-5)}"
    ).fetchone()
    assert rows == (41, 1)
    assert conn.execute("SELECT count(*) FROM cdr_default").fetchone() == (0,)

    # CDRs of a month that never had a partition wait in cdr_default: archived all the same
    stray = [Cdr(f"stray-{i}", month_start(-9) + timedelta(days=3, hours=i),
                 destination="+4420700", duration=30, billsec=30, carrier="acme")
             for i in range(3)]  # fmt: skip
    assert write_batch_sync(conn, stray).inserted == 3
    assert conn.execute("SELECT count(*) FROM cdr_default").fetchone() == (3,)
    assert f"would archive {table(-9)}" in run(cli, "cdr", "archive", "--dry-run").stdout
    assert conn.execute("SELECT count(*) FROM cdr_default").fetchone() == (3,)  # dry: untouched
    assert f"archived {table(-9)}: 3 CDRs" in run(cli, "cdr", "archive").stdout
    assert conn.execute("SELECT count(*) FROM cdr_default").fetchone() == (0,)
    run(cli, "cdr", "restore-archive", table(-9))
    assert conn.execute(
        "SELECT count(*) FROM cdr WHERE call_id LIKE 'stray-%%' AND start_time < %s",
        (month_start(-8),),
    ).fetchone() == (3,)


def test_export_records_request(
    cli: CliRunner, conn: psycopg.Connection, history: list[Cdr], tmp_path: Path
) -> None:
    since, until = month_start(-1), month_start(1)
    out = run(
        cli, "cdr", "export", "--since", f"{since:%Y-%m-%d}", "--until", f"{until:%Y-%m-%d}",
        "--number", "+4930111",
    )  # fmt: skip
    lines = out.stdout.splitlines()
    header = lines[0].split(",")
    assert "call_id" in header and "cost" in header and "sip_call_id" in header
    ids = sorted(line.split(",")[header.index("call_id")] for line in lines[1:])
    expected = sorted(c.call_id for c in history if c.caller_id == "+4930111"
                      and since <= c.start_time < until)  # fmt: skip
    assert ids == expected and len(ids) == 20
    assert "exported 20 CDRs" in out.stderr
    target = tmp_path / "all.csv"
    run(cli, "cdr", "export", "--since", f"{since:%Y-%m-%d}", "--until", f"{until:%Y-%m-%d}",
        "--out", str(target))  # fmt: skip
    assert len(target.read_text().splitlines()) == 81
    logged = conn.execute(
        "SELECT key, new->>'rows' FROM audit_log WHERE action = 'export' ORDER BY id"
    ).fetchall()
    assert logged == [("4930111", "20"), ("", "80")]
    bad = run(cli, "cdr", "export", "--since", "7d", "--until", "1d", "--number", "abc", code=2)
    assert "--number" in bad.stderr


def test_audit_log_is_append_only_and_records_changes(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "deck.csv").write_text("prefix,rate\n44,0.10\n33,0.20\n")
    run(cli, "rates", "import", str(tmp_path / "deck.csv"))
    (tmp_path / "deck.csv").write_text("prefix,rate\n44,0.12\n33,0.20\n")
    run(cli, "rates", "import", str(tmp_path / "deck.csv"))
    run(cli, "accounts", "create", "alice", "--caller", "+4930111")
    run(cli, "accounts", "topup", "alice", "10")
    rows = conn.execute(
        "SELECT object, action, actor, old->>'rate', new->>'rate' FROM audit_log"
        " WHERE object = 'rate_table' ORDER BY id"
    ).fetchall()
    actions = [(o, a, old, new) for o, a, _, old, new in rows]
    assert ("rate_table", "insert", None, "0.100000") in actions
    assert ("rate_table", "update", "0.100000", "0.120000") in actions
    # the unchanged 33 row was upserted but not changed: no audit row for it
    assert len([a for a in actions if a[1] == "update"]) == 1
    assert all(
        actor.startswith("os:") for *_, actor, _, _ in [(r[0], r[1], r[2], 0, 0) for r in rows]
    )
    accounts = conn.execute(
        "SELECT action, new->>'name' FROM audit_log WHERE object = 'account' ORDER BY id"
    ).fetchall()
    assert accounts == [("insert", "alice")]  # the top-up moved the balance only: ledger
    conn.execute("UPDATE account SET credit_limit = 0, low_balance = 5 WHERE name = 'alice'")
    change = conn.execute(
        "SELECT old->>'low_balance', new->>'low_balance', actor FROM audit_log"
        " WHERE object = 'account' AND action = 'update'"
    ).fetchone()
    assert change is not None and change[:2] == ("0.000000", "5.000000")
    identities = conn.execute(
        "SELECT key FROM audit_log WHERE object = 'account_identity'"
    ).fetchall()
    assert identities == [("caller:4930111",)]

    for statement in (
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'nobody'").fetchone() == (0,)
