"""The HA lab (``make test-ha``): deploy/'s production layout in network namespaces, broken
on purpose under SIPp load from the carrier host (docs/operations.md, "The HA lab").

Root only, and only when asked (``SWITCHBOARD_HA=1``, which ``make test-ha`` sets): the lab
takes ~5 minutes and owns fixed namespace names, so ``make test`` leaves it out. The tests
run in file order on one lab; each scenario repairs what it broke.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.lab import chaos
from switchboard.lab.topology import HOSTS, MEDIA, ROUTERS, VIP_A, VIP_B, Lab, wait_for

NEEDED = ("keepalived", "patroni", "etcd", "prometheus", "sipp", "curl", "psql")
MISSING = [b for b in NEEDED if shutil.which(b) is None] + [
    p for p in ("/usr/lib/postgresql/15/bin/postgres",) if not Path(p).exists()
]

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SWITCHBOARD_HA") != "1",
        reason="the HA lab runs with `make test-ha` (SWITCHBOARD_HA=1; ~5 min, root)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the HA lab needs root (network namespaces)"),
    pytest.mark.skipif(
        bool(MISSING), reason=f"the HA lab needs {MISSING} (make ha-deps installs them as root)"
    ),
    pytest.mark.timeout(300),
]

# Load of the scenarios: 20 calls/s, calls held 3 s (bench/ha runs 50 calls/s, 10 s calls).
RATE = 20.0
HOLD = 3.0


def record(lab: Lab, name: str, r: dict) -> None:
    """The scenario's figures, kept in <lab dir>/results.jsonl next to the logs."""
    with (lab.dir / "results.jsonl").open("a") as f:
        f.write(json.dumps({"scenario": name, **r}) + "\n")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # not under pytest's tmp (mode 700): Patroni runs as the postgres user in <dir>/db-N
    d = Path(tempfile.mkdtemp(prefix="sblab-test-"))
    d.chmod(0o755)
    lab = Lab(dir=d, log=lambda _m: None, prepaid=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()  # the logs (<dir>/*.log) stay for a look at a failure


def test_every_host_in_its_namespace_with_deploys_addresses(lab: Lab) -> None:
    for host, (addr, _) in HOSTS.items():
        assert lab.has_address(host, addr), host
    # deploy/'s host names (pg1, router1, media3 ...) resolve in every host: Prometheus
    # scrapes them by name below, the nodes reach pg1,pg2 by name in every scenario
    # active-active: each router is master of one floating address
    assert lab.vip_holder(VIP_A) == "router-1"
    assert lab.vip_holder(VIP_B) == "router-2"
    # the subnet exists only inside the lab's namespaces
    host_addrs = chaos.subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True)
    assert "172.28.0." not in host_addrs.stdout


def test_prometheus_scrapes_every_router_media_node_and_patroni(lab: Lab) -> None:
    def all_up() -> bool:
        data = lab.http("monitor", "http://172.28.0.50:9090/api/v1/targets")
        targets = {t["labels"]["instance"]: t["health"] for t in data["data"]["activeTargets"]}
        want = {"router1:8080", "router2:8080", "pg1:8008", "pg2:8008"}
        want |= {f"media{i}:8081" for i in range(1, 5)}
        return want <= {k for k, v in targets.items() if v == "up"}

    wait_for("Prometheus to scrape every host", all_up, 40, step=1)


def failure_window(vip_move_ms: float) -> int:
    """New calls a router failure may cost: those sent while the address moves. Calls
    being set up inside the dead router are not among them: its Via and its packets'
    source name the floating address ([router] via_host, keepalived's virtual_routes), so
    the node's answers reach router-2, which forwards them statelessly to the carrier
    (they failed before: 0-15 of 200 here, 123-165 of 1,000 at bench/ha's 50 calls/s)."""
    return math.ceil(RATE * vip_move_ms / 1000)


