"""The status page: KPIs from real /metrics endpoints, CDRs and campaigns from PostgreSQL."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from switchboard.observability.metrics import (
    MediaMetrics,
    RouterMetrics,
    new_registry,
    render,
    serve_metrics,
)
from switchboard.observability.status import (
    PAGE_SAMPLES,
    History,
    KpiWindow,
    StatusBoard,
    StatusSources,
    Totals,
    histogram_quantile,
    parse_scrape,
    status_router,
)
from tests.support.net import async_wait_until


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    # 10 observations: 5 in (0, 0.5], 5 in (0.5, 1]
    b = [(0.5, 5.0), (1.0, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(0.5, b) == 0.5
    assert histogram_quantile(0.95, b) == pytest.approx(0.95)
    assert histogram_quantile(0.95, [(0.5, 0.0), (math.inf, 0.0)]) is None
    # everything above the last finite bound → the last finite bound, as Prometheus does
    assert histogram_quantile(0.9, [(0.5, 0.0), (math.inf, 4.0)]) == 0.5


def t(attempts: float, finished: float, answered: float, billsec: float = 0.0) -> Totals:
    return Totals(attempts, finished, answered, billsec, answered, ())


def test_kpi_window_rates_over_the_window_with_a_fake_clock() -> None:
    w = KpiWindow(cps_window=10, kpi_window=60)
    assert w.kpis(0)["cps"] is None
    w.add(0.0, t(0, 0, 0))
    w.add(5.0, t(50, 40, 30, billsec=900))
    k = w.kpis(5.0)
    assert k["cps"] == pytest.approx(10.0)
    assert k["asr"] == pytest.approx(0.75)
    assert k["acd"] == pytest.approx(30.0)
    # 100 s later: the first sample left both windows; only the last 10 s count for CPS
    w.add(100.0, t(60, 50, 30, billsec=900))
    w.add(105.0, t(70, 60, 30, billsec=900))
    k = w.kpis(105.0)
    assert k["cps"] == pytest.approx(2.0)
    assert k["asr"] == 0.0  # 10 more calls in the window, none answered
    assert k["acd"] is None


def test_kpi_window_resets_when_a_process_restarted() -> None:
    w = KpiWindow(cps_window=10, kpi_window=60)
    w.add(0.0, t(100, 100, 50))
    w.add(2.0, t(3, 2, 2))  # counters went down: a restart, not -48.5 calls/s
    w.add(4.0, t(7, 4, 2))
    k = w.kpis(4.0)
    assert k["cps"] == pytest.approx(2.0)
    assert k["asr"] == pytest.approx(0.0)


def test_history_keeps_fifteen_minutes_one_point_per_interval() -> None:
    h = History(interval=5.0)
    assert h.add(1000.0, {"active_calls": 3, "cps": 1.5, "asr": None, "extra": 9})
    assert not h.add(1002.0, {"active_calls": 4})  # a page poll between two samples
    for i in range(1, 200):
        assert h.add(1000.0 + 5 * i, {"active_calls": i})
    view = h.view()
    assert view["window"] == 900 and view["series"] == ["active_calls", "cps", "asr", "pdd_p95"]
    points = view["points"]
    assert points[-1] == {
        "t": 1995.0,
        "active_calls": 199,
        "cps": None,
        "asr": None,
        "pdd_p95": None,
    }
    assert points[0]["t"] == 1995.0 - 900 and len(points) == 181  # older points dropped


async def test_board_samples_by_itself(platform: tuple[Platform, list[str]]) -> None:
    """The charts fill from the router's start, whether or not a page is open."""
    p, urls = platform
    board = StatusBoard(StatusSources(metrics_urls=urls, history_interval=0.1))
    p.m1.active_calls.set(2)
    board.start()
    try:
        await async_wait_until(lambda: len(board.history.points) >= 3, 10, "3 samples")
        p.m2.active_calls.set(5)
        await async_wait_until(
            lambda: board.history.points[-1]["active_calls"] == 7, 10, "7 active calls"
        )
    finally:
        await board.close()
    values = [pt["active_calls"] for pt in board.history.points]
    assert values[0] == 2 and values[-1] == 7
    count = len(board.history.points)
    await asyncio.sleep(0.3)
    assert len(board.history.points) == count  # closed: no more sampling


class Platform:
    """Two media nodes and a router serving real /metrics on free loopback ports."""

    def __init__(self) -> None:
        self.router = RouterMetrics.create(reg_r := new_registry("router"))
        self.m1 = MediaMetrics.create(reg1 := new_registry("media-1"))
        self.m2 = MediaMetrics.create(reg2 := new_registry("media-2"))
        self.registries = [reg_r, reg1, reg2]
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[str]:
        urls = []
        for reg in self.registries:
            server = await serve_metrics("127.0.0.1", 0, reg)
            self.servers.append(server)
            urls.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics")
        return urls

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
            await s.wait_closed()


@pytest.fixture
async def platform() -> AsyncIterator[tuple[Platform, list[str]]]:
    p = Platform()
    urls = await p.start()
    yield p, urls
    await p.stop()


