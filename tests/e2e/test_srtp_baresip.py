"""SRTP (RFC 3711, SDES keys RFC 4568) with baresip (``mediaenc=srtp-mand``) as the user:

1. a plain-RTP caller (SIPp + a test RTP socket) reaches baresip through ``user/1000``,
   whose SRTP policy is mandatory: the node bridges RTP ↔ SRTP; the caller hears
   baresip's 700 Hz and baresip hears the caller's 1 kHz (its decoder dump);
2. baresip calls in offering RTP/SAVP: the node answers SRTP, records baresip's 700 Hz
   and plays 600 Hz, heard in baresip's dump.

The tones can only be right if both sides encrypt and authenticate with the keys
exchanged in the SDP."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.media import (
    RtpPeer,
    SippResult,
    dominant_frequency,
    finish_sipp,
    finished_wav,
    run_sipp,
    start_node,
)
from tests.support.net import async_wait_until, free_port

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        shutil.which("baresip") is None, reason="baresip (baresip-core) not installed"
    ),
]

BARESIP_TONE = 700


def sip_listen_port() -> int:
    """A port baresip can listen on: it binds SIP on UDP and TCP there and TLS on port + 1,
    and fails to register at all when any of them is taken."""
    for _ in range(50):
        port = free_port()
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls,
            ):
                tcp.bind(("127.0.0.1", port))
                tls.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free for baresip on UDP and TCP")


def baresip_config(conf: Path, snd: Path, node_port: int) -> int:
    """Write baresip's config/accounts; returns the ctrl_tcp port."""
    ctrl = free_port("tcp")
    conf.mkdir(parents=True, exist_ok=True)
    snd.mkdir(parents=True, exist_ok=True)
    (conf / "config").write_text(
        f"""poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:{sip_listen_port()}
audio_player aubridge,nowhere
audio_source ausine,{BARESIP_TONE}
ausrc_srate 48000
ausrc_channels 2
module_path /usr/lib/baresip/modules
module g711.so
module srtp.so
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
    (conf / "accounts").write_text(
        f"<sip:1000@127.0.0.1:{node_port};transport=udp>;auth_pass=pw;answermode=auto;"
        "regint=60;audio_codecs=PCMU/8000/1;mediaenc=srtp-mand\n"
    )
    return ctrl


async def ctrl_command(port: int, command: str, params: str) -> None:
    """baresip ctrl_tcp: a netstring-framed JSON command."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"command": command, "params": params, "token": "t1"}).encode()
    writer.write(str(len(body)).encode() + b":" + body + b",")
    await writer.drain()
    await asyncio.wait_for(reader.read(1), 5)  # the response
    writer.close()


def dumps(snd: Path, kind: str) -> list[Path]:
    return sorted(snd.glob(f"dump-*-{kind}.wav"))


async def test_srtp_with_baresip_both_ways_and_bridged_to_plain_rtp(tmp_path: Path) -> None:
    rec = tmp_path / "rec" / "from-baresip.wav"
    node, cdrs = await start_node(
        tmp_path,
        {
            "users": {"1000": {"password": "pw", "srtp": "mandatory"}},
            "dialplan": {"rules": [
                {"name": "u", "destination": "^call-1000$", "actions": ["bridge user/1000"]},
                {"name": "rec", "destination": "^rec$", "actions": [
                    "answer", f"record_session {rec}", "playback tone_stream://%(2500,0,600)", "hangup"]},
            ]},
        },
    )  # fmt: skip
    snd = tmp_path / "snd"
    ctrl = baresip_config(tmp_path / "baresip", snd, node.sip_port)
    log = (tmp_path / "baresip.log").open("wb")
    proc = subprocess.Popen(
        ["baresip", "-f", str(tmp_path / "baresip"), "-v"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    peer = await RtpPeer.open()
    try:
        assert node.ua is not None
        try:
            await async_wait_until(
                lambda: bool(node.ua.registrar.contacts("1000", time.time())), 15, "REGISTER"
            )
        except AssertionError:
            log.flush()
            tail = (tmp_path / "baresip.log").read_bytes()[-3000:].decode(errors="replace")
            raise AssertionError(f"baresip did not register; its log ends:\n{tail}") from None

        # 1. called through user/1000: a caller (SIPp + test RTP socket) reaches baresip
        sipp = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path, service="call-1000",
                              keys={"rtp_port": peer.port}, pause_ms=3000, background=True)  # fmt: skip
        await async_wait_until(
            lambda: any(s.bridged_to is not None for s in node.switch.sessions), 15, "bridge"
        )
        a = next(s for s in node.switch.sessions if s.channel.direction == "inbound")
        b = next(s for s in node.switch.sessions if s.channel.direction == "outbound")
        assert a.media.srtp_suite is None  # the caller's leg: plain RTP
        assert b.media.srtp_suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
        peer.send_tone(("127.0.0.1", a.media.port), 1000, 2.0)
        await peer.wait_sent()
        result = await finish_sipp(sipp)
        assert isinstance(result, SippResult) and result.returncode == 0, result.output[-2000:]
        heard = peer.audio(pt=0)
        assert len(heard) > 8000 and abs(dominant_frequency(heard) - BARESIP_TONE) < 20
        await async_wait_until(lambda: len(dumps(snd, "dec")) == 1, 10, "baresip's dump")
        await async_wait_until(lambda: not node.switch.channels, 10, "call end")
        got = await finished_wav(dumps(snd, "dec")[0])
        assert abs(dominant_frequency(got) - 1000) < 20  # baresip heard our caller

        # 2. baresip calls in: the node records it and plays 600 Hz back
        assert b.media.srtp_failures == 0
        await ctrl_command(ctrl, "dial", f"sip:rec@127.0.0.1:{node.sip_port}")
        await async_wait_until(
            lambda: any(s.media is not None and s.media.srtp_suite for s in node.switch.sessions),
            15,
            "baresip's call answered with SRTP",
        )
        await async_wait_until(lambda: len(cdrs.records) == 3, 20, "the inbound call's CDR")
        pcm = await finished_wav(rec)
        assert len(pcm) > 8000
        assert abs(dominant_frequency(pcm) - BARESIP_TONE) < 20
        await async_wait_until(lambda: len(dumps(snd, "dec")) == 2, 10, "baresip's second dump")
        got = await finished_wav(dumps(snd, "dec")[-1])
        assert abs(dominant_frequency(got) - 600) < 20
        baresip_in = [c for c in cdrs.records if c.destination == "rec"]
        assert baresip_in and baresip_in[0].disposition == "ANSWERED"
        assert baresip_in[0].caller_id == "1000"
    finally:
        peer.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        await node.stop()