def test_router_link_cut_moves_the_address_and_keeps_calls(lab: Lab) -> None:
    r = chaos.router_failover(lab, "link", RATE, int(RATE * 10), HOLD)
    record(lab, "router_failover_link", r)
    assert r["vip_move_ms"] <= 1000, r
    # calls set up through router-1 end through router-2 (Record-Route names the address),
    # and calls router-1 was still setting up are answered through router-2 (Via): none
    # may fail outside the window the address takes to move
    window = failure_window(r["vip_move_ms"])
    assert r["new_calls_failed"] <= window, r
    assert r["answered"] >= r["invites"] - window, r
    # every answered call ends cleanly at both ends: a BYE caught inside router-1 is
    # retransmitted through router-2 and answered 200 by the node that ended the call (it
    # keeps ended dialogs 64·T1), and the carrier's leg gets its BYE from the node
    assert r["established_dropped"] == 0, r
    assert r["far_end_bye_missing"] == 0, r
    # the operator is told: Prometheus (deploy/'s rules) has router1 down
    assert "SwitchboardNodeDown@router1:8080" in r["alerts"], r


def test_router_process_killed_check_script_moves_the_address(lab: Lab) -> None:
    r = chaos.router_failover(lab, "kill", RATE, int(RATE * 10), HOLD)
    record(lab, "router_failover_kill", r)
    # the check script runs every second: the address moves within ~1 s of the kill
    assert r["vip_move_ms"] <= 2000, r
    # until it moves, the address leads to a closed port: only INVITEs sent in that window
    # may fail (the carrier gets an ICMP error), none later
    window = failure_window(r["vip_move_ms"])
    assert r["new_calls_failed"] <= window, r
    # the calls established before the kill all end cleanly, at both ends
    assert r["established_dropped"] == 0, r
    assert r["far_end_bye_missing"] == 0, r
    # the operator is told: Prometheus (deploy/'s rules) has router1 down
    assert "SwitchboardNodeDown@router1:8080" in r["alerts"], r


def test_routers_keep_trunk_counters_to_themselves(lab: Lab) -> None:
    """Per-router state: the trunk counters (cps window, calls admitted, concurrent calls),
    like pike and transactions, live in each router's memory; only the router holding the
    address sees the carrier's new calls."""

    def admitted() -> dict[str, int]:
        return {
            r: sum(
                int(t["admitted"]) for t in lab.http("monitor", f"http://{HOSTS[r][0]}:8080/trunks")
            )
            for r in ROUTERS
        }

    before = admitted()
    counts = chaos.Load(lab, RATE, int(RATE * 3), HOLD).start().wait()
    assert counts.answered == counts.invites > 0
    after = admitted()
    assert after["router-1"] - before["router-1"] == counts.invites, (before, after)
    assert after["router-2"] == before["router-2"], (before, after)
    # the nodes believe the routers' X-Switchboard-Trunk ([media] routers in deploy/):
    # deploy/'s [trunks.carrier] claims the carrier host's address
    # every inbound CDR of the run names the trunk the router admitted it on
    query = (
        "SELECT coalesce(trunk, '-'), count(*) FROM cdr WHERE direction = 'inbound' "
        f"AND sip_call_id LIKE '{counts.call_ids}' GROUP BY 1"
    )
    want = f"carrier|{counts.answered}"
    try:  # the writers batch: wait for the run's CDRs
        wait_for("the run's inbound CDRs", lambda: chaos.psql(lab, query) == want, 30, step=0.5)
    finally:
        assert chaos.psql(lab, query) == want


def test_each_router_counts_a_trunks_cps_alone(lab: Lab) -> None:
    """The carrier's cps limit is kept by each router in its own memory: sending to both
    floating addresses at once, each router admits about its limit, so the pair admits up
    to twice it (docs/operations.md, "What each router keeps to itself")."""
    cps, rate, calls = 5, 20.0, 40  # 2 s of calls to each router, 4 times the limit
    r = chaos.trunk_cps_per_router(lab, cps, rate, calls)
    record(lab, "trunk_cps_per_router", r)
    one_router_max = cps * (math.ceil(r["span_s"]) + 1)  # a sliding one-second window
    for router in ROUTERS:
        assert cps <= r[router]["admitted"] <= one_router_max, r
        assert r[router]["rejected_cps"] >= calls - one_router_max, r
    # together they let through more than one router's limit allows
    assert sum(r[x]["admitted"] for x in ROUTERS) > one_router_max, r
    assert sum(r["answered"].values()) == sum(r[x]["admitted"] for x in ROUTERS), r


