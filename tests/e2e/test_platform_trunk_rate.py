"""`switchboard up` on its defaults carries 300 transit calls/s from a loopback carrier.

A carrier on 127.0.0.1 is the ``acl`` trunk of the default ``[acl] allow`` (no pike
allow-list, no limits raised): pike does not count a trunk's requests (before trunks,
10 calls/s from one address got 503 for most calls), and the media nodes' default limits
(``max_sessions`` 10000, ``sessions_per_second`` 400 per node) refuse nothing. SIPp offers
900 calls at 300/s (INVITE, ACK and BYE: 1,800 requests per 2 s from one address, sixty
times pike's default density of 30) to a number the default dialplan bridges to the
``carrier`` gateway, where a SIPp UAS answers: every call is answered and hung up, the
router and the nodes refuse nothing and the router's dialogs and trunk calls return to 0.

This needs the machine to itself: on the 2-core development machine, quiet, 300 calls/s
went through with 0 failures (``bench/platform-rate``, load 1); with eight other engineers'
test runs on it (load 7-15) the media nodes fell behind and calls failed, nothing refused.
Bounded: 900 calls, SIPp's 60 s timeout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.net import wait_until
from tests.support.platform_harness import Platform, free_run, http_json, http_text, sipp_calls

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing"),
]

RATE = 300
CALLS = 3 * RATE
NUMBER = "442071234567"


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # Both nodes draw from one range; 300 calls/s of 0.5 s calls hold ~720 ports when the
    # answers are prompt, and more while the nodes lag: the default range has 16k.
    p = Platform(media_nodes=2, pike_allow=(), rtp_span=2000)
    p.start()
    try:
        wait_until(
            lambda: {d["state"] for d in http_json(p.admin_url + "/destinations")} == {"active"},
            30,
            "both media nodes active at the router",
        )
        yield p
    finally:
        p.cleanup()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_defaults_carry_a_loopback_carriers_transit_calls_with_no_refusal(
    platform: Platform,
) -> None:
    p = platform
    uas = subprocess.Popen(
        [
            shutil.which("sipp") or "sipp", "-sn", "uas", "-i", "127.0.0.1",
            "-p", str(p.carrier), "-mp", str(free_run(2)), "-m", str(CALLS),
            "-timeout", "90s", "-nostdin", "-buff_size", str(4 << 20),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=p.state,
    )  # fmt: skip
    try:
        call = sipp_calls(
            f"127.0.0.1:{p.router_sip}", NUMBER, calls=CALLS, rate=RATE, duration_ms=500,
            timeout=60,
        )  # fmt: skip
        out = call.stdout + call.stderr
        ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
        failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
        assert call.returncode == 0, out[-3000:]
        if ok and failed:
            assert (int(ok[-1]), int(failed[-1])) == (CALLS, 0), out[-3000:]
        assert uas.wait(60) == 0  # the carrier answered every B-leg and got its BYE
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()

    router = http_text(p.admin_url + "/metrics")
    assert metric(router, "switchboard_router_trunk_admitted_total", trunk="acl") == CALLS
    assert metric(router, "switchboard_router_trunk_rejections_total") == 0
    assert metric(router, "switchboard_router_pike_blocks_total") == 0
    assert metric(router, "switchboard_router_pike_rejects_total") == 0
    assert metric(router, "switchboard_router_failovers_total") == 0
    wait_until(
        lambda: metric(http_text(p.admin_url + "/metrics"), "switchboard_router_dialogs") == 0
        and metric(
            http_text(p.admin_url + "/metrics"), "switchboard_router_trunk_active_calls"
        ) == 0,
        15,
        "the router's dialogs and trunk calls back to 0",
    )  # fmt: skip
    answered = metric(
        http_text(p.admin_url + "/metrics"),
        "switchboard_router_trunk_calls_total",
        trunk="acl",
        disposition="answered",
    )
    assert answered == CALLS
    for url in p.media_admin_urls():
        node = http_text(url + "/metrics")
        assert metric(node, "switchboard_media_sessions_rejected_total") == 0, url
        assert metric(node, "switchboard_media_active_channels") == 0, url
