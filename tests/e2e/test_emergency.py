"""An emergency call gets through when nothing else would: from a carrier trunk held at its
cps limit, billed to an account with no money, to a media node at max_sessions — through
the real router and a real media node (credit control on, PostgreSQL), SIPp at both ends.
The caller's number and its location (RFC 6442 Geolocation by reference) reach the PSAP
unchanged; both legs' CDRs are flagged; router and node count it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg
import pytest

from switchboard import config
from switchboard.billing.accounts import create_account, show
from switchboard.billing.rates import import_deck
from switchboard.billing.reports import list_cdrs
from switchboard.media.node import MediaNode
from tests.support.media import RtpPeer, free_even_range
from tests.support.net import async_wait_until, free_port
from tests.support.router import router_sections, running_router
from tests.support.sipp import SIPP, SippPeer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed"),
]

CALLER = "+447700900123"
LOCATION = "<https://lis.example.net/loc/7c1e;ref=a4>"


class Filler(asyncio.DatagramProtocol):
    """Ordinary calls from the trunk's address, 5 a second: keeps the trunk at its cps
    limit (1) and records each final answer (ACKed, as a caller would)."""

    def __init__(self) -> None:
        self.finals: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        final = data.startswith(b"SIP/2.0 ") and not data.startswith(b"SIP/2.0 1")
        if final and b"CSeq: 1 INVITE" in data:
            head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
            keep = [ln for ln in head if re.match(rb"(?i)(via|from|to|call-id):", ln)]
            self.transport.sendto(b"\r\n".join([b"ACK sip:x@127.0.0.1 SIP/2.0", *keep,
                                      b"CSeq: 1 ACK", b"Content-Length: 0", b"", b""]), addr)  # fmt: skip
            self.finals.append(head[0])

    async def run(self, router_port: int, stop: asyncio.Event) -> None:
        port = self.transport.get_extra_info("sockname")[1]
        n = 0
        while not stop.is_set():
            n += 1
            self.transport.sendto(
                (f"INVITE sip:+442071234567@127.0.0.1:{router_port} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK-fill{n};rport\r\n"
                 f"From: <sip:+441632960001@127.0.0.2>;tag=f{n}\r\n"
                 f"To: <sip:+442071234567@127.0.0.1>\r\nCall-ID: fill-{n}\r\nCSeq: 1 INVITE\r\n"
                 f"Contact: <sip:f@127.0.0.2:{port}>\r\nMax-Forwards: 70\r\n"
                 f"Content-Length: 0\r\n\r\n").encode(),
                ("127.0.0.1", router_port),
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


async def test_emergency_call_connected_past_every_limit(db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        import_deck(conn, ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"])
        create_account(conn, "broke")  # balance 0
    start, end = free_even_range()
    psap_port = free_port()
    cfg = config.load(
        environ={},
        overrides={
            "media": {"listen": [f"udp:127.0.0.1:{free_port()}"], "rtp_port_start": start,
                      "rtp_port_end": end},
            "limits": {"max_sessions": 1},
            # the emergency route: the default dialplan bridges 112 to gateway 'carrier'
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{psap_port}",
                                     "caller_id_number": "+441632960999"}},
            "database": {"url": db_url},
            "billing": {"credit_control": True, "flush_interval": 0.05},
            "esl": {"listen": f"127.0.0.1:{free_port('tcp')}"},
            "platform": {"state_dir": str(tmp_path / "state")},
        },
    )  # fmt: skip
    node = MediaNode(cfg, "media-1", state_dir=tmp_path / "state", admin=False)
    await node.start()
    rport = free_port()
    sections = router_sections(rport, [f"sip:127.0.0.1:{node.sip_port}"])
    sections["trunks.cust"] = {"sources": ["127.0.0.2"], "cps": 1, "account": "broke",
                               "country": "GB"}  # fmt: skip
    hold_rtp, caller_rtp, psap_rtp = (
        await RtpPeer.open(),
        await RtpPeer.open(),
        await RtpPeer.open(),
    )
    loop = asyncio.get_running_loop()
    _, filler = await loop.create_datagram_endpoint(Filler, local_addr=("127.0.0.2", 0))
    stop = asyncio.Event()
    peers: list[SippPeer] = []
    try:
        async with running_router(tmp_path, sections) as router:
            # 1. The node is full: one ordinary call (echo) takes its only session.
            hold = await SippPeer.start(
                tmp_path, "media_call_wait_bye.xml", f"127.0.0.1:{node.sip_port}", "-s", "echo",
                "-m", "1", "-key", "rtp_port", str(hold_rtp.port), "-key", "codecs", "0 8",
                "-timeout", "60s",
            )  # fmt: skip
            peers.append(hold)
            await async_wait_until(lambda: node.switch.limits.active == 1, 10, "the node full")
            # 2. The trunk is held at its cps limit by ordinary calls (which the node,
            # full, would refuse anyway, and credit control would refuse: no money).
            fill = loop.create_task(filler.run(rport, stop))
            await async_wait_until(
                lambda: any(b"CPS" in f for f in filler.finals), 10, "the trunk at its cps limit"
            )
            # 3. The emergency call, from the same trunk, while all that holds.
            psap = await SippPeer.start(
                tmp_path, "media_carrier_uas.xml", "-m", "1", "-trace_msg", "-timeout", "30s",
                "-key", "rtp_port", str(psap_rtp.port), "-key", "codecs", "0",
                port=psap_port,
            )  # fmt: skip
            peers.append(psap)
            caller = await SippPeer.start(
                tmp_path, "emergency_call_geo.xml", f"127.0.0.1:{rport}", "-s", "112", "-m", "1",
                "-d", "1000", "-key", "rtp_port", str(caller_rtp.port), "-key", "codecs", "0 8",
                "-timeout", "30s", "-timeout_error", ip="127.0.0.2",
            )  # fmt: skip
            peers.append(caller)
            await caller.ok(40)  # answered (200), talked 1 s, hung up (BYE 200)
            await psap.ok(20)
            stop.set()
            await fill
            assert router.proxy.stats.emergency == {"GB": 1}
            cust = router.proxy.trunks.trunks["cust"]  # type: ignore[union-attr]
            refused_cps = cust.stats.rejected.get("cps", 0)
            assert refused_cps >= 1
            # Ordinary calls admitted by the trunk met the full node (503) meanwhile.
            assert any(not f.startswith(b"SIP/2.0 503 Trunk") for f in filler.finals)
        # What the PSAP received: the caller's number and location, as sent.
        log = next(tmp_path.glob(f"media_carrier_uas_{psap.proc.pid}_messages.log")).read_text()
        invite = log[log.index("INVITE sip:") :].split("\n\n", 1)[0]
        assert re.search(r"(?m)^From: .*<sip:\+447700900123@", invite), invite
        assert re.search(r"(?mi)^Geolocation: (.*)$", invite).group(1).strip() == LOCATION  # type: ignore[union-attr]
        assert re.search(r"(?mi)^Geolocation-Routing: yes", invite), invite
        assert node.metrics.emergency_calls._value.get() == 1
    finally:
        stop.set()
        for p in peers:
            p.kill()
        filler.transport.close()
        for r in (hold_rtp, caller_rtp, psap_rtp):
            r.close()
        await node.stop()
    with psycopg.connect(db_url, autocommit=True) as conn:
        await async_wait_until(
            lambda: sum(1 for r in list_cdrs(conn) if r["emergency"]) == 2, 10,
            "both emergency legs' CDRs",
        )  # fmt: skip
        legs = [r for r in list_cdrs(conn) if r["emergency"]]
        a = next(r for r in legs if not r["originating_leg"])
        b = next(r for r in legs if r["originating_leg"])
        assert (a["destination"], a["disposition"], a["trunk"]) == ("112", "ANSWERED", "cust")
        assert a["caller_id"] == CALLER and a["account"] == "broke"
        assert b["billsec"] >= 1 and b["disposition"] == "ANSWERED"
        # never held to the balance: nothing reserved, nothing debited
        view = show(conn, "broke")
        assert (view.balance, view.reserved) == (D("0"), D("0"))
        assert conn.execute("SELECT count(*) FROM reservation").fetchone() == (0,)
