"""Number portability on a real PostgreSQL: CSV import through the CLI (all or nothing, as
`rates import`), rating by the routing number (batched ingest and the insert trigger), and
the media nodes' cached asynchronous lookup (shared queries, fails open)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from typer.testing import CliRunner, Result

from switchboard.billing.cdr import Cdr
from switchboard.billing.ingest import write_batch_sync
from switchboard.billing.portability import PortabilityLookup
from switchboard.billing.rates import import_deck
from switchboard.cli import app
from tests.support.net import free_port


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[CliRunner]:
    yield CliRunner(
        env={
            "SWITCHBOARD_DATABASE__URL": db_url,
            "SWITCHBOARD_PLATFORM__STATE_DIR": str(tmp_path / "state"),
        },
    )


def run(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def test_import_all_or_nothing_replace_and_lookup(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    good = tmp_path / "ported.csv"
    good.write_text(
        "number,routing_number,description\n"
        + "".join(f"+4930{i:07d},4915{i % 10},batch\n" for i in range(20_000))
    )
    out = run(cli, "portability", "import", str(good)).stdout
    assert "imported 20000 ported numbers; 20000 in the table" in out
    assert "routing number 49157" in run(cli, "portability", "lookup", "+49 30 0000007").stdout
    assert "not ported" in run(cli, "portability", "lookup", "+4940123").stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("number,routing_number\n+49300000001,4911\n49x,4911\n+49300000002,\n")
    err = run(cli, "portability", "import", str(bad), code=2).stderr
    assert "line 3: number must be 1-16 digits" in err and "line 4: routing_number" in err
    # nothing of the bad file was kept, not even its good line
    assert "routing number 4911" not in run(cli, "portability", "lookup", "49300000001").stdout

    update = tmp_path / "update.csv"
    update.write_text("number,routing_number\n49300000001,4919\n")
    assert "; 20000 in the table" in run(cli, "portability", "import", str(update)).stdout
    assert "routing number 4919" in run(cli, "portability", "lookup", "49300000001").stdout
    out = run(cli, "portability", "import", str(update), "--replace").stdout
    assert "imported 1 ported numbers; 1 in the table" in out


def test_rating_uses_the_routing_number(conn: psycopg.Connection) -> None:
    import_deck(conn, ["prefix,rate\n", "4930,0.0100\n", "49151,0.2000\n"])
    import_deck(conn, ["prefix,rate\n", "4930,0.0050\n", "49151,0.1200\n"], carrier="acme")
    start = datetime.now(UTC) - timedelta(minutes=5)
    write_batch_sync(
        conn,
        [
            Cdr("a-ported", start, destination="+4930123", billsec=60, duration=60,
                routing_number="4915199"),
            Cdr("b-ported", start, destination="+4930123", billsec=60, duration=60,
                routing_number="4915199", carrier="acme", originating_leg="a-ported"),
            Cdr("a-plain", start, destination="+4930124", billsec=60, duration=60),
        ],
    )  # fmt: skip
    # the trigger path (psql, other tools) prices the same way
    conn.execute(
        "INSERT INTO cdr (call_id, destination, start_time, billsec, duration, routing_number)"
        " VALUES ('psql-ported', '+4930125', %s, 60, 60, '4915188')",
        (start,),
    )
    got = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT call_id, routing_number, sell_prefix, cost, buy_prefix, buy_cost FROM cdr"
        ).fetchall()
    }
    assert got == {
        "a-ported": ("4915199", "49151", D("0.2000"), None, None),
        "b-ported": ("4915199", None, None, "49151", D("0.1200")),
        "a-plain": (None, "4930", D("0.0100"), None, None),
        "psql-ported": ("4915188", "49151", D("0.2000"), None, None),
    }


async def test_lookup_is_cached_shared_and_fails_open(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO ported_number (number, routing_number) VALUES ('4930123', '4915199')"
        )
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        lookup = PortabilityLookup(pool, ttl=60, timeout=2)
        answers = await asyncio.gather(*(lookup.routing_number("4930123") for _ in range(10)))
        assert answers == ["4915199"] * 10
        assert lookup.queries == 1  # ten calls at once, one query
        assert await lookup.routing_number("4930123") == "4915199" and lookup.hits == 1
        assert await lookup.routing_number("4930999") is None  # not ported: cached too
        assert await lookup.routing_number("4930999") is None and lookup.queries == 2

    # a database that does not answer: the call goes on as dialled within the timeout
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", free_port("tcp"))
    port = silent.sockets[0].getsockname()[1]
    try:
        dead = AsyncConnectionPool(
            f"postgresql://x@127.0.0.1:{port}/x", min_size=1, max_size=1, open=False, timeout=5
        )
        await dead.open(wait=False)
        lookup = PortabilityLookup(dead, timeout=0.3)
        started = time.monotonic()
        assert await lookup.routing_number("4930123") is None
        assert time.monotonic() - started < 2 and lookup.failures == 1
        await dead.close(timeout=1)
    finally:
        silent.close()
