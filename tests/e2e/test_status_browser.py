"""The status page's own JavaScript in headless Chromium (Debian `chromium`, over the
DevTools pipe): KPIs rendered from real /metrics endpoints, destination rows from a router
admin API, a Drain click that POSTs the state change and re-renders the row, the trunk
table, and the 15-minute charts drawn (inline SVG) from the page's history — their data
checked against /status/api/history and a screenshot taken.

The full-platform version (the real router, a drain that changes routing) is
tests/e2e/test_platform_up.py; this one keeps the page covered on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from switchboard.observability.metrics import MediaMetrics, new_registry, serve_metrics
from switchboard.observability.status import StatusSources, status_router
from tests.support.platform_harness import Chromium

pytestmark = [
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium missing"),
    pytest.mark.timeout(90),
]


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $STATUS_SCREENSHOT_DIR to keep them, else the test's tmp dir."""
    out = Path(os.environ.get("STATUS_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_page_renders_live_data_and_drain_posts_the_change(tmp_path: Path) -> None:
    media = MediaMetrics.create(reg := new_registry("media-1"))
    metrics_server = await serve_metrics("127.0.0.1", 0, reg)
    metrics_url = f"http://127.0.0.1:{metrics_server.sockets[0].getsockname()[1]}/metrics"

    # the router admin API's contract (switchboard.router.admin): GET list, POST state
    dests = [
        {
            "set": 1,
            "uri": "sip:127.0.0.1:5081",
            "state": "active",
            "active_calls": 2,
            "probe_latency_ms": 0.4,
        },
        {
            "set": 1,
            "uri": "sip:127.0.0.1:5082",
            "state": "inactive",
            "active_calls": 0,
            "probe_latency_ms": None,
        },
    ]
    posted: list[dict[str, Any]] = []
    app = FastAPI()
    app.include_router(
        status_router(StatusSources(metrics_urls=[metrics_url], title="Lab", history_interval=0.5))
    )
    trunks = [
        {
            "name": "carrier-a",
            "direction": "inbound",
            "active_calls": 2,
            "calls_per_second": 0.5,
            "admitted": 12,
            "calls": {"answered": 9, "busy": 2},
            "rejected": {"cps": 1, "max_calls": 2},
            "pdd_avg_ms": 120,
        }
    ]

    @app.get("/trunks")
    async def trunk_list() -> list[dict[str, Any]]:
        return trunks

    @app.get("/destinations")
    async def destinations() -> list[dict[str, Any]]:
        return dests

    @app.post("/destinations/state")
    async def set_state(change: dict[str, Any]) -> dict[str, Any]:
        posted.append(change)
        for d in dests:
            if d["uri"] == change["uri"] and d["set"] == change["set"]:
                d["state"] = change["state"]
        return change

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    media.active_calls.set(7)
    for _ in range(4):
        media.call_ended("inbound", "answered", 30)
    media.call_ended("inbound", "busy", 0)

    browser = await asyncio.to_thread(Chromium)
    try:
        await asyncio.to_thread(browser.open, f"http://127.0.0.1:{port}/status")
        wait = lambda expr: asyncio.to_thread(browser.wait_js, expr)  # noqa: E731
        await wait("document.getElementById('kpi-active').textContent === '7'")
        await wait("document.getElementById('kpi-calls').textContent === '5'")
        assert await asyncio.to_thread(browser.js, "document.title") == "Lab status"
        await wait(
            "document.querySelector('#destinations tr[data-uri=\"sip:127.0.0.1:5082\"]')"
            "?.dataset.state === 'inactive'"
        )
        row = '#destinations tr[data-uri="sip:127.0.0.1:5081"]'
        assert (
            await asyncio.to_thread(
                browser.js, f"document.querySelector('{row} button').textContent"
            )
            == "Drain"
        )
        await asyncio.to_thread(browser.click, f"{row} button")
        await wait(f"document.querySelector('{row}').dataset.state === 'disabled'")
        assert posted == [{"set": 1, "uri": "sip:127.0.0.1:5081", "state": "disabled"}]
        assert (
            await asyncio.to_thread(
                browser.js, f"document.querySelector('{row} button').textContent"
            )
            == "Enable"
        )
        # KPIs follow new data without a reload
        media.active_calls.set(3)
        await wait("document.getElementById('kpi-active').textContent === '3'")
        # the processes table says the metrics endpoint is up, as "media-1"
        await wait("document.querySelector('#nodes tbody').textContent.includes('media-1')")

        # the trunk table: one row, rejections summed
        row_text = await wait(
            "document.querySelector('#trunks tr[data-trunk=\"carrier-a\"]')?.textContent"
        )
        assert row_text == "carrier-ainbound20.51293120 ms"
        assert (
            await asyncio.to_thread(browser.js, "document.getElementById('trunks-section').hidden")
            is False
        )

        # the charts: active calls went 7 → 3 → 5 while the page polled; then, inside
        # the 5-minute window, 3 answered of 4 calls (ASR 75 %) and one PDD of 200 ms
        await wait("Number(document.body.dataset.historyPoints) >= 4")
        media.active_calls.set(5)
        for _ in range(3):
            media.call_ended("inbound", "answered", 20)
        media.call_ended("inbound", "busy", 0)
        media.pdd.labels(gateway="carrier").observe(0.2)
        await wait(
            "JSON.parse(document.getElementById('chart-pdd_p95').dataset.values || '[]').at(-1) > 0"
        )
        chart = await asyncio.to_thread(
            browser.js,
            "Object.fromEntries(['active_calls', 'cps', 'asr', 'pdd_p95'].map(k => [k, {"
            " values: JSON.parse(document.getElementById('chart-' + k).dataset.values),"
            " times: JSON.parse(document.getElementById('chart-' + k).dataset.times),"
            " lines: document.querySelectorAll('#chart-' + k + ' polyline').length,"
            " now: document.querySelector('#chart-' + k + ' .now').textContent}]))",
        )
        active = [v for v in chart["active_calls"]["values"] if v is not None]
        assert active[0] == 7 and 3 in active and active[-1] == 5
        assert active.index(3) > active.index(7)  # in time order
        assert chart["active_calls"]["now"] == "5" and chart["active_calls"]["lines"] >= 1
        asr = chart["asr"]["values"]
        assert asr[0] == pytest.approx(80.0) and asr[-1] == pytest.approx(75.0)
        assert chart["asr"]["now"] == "75.0 %"
        pdd = chart["pdd_p95"]["values"]
        assert pdd[0] is None and 100 < pdd[-1] <= 250  # ms, inside the 0.1-0.25 s bucket
        assert chart["pdd_p95"]["lines"] == 1 and chart["pdd_p95"]["now"].endswith(" ms")
        # what the page drew is what the server's history holds, point for point
        history = json.loads(
            await asyncio.to_thread(
                browser.js,
                "fetch('/status/api/history').then(r => r.text())",
            )
        )
        assert history["window"] == 900 and history["series"] == [
            "active_calls", "cps", "asr", "pdd_p95",
        ]  # fmt: skip
        by_time = {p["t"]: p for p in history["points"]}
        for t, v in zip(
            chart["active_calls"]["times"], chart["active_calls"]["values"], strict=True
        ):
            assert by_time[t]["active_calls"] == v
        for t, v in zip(chart["asr"]["times"], chart["asr"]["values"], strict=True):
            assert v is None or by_time[t]["asr"] * 100 == pytest.approx(v)
        times = chart["active_calls"]["times"]
        assert times == sorted(times) and all(b - a >= 0.45 for a, b in itertools.pairwise(times))
        png = await asyncio.to_thread(
            browser.screenshot, screenshot_dir(tmp_path) / "status-page.png"
        )
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    finally:
        await asyncio.to_thread(browser.close)
        server.should_exit = True
        await serving
        metrics_server.close()
