"""A CANCEL that reaches the node while its bridge B-leg rings: the B-leg is CANCELled,
and when the carrier's 200 crosses that CANCEL the node ACKs and BYEs it at once, with a
CDR that says so (answered, 0 s billed, ORIGINATOR_CANCEL) — never a carrier leg left up
with no caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.media import HAVE_SIPP, SIPP_DIR, SippResult, finish_sipp, run_sipp, start_node
from tests.support.net import async_wait_until, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAVE_SIPP, reason="sipp (Debian sip-tester) not installed"),
]
SCENARIOS = SIPP_DIR


async def test_caller_cancel_while_bridging_hangs_up_a_b_leg_answered_in_the_race(
    tmp_path: Path,
) -> None:
    carrier_port = free_port()
    node, cdrs = await start_node(
        tmp_path,
        {
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier_port}"}},
            "dialplan": {
                "rules": [
                    {
                        "name": "transit",
                        "destination": r"^(\d{3,})$",
                        "actions": ["ring_ready", "bridge sofia/gateway/carrier/$1"],
                    }
                ]
            },
        },
    )
    carrier = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "media_carrier_answer_after_cancel.xml"),
        "-i", "127.0.0.1", "-p", str(carrier_port), "-m", "1", "-nostdin",
        "-timeout", "20s", "-timeout_error", "-key", "rtp_port", str(free_port()),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert node.ua is not None
        await asyncio.sleep(0.3)  # SIPp binds its port
        # the caller CANCELs 300 ms after its 180: the B-leg rings at the carrier by then
        text = (SCENARIOS / "media_call_cancel.xml").read_text()
        assert '<recv response="180"/>' in text
        (SCENARIOS_TMP := tmp_path / "sipp").mkdir()
        (SCENARIOS_TMP / "call_cancel_late.xml").write_text(
            text.replace(
                '<recv response="180"/>', '<recv response="180"/><pause milliseconds="300"/>'
            )
            # [branch-N] counts scenario elements back to the INVITE: one more now
            .replace("[branch-3]", "[branch-4]")
            .replace("[branch-6]", "[branch-7]")
        )
        caller = await run_sipp(str(SCENARIOS_TMP / "call_cancel_late.xml"), node.sip_port, tmp_path,
                                service="4930123", keys={"rtp_port": free_port()})  # fmt: skip
        assert isinstance(caller, SippResult)
        assert caller.returncode == 0, caller.output[-2000:] + caller.errors[-2000:]
        got = await finish_sipp(carrier, 20)
        # exit 0: the carrier got our CANCEL, then an ACK and a BYE for its 200
        assert got.returncode == 0, got.output[:1500]
        await async_wait_until(lambda: len(cdrs.records) == 2, what="2 CDRs")
        legs = {c.direction: c for c in cdrs.records}
        a, b = legs["inbound"], legs["outbound"]
        assert (a.disposition, a.sip_code) == ("CANCEL", 487)
        assert (b.disposition, b.hangup_cause, b.sip_code, b.billsec) == (
            "ANSWERED",
            "ORIGINATOR_CANCEL",
            200,
            0,
        )
        assert b.originating_leg == a.call_id
        assert not node.switch.sessions and node.switch.limits.active == 0
    finally:
        if carrier.returncode is None:
            carrier.kill()
            await carrier.wait()
        await node.stop()
