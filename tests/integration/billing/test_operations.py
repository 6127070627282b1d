"""Operator commands through the real `switchboard` CLI (typer CliRunner) against a real
PostgreSQL: rates import, accounts, cdr list, report, invoice, backup/restore."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from switchboard.billing import database
from switchboard.billing.cdr import Cdr
from switchboard.billing.ingest import write_batch_sync
from switchboard.cli import app

MONTH_START = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
MONTH = f"{MONTH_START:%Y-%m}"


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[CliRunner]:
    yield CliRunner(
        env={
            "SWITCHBOARD_DATABASE__URL": db_url,
            "SWITCHBOARD_PLATFORM__STATE_DIR": str(tmp_path / "state"),
        },
    )


def run(cli: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = cli.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_rates_import_100k_rows_in_seconds(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    deck = tmp_path / "deck.csv"
    with deck.open("w") as fh:
        fh.write("prefix,rate,connect_fee,increment,min_duration,effective_from,description\n")
        for i in range(100_000):
            fh.write(
                f"{1_000_000 + i},0.{i % 9000 + 1000:04d},0.01,30/6,0,2026-01-01,Dest {i % 50}\n"
            )
    started = time.perf_counter()
    result = run(cli, "rates", "import", str(deck))
    elapsed = time.perf_counter() - started
    assert "imported 100000 rates into default (100000)" in result.stdout
    assert count(conn, "rate_table") == 100_000
    assert elapsed < 60, f"import took {elapsed:.1f}s"  # ~3 s on an idle 2-core machine
    # Re-importing rows with the same prefix and effective_from replaces them, no growth.
    again = tmp_path / "again.csv"
    again.write_text("prefix,rate,effective_from\n1000000,0.9,2026-01-01\n1000001,0.8,2026-01-01\n")
    run(cli, "rates", "import", str(again))
    assert count(conn, "rate_table") == 100_000
    assert conn.execute(
        "SELECT rate, increment_initial FROM rate_table WHERE prefix = '1000000'"
    ).fetchone() == (D("0.9"), 1)


def test_rates_import_bad_rows_change_nothing(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prefix,rate,increment\n44,0.1,60/60\n44x,0.2,\n45,,\n46,0.3,1/0\n")
    result = run(cli, "rates", "import", str(bad), code=2)
    assert "line 3: prefix must be 1-16 digits" in result.stderr
    assert "line 4: rate is empty" in result.stderr
    assert "line 5: increments must be positive" in result.stderr
    assert count(conn, "rate_table") == 0
    missing = tmp_path / "missing.csv"
    assert "no such file" in run(cli, "rates", "import", str(missing), code=2).stderr.lower()
    result = run(cli, "rates", "import", str(bad), "--carrier", "a", "--account", "b", code=2)
    assert "exclusive" in result.stderr


def test_rates_import_per_row_owners(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    run(cli, "accounts", "create", "alice")
    deck = tmp_path / "mixed.csv"
    deck.write_text("prefix,rate,carrier,account\n44,0.3,acme,\n44,0.6,,alice\n1,0.05,,\n")
    result = run(cli, "rates", "import", str(deck))
    assert "account:alice (1)" in result.stdout and "carrier:acme (1)" in result.stdout
    assert "default (1)" in result.stdout
    bad = tmp_path / "ghost.csv"
    bad.write_text("prefix,rate,account\n44,0.6,alice\n45,0.6,ghost\n")
    result = run(cli, "rates", "import", str(bad), code=2)
    assert "line 3: no account named 'ghost'" in result.stderr
    assert count(conn, "rate_table") == 3  # the good row of the bad file was not kept


def test_rates_import_for_a_carrier_then_rerate(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.60\n")
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.30\n")
    run(cli, "rates", "import", str(tmp_path / "sell.csv"))
    assert (
        "carrier:acme (1)"
        in run(cli, "rates", "import", str(tmp_path / "buy.csv"), "--carrier", "acme").stdout
    )
    start = datetime.now(UTC) - timedelta(minutes=5)
    write_batch_sync(
        conn, [Cdr("r1", start, destination="4420", duration=60, billsec=60, carrier="acme")]
    )
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.20\n")
    run(cli, "rates", "import", str(tmp_path / "buy.csv"), "--carrier", "acme")
    result = run(cli, "rates", "rerate", "--since", "1h")
    assert "re-rated 1 CDRs: 1 changed" in result.stdout
    row = conn.execute("SELECT cost, buy_cost FROM cdr").fetchone()
    assert row == (D("0.6000"), D("0.2000"))


def test_accounts_create_topup_show(cli: CliRunner) -> None:
    run(
        cli,
        "accounts",
        "create",
        "alice",
        "--ip",
        "192.0.2.0/24",
        "--gateway",
        "gw1",
        "--low-balance",
        "2",
    )
    assert (
        "balance 10.500000"
        in run(cli, "accounts", "topup", "alice", "10.5", "--note", "wire 42").stdout
    )
    shown = json.loads(run(cli, "accounts", "show", "alice", "--json").stdout)
    assert shown["balance"] == "10.500000" and shown["available"] == "10.500000"
    assert {"kind": "ip", "value": "192.0.2.0/24"} in shown["identities"]
    assert shown["transactions"][0]["kind"] == "topup"
    assert "exists already" in run(cli, "accounts", "create", "alice", code=2).stderr
    assert "decimal number" in run(cli, "accounts", "topup", "alice", "ten", code=2).stderr
    assert "no account named" in run(cli, "accounts", "show", "bob", code=2).stderr
    assert "not an IP" in run(cli, "accounts", "create", "bob", "--ip", "300.1.1.1", code=2).stderr
    human = run(cli, "accounts", "show", "alice").stdout
    assert "alice" in human and "wire 42" in human


def seed_traffic(conn: psycopg.Connection, tmp_path: Path, cli: CliRunner) -> list[Cdr]:
    (tmp_path / "sell.csv").write_text(
        "prefix,rate,connect_fee,increment,description\n"
        "44,0.60,0,60/60,United Kingdom\n447,1.20,0.05,30/6,UK mobile\n1,0.05,0,1/1,USA\n"
    )
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.30\n447,0.80\n1,0.01\n")
    run(cli, "rates", "import", str(tmp_path / "sell.csv"))
    run(cli, "rates", "import", str(tmp_path / "buy.csv"), "--carrier", "acme")
    run(cli, "accounts", "create", "alice")
    run(cli, "accounts", "create", "bob")
    base = MONTH_START + timedelta(hours=1)
    cdrs = []
    specs = [  # destination, billsec, sip code, account, pdd
        ("442079460000", 61, 200, "alice", 800),
        ("447700900123", 31, 200, "alice", 1200),
        ("447700900124", 0, 486, "alice", 900),
        ("12125550100", 125, 200, "bob", 400),
        ("12125550101", 0, 503, "bob", 3000),
        ("12125550102", 0, 480, "bob", 5000),
        ("861012345678", 30, 200, "bob", 700),  # no rate: kept, flagged, not invoiced
    ]
    for i, (dest, billsec, code, account, pdd) in enumerate(specs):
        start = base + timedelta(minutes=i)
        answer = start + timedelta(seconds=2) if billsec else None
        cdrs.append(
            Cdr.from_times(
                f"t{i}", start, start + timedelta(seconds=2 + billsec), answer,
                destination=dest, sip_code=code, account=account, carrier="acme", pdd_ms=pdd,
                disposition="ANSWERED" if billsec else ("BUSY" if code == 486 else "FAILED"),
            )
        )  # fmt: skip
    # last month, must not be invoiced this month
    old = MONTH_START - timedelta(days=3)
    cdrs.append(Cdr.from_times("old", old, old + timedelta(seconds=62), old + timedelta(seconds=2), destination="4420", account="alice", carrier="acme"))  # fmt: skip
    write_batch_sync(conn, cdrs)
    return cdrs


def test_cdr_list_and_report(cli: CliRunner, conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_traffic(conn, tmp_path, cli)
    lines = run(
        cli, "cdr", "list", "--json", "--since", MONTH_START.isoformat()
    ).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["call_id"] for r in rows] == [f"t{i}" for i in range(6, -1, -1)]
    t0 = rows[-1]
    assert (t0["account"], t0["carrier"], t0["cost"], t0["buy_cost"]) == (
        "alice",
        "acme",
        "1.2000",
        "0.3050",
    )
    assert rows[0]["rating_status"] == "unmatched"
    assert "t6" in run(cli, "cdr", "list").stdout

    by_carrier = json.loads(
        run(cli, "report", "--by", "carrier", "--since", MONTH_START.isoformat(), "--json").stdout
    )
    assert len(by_carrier) == 1
    acme = by_carrier[0]
    assert (acme["key"], acme["seizures"], acme["answered"]) == ("acme", 7, 4)
    assert acme["asr"] == round(100 * 4 / 7, 2)
    assert acme["ner"] == round(100 * 6 / 7, 2)  # 503 is the network's fault
    assert acme["acd"] == round((61 + 31 + 125 + 30) / 4, 1)
    assert acme["pdd_ms"] == round((800 + 1200 + 900 + 400 + 3000 + 5000 + 700) / 7, 1)
    revenue = D("1.2000") + D("0.7700") + D("0.1042")
    cost = D("0.3050") + D("0.4133") + D("0.0208")
    assert (D(acme["revenue"]), D(acme["cost"])) == (revenue, cost)
    assert D(acme["margin"]) == revenue - cost and acme["unmatched"] == 1

    by_dest = {
        r["key"]: r for r in json.loads(run(cli, "report", "--by", "destination", "--json").stdout)
    }
    assert set(by_dest) == {"1", "44", "447", "unmatched"}
    assert by_dest["44"]["seizures"] == 2  # includes last month's call: no --since
    by_account = json.loads(
        run(cli, "report", "--by", "account", "--since", MONTH_START.isoformat(), "--json").stdout
    )
    assert [r["key"] for r in by_account] == ["alice", "bob"]
    periods = json.loads(run(cli, "report", "--by", "period", "--period", "month", "--json").stdout)
    assert [p["key"] for p in periods][-1] == MONTH
    assert "ASR" in run(cli, "report").stdout
    assert "--by must be" in run(cli, "report", "--by", "colour", code=2).stderr
    assert "expected a date" in run(cli, "report", "--since", "yesterday", code=2).stderr


def test_invoice_totals_equal_cdr_costs_and_rerun_is_identical(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    seed_traffic(conn, tmp_path, cli)
    out = tmp_path / "inv"
    result = run(cli, "invoice", "--month", MONTH, "--out", str(out))
    assert "alice" in result.stdout and "bob" in result.stdout
    files = sorted(p.name for p in (out / MONTH).iterdir())
    assert files == ["alice.csv", "alice.html", "bob.csv", "bob.html"]
    for account in ("alice", "bob"):
        expected = conn.execute(
            "SELECT coalesce(sum(c.cost), 0) FROM cdr c JOIN account a ON a.id = c.account_id"
            " WHERE a.name = %s AND c.start_time >= %s AND c.start_time < %s",
            (account, MONTH_START, MONTH_START + timedelta(days=32)),
        ).fetchone()
        assert expected is not None
        text = (out / MONTH / f"{account}.csv").read_text().splitlines()
        total_line = next(line for line in text if line.startswith("total,"))
        assert D(total_line.split(",")[-1]) == expected[0]
        body = text[text.index("prefix,destination,calls,minutes,amount") + 1 :]
        amounts = [D(line.split(",")[4]) for line in body if line[:1].isdigit()]
        assert sum(amounts) == expected[0]
        assert f"{expected[0]} USD" in (out / MONTH / f"{account}.html").read_text()
    alice = (out / MONTH / "alice.csv").read_text()
    assert "447,UK mobile,1,0.60,0.7700" in alice and "44,United Kingdom,1,2.00,1.2000" in alice
    assert "unrated calls (no rate matched),,1" in (out / MONTH / "bob.csv").read_text()
    before = {p.name: p.read_bytes() for p in (out / MONTH).iterdir()}
    run(cli, "invoice", "--month", MONTH, "--out", str(out))
    assert {p.name: p.read_bytes() for p in (out / MONTH).iterdir()} == before
    assert "YYYY-MM" in run(cli, "invoice", "--month", "2026-13", code=2).stderr


def test_backup_restore_round_trip_and_retention(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    seed_traffic(conn, tmp_path, cli)
    run(cli, "accounts", "topup", "alice", "25")
    dump = tmp_path / "b" / "one.sql.gz"
    assert str(dump) in run(cli, "db", "backup", "--out", str(dump)).stdout
    with gzip.open(dump, "rt") as fh:
        assert "CREATE TABLE public.cdr" in fh.read()
    snapshot = conn.execute("SELECT call_id, cost, buy_cost FROM cdr ORDER BY call_id").fetchall()
    # Damage the data, then restore.
    conn.execute("DELETE FROM cdr WHERE call_id LIKE 't%'")
    conn.execute("UPDATE account SET balance = 0")
    run(cli, "db", "restore", str(dump), stdin="y\n")
    assert (
        conn.execute("SELECT call_id, cost, buy_cost FROM cdr ORDER BY call_id").fetchall()
        == snapshot
    )
    assert conn.execute("SELECT balance FROM account WHERE name = 'alice'").fetchone() == (D("25"),)
    # The restored database still prices and dedupes new CDRs.
    write_batch_sync(conn, [Cdr("after", MONTH_START, destination="4420", duration=60, billsec=60), Cdr("t0", MONTH_START + timedelta(hours=1), destination="4420")])  # fmt: skip
    assert conn.execute("SELECT cost FROM cdr WHERE call_id = 'after'").fetchone() == (D("0.6000"),)
    assert count(conn, "cdr") == len(snapshot) + 1
    # A broken file is refused and changes nothing.
    broken = tmp_path / "broken.sql.gz"
    broken.write_bytes(gzip.compress(b"DELETE FROM cdr;\nTHIS IS NOT SQL;\n"))
    assert "restore failed" in run(cli, "db", "restore", str(broken), "--yes", code=1).stderr
    assert count(conn, "cdr") == len(snapshot) + 1
    # Retention in a directory.
    folder = tmp_path / "nightly"
    made = [
        Path(run(cli, "db", "backup", "--out", str(folder), "--keep", "2").stdout.strip())
        for _ in range(3)
    ]
    assert len(set(made)) == 3  # same second: a suffix, never an overwrite
    assert sorted(folder.glob("switchboard-*.sql.gz")) == sorted(made[1:])  # the oldest went


def test_db_migrate_is_idempotent(cli: CliRunner) -> None:
    latest = database.migrations()[-1].version
    assert f"schema up to date (version {latest})" in run(cli, "db", "migrate").stdout
