"""``switchboard status`` through a real pseudo-terminal (pexpect), as an operator on a
server without a browser sees it: KPIs, 15-minute sparklines, destinations, trunks and
processes from a router admin app (the status page's own endpoints on real /metrics),
redrawn in place when the numbers change; the router going away and coming back; Ctrl-C;
``--once`` for scripts (exit 0, or 3 when the router cannot be reached)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import uvicorn
from fastapi import FastAPI

from switchboard.observability.metrics import MediaMetrics, new_registry, serve_metrics
from switchboard.observability.status import StatusSources, status_router
from switchboard.status_term import sparkline
from tests.support.net import free_port

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[3]


def env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return {**keep, "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}


class Admin:
    """A router admin app: the status page's endpoints plus /destinations and /trunks."""

    def __init__(self, metrics_url: str) -> None:
        self.port = free_port("tcp")
        self.app = FastAPI()

        async def cdrs(limit: int) -> list[dict[str, Any]]:
            self.cdr_limit = limit
            return [
                {"call_id": "c1", "caller_id": "4930123", "destination": "4420794601",
                 "start_time": "2026-12-07T10:00:01+00:00", "disposition": "ANSWERED",
                 "billsec": 42, "cost": "0.0090"},
            ]  # fmt: skip

        async def campaigns() -> list[dict[str, Any]]:
            return [
                {"name": "winter-sale", "status": "running", "contacts": 100, "done": 40,
                 "attempts": 55, "answered": 31, "in_progress": 3},
            ]  # fmt: skip

        self.cdr_limit = 0
        self.app.include_router(
            status_router(
                StatusSources(
                    metrics_urls=[metrics_url],
                    history_interval=0.5,
                    cdrs=cdrs,
                    campaigns=campaigns,
                )
            )
        )

        @self.app.get("/destinations")
        async def destinations() -> list[dict[str, Any]]:
            return [
                {"set": 1, "uri": "sip:127.0.0.1:5081", "state": "active",
                 "active_calls": 4, "probe_latency_ms": 0.7},
                {"set": 1, "uri": "sip:127.0.0.1:5082", "state": "inactive",
                 "active_calls": 0, "probe_latency_ms": None},
            ]  # fmt: skip

        @self.app.get("/trunks")
        async def trunks() -> list[dict[str, Any]]:
            return [
                {"name": "carrier-a", "direction": "inbound", "active_calls": 2,
                 "calls_per_second": 0.5, "admitted": 12, "calls": {"answered": 9},
                 "rejected": {"cps": 1, "max_calls": 2}, "pdd_avg_ms": 120},
            ]  # fmt: skip

        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = self.task = None


@pytest.fixture
async def media() -> AsyncIterator[tuple[MediaMetrics, str]]:
    metrics = MediaMetrics.create(reg := new_registry("media-1"))
    server = await serve_metrics("127.0.0.1", 0, reg)
    yield metrics, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    server.close()


def expect(child: pexpect.spawn, pattern: str, timeout: float = 20) -> Any:
    return asyncio.to_thread(child.expect, pattern, timeout=timeout)


def test_sparkline_columns_scale_and_gaps() -> None:
    pts: list[tuple[float, float | None]] = [(0.0, 0.0), (3.0, 5.0), (6.0, None), (9.0, 10.0)]
    assert sparkline(pts, 4, end=10.0, window=10.0) == "▁▅ █"
    assert sparkline(pts, 4, end=10.0, window=10.0, top=20.0) == "▁▃ ▅"
    assert sparkline([], 3, end=5.0, window=10.0) == "   "
    assert sparkline([(10.0, 0.0)], 2, end=10.0, window=10.0) == " ▁"  # all zero: the floor


async def test_status_in_a_terminal(media: tuple[MediaMetrics, str], tmp_path: Path) -> None:
    metrics, url = media
    admin = Admin(url)
    await admin.start()
    metrics.active_calls.set(7)
    for _ in range(4):
        metrics.call_ended("inbound", "answered", 30)
    metrics.call_ended("inbound", "busy", 0)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard.cli", "status", "--url", f"http://127.0.0.1:{admin.port}",
         "--interval", "0.5"],
        env=env(), encoding="utf-8", dimensions=(45, 100), timeout=20,
    )  # fmt: skip
    try:
        await expect(child, r"active calls \x1b\[1m7\x1b\[0m")
        await expect(child, r"ASR \x1b\[1m80\.0 %")
        await expect(child, r"calls \x1b\[1m5\b")
        await expect(child, r"sip:127\.0\.0\.1:5082[^\n]*inactive")
        await expect(child, r"carrier-a[^\n]*inbound[^\n]*\b2\b[^\n]*0\.5[^\n]*12[^\n]*9[^\n]*3")
        await expect(child, r"media-1[^\n]*up")
        # the sparkline row of active calls: a flat line at the top (7 of max 7)
        await expect(child, r"active calls[^\n]*7[^\n]*7[^\n]*█")
        metrics.active_calls.set(3)  # redrawn in place, no key pressed
        await expect(child, r"active calls \x1b\[1m3\x1b\[0m")
        await expect(child, r"active calls[^\n]*3[^\n]*7[^\n]*[▃▄]")  # max stays 7: lower block

        await admin.stop()  # the router goes away: said on screen, the display keeps going
        await expect(child, r"cannot reach the router at http://127\.0\.0\.1:\d+")
        await admin.start()
        await expect(child, r"active calls \x1b\[1m3\x1b\[0m")
        child.sendintr()  # Ctrl-C leaves, exit 0
        await asyncio.to_thread(child.expect, pexpect.EOF, timeout=10)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)
        await admin.stop()


async def test_once_for_scripts(media: tuple[MediaMetrics, str]) -> None:
    metrics, url = media
    admin = Admin(url)
    await admin.start()
    metrics.active_calls.set(2)
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "switchboard.cli", "status", "--once", *a],
            env={**env(), "COLUMNS": "80"}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        ok = await asyncio.to_thread(run, "--url", f"http://127.0.0.1:{admin.port}")
        assert ok.returncode == 0, ok.stderr
        assert re.search(r"active calls 2\b", ok.stdout) and "media-1" in ok.stdout
        assert "\x1b[" not in ok.stdout  # not a terminal: no colours
        assert max(len(line) for line in ok.stdout.splitlines()) <= 80
        # the page's lower tables too: recent calls (5 of them) and campaigns
        assert re.search(r"12-07 10:00:01 +4930123 +4420794601 +ANSWERED +42 +0\.0090", ok.stdout)
        assert admin.cdr_limit == 5
        assert re.search(r"winter-sale +running +100 +40 +55 +31 +3", ok.stdout)
    finally:
        await admin.stop()
    away = await asyncio.to_thread(run, "--url", f"http://127.0.0.1:{free_port('tcp')}")
    assert away.returncode == 3
    assert "cannot reach the router" in away.stdout
