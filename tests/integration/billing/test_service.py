"""Billing as a media node embeds it (config → writer + credit control), external
multi-host URLs, and the embedded server behind `switchboard db url`."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from switchboard import config
from switchboard.billing import database
from switchboard.billing.accounts import create_account, show, topup
from switchboard.billing.cdr import Cdr
from switchboard.billing.credit import LowBalance
from switchboard.billing.rates import import_deck
from switchboard.billing.service import BillingService
from switchboard.cli import app
from tests.support.pg import new_server_dir


def multi_host(url: str) -> str:
    """The same database behind a libpq multi-host string whose first host is dead."""
    parts = conninfo_to_dict(url)
    parts["host"] = f"/nonexistent/sb-dead,{parts['host']}"
    parts["target_session_attrs"] = "read-write"
    return make_conninfo(**parts)  # type: ignore[arg-type]


async def test_media_node_billing_from_config(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    import_deck(conn, ["prefix,rate,increment\n", "44,0.60,1/1\n"])
    create_account(conn, "alice", gateways=["gw-alice"], low_balance="0.80")
    topup(conn, "alice", "1.00")
    cfg = config.load(
        overrides={
            "billing": {"credit_control": True, "flush_interval": 0.01, "max_call_seconds": 600}
        }
    )
    events: list[LowBalance] = []
    billing = BillingService.from_config(
        cfg, multi_host(db_url), node="media-1", state_dir=tmp_path, on_low_balance=events.append
    )
    await billing.start()
    try:
        assert billing.credit is not None
        now = datetime.now(UTC)
        auth = await billing.credit.authorise("call-1", "442079460000", gateway="gw-alice", now=now)
        assert auth.max_seconds == 100 and auth.account == "alice"
        cdr = Cdr.from_times(
            "call-1", now, now + timedelta(seconds=33), now + timedelta(seconds=3),
            destination="442079460000", account=auth.account, carrier="upstream",
        )  # fmt: skip
        billing.writer.submit(cdr)
        settled = await billing.credit.settle("call-1", cdr.billsec, now=now)
        assert settled is not None and settled.cost == D("0.3000")
        await billing.writer.flush(timeout=20)
        await billing.upkeep()
    finally:
        await billing.close()
    assert (tmp_path / "spool" / "media-1").is_dir()
    row = conn.execute("SELECT cost, rating_status FROM cdr WHERE call_id = 'call-1'").fetchone()
    assert row == (D("0.3000"), "unmatched")  # priced; carrier 'upstream' has no buy deck
    assert show(conn, "alice").balance == D("0.70")
    assert [e.account for e in events] == ["alice"]


def test_migrate_through_a_multi_host_url(db_url: str) -> None:
    assert database.migrate(multi_host(db_url)) == []
    with pytest.raises(database.DatabaseError, match="not a valid libpq"):
        database.check_url("dbname='unterminated")


def test_db_url_starts_the_embedded_server_and_db_stop_stops_it() -> None:
    root = new_server_dir("sb-cli-pg-")
    try:
        cli = CliRunner(env={"SWITCHBOARD_PLATFORM__STATE_DIR": str(root)})
        result = cli.invoke(app, ["db", "url"])
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        url = result.stdout.strip()
        with psycopg.connect(url) as c:  # usable by another program, e.g. psql
            assert c.execute("SELECT count(*) FROM rate_deck").fetchone() == (1,)
        stopped = cli.invoke(app, ["db", "stop"])
        assert stopped.stdout.strip() == "stopped"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
    finally:
        database.stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


def test_unreachable_external_database_exits_3(tmp_path: Path) -> None:
    cli = CliRunner(
        env={"SWITCHBOARD_DATABASE__URL": "postgresql://127.0.0.1:1/x?connect_timeout=1"},
    )
    result = cli.invoke(app, ["cdr", "list"])
    assert result.exit_code == 3
    assert "cannot connect" in result.stderr
