"""Failover that never dials twice: a node's final response marked ``Reason: Q.850``
(RFC 3326: the carrier's busy, no answer, rejection) goes back to the caller as it is —
the router tries no other node, which would dial the same carrier again — while a node's
own unmarked 503 or its silence is still failed over (test_router_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.net import async_wait_until, free_port
from tests.support.router import (
    both_active,
    expect_scenario,
    router_sections,
    running_router,
    uac_args,
    uas_pair,
)
from tests.support.sipp import SCENARIOS, SIPP, SippPeer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


@pytest.mark.parametrize(
    ("code", "cause", "caller_sees"),
    [(486, 17, 486), (480, 19, 480), (408, 102, 408), (503, 41, 500), (504, 102, 504)],
)
async def test_far_end_refusals_are_never_failed_over(
    tmp_path: Path, code: int, cause: int, caller_sees: int
) -> None:
    scenario = tmp_path / f"uas_reject_{code}.xml"
    text = (SCENARIOS / "router_uas_reject_reason.xml").read_text()
    scenario.write_text(text.replace("@CODE@", str(code)).replace("@CAUSE@", str(cause)))
    a, b, pa, pb = await uas_pair(tmp_path, str(scenario), str(scenario))
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{pa}", f"sip:127.0.0.1:{pb}"])
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="probing")
            # a lone 503 goes upstream as 500 (RFC 3261 §16.7 step 6)
            uac = await SippPeer.start(
                tmp_path, expect_scenario(tmp_path, caller_sees), *uac_args(rport, 6, rate=10)
            )
            await uac.ok()  # every caller got the far end's answer
            # one INVITE per call in all: 3 on each node, none tried on the other
            await a.wait_received("INVITE", 3)
            await b.wait_received("INVITE", 3)
            assert router.proxy.stats.failovers == 0
    finally:
        a.kill()
        b.kill()
