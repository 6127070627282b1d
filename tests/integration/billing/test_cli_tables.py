"""Every listing readable at 80 columns (issue 18, item 2), through the real CLI against a
real PostgreSQL: the default view fits 80 columns without cutting a heading or a value
(ids shortened to 8 characters and ``…``), ``--wide`` shows every column and full ids,
``--json`` and ``--csv`` carry every column with full values."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from switchboard.billing.cdr import Cdr
from switchboard.billing.ingest import write_batch_sync
from switchboard.cli import app

START = datetime(2026, 11, 30, 21, 4, 5, tzinfo=UTC)
CALL_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"call-{i}")) for i in range(6)]
CAMPAIGN = "black-friday-retention"


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[CliRunner]:
    yield CliRunner(
        env={
            "SWITCHBOARD_DATABASE__URL": db_url,
            "SWITCHBOARD_PLATFORM__STATE_DIR": str(tmp_path / "state"),
            "COLUMNS": "80",
        },
    )


def run(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture
def traffic(cli: CliRunner, conn: psycopg.Connection, tmp_path: Path) -> list[Cdr]:
    (tmp_path / "sell.csv").write_text(
        "prefix,rate,connect_fee,increment,description\n"
        "44,0.060000,0,60/60,United Kingdom\n447,0.120000,0.050000,30/6,United Kingdom mobile\n"
        "1212,0.005000,0,1/1,USA New York\n"
    )
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.030000\n447,0.080000\n1,0.001000\n")
    run(cli, "rates", "import", str(tmp_path / "sell.csv"))
    run(cli, "rates", "import", str(tmp_path / "buy.csv"), "--carrier", "telco-eu-primary")
    run(cli, "accounts", "create", "acme-wholesale", "--ip", "192.0.2.0/24")
    run(cli, "accounts", "topup", "acme-wholesale", "12500.75", "--note", "wire 2026-11")
    run(cli, "accounts", "create", "northwind", "--kind", "postpaid", "--credit-limit", "500")
    specs = [  # destination, billsec, SIP code, account
        ("442079460000", 61, 200, "acme-wholesale"),
        ("447700900123", 3725, 200, "acme-wholesale"),
        ("447700900124", 0, 486, "acme-wholesale"),
        ("12125550100", 125, 200, "northwind"),
        ("12125550101", 0, 503, "northwind"),
        ("12125550102", 0, 487, "northwind"),
    ]
    cdrs = []
    for i, (dest, billsec, code, account) in enumerate(specs):
        start = START + timedelta(minutes=7 * i)
        answer = start + timedelta(seconds=3) if billsec else None
        cdrs.append(
            Cdr.from_times(
                CALL_IDS[i], start, start + timedelta(seconds=3 + billsec), answer,
                sip_call_id=f"{uuid.uuid4()}@198.51.100.7", caller_id="+14155550123",
                destination=dest, sip_code=code, account=account, carrier="telco-eu-primary",
                pdd_ms=850 + 10 * i, hangup_cause="NORMAL_CLEARING" if billsec else "USER_BUSY",
                disposition="ANSWERED" if billsec else ("BUSY" if code == 486 else "NO ANSWER"),
            )
        )  # fmt: skip
    write_batch_sync(conn, cdrs)
    # a campaign with contacts and finished attempts (as the dialer stores them)
    cid = conn.execute(
        "INSERT INTO dialer_campaign (name, source_sha256, settings, status, status_reason)"
        " VALUES (%s, 'x', '{}', 'paused', 'failed ratio 0.62 over 0.50 after 21 attempts')"
        " RETURNING id",
        (CAMPAIGN,),
    ).fetchone()[0]  # type: ignore[index]
    for n in range(1, 1301):
        state = "done" if n <= 1000 else "pending"
        contact = conn.execute(
            "INSERT INTO dialer_contact (campaign_id, line, number, state) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (cid, n, f"+4420794{n:05d}", state),
        ).fetchone()[0]  # type: ignore[index]
        if state == "done":
            outcome = "answered" if n % 3 else "no_answer"
            conn.execute(
                "INSERT INTO dialer_attempt (uuid, campaign_id, contact_id, attempt, started_at,"
                " ended_at, outcome, billsec) VALUES (%s, %s, %s, 1, now(), now(), %s, %s)",
                (uuid.uuid4(), cid, contact, outcome, 42 if outcome == "answered" else 0),
            )
    return cdrs


LISTINGS = [
    ("cdr", "list"),
    ("report",),
    ("report", "--by", "destination"),
    ("report", "--by", "period", "--period", "hour"),
    ("accounts", "list"),
    ("accounts", "show", "acme-wholesale"),
    ("rates", "list"),
    ("campaign", "status"),
    ("campaign", "report", CAMPAIGN),
]


def fits(text: str, width: int = 80) -> None:
    assert text.strip(), "empty listing"
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_default_view_fits_80_columns(
    cli: CliRunner, traffic: list[Cdr], listing: tuple[str, ...]
) -> None:
    text = run(cli, *listing).stdout
    fits(text)
    # nothing is cut but a shortened id ("…" after 8 characters of a call id) or a long
    # name in a flexible column: numbers, codes and times always in full
    for line in text.splitlines():
        for token in (t for t in line.split() if t.endswith("…")):
            assert token in {c[:8] + "…" for c in CALL_IDS} or (
                "carrier:telco-eu-primary".startswith(token[:-1]) and len(token) > 10
            ), line


def test_cdr_list_views(cli: CliRunner, traffic: list[Cdr]) -> None:
    narrow = run(cli, "cdr", "list").stdout
    header = narrow.splitlines()[0].split()
    assert header == [
        "start", "(UTC)", "call", "id", "destination", "SIP", "billsec", "account", "cost",
    ]  # fmt: skip
    # the newest call first; short id, compact time, full account and cost
    first = narrow.splitlines()[2]
    assert first.split()[:3] == ["11-30", "21:39:05", CALL_IDS[5][:8] + "…"]
    assert "northwind" in first and " 487 " in first
    assert "12125550102" in first
    long_call = next(line for line in narrow.splitlines() if CALL_IDS[1][:8] in line)
    assert "3725" in long_call and "acme-wholesale" in long_call
    assert CALL_IDS[0] not in narrow  # full ids only in --wide/--json/--csv

    wide = run(cli, "cdr", "list", "--wide").stdout
    assert max(len(line) for line in wide.splitlines()) > 80
    for cdr in traffic:
        assert cdr.call_id in wide and cdr.sip_call_id in wide
    for heading in ("SIP Call-ID", "caller", "disposition", "hangup cause", "PDD ms", "rating"):
        assert heading in wide
    assert "…" not in wide

    rows = [json.loads(line) for line in run(cli, "cdr", "list", "--json").stdout.splitlines()]
    assert [r["call_id"] for r in rows] == CALL_IDS[::-1]
    assert rows[-1]["start_time"] == START.isoformat()
    assert rows[-1]["hangup_cause"] == "NORMAL_CLEARING"

    table = list(csv.DictReader(io.StringIO(run(cli, "cdr", "list", "--csv").stdout)))
    assert [r["call_id"] for r in table] == CALL_IDS[::-1]
    assert table[0].keys() == rows[0].keys()
    assert {k: str(v) if v is not None else "" for k, v in rows[2].items()} == table[2]

    assert "exclusive" in run(cli, "cdr", "list", "--json", "--csv", code=2).stderr


def test_report_accounts_rates_campaign_in_every_form(cli: CliRunner, traffic: list[Cdr]) -> None:
    by_dest = run(cli, "report", "--by", "destination").stdout
    assert {"ASR", "ACD", "PDD", "minutes", "revenue", "margin"} <= set(by_dest.split())
    wide = run(cli, "report", "--by", "destination", "--wide").stdout.split()
    assert {"NER", "cost", "unrated", "answered"} <= set(wide)
    report = json.loads(run(cli, "report", "--by", "destination", "--json").stdout)
    assert {r["key"] for r in report} == {"44", "447", "1212"}
    rows = list(csv.DictReader(io.StringIO(run(cli, "report", "--csv").stdout)))
    assert rows[0]["seizures"] == "6" and rows[0]["key"] == "total"

    accounts = run(cli, "accounts", "list").stdout
    acme = next(line for line in accounts.splitlines() if line.startswith("acme-wholesale"))
    assert "prepaid" in acme and "12500.750000" in acme
    listed = json.loads(run(cli, "accounts", "list", "--json").stdout)
    assert [a["name"] for a in listed] == ["acme-wholesale", "northwind"]
    assert listed[1]["available"] == "500.000000" and listed[0]["identities"] == 1
    assert "credit limit" in run(cli, "accounts", "list", "--wide").stdout

    rates = run(cli, "rates", "list").stdout
    assert "United Kingdom mobile" in rates and "30/6" in rates
    buy = list(csv.DictReader(io.StringIO(run(cli, "rates", "list", "--csv").stdout)))
    assert {(r["deck"], r["prefix"]) for r in buy} >= {("carrier:telco-eu-primary", "447")}
    matching = json.loads(run(cli, "rates", "list", "--prefix", "447700", "--json").stdout)
    assert {(r["deck"], r["prefix"]) for r in matching} == {
        ("default", "44"), ("default", "447"),
        ("carrier:telco-eu-primary", "44"), ("carrier:telco-eu-primary", "447"),
    }  # fmt: skip

    status = run(cli, "campaign", "status").stdout
    line = next(line for line in status.splitlines() if line.startswith(CAMPAIGN))
    assert line.split()[1:7] == ["paused", "1300", "1000", "300", "667", "66.7"]
    assert "failed ratio" in run(cli, "campaign", "status", "--wide").stdout
    shaped = json.loads(run(cli, "campaign", "status", "--json").stdout)
    assert shaped[0]["contacts"] == {"done": 1000, "pending": 300}
    flat = list(csv.DictReader(io.StringIO(run(cli, "campaign", "status", "--csv").stdout)))
    assert flat[0]["contacts"] == "1300" and flat[0]["answered"] == "667"

    outcomes = list(
        csv.DictReader(io.StringIO(run(cli, "campaign", "report", CAMPAIGN, "--csv").stdout))
    )
    assert outcomes == [
        {"outcome": "answered", "attempts": "667"},
        {"outcome": "no_answer", "attempts": "333"},
    ]
    assert json.loads(run(cli, "campaign", "report", CAMPAIGN, "--json").stdout)["dnc"] == 0