def assert_prepaid_kept(r: dict) -> None:
    """The carrier's calls are prepaid (deploy/'s [trunks.carrier] account, credit control
    on): authorisations held over the switch (authorise_retry_for) and settlements retried,
    so every answered call is debited exactly once, nothing stays reserved, no account is
    below its limit."""
    assert r["prepaid_overspent"] == 0, r
    assert r["reserved_left"] == 0, r
    assert r["debits_missing"] == 0, r
    assert r["debits_duplicated"] == 0, r


def test_postgresql_primary_killed_patroni_promotes_no_cdr_lost(lab: Lab) -> None:
    r = chaos.db_failover(lab, RATE, int(RATE * 15), HOLD)
    record(lab, "db_failover", r)
    assert r["db_failover_s"] <= 10, r
    # the dead primary's Patroni down, the promoted one's role changed
    down = [a for a in r["alerts"] if a.startswith("SwitchboardNodeDown@pg")]
    assert len(down) == 1, r
    assert any(a.startswith("SwitchboardDatabaseFailover@pg") for a in r["alerts"]), r
    assert r["cdr_lost"] == 0, r
    assert r["cdr_duplicated"] == 0, r
    assert r["calls_failed"] == 0, r
    assert_prepaid_kept(r)


def test_postgresql_switchover_no_cdr_lost_and_the_cli_follows(lab: Lab) -> None:
    r = chaos.db_switchover(lab, RATE, int(RATE * 10), HOLD)
    record(lab, "db_switchover", r)
    assert r["db_switchover_s"] <= 10, r
    assert r["cdr_lost"] == 0, r
    assert r["cdr_duplicated"] == 0, r
    assert r["calls_failed"] == 0, r
    assert_prepaid_kept(r)
    # the CLI reaches the new primary through the same multi-host URL
    newest = chaos.cli_reaches_primary(lab)
    assert newest["call_id"] and newest["sip_call_id"], newest


def test_media_node_killed_calls_resumed(lab: Lab) -> None:
    r = chaos.media_kill(lab, RATE, int(RATE * 10), HOLD)
    record(lab, "media_kill", r)
    # bridged calls are journaled and resumed by the restarted node: none ends badly
    assert r["established_dropped"] == 0, r
    # a call still being set up on the node when it died (its 100 Trying already stopped
    # the router's failover) is lost with it: at most the calls of half a second
    assert r["new_calls_failed"] <= math.ceil(RATE / 2), r
    # the killed node's reservations: resumed calls settled at their end, calls that hung
    # up just before the kill settled by the restart, setups handed back released
    assert_prepaid_kept(r)


def test_media_node_cut_off_for_10_s(lab: Lab) -> None:
    r = chaos.partition(lab, RATE, int(RATE * 18), HOLD)
    record(lab, "partition", r)
    assert r["calls_failed"] == 0, r
    # cut off from the routers only: they stop sending it calls (their probes fail), while
    # Prometheus still scrapes it — the alert is the routers', not a node down
    assert "SwitchboardDestinationInactive@sip:172.28.0.23:5081" in r["alerts"], r
    assert "SwitchboardNodeDown@media3:8081" not in r["alerts"], r


def test_rolling_upgrade_drops_no_call(lab: Lab) -> None:
    r = chaos.rolling_upgrade(lab, RATE, int(RATE * 4 * (HOLD + 6)), HOLD)
    record(lab, "rolling_upgrade", r)
    assert r["calls_failed"] == 0, r
    assert set(r["per_node_s"]) == set(MEDIA)


def test_alerts_fire_on_a_dead_media_node(lab: Lab) -> None:
    lab.kill("media-4", signal.SIGKILL)

    def alerted() -> bool:
        names = {
            (a["labels"]["alertname"], a["labels"].get("instance", a["labels"].get("uri", "")))
            for a in chaos.alerts(lab)
        }
        return ("SwitchboardNodeDown", "media4:8081") in names

    try:  # the lab scrapes and evaluates every second: pending within ~2 s
        wait_for("SwitchboardNodeDown for media4 in /api/v1/alerts", alerted, 20, step=0.5)
    finally:
        lab.start_media("media-4")
        wait_for("media-4 active again", lab.routers_see_all_nodes, 45)
