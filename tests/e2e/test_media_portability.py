"""Number portability through a media node: a SIPp caller dials a ported number, the node
looks it up in PostgreSQL (asynchronously, cached), sends the carrier (SIPp behind gateway
'carrier', portability "rn") the Request-URI with RFC 4694 ``;npdi;rn=``, and both legs'
CDRs are priced by the routing number; a number not ported goes out with ``;npdi`` only
and is priced as dialled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest

from switchboard import config
from switchboard.billing.accounts import create_account, topup
from switchboard.billing.rates import import_deck
from switchboard.media.node import MediaNode
from tests.support.media import RtpPeer, free_even_range
from tests.support.net import async_wait_until, free_port, udp_port_taken
from tests.support.sipp import HAVE_SIPP, SCENARIOS, finish_sipp, run_sipp

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAVE_SIPP, reason="Debian sip-tester missing"),
]


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[MediaNode]:
    start, end = free_even_range()
    cfg = config.load(
        environ={},
        overrides={
            "media": {
                "listen": [f"udp:127.0.0.1:{free_port()}"],
                "rtp_port_start": start,
                "rtp_port_end": end,
            },
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{free_port()}"}},  # portability rn
            "database": {"url": db_url},
            # credit control too: a ported call is authorised at its routing number's price
            "billing": {"portability": True, "credit_control": True, "flush_interval": 0.05},
            "platform": {"state_dir": str(tmp_path / "state")},
        },
    )
    n = MediaNode(cfg, "media-1", state_dir=tmp_path / "state", admin=False, esl=False)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def invite_lines(workdir: Path, start: str) -> list[str]:
    lines = []
    for log in workdir.glob("media_carrier_uas_*_messages.log"):
        lines += [ln.strip() for ln in log.read_text(errors="replace").splitlines()
                  if ln.startswith(start)]  # fmt: skip
    return lines


async def test_ported_number_routes_and_rates_by_its_routing_number(
    node: MediaNode, db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # sell: Berlin fixed 0.01/min, the mobile network the number moved to 0.20/min
        import_deck(conn, ["prefix,rate,increment\n", "4930,0.0100,1/1\n", "49151,0.2000,1/1\n"])
        import_deck(conn, ["prefix,rate,increment\n", "4930,0.0050,1/1\n",
                           "49151,0.1200,1/1\n"], carrier="carrier")  # fmt: skip
        conn.execute(
            "INSERT INTO ported_number (number, routing_number) VALUES ('4930123456', '4915199')"
        )
        create_account(conn, "customer", ips=["127.0.0.1/32"])
        topup(conn, "customer", "10")
    port = int(node.cfg.gateways["carrier"].proxy.rpartition(":")[2])
    carrier_rtp = await RtpPeer.open()
    try:
        uas = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SCENARIOS / "media_carrier_uas.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-m", "2", "-nostdin", "-timeout", "40s", "-trace_msg",
            "-key", "rtp_port", str(carrier_rtp.port), "-key", "codecs", "0",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await async_wait_until(lambda: udp_port_taken(port), timeout=10, what="SIPp carrier")
        for number in ("+4930123456", "+4930777777"):  # ported, then not ported
            result = await run_sipp("media_call_hangup.xml", node.sip_port, tmp_path,
                                    service=number, keys={"rtp_port": free_port()},
                                    pause_ms=1200)  # fmt: skip
            assert result.returncode == 0, result.output[-2000:]
        carrier = await finish_sipp(uas, 20)
        assert carrier.returncode == 0, carrier.output[-2000:]
    finally:
        carrier_rtp.close()
    host = node.cfg.gateways["carrier"].proxy
    # the To header names the number called, without the Request-URI's parameters
    to = invite_lines(tmp_path, "To: ")
    assert next(t.split(";tag=")[0] for t in to if "+4930123456" in t) == (
        f"To: <sip:+4930123456@{node.cfg.gateways['carrier'].proxy}>"
    )
    assert invite_lines(tmp_path, "INVITE ") == [
        f"INVITE sip:+4930123456;npdi;rn=+4915199@{host} SIP/2.0",
        f"INVITE sip:+4930777777;npdi@{host} SIP/2.0",
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        query = (
            "SELECT destination, originating_leg IS NOT NULL, routing_number, billsec,"
            " rate, sell_prefix, cost, buy_rate, buy_prefix, buy_cost FROM cdr"
            " ORDER BY start_time, originating_leg NULLS FIRST"
        )
        await async_wait_until(lambda: len(conn.execute(query).fetchall()) == 4, what="4 CDRs")
        rows = conn.execute(query).fetchall()
    (a1, b1, a2, b2) = rows
    with psycopg.connect(db_url, autocommit=True) as conn:
        reservations = conn.execute(
            "SELECT prefix, rate, state FROM reservation ORDER BY created_at"
        ).fetchall()
    assert reservations == [("49151", D("0.200000"), "settled"), ("4930", D("0.010000"), "settled")]
    # the ported call: the caller's leg sold at the mobile rate, the carrier leg bought at it
    assert a1[:3] == ("+4930123456", False, "4915199") and a1[4:6] == (D("0.200000"), "49151")
    assert a1[3] >= 1 and a1[6] == (D("0.20") * a1[3] / 60).quantize(D("0.0001"))
    assert b1[0] == "+4930123456"  # the number called, without the R-URI parameters
    assert b1[1:3] == (True, "4915199") and b1[7:9] == (D("0.120000"), "49151")
    # not ported: priced as dialled
    assert a2[2] is None and a2[4:6] == (D("0.010000"), "4930")
    assert b2[2] is None and b2[7:9] == (D("0.005000"), "4930")
