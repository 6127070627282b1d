"""Calls survive ``kill -9`` of their media node (``switchboard up``, SIPp on both sides).

SIPp callers through the router to a number the node bridges to a SIPp carrier; both
SIPps stream G.711 RTP (``rtp_stream``, looped) for the whole call. The node is killed
with SIGKILL mid-call; the supervisor restarts it, it resumes the bridges from its
journal on the same ports. Asserted: every caller's BYE answered 200, the carrier
receives every BYE, exactly one CDR per leg with billsec matching the call, and the audio
gap each far end hears (packet arrival times captured on the loopback interface).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.media import ulaw_wav
from tests.support.net import wait_until
from tests.support.platform_harness import Platform, alive, free_run, http_json, http_text
from tests.support.rtp_capture import LoopbackCapture, can_capture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(150),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing"),
    pytest.mark.skipif(not can_capture(), reason="capturing RTP on lo needs root"),
]

ROOT = Path(__file__).resolve().parents[2]
SIPP_DIR = ROOT / "tests" / "data" / "sipp"
NUMBER = "442071234567"
CALLS = 3
CALL_MS = 10_000


def sipp(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [shutil.which("sipp") or "sipp", *args, "-i", "127.0.0.1", "-nostdin"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def active_calls(url: str) -> float:
    try:
        text = http_text(url + "/metrics")
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith("switchboard_media_active_calls "):
            return float(line.split()[1])
    return 0.0


def ready(p: Platform) -> None:
    """Every media node active at the router, and each node's warm spare (the process that
    replaces a killed node) done with its imports — slow under load."""
    nodes = len(p.media_admin_urls())
    wait_until(
        lambda: (
            [d["state"] for d in http_json(p.admin_url + "/destinations")] == ["active"] * nodes
        ),
        30,
        "the media nodes active at the router",
    )
    wait_until(lambda: p.text().count("warm spare ready") >= nodes, 60, "the warm spares")


@pytest.fixture
def platform() -> Iterator[Platform]:
    p = Platform(media_nodes=1)
    p.start()
    try:
        ready(p)
        yield p
    finally:
        p.cleanup()


def run_calls_and_kill(
    p: Platform, kills: int, call_ms: int = CALL_MS, kill_at: float | None = None
) -> dict[str, Any]:
    """CALLS bridged calls with RTP both ways; the node SIGKILLed ``kills`` times, each
    1.5 s after the calls run on it (again), or once ``kill_at`` s after they were
    bridged."""
    wav = ulaw_wav(p.state / "tone.wav")
    span = 2 * CALLS + 10
    base = free_run(2 * span, 30000, 40000)
    caller_ports, carrier_ports = range(base, base + span), range(base + span, base + 2 * span)
    capture = LoopbackCapture(range(base, base + 2 * span))
    carrier = sipp([
        "-sf", str(SIPP_DIR / "media_carrier_rtp_uas.xml"), "-p", str(p.carrier),
        "-m", str(CALLS), "-timeout", "90s", "-mp", str(carrier_ports.start),
    ], wav.parent)  # fmt: skip
    caller = sipp([
        f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp.xml"),
        "-s", NUMBER, "-m", str(CALLS), "-r", "10", "-d", str(call_ms),
        "-p", str(free_run(1)), "-timeout", "90s", "-timeout_error",
        "-mp", str(caller_ports.start),
    ], wav.parent)  # fmt: skip
    node = p.media_admin_urls()[0]
    kill_times: list[float] = []
    try:
        wait_until(lambda: active_calls(node) == CALLS, 20, "every call bridged on the node")
        bridged = time.monotonic()
        for _ in range(kills):
            if kill_at is None:
                time.sleep(1.5)  # media flowing through the node (or its resumed bridges)
            else:
                time.sleep(max(0.0, bridged + kill_at - 0.5 - time.monotonic()))
                spare = p.spare_pid("media-1")  # none: the node is down for a full start
                os.kill(spare, signal.SIGKILL)
                wait_until(lambda s=spare: not alive(s), 5, "the spare gone")
                time.sleep(max(0.0, bridged + kill_at - time.monotonic()))
            victim = p.pids()["media-1"]
            os.kill(victim, signal.SIGKILL)
            kill_times.append(time.monotonic())
            wait_until(lambda v=victim: p.pids().get("media-1", v) != v, 10, "media-1 restarted")
            if kill_at is None:
                try:
                    wait_until(lambda: active_calls(node) == CALLS, 15, "the calls resumed")
                except AssertionError as exc:
                    raise AssertionError(p.text()[-8000:]) from exc
        caller_out, _ = caller.communicate(timeout=60)
        carrier_out, _ = carrier.communicate(timeout=30)
    finally:
        for proc in (caller, carrier):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        capture.stop()
    flows = capture.flows()
    gaps = {
        ("caller" if dst in caller_ports else "carrier", src, dst): max(
            LoopbackCapture.max_gap(arrivals, t - 1.0, t + 6.0) for t in kill_times
        )
        for (src, dst), arrivals in flows.items()
        if len(arrivals) > 100
    }
    return {
        "caller": (caller.returncode, caller_out),
        "carrier": (carrier.returncode, carrier_out),
        "gaps": gaps,
    }


def cdrs(p: Platform) -> list[dict[str, Any]]:
    url = (p.state / "state" / "postgres.uri").read_text().strip()
    with psycopg.connect(url, row_factory=dict_row) as c:
        return c.execute(
            "SELECT call_id, direction, billsec, hangup_cause, originating_leg FROM cdr"
        ).fetchall()


def check(
    p: Platform,
    result: dict[str, Any],
    call_ms: int = CALL_MS,
    slack: float = 1,
    max_gap: float = 5.0,
) -> None:
    rc, out = result["caller"]
    # every call completed: the caller's BYE answered 200 (SIPp's scenario needs it)
    assert rc == 0, out[-3000:] + p.text()[-5000:]
    rc, out = result["carrier"]
    assert rc == 0, out[-3000:]  # the carrier received (and answered) every BYE
    wait_until(lambda: len(cdrs(p)) >= 2 * CALLS, 20, "every leg's CDR")
    rows = cdrs(p)
    assert len(rows) == 2 * CALLS, rows
    assert len({r["call_id"] for r in rows}) == 2 * CALLS  # one CDR per leg
    inbound = [r for r in rows if r["direction"] == "inbound"]
    outbound = [r for r in rows if r["direction"] == "outbound"]
    assert len(inbound) == len(outbound) == CALLS
    assert {r["originating_leg"] for r in outbound} == {r["call_id"] for r in inbound}
    for r in rows:  # the whole call, crash included: answer → the caller's BYE
        assert -1 <= int(r["billsec"]) - call_ms / 1000 <= slack, r
        assert r["hangup_cause"] == "NORMAL_CLEARING", r
    gaps = result["gaps"]
    assert len([k for k in gaps if k[0] == "caller"]) == CALLS, gaps
    assert len([k for k in gaps if k[0] == "carrier"]) == CALLS, gaps
    print("audio gaps (ms):", json.dumps({f"{k[0]}:{k[1]}>{k[2]}": round(v * 1000)
                                          for k, v in gaps.items()}))  # fmt: skip
    assert max(gaps.values()) < max_gap, gaps


def test_kill_9_of_a_node_with_bridged_calls_every_call_completes(platform: Platform) -> None:
    result = run_calls_and_kill(platform, kills=1)
    check(platform, result)


def test_a_node_killed_three_times_during_one_call(platform: Platform) -> None:
    """Each restart resumes from the journal the previous one rewrote (same ports, the
    dialog's CSeq moved on again): the calls still end normally, one CDR per leg."""
    result = run_calls_and_kill(platform, kills=3, call_ms=30_000)
    # the spare started after a restart may still be importing at the next kill (seconds
    # under load): that restart is a full start
    check(platform, result, call_ms=30_000, max_gap=12.0)


def test_a_bye_sent_while_the_node_is_down_ends_the_call_once_it_is_back(
    platform: Platform,
) -> None:
    """The node's warm spare is killed first, so the node is down for a full start (over
    0.6 s). The callers hang up 0.2-0.5 s after the node was killed: their BYEs reach nothing, SIPp
    retransmits them (RFC 3261 §17.1.2.2: 0.5 s, 1 s, 2 s ...) and the restarted node
    answers one with 200 — not 481 — and sends the carrier its BYE. The CDRs end when the
    node got the BYE: at most the restart later than the caller's hang-up."""
    # the last call was bridged ~0.3 s after the first: its BYE comes 9.7-10 s after this
    result = run_calls_and_kill(platform, kills=1, kill_at=9.5)
    down = re.search(r"media-1 restarted \(restart 1, ([0-9.]+) s after", platform.text())
    assert down and float(down[1]) > 0.6, down  # the BYEs were sent while it was down
    # the node ends the calls when it gets their BYE: up to its downtime after the hang-up
    check(platform, result, slack=float(down[1]) + 1)


def test_a_call_in_setup_when_its_node_dies_is_handed_back_to_the_router() -> None:
    """The carrier rings for 4 s; the node holding the call is SIGKILLed meanwhile. The
    restarted node answers the journaled INVITE 503, the router tries the other node and
    the call completes there; the carrier's 200 to the dead node's INVITE reaches the
    restarted node, which ACKs and BYEs it (no leg left up) and bills it (a CDR). The call
    is prepaid: the dead node's leg had reserved funds before the kill — the restart
    releases them, and the account is debited once, for the call that completed."""
    from decimal import Decimal as D

    from switchboard.billing.accounts import create_account, show, topup
    from switchboard.billing.rates import import_deck

    p = Platform(
        media_nodes=2,
        extra_config="[billing]\ncredit_control = true\nflush_interval = 0.05\n"
        "reserve_seconds = 60\n",
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        p.start()
        ready(p)
        url = (p.state / "state" / "postgres.uri").read_text().strip()
        with psycopg.connect(url, autocommit=True) as conn:
            # 0.60 a minute billed per second: each leg reserves a minute, 0.60
            import_deck(conn, ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"])
            create_account(conn, "prepaid", ips=["127.0.0.1/32"])
            topup(conn, "prepaid", "5.00")
        wav = ulaw_wav(p.state / "tone.wav")
        carrier = sipp([
            "-sf", str(SIPP_DIR / "media_carrier_slow_uas.xml"), "-p", str(p.carrier),
            "-m", "2", "-timeout", "60s",
        ], wav.parent)  # fmt: skip
        procs.append(carrier)
        caller = sipp([
            f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp.xml"),
            "-s", NUMBER, "-m", "1", "-d", "2000", "-p", str(free_run(1)),
            "-timeout", "50s", "-timeout_error", "-mp", str(free_run(4)),
        ], wav.parent)  # fmt: skip
        procs.append(caller)

        def holder() -> int:
            for i, url in enumerate(p.media_admin_urls()):
                if "switchboard_media_active_channels 2.0" in http_text(
                    url + "/metrics"
                ):  # the inbound leg and the ringing carrier leg
                    return i + 1
            return 0

        wait_until(lambda: holder() > 0, 10, "the call ringing on a node")
        name = f"media-{holder()}"
        os.kill(p.pids()[name], signal.SIGKILL)
        caller_out, _ = caller.communicate(timeout=60)
        assert caller.returncode == 0, caller_out[-3000:] + p.text()[-6000:]
        carrier_out, _ = carrier.communicate(timeout=60)
        assert carrier.returncode == 0, carrier_out[-3000:]  # both carrier legs got a BYE
        assert "1 call(s) in setup handed back to the router (503)" in p.text()
        assert "2xx to an INVITE with no call here: ACK and BYE" in p.text()
        wait_until(lambda: len(cdrs(p)) >= 3, 20, "the CDRs")
        rows = cdrs(p)
        inbound = [r for r in rows if r["direction"] == "inbound"]
        outbound = [r for r in rows if r["direction"] == "outbound"]
        assert len(inbound) == 1 and inbound[0]["billsec"] >= 1, rows  # the call, once
        assert len(outbound) == 2, rows  # the bridged carrier leg and the stray one
        assert {r["hangup_cause"] for r in outbound} == {
            "NORMAL_CLEARING", "NORMAL_TEMPORARY_FAILURE",
        }, rows  # fmt: skip
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: show(conn, "prepaid").reserved == D("0"), 10, "released")
            legs = conn.execute("SELECT state FROM reservation ORDER BY id").fetchall()
            assert legs == [("settled",), ("settled",)], legs  # the dead node's, the call's
            debit = D(inbound[0]["billsec"]) / 100  # 0.01 a second
            assert show(conn, "prepaid").balance == D("5.00") - debit
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        p.cleanup()


def test_a_node_that_does_not_come_back_has_its_calls_ended() -> None:
    """The node's warm spare is killed, then the node; its restart hangs (SIGSTOP). After
    recovery_timeout the supervisor kills the hung restart and the node's reaper ends the
    journaled calls: both far ends get a BYE within recovery_timeout + 2 s of the kill,
    one CDR per leg with cause NETWORK_OUT_OF_ORDER. The node that starts afterwards finds
    those calls ended: none resumed, none billed twice."""
    timeout = 3.0
    p = Platform(media_nodes=1, media_config=f"recovery_timeout = {timeout}\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        p.start()
        ready(p)
        wav = ulaw_wav(p.state / "tone.wav")
        base = free_run(4 * CALLS + 8, 30000, 40000)
        ended: dict[str, float] = {}

        def run(role: str, args: list[str]) -> None:
            with (p.state / f"{role}.log").open("wb") as out:
                proc = subprocess.Popen(
                    [shutil.which("sipp") or "sipp", *args, "-i", "127.0.0.1", "-nostdin"],
                    cwd=wav.parent, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            procs.append(proc)

            def waiter() -> None:
                proc.wait()
                ended[role] = time.monotonic()  # when its last call got its BYE

            threading.Thread(target=waiter, daemon=True).start()

        run("carrier", [
            "-sf", str(SIPP_DIR / "media_carrier_rtp_uas.xml"), "-p", str(p.carrier),
            "-m", str(CALLS), "-timeout", "60s", "-mp", str(base),
        ])  # fmt: skip
        run("caller", [
            f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp_wait_bye.xml"),
            "-s", NUMBER, "-m", str(CALLS), "-r", "10", "-p", str(free_run(1)),
            "-timeout", "60s", "-timeout_error", "-mp", str(base + 2 * CALLS + 4),
        ])  # fmt: skip
        node = p.media_admin_urls()[0]
        try:
            wait_until(lambda: active_calls(node) == CALLS, 20, "every call bridged on the node")
        except AssertionError as exc:
            for proc in procs:
                proc.kill()
                proc.wait()
            logs = "".join(
                (p.state / f"{r}.log").read_text()[-2500:] for r in ("caller", "carrier")
            )
            raise AssertionError(f"{active_calls(node)} calls: {logs}{p.text()[-3000:]}") from exc
        answered = time.monotonic()
        spare = p.spare_pid("media-1")
        os.kill(spare, signal.SIGKILL)
        wait_until(lambda: not alive(spare), 5, "the spare gone")
        victim = p.pids()["media-1"]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        hung = victim
        for _ in range(3):  # the restart hangs: the node does not come back
            wait_until(
                lambda last=hung: p.pids().get("media-1", last) != last, 10, "media-1 restarting"
            )
            hung = p.pids()["media-1"]
            try:
                os.kill(hung, signal.SIGSTOP)
                break
            except ProcessLookupError:  # that attempt already ended: stop the next one
                print("restart attempt", hung, "ended before SIGSTOP:", p.text()[-3000:])
        else:
            raise AssertionError("no restart attempt of media-1 lived:\n" + p.text()[-5000:])
        wait_until(lambda: len(ended) == 2, 30, "both SIPps done")
        for proc in procs:
            assert proc.returncode == 0, (
                (p.state / "caller.log").read_text()[-2000:]
                + (p.state / "carrier.log").read_text()[-2000:]
                + p.text()[-6000:]
            )
        text = p.text()
        assert "media-1 did not come back within recovery_timeout" in text, text[-5000:]
        print("BYEs received (s after the kill):",
              {k: round(v - killed, 2) for k, v in ended.items()})  # fmt: skip
        # both far ends got their BYE (SIPp exits once its last call's BYE is answered)
        for role, t in ended.items():
            assert t - killed <= timeout + 2.0, (role, t - killed, text[-5000:])
        wait_until(lambda: len(cdrs(p)) >= 2 * CALLS, 20, "every leg's CDR")
        rows = cdrs(p)
        assert len(rows) == 2 * CALLS and len({r["call_id"] for r in rows}) == 2 * CALLS, rows
        assert {r["direction"] for r in rows} == {"inbound", "outbound"}, rows
        assert {r["hangup_cause"] for r in rows} == {"NETWORK_OUT_OF_ORDER"}, rows
        lived = max(ended.values()) - answered
        for r in rows:  # billed from the answer to the BYE: nothing unbilled
            assert killed - answered - 1 <= int(r["billsec"]) <= lived + 1, (r, lived)
        # the node starts again (not hung this time) and resumes nothing
        wait_until(lambda: "media-1 restarted" in p.text(), 60, "media-1 back")
        assert active_calls(node) == 0
        wait_until(lambda: "CDR(s) of legs ended before the restart" in p.text(), 10,
                   "the late node replaying the end records")  # fmt: skip
        assert len(cdrs(p)) == 2 * CALLS, cdrs(p)  # replayed, not billed again
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        p.cleanup()


def test_a_prepaid_call_resumed_after_a_crash_still_ends_at_its_credit_limit() -> None:
    """Credit control with 2 s reservations renewed 0.5 s before they run out; the account
    buys 8 s. The node is killed 3 s into the call (its journal says 2 s, the database
    has renewed the reservation since); the resumed node asks billing for the call's limit
    and cuts the call at 8 s from its original answer (ALLOTTED_TIMEOUT): the caller and
    the carrier get their BYE, the account is debited once for 8 s, nothing stays
    reserved."""
    from decimal import Decimal as D

    from switchboard.billing.accounts import create_account, show, topup
    from switchboard.billing.rates import import_deck

    p = Platform(
        media_nodes=1,
        extra_config="[billing]\ncredit_control = true\nflush_interval = 0.05\n"
        "reserve_seconds = 2\nextend_before = 0.5\n",
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        p.start()
        ready(p)
        url = (p.state / "state" / "postgres.uri").read_text().strip()
        with psycopg.connect(url, autocommit=True) as conn:
            # 0.60 a minute billed per second: 0.08 buys 8 s
            import_deck(conn, ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n"])
            create_account(conn, "prepaid", ips=["127.0.0.1/32"])
            topup(conn, "prepaid", "0.08")
        wav = ulaw_wav(p.state / "tone.wav")
        base = free_run(12, 30000, 40000)
        carrier = sipp([
            "-sf", str(SIPP_DIR / "media_carrier_rtp_uas.xml"), "-p", str(p.carrier),
            "-m", "1", "-timeout", "40s", "-mp", str(base),
        ], wav.parent)  # fmt: skip
        procs.append(carrier)
        caller = sipp([
            f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp_wait_bye.xml"),
            "-s", NUMBER, "-m", "1", "-p", str(free_run(1)), "-timeout", "40s",
            "-timeout_error", "-mp", str(base + 6),
        ], wav.parent)  # fmt: skip
        procs.append(caller)
        node = p.media_admin_urls()[0]
        try:
            wait_until(lambda: active_calls(node) == 1, 20, "the call bridged on the node")
        except AssertionError as exc:
            caller.kill()
            raise AssertionError(caller.communicate()[0][-3000:] + p.text()[-4000:]) from exc
        answered = time.monotonic()
        time.sleep(max(0.0, answered + 3.0 - time.monotonic()))  # into the second chunk
        victim = p.pids()["media-1"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: p.pids().get("media-1", victim) != victim, 10, "media-1 restarted")
        caller_out, _ = caller.communicate(timeout=30)
        talk = time.monotonic() - answered
        assert caller.returncode == 0, caller_out[-2000:] + p.text()[-6000:]
        carrier_out, _ = carrier.communicate(timeout=15)
        assert carrier.returncode == 0, carrier_out[-2000:]
        assert "credit control resumed" in p.text(), p.text()[-5000:]
        assert 7.0 < talk < 10.0, talk  # cut at the 8 s the balance buys, not before
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: len(cdrs(p)) == 2, 20, "both legs' CDRs")
            inbound = next(r for r in cdrs(p) if r["direction"] == "inbound")
            assert inbound["hangup_cause"] == "ALLOTTED_TIMEOUT" and inbound["billsec"] == 8
            wait_until(lambda: show(conn, "prepaid").reserved == D("0"), 10, "settled")
            assert show(conn, "prepaid").balance == D("0")
            debits = conn.execute(
                "SELECT amount FROM account_transaction WHERE kind = 'call'"
            ).fetchall()
            assert debits == [(D("-0.080000"),)]  # once, for the whole call
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        p.cleanup()


def test_a_conference_of_three_survives_kill_9_and_an_ivr_call_ends_cleanly(
    platform: Platform,
) -> None:
    """Three SIPp members in conf-room1 (RTP both ways) and one caller in the IVR; the node
    is SIGKILLed. The restarted node puts the three members back in their room (same
    ports: the mixed audio reaches each member again) and ends the IVR call with a BYE
    and a CDR (NORMAL_TEMPORARY_FAILURE); the members hang up later, one CDR each covering
    the whole call."""
    p = platform
    wav = ulaw_wav(p.state / "tone.wav")
    base = free_run(20, 30000, 40000)
    members_ports = range(base, base + 10)
    capture = LoopbackCapture(members_ports)
    members = sipp([
        f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp.xml"),
        "-s", "conf-room1", "-m", "3", "-r", "10", "-d", "5000", "-p", str(free_run(1)),
        "-timeout", "60s", "-timeout_error", "-mp", str(base),
    ], wav.parent)  # fmt: skip
    ivr = sipp([
        f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp_wait_bye.xml"),
        "-s", "ivr", "-m", "1", "-p", str(free_run(1)), "-timeout", "60s",
        "-timeout_error", "-mp", str(base + 10),
    ], wav.parent)  # fmt: skip
    node = p.media_admin_urls()[0]
    try:
        wait_until(lambda: active_calls(node) == 4, 20, "three members and the IVR call")
        time.sleep(0.5)  # the members hear each other through the room
        victim = p.pids()["media-1"]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: p.pids().get("media-1", victim) != victim, 10, "media-1 restarted")
        ivr_out, _ = ivr.communicate(timeout=30)
        assert ivr.returncode == 0, ivr_out[-2000:] + p.text()[-5000:]  # it got its BYE
        members_out, _ = members.communicate(timeout=40)
        assert members.returncode == 0, members_out[-2000:] + p.text()[-5000:]
    finally:
        for proc in (members, ivr):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        capture.stop()
    assert "recovery: 3 call leg(s) resumed, 1 ended" in p.text(), p.text()[-5000:]
    # the room's mix reaches every member after the restart (within 3 s of the kill)
    to_members = {
        flow: arrivals for flow, arrivals in capture.flows().items() if len(arrivals) > 100
    }  # fmt: skip  (node port → SIPp port)
    assert len(to_members) == 3, (
        str(
            {
                flow: (len(arr), [round(x.t - killed, 2) for x in arr[:: max(1, len(arr) // 10)]])
                for flow, arr in capture.flows().items()
            }
        )
        + "\n".join(x for x in p.text().splitlines() if "media-1" in x)[-6000:]
    )
    for flow, arrivals in to_members.items():
        assert LoopbackCapture.max_gap(arrivals, killed - 1.0, killed + 3.0) < 3.0, flow
        assert any(a.t > killed + 3.0 for a in arrivals), flow  # audio after the resume
    wait_until(lambda: len(cdrs(p)) >= 4, 20, "the CDRs")
    rows = cdrs(p)
    assert len(rows) == 4 and len({r["call_id"] for r in rows}) == 4, rows
    causes = sorted(r["hangup_cause"] for r in rows)
    assert causes == ["NORMAL_CLEARING"] * 3 + ["NORMAL_TEMPORARY_FAILURE"], rows
    for r in rows:
        if r["hangup_cause"] == "NORMAL_CLEARING":  # answer → the member's BYE, 5 s
            assert 4 <= int(r["billsec"]) <= 6, r


def test_a_reinvite_sent_while_the_node_is_down_updates_the_call_once_it_is_back(
    platform: Platform,
) -> None:
    """The callers put their calls on hold (re-INVITE, a=sendonly) 0.2-0.5 s after the node
    was killed with no warm spare: SIPp retransmits the INVITE (RFC 3261 Timer A) and the
    restarted node answers it 200 with a=recvonly (SIPp checks it) instead of 481; the
    calls then end normally, one CDR per leg."""
    p = platform
    wav = ulaw_wav(p.state / "tone.wav")
    base = free_run(4 * CALLS + 8, 30000, 40000)
    carrier = sipp([
        "-sf", str(SIPP_DIR / "media_carrier_rtp_uas.xml"), "-p", str(p.carrier),
        "-m", str(CALLS), "-timeout", "60s", "-mp", str(base),
    ], wav.parent)  # fmt: skip
    caller = sipp([
        f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp_reinvite_hold.xml"),
        "-s", NUMBER, "-m", str(CALLS), "-r", "10", "-d", "3500", "-p", str(free_run(1)),
        "-timeout", "60s", "-timeout_error", "-mp", str(base + 2 * CALLS + 4),
    ], wav.parent)  # fmt: skip
    node = p.media_admin_urls()[0]
    try:
        wait_until(lambda: active_calls(node) == CALLS, 20, "every call bridged on the node")
        bridged = time.monotonic()
        time.sleep(max(0.0, bridged + 2.5 - time.monotonic()))
        spare = p.spare_pid("media-1")  # none: the node is down for a full start
        os.kill(spare, signal.SIGKILL)
        wait_until(lambda: not alive(spare), 5, "the spare gone")
        time.sleep(max(0.0, bridged + 3.0 - time.monotonic()))
        victim = p.pids()["media-1"]
        os.kill(victim, signal.SIGKILL)
        caller_out, _ = caller.communicate(timeout=60)
        carrier_out, _ = carrier.communicate(timeout=30)
    finally:
        for proc in (caller, carrier):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    down = re.search(r"media-1 restarted \(restart 1, ([0-9.]+) s after", p.text())
    assert down and float(down[1]) > 0.6, down  # the re-INVITEs were sent while it was down
    assert caller.returncode == 0, caller_out[-3000:] + p.text()[-5000:]
    assert carrier.returncode == 0, carrier_out[-3000:]
    wait_until(lambda: len(cdrs(p)) >= 2 * CALLS, 20, "every leg's CDR")
    rows = cdrs(p)
    assert len(rows) == 2 * CALLS and len({r["call_id"] for r in rows}) == 2 * CALLS, rows
    assert {r["hangup_cause"] for r in rows} == {"NORMAL_CLEARING"}, rows


def test_a_leg_whose_rtp_port_was_taken_moves_with_a_reinvite(platform: Platform) -> None:
    """While the node is down (no warm spare) another process takes the port of the
    caller's leg. The restarted node rebuilds that leg on another port of its range and
    sends the caller a re-INVITE with the new port (SIPp answers it); the node's media
    reaches the caller from the new port, and the call ends normally."""
    import socket

    p = platform
    wav = ulaw_wav(p.state / "tone.wav")
    base = free_run(12, 30000, 40000)
    caller_port = base + 6
    capture = LoopbackCapture(range(caller_port, caller_port + 1))
    carrier = sipp([
        "-sf", str(SIPP_DIR / "media_carrier_rtp_uas.xml"), "-p", str(p.carrier),
        "-m", "1", "-timeout", "60s", "-mp", str(base),
    ], wav.parent)  # fmt: skip
    caller = sipp([
        f"127.0.0.1:{p.router_sip}", "-sf", str(SIPP_DIR / "router_uac_rtp_accept_reinvite.xml"),
        "-s", NUMBER, "-m", "1", "-d", "3000", "-p", str(free_run(1)),
        "-timeout", "60s", "-timeout_error", "-mp", str(caller_port),
    ], wav.parent)  # fmt: skip
    node = p.media_admin_urls()[0]
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        wait_until(lambda: active_calls(node) == 1, 20, "the call bridged on the node")
        wait_until(lambda: len(capture.flows()) >= 1, 5, "the node's media to the caller")
        old_port = next(iter(capture.flows()))[0]
        spare = p.spare_pid("media-1")
        os.kill(spare, signal.SIGKILL)
        wait_until(lambda: not alive(spare), 5, "the spare gone")
        victim = p.pids()["media-1"]
        os.kill(victim, signal.SIGKILL)

        def take() -> bool:  # the port is free once the kernel has closed the dead socket
            try:
                blocker.bind(("127.0.0.1", old_port))  # someone else's socket now
            except OSError:
                return False
            return True

        wait_until(take, 2, "the dead node's RTP port taken", interval=0.005)
        killed = time.monotonic()
        caller_out, _ = caller.communicate(timeout=60)
        try:
            carrier_out, _ = carrier.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(caller_out[-4000:] + p.text()[-3000:]) from exc
    finally:
        blocker.close()
        for proc in (caller, carrier):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        capture.stop()
    assert caller.returncode == 0, caller_out[-3000:] + p.text()[-5000:]  # re-INVITE, BYE
    assert carrier.returncode == 0, carrier_out[-3000:]
    assert re.search(r"RTP port \d+ taken .*: leg moved to \d+", p.text()), p.text()[-5000:]
    new_flows = [f for f in capture.flows() if f[0] != old_port]
    assert new_flows, capture.flows().keys()
    assert sum(1 for a in capture.flows()[new_flows[0]] if a.t > killed) > 50
    wait_until(lambda: len(cdrs(p)) >= 2, 20, "both legs' CDRs")
    rows = cdrs(p)
    assert len(rows) == 2 and {r["hangup_cause"] for r in rows} == {"NORMAL_CLEARING"}, rows
