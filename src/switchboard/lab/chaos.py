"""Failures made on purpose in the HA lab, under SIPp load from the ``carrier`` host.

Each scenario starts a bounded SIPp run (the carrier's calls to the floating address
172.28.0.100; ACK and BYE follow Record-Route), breaks one thing while it runs, lets the
run finish, repairs the lab and returns what it measured
(docs/operations.md, "The HA lab"). The figures come from SIPp's per-message counts (``-trace_counts``): a call whose
INVITE got no 200 is a failed new call; a call that was answered but whose BYE got no 200
did not end cleanly. CDRs are counted in PostgreSQL through the multi-host URL the nodes
use.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.lab.topology import (
    HOSTS,
    MEDIA,
    PREPAID_ACCOUNT,
    ROOT,
    ROUTERS,
    VIP_A,
    VIP_B,
    Lab,
    LabError,
    wait_for,
)

UAC_SCENARIO = ROOT / "tests" / "data" / "sipp" / "router_uac.xml"
CARRIER = HOSTS["carrier"][0]
DB_URL = (
    "postgresql://switchboard:switchboard@pg1:5432,pg2:5432/switchboard"
    "?target_session_attrs=read-write&connect_timeout=1"
)
_run_ids = itertools.count(1)


@dataclass
class Counts:
    """What the carrier's SIPp saw, from its message counts at the end of the run."""

    invites: int = 0
    answered: int = 0  # a 200 to the INVITE
    bye_ok: int = 0  # a 200 to the BYE
    successful: int = 0
    failed: int = 0
    call_ids: str = ""  # SQL LIKE pattern of this run's Call-IDs
    why: dict[str, int] = field(default_factory=dict)  # what SIPp's error log says, counted

    @property
    def setup_failed(self) -> int:
        return self.invites - self.answered

    @property
    def dropped(self) -> int:
        """Answered calls whose BYE went unanswered: they did not end cleanly."""
        return self.answered - self.bye_ok


def _last_row(path: Path) -> dict[str, str]:
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _int(row: dict[str, str], key: str) -> int:
    v = row.get(key, "0").strip()
    return int(v) if v.isdigit() else 0


@dataclass
class Load:
    """One SIPp UAC run on the carrier host: ``calls`` calls at ``rate``/s, each held
    ``hold_s`` seconds, to the floating address."""

    lab: Lab
    rate: float
    calls: int
    hold_s: float
    number: str = "4930123456"
    to: str = VIP_A  # the floating address the carrier sends to
    proc: subprocess.Popen[bytes] | None = None
    dir: Path = field(default_factory=Path)
    started: float = 0.0

    def start(self) -> Load:
        n = next(_run_ids)
        self.dir = self.lab.dir / "carrier" / f"load-{os.getpid()}-{n}"
        shutil.rmtree(self.dir, ignore_errors=True)  # SIPp's files of this run alone
        self.dir.mkdir(parents=True)
        # SIPp's own timeout bounds the run: the calls' span plus their hold plus 40 s
        bound = int(self.calls / self.rate + self.hold_s + 40)
        cmd = [
            "ip", "netns", "exec", "carrier", "sipp", "-sf", str(UAC_SCENARIO),
            "-i", CARRIER, "-p", str(5070 + n % 20), "-s", self.number, f"{self.to}:5060",
            "-m", str(self.calls), "-r", str(self.rate), "-d", str(int(self.hold_s * 1000)),
            "-l", str(int(self.rate * (self.hold_s + 5)) + 50),
            "-nostdin", "-trace_counts", "-trace_stat", "-fd", "1", "-trace_err",
            "-timeout", str(bound), "-timeout_error", "-max_retrans", "7",
        ]  # fmt: skip
        log = open(self.dir / "sipp.log", "wb")  # noqa: SIM115 — the child keeps it
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.started = time.monotonic()
        return self

    def wait(self) -> Counts:
        assert self.proc is not None
        bound = self.calls / self.rate + self.hold_s + 60
        try:
            self.proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        counts = next(self.dir.glob("*_counts.csv"), None)
        stats = next((p for p in self.dir.glob("*_.csv")), None)
        c = _last_row(counts) if counts else {}
        s = _last_row(stats) if stats else {}
        pid = self.proc.pid
        return Counts(
            invites=_int(c, "0_INVITE_Sent"),
            answered=_int(c, "3_200_Recv"),
            bye_ok=_int(c, "7_200_Recv"),
            successful=_int(s, "SuccessfulCall(C)"),
            failed=_int(s, "FailedCall(C)"),
            call_ids=f"%-{self._sipp_pid(pid)}@{CARRIER}",
            why=self._why(),
        )

    def _why(self) -> dict[str, int]:
        """Failures by cause, from SIPp's error log: the status of an unexpected answer,
        an ICMP error (a closed port on the address), a timeout."""
        out: dict[str, int] = {}
        for f in self.dir.glob("*_errors.log"):
            text = f.read_text(errors="replace")
            for m in re.finditer(
                r"Aborting call on unexpected message.*?received 'SIP/2.0 (\d+)", text
            ):
                out[m[1]] = out.get(m[1], 0) + 1
            for key, pattern in (("icmp", "ICMP"), ("timeout", "timed out")):
                n = len(re.findall(pattern, text))
                if n:
                    out[key] = n
        return out

    def _sipp_pid(self, wrapper_pid: int) -> str:
        # SIPp names its files <scenario>_<pid>_...; its Call-IDs are <n>-<pid>@<ip>
        f = next(self.dir.glob("*_counts.csv"), None)
        if f is None:
            return str(wrapper_pid)
        return f.name.split("_")[-2]


