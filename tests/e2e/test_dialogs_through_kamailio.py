"""An operator keeps Kamailio at the edge and puts our media nodes behind it.

Kamailio runs the original platform's routing logic (record_route on the INVITE,
dispatcher to the media node, loose_route for in-dialog requests, 404 for an in-dialog
request with no route). The caller (SIPp) follows the route set it learnt from the node's
2xx: with Record-Route copied into the node's responses (RFC 3261 §12.1.1) every ACK and
BYE passes Kamailio's loose_route and every call ends normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import uac_args
from tests.support.sipp import SIPP, SippPeer

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
    pytest.mark.skipif(KAMAILIO is None, reason="Kamailio (Debian kamailio) is not installed"),
]

CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
listen=udp:127.0.0.1:{port}
auto_aliases=no
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "{list_file}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if (!ds_select_dst("1", "4")) {{ send_reply("503", "No Media Server Available"); exit; }}
    t_relay();
}}
"""


def module_dir() -> str:
    for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules"):
        if Path(p, "tm.so").exists():
            return p + "/"
    out = subprocess.run(["dpkg", "-L", "kamailio"], capture_output=True, text=True).stdout
    tm = [line for line in out.splitlines() if line.endswith("/tm.so")]
    return str(Path(tm[0]).parent) + "/"


def answers_options(port: int) -> bool:
    """Kamailio is up once an OPTIONS to it gets any response (it relays to the node)."""
    msg = (
        f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKkamprobe{n}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:probe@127.0.0.1>\r\n"
        "Call-ID: kam-probe-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        via_port = s.getsockname()[1]
        data = msg.replace("127.0.0.1:9", f"127.0.0.1:{via_port}").format(n=via_port)
        s.sendto(data.encode(), ("127.0.0.1", port))
        try:
            return s.recv(65536).startswith(b"SIP/2.0 ")
        except OSError:
            return False


async def test_calls_to_media_nodes_behind_kamailio_hang_up_through_loose_route(
    tmp_path: Path,
) -> None:
    node_port = free_port()
    node, cdrs = await start_node(tmp_path, {"media": {"listen": [f"udp:127.0.0.1:{node_port}"]}})
    kport = free_port()
    (tmp_path / "dispatcher.list").write_text(f"1 sip:127.0.0.1:{node_port}\n")
    (tmp_path / "kamailio.cfg").write_text(
        CFG.format(port=kport, mpath=module_dir(), list_file=tmp_path / "dispatcher.list")
    )
    log = (tmp_path / "kamailio.log").open("wb")
    assert KAMAILIO is not None
    kam = subprocess.Popen(
        [KAMAILIO, "-f", str(tmp_path / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
         "-Y", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not await asyncio.to_thread(answers_options, kport):
            assert kam.poll() is None, (tmp_path / "kamailio.log").read_text()[-2000:]
            assert loop.time() < deadline, "Kamailio did not answer"
        uac = await SippPeer.start(
            tmp_path, "router_uac.xml", *uac_args(kport, 10, rate=10, hold_ms=200)
        )
        # exit 0: every BYE got its 200 — through loose_route, where a missing route set
        # gets Kamailio's 404
        await uac.ok()
        await async_wait_until(lambda: len(cdrs.records) == 10, what="10 CDRs")
        assert {(r.disposition, r.hangup_cause) for r in cdrs.records} == {
            ("ANSWERED", "NORMAL_CLEARING")
        }
    finally:
        kam.terminate()
        try:
            await asyncio.to_thread(kam.wait, 10)
        except subprocess.TimeoutExpired:
            kam.kill()
            kam.wait()
        log.close()
        with contextlib.suppress(Exception):
            await node.stop()
