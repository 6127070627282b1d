"""The router process's loop hygiene: garbage collection off the hot path."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from switchboard import config
from switchboard.router import service
from switchboard.router.service import Router
from tests.support.net import free_port


def _cfg() -> config.Config:
    return config.load(
        overrides={
            "router": {
                "listen": [f"udp:127.0.0.1:{free_port()}"],
                "admin": f"127.0.0.1:{free_port()}",
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


def _invite(port: int, n: int, to_tag: str = "") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"INVITE sip:echo@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-shed-{n};rport\r\n"
        f"From: <sip:a@127.0.0.1>;tag=f{n}\r\nTo: <sip:echo@127.0.0.1>{tag}\r\n"
        f"Call-ID: shed-{n}@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:a@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _recv_all(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


async def test_receive_queue_probe_measures_the_wait_and_does_not_shed_when_idle() -> None:
    router = Router(_cfg())
    await router.start()
    try:
        await asyncio.sleep(service.QUEUE_PROBE * 5)
        assert 0.0 < router.queue_delay < service.SHED_DELAY
        assert not router.shedding
        # Probes are recognised by their source (the router's own probe socket) only: a
        # peer sending the same bytes reaches the proxy like any other datagram.
        before = router.proxy.stats.bad_messages
        router.on_datagram(service.QUEUE_MAGIC + b"0.0", ("127.0.0.1", 9))
        assert router.proxy.stats.bad_messages == before + 1
        assert not router.shedding
    finally:
        await router.stop()


async def test_overload_sheds_new_invites_with_503_until_the_queue_drains() -> None:
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind(("127.0.0.1", 0))
    uac.setblocking(False)
    port = uac.getsockname()[1]
    src = ("127.0.0.1", port)
    router = Router(_cfg())
    await router.start()
    # The probe keeps measuring the (idle) queue; drive the measured wait by hand.
    assert router._qprobe_timer is not None
    router._qprobe_timer.cancel()
    try:
        # A call accepted before the overload: its retransmission is never shed.
        router.on_datagram(_invite(port, 0), src)
        await asyncio.sleep(0.05)
        assert any(d.startswith(b"SIP/2.0 100") for d in _recv_all(uac))
        router._queue_delay(service.SHED_DELAY / 2)
        assert not router.shedding  # a short queue is normal
        router._queue_delay(service.SHED_ALL)
        assert router.shedding
        router.on_datagram(_invite(port, 1), src)  # new call: shed
        router.on_datagram(_invite(port, 0), src)  # retransmission: the proxy answers
        router.on_datagram(_invite(port, 2, to_tag="x"), src)  # in-dialog: not shed
        await asyncio.sleep(0.05)
        got = _recv_all(uac)
        shed = [d for d in got if d.startswith(b"SIP/2.0 503")]
        assert len(shed) == 1
        assert b"Call-ID: shed-1@test" in shed[0]
        assert b"\r\nRetry-After: " in shed[0]
        assert b"branch=z9hG4bK-shed-1;rport" in shed[0]
        assert b"To: <sip:echo@127.0.0.1>;tag=" in shed[0]
        assert any(b"Call-ID: shed-0@test" in d and d.startswith(b"SIP/2.0 100") for d in got)
        assert router.shed_total == 1
        assert router.proxy.stats.replies[503] == 1
        # Half-way between SHED_DELAY and SHED_ALL: every second new INVITE is shed.
        router._queue_delay((service.SHED_DELAY + service.SHED_ALL) / 2)
        for n in range(10, 20):
            router.on_datagram(_invite(port, n), src)
        await asyncio.sleep(0.05)
        got = _recv_all(uac)
        assert len([d for d in got if d.startswith(b"SIP/2.0 503")]) == 5
        assert len([d for d in got if d.startswith(b"SIP/2.0 100")]) == 5
        # The queue drained: no more shedding.
        router._queue_delay(0.001)
        assert not router.shedding
        router.on_datagram(_invite(port, 3), src)
        await asyncio.sleep(0.05)
        got = _recv_all(uac)
        assert any(b"Call-ID: shed-3@test" in d and d.startswith(b"SIP/2.0 100") for d in got)
        assert router.shed_total == 6
    finally:
        await router.stop()
        uac.close()
