"""A priced CDR through `switchboard up`: a carrier rate deck imported with
`switchboard rates import`, a transit call from SIPp through the router to a media node that
bridges it to the `carrier` gateway (answered by SIPp), `switchboard cdr list --json`
showing a CDR per leg priced by longest prefix, to the exact Decimal — the sell side once, on
the inbound (customer) leg, the buy side on the carrier leg, which names the inbound leg as
its originating leg — and `switchboard report` counting the call's revenue once. The caller
comes in on the carrier trunk ``[trunks.customer]`` (billing account ``acme``): the router
names the trunk and its account to the media node, whose inbound CDR carries both, so
`switchboard report --by trunk` and `--by account` show the call's sell side there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import ROUND_HALF_UP
from decimal import Decimal as D
from typing import Any

import pytest

from tests.support.net import wait_until
from tests.support.platform_harness import Platform, free_run, http_json, sipp_calls

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing"),
]

NUMBER = "442071234567"
E164 = "+" + NUMBER  # the trunk normalises the called number (docs/router.md "Trunks")
TRUNK = '[trunks.customer]\nsources = ["127.0.0.1"]\naccount = "acme"\n'
# Sell side (the default deck): 4420 is the longest match, 30/6 with a connect fee.
SELL = "prefix,rate,connect_fee,increment\n44,0.50,0,60/60\n4420,0.60,0.02,30/6\n"
# Buy side, the carrier's deck: 44207 beats 4420 and 44; per second.
BUY = "prefix,rate,increment,description\n44,0.10,1/1,UK\n4420,0.20,1/1,London\n44207,0.30,1/1,London 7\n"


def switchboard(p: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *args, "--config", str(p.state / "sb.toml")],
        cwd=p.state,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    p = Platform(media_nodes=1, extra_config=TRUNK)
    p.start()
    try:
        wait_until(
            lambda: {d["state"] for d in http_json(p.admin_url + "/destinations")} == {"active"},
            30,
            "the media node active at the router",
        )
        yield p
    finally:
        p.cleanup()


def cdrs(p: Platform) -> list[dict[str, Any]]:
    out = switchboard(p, "cdr", "list", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_transit_call_through_the_router_is_sold_once_and_bought_on_the_carrier_leg(
    platform: Platform,
) -> None:
    p = platform
    (p.state / "sell.csv").write_text(SELL)
    (p.state / "buy.csv").write_text(BUY)
    for args in (("sell.csv",), ("buy.csv", "--carrier", "carrier")):
        out = switchboard(p, "rates", "import", str(p.state / args[0]), *args[1:])
        assert out.returncode == 0, out.stdout + out.stderr
    out = switchboard(p, "accounts", "create", "acme", "--kind", "postpaid")
    assert out.returncode == 0, out.stdout + out.stderr

    uas = subprocess.Popen(
        [
            shutil.which("sipp") or "sipp", "-sn", "uas", "-i", "127.0.0.1",
            "-p", str(p.carrier), "-mp", str(free_run(2)), "-m", "1",
            "-timeout", "30s", "-nostdin",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=p.state,
    )  # fmt: skip
    try:
        call = sipp_calls(f"127.0.0.1:{p.router_sip}", NUMBER, calls=1, rate=1, duration_ms=2000)
        assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
        assert uas.wait(30) == 0
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()

    wait_until(lambda: len(cdrs(p)) == 2, 20, "both legs' CDRs in the database")
    rows = cdrs(p)
    legs = {r["carrier"] or "caller": r for r in rows}
    assert set(legs) == {"caller", "carrier"}, rows
    # one CDR per leg: distinct call_ids (channel uuids), each with its own SIP Call-ID
    assert len({r["call_id"] for r in rows}) == 2 and all(r["sip_call_id"] for r in rows)
    for leg in rows:
        assert (leg["destination"], leg["disposition"], leg["rating_status"]) == (
            E164,
            "ANSWERED",
            "rated",
        ), leg
        billsec = int(leg["billsec"])
        assert 2 <= billsec <= 4, leg
    in_leg, out_leg = legs["caller"], legs["carrier"]
    # the carrier leg was created by the media node's bridge from the inbound leg
    assert (in_leg["originating_leg"], out_leg["originating_leg"]) == ("", in_leg["call_id"])
    # the trunk and its account on the leg that came in on it; the carrier leg has none
    assert (in_leg["trunk"], in_leg["account"]) == ("customer", "acme"), in_leg
    assert (out_leg["trunk"], out_leg["account"] or "") == ("", ""), out_leg
    # sell side, once, on the customer's (inbound) leg: the default deck's 4420 (not 44),
    # 30/6 → the first 30 s block: 0.02 + 0.60 × 30 / 60
    assert (D(in_leg["rate"]), D(in_leg["cost"])) == (D("0.600000"), D("0.3200")), in_leg
    assert in_leg["buy_cost"] is None
    # buy side, on the leg that left on the carrier gateway only: the carrier's 44207 (not
    # 4420 or 44), per second, rounded once, half up; no sell price on this B-leg
    buy = (D("0.30") * int(out_leg["billsec"]) / 60).quantize(D("0.0001"), ROUND_HALF_UP)
    assert D(out_leg["buy_cost"]) == buy, out_leg
    assert (out_leg["rate"], out_leg["cost"]) == (None, None), out_leg

    # the report counts the call's revenue once (it was 0.6400 with both legs sold)
    out = switchboard(p, "report", "--json")
    assert out.returncode == 0, out.stderr
    (total,) = json.loads(out.stdout)
    assert (total["seizures"], total["answered"], total["unmatched"]) == (2, 2, 0), total
    assert (D(total["revenue"]), D(total["cost"])) == (D("0.3200"), buy), total
    assert D(total["margin"]) == D("0.3200") - buy, total

    # by trunk: the sell side on the trunk the call came in on, the carrier leg under '-'
    out = switchboard(p, "report", "--by", "trunk", "--json")
    assert out.returncode == 0, out.stderr
    by_trunk = {r["key"]: r for r in json.loads(out.stdout)}
    assert set(by_trunk) == {"customer", "-"}, by_trunk
    assert (by_trunk["customer"]["seizures"], D(by_trunk["customer"]["revenue"])) == (
        1,
        D("0.3200"),
    ), by_trunk
    assert D(by_trunk["-"]["cost"]) == buy, by_trunk
    out = switchboard(p, "report", "--by", "account", "--json")
    by_account = {r["key"]: r for r in json.loads(out.stdout)}
    assert D(by_account["acme"]["revenue"]) == D("0.3200"), by_account
