"""The embedded PostgreSQL of `switchboard up` killed under call load comes back by itself.

``kill -9`` of the postmaster while SIPp calls flow through the router, a media node and a
SIPp carrier, with credit control on: the supervisor notices at once (log line, restart
counter on its /metrics), PostgreSQL is up again within seconds with nobody's help (the
stale ``postmaster.pid`` of the dead server does not stop it), the node's CDR spool is
replayed — every leg stored exactly once — and credit control authorises and debits calls
again.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from switchboard.billing.accounts import create_account, show, topup
from switchboard.billing.rates import import_deck
from tests.support.net import wait_until
from tests.support.platform_harness import (
    Platform,
    alive,
    free_run,
    http_json,
    http_text,
    sipp_calls,
)

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing"),
]

NUMBER = "442071234567"
CALLS = 30  # at 10 calls/s, 2 s each: the kill lands mid-load
RESTART_WITHIN = 10.0  # seconds from kill -9 to a PostgreSQL accepting connections again


def postmaster(p: Platform) -> tuple[int, str]:
    """(pid, status) from the data directory's postmaster.pid; (0, "") when absent."""
    try:
        lines = (p.state / "state" / "pgdata" / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return 0, ""
    return int(lines[0]), (lines[7].strip() if len(lines) > 7 else "")


def accepts(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1) as c:
            c.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def balance(url: str) -> Any:
    with psycopg.connect(url) as conn:
        return show(conn, "acme").balance


def active_calls(p: Platform) -> float:
    for line in http_text(p.media_admin_urls()[0] + "/metrics").splitlines():
        if line.startswith("switchboard_media_active_calls "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    p = Platform(media_nodes=1)
    p.extra_config = (
        "[billing]\ncredit_control = true\nmax_call_seconds = 60\nflush_interval = 0.05\n"
        "retry_interval = 0.5\n"
    )
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


def test_postmaster_killed_under_load_is_restarted_and_every_cdr_stored_once(
    platform: Platform,
) -> None:
    p = platform
    url = (p.state / "state" / "postgres.uri").read_text().strip()
    with psycopg.connect(url, autocommit=True) as conn:
        import_deck(conn, ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"])
        create_account(conn, "acme", ips=["127.0.0.1/32"])
        topup(conn, "acme", "100")
    balance_before = balance(url)

    carrier = subprocess.Popen(
        [
            shutil.which("sipp") or "sipp", "-sn", "uas", "-i", "127.0.0.1",
            "-p", str(p.carrier), "-mp", str(free_run(2)), "-timeout", "90s", "-nostdin",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=p.state,
    )  # fmt: skip
    results: list[subprocess.CompletedProcess[str]] = []
    try:
        load = threading.Thread(
            target=lambda: results.append(
                sipp_calls(f"127.0.0.1:{p.router_sip}", NUMBER, CALLS, 10, 2000, timeout=60)
            )
        )
        load.start()
        # calls are up (credit authorised, answered by the carrier): then kill the database
        wait_until(lambda: active_calls(p) >= 3, 20, "calls in progress on the node")
        old_pid, _ = postmaster(p)
        assert old_pid and alive(old_pid)
        subprocess.run(["kill", "-9", str(old_pid)], check=True)
        killed_at = time.monotonic()

        def back() -> bool:
            pid, status = postmaster(p)
            return pid not in (0, old_pid) and status == "ready" and accepts(url)

        wait_until(back, RESTART_WITHIN, "PostgreSQL restarted after kill -9")
        restart_s = time.monotonic() - killed_at
        load.join(90)
        assert results, "SIPp did not finish"

        # credit control is back: a call after the restart is authorised and debited
        after = sipp_calls(f"127.0.0.1:{p.router_sip}", NUMBER, 1, 1, 2000, timeout=30)
        assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-2000:]
    finally:
        carrier.kill()
        carrier.wait()

    # the supervisor said so, in its log and on its /metrics
    text = p.text()
    assert "PostgreSQL" in text and "died" in text, text[-3000:]
    metrics = http_text(f"http://127.0.0.1:{p.platform_admin}/metrics")
    assert 'switchboard_platform_restarts_total{service="database"} 1.0' in metrics, metrics

    # every leg exactly once: CALLS + 1 inbound legs (each SIP Call-ID once), and one
    # outbound leg per carrier call, each naming an inbound leg
    def rows() -> list[dict[str, Any]]:
        with psycopg.connect(url, row_factory=dict_row) as c:
            return c.execute(
                "SELECT call_id, sip_call_id, direction, originating_leg, disposition,"
                " (SELECT name FROM account a WHERE a.id = cdr.account_id) AS account"
                " FROM cdr"
            ).fetchall()

    wait_until(
        lambda: sum(r["direction"] == "inbound" for r in rows()) >= CALLS + 1,
        30,
        "every inbound leg's CDR in the database",
    )
    spool = http_text(p.media_admin_urls()[0] + "/metrics")
    assert "switchboard_cdr_spool_records 0.0" in spool, spool
    all_rows = rows()
    inbound = [r for r in all_rows if r["direction"] == "inbound"]
    outbound = [r for r in all_rows if r["direction"] == "outbound"]
    assert len(inbound) == CALLS + 1, inbound
    assert len({r["sip_call_id"] for r in inbound}) == CALLS + 1
    assert len({r["call_id"] for r in all_rows}) == len(all_rows)  # no duplicate leg
    in_ids = {r["call_id"] for r in inbound}
    assert outbound and all(r["originating_leg"] in in_ids for r in outbound)
    assert len({r["originating_leg"] for r in outbound}) == len(outbound)
    # the call after the restart was credit-controlled: its account is set, funds debited
    assert any(r["account"] == "acme" and r["disposition"] == "ANSWERED" for r in inbound)
    assert balance(url) < balance_before
    assert restart_s < RESTART_WITHIN
    outcome: dict[str, int] = {}
    for r in inbound:
        outcome[r["disposition"]] = outcome.get(r["disposition"], 0) + 1
    print(f"PostgreSQL back {restart_s:.2f} s after kill -9; {len(all_rows)} CDR legs;"
          f" inbound {outcome}; {len(outbound)} carrier legs")  # fmt: skip