# ---------------------------------------------------------------------- measurements


def vip_move_ms(lab: Lab, to: str, since: float, timeout: float = 10.0) -> float:
    """Milliseconds from ``since`` until host ``to`` holds the floating address."""
    wait_for(f"{VIP_A} on {to}", lambda: lab.has_address(to, VIP_A), timeout, step=0.01)
    return (time.monotonic() - since) * 1000


def psql(lab: Lab, sql: str, timeout: float = 5.0) -> str:
    r = subprocess.run(
        ["ip", "netns", "exec", "monitor", "psql", DB_URL, "-Atc", sql],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if r.returncode != 0:
        raise OSError(r.stderr.strip())
    return r.stdout.strip()


def cdr_counts(lab: Lab, counts: Counts) -> tuple[int, int]:
    """(lost, duplicated) inbound CDRs of a run's answered calls: an answered call must have
    exactly one answered inbound leg stored."""
    wait_for("every node's CDR spool to be empty", lambda: spools_empty(lab), 60, step=0.5)
    query = (
        "SELECT count(*), count(DISTINCT sip_call_id) FROM cdr WHERE direction = 'inbound' "
        f"AND billsec > 0 AND sip_call_id LIKE '{counts.call_ids}'"
    )

    def stored() -> tuple[int, int]:
        rows, distinct = (int(x) for x in psql(lab, query).split("|"))
        return rows, distinct

    # the writers batch: give the last batches time to land before counting what is missing
    with contextlib.suppress(LabError):
        wait_for("the run's CDRs stored", lambda: stored()[1] >= counts.answered, 30, step=0.5)
    rows, distinct = stored()
    return max(0, counts.answered - distinct), rows - distinct


def prepaid(lab: Lab, counts: Counts) -> dict[str, Any]:
    """The carrier's prepaid account after a run (its calls credit-controlled on the nodes,
    docs/billing.md): ``overspent`` — accounts whose balance went below their credit limit
    (balance + credit_limit < 0); ``reserved_left`` — funds still reserved once every call
    has settled (should return to 0); ``debits_missing`` / ``debits_duplicated`` — answered
    calls of the run whose inbound CDR has no call debit in the ledger / more than one."""

    if not lab.prepaid:
        return {}

    def reserved() -> str:
        return psql(lab, f"SELECT reserved FROM account WHERE name = '{PREPAID_ACCOUNT}'")

    # settlements are retried while the database fails over: wait for them (bounded)
    with contextlib.suppress(LabError):
        wait_for("the run's calls settled", lambda: float(reserved()) == 0, 60, step=0.5)
    # one hash join (the ledger has no index on call_id: a subquery per CDR took > 5 s)
    missing, twice = (int(x) for x in psql(lab, (
        "SELECT count(*) FILTER (WHERE n = 0), count(*) FILTER (WHERE n > 1) FROM ("
        " SELECT c.call_id, count(t.id) AS n FROM cdr c LEFT JOIN account_transaction t"
        "  ON t.kind = 'call' AND t.call_id = c.call_id WHERE c.direction = 'inbound'"
        f"  AND c.billsec > 0 AND c.sip_call_id LIKE '{counts.call_ids}' GROUP BY c.call_id) x"
    ), timeout=30).split("|"))  # fmt: skip
    overspent = int(psql(lab, "SELECT count(*) FROM account WHERE balance + credit_limit < 0"))
    return {
        "prepaid_overspent": overspent,
        "reserved_left": float(reserved()),
        "debits_missing": missing,
        "debits_duplicated": twice,
    }


def spools_empty(lab: Lab) -> bool:
    for h in MEDIA:
        if not lab.alive(h):
            continue
        text = str(lab.http("monitor", f"http://{HOSTS[h][0]}:8081/metrics"))
        for line in text.splitlines():
            if line.startswith("switchboard_cdr_spool_records ") and float(line.split()[1]):
                return False
    return True


def far_end_counts(lab: Lab) -> tuple[int, int]:
    """(calls the carrier's UAS answered, BYEs it received) so far, from its counts file."""
    f = next((lab.dir / "carrier").glob("uas_*_counts.csv"), None)
    row = _last_row(f) if f else {}
    return _int(row, "2_200_Sent"), _int(row, "4_BYE_Recv")


def far_end_bye_missing(lab: Lab, before: tuple[int, int], timeout: float = 40.0) -> int:
    """Calls answered by the far end since ``before`` that never got their BYE from the
    node: its BYE is retransmitted for up to 32 s (64·T1), so wait that long for it."""

    def missing() -> int:
        now = far_end_counts(lab)
        return (now[0] - before[0]) - (now[1] - before[1])

    with contextlib.suppress(LabError):
        wait_for("the far end's BYEs", lambda: missing() <= 0, timeout, step=0.5)
    return max(0, missing())


def db_write_ok(lab: Lab) -> bool:
    try:
        return psql(lab, "SELECT NOT pg_is_in_recovery()", timeout=3) == "t"
    except (OSError, subprocess.SubprocessError):
        return False


def alerts(lab: Lab) -> list[dict[str, Any]]:
    """Prometheus's alerts (pending and firing), from its own API."""
    data = lab.http("monitor", "http://172.28.0.50:9090/api/v1/alerts")
    return list(data["data"]["alerts"])


class AlertWatch:
    """Prometheus's alerts seen while a scenario runs: /api/v1/alerts polled every
    ``step`` seconds by a thread; ``seen`` holds "AlertName@where" (the uri of a
    destination's alert, else its instance, else its set) for every alert pending or
    firing at some poll. The lab's Prometheus scrapes and evaluates every second
    (Lab.prometheus_config), so a failure of a few seconds shows as pending;
    the ``for:`` durations that turn it into firing are promtool's tests
    (deploy/prometheus/alerts_test.yml)."""

    def __init__(self, lab: Lab, step: float = 0.5) -> None:
        self.lab = lab
        self.step = step
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError, subprocess.SubprocessError):
                for a in alerts(self.lab):
                    labels = a["labels"]
                    where = labels.get("uri") or labels.get("instance") or labels.get("set", "")
                    self.seen.add(f"{labels['alertname']}@{where}")
            self._stop.wait(self.step)

    def wait_for(self, alert: str, timeout: float = 20.0) -> bool:
        """Whether ``alert`` ("Name@instance") was seen, waiting up to ``timeout``."""
        with contextlib.suppress(LabError):
            wait_for(alert, lambda: alert in self.seen, timeout, step=0.2)
        return alert in self.seen


