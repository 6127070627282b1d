"""A media node on IPv6 only: SIP over UDP, TCP and TLS on ``[::1]``, answered with Vias
and Contacts of its IPv6 address; an offer with IPv6 media to a node without an IPv6
media address (``[media] rtp_ip6``) is refused 488, not answered with IPv4 media the far
end cannot reach."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path

import pytest

from switchboard.media.node import MediaNode
from tests.support.media import start_node
from tests.support.net import free_port
from tests.support.tls_certs import make_pki


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def request(method: str, me: tuple[str, int], transport: str, n: int, body: str = "") -> bytes:
    head = (
        f"{method} sip:{n}@[::1] SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} [{me[0]}]:{me[1]};branch=z9hG4bK-v6-{n};rport\r\n"
        f"From: <sip:carrier@[::1]>;tag=v6{n}\r\n"
        f"To: <sip:{n}@[::1]>\r\n"
        f"Call-ID: v6-{n}@carrier\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:carrier@[{me[0]}]:{me[1]};transport={transport.lower()}>\r\n"
        f"Max-Forwards: 70\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()


OFFER6 = (
    "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


async def read_sip(reader: asyncio.StreamReader) -> str:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    m = re.search(rb"^Content-Length\s*:\s*(\d+)", head, re.M | re.I)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return (head + body).decode()


async def test_ipv6_only_node_on_udp_tcp_tls_and_488_without_ipv6_media(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    udp, tcp, tls = (free_port(host="::1") for _ in range(3))
    node: MediaNode
    node, _ = await start_node(
        tmp_path,
        {
            "media": {
                "listen": [f"udp:[::1]:{udp}", f"tcp:[::1]:{tcp}", f"tls:[::1]:{tls}"],
                "tls_cert": str(pki.server.cert),
                "tls_key": str(pki.server.key),
                "rtp_ip6": "",  # no IPv6 media address
            },
        },
    )
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        me = sock.getsockname()[:2]
        # UDP: OPTIONS answered; an IPv6 offer refused 488 (no IPv6 media address)
        sock.sendto(request("OPTIONS", me, "UDP", 1), ("::1", udp))
        answer = (await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)).decode()
        assert answer.startswith("SIP/2.0 200 "), answer
        assert re.search(rf"^Via: .*;rport={me[1]};received=::1\r$", answer, re.M), answer
        sock.sendto(request("INVITE", me, "UDP", 2, OFFER6), ("::1", udp))
        while True:
            answer = (await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)).decode()
            if not answer.startswith("SIP/2.0 100 "):
                break
        assert answer.startswith("SIP/2.0 488 "), answer
        # TCP and TLS on [::1]
        for transport, port, ctx in (
            ("TCP", tcp, None),
            ("TLS", tls, ssl.create_default_context(cafile=str(pki.ca))),
        ):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "::1", port, ssl=ctx, server_hostname="::1" if ctx else None
                ),
                5,
            )
            local = writer.get_extra_info("sockname")[:2]
            writer.write(request("OPTIONS", local, transport, 3))
            answer = await read_sip(reader)
            assert answer.startswith("SIP/2.0 200 "), answer
            writer.close()
        assert node.ua is not None
        assert node.ua.contact("UDP", peer_host="::1") == f"<sip:switchboard@[::1]:{udp}>"
        assert node.ua.contact("TCP", peer_host="::1").endswith(f"@[::1]:{tcp};transport=tcp>")
        assert node.ua.untrusted_drops == 0  # ::1 is trusted by default
    finally:
        sock.close()
        await node.stop()
