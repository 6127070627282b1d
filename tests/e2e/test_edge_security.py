"""Edge security end to end: SIPp and raw SIP against the router in front of a real media
node (users with digest passwords) — no user enumeration, password guessers banned at the
edge while other sources still register, scanners get no reply, a media node answers only
its trusted networks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.config import load
from switchboard.media import digest
from switchboard.media.cdr import MemoryCdrSink
from switchboard.media.node import MediaNode
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router
from tests.support.sipp import SCENARIOS, SIPP, SippPeer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]

LIMIT = 3  # more than this many failures in the window: banned


@contextlib.asynccontextmanager
async def media_node(
    tmp: Path, router: dict[str, object] | None = None, **media: object
) -> AsyncIterator[MediaNode]:
    rtp = random.randrange(20000, 60000, 2000)
    cfg = load(
        environ={},
        overrides={
            "router": router or {},
            "media": {
                "listen": ["udp:127.0.0.1:0"],
                "rtp_port_start": rtp,
                "rtp_port_end": rtp + 1999,
                **media,
            },
            "users": {"1000": {"password": "secret1000"}},
            "security": {"auth_fail_limit": LIMIT, "auth_ban_seconds": 600},
        },
    )
    node = MediaNode(
        cfg, "media-1", state_dir=tmp, cdr_sink=MemoryCdrSink(), admin=False, esl=False
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def node_port(node: MediaNode) -> int:
    assert node.ua is not None
    return node.ua.udp_port


def register_scenario(tmp: Path, expect: int) -> Path:
    path = tmp / f"security_register_{expect}.xml"
    path.write_text(
        (SCENARIOS / "security_register.xml").read_text().replace("@EXPECT@", str(expect))
    )
    return path


async def sipp_register(
    tmp: Path, router_port: int, source: str, password: str, expect: int, calls: int = 1
) -> SippPeer:
    return await SippPeer.start(
        tmp,
        register_scenario(tmp, expect),
        f"127.0.0.1:{router_port}",
        "-s", "1000", "-au", "1000", "-ap", password,
        "-m", str(calls), "-r", "5", "-timeout", "20s",
        ip=source,
        port=free_port(host=source),
    )  # fmt: skip


class RawSip:
    """A UDP socket on ``host`` sending SIP text and reading answers (bounded waits)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()

    def send(self, text: str, to: tuple[str, int]) -> None:
        data = text.replace("@SRC@", f"{self.host}:{self.port}").replace("\n", "\r\n")
        self.sock.sendto(data.encode(), to)

    async def recv(self, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


def request(method: str, user: str, target: str, n: int, extra: str = "") -> str:
    return (
        f"{method} sip:{target} SIP/2.0\n"
        f"Via: SIP/2.0/UDP @SRC@;branch=z9hG4bK-t{n};rport\n"
        f"From: <sip:{user}@{target}>;tag=f{n}\n"
        f"To: <sip:{user}@{target}>\n"
        f"Call-ID: c{n}-{user}@test\n"
        f"CSeq: 1 {method}\n"
        f"Contact: <sip:{user}@@SRC@>\n"
        f"Max-Forwards: 70\n{extra}"
        "Content-Length: 0\n\n"
    )


def blank(data: bytes, user: str, n: int) -> bytes:
    """What may differ between two answers: nonce, tags, the user, the request's ids."""
    data = (
        data.replace(user.encode(), b"U")
        .replace(f"c{n}-".encode(), b"C")
        .replace(f"-t{n}".encode(), b"-T")
        .replace(f"tag=f{n}".encode(), b"tag=F")
    )
    data = re.sub(rb'nonce="[^"]*"', b'nonce="N"', data)
    return re.sub(rb"To: (<[^>]*>);tag=[^\r\n;]*", rb"To: \1;tag=T", data)


async def test_no_enumeration_and_password_guesser_banned_while_others_register(
    tmp_path: Path,
) -> None:
    async with media_node(tmp_path) as node:
        rport = free_port()
        sections = router_sections(rport, [f"sip:127.0.0.1:{node_port(node)}"])
        sections["acl"]["allow"] = ["127.0.0.0/8"]
        sections["security"] = {"auth_fail_limit": LIMIT, "auth_ban_seconds": 600}
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(
                lambda: both_active(router), what="the media node answering OPTIONS"
            )
            # 1. Enumeration: a known and an unknown user get the same challenge.
            probe = RawSip("127.0.0.4")
            try:
                answers, nonces = {}, {}
                for n, user in enumerate(("1000", "1999")):
                    probe.send(
                        request("REGISTER", user, f"127.0.0.1:{rport}", n), ("127.0.0.1", rport)
                    )
                    data = await probe.recv(5.0)
                    assert data is not None, f"no answer for user {user}"
                    nonce = re.search(rb'nonce="([^"]*)"', data)
                    assert nonce is not None
                    nonces[user] = nonce.group(1).decode()
                    answers[user] = blank(data, user, n)
                assert answers["1000"].startswith(b"SIP/2.0 401 ")
                assert answers["1000"] == answers["1999"]
                # ... and a wrong password for each is refused the same way (2 failures
                # from this source: below the ban limit)
                refusals = {}
                for n, user in enumerate(("1000", "1999"), start=10):
                    challenge = re.search(rb"WWW-Authenticate: ([^\r\n]+)", answers[user])
                    assert challenge is not None
                    auth = digest.authorization(
                        challenge.group(1).decode().replace('nonce="N"', f'nonce="{nonces[user]}"'),
                        method="REGISTER", uri=f"sip:127.0.0.1:{rport}", username=user,
                        password="wrong", cnonce="c0ffee",
                    )  # fmt: skip
                    assert auth is not None
                    probe.send(
                        request("REGISTER", user, f"127.0.0.1:{rport}", n,
                                f"Authorization: {auth}\n"),
                        ("127.0.0.1", rport),
                    )  # fmt: skip
                    data = await probe.recv(5.0)
                    assert data is not None, f"no refusal for user {user}"
                    refusals[user] = blank(data, user, n)
                assert refusals["1000"].startswith(b"SIP/2.0 403 ")
                assert refusals["1000"] == refusals["1999"]
            finally:
                probe.close()
            # 2. A guesser at 127.0.0.2: each wrong password is refused (403) ...
            guesser = await sipp_register(
                tmp_path, rport, "127.0.0.2", "wrong", 403, calls=LIMIT + 1
            )
            await guesser.ok()
            await async_wait_until(lambda: router.proxy.stats.auth_bans == 1, 5.0, "the ban")
            assert router.proxy.stats.auth_failures == LIMIT + 1 + 2  # + the probe's two
            # ... and then even the right password gets no answer at all from that source,
            late = await sipp_register(tmp_path, rport, "127.0.0.2", "secret1000", 200)
            assert await late.wait(30.0) != 0
            assert router.proxy.stats.auth_ban_drops >= 1
            # while another source registers normally.
            phone = await sipp_register(tmp_path, rport, "127.0.0.3", "secret1000", 200)
            await phone.ok()
            assert node.ua is not None
            bound = node.ua.registrar.contacts("1000", time.time())
            assert [b.contact.uri.host for b in bound] == ["127.0.0.3"]
            metrics = (
                await _get(f"http://{router.admin_address[0]}:{router.admin_address[1]}/metrics")
            ).decode()
            assert "switchboard_router_auth_bans_total 1.0" in metrics


async def _get(url: str) -> bytes:
    import httpx

    async with httpx.AsyncClient() as c:
        return (await c.get(url, timeout=5.0)).content


async def test_scanner_user_agent_gets_no_reply(tmp_path: Path) -> None:
    async with media_node(tmp_path) as node:
        rport = free_port()
        sections = router_sections(rport, [f"sip:127.0.0.1:{node_port(node)}"])
        async with running_router(tmp_path, sections) as router:
            raw = RawSip("127.0.0.1")
            try:
                target = f"127.0.0.1:{rport}"
                raw.send(
                    request("OPTIONS", "100", target, 1, "User-Agent: friendly-scanner\n"),
                    ("127.0.0.1", rport),
                )
                raw.send(
                    request("INVITE", "100", target, 2, "User-Agent: sipvicious\n"),
                    ("127.0.0.1", rport),
                )
                # control: the same request from an honest User-Agent is answered
                raw.send(
                    request("OPTIONS", "100", target, 3, "User-Agent: baresip\n"),
                    ("127.0.0.1", rport),
                )
                answer = await raw.recv(5.0)
                assert answer is not None and b"-t3" in answer
                assert b"Server:" not in answer and b"switchboard" not in answer.lower()
                assert await raw.recv(1.0) is None  # nothing for the scanners
                assert router.proxy.stats.scanner_drops == 2
            finally:
                raw.close()


async def test_media_node_answers_only_trusted_networks(tmp_path: Path) -> None:
    async with media_node(
        tmp_path, trusted=["127.0.0.1/32"], router={"listen": ["udp:127.0.0.9:5060"]}
    ) as node:
        target = ("127.0.0.1", node_port(node))
        inside, router, outside = RawSip("127.0.0.1"), RawSip("127.0.0.9"), RawSip("127.0.0.5")
        try:
            outside.send(request("OPTIONS", "1000", "127.0.0.1", 1), target)
            outside.send(request("REGISTER", "1000", "127.0.0.1", 2), target)
            inside.send(request("OPTIONS", "1000", "127.0.0.1", 3), target)
            answer = await inside.recv(5.0)
            assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
            # no product name in the node's answers (no User-Agent/Server by default)
            assert b"User-Agent" not in answer and b"Server" not in answer
            # the platform's router ([router] listen) is trusted without being listed
            router.send(request("OPTIONS", "1000", "127.0.0.1", 4), target)
            answer = await router.recv(5.0)
            assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
            assert await outside.recv(1.0) is None
            assert node.ua is not None and node.ua.untrusted_drops == 2
        finally:
            for sock in (inside, router, outside):
                sock.close()