# ---------------------------------------------------------------------- scenarios


def router_failover(lab: Lab, how: str, rate: float, calls: int, hold_s: float) -> dict[str, Any]:
    """(a) router-1, master of the floating address, fails mid-load: ``how`` is "link" (its
    cable cut: a host that died) or "kill" (kill -9 of the router process; keepalived's
    check script sees /health fail)."""
    if lab.vip_holder() != "router-1":
        raise LabError("router-1 does not hold the floating address")
    far = far_end_counts(lab)
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(max(hold_s, 2.0) + 1.0)  # established calls in progress when it fails
    # calls being set up inside router-1 when it fails (INVITEs without a final response):
    # the ones whose answers must now find their way through router-2
    in_setup = gauge(lab, "router-1", "switchboard_router_pending_transactions")
    with AlertWatch(lab) as watch:
        t0 = time.monotonic()
        if how == "link":
            lab.link("router-1", up=False)
        else:
            lab.kill("router-1")
        moved_ms = vip_move_ms(lab, "router-2", t0)
        # what the operator is told: router1 stopped answering Prometheus's scrapes
        watch.wait_for("SwitchboardNodeDown@router1:8080")
        counts = load.wait()
    # repair: cable back / the router restarted (systemd's Restart=always), VIP returns
    if how == "link":
        lab.link("router-1", up=True)
    else:
        lab.start_router("router-1")
    wait_for("router-1 holding the floating address again",
             lambda: lab.vip_holder() == "router-1", 30)  # fmt: skip
    wait_for("router-1 seeing the media nodes", lab.routers_see_all_nodes, 30)
    return {
        "vip_move_ms": round(moved_ms),
        "in_setup_at_failure": in_setup,
        "invites": counts.invites,
        "new_calls_failed": counts.setup_failed,
        "established_dropped": counts.dropped,
        # the other half of a clean end: the carrier leg the node bridged got its BYE
        "far_end_bye_missing": far_end_bye_missing(lab, far),
        "alerts": sorted(watch.seen),
        "answered": counts.answered,
        "why": counts.why,
    }


