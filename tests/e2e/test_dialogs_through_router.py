"""Dialogs pass the edge: SIPp → router → a real media node, and back.

The media node copies the router's Record-Route into its 18x/2xx (RFC 3261 §12.1.1), so
the caller's ACK and BYE follow the route set through the router (§12.1.2, loose routing
§16.12), and the node's own BYE goes out through the router too (its route set is the
INVITE's Record-Route). The router sees every dialog end: its dialog count returns to 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router, uac_args
from tests.support.sipp import SCENARIOS, SIPP, SippPeer

# The 200 must carry the router's Record-Route (check_it: the call fails without one). SIPp
# itself sends every request to the router's address whatever the route set says, so the
# header is what a softphone or Kamailio's loose_route() depends on.
_RR_CHECK = (
    '<recv response="200" rtd="setup" rrs="true"><action>'
    '<ereg regexp="sip:[^>]*;lr" search_in="hdr" header="Record-Route:" check_it="true"'
    ' assign_to="rr"/></action></recv>'
)


def checking_record_route(tmp: Path, scenario: str) -> Path:
    """``tests/data/sipp/<scenario>`` with the 200 required to carry Record-Route."""
    text = (SCENARIOS / scenario).read_text()
    plain = '<recv response="200" rtd="setup" rrs="true"/>'
    assert plain in text
    path = tmp / f"rr_{scenario}"
    text = text.replace(plain, _RR_CHECK)
    # SIPp refuses a variable that is assigned and never read
    text = text.replace("</scenario>", '<Reference variables="rr"/>\n</scenario>')
    path.write_text(text)
    return path


pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


@pytest.mark.parametrize(
    ("uac_transport", "node_transport"),
    [("u1", "udp"), ("t1", "tcp"), ("u1", "tcp")],
    ids=["udp", "tcp", "udp-caller-tcp-node"],
)
async def test_caller_ack_and_bye_traverse_the_router_and_its_dialogs_end(
    tmp_path: Path, uac_transport: str, node_transport: str
) -> None:
    node_port = free_port()
    node, cdrs = await start_node(
        tmp_path, {"media": {"listen": [f"{node_transport}:127.0.0.1:{node_port}"]}}
    )
    suffix = ";transport=tcp" if node_transport == "tcp" else ""
    rport = free_port()
    # Record-Route as the caller sees it: without topology hiding (which replaces it by
    # the router's Contact; tests/e2e/test_topology_hiding.py)
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{node_port}{suffix}"], security={"topology_hiding": False}
    )
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="the media node answering OPTIONS"
            )
            uac = await SippPeer.start(
                tmp_path,
                checking_record_route(tmp_path, "router_uac.xml"),
                *uac_args(rport, 6, rate=10, transport=uac_transport, hold_ms=300),
            )
            await uac.ok()  # every call answered, ACKed and hung up with BYE → 200
            stats = router.proxy.stats
            # ACK and BYE came through the router: they followed the Record-Route
            assert stats.requests.get("ACK", 0) == 6
            assert stats.requests.get("BYE", 0) == 6
            await async_wait_until(lambda: router.proxy.dialog_count == 0, what="dialogs ended")
            await async_wait_until(lambda: len(cdrs.records) == 6, what="6 CDRs")
    finally:
        await node.stop()


async def test_node_hangup_bye_reaches_the_caller_through_the_router(tmp_path: Path) -> None:
    """The node hangs up (dialplan ``hangup`` after answer): its BYE goes to the route set's
    first hop — the router — which forwards it to the caller's Contact."""
    node_port = free_port()
    node, cdrs = await start_node(
        tmp_path,
        {
            "media": {"listen": [f"udp:127.0.0.1:{node_port}"]},
            "dialplan": {
                "rules": [
                    {
                        "name": "short",
                        "destination": "^short$",
                        "actions": ["answer", "sleep 300", "hangup"],
                    }
                ]
            },
        },
    )
    rport = free_port()
    sections = router_sections(
        rport, [f"sip:127.0.0.1:{node_port}"], security={"topology_hiding": False}
    )
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="the media node answering OPTIONS"
            )
            args = uac_args(rport, 4, rate=10)
            args[args.index("echo")] = "short"
            uac = await SippPeer.start(
                tmp_path, checking_record_route(tmp_path, "router_uac_wait_bye.xml"), *args
            )
            await uac.ok()  # SIPp received the node's BYE and answered 200
            stats = router.proxy.stats
            assert stats.requests.get("BYE", 0) == 4  # the node's BYEs came through the router
            assert stats.requests.get("ACK", 0) == 4
            await async_wait_until(lambda: router.proxy.dialog_count == 0, what="dialogs ended")
            await async_wait_until(lambda: len(cdrs.records) == 4, what="4 CDRs")
            assert {r.disposition for r in cdrs.records} == {"ANSWERED"}
    finally:
        await node.stop()
