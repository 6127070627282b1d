"""Credit control in a media node's call path, against real PostgreSQL and SIPp peers:
a prepaid call cut at the second its balance allows (ALLOTTED_TIMEOUT), a call with no
funds refused 402, the balance debited exactly once, the low-balance event on the Event
Socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from switchboard import config
from switchboard.billing import database
from switchboard.billing.accounts import create_account, show, topup
from switchboard.billing.rates import import_deck
from switchboard.billing.reports import list_cdrs
from switchboard.media.node import MediaNode
from tests.support.media import RtpPeer, free_even_range
from tests.support.net import async_wait_until, free_port, udp_port_taken
from tests.support.sipp import HAVE_SIPP, SCENARIOS, finish_sipp, run_sipp

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAVE_SIPP, reason="Debian sip-tester missing"),
]

_names = itertools.count()
# 0.60 per minute billed per second: 0.01 a second, so 0.03 buys exactly 3 seconds.
DECK = ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"]


@pytest.fixture(scope="module")
def admin_url() -> Iterator[str]:
    import pgserver

    # outside pytest's tmp tree: as root, pgserver runs postgres as its own user
    root = Path(tempfile.mkdtemp(prefix="sb-media-credit-pg-"))
    root.chmod(0o755)
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        url = str(server.get_uri())
        database.migrate(database.ensure_database(url, "sb_credit_template"))
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db_url(admin_url: str) -> Iterator[str]:
    name = f"sb_credit_{os.getpid()}_{next(_names)}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE sb_credit_template").format(sql.Identifier(name))
        )
    yield database.with_dbname(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def node(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MediaNode]:
    """A node with credit control on; an indirect parameter adds ``[billing]`` keys."""
    billing = {"credit_control": True, "flush_interval": 0.05, **getattr(request, "param", {})}
    start, end = free_even_range()
    esl_port = free_port("tcp")
    cfg = config.load(
        environ={},
        overrides={
            "media": {
                "listen": [f"udp:127.0.0.1:{free_port()}"],
                "rtp_port_start": start,
                "rtp_port_end": end,
            },
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{free_port()}"}},
            "database": {"url": db_url},
            "billing": billing,
            "esl": {"listen": f"127.0.0.1:{esl_port}"},
            "platform": {"state_dir": str(tmp_path / "state")},
        },
    )
    n = MediaNode(cfg, "media-1", state_dir=tmp_path / "state", admin=False)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def carrier_port(node: MediaNode) -> int:
    return int(node.cfg.gateways["carrier"].proxy.rpartition(":")[2])


async def carrier_uas(node: MediaNode, workdir: Path, rtp: RtpPeer) -> Any:
    """SIPp answering as the carrier behind gateway ``carrier`` (waits for our BYE)."""
    port = carrier_port(node)
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "media_carrier_uas.xml"), "-i", "127.0.0.1",
        "-p", str(port), "-m", "1", "-nostdin", "-timeout", "30s",
        "-key", "rtp_port", str(rtp.port), "-key", "codecs", "0",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    # SIPp is another process: poll (bounded) until it holds its port
    await async_wait_until(lambda: udp_port_taken(port), timeout=10, what="SIPp carrier listening")
    return proc


async def esl_low_balance_listener(port: int) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)  # auth/request
    writer.write(b"auth ClueCon\n\n")
    writer.write(b"event plain CUSTOM switchboard::low_balance\n\n")
    for _ in range(2):
        reply = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        assert b"+OK" in reply, reply
    return reader, writer


async def read_event(reader: asyncio.StreamReader, timeout: float = 10.0) -> dict[str, str]:
    from urllib.parse import unquote

    head = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout)
    length = int(dict(line.split(": ", 1) for line in head.decode().split("\n") if line)[
        "Content-Length"
    ])  # fmt: skip
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return {
        k: unquote(v)
        for k, _, v in (line.partition(": ") for line in body.decode().split("\n") if line)
    }


@pytest.mark.parametrize(
    "node",
    [
        pytest.param({}, id="whole-call-reserved"),
        # 1 s reservations renewed by extend() 0.5 s before each runs out, until the funds end
        pytest.param({"reserve_seconds": 1, "extend_before": 0.5}, id="renewed-chunks"),
    ],
    indirect=True,
)
async def test_prepaid_call_is_cut_when_its_balance_runs_out_and_debited_once(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, DECK)
        create_account(conn, "prepaid", ips=["127.0.0.1/32"], low_balance="0.02")
        topup(conn, "prepaid", "0.03")
    reader, writer = await esl_low_balance_listener(node.esl.port)
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    try:
        uas = await carrier_uas(node, tmp_path, carrier)
        # the caller would talk for 30 s; it waits for the node's BYE
        sipp = await run_sipp("media_call_wait_bye.xml", node.sip_port, tmp_path,
                              service="442071234567", keys={"rtp_port": caller.port},
                              background=True)  # fmt: skip
        await async_wait_until(lambda: any(s.channel.answered for s in node.switch.sessions),
                         what="the call answered")  # fmt: skip
        answered = time.monotonic()
        a_leg = next(s for s in node.switch.sessions if s.channel.direction == "inbound")
        limit = int(a_leg.channel.variables["credit_max_seconds"])
        # chunks: the limit so far is a renewable part of the 3 s (extended as the call goes)
        assert limit < 3 if node.cfg.billing.reserve_seconds else limit == 3
        result = await finish_sipp(sipp, 20)
        talk = time.monotonic() - answered
        assert result.returncode == 0, result.output[-2000:]
        assert 2.5 < talk < 4.5, talk  # cut at the 3 s the balance buys
        await finish_sipp(uas, 10)
        event = await read_event(reader)
        assert event["Event-Name"] == "CUSTOM"
        assert event["Event-Subclass"] == "switchboard::low_balance"
        assert (event["Account"], D(event["Balance"]), D(event["Threshold"])) == (
            "prepaid",
            D("0"),
            D("0.02"),
        )
    finally:
        caller.close()
        carrier.close()
        writer.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(lambda: len(list_cdrs(conn)) == 2, what="both legs' CDRs")
        legs = {r["carrier"] or "caller": r for r in list_cdrs(conn)}
        a_leg = legs["caller"]
        assert a_leg["hangup_cause"] == "ALLOTTED_TIMEOUT" and a_leg["billsec"] == 3
        assert a_leg["account"] == "prepaid" and a_leg["cost"] == D("0.0300")
        view = show(conn, "prepaid")
        assert (view.balance, view.reserved) == (D("0"), D("0"))
        debits = conn.execute(
            "SELECT amount FROM account_transaction WHERE kind = 'call'"
        ).fetchall()
        assert debits == [(D("-0.030000"),)]  # exactly once


async def test_call_without_funds_is_refused_402_and_not_placed(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, DECK)
        create_account(conn, "broke", ips=["127.0.0.1/32"])
    result = await run_sipp("media_call_402.xml", node.sip_port, tmp_path,
                            service="442071234567", keys={"rtp_port": free_port()},
                            timeout=10)  # fmt: skip
    assert result.returncode == 0, result.output[-2000:] + result.errors[-2000:]
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(lambda: len(list_cdrs(conn)) == 1, what="the refused call's CDR")
        (cdr,) = list_cdrs(conn)  # one leg: nothing went to the carrier
        assert (cdr["sip_code"], cdr["hangup_cause"]) == (402, "OUTGOING_CALL_BARRED")
        assert show(conn, "broke").reserved == D("0")


async def test_calls_without_an_account_are_not_credit_controlled(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    """No account matches 127.0.0.1 here: with unknown_account = "allow" (the default) the
    transit call goes through as before; echo is not billable at all."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, DECK)
    carrier = await RtpPeer.open()
    try:
        uas = await carrier_uas(node, tmp_path, carrier)
        transit, echo = await asyncio.gather(
            run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="442071234567",
                     keys={"rtp_port": free_port()}, pause_ms=500),
            run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="echo",
                     keys={"rtp_port": free_port()}, pause_ms=200),
        )  # fmt: skip
        assert transit.returncode == 0, transit.output[-2000:]
        assert echo.returncode == 0, echo.output[-2000:]
        await finish_sipp(uas, 10)
    finally:
        carrier.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM reservation").fetchone() == (0,)
        await async_wait_until(lambda: len(list_cdrs(conn)) == 3, what="three legs' CDRs")
        assert {r["disposition"] for r in list_cdrs(conn)} == {"ANSWERED"}


