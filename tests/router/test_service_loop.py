"""The router process's loop hygiene: garbage collection off the hot path."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from switchboard import config
from switchboard.router import service
from switchboard.router.service import Router


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cfg() -> config.Config:
    return config.load(
        overrides={
            "router": {
                "listen": [f"udp:127.0.0.1:{_free_port()}"],
                "admin": f"127.0.0.1:{_free_port()}",
            },
            "dispatcher": {"destinations": ["sip:127.0.0.1:5999"], "ping_interval": 60.0},
        },
        environ={},
    )


async def test_automatic_gc_is_off_while_running_and_collections_are_scheduled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "GC_CHECK", 0.02)
    monkeypatch.setattr(service, "GC_ALLOCATIONS", 1000)
    assert gc.isenabled()
    router = Router(_cfg())
    await router.start()
    try:
        assert not gc.isenabled()  # no collector pauses in the middle of a message
        # Container garbage piling up past GC_ALLOCATIONS triggers the router's own
        # collection from its timer (cycles made anywhere are still reclaimed).
        junk = []
        for _ in range(2000):
            a: list[object] = []
            a.append(a)
            junk.append(a)
        del junk, a
        for _ in range(100):
            if router.gc_collections:
                break
            await asyncio.sleep(0.02)
        assert router.gc_collections >= 1
        assert gc.get_count()[0] < 1000
    finally:
        await router.stop()
    assert gc.isenabled()  # restored for whatever runs in this process next


async def test_periodic_full_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "GC_CHECK", 0.02)
    monkeypatch.setattr(service, "GC_INTERVAL", 0.05)
    router = Router(_cfg())
    await router.start()
    try:
        for _ in range(100):
            if router.gc_collections >= 2:
                break
            await asyncio.sleep(0.02)
        assert router.gc_collections >= 2
    finally:
        await router.stop()
