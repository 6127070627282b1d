"""The router's health and load view of its destinations, against real peers: what
counts as an alive probe answer (``ping_reply_codes``), and call-load dispatching that
sees a media node's own calls (``X-Switchboard-Calls``), and an unmatched CANCEL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from switchboard.router.dispatcher import DestinationState
from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import admin_url, router_sections, running_router, uac_args
from tests.support.sipp import SippPeer, run_sipp

pytestmark = [pytest.mark.timeout(60)]


async def test_a_box_answering_404_to_probes_is_inactive_and_gets_no_calls(tmp_path: Path) -> None:
    workdir = tmp_path
    pa, pb = free_port(), free_port()
    deaf = await SippPeer.start(workdir, "options_404_uas.xml", "-trace_msg", port=pa)
    good = await SippPeer.start(workdir, "router_uas.xml", "-aa", "-trace_msg", port=pb)
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(workdir, sections) as router:
            bad, ok = router.proxy.dispatcher.destinations()
            await async_wait_until(
                lambda: bad.state is DestinationState.INACTIVE, what="404 → down"
            )
            await async_wait_until(lambda: ok.state is DestinationState.ACTIVE, what="200 → up")
            async with httpx.AsyncClient(base_url=admin_url(router)) as http:
                flags = {d["uri"]: d["flags"] for d in (await http.get("/destinations")).json()}
            assert flags == {f"sip:127.0.0.1:{pa}": "IP", f"sip:127.0.0.1:{pb}": "AP"}
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 4))
            await uac.ok()
            await good.wait_received("INVITE", 4)
            assert deaf.received("INVITE") == 0
    finally:
        deaf.kill()
        good.kill()


async def test_call_load_counts_the_calls_a_node_has_from_elsewhere(tmp_path: Path) -> None:
    workdir = tmp_path
    busy, busy_cdrs = await start_node(workdir / "n1")
    idle, idle_cdrs = await start_node(workdir / "n2")
    callers: list[object] = []
    try:
        # two calls reach the first node directly (another router, an ESL originate...)
        direct = await run_sipp("media_call_hangup.xml", busy.sip_port, workdir, service="echo",
                                keys={"rtp_port": free_port("udp")}, calls=2, rate=20,
                                pause_ms=8000, background=True)  # fmt: skip
        callers.append(direct)
        await async_wait_until(lambda: busy.switch.active_calls == 2, what="2 direct calls up")
        rport = free_port()
        sections = router_sections(
            rport,
            [f"sip:127.0.0.1:{busy.sip_port}", f"sip:127.0.0.1:{idle.sip_port}"],
            dispatcher={"algorithm": 10},
        )
        async with running_router(workdir, sections) as router:
            d_busy, d_idle = router.proxy.dispatcher.destinations()
            await async_wait_until(lambda: d_busy.reported_calls == 2 and d_idle.reported_calls == 0,
                             what="probe answers with X-Switchboard-Calls")  # fmt: skip
            async with httpx.AsyncClient(base_url=admin_url(router)) as http:
                view = {d["uri"]: d for d in (await http.get("/destinations")).json()}
            assert view[d_busy.uri]["load"] == 2 and view[d_busy.uri]["active_calls"] == 0
            # two calls through the router: both go to the idle node (loads 2 vs 0, then 1)
            uac = await SippPeer.start(workdir, "router_uac.xml", *uac_args(rport, 2, hold_ms=500))
            await uac.ok()
            await async_wait_until(
                lambda: len(idle_cdrs.records) == 2, what="calls on the idle node"
            )
            assert busy.switch.active_calls == 2 and busy_cdrs.records == []
    finally:
        for proc in callers:
            if isinstance(proc, asyncio.subprocess.Process) and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await busy.stop()
        await idle.stop()


async def test_unmatched_cancel_is_forwarded_to_the_hashed_node(tmp_path: Path) -> None:
    # §16.10: no transaction here; with algorithm 0 the Call-ID picks the INVITE's node
    pa = free_port()
    node = await SippPeer.start(tmp_path, "router_uas_cancel_481.xml", "-aa", "-trace_msg", port=pa)
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}"], dispatcher={"algorithm": 0})
    try:
        async with running_router(tmp_path, sections) as router:
            dest = router.proxy.dispatcher.destinations()[0]
            await async_wait_until(lambda: dest.latency_ms is not None, what="probed")
            uac = await SippPeer.start(tmp_path, "router_uac_stray_cancel.xml", *uac_args(rport, 1))
            await uac.ok()  # the caller got a 481...
            await node.wait_received("CANCEL", 1)  # ...from the node, relayed statelessly
            assert dest.state is DestinationState.ACTIVE
            assert router.proxy.transaction_count == 0
    finally:
        node.kill()
