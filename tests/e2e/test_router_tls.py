"""SIP over TLS at the edge router (RFC 3261 §26): a carrier on TLS calls through the
router to a SIPp media node on UDP; mutual TLS; failed handshakes are counted and never
fatal; SIGHUP rotates the certificate without touching connections already up.

SIPp in Debian is built without TLS (``-t l1``: "you must compile SIPp with OpenSSL"), so
the TLS carrier here is Python's ssl module speaking SIP text; baresip over TLS is in
test_router_tls_baresip.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
from pathlib import Path

import pytest

from switchboard.router.service import Router, StartError
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router, write_config
from tests.support.sipp import SIPP, SippPeer
from tests.support.tls_certs import Pki, make_pki

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_sections(
    pki: Pki, port: int, tls_port: int, destinations: list[str], **router: object
) -> dict[str, dict[str, object]]:
    sections = router_sections(port, destinations)
    sections["router"]["listen"] = [f"udp:127.0.0.1:{port}", f"tls:127.0.0.1:{tls_port}"]
    sections["router"].update(
        {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key), "tls_ca": str(pki.ca)}
    )
    sections["router"].update(router)
    return sections


class TlsSip:
    """A SIP peer on one TLS connection (framing by Content-Length, §18.3)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.local = writer.get_extra_info("sockname")[:2]

    @classmethod
    async def connect(cls, port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> TlsSip:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), 5
        )
        return cls(reader, writer)

    @property
    def peer_cn(self) -> str:
        cert = self.writer.get_extra_info("peercert")
        return dict(x[0] for x in cert["subject"])["commonName"]

    async def send(self, text: str) -> None:
        text = text.replace("@ME@", f"{self.local[0]}:{self.local[1]}")
        body = ""
        if "\n\n" in text:
            text, body = text.split("\n\n", 1)
        head = text.strip("\n").replace("\n", "\r\n")
        self.writer.write(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        await self.writer.drain()

    async def read(self, timeout: float = 5.0) -> str:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        m = re.search(rb"^(?:Content-Length|l)\s*:\s*(\d+)", head, re.M | re.I)
        body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return (head + body).decode()

    async def response(self, status: int, timeout: float = 5.0) -> str:
        """Read until a response with ``status`` (provisionals skipped)."""
        while True:
            msg = await self.read(timeout)
            if msg.startswith(f"SIP/2.0 {status} "):
                return msg
            assert re.match(r"SIP/2\.0 1\d\d ", msg), msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def client_ctx(pki: Pki, cert: object = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)  # type: ignore[attr-defined]
    return ctx


INVITE = """INVITE sip:{user}@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/TLS @ME@;branch=z9hG4bK-tls-{n}
From: <sip:carrier@127.0.0.1>;tag=c{n}
To: <sip:{user}@127.0.0.1:{port}>
Call-ID: tls-call-{n}@carrier
CSeq: 1 INVITE
Contact: <sip:carrier@@ME@;transport=tls>
Max-Forwards: 70
Content-Type: application/sdp

v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0
"""

IN_DIALOG = """{method} {target} SIP/2.0
Via: SIP/2.0/TLS @ME@;branch=z9hG4bK-tls-{n}-{method}
{routes}From: <sip:carrier@127.0.0.1>;tag=c{n}
{to}
Call-ID: tls-call-{n}@carrier
CSeq: {cseq} {method}
Max-Forwards: 70
"""

OPTIONS = """OPTIONS sip:127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/TLS @ME@;branch=z9hG4bK-opt-{n}
From: <sip:carrier@127.0.0.1>;tag=o{n}
To: <sip:127.0.0.1:{port}>
Call-ID: tls-options-{n}@carrier
CSeq: 1 OPTIONS
Max-Forwards: 70
"""


def header(msg: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*(.*?)\r?$", msg, re.M | re.I)


async def establish(
    peer: TlsSip, port: int, n: int, user: str = "echo"
) -> tuple[str, dict[str, object]]:
    """INVITE → 200 and the ACK along the route set; returns the 200 and the dialog."""
    await peer.send(INVITE.format(port=port, n=n, user=user))
    ok = await peer.response(200)
    rr = [v for line in header(ok, "Record-Route") for v in line.split(", ")]
    # §12.1.2: the UAC's route set is the reverse (none with topology hiding)
    routes = f"Route: {', '.join(reversed(rr))}\n" if rr else ""
    target = re.search(r"<([^>]+)>", header(ok, "Contact")[0]).group(1)  # type: ignore[union-attr]
    to = "To: " + header(ok, "To")[0]
    fields: dict[str, object] = {"target": target, "routes": routes, "n": n, "to": to}
    await peer.send(IN_DIALOG.format(method="ACK", cseq=1, **fields))
    return ok, fields


async def hang_up(peer: TlsSip, fields: dict[str, object]) -> None:
    """BYE along the dialog's route set, answered 200."""
    await peer.send(IN_DIALOG.format(method="BYE", cseq=2, **fields))
    await peer.response(200)


async def call(peer: TlsSip, port: int, n: int, user: str = "echo") -> str:
    """INVITE → 200, ACK and BYE along the route set; returns the 200."""
    ok, fields = await establish(peer, port, n, user)
    await hang_up(peer, fields)
    return ok


async def test_tls_carrier_calls_through_the_router_to_a_udp_media_node(
    tmp_path: Path, pki: Pki
) -> None:
    uas_port = free_port()
    uas = await SippPeer.start(tmp_path, "router_uas.xml", "-aa", "-trace_msg", port=uas_port)
    port, tls_port = free_port(), free_port()
    sections = tls_sections(pki, port, tls_port, [f"sip:127.0.0.1:{uas_port}"])
    sections["security"] = {"topology_hiding": False}  # to see the Record-Route doubling
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the media node answering")
            peer = await TlsSip.connect(tls_port, client_ctx(pki))
            assert peer.peer_cn == "switchboard-test"
            for n in range(3):
                ok = await call(peer, port, n)
            # Record-Route doubled: the node's side on UDP, the carrier's on TLS
            rr = [v for line in header(ok, "Record-Route") for v in line.split(", ")]
            assert rr == [
                f"<sip:127.0.0.1:{port};transport=udp;lr>",
                f"<sip:127.0.0.1:{tls_port};transport=tls;lr>",
            ]
            await peer.close()
            await uas.wait_received("BYE", 3)
            assert router.proxy.stats.requests["BYE"] == 3
    finally:
        uas.kill()


async def test_mutual_tls_and_failed_handshakes_are_counted_not_fatal(
    tmp_path: Path, pki: Pki
) -> None:
    port, tls_port = free_port(), free_port()
    sections = tls_sections(pki, port, tls_port, [], tls_verify_client=True)
    async with running_router(tmp_path, sections) as router:
        assert router.tls is not None
        # no client certificate, a certificate from another CA, and plain SIP on the TLS port
        for cert in (None, pki.other_client):
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                peer = await TlsSip.connect(tls_port, client_ctx(pki, cert))
                await peer.send(OPTIONS.format(port=tls_port, n=0))
                await peer.read()
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
        writer.write(OPTIONS.format(port=tls_port, n=0).replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 15) == b""  # closed, nothing answered
        writer.close()
        await async_wait_until(
            lambda: router.tls.handshake_failures == 3, 15, "3 failed handshakes"
        )  # type: ignore[union-attr]
        # a carrier with a certificate from the CA is served
        good = await TlsSip.connect(tls_port, client_ctx(pki, pki.client))
        await good.send(OPTIONS.format(port=tls_port, n=1))
        assert (await good.read()).startswith("SIP/2.0 200 ")
        await good.close()
        import httpx

        host, aport = router.admin_address
        async with httpx.AsyncClient() as c:
            text = (await c.get(f"http://{host}:{aport}/metrics")).text
        assert "switchboard_router_tls_handshake_failures_total 3.0" in text


async def test_sighup_reload_rotates_the_certificate_without_dropping_calls(
    tmp_path: Path, pki: Pki
) -> None:
    uas_port = free_port()
    uas = await SippPeer.start(tmp_path, "router_uas.xml", "-aa", "-trace_msg", port=uas_port)
    port, tls_port = free_port(), free_port()
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server.cert, live / "server.crt")
    shutil.copy(pki.server.key, live / "server.key")
    sections = tls_sections(pki, port, tls_port, [f"sip:127.0.0.1:{uas_port}"])
    sections["router"].update(
        {"tls_cert": str(live / "server.crt"), "tls_key": str(live / "server.key")}
    )
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the media node answering")
            old = await TlsSip.connect(tls_port, client_ctx(pki))
            assert old.peer_cn == "switchboard-test"
            _, up = await establish(old, port, 0)  # a call is up across the rotation
            rotated = pki.issue_server("rotated", "switchboard-rotated")
            shutil.copy(rotated.cert, live / "server.crt")
            shutil.copy(rotated.key, live / "server.key")
            router.reload()  # what SIGHUP calls
            new = await TlsSip.connect(tls_port, client_ctx(pki))
            assert new.peer_cn == "switchboard-rotated"
            await call(new, port, 1)  # a call on the new certificate
            await hang_up(old, up)  # the call set up before the rotation ends normally
            for n, peer in enumerate((old, new)):  # both connections still carry SIP
                await peer.send(OPTIONS.format(port=tls_port, n=n))
                assert (await peer.read()).startswith("SIP/2.0 200 ")
            await uas.wait_received("BYE", 2)
            # a broken key on reload is refused and the running certificate is kept
            (live / "server.key").write_text("not a key")
            with pytest.raises(ValueError, match="tls_key"):
                router.reload()
            third = await TlsSip.connect(tls_port, client_ctx(pki))
            assert third.peer_cn == "switchboard-rotated"
            for p in (old, new, third):
                await p.close()
    finally:
        uas.kill()


async def test_mutual_tls_per_trunk(tmp_path: Path, pki: Pki) -> None:
    """A trunk with tls_client_names takes calls only over TLS from a certificate naming
    it; the same source without one, with another name, or over UDP is refused 403."""
    uas_port = free_port()
    uas = await SippPeer.start(tmp_path, "router_uas.xml", "-aa", "-trace_msg", port=uas_port)
    port, tls_port = free_port(), free_port()
    sections = tls_sections(pki, port, tls_port, [f"sip:127.0.0.1:{uas_port}"])
    sections["trunks.mtls"] = {"sources": ["127.0.0.1"], "tls_client_names": ["carrier"]}
    stranger = pki.issue_client("stranger", "stranger")
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the media node answering")
            good = await TlsSip.connect(tls_port, client_ctx(pki, pki.client))
            # CN=carrier: admitted, through to the node and back
            await call(good, port, 0, NUMBER)
            refused = []
            for n, cert in ((1, None), (2, stranger)):
                peer = await TlsSip.connect(tls_port, client_ctx(pki, cert))
                await peer.send(INVITE.format(port=port, n=n, user=NUMBER))
                refused.append(await peer.response(403))
                await peer.close()
            for msg in refused:
                assert msg.startswith("SIP/2.0 403 Client Certificate Required"), msg
            # the trunk's address over UDP: no certificate at all
            raw = RawUdp()
            await raw.open()
            text = INVITE.format(port=port, n=3, user=NUMBER).replace("SIP/2.0/TLS", "SIP/2.0/UDP")
            raw.send(text.replace("@ME@", f"127.0.0.1:{raw.port}"), port)
            answer = await raw.final()
            assert answer.startswith("SIP/2.0 403 Client Certificate Required"), answer
            raw.close()
            await good.close()
            await uas.wait_received("INVITE", 1)  # only the certified call reached the node
            trunk = router.proxy.trunks.trunks["mtls"]  # type: ignore[union-attr]
            assert trunk.stats.rejected == {"tls_client": 3}
            assert trunk.stats.admitted == 1
    finally:
        uas.kill()


NUMBER = "+4930123456"


class RawUdp:
    """SIP text over UDP from 127.0.0.1, reading until a final response."""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        queue = self.queue

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                queue.put_nowait(data)

        self.transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]

    def send(self, text: str, port: int) -> None:
        head, _, body = text.partition("\n\n")
        head = head.strip("\n").replace("\n", "\r\n")
        data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        self.transport.sendto(data, ("127.0.0.1", port))

    async def final(self) -> str:
        while True:
            msg = (await asyncio.wait_for(self.queue.get(), 5)).decode()
            if not re.match(r"SIP/2\.0 1\d\d ", msg):
                return msg

    def close(self) -> None:
        self.transport.close()