def db_failover(lab: Lab, rate: float, calls: int, hold_s: float) -> dict[str, Any]:
    """(c) the PostgreSQL primary dies (kill -9 of everything on its host: Patroni and the
    postmaster) mid-load: Patroni promotes the replica; CDRs spooled meanwhile are written
    once each."""
    leader = current_leader(lab)
    host = "db-1" if leader == "pg1" else "db-2"
    other = "db-2" if host == "db-1" else "db-1"
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(hold_s + 1.0)
    with AlertWatch(lab) as watch:
        t0 = time.monotonic()
        for pid in subprocess.run(["ip", "netns", "pids", host], capture_output=True,
                                  text=True).stdout.split():  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_for("a writable primary", lambda: db_write_ok(lab) and lab.db_leader() is not None
                 and lab.db_leader() != leader, 60, step=0.1)  # fmt: skip
        failover_s = time.monotonic() - t0
        # the dead host's Patroni stops answering; the promoted one changed role
        watch.wait_for(f"SwitchboardNodeDown@{leader}:8008")
        watch.wait_for(f"SwitchboardDatabaseFailover@{other_name(leader)}:8008")
        counts = load.wait()
    lost, dup = cdr_counts(lab, counts)
    money = prepaid(lab, counts)
    # repair: the old primary rejoins as a replica (pg_rewind), and streams again
    lab.start_patroni(host)
    wait_for(f"{host} streaming from {other}", lab.db_streaming, 90, step=0.5)
    return {
        "db_failover_s": round(failover_s, 2),
        "alerts": sorted(watch.seen),
        "calls_failed": counts.setup_failed + counts.dropped,
        "why": counts.why,
        "answered": counts.answered,
        "cdr_lost": lost,
        "cdr_duplicated": dup,
        **money,
    }


