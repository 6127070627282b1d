"""Outbound legs always end, and silent answered calls are hung up (the UA's timers).

A SIPp carrier that rings and then ignores our CANCEL; a SIPp caller that answers and
never sends RTP. The transaction layer runs with T1 = 20 ms (64·T1 = 1.28 s) and a short
Timer C so the RFC timeouts are reached quickly.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from switchboard.media.causes import Cause
from switchboard.media.core import OriginateError
from switchboard.sip.timers import TimerValues
from tests.support.media import free_even_range, start_node
from tests.support.net import async_wait_until, free_port, udp_port_taken
from tests.support.sipp import HAVE_SIPP, SCENARIOS, Sipp, SippResult, run_sipp

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAVE_SIPP, reason="sipp (Debian sip-tester) not installed"),
]

FAST = TimerValues(t1=0.02)  # 64·T1 = 1.28 s


async def _originate_to_deaf_carrier(
    tmp_path: Path, sipp: Sipp, *, timeout: float, timer_c: float | None
) -> tuple[Cause, object]:
    carrier = free_port("udp")
    node, cdrs = await start_node(
        tmp_path, {"gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier}"}}}
    )
    assert node.ua is not None
    node.ua.layer.timers = FAST
    if timer_c is not None:
        node.ua.layer.timer_c = timer_c
    uas = sipp.start(scenario=SCENARIOS / "media_carrier_ignore_cancel.xml",
                     local_port=carrier, timeout=20)  # fmt: skip
    try:
        await async_wait_until(lambda: udp_port_taken(carrier), what="SIPp carrier bound")
        with pytest.raises(OriginateError) as failed:
            await node.switch.originate("sofia/gateway/carrier/4930123", timeout=timeout)
        result = await asyncio.to_thread(uas.wait, 15.0)
        assert result.successful == 1, result  # the carrier saw our CANCEL
        # ... never answered it, nor the INVITE: 64·T1 later the INVITE transaction ends
        await async_wait_until(
            lambda: not node.ua.layer.clients, timeout=5, what="transactions end"
        )  # type: ignore[union-attr]
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert not node.switch.channels and node.switch.limits.active == 0
        assert node.ua.gateway_calls["carrier"] == 0
        return failed.value.cause, cdrs.records[0]
    finally:
        await node.stop()


async def test_originate_timeout_cancels_and_a_deaf_carrier_still_ends_the_leg(
    tmp_path: Path, sipp: Sipp
) -> None:
    cause, cdr = await _originate_to_deaf_carrier(tmp_path, sipp, timeout=1, timer_c=None)
    assert cause is Cause.NO_ANSWER
    assert cdr.hangup_cause == "NO_ANSWER"  # type: ignore[attr-defined]


async def test_timer_c_cancels_a_leg_that_rings_forever(tmp_path: Path, sipp: Sipp) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    cause, cdr = await _originate_to_deaf_carrier(tmp_path, sipp, timeout=30, timer_c=0.5)
    assert cause is Cause.RECOVERY_ON_TIMER_EXPIRE  # §16.8: as if 408 arrived
    assert (cdr.hangup_cause, cdr.sip_code) == ("RECOVERY_ON_TIMER_EXPIRE", 408)  # type: ignore[attr-defined]
    assert loop.time() - started < 15  # Timer C, not the 30 s originate timeout


async def test_answered_call_without_rtp_is_hung_up_with_media_timeout(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path, {"media": {"rtp_timeout": 1.0}})
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            rtp_port = s.getsockname()[1]
        result = await run_sipp("media_call_media_timeout.xml", node.sip_port, tmp_path,
                                service="echo", keys={"rtp_port": rtp_port}, timeout=20)  # fmt: skip
        assert isinstance(result, SippResult)
        assert result.returncode == 0, result.output[-2000:] + result.errors[-2000:]
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        cdr = cdrs.records[0]
        assert cdr.hangup_cause == "MEDIA_TIMEOUT"
        assert 1.0 <= cdr.billsec < 5.0
    finally:
        await node.stop()


async def test_sip_udp_socket_buffers_are_enlarged(tmp_path: Path) -> None:
    node, _ = await start_node(tmp_path, {"media": {"sip_socket_buffer": 1 << 20}})
    try:
        assert node.ua is not None and node.ua.endpoint is not None
        transport = node.ua.endpoint.udp[0].transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
        # Linux doubles the granted value; the kernel cap (rmem_max) is tolerated
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(1 << 20, cap)
    finally:
        await node.stop()


@pytest.mark.skipif(
    int(Path("/proc/sys/net/core/rmem_max").read_text()) < 1 << 20,
    reason="kernel caps SO_RCVBUF below 1 MB (net.core.rmem_max)",
)
async def test_a_burst_of_250_originates_all_complete(tmp_path: Path, sipp: Sipp) -> None:
    # With the ~200 KB default receive buffer about 160 of these 250 legs lost their
    # 180/200 in the burst and ended NO_ANSWER 30 s later; with 4 MB all complete at once.
    carrier = free_port("udp")
    start, end = free_even_range(1200)
    node, _ = await start_node(tmp_path, {
        "media": {"rtp_port_start": start, "rtp_port_end": end},
        "limits": {"sessions_per_second": 1000, "max_sessions": 1000},
        "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier}"}},
    })  # fmt: skip
    uas = sipp.start(scenario="uas", local_port=carrier, calls=250, timeout=40)
    try:
        await async_wait_until(lambda: udp_port_taken(carrier), what="SIPp carrier bound")

        async def originate(i: int) -> str:
            try:
                await node.switch.originate(f"sofia/gateway/carrier/49{i:06d}", app="hangup",
                                            timeout=20)  # fmt: skip
                return "OK"
            except OriginateError as exc:
                return exc.cause.name

        results = await asyncio.gather(*(originate(i) for i in range(250)))
        assert results.count("OK") == 250, sorted(set(results))
        result = await asyncio.to_thread(uas.wait, 25.0)
        assert result.successful == 250, result
    finally:
        await node.stop()


async def test_originated_call_answered_by_a_silent_carrier_ends_media_timeout(
    tmp_path: Path, sipp: Sipp
) -> None:
    carrier = free_port("udp")
    node, cdrs = await start_node(tmp_path, {
        "media": {"rtp_timeout": 1.0},
        "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier}"}},
    })  # fmt: skip
    uas = sipp.start(scenario="uas", local_port=carrier, calls=1, timeout=20)  # answers, no RTP
    try:
        await async_wait_until(lambda: udp_port_taken(carrier), what="SIPp carrier bound")
        ch = await node.switch.originate("sofia/gateway/carrier/4930123", app="park")
        result = await asyncio.to_thread(uas.wait, 15.0)
        assert result.successful == 1, result  # the carrier got our BYE
        await async_wait_until(lambda: len(cdrs.records) == 1, what="CDR")
        assert ch.hangup_cause is Cause.MEDIA_TIMEOUT
        assert cdrs.records[0].hangup_cause == "MEDIA_TIMEOUT"
    finally:
        await node.stop()
