"""The status page's own JavaScript in headless Chromium (Debian `chromium`, over the
DevTools pipe): KPIs rendered from real /metrics endpoints, destination rows from a router
admin API, and a Drain click that POSTs the state change and re-renders the row.

The full-platform version (the real router, a drain that changes routing) is
tests/e2e/test_platform_up.py; this one keeps the page covered on its own.
"""

from __future__ import annotations

import asyncio
import shutil
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


async def test_page_renders_live_data_and_drain_posts_the_change() -> None:
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
    app.include_router(status_router(StatusSources(metrics_urls=[metrics_url], title="Lab")))

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
    finally:
        await asyncio.to_thread(browser.close)
        server.should_exit = True
        await serving
        metrics_server.close()
