"""SRTP on a media node, over SIP: the policy per trunk — a call the router marks as
coming from a trunk with ``[trunks.NAME] srtp = "mandatory"`` must be SRTP (plain RTP
refused 488), while the same plain offer from another trunk, or with no trunk, follows
``[media] srtp`` — and packets failing authentication on an SRTP call counted in
``switchboard_media_srtp_failures_total`` when the call ends (the call goes on)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
from pathlib import Path

from tests.support.media import start_node
from tests.support.net import async_wait_until

PLAIN = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(port: int, n: int, trunk: str | None) -> bytes:
    extra = f"X-Switchboard-Trunk: {trunk}\r\n" if trunk else ""
    return (
        f"INVITE sip:4930123456@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-tr{n};rport\r\n"
        f"From: <sip:carrier@127.0.0.1>;tag=t{n}\r\n"
        f"To: <sip:4930123456@127.0.0.1>\r\n"
        f"Call-ID: trunk-srtp-{n}@test\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:carrier@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(PLAIN)}\r\n\r\n{PLAIN}"
    ).encode()


async def final_response(sock: socket.socket, n: int) -> bytes:
    """The final response to INVITE ``n`` (earlier calls' retransmitted finals skipped)."""
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
        if f"Call-ID: trunk-srtp-{n}@".encode() in data and int(data.split(b" ", 2)[1]) >= 200:
            return data


async def test_trunk_srtp_mandatory_refuses_plain_rtp_other_calls_follow_media_srtp(
    tmp_path: Path,
) -> None:
    node, _ = await start_node(
        tmp_path,
        {
            "media": {"srtp": "optional"},
            "dialplan": {
                "rules": [
                    {
                        "name": "nowhere",
                        "destination": "^4930",
                        "actions": ["hangup UNALLOCATED_NUMBER"],
                    },
                ]
            },
            "trunks": {
                "secure": {"sources": ["192.0.2.1"], "srtp": "mandatory"},
                "plain": {"sources": ["192.0.2.2"]},
            },
        },
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        assert node.ua is not None
        to, port = ("127.0.0.1", node.ua.udp_port), sock.getsockname()[1]
        answers = []
        for n, trunk in enumerate(("secure", "plain", None)):
            sock.sendto(invite(port, n, trunk), to)
            answers.append(await final_response(sock, n))
        statuses = [int(a.split(b" ", 2)[1]) for a in answers]
        # secure: 488 (plain RTP refused); the others pass negotiation and reach the
        # dialplan, which refuses the number (UNALLOCATED_NUMBER: 404)
        assert statuses == [488, 404, 404], answers
    finally:
        sock.close()
        await node.stop()


SAVP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
)


def request(method: str, port: int, tag: str, cseq: int, body: str = "") -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:4930123456@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-srtpm-{method}-{cseq};rport\r\n"
        f"From: <sip:carrier@127.0.0.1>;tag=srtpm\r\n"
        f"To: <sip:4930123456@127.0.0.1>{tag}\r\n"
        f"Call-ID: srtp-metric@test\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:carrier@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        f"{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def test_forged_srtp_packets_are_counted_in_the_metric(tmp_path: Path) -> None:
    node, _ = await start_node(
        tmp_path,
        {
            "media": {"srtp": "mandatory"},
            "dialplan": {"rules": [
                {"name": "park", "destination": "^4930", "actions": ["answer", "park"]},
            ]},
        },
    )  # fmt: skip
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setblocking(False)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        assert node.ua is not None
        to, port = ("127.0.0.1", node.ua.udp_port), sip.getsockname()[1]
        key = base64.b64encode(os.urandom(30)).decode()
        sdp = SAVP.format(port=rtp.getsockname()[1], key=key)
        sip.sendto(request("INVITE", port, "", 1, sdp), to)
        while True:
            ok = (await asyncio.wait_for(loop.sock_recv(sip, 65535), 5)).decode()
            if ok.startswith("SIP/2.0 200 "):
                break
        assert "RTP/SAVP" in ok and "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in ok, ok
        to_tag = re.search(r"^To: .*(;tag=[^\r;]+)", ok, re.M)
        media = re.search(r"^m=audio (\d+) ", ok, re.M)
        assert to_tag is not None and media is not None
        sip.sendto(request("ACK", port, to_tag.group(1), 1), to)
        [leg] = node.ua.legs.values()
        # plain RTP (and garbage) on the SRTP stream: dropped, counted, the call goes on
        for seq in range(5):
            rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\xff" * 160,
                       ("127.0.0.1", int(media.group(1))))  # fmt: skip
        await async_wait_until(lambda: leg.rtp.srtp_failures == 5, 5, "5 SRTP failures")
        assert not leg.session.is_hungup
        sip.sendto(request("BYE", port, to_tag.group(1), 2), to)
        await async_wait_until(
            lambda: node.registry.get_sample_value("switchboard_media_srtp_failures_total") == 5,
            5,
            "the metric counting them",
        )
    finally:
        sip.close()
        rtp.close()
        await node.stop()
