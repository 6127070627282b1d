"""IPv6 end to end through real media nodes: an IPv6 carrier (SIPp on ``[::1]``, RTP
streamed over IPv6) calls through the dual-stack router to a media node that the router
reaches over IPv4; the node answers with ``c=IN IP6`` media and bridges the call out to
an IPv6 gateway (a second SIPp on ``[::1]``) — SIP over IPv6 on that side too. RTP flows
both ways on both legs; nothing is sent to an address of the wrong family."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from switchboard.media.node import MediaNode
from tests.support.media import start_node, ulaw_wav
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router
from tests.support.sipp import SIPP, SippPeer

NUMBER = "442071234567"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
    pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)"),
]


def port_both_families() -> int:
    """A port free for UDP and TCP on both 127.0.0.1 and ::1 (a dual-stack listener)."""
    for _ in range(100):
        port = free_port()
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET6, kind) as s:
                    s.bind(("::1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on both families")


def messages(sipp: SippPeer) -> list[str]:
    text = "".join(
        f.read_text() for f in sipp.cwd.glob(f"{sipp.name}_{sipp.proc.pid}_messages.log")
    )
    return re.findall(r"message received \[\d+\] bytes :\s*\n\s*\n(.*?)(?=\n-{10,}|\Z)", text, re.S)


def legs(node: MediaNode) -> list[object]:
    assert node.ua is not None
    return list(node.ua.legs.values())


async def test_ipv6_carrier_to_ipv4_node_to_ipv6_gateway_with_media(tmp_path: Path) -> None:
    ulaw_wav(tmp_path / "tone.wav")
    gw_port = free_port(host="::1")
    gateway = await SippPeer.start(
        tmp_path, "media_carrier_rtp_uas_any.xml", "-trace_msg", "-m", "1",
        "-mp", str(free_port("udp", "::1", even=True)), "-timeout", "60s",
        ip="::1", port=gw_port,
    )  # fmt: skip
    node_port = port_both_families()
    node, cdrs = await start_node(
        tmp_path,
        {
            "media": {
                "listen": [f"udp:127.0.0.1:{node_port}", f"udp:[::1]:{node_port}"],
                "rtp_ip6": "::1",
            },
            "gateways": {"carrier6": {"proxy": f"[::1]:{gw_port}"}},
            "dialplan": {"rules": [
                {"name": "out", "destination": r"^(\d+)$",
                 "actions": ["bridge sofia/gateway/carrier6/$1"]},
            ]},
        },
    )  # fmt: skip
    rport = port_both_families()
    sections = router_sections(rport, [f"sip:127.0.0.1:{node_port}"])
    sections["router"]["listen"] = [f"udp:127.0.0.1:{rport}", f"udp:[::1]:{rport}"]
    sections["acl"]["allow"] = ["127.0.0.1", "::1"]
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the node answering")
            caller = await SippPeer.start(
                tmp_path, "router_uac_rtp.xml", f"[::1]:{rport}", "-trace_msg",
                "-s", NUMBER, "-m", "1", "-d", "3000", "-timeout", "60s",
                "-mp", str(free_port("udp", "::1", even=True)),
                ip="::1", port=port_both_families(),
            )  # fmt: skip
            await async_wait_until(lambda: len(legs(node)) == 2, 15, "both legs of the call")
            await asyncio.sleep(1.5)  # media flowing for a while
            for leg in legs(node):
                rtp = leg.rtp  # type: ignore[attr-defined]
                # the node's RTP of both legs is on IPv6, and got the far ends' streams
                assert rtp.local_address[0] == "::1", rtp.local_address
                assert rtp.remote is not None and rtp.remote[0] == "::1", rtp.remote
                assert rtp.packets_received >= 30, (leg, rtp.packets_received)
                assert rtp.writer.packets_sent >= 30
                assert rtp.send_errors == 0
            assert await caller.wait(30) == 0, caller.errors()
            assert await gateway.wait(30) == 0, gateway.errors()
            await async_wait_until(lambda: len(cdrs.records) == 2, 10, "2 CDRs")
            assert {r.disposition for r in cdrs.records} == {"ANSWERED"}
            # the carrier's answer offers IPv6 media; the gateway saw SIP and SDP on IPv6
            [ok] = [m for m in messages(caller) if m.startswith("SIP/2.0 200 OK") and "INVITE" in m]
            assert re.search(r"^c=IN IP6 ::1\s*$", ok, re.M), ok
            [invite] = [m for m in messages(gateway) if m.startswith("INVITE ")]
            assert re.search(rf"^Via: SIP/2.0/UDP \[::1\]:{node_port};", invite, re.M), invite
            assert re.search(rf"^Contact: <sip:[^@]+@\[::1\]:{node_port}>", invite, re.M), invite
            assert re.search(r"^c=IN IP6 ::1\s*$", invite, re.M), invite
            assert "127.0.0.1" not in invite.split("\n\n")[0].replace("\r", ""), invite
            assert router.proxy.dialog_count == 0
    finally:
        caller_kill = [p for p in (locals().get("caller"), gateway) if p is not None]
        for p in caller_kill:
            p.kill()  # type: ignore[union-attr]
        await node.stop()
