"""A bridged call whose caller vanished is torn down on both sides, with CDRs.

SIPp calls a number the node bridges to a SIPp carrier; both send G.711 RTP
(``play_pcap_audio``). The caller's SIPp is killed mid-call — no BYE, no more RTP. The
node's RTP inactivity timer (``[media] rtp_timeout``, on by default) hangs up the caller's
leg with ``MEDIA_TIMEOUT``; the bridge ends the carrier's leg with a BYE, and each leg
has its CDR. Before, the call stayed up until an operator ran ``hupall``.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from switchboard import config
from switchboard.media.settings import DEFAULT_RTP_TIMEOUT
from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.sipp import HAVE_SIPP, SCENARIOS, Sipp

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAVE_SIPP, reason="sipp (Debian sip-tester) not installed"),
]

PCAP = Path("/usr/share/sip-tester/g711a.pcap")  # 7 s of A-law, shipped with sip-tester
TIMEOUT = 2.0  # the test's rtp_timeout: the default (60 s) would make the test a minute long


def test_rtp_timeout_is_on_by_default() -> None:
    cfg = config.load(environ={}, overrides={})
    assert cfg.media.rtp_timeout == DEFAULT_RTP_TIMEOUT == 60.0


@pytest.mark.skipif(not PCAP.exists(), reason="sip-tester's g711a.pcap missing")
async def test_bridged_call_whose_caller_vanished_ends_on_both_sides_with_cdrs(
    tmp_path: Path, sipp: Sipp
) -> None:
    carrier = free_port("udp")
    node, cdrs = await start_node(tmp_path, {
        "media": {"rtp_timeout": TIMEOUT},
        "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier}"}},
    })  # fmt: skip
    uas = sipp.start(scenario=SCENARIOS / "media_carrier_pcap_uas.xml", local_port=carrier,
                     timeout=30, extra=["-key", "pcap", str(PCAP)])  # fmt: skip
    try:
        caller = sipp.start(f"127.0.0.1:{node.sip_port}",
                            scenario=SCENARIOS / "media_call_pcap_wait_bye.xml",
                            service="442071234567", timeout=30,
                            extra=["-key", "pcap", str(PCAP)])  # fmt: skip
        # both legs answered and RTP flowing both ways through the node
        await async_wait_until(lambda: len(node.switch.channels) == 2, 10, "both legs up")
        ua = node.ua
        assert ua is not None
        await async_wait_until(
            lambda: (
                len(ua.legs) == 2 and all(leg.rtp.packets_received > 20 for leg in ua.legs.values())
            ),
            10,
            "RTP received on both legs",
        )
        caller.proc.send_signal(signal.SIGKILL)  # the caller vanishes: no BYE, no RTP
        caller.proc.wait(5)
        gone = asyncio.get_running_loop().time()
        # the carrier's SIPp receives BYE (its scenario completes: one successful call)
        result = await asyncio.to_thread(uas.wait, TIMEOUT + 10)
        ended = asyncio.get_running_loop().time() - gone
        assert result.returncode == 0 and result.successful == 1, result
        assert ended < TIMEOUT + 2, ended
        await async_wait_until(lambda: len(cdrs.records) == 2, 5, "both legs' CDRs")
        by_dir = {c.direction: c for c in cdrs.records}
        assert by_dir["inbound"].hangup_cause == "MEDIA_TIMEOUT"
        assert by_dir["outbound"].disposition == "ANSWERED"
        assert by_dir["outbound"].originating_leg == by_dir["inbound"].call_id
        assert not node.switch.channels
    finally:
        await node.stop()
