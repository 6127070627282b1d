"""``switchboard media --config FILE --name media-1`` as an operator runs it."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.net import free_port

pytestmark = [pytest.mark.timeout(60)]


def tcp_port() -> int:
    return free_port("tcp")


async def options(port: int) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not fut.done():
                fut.set_result(data)

    t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    me = t.get_extra_info("sockname")[1]
    t.sendto(
        (
            f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKcli1\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: cli1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        ("127.0.0.1", port),
    )
    try:
        return await asyncio.wait_for(fut, 5)
    finally:
        t.close()


async def test_media_command_serves_sip_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    sip, admin, esl = free_port(), tcp_port(), tcp_port()
    rtp = 20000 + (free_port() % 20000) // 2 * 2
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'[platform]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[media]\nlisten = ["udp:127.0.0.1:{sip}", "tcp:127.0.0.1:{sip}"]\nadmin = "127.0.0.1:{admin}"\n'
        f"rtp_port_start = {rtp}\nrtp_port_end = {rtp + 99}\n"
        f'[esl]\nlisten = "127.0.0.1:{esl}"\n[limits]\nsessions_per_second = 50\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "media", "--config", str(cfg), "--name", "media-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient() as client:

            async def metrics() -> str:
                try:
                    r = await client.get(f"http://127.0.0.1:{admin}/metrics")
                except httpx.HTTPError:
                    return ""
                return r.text if r.status_code == 200 else ""

            text = ""

            async def up() -> bool:
                nonlocal text
                text = await metrics()
                return bool(text)

            for _ in range(100):
                if await up():
                    break
                await asyncio.sleep(0.1)
            assert 'voip_calls_total{direction="inbound",disposition="answered"} 0.0' in text
            assert "voip_call_duration_seconds_bucket" in text and 'le="600.0"' in text
            assert "switchboard_media_sessions_per_second_max 50.0" in text
        reply = await options(sip)
        assert reply.startswith(b"SIP/2.0 200") and b"X-Switchboard-Calls: 0" in reply
        reader, writer = await asyncio.open_connection("127.0.0.1", esl)
        greeting = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        assert greeting == b"Content-Type: auth/request\n\n"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_media_command_exits_3_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        cfg = tmp_path / "node.toml"
        cfg.write_text(
            f'[platform]\nstate_dir = "{tmp_path}"\n[media]\nlisten = ["udp:127.0.0.1:{port}"]\n'
            f'admin = "127.0.0.1:{tcp_port()}"\n[esl]\nlisten = "127.0.0.1:{tcp_port()}"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.cli", "media", "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3, out.decode()
    assert b"cannot bind" in out


async def test_media_command_rejects_a_bad_dialplan_key(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[media]\nlistne = ["udp:127.0.0.1:0"]\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "media", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"media.listne" in out
