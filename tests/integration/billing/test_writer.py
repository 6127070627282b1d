"""The CDR writer across a real database outage: the PostgreSQL server is stopped, CDRs
go to the spool, the server is started again, the spool is replayed: exact count, no
duplicates, metrics follow."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from switchboard.billing import database
from switchboard.billing.cdr import Cdr
from switchboard.billing.spool import Spool
from switchboard.billing.writer import CdrWriter
from tests.support.net import async_wait_until
from tests.support.pg import new_server_dir

T0 = datetime.now(UTC).replace(microsecond=0)


def make(i: int, prefix: str = "w") -> Cdr:
    start = T0 + timedelta(milliseconds=i)
    return Cdr.from_times(
        f"{prefix}{i}",
        start,
        start + timedelta(seconds=40),
        start + timedelta(seconds=3),
        destination="4420794600" + str(i % 10),
        caller_id="15550001",
        carrier="acme",
        sip_code=200,
        hangup_cause="NORMAL_CLEARING",
    )


def metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


class Server:
    """A dedicated embedded PostgreSQL this module may stop and start."""

    def __init__(self) -> None:
        import pgserver

        self.root = new_server_dir("sb-writer-pg-")
        self.server = pgserver.get_server(self.root / "data", cleanup_mode="delete")
        self.url = database.ensure_database(str(self.server.get_uri()))
        database.migrate(self.url)

    def stop(self) -> None:
        import pgserver

        pgserver.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def count(self) -> tuple[int, int]:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT call_id) FROM cdr").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.start()
        s.server.cleanup()
        shutil.rmtree(s.root, ignore_errors=True)


@pytest.fixture
async def writer(server: Server, tmp_path: Path) -> AsyncIterator[CdrWriter]:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("TRUNCATE cdr, cdr_seen")
    w = CdrWriter(
        server.url, tmp_path / "spool", batch_size=300, flush_interval=0.02, retry_interval=0.1
    )
    await w.start()
    yield w
    await w.close()


async def test_outage_spools_then_replays_exactly_once(server: Server, writer: CdrWriter) -> None:
    for i in range(500):
        writer.submit(make(i))
    await writer.flush(timeout=20)
    assert server.count() == (500, 500)

    server.stop()
    try:
        for i in range(500, 1500):
            writer.submit(make(i))
        for i in range(100):  # re-sent CDRs: already stored before the outage
            writer.submit(make(i))
        await async_wait_until(lambda: writer.spool.records == 1100)
        assert metric("switchboard_cdr_spool_records") == 1100
        assert metric("switchboard_cdr_spool_bytes") == writer.spool.path.stat().st_size > 0
        assert metric("switchboard_cdr_database_up") == 0
        lag = metric("switchboard_cdr_write_lag_seconds")
        await async_wait_until(
            lambda: metric("switchboard_cdr_write_lag_seconds") > lag
        )  # still growing
        # Later CDRs keep their place behind the spooled ones.
        writer.submit(make(1500))
        await async_wait_until(lambda: writer.spool.records == 1101)
    finally:
        server.start()

    written_before = metric("switchboard_cdr_written_total")
    await writer.flush(timeout=30)
    assert server.count() == (1501, 1501)
    assert metric("switchboard_cdr_spool_records") == 0
    assert metric("switchboard_cdr_spool_bytes") == 0
    assert metric("switchboard_cdr_write_lag_seconds") == 0
    assert metric("switchboard_cdr_written_total") - written_before == 1001
    assert writer.duplicates >= 100
    assert not writer.spool.path.exists()


async def test_close_during_outage_keeps_cdrs_for_the_next_run(
    server: Server, writer: CdrWriter, tmp_path: Path
) -> None:
    server.stop()
    try:
        for i in range(250):
            writer.submit(make(i, "c"))
        await writer.close(timeout=5)
        assert writer.spool.records == 250 and writer.queued == 0
    finally:
        server.start()
    # A new process finds the spool and replays it on start.
    again = CdrWriter(server.url, tmp_path / "spool", flush_interval=0.02, retry_interval=0.1)
    await again.start()
    try:
        await again.flush(timeout=20)
    finally:
        await again.close()
    assert server.count() == (250, 250)


async def test_a_record_the_database_refuses_does_not_block_the_others(
    server: Server, writer: CdrWriter
) -> None:
    bad = Cdr(call_id="bad", start_time=T0, destination="4420", sip_code=99999)  # not a smallint
    for i in range(10):
        writer.submit(make(i, "ok"))
    writer.submit(bad)
    await writer.flush(timeout=20)
    assert server.count() == (10, 10)
    rejected = [json.loads(line) for line in writer.reject_path.read_text().splitlines()]
    assert [r["call_id"] for r in rejected] == ["bad"]
    assert "smallint" in rejected[0]["_error"] or "range" in rejected[0]["_error"]


async def test_backlog_is_written_on_parallel_connections_exactly_once(
    server: Server, writer: CdrWriter, tmp_path: Path
) -> None:
    fast = CdrWriter(server.url, tmp_path / "par", batch_size=200, connections=2)
    await fast.start()
    try:
        for i in range(2000):
            fast.submit(make(i, "par"))
        for i in range(0, 2000, 7):  # duplicates landing in batches written concurrently
            fast.submit(make(i, "par"))
        await fast.flush(timeout=30)
    finally:
        await fast.close()
    assert server.count() == (2000, 2000)
    assert (fast.written, fast.duplicates) == (2000, len(range(0, 2000, 7)))


async def test_a_database_that_hangs_never_blocks_submit_or_the_loop(tmp_path: Path) -> None:
    """A server that accepts TCP but never answers (a black hole): submit() stays O(1),
    the event loop keeps running, and the CDRs end up in the spool after connect_timeout."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # never accepted, never answered
    port = hole.getsockname()[1]
    writer = CdrWriter(
        f"host=127.0.0.1 port={port} dbname=x user=x",
        tmp_path / "hole",
        flush_interval=0.01,
        retry_interval=30,
        connect_timeout=1,
    )
    await writer.start()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        for _ in range(150):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        for i in range(2000):
            writer.submit(make(i, "hole"))
        submit_s = time.perf_counter() - started
        await async_wait_until(lambda: writer.spool.records == 2000, timeout=15)
        await tick
    finally:
        await writer.close(timeout=5)
        hole.close()
    assert submit_s < 0.5, f"2000 submits took {submit_s:.3f}s"
    assert max(gaps) < 0.5, f"event loop stalled for {max(gaps):.2f}s"


def test_spool_cuts_a_torn_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([make(1), make(2)])
    with spool.path.open("ab") as fh:
        fh.write(b'{"call_id":"w3","sta')  # the process died mid-write
    reopened = Spool(tmp_path)
    assert reopened.records == 2
    records, offset = reopened.read(10)
    assert [c.call_id for c in records] == ["w1", "w2"]
    reopened.commit(offset, 2)
    assert not reopened.path.exists() and reopened.records == 0


def test_spool_offset_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([make(i) for i in range(5)])
    records, offset = spool.read(2)
    spool.commit(offset, len(records))
    again = Spool(tmp_path)
    assert again.records == 3
    assert [c.call_id for c in again.read(10)[0]] == ["w2", "w3", "w4"]


def test_cdr_json_round_trip() -> None:
    c = make(7)
    assert Cdr.from_json(c.to_json()) == c
    assert c.duration == 40 and c.billsec == 37 and c.disposition == "ANSWERED"
