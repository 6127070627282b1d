"""SIP over TLS end to end with baresip (Debian ``baresip-core``) as the TLS phone:

* baresip → TLS → router → UDP → media node: the node records baresip's 700 Hz tone and
  plays 600 Hz back, heard in baresip's decoder dump;
* baresip → TLS → router → media node → TLS gateway with mutual TLS (the node presents
  a client certificate) → the carrier's edge (a second router, requiring client
  certificates) → SIPp on UDP: signalling end to end, BYE included.

Certificates are generated at test time (tests/tls_certs.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import dominant_frequency, finished_wav, start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import router_sections, running_router
from tests.support.sipp import SIPP, SippPeer
from tests.support.tls_certs import Pki, make_pki

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("baresip") is None, reason="baresip (baresip-core) not installed"
    ),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]

BARESIP_TONE = 700


def baresip_port() -> int:
    """baresip binds SIP on UDP and TCP at the port and TLS at port + 1."""
    for _ in range(50):
        port = free_port()
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no port for baresip")


def write_baresip(conf: Path, snd: Path, pki: Pki, router_tls: int) -> int:
    ctrl = free_port()
    conf.mkdir(parents=True, exist_ok=True)
    snd.mkdir(parents=True, exist_ok=True)
    (conf / "config").write_text(
        f"""poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:{baresip_port()}
sip_cafile {pki.ca}
audio_player aubridge,nowhere
audio_source ausine,{BARESIP_TONE}
ausrc_srate 48000
ausrc_channels 2
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module sndfile.so
snd_path {snd}
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl}
"""
    )
    # No registration: baresip is a TLS caller (a carrier's phone) through the router.
    (conf / "accounts").write_text(
        f"<sip:5550100@127.0.0.1:{router_tls};transport=tls>;regint=0;answermode=manual;"
        "audio_codecs=PCMU/8000/1\n"
    )
    return ctrl


async def ctrl(port: int, command: str, params: str = "") -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
    writer.write(str(len(body)).encode() + b":" + body + b",")
    await writer.drain()
    await asyncio.wait_for(reader.read(1), 5)
    writer.close()


async def test_baresip_over_tls_through_router_to_node_and_tls_gateway(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    rec = tmp_path / "rec" / "from-baresip.wav"
    # The carrier's edge: a second router that requires a client certificate from our CA.
    carrier_uas_port = free_port()
    uas = await SippPeer.start(
        tmp_path, "router_uas.xml", "-aa", "-trace_msg", port=carrier_uas_port
    )
    c_port, c_tls = free_port(), free_port()
    carrier = router_sections(c_port, [f"sip:127.0.0.1:{carrier_uas_port}"])
    carrier["router"]["listen"] = [f"udp:127.0.0.1:{c_port}", f"tls:127.0.0.1:{c_tls}"]
    carrier["router"].update(
        tls_cert=str(pki.server.cert), tls_key=str(pki.server.key), tls_ca=str(pki.ca),
        tls_verify_client=True, admin=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    node, cdrs = await start_node(
        tmp_path,
        {
            "gateways": {"carrier": {
                "proxy": f"127.0.0.1:{c_tls}", "transport": "tls", "tls_ca": str(pki.ca),
                "tls_cert": str(pki.client.cert), "tls_key": str(pki.client.key)}},
            "dialplan": {"rules": [
                {"name": "rec", "destination": "^rec$", "actions": [
                    "answer", f"record_session {rec}", "playback tone_stream://%(2500,0,600)", "hangup"]},
                {"name": "out", "destination": "^out-(\\d+)$", "actions": ["bridge sofia/gateway/carrier/$1"]},
            ]},
        },
    )  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "baresip.log").open("wb")
    try:
        e_port, e_tls = free_port(), free_port()
        edge = router_sections(e_port, [f"sip:127.0.0.1:{node.sip_port}"])
        edge["router"]["listen"] = [f"udp:127.0.0.1:{e_port}", f"tls:127.0.0.1:{e_tls}"]
        edge["router"].update(tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
        (tmp_path / "edge").mkdir()
        (tmp_path / "carrier").mkdir()
        async with (
            running_router(tmp_path / "carrier", carrier) as carrier_router,
            running_router(tmp_path / "edge", edge) as edge_router,
        ):
            snd = tmp_path / "snd"
            port = write_baresip(tmp_path / "baresip", snd, pki, e_tls)
            proc = subprocess.Popen(
                ["baresip", "-f", str(tmp_path / "baresip"), "-v"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            await async_wait_until(lambda: _listening(port), 10, "baresip's ctrl_tcp")
            # 1. media both ways over a TLS-signalled call
            await ctrl(port, "dial", f"sip:rec@127.0.0.1:{e_tls};transport=tls")
            try:
                await async_wait_until(lambda: len(cdrs.records) == 1, 20, "the call's CDR")
            except AssertionError:
                raise AssertionError(_tail(tmp_path / "baresip.log", log)) from None
            assert edge_router.tls is not None and edge_router.tls.handshakes >= 1
            pcm = await finished_wav(rec)
            assert len(pcm) > 8000 and abs(dominant_frequency(pcm) - BARESIP_TONE) < 20
            await async_wait_until(lambda: len(list(snd.glob("dump-*-dec.wav"))) == 1, 10, "dump")
            heard = await finished_wav(next(snd.glob("dump-*-dec.wav")))
            assert abs(dominant_frequency(heard) - 600) < 20
            # 2. out through a mutual-TLS gateway to the carrier's edge and its SIPp
            await ctrl(port, "dial", f"sip:out-5551234@127.0.0.1:{e_tls};transport=tls")
            await uas.wait_received("INVITE", 1, timeout=15)
            await async_wait_until(lambda: bool(node.switch.sessions) and all(
                s.bridged_to is not None for s in node.switch.sessions), 15, "the bridge")  # fmt: skip
            assert edge_router.proxy.dialog_count == 1  # the first call's dialog is gone
            await ctrl(port, "hangup")
            await uas.wait_received("BYE", 1, timeout=15)
            assert carrier_router.tls is not None
            assert carrier_router.tls.handshakes >= 1 and carrier_router.tls.handshake_failures == 0
            assert carrier_router.proxy.stats.requests.get("INVITE") == 1
            await async_wait_until(lambda: len(cdrs.records) == 3, 15, "the bridged call's CDRs")
            # both dialogs passed the edge router both ways (the node's BYE of the first
            # call, baresip's BYE of the second): the router saw them end
            await async_wait_until(
                lambda: edge_router.proxy.dialog_count == 0, 10, "the edge's dialogs ended"
            )
            assert edge_router.proxy.stats.requests.get("BYE", 0) >= 2
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        uas.kill()
        await node.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, log: Any) -> str:
    log.flush()
    return "baresip log:\n" + path.read_bytes()[-3000:].decode(errors="replace")
