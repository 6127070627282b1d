"""The edge router on IPv6 and dual stack, against real SIPp peers on ::1 and 127.0.0.1.

An IPv6 carrier (SIPp on ``[::1]``) calls through the router to IPv4 media nodes (SIPp
UAS on 127.0.0.1) and to an IPv6 one; the router stands on both families at once, and
Record-Route is doubled when a call crosses families so each side gets a URI of its own.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router, uac_args, uas_pair
from tests.support.sipp import SIPP, SippPeer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark.append(pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)"))


def free_port6() -> int:
    """A port free for UDP and TCP on both 127.0.0.1 and ::1 (the router binds all four)."""
    for _ in range(200):
        port = free_port()
        ok = True
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET6, kind) as s:
                try:
                    s.bind(("::1", port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port on both families")


def dual_stack(port: int, destinations: list[str]) -> dict[str, dict[str, object]]:
    sections = router_sections(port, destinations)
    sections["router"]["listen"] = [
        f"udp:127.0.0.1:{port}",
        f"udp:[::1]:{port}",
        f"tcp:127.0.0.1:{port}",
        f"tcp:[::1]:{port}",
    ]
    sections["acl"]["allow"] = ["127.0.0.1", "::1"]
    return sections


def invites(sipp: SippPeer) -> list[str]:
    """The INVITE messages a SIPp with -trace_msg received, as text."""
    text = "".join(
        f.read_text() for f in sipp.cwd.glob(f"{sipp.name}_{sipp.proc.pid}_messages.log")
    )
    return re.findall(r"message received \[\d+\] bytes :\s*\n\s*\n(INVITE .*?)\n\n", text, re.S)


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_ipv6_carrier_reaches_ipv4_media_nodes(tmp_path: Path, transport: str) -> None:
    a, b, pa, pb = await uas_pair(tmp_path, "router_uas.xml", "router_uas.xml", transport=transport)
    suffix = ";transport=tcp" if transport == "t1" else ""
    rport = free_port6()
    sections = dual_stack(rport, [f"sip:127.0.0.1:{pa}{suffix}", f"sip:127.0.0.1:{pb}{suffix}"])
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="both media nodes answering OPTIONS"
            )
            args = uac_args(rport, 20, rate=40, transport=transport)
            args[0] = f"[::1]:{rport}"
            uac = await SippPeer.start(
                tmp_path, "router_uac.xml", *args, ip="::1", port=free_port6()
            )
            await uac.ok()  # every call completed: INVITE, 200, ACK and BYE over the route set
            await a.wait_received("BYE", 10)
            await b.wait_received("BYE", 10)
            msg = invites(a)[0]
            # The media node sees the router's IPv4 address on top (its Via and the
            # Record-Route it will use) and the IPv6 one for the carrier's side.
            via = re.search(r"^Via: SIP/2.0/\w+ ([^;]+);", msg, re.M)
            assert via is not None and via.group(1) == f"127.0.0.1:{rport}", msg
            rr = re.findall(r"^Record-Route: <sip:([^;>]+)", msg, re.M)
            assert rr == [f"127.0.0.1:{rport}", f"[::1]:{rport}"], msg
            assert router.proxy.dialog_count == 0
    finally:
        a.kill()
        b.kill()


async def test_ipv6_media_node_from_ipv4_carrier(tmp_path: Path) -> None:
    pa = free_port6()
    a = await SippPeer.start(tmp_path, "router_uas.xml", "-aa", "-trace_msg", ip="::1", port=pa)
    rport = free_port6()
    sections = dual_stack(rport, [f"sip:[::1]:{pa}"])
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="the IPv6 media node answering"
            )
            uac = await SippPeer.start(tmp_path, "router_uac.xml", *uac_args(rport, 5))
            await uac.ok()
            await a.wait_received("BYE", 5)
            msg = invites(a)[0]
            rr = re.findall(r"^Record-Route: <sip:([^;>]+)", msg, re.M)
            assert rr == [f"[::1]:{rport}", f"127.0.0.1:{rport}"], msg
    finally:
        a.kill()