async def test_tls_carrier_over_ipv6_to_an_ipv4_media_node(tmp_path: Path, pki: Pki) -> None:
    """tls:[::1] next to udp:127.0.0.1: an IPv6 TLS carrier's call reaches an IPv4 SIPp node
    and comes back (Record-Route doubled across transport and family without hiding)."""
    uas_port = free_port()
    uas = await SippPeer.start(tmp_path, "router_uas.xml", "-aa", "-trace_msg", port=uas_port)
    port, tls_port = free_port(), free_port(host="::1")
    sections = tls_sections(pki, port, tls_port, [f"sip:127.0.0.1:{uas_port}"])
    sections["router"]["listen"] = [f"udp:127.0.0.1:{port}", f"tls:[::1]:{tls_port}"]
    sections["acl"]["allow"] = ["127.0.0.1", "::1"]
    sections["security"] = {"topology_hiding": False}
    try:
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="the media node answering")
            peer = await TlsSip.connect(tls_port, client_ctx(pki), host="::1")
            peer.local = (f"[{peer.local[0]}]", peer.local[1])
            ok = await call(peer, port, 0)
            rr = [v for line in header(ok, "Record-Route") for v in line.split(", ")]
            assert rr == [
                f"<sip:127.0.0.1:{port};transport=udp;lr>",
                f"<sip:[::1]:{tls_port};transport=tls;lr>",
            ], rr
            await peer.close()
            await uas.wait_received("BYE", 1)
    finally:
        uas.kill()