@pytest.mark.parametrize("node", [{"reservation_grace": 60}], indirect=True)
async def test_settlement_waits_out_a_database_outage_and_debits_once(
    node: MediaNode, db_url: str, admin_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database goes away while the call is up: the hangup's settlement fails, is
    retried, and lands once when the database is back (the CDR too, from the spool)."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, DECK)
        create_account(conn, "prepaid", ips=["127.0.0.1/32"])
        topup(conn, "prepaid", "1.00")
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    admin = psycopg.connect(admin_url, autocommit=True)
    try:
        uas = await carrier_uas(node, tmp_path, carrier)
        sipp = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path,
                              service="442071234567", keys={"rtp_port": caller.port},
                              pause_ms=1500, background=True)  # fmt: skip
        await async_wait_until(lambda: any(s.channel.answered for s in node.switch.sessions),
                         what="the call answered")  # fmt: skip
        # the outage: no new connections, the pool's current ones cut
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(dbname)))  # fmt: skip
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        result = await finish_sipp(sipp, 20)
        assert result.returncode == 0, result.output[-2000:]
        await finish_sipp(uas, 10)
        await async_wait_until(lambda: "settlement failed, retrying" in caplog.text, timeout=15,
                         what="a failed settlement attempt")  # fmt: skip
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
            sql.Identifier(dbname)))  # fmt: skip
    finally:
        admin.close()
        caller.close()
        carrier.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(lambda: show(conn, "prepaid").reserved == D("0"), timeout=20,
                         what="the settlement after the outage")  # fmt: skip
        await async_wait_until(lambda: len(list_cdrs(conn)) == 2, timeout=20, what="both CDRs")
        a_leg = next(r for r in list_cdrs(conn) if not r["carrier"])
        billsec = a_leg["billsec"]
        assert billsec >= 1 and a_leg["account"] == "prepaid"
        debits = conn.execute(
            "SELECT amount FROM account_transaction WHERE kind = 'call'"
        ).fetchall()
        assert debits == [(-D("0.01") * billsec,)]  # once, 0.01 a second
        assert show(conn, "prepaid").balance == D("1.00") - D("0.01") * billsec


