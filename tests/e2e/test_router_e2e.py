"""The edge router against real SIPp peers on 127.0.0.0/8 (free ports only).

SIPp UAC → router → two SIPp UAS, with Record-Route honoured both ways: the UAS copy
Record-Route into their responses, the UAC sends ACK and BYE to the route set
(tests/data/sipp/router_*.xml). A SIPp exit code of 0 means every call of its run
completed as the scenario says; UAS runs with ``-m N`` prove where calls went.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.router.dispatcher import DestinationState
from tests.support.net import async_wait_until, free_port
from tests.support.platform_harness import alive
from tests.support.router import (
    admin_url,
    both_active,
    expect_scenario,
    router_sections,
    running_router,
    uac_args,
    uas_pair,
    write_config,
)
from tests.support.sipp import SCENARIOS, SIPP, SippPeer  # noqa: F401 (SCENARIOS: see below)

# The harness moved to tests/support (router.py, sipp.py, net.py); SCENARIOS, Sipp and
# wait_for stay importable from here until branches written against the old place have
# landed. New code imports from tests.support.
Sipp = SippPeer
wait_for = async_wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# ---------------------------------------------------------------------------- calls


@pytest.mark.parametrize(
    ("uac_transport", "uas_transport"),
    [("u1", "u1"), ("t1", "t1"), ("u1", "t1")],
    ids=["udp", "tcp", "udp-caller-tcp-media-node"],
)
async def test_calls_complete_and_alternate(
    workdir: Path, uac_transport: str, uas_transport: str
) -> None:
    a, b, pa, pb = await uas_pair(
        workdir, "router_uas.xml", "router_uas.xml", transport=uas_transport
    )
    suffix = ";transport=tcp" if uas_transport == "t1" else ""
    rport = free_port()
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{pa}{suffix}", f"sip:127.0.0.1:{pb}{suffix}"]
    )
    try:
        async with running_router(workdir, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="both media nodes answering OPTIONS"
            )
            uac = await SippPeer.start(
                workdir, "router_uac.xml", *uac_args(rport, 8, transport=uac_transport)
            )
            await uac.ok()
            await a.wait_received("INVITE", 4)  # each UAS took 4 of the 8 calls: they alternated
            await b.wait_received("INVITE", 4)
            await b.wait_received("BYE", 4)  # ACK and BYE came through the router
            stats = router.proxy.stats
            assert (
                stats.requests["INVITE"] == 8
                and stats.requests["BYE"] == 8
                and stats.requests["ACK"] == 8
            )
            assert router.proxy.dialog_count == 0
    finally:
        a.kill()
        b.kill()


async def test_failover_on_503(workdir: Path) -> None:
    busy, good, pa, pb = await uas_pair(workdir, "router_uas_503.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            await async_wait_until(lambda: both_active(router), what="probing")
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 6))
            await uac.ok()  # the caller saw only the successful answers
            await busy.wait_received("INVITE", 3)  # 3 calls were tried on the busy node first...
            await busy.wait_received("ACK", 3)  # (the router ACKed its 503s hop-by-hop)
            await good.wait_received("INVITE", 6)  # ...and all 6 ended on the good one
            assert router.proxy.stats.failovers == 3
    finally:
        busy.kill()
        good.kill()


async def test_failover_on_killed_media_node_and_recovery_by_probing(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            await async_wait_until(lambda: both_active(router), what="probing")
            dest_a = router.proxy.dispatcher.find(1, f"sip:127.0.0.1:{pa}")
            assert dest_a is not None
            a.kill()
            await a.proc.wait()
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 6, rate=10))
            await uac.ok()  # no failed call: timed-out branches failed over
            await async_wait_until(
                lambda: dest_a.state is DestinationState.INACTIVE, what="dead node inactive"
            )
            # the media node comes back on the same port; probing makes it active again
            a = await SippPeer.start(workdir, "router_uas.xml", "-aa", "-trace_msg", port=pa)
            await async_wait_until(
                lambda: dest_a.state is DestinationState.ACTIVE, what="recovered node active"
            )
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 4, rate=10))
            await uac.ok()
            await a.wait_received("INVITE", 2)  # it takes its share of calls again
    finally:
        a.kill()
        b.kill()


async def test_cancel_before_answer(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas_cancel.xml", "router_uas_cancel.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            await async_wait_until(lambda: both_active(router), what="probing")
            uac = await SippPeer.start(
                workdir, "router_uac_cancel.xml", *uac_args(rport, 4, rate=10)
            )
            await uac.ok()  # 200 for CANCEL, 487 for the INVITE, at the caller
            for uas in (a, b):  # each UAS got the CANCEL and the router's ACK for its 487
                await uas.wait_received("CANCEL", 2)
                await uas.wait_received("ACK", 2)
            assert router.proxy.stats.replies.get(487) == 4
            assert router.proxy.stats.failovers == 0
    finally:
        a.kill()
        b.kill()


# ---------------------------------------------------------------------------- protection


async def test_acl_rejects_calls_from_outside_with_403(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            outsider = await SippPeer.start(
                workdir, expect_scenario(workdir, 403), *uac_args(rport, 3), ip="127.0.0.2"
            )
            await outsider.ok()
            assert router.proxy.stats.acl_rejects == 3
            assert router.proxy.stats.requests["INVITE"] == 3
            assert router.proxy.stats.transactions_total == 0  # nothing was forwarded
    finally:
        a.kill()
        b.kill()


async def test_flood_from_one_source_is_blocked_while_carrier_continues(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(
        rport,
        [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"],
        # The carrier on 127.0.0.1 is a trunk address (trunk limits govern it, not pike);
        # the flood comes from a stranger, 127.0.0.3, which pike counts.
        acl={"allow": ["127.0.0.1"]},
        pike={"sampling_time_unit": 1, "reqs_density_per_unit": 100, "ban_seconds": 30},
    )
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.3", 0))
    flood.setblocking(False)
    fport = flood.getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING, logger="switchboard.router"):
            async with running_router(workdir, sections) as router:
                carrier = await SippPeer.start(
                    workdir, "router_uac.xml", *uac_args(rport, 20, rate=10)
                )
                sent = 0
                for burst in range(30):  # 3,000 OPTIONS in ~1.5 s, bounded
                    for i in range(100):
                        n = burst * 100 + i
                        flood.sendto(
                            (
                                f"OPTIONS sip:127.0.0.1:{rport} SIP/2.0\r\n"
                                f"Via: SIP/2.0/UDP 127.0.0.3:{fport};branch=z9hG4bK-fl{n}\r\n"
                                f"From: <sip:x@127.0.0.3>;tag=f{n}\r\nTo: <sip:y@127.0.0.1>\r\n"
                                f"Call-ID: flood-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                                "Content-Length: 0\r\n\r\n"
                            ).encode(),
                            ("127.0.0.1", rport),
                        )
                        sent += 1
                    await asyncio.sleep(0.05)
                await carrier.ok()  # the carrier's 20 calls all completed
                replies = []
                with contextlib.suppress(BlockingIOError):
                    while True:
                        replies.append(flood.recv(65535).split(b"\r\n", 1)[0])
                assert router.proxy.pike is not None
                assert router.proxy.pike.is_banned("127.0.0.3", router.loop.time())
                assert not router.proxy.pike.is_banned("127.0.0.1", router.loop.time())
                assert b"SIP/2.0 503 Too Many Requests" in replies
                assert len(replies) < sent / 2  # most of the flood was dropped silently
                assert router.proxy.stats.pike_blocks == 1
    finally:
        flood.close()
        a.kill()
        b.kill()
    warnings = [r.getMessage() for r in caplog.records if "RATE LIMIT" in r.getMessage()]
    assert warnings == ["RATE LIMIT: 127.0.0.3"]


async def test_each_router_of_a_pair_keeps_its_own_pike_counts(workdir: Path) -> None:
    """Two routers on one configuration (an HA pair: docs/operations.md "What each router
    keeps to itself"): a stranger's flood banned by one is not banned by the other, which
    has counted none of it and still answers the stranger (403, the acl's answer, not
    pike's 503) — pike's counters and bans are
    per router, so a stranger spreading a flood over the pair gets up to twice the
    density before either bans it."""
    ports = [free_port(), free_port()]
    pike = {"sampling_time_unit": 1, "reqs_density_per_unit": 50, "ban_seconds": 30}
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))
    sport = stranger.getsockname()[1]

    def options(n: int, rport: int) -> bytes:
        return (
            f"OPTIONS sip:127.0.0.1:{rport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.3:{sport};branch=z9hG4bK-pp{n}\r\n"
            f"From: <sip:x@127.0.0.3>;tag=p{n}\r\nTo: <sip:y@127.0.0.1>\r\n"
            f"Call-ID: pair-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    async def reply_to(n: int, rport: int) -> bytes:
        stranger.sendto(options(n, rport), ("127.0.0.1", rport))
        loop = asyncio.get_running_loop()
        while True:
            # the answer of the router asked: the first one may still be answering the
            # flood below (its late 503s once reached this read: a flaky failure)
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(stranger, 65535), 5)
            if addr[1] == rport and f"pair-{n}\r\n".encode() in data:
                return data.split(b"\r\n", 1)[0]

    stranger.setblocking(False)
    try:
        async with contextlib.AsyncExitStack() as stack:
            routers = []
            for i, rport in enumerate(ports):
                (workdir / f"r{i}").mkdir()
                sections = router_sections(
                    rport, ["sip:127.0.0.1:9"], acl={"allow": ["127.0.0.1"]}, pike=pike
                )
                routers.append(
                    await stack.enter_async_context(running_router(workdir / f"r{i}", sections))
                )
            one, two = routers
            # a stranger outside the acl is answered 403 by either router until pike bans it
            assert await reply_to(0, ports[1]) == b"SIP/2.0 403 Forbidden"
            for n in range(1, 201):  # 200 requests in ~0.2 s to the first: 4x its density
                stranger.sendto(options(n, ports[0]), ("127.0.0.1", ports[0]))
                if n % 20 == 0:
                    await asyncio.sleep(0.02)
            now = one.loop.time()
            assert one.proxy.pike is not None and two.proxy.pike is not None
            await async_wait_until(
                lambda: one.proxy.pike.is_banned("127.0.0.3", one.loop.time()), 5,
                "the first router bans the stranger",
            )  # fmt: skip
            assert one.proxy.stats.pike_blocks == 1
            # the second saw one request of it: no ban, nothing counted against it
            assert not two.proxy.pike.is_banned("127.0.0.3", now)
            assert two.proxy.stats.pike_blocks == 0
            with contextlib.suppress(BlockingIOError):
                while stranger.recv(65535):  # what the first answered, out of the way
                    pass
            assert await reply_to(1000, ports[1]) == b"SIP/2.0 403 Forbidden"  # not 503
    finally:
        stranger.close()


async def test_malformed_oversized_and_tcp_garbage_do_not_disturb_calls(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 20, rate=20))
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(2)
                for junk in (
                    b"\x00\xff\xfe garbage",
                    b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKj\r\n\r\n",
                    b"INVITE sip:x@y SIP/2.0\r\n" + b"X-Big: " + b"a" * 60000 + b"\r\n\r\n",
                    os.urandom(1200),
                ):
                    s.sendto(junk, ("127.0.0.1", rport))
                    await asyncio.sleep(0.02)
                s.sendto(
                    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKbad\r\n"
                    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad\r\nCSeq: one OPTIONS\r\n\r\n"
                    % s.getsockname()[1],
                    ("127.0.0.1", rport),
                )
                answer = await loop.run_in_executor(None, s.recv, 65535)
                assert answer.startswith(b"SIP/2.0 400 ")
            for junk in (
                os.urandom(3000),
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
                b"A" * 70000,
            ):
                _, w = await asyncio.open_connection("127.0.0.1", rport)
                w.write(junk)
                await w.drain()
                await asyncio.sleep(0.05)
                w.close()
            await uac.ok()
            assert router.proxy.stats.bad_messages >= 3
    finally:
        a.kill()
        b.kill()


# ---------------------------------------------------------------------------- admin API


async def test_admin_api_drain_reload_stats_metrics(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}"])
    try:
        async with (
            running_router(workdir, sections) as router,
            httpx.AsyncClient(base_url=admin_url(router)) as http,
        ):
            assert (await http.get("/status")).status_code == 200  # the platform status page
            spec = (await http.get("/openapi.json")).json()
            assert "/destinations/state" in spec["paths"] and "/reload" in spec["paths"]
            # reload adding a destination, without dropping anything
            write_config(
                workdir / "router.toml",
                router_sections(
                    rport,
                    [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"],
                    router={"admin": sections["router"]["admin"]},
                ),
            )
            r = await http.post("/reload")
            assert r.status_code == 200 and r.json()["destinations"] == 2
            await async_wait_until(lambda: both_active(router), what="new destination probed")
            dests = (await http.get("/destinations")).json()
            assert [(d["uri"], d["state"], d["flags"]) for d in dests] == [
                (f"sip:127.0.0.1:{pa}", "active", "AP"),
                (f"sip:127.0.0.1:{pb}", "active", "AP"),
            ]
            assert all(d["probe_latency_ms"] is not None for d in dests)
            # a long call on A (first in round-robin), then drain A: the call continues,
            # new calls go to B only
            long_call = await SippPeer.start(
                workdir, "router_uac.xml", *uac_args(rport, 1, hold_ms=1500)
            )
            await async_wait_until(
                lambda: router.proxy.dialog_count == 1, what="the long call answered"
            )
            r = await http.post(
                "/destinations/state", json={"uri": f"sip:127.0.0.1:{pa}", "state": "disabled"}
            )
            assert r.status_code == 200 and r.json()["flags"] == "DP"
            assert (await http.get("/destinations")).json()[0]["active_calls"] == 1
            stats = (await http.get("/stats")).json()
            assert stats["dialogs"] == 1 and stats["transactions"] >= 1
            short = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 3))
            await short.ok()
            await long_call.ok()  # its BYE still reached the drained node
            await a.wait_received("INVITE", 1)  # A had exactly its one call (and its BYE)
            await a.wait_received("BYE", 1)
            await b.wait_received("INVITE", 3)  # B all three new ones
            bad = await http.post(
                "/destinations/state", json={"uri": "sip:nowhere", "state": "disabled"}
            )
            assert bad.status_code == 404
            bad = await http.post(
                "/destinations/state", json={"uri": f"sip:127.0.0.1:{pa}", "state": "asleep"}
            )
            assert bad.status_code == 422
            text = (await http.get("/metrics")).text
            for name in (
                'switchboard_router_requests_total{method="INVITE"} 4.0',
                'switchboard_router_replies_total{code="200"}',
                "switchboard_router_transactions_current ",
                "switchboard_router_transactions_total ",
                f'switchboard_router_destination_up{{set="1",uri="sip:127.0.0.1:{pa}"}} 0.0',
                f'switchboard_router_destination_state{{set="1",state="disabled",uri="sip:127.0.0.1:{pa}"}} 1.0',
                "switchboard_router_failovers_total 0.0",
                "switchboard_router_acl_rejects_total",
                "switchboard_router_pike_blocks_total",
                "switchboard_router_forwarding_latency_seconds_bucket",
                # what every process exports: the status page's row for the router
                'switchboard_build_info{service="router"',
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
            ):
                assert name in text, name
            # a broken file is refused and changes nothing
            (workdir / "router.toml").write_text("[dispatcher]\nalgorithm = 7\n")
            r = await http.post("/reload")
            assert r.status_code == 400 and "algorithm" in r.json()["detail"]
            assert len((await http.get("/destinations")).json()) == 2
    finally:
        a.kill()
        b.kill()


# ---------------------------------------------------------------------------- lifecycle


async def start_cli(tmp: Path, sections: dict[str, dict[str, Any]]) -> asyncio.subprocess.Process:
    path = write_config(tmp / "cli.toml", sections)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.cli",
        "router",
        "--config",
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return proc


async def wait_http(url: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"{url} did not come up")
            await asyncio.sleep(0.1)


async def test_workers_exit_when_their_supervisor_is_killed(workdir: Path) -> None:
    """kill -9 of a multi-worker router's parent leaves no worker holding the port."""
    rport, admin = free_port(), free_port("tcp")
    while not _tcp_free(admin + 1):  # worker i serves admin port + i
        admin = free_port("tcp")
    sections = router_sections(
        rport,
        ["sip:127.0.0.1:9"],
        router={"listen": [f"udp:127.0.0.1:{rport}"], "admin": f"127.0.0.1:{admin}", "workers": 2},
    )
    proc = await start_cli(workdir, sections)
    workers: list[int] = []
    try:
        for port in (admin, admin + 1):
            await wait_http(f"http://127.0.0.1:{port}/health", timeout=40)
        workers = [
            int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        assert len(workers) == 2
        proc.kill()
        await async_wait_until(
            lambda: not any(alive(pid) for pid in [proc.pid, *workers]), 20, "the workers' exit"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", rport))  # nobody holds the SIP port any more
    finally:
        if proc.returncode is None:
            proc.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_sigterm_drains_in_flight_and_refuses_new_invites(workdir: Path) -> None:
    slow = await SippPeer.start(workdir, "router_uas_slow.xml", "-aa", port=(pa := free_port()))
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}"], dispatcher={"failover_timeout": 3.0})
    proc = await start_cli(workdir, sections)
    try:
        await wait_http(f"http://{sections['router']['admin']}/health")
        in_flight = await SippPeer.start(
            workdir, expect_scenario(workdir, 200), *uac_args(rport, 1)
        )
        await asyncio.sleep(0.5)  # ringing: the INVITE transaction is in flight
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        refused = await SippPeer.start(workdir, expect_scenario(workdir, 503), *uac_args(rport, 1))
        await refused.ok(10)  # a new INVITE during the drain gets 503
        await in_flight.ok(10)  # the in-flight call got its 200
        rc = await asyncio.wait_for(proc.wait(), 10)
        assert rc == 0
    finally:
        slow.kill()
        if proc.returncode is None:
            proc.kill()


async def test_second_signal_forces_exit(workdir: Path) -> None:
    slow = await SippPeer.start(workdir, "router_uas_slow.xml", "-aa", port=(pa := free_port()))
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}"], router={"drain_timeout": 30.0})
    proc = await start_cli(workdir, sections)
    try:
        await wait_http(f"http://{sections['router']['admin']}/health")
        caller = await SippPeer.start(workdir, expect_scenario(workdir, 200), *uac_args(rport, 1))
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert proc.returncode is None  # draining
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 5)
        assert rc == 1
        caller.kill()
    finally:
        slow.kill()
        if proc.returncode is None:
            proc.kill()


async def test_cli_exit_codes(workdir: Path) -> None:
    bad = write_config(workdir / "bad.toml", {"dispatcher": {"algorithm": 7}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.cli",
        "router",
        "--config",
        str(bad),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"dispatcher.algorithm" in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        sections = router_sections(port, ["sip:127.0.0.1:5"])
        sections["router"]["listen"] = [f"udp:127.0.0.1:{port}"]
        proc = await start_cli(workdir, sections)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 3 and b"cannot bind" in err


async def test_sighup_reloads_the_destination_list(workdir: Path) -> None:
    rport = free_port()
    sections = router_sections(rport, ["sip:127.0.0.1:5"])
    proc = await start_cli(workdir, sections)
    admin = f"http://{sections['router']['admin']}"
    try:
        await wait_http(f"{admin}/health")
        sections["dispatcher"]["destinations"] = ["sip:127.0.0.1:5", "sip:127.0.0.1:7"]
        write_config(workdir / "cli.toml", sections)
        proc.send_signal(signal.SIGHUP)
        async with httpx.AsyncClient(base_url=admin) as http:

            async def uris() -> list[str]:
                return [d["uri"] for d in (await http.get("/destinations")).json()]

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while await uris() != ["sip:127.0.0.1:5", "sip:127.0.0.1:7"]:
                assert loop.time() < deadline, "SIGHUP did not reload"
                await asyncio.sleep(0.1)
            (workdir / "cli.toml").write_text("[dispatcher]\nalgorithm = 7\n")  # broken
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert proc.returncode is None  # still running, old configuration kept
            assert await uris() == ["sip:127.0.0.1:5", "sip:127.0.0.1:7"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "reload failed, keeping the running configuration" in err and "algorithm" in err
    finally:
        if proc.returncode is None:
            proc.kill()


async def test_workers_share_the_port_and_keep_transactions_consistent(workdir: Path) -> None:
    a, b, pa, pb = await uas_pair(workdir, "router_uas.xml", "router_uas.xml")
    rport = free_port()
    while True:  # two consecutive free admin ports (worker i serves admin port + i)
        admin = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", admin + 1))
                break
            except OSError:
                continue
    sections = router_sections(
        rport,
        [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"],
        router={"listen": [f"udp:127.0.0.1:{rport}"], "admin": f"127.0.0.1:{admin}", "workers": 2},
    )
    proc = await start_cli(workdir, sections)
    urls = [f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{admin + 1}"]
    try:
        for url in urls:
            # three processes start (parent + 2 workers): ~11 s seen on a loaded 2-core box
            await wait_http(f"{url}/health", timeout=40)
        async with httpx.AsyncClient() as http:

            async def all_active() -> bool:
                for url in urls:
                    dests = (await http.get(f"{url}/destinations")).json()
                    if not all(d["state"] == "active" for d in dests):
                        return False
                return True

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not await all_active():
                assert loop.time() < deadline, "workers' destinations never became active"
                await asyncio.sleep(0.1)
            # calls from two carriers complete: each transaction stays on one worker
            uacs = [
                await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 10))
                for _ in range(2)
            ]
            for uac in uacs:
                await uac.ok()
            # 32 sources spread over both workers (OPTIONS answered by the router itself)
            socks = []
            for n in range(32):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                s.settimeout(2)
                s.sendto(
                    (
                        f"OPTIONS sip:127.0.0.1:{rport} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bK-w{n}\r\n"
                        f"From: <sip:x@127.0.0.1>;tag=w{n}\r\nTo: <sip:y@127.0.0.1>\r\n"
                        f"Call-ID: w-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    ).encode(),
                    ("127.0.0.1", rport),
                )
                socks.append(s)
            for s in socks:
                assert (await loop.run_in_executor(None, s.recv, 65535)).startswith(
                    b"SIP/2.0 200 OK"
                )
                s.close()
            stats = [(await http.get(f"{url}/stats")).json() for url in urls]
        assert sum(st["requests"].get("INVITE", 0) for st in stats) == 20
        assert sum(st["requests"].get("BYE", 0) for st in stats) == 20
        options = [st["requests"].get("OPTIONS", 0) for st in stats]
        assert sum(options) == 32 and all(n > 0 for n in options), options
        await b.wait_received("INVITE", 10)  # round-robin per worker still alternates overall
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        a.kill()
        b.kill()
        if proc.returncode is None:
            proc.kill()