async def test_tls_listen_without_certificate_is_a_config_error(tmp_path: Path) -> None:
    from switchboard import config as config_mod

    port = free_port()
    sections = router_sections(port, [])
    sections["router"]["listen"] = [f"tls:127.0.0.1:{port}"]
    path = write_config(tmp_path / "r.toml", sections)
    with pytest.raises(config_mod.ConfigError, match="tls_cert"):
        config_mod.load(path, environ={})
    sections["router"].update(
        {"tls_cert": str(tmp_path / "missing.crt"), "tls_key": str(tmp_path / "k")}
    )
    path = write_config(tmp_path / "r.toml", sections)
    router = Router(config_mod.load(path, environ={}), path)
    with pytest.raises(StartError, match="tls_cert"):
        await router.start()


async def test_media_node_accepts_tls_and_counts_failed_handshakes(
    tmp_path: Path, pki: Pki
) -> None:
    from tests.support.media import start_node

    tls_port = free_port()
    node, _ = await start_node(
        tmp_path,
        {
            "media": {
                "listen": [f"udp:127.0.0.1:{free_port()}", f"tls:127.0.0.1:{tls_port}"],
                "tls_cert": str(pki.server.cert),
                "tls_key": str(pki.server.key),
            }
        },
    )
    try:
        peer = await TlsSip.connect(tls_port, client_ctx(pki))
        await peer.send(OPTIONS.format(port=tls_port, n=7))
        answer = await peer.read()
        assert answer.startswith("SIP/2.0 200 ")
        await peer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_port)
        writer.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        assert node.ua is not None and node.ua.endpoint is not None
        tls = node.ua.endpoint.tls
        assert tls is not None
        await async_wait_until(lambda: tls.handshake_failures == 1, 15, "the failed handshake")
    finally:
        await node.stop()