def client(sources: StatusSources) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(status_router(sources))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_summary_aggregates_every_process(platform: tuple[Platform, list[str]]) -> None:
    p, urls = platform
    dead = "http://127.0.0.1:9/metrics"  # discard port: nothing listens
    async with client(StatusSources(metrics_urls=[*urls, dead])) as c:
        first = (await c.get("/status/api/summary")).json()
        assert first["calls_total"] == 0
        assert first["asr"] is None
        p.m1.active_calls.set(3)
        p.m2.active_calls.set(4)
        for _ in range(6):
            p.m1.call_attempts.labels(direction="inbound").inc()
        p.m2.call_attempts.labels(direction="inbound").inc(4)
        p.m1.call_ended("inbound", "answered", 30)
        p.m1.call_ended("inbound", "answered", 90)
        p.m2.call_ended("inbound", "busy", 0)
        p.m2.call_ended("inbound", "failed", 0)
        p.m1.pdd.labels(gateway="carrier").observe(0.2)
        second = (await c.get("/status/api/summary")).json()
    assert second["active_calls"] == 7
    assert second["calls_total"] == 4
    assert second["asr"] == pytest.approx(0.5)
    assert second["acd"] == pytest.approx(60.0)
    assert second["cps"] > 0
    assert 0.1 < second["pdd_p95"] <= 0.25
    services = {n["url"]: (n["service"], n["up"]) for n in second["nodes"]}
    assert services[urls[0]] == ("router", True)
    assert services[urls[1]] == ("media-1", True)
    assert services[dead][1] is False
    assert next(n for n in second["nodes"] if n["url"] == dead)["error"]


async def test_page_carries_the_router_api_paths() -> None:
    sources = StatusSources(
        title="Lab switch", destinations_path="/x/dests", destination_state_path="/x/state"
    )
    async with client(sources) as c:
        r = await c.get("/status")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '"destinations": "/x/dests"' in r.text
    assert '"destinationState": "/x/state"' in r.text
    assert "<title>Lab switch" in r.text


async def test_cdrs_and_campaigns_from_postgres(db_uri: str) -> None:
    import psycopg

    with psycopg.connect(db_uri, autocommit=True) as conn:
        conn.execute(
            """CREATE TABLE cdr (id bigserial primary key, call_id varchar(255) unique,
               caller_id varchar(50), destination varchar(50), start_time timestamp,
               answer_time timestamp, end_time timestamp, duration integer, billsec integer,
               disposition varchar(20), carrier_id integer, rate numeric(10,4), cost numeric(10,4))"""
        )
        conn.execute(
            """INSERT INTO cdr (call_id, caller_id, destination, start_time, end_time,
               duration, billsec, disposition, rate, cost) VALUES
               ('a@x', '1000', '4420799', '2026-11-26 08:00:00', '2026-11-26 08:01:00', 60, 55, 'ANSWERED', 0.0100, 0.0092),
               ('b@x', '1001', '3312345', '2026-11-26 08:05:00', '2026-11-26 08:05:09', 9, 0, 'BUSY', 0.0200, 0)"""
        )
    sources = StatusSources(database_url=db_uri)
    async with client(sources) as c:
        cdrs = (await c.get("/status/api/cdrs", params={"limit": 5})).json()["cdrs"]
        # the dialer's tables do not exist yet: an empty list, not an error
        camp = (await c.get("/status/api/campaigns")).json()
        bad = await c.get("/status/api/cdrs", params={"limit": 0})
    assert [r["call_id"] for r in cdrs] == ["b@x", "a@x"]
    assert cdrs[1]["cost"] == "0.0092"  # money stays exact
    assert cdrs[1]["start_time"] == "2026-11-26T08:00:00"
    assert camp == {"campaigns": []}
    assert bad.status_code == 422


async def test_database_down_is_a_note_not_an_error() -> None:
    sources = StatusSources(database_url="postgresql://nobody@127.0.0.1:9/none")
    async with client(sources) as c:
        r = await c.get("/status/api/cdrs")
    assert r.status_code == 200
    assert r.json()["cdrs"] == []
    assert "database unavailable" in r.json()["note"]


def test_page_parser_reads_what_prometheus_client_reads() -> None:
    """The board's light parser (only the page's samples) agrees with prometheus_client's
    on every sample it keeps — label values with quotes, backslashes, newlines and braces
    included — and is not fooled by other metrics or comments."""
    reg = new_registry("media-1")
    m = MediaMetrics.create(reg)
    m.active_calls.set(3)
    for gateway in ("carrier", 'odd "gw" {1}', "back\\slash", "new\nline"):
        m.pdd.labels(gateway=gateway).observe(0.3)
    m.call_ended("inbound", "answered", 42)
    m.call_ended("outbound", "busy", 0)
    text = render(reg).decode()
    full, light = parse_scrape("u", text), parse_scrape("u", text, PAGE_SAMPLES)
    assert set(light.samples) <= PAGE_SAMPLES
    for name in PAGE_SAMPLES:
        assert light.samples.get(name) == full.samples.get(name), name
    assert light.total("switchboard_media_active_calls") == 3
    assert {lb["gateway"] for lb, _ in light.samples["switchboard_media_pdd_seconds_bucket"]} == {
        "carrier", 'odd "gw" {1}', "back\\slash", "new\nline",
    }  # fmt: skip
    with pytest.raises(ValueError):
        parse_scrape("u", 'voip_calls_total{disposition="answered" 1\n', PAGE_SAMPLES)