def current_leader(lab: Lab) -> str:
    """The Patroni leader's name, asked until its REST API answers (bounded: a loaded
    machine can leave one /cluster request without an answer for its 3 s)."""
    found: list[str] = []

    def leader() -> bool:
        name = lab.db_leader()
        if name is not None:
            found.append(name)
        return name is not None

    wait_for("a PostgreSQL leader", leader, 30, step=0.5)
    return found[-1]


def other_name(pg: str) -> str:
    return "pg2" if pg == "pg1" else "pg1"


def db_switchover(lab: Lab, rate: float, calls: int, hold_s: float) -> dict[str, Any]:
    """A planned switchover (Patroni's REST API, what ``patronictl switchover`` does)
    mid-load: the replica becomes the primary; CDRs written meanwhile are stored once."""
    leader = current_leader(lab)
    candidate = "pg2" if leader == "pg1" else "pg1"
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(hold_s + 1.0)
    t0 = time.monotonic()
    body = json.dumps({"leader": leader, "candidate": candidate}).encode()
    lab.http("etcd", f"http://{leader}:8008/switchover", body, "POST")
    wait_for(f"{candidate} writable", lambda: lab.db_leader() == candidate and db_write_ok(lab),
             30, step=0.1)  # fmt: skip
    switch_s = time.monotonic() - t0
    counts = load.wait()
    lost, dup = cdr_counts(lab, counts)
    money = prepaid(lab, counts)
    wait_for(f"{leader} streaming from {candidate}", lab.db_streaming, 90, step=0.5)
    return {
        "db_switchover_s": round(switch_s, 2),
        "calls_failed": counts.setup_failed + counts.dropped,
        "why": counts.why,
        "answered": counts.answered,
        "cdr_lost": lost,
        "cdr_duplicated": dup,
        **money,
    }


