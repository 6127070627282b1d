"""Topology hiding at the router, checked on every message a carrier-side SIPp received:
calls from the carrier to a real media node, hung up by either side. Nothing the carrier
sees names the media node's SIP address/port, its Vias or the product — only the SDP
media address the call needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router, uac_args
from tests.support.sipp import SCENARIOS, SIPP, SippPeer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


def received_messages(sipp: SippPeer) -> list[str]:
    text = "".join(
        f.read_text() for f in sipp.cwd.glob(f"{sipp.name}_{sipp.proc.pid}_messages.log")
    )
    return re.findall(r"message received \[\d+\] bytes :\s*\n\s*\n(.*?)(?=\n-{10,}|\Z)", text, re.S)


def headers_of(msg: str) -> str:
    return re.split(r"\r?\n\r?\n", msg, maxsplit=1)[0]


async def test_carrier_sees_only_the_router_on_every_message(tmp_path: Path) -> None:
    node_port = free_port()
    node, cdrs = await start_node(
        tmp_path,
        {
            "media": {"listen": [f"udp:127.0.0.1:{node_port}"]},
            "dialplan": {"rules": [
                {"name": "hold", "destination": "^hold$", "actions": ["answer", "sleep 5000", "hangup"]},
                {"name": "short", "destination": "^short$", "actions": ["answer", "sleep 300", "hangup"]},
            ]},
        },
    )  # fmt: skip
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{node_port}"])
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the media node answering")
            # 1. the carrier hangs up (its ACK and BYE go to the router's Contact)
            args = uac_args(rport, 3, rate=10, hold_ms=200)
            args[args.index("echo")] = "hold"
            caller = await SippPeer.start(tmp_path, "router_uac.xml", "-trace_msg", *args)
            await caller.ok()
            # 2. the media node hangs up (its BYE reaches the carrier through the router)
            args = uac_args(rport, 3, rate=10)
            args[args.index("echo")] = "short"
            callee = await SippPeer.start(
                tmp_path, SCENARIOS / "router_uac_wait_bye.xml", "-trace_msg", *args
            )
            await callee.ok()
            await async_wait_until(lambda: len(cdrs.records) == 6, what="6 CDRs")
            assert {r.disposition for r in cdrs.records} == {"ANSWERED"}
            messages = received_messages(caller) + received_messages(callee)
            assert len(messages) >= 18  # per call 100, 200 and the 200 to BYE or the BYE
            byes = [m for m in messages if m.startswith("BYE ")]
            assert len(byes) == 3
            for msg in messages:
                # the node's SIP port appears nowhere (all addresses here are 127.0.0.1)
                assert str(node_port) not in msg, msg
                head = headers_of(msg)
                assert "switchboard" not in head.lower(), head
                assert "Record-Route" not in head, head
                for contact in re.findall(r"^Contact:\s*(.*)$", head, re.M):
                    assert re.fullmatch(
                        rf"<sip:sbth-\w+@127\.0\.0\.1:{rport};transport=udp>\s*", contact
                    ), contact
            for bye in byes:  # a request from the node: one Via, the router's
                vias = re.findall(r"^Via:.*$", headers_of(bye), re.M)
                assert len(vias) == 1 and f"127.0.0.1:{rport};" in vias[0], vias
            assert router.proxy.hidden == {} and router.proxy.dialog_count == 0
    finally:
        await node.stop()
