"""No user enumeration by timing: a running media node answers a REGISTER with wrong
credentials for a configured user and for an unknown one in the same time (within noise).

The measurement is what an enumerator sees: the round trip of the refused REGISTER over
UDP. Known and unknown requests alternate (their order swapped every round), so load from
other processes on the machine hits both series alike; their medians are compared. What this catches: any work done for one
kind of user only that costs more than the noise (or 15 % of the round trip) — a database
lookup, a different answer; the digest itself is computed for both (against a decoy
password for an unknown user)."""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import time
from pathlib import Path

from switchboard.media import digest
from tests.support.media import start_node

ROUNDS = 400


class Client:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def register(self, user: str, auth: str | None = None) -> bytes:
        self.n += 1
        extra = f"Authorization: {auth}\r\n" if auth else ""
        return (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-tm{self.n};rport\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag=f{self.n}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: timing-{self.n}@test\r\n"
            f"CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.port}>\r\n"
            f"Max-Forwards: 70\r\nExpires: 600\r\n{extra}"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    async def exchange(self, data: bytes, to: tuple[str, int]) -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self.sock.sendto(data, to)
        answer = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), 5.0)
        return answer, time.perf_counter() - t0


async def test_refusals_for_known_and_unknown_users_take_the_same_time(tmp_path: Path) -> None:
    node, _ = await start_node(
        tmp_path,
        {
            "users": {"1000": {"password": "secret1000"}},
            # count failures, never ban: the enumerator must keep getting answers here
            "security": {"auth_ban_seconds": 0},
        },
    )
    client = Client()
    try:
        assert node.ua is not None
        to = ("127.0.0.1", node.ua.udp_port)
        auth = {}
        for user in ("1000", "1999"):
            challenge, _ = await client.exchange(client.register(user), to)
            assert challenge.startswith(b"SIP/2.0 401 ")
            m = re.search(rb"WWW-Authenticate: ([^\r\n]+)", challenge)
            assert m is not None
            value = digest.authorization(
                m.group(1).decode(), method="REGISTER", uri="sip:127.0.0.1", username=user,
                password="wrong", cnonce="c0ffee",
            )  # fmt: skip
            assert value is not None
            auth[user] = value
        times: dict[str, list[float]] = {"1000": [], "1999": []}
        for r in range(ROUNDS):
            order = ("1000", "1999") if r % 2 == 0 else ("1999", "1000")
            for user in order:
                answer, rtt = await client.exchange(client.register(user, auth[user]), to)
                assert answer.startswith(b"SIP/2.0 403 "), answer[:40]
                times[user].append(rtt)
        known, unknown = (statistics.median(times[u]) for u in ("1000", "1999"))
        # Noise: how far the medians of the two halves of one series (same user, same
        # code path) lie apart in this run, on this machine's load.
        noise = max(
            abs(statistics.median(t[: ROUNDS // 2]) - statistics.median(t[ROUNDS // 2 :]))
            for t in times.values()
        )
        print(f"median known {known * 1e6:.1f} µs, unknown {unknown * 1e6:.1f} µs, "
              f"noise {noise * 1e6:.1f} µs")  # fmt: skip
        assert abs(known - unknown) <= max(2 * noise, 0.15 * min(known, unknown)), (
            f"known {known * 1e6:.1f} µs vs unknown {unknown * 1e6:.1f} µs (noise {noise * 1e6:.1f})"
        )
        assert node.ua.bans is None or node.ua.bans.failures_total >= 2 * ROUNDS
    finally:
        client.sock.close()
        await node.stop()