@pytest.mark.parametrize("node", [{"authorise_retry_for": 15}], indirect=True)
async def test_authorisation_waits_out_a_database_outage(
    node: MediaNode, db_url: str, admin_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database is unreachable when a prepaid call arrives (a PostgreSQL failover):
    with ``authorise_retry_for`` the node asks again until it is back, then the call goes
    through, reserved and debited once — instead of 503."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, DECK)
        create_account(conn, "prepaid", ips=["127.0.0.1/32"])
        topup(conn, "prepaid", "1.00")
    caller, carrier = await RtpPeer.open(), await RtpPeer.open()
    admin = psycopg.connect(admin_url, autocommit=True)
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(dbname)))  # fmt: skip
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        uas = await carrier_uas(node, tmp_path, carrier)
        sipp = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path,
                              service="442071234567", keys={"rtp_port": caller.port},
                              pause_ms=1500, background=True)  # fmt: skip
        # (1.5 s, not 1 s: billsec is whole seconds rounded down, and a 1,000 ms pause
        # left no margin — one clean-clone CI run stored billsec 0)
        await async_wait_until(lambda: "authorising again" in caplog.text, timeout=15,
                               what="a failed authorisation retried")  # fmt: skip
        assert not any(s.channel.answered for s in node.switch.sessions)
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
            sql.Identifier(dbname)))  # fmt: skip
        result = await finish_sipp(sipp, 30)
        assert result.returncode == 0, result.output[-2000:]
        await finish_sipp(uas, 10)
    finally:
        admin.close()
        caller.close()
        carrier.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(lambda: show(conn, "prepaid").reserved == D("0"), timeout=20,
                               what="the call settled")  # fmt: skip
        await async_wait_until(lambda: len(list_cdrs(conn)) == 2, timeout=20, what="both CDRs")
        a_leg = next(r for r in list_cdrs(conn) if not r["carrier"])
        assert a_leg["account"] == "prepaid" and a_leg["billsec"] >= 1
        assert conn.execute("SELECT count(*) FROM reservation").fetchone() == (1,)
        debits = conn.execute(
            "SELECT amount FROM account_transaction WHERE kind = 'call'"
        ).fetchall()
        assert debits == [(-D("0.01") * a_leg["billsec"],)]