def cli_reaches_primary(lab: Lab) -> dict[str, Any]:
    """The CLI on the monitor host, through deploy/'s multi-host URL: the newest CDR."""
    from switchboard.lab.topology import SWITCHBOARD

    r = subprocess.run(
        ["ip", "netns", "exec", "monitor", str(SWITCHBOARD), "cdr", "list", "--config",
         str(lab.config), "--limit", "1", "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if r.returncode != 0:
        raise LabError(f"switchboard cdr list failed: {r.stdout}{r.stderr}")
    return dict(json.loads(r.stdout.splitlines()[0]))


def media_kill(lab: Lab, rate: float, calls: int, hold_s: float, node: str = "media-2") -> dict:
    """(b) kill -9 of one media node mid-load; restarted 1 s later as systemd's
    Restart=always, RestartSec=1 would, so its journaled calls are resumed."""
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(hold_s + 1.0)
    with AlertWatch(lab) as watch:
        lab.kill(node)
        time.sleep(1.0)  # systemd's RestartSec=1: the alert may or may not catch it
        lab.start_media(node)
        counts = load.wait()
    wait_for("both routers seeing 4 active nodes", lab.routers_see_all_nodes, 30)
    # every call has ended at the carrier: no node should hold a channel now (a carrier
    # leg left parked on the restarted node would stay until rtp_timeout). Counted on
    # every node, after a grace of a few seconds for the last BYEs in flight.
    left = channels_left(lab)
    # prepaid: the killed node's reservations settled once each — the calls resumed, the
    # ones that hung up just before the kill, the setups handed back (released)
    money = prepaid(lab, counts)
    return {
        "channels_left": sum(left.values()),
        "channels_left_per_node": left,
        "alerts": sorted(watch.seen),
        "calls_failed": counts.setup_failed + counts.dropped,
        "why": counts.why,
        "new_calls_failed": counts.setup_failed,
        "established_dropped": counts.dropped,
        "answered": counts.answered,
        **money,
    }


def channels_left(lab: Lab, grace_s: float = 5.0) -> dict[str, float]:
    """``switchboard_media_active_channels`` of every media node, once all are 0 or
    ``grace_s`` has passed."""
    deadline = time.monotonic() + grace_s
    while True:
        left = {n: gauge(lab, n, "switchboard_media_active_channels") for n in MEDIA}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def partition(lab: Lab, rate: float, calls: int, hold_s: float, node: str = "media-3",
              cut_s: float = 10.0) -> dict[str, Any]:  # fmt: skip
    """(d) one media node cut off from the routers, and only from them, for ``cut_s``
    seconds, then back: its calls' media to the carrier, its database and Prometheus
    stay reachable (Lab.cut_from_routers), as when a switch port or an ACL between the
    routers and the node fails."""
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(hold_s + 1.0)
    with AlertWatch(lab) as watch:
        lab.cut_from_routers(node, cut=True)
        try:
            time.sleep(cut_s)
        finally:
            lab.cut_from_routers(node, cut=False)
        counts = load.wait()
    wait_for("both routers seeing 4 active nodes", lab.routers_see_all_nodes, 30)
    left = channels_left(lab)
    return {
        "calls_failed": counts.setup_failed + counts.dropped,
        # INVITEs the node answered while cut off got no ACK: it ends them after 64·T1
        "channels_left": sum(left.values()),
        "channels_left_per_node": left,
        "alerts": sorted(watch.seen),
        "why": counts.why,
        "new_calls_failed": counts.setup_failed,
        "established_dropped": counts.dropped,
        "answered": counts.answered,
    }


def trunk_row(lab: Lab, router: str, name: str = "carrier") -> dict[str, Any]:
    rows = lab.http("monitor", f"http://{HOSTS[router][0]}:8080/trunks")
    return next(dict(r) for r in rows if r["name"] == name)


def set_trunk_cps(lab: Lab, cps: int) -> None:
    """PUT /trunks on both routers: deploy/'s [trunks.carrier] with this cps limit."""
    for r in ROUTERS:
        cfg = trunk_row(lab, r)["config"]
        body = json.dumps({"carrier": {**cfg, "cps": cps}}).encode()
        lab.http("monitor", f"http://{HOSTS[r][0]}:8080/trunks", body, "PUT")


def trunk_cps_per_router(lab: Lab, cps: int, rate: float, calls: int) -> dict[str, Any]:
    """Per-router state: the carrier's cps limit counted by each router alone. The carrier
    sends ``calls`` calls at ``rate``/s to each floating address at once (router-1 holds
    one, router-2 the other); each router admits about ``cps`` a second, so the pair
    admits up to twice the limit (docs/operations.md, "What each router keeps to itself")."""
    set_trunk_cps(lab, cps)
    try:
        before = {r: trunk_row(lab, r) for r in ROUTERS}
        a = Load(lab, rate, calls, 1.0, to=VIP_A).start()
        b = Load(lab, rate, calls, 1.0, to=VIP_B).start()
        counts = {VIP_A: a.wait(), VIP_B: b.wait()}
        after = {r: trunk_row(lab, r) for r in ROUTERS}
    finally:
        set_trunk_cps(lab, 0)
    out: dict[str, Any] = {"span_s": calls / rate}
    for r in ROUTERS:
        out[r] = {
            "admitted": after[r]["admitted"] - before[r]["admitted"],
            "rejected_cps": after[r]["rejected"].get("cps", 0)
            - before[r]["rejected"].get("cps", 0),
        }
    out["answered"] = {k: c.answered for k, c in counts.items()}
    return out


def set_state(lab: Lab, node: str, state: str) -> None:
    """docs/operations.md's drain/enable: the admin API of each router."""
    body = json.dumps({"set": 1, "uri": f"sip:{HOSTS[node][0]}:5081", "state": state}).encode()
    for r in ROUTERS:
        lab.http("monitor", f"http://{HOSTS[r][0]}:8080/destinations/state", body, "POST")


def gauge(lab: Lab, host: str, name: str) -> float:
    """A metric's value on a lab host, from its /metrics: a router's on 8080, a media
    node's on 8081."""
    port = 8080 if host in ROUTERS else 8081
    text = str(lab.http("monitor", f"http://{HOSTS[host][0]}:{port}/metrics"))
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise OSError(f"no {name} on {host}")


def authorisations(lab: Lab) -> tuple[float, float]:
    """Credit authorisations so far on all media nodes: (count, seconds spent), from
    ``switchboard_credit_authorisation_seconds`` (a node's restart resets its share)."""
    count = total = 0.0
    for node in MEDIA:
        with contextlib.suppress(OSError):  # none yet (credit control off: never)
            count += gauge(lab, node, "switchboard_credit_authorisation_seconds_count")
            total += gauge(lab, node, "switchboard_credit_authorisation_seconds_sum")
    return count, total


def authorisation_buckets(lab: Lab) -> dict[float, float]:
    """``switchboard_credit_authorisation_seconds`` of all media nodes, bucket by bucket:
    upper bound (seconds, ``inf`` last) → authorisations so far at most that long."""
    out: dict[float, float] = {}
    prefix = 'switchboard_credit_authorisation_seconds_bucket{le="'
    for node in MEDIA:
        with contextlib.suppress(OSError):
            text = str(lab.http("monitor", f"http://{HOSTS[node][0]}:8081/metrics"))
            for line in text.splitlines():
                if line.startswith(prefix):
                    le, _, value = line[len(prefix) :].partition('"} ')
                    out[float(le)] = out.get(float(le), 0.0) + float(value)
    return out


def authorisation_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The 99th percentile of the authorisations between two :func:`authorisation_buckets`
    readings, as the upper bound of its bucket in ms (``inf``: over the last bucket; 0:
    none). A node restarted between the readings counts from zero again: its share of
    ``before`` is then larger than it should be, so use readings of one scenario."""
    bounds = sorted(after)
    delta = {le: max(0.0, after[le] - before.get(le, 0.0)) for le in bounds}
    total = delta[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    for le in bounds:
        if delta[le] >= 0.99 * total:
            return le * 1000
    return float("inf")


def node_calls(lab: Lab, node: str) -> float:
    return gauge(lab, node, "switchboard_media_active_calls")


def rolling_upgrade(lab: Lab, rate: float, calls: int, hold_s: float) -> dict[str, Any]:
    """(e) every media node in turn: drained on both routers, its calls left to end,
    restarted (SIGTERM, then started again), checked active again, enabled."""
    load = Load(lab, rate, calls, hold_s).start()
    time.sleep(1.0)
    per_node: dict[str, float] = {}
    left: dict[str, float] = {}
    for node in MEDIA:
        t0 = time.monotonic()
        set_state(lab, node, "disabled")
        # its calls end within their hold time; a channel still up after that (a leg a
        # crash recovery left parked) is counted and the node restarted all the same
        try:
            wait_for(f"{node} without calls", lambda n=node: node_calls(lab, n) == 0,  # type: ignore[misc]
                     hold_s + 10, step=0.2)  # fmt: skip
        except LabError:
            left[node] = node_calls(lab, node)
        lab.kill(node, signal.SIGTERM)
        wait_for(f"{node} stopped", lambda n=node: not lab.alive(n), 40)  # type: ignore[misc]
        lab.start_media(node)
        wait_for(f"{node} /metrics", lambda n=node: lab.media_ready(n), 30)  # type: ignore[misc]
        set_state(lab, node, "active")
        wait_for("both routers seeing 4 active nodes", lab.routers_see_all_nodes, 30)
        per_node[node] = round(time.monotonic() - t0, 1)
    counts = load.wait()
    return {
        "calls_failed": counts.setup_failed + counts.dropped,
        "why": counts.why,
        "answered": counts.answered,
        "invites": counts.invites,
        "per_node_s": per_node,
        "calls_left_at_restart": left,
    }
