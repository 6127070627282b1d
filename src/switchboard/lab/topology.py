"""Build, drive and tear down the HA lab (docs/operations.md, "The HA lab").

Everything here runs as root: namespaces, veth links and a bridge are made with ``ip``;
services are started with ``ip netns exec HOST`` (which also bind-mounts
``/etc/netns/HOST/hosts`` over ``/etc/hosts``, so deploy/'s host names resolve). Every
process the lab starts lives inside one of its namespaces, so tearing down kills whatever
``ip netns pids`` lists, deletes the namespaces (their veth ends go with them) and removes
``/etc/netns/HOST`` and the lab directory's data. ``up`` tears down leftovers first, so an
interrupted run is cleaned by the next one as well as by its own signal handler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
SWITCHBOARD = ROOT / ".venv" / "bin" / "switchboard"
CONFIG = DEPLOY / "config" / "switchboard.toml"
SUBNET = "172.28.0.0/24"
HUB = "sblab-hub"
BRIDGE = "br0"

# host → (address, names deploy/ uses for it)
HOSTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "carrier": ("172.28.0.60", ()),
    "router-1": ("172.28.0.11", ("router1",)),
    "router-2": ("172.28.0.12", ("router2",)),
    "media-1": ("172.28.0.21", ("media1",)),
    "media-2": ("172.28.0.22", ("media2",)),
    "media-3": ("172.28.0.23", ("media3",)),
    "media-4": ("172.28.0.24", ("media4",)),
    "db-1": ("172.28.0.31", ("pg1",)),
    "db-2": ("172.28.0.32", ("pg2",)),
    "etcd": ("172.28.0.40", ()),
    "monitor": ("172.28.0.50", ("prometheus",)),
}
# where ``ip netns exec HOST`` finds the files it bind-mounts over /etc (hosts)
ETC_NETNS = Path("/etc/netns")
VIP_A = "172.28.0.100"
VIP_B = "172.28.0.101"
MEDIA = ("media-1", "media-2", "media-3", "media-4")
ROUTERS = ("router-1", "router-2")
DBS = ("db-1", "db-2")
PATRONI = {"db-1": "patroni-pg1.yml", "db-2": "patroni-pg2.yml"}
KEEPALIVED = {"router-1": "keepalived-router1.conf", "router-2": "keepalived-router2.conf"}
CHECK_SCRIPT_PROD = "/usr/local/bin/check_router.sh"


# the carrier's prepaid account: 0.60 a minute billed per second; funds for the lab's
# calls (reservations of 60 s each, renewed: deploy/'s [billing] reserve_seconds)
PREPAID_ACCOUNT = "carrier"
PREPAID_RATE = "0.60"
PREPAID_TOPUP = "100000"


class LabError(RuntimeError):
    """The lab could not be built or a step did not come true in time."""


class LabBusy(LabError):
    """Another process's lab is up: its namespaces carry the same names."""


def owner_file() -> Path:
    """Where the process running the lab writes its pid: the namespaces' names are the
    machine's, so one lab at a time (a second ``up`` would tear the first one down)."""
    return Path(os.environ.get("LAB_OWNER_FILE", "/run/switchboard-lab.owner"))


def other_owner() -> int | None:
    """The pid of another live process running a lab, if there is one. A ``make lab``
    that has returned (its lab left up for the user) or an interrupted run owns nothing:
    the next lab clears what it left."""
    try:
        pid = int(owner_file().read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or not Path(f"/proc/{pid}").exists():
        return None
    return pid


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def router_env(host: str) -> dict[str, str]:
    """deploy/config/routerN.env of router-N: systemd's EnvironmentFile syntax (KEY=VALUE
    lines, # comments)."""
    path = DEPLOY / "config" / f"{host.replace('-', '')}.env"
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def netns_exec(host: str, *cmd: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command inside HOST's namespace and wait for it (bounded)."""
    return subprocess.run(
        ["ip", "netns", "exec", host, *cmd], capture_output=True, text=True, timeout=timeout
    )


def wait_for(what: str, cond: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Poll ``cond`` until true; the seconds it took, or LabError naming ``what``."""
    start = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - start
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        if time.monotonic() - start > timeout:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def lab_namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return [n for n in [*HOSTS, HUB] if n in names]


@dataclass
class Lab:
    """The lab's directory (logs, data, the copied configs) and its processes."""

    dir: Path = field(default_factory=lambda: Path(os.environ.get("LAB_DIR", "/tmp/sblab")))
    log: Callable[[str], None] = print
    procs: dict[str, int] = field(default_factory=dict)
    # the carrier's calls prepaid: credit control on in the lab's copy of deploy/'s config
    # (deploy/ leaves it off: one account at 50 calls/s is more than its row can take)
    prepaid: bool = False

    @property
    def config(self) -> Path:
        """deploy/'s switchboard.toml, or with ``prepaid`` its copy (next to a copy of the
        dispatcher list it names) with ``[billing] credit_control = true``."""
        if not self.prepaid:
            return CONFIG
        out = self.dir / "config" / CONFIG.name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(CONFIG.parent / "dispatcher.list", out.parent / "dispatcher.list")
            text = CONFIG.read_text()
            on = text.replace("credit_control = false", "credit_control = true", 1)
            if on == text:
                raise LabError(f"no 'credit_control = false' in {CONFIG} to turn on")
            out.write_text(on)
        return out

    # ------------------------------------------------------------------ addresses
    def http(self, host: str, url: str, data: bytes | None = None, method: str = "GET") -> Any:
        """An HTTP request made from inside HOST's namespace (curl), JSON-decoded."""
        cmd = ["curl", "-fsS", "--max-time", "3", "-X", method, url]
        if data is not None:
            cmd += ["-H", "content-type: application/json", "--data-binary", data.decode()]
        r = netns_exec(host, *cmd, timeout=5)
        if r.returncode != 0:
            raise OSError(f"{url} from {host}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else r.stdout

    def has_address(self, host: str, addr: str) -> bool:
        r = netns_exec(host, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        return f" {addr}/" in r.stdout

    def vip_holder(self, vip: str = VIP_A) -> str | None:
        held = [h for h in ROUTERS if self.has_address(h, vip)]
        return held[0] if len(held) == 1 else None

    # ------------------------------------------------------------------ processes
    def start(
        self,
        name: str,
        host: str,
        cmd: list[str],
        user: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start a service inside HOST (its own session, log in <lab>/<name>.log)."""
        wd = cwd or self.dir / host
        wd.mkdir(parents=True, exist_ok=True)
        full = ["ip", "netns", "exec", host]
        if user:
            full += ["runuser", "-u", user, "--"]
        full += cmd
        logf = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 — the child keeps it
        p = subprocess.Popen(
            full,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=wd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        logf.close()
        self.procs[name] = p.pid
        self._save()
        return p.pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        pid = self.procs.get(name)
        if pid is None:
            raise LabError(f"no process {name}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def alive(self, name: str) -> bool:
        pid = self.procs.get(name)
        if pid is None:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def _save(self) -> None:
        (self.dir / "procs.json").write_text(json.dumps(self.procs))

    def load(self) -> Lab:
        try:
            self.procs = json.loads((self.dir / "procs.json").read_text())
        except (OSError, ValueError):
            self.procs = {}
        return self

    # ------------------------------------------------------------------ links
    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) HOST's cable: its port on the bridge goes down."""
        ip("-n", HUB, "link", "set", f"v-{host}", "up" if up else "down")

    def cut_from_routers(self, host: str, cut: bool) -> None:
        """Cut (or restore) the path between HOST and both routers, and only that: a
        blackhole rule on each side (to the routers' own and floating addresses on HOST,
        to HOST's address on each router), so HOST still reaches the database, the
        carrier and Prometheus, and no packet crosses either way (no ICMP error tells
        anyone). Rules, looked up before the main table: keepalived's routes to the media
        nodes stay as they are."""
        verb = "add" if cut else "del"
        addr = HOSTS[host][0]
        for peer in (*(HOSTS[r][0] for r in ROUTERS), VIP_A, VIP_B):
            rule = ("ip", "rule", verb, "prio", "100", "to", f"{peer}/32", "blackhole")
            r = netns_exec(host, *rule)
            if r.returncode:
                raise LabError(f"{host}: {' '.join(rule)}: {r.stderr.strip()}")
        for router in ROUTERS:
            rule = ("ip", "rule", verb, "prio", "100", "to", f"{addr}/32", "blackhole")
            r = netns_exec(router, *rule)
            if r.returncode:
                raise LabError(f"{router}: {' '.join(rule)}: {r.stderr.strip()}")

    # ------------------------------------------------------------------ down
    def down(self, force: bool = False) -> None:
        """Kill every process in the lab's namespaces, delete them and their files —
        unless another live process runs the lab (``force``: ``make lab-down``)."""
        other = other_owner()
        if other is not None and not force:
            self.log(f"lab: left alone — process {other} runs it ({owner_file()})")
            return
        for ns in lab_namespaces():
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        # (``ip netns exec`` and ``runuser`` exec inside the namespace: nothing the lab
        # started lives outside one, so no pid from an earlier run is ever signalled)
        for ns in lab_namespaces():
            deadline = time.monotonic() + 5
            while ip("netns", "pids", ns, check=False).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ip("netns", "del", ns, check=False)
        for host in HOSTS:
            shutil.rmtree(ETC_NETNS / host, ignore_errors=True)
        self.procs = {}
        with contextlib.suppress(OSError):
            owner_file().unlink()
        if self.dir.exists():
            for child in self.dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
            (self.dir / "procs.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ up
    def network(self) -> None:
        """Namespaces, the bridge in its own namespace, one veth per host, /etc/netns."""
        ip("netns", "add", HUB)
        ip("-n", HUB, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", HUB, "link", "set", BRIDGE, "up")
        ip("-n", HUB, "link", "set", "lo", "up")
        hosts_file = "127.0.0.1\tlocalhost\n" + "".join(
            f"{addr}\t{host} {' '.join(names)}\n" for host, (addr, names) in HOSTS.items()
        )
        for host, (addr, _) in HOSTS.items():
            ip("netns", "add", host)
            ip(
                "-n",
                host,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                f"v-{host}",
                "netns",
                HUB,
            )
            ip("-n", host, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "lo", "up")
            ip("-n", host, "link", "set", "eth0", "up")
            # an on-link default route inside the namespace: programs that ask the kernel
            # which address they go out from (the router's wildcard listen) get eth0's
            ip("-n", host, "route", "add", "default", "dev", "eth0")
            ip("-n", HUB, "link", "set", f"v-{host}", "master", BRIDGE)
            ip("-n", HUB, "link", "set", f"v-{host}", "up")
            etc = ETC_NETNS / host
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            # no DNS in the lab: a lookup that falls through the hosts file (an IPv6 one)
            # is refused at once instead of waiting 5 s for the machine's resolver
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        for host in ROUTERS:  # deploy/docker-compose.yml's sysctl for the routers
            netns_exec(host, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")

    def etcd(self) -> None:
        # deploy/docker-compose.yml's etcd command
        data = self.dir / "etcd" / "data"
        self.start(
            "etcd",
            "etcd",
            [
                "etcd",
                "--name=etcd",
                f"--data-dir={data}",
                "--listen-client-urls=http://0.0.0.0:2379",
                "--advertise-client-urls=http://etcd:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
            ],
        )
        wait_for("etcd", lambda: "true" in str(self.http("etcd", "http://etcd:2379/health")), 20)

    def patroni_config(self, host: str) -> Path:
        """deploy/patroni/<file> with only its paths (data, socket directory, bootstrap
        script) moved into the lab directory."""
        cfg = yaml.safe_load((DEPLOY / "patroni" / PATRONI[host]).read_text())
        data = self.dir / host / "data"
        data.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(data.parent, "postgres", "postgres")
        cfg["postgresql"]["data_dir"] = str(data)
        # both hosts share this machine's /var/run/postgresql: each its own socket directory
        cfg["postgresql"].setdefault("parameters", {})["unix_socket_directories"] = str(data.parent)
        cfg["bootstrap"]["post_bootstrap"] = str(DEPLOY / "patroni" / "post_bootstrap.sh")
        out = self.dir / host / "patroni.yml"
        out.write_text(yaml.safe_dump(cfg))
        return out

    def _cluster(self) -> list[dict[str, Any]]:
        for h in ("pg1", "pg2"):
            try:
                return list(self.http("etcd", f"http://{h}:8008/cluster").get("members", []))
            except OSError:
                continue
        return []

    def db_leader(self) -> str | None:
        for m in self._cluster():
            if m.get("role") == "leader" and m.get("state") == "running":
                return str(m["name"])
        return None

    def db_streaming(self) -> bool:
        """The replica streams from the leader (the leader's pg_stat_replication, through
        Patroni's /patroni: a rejoined node says "running" before pg_rewind is done)."""
        leader = self.db_leader()
        if leader is None:
            return False
        status = self.http("etcd", f"http://{leader}:8008/patroni")
        return any(r.get("state") == "streaming" for r in status.get("replication", []))

    def start_patroni(self, host: str) -> None:
        self.start(
            f"patroni-{host}",
            host,
            ["patroni", str(self.patroni_config(host))],
            user="postgres",
            cwd=self.dir / host,
        )

    def postgres(self) -> None:
        self.start_patroni("db-1")
        wait_for("db-1 to lead the Patroni cluster", lambda: self.db_leader() == "pg1", 60)
        self.start_patroni("db-2")
        wait_for("db-2 streaming from db-1", self.db_streaming, 90, step=0.5)
        self.migrate()

    def migrate(self) -> None:
        r = netns_exec(
            "monitor", str(SWITCHBOARD), "db", "migrate", "--config", str(self.config), timeout=60
        )
        if r.returncode != 0:
            raise LabError(f"switchboard db migrate failed: {r.stdout}{r.stderr}")

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``switchboard ARGS --config deploy/'s`` on the monitor host (the operator's CLI)."""
        r = netns_exec("monitor", str(SWITCHBOARD), *args, "--config", str(self.config),
                       timeout=timeout)  # fmt: skip
        if r.returncode != 0:
            raise LabError(f"switchboard {' '.join(args)} failed: {r.stdout}{r.stderr}")
        return r.stdout

    def make_prepaid(self) -> None:
        """The carrier's prepaid account (deploy/'s [trunks.carrier] account) and the sell
        deck that prices its calls, made with the CLI as an operator would."""
        deck = self.dir / "monitor" / "deck.csv"
        deck.parent.mkdir(parents=True, exist_ok=True)
        deck.write_text(f"prefix,rate,connect_fee,increment\n49,{PREPAID_RATE},0,1/1\n")
        self.cli("rates", "import", str(deck))
        self.cli("accounts", "create", PREPAID_ACCOUNT, "--kind", "prepaid")
        self.cli("accounts", "topup", PREPAID_ACCOUNT, PREPAID_TOPUP)

    def start_media(self, host: str) -> None:
        # deploy/systemd/switchboard-media@.service ExecStart, %i = the host's name
        cmd = [str(SWITCHBOARD), "media", "--config", str(self.config), "--name", host]
        self.start(host, host, cmd)

    def media_ready(self, host: str) -> bool:
        addr = HOSTS[host][0]
        return bool(self.http("monitor", f"http://{addr}:8081/metrics"))

    def start_router(self, host: str) -> None:
        # deploy/systemd/switchboard-router.service: ExecStart with its EnvironmentFile,
        # deploy/config/router1.env or router2.env (the floating address its Via names)
        self.start(
            host,
            host,
            [str(SWITCHBOARD), "router", "--config", str(self.config)],
            env=router_env(host),
        )

    def router_states(self, host: str) -> dict[str, str]:
        addr = HOSTS[host][0]
        return {
            d["uri"]: d["state"] for d in self.http("monitor", f"http://{addr}:8080/destinations")
        }

    def routers_see_all_nodes(self) -> bool:
        for r in ROUTERS:
            states = self.router_states(r)
            if sum(1 for s in states.values() if s == "active") != len(MEDIA):
                return False
        return True

    def keepalived_config(self, host: str) -> Path:
        """deploy/keepalived/<file> with the check script's path pointing into deploy/."""
        text = (DEPLOY / "keepalived" / KEEPALIVED[host]).read_text()
        text = text.replace(CHECK_SCRIPT_PROD, str(DEPLOY / "keepalived" / "check_router.sh"))
        out = self.dir / host / "keepalived.conf"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        return out

    def start_keepalived(self, host: str) -> None:
        d = self.dir / host
        self.start(
            f"keepalived-{host}",
            host,
            [
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--vrrp",
                "-f",
                str(self.keepalived_config(host)),
                "-p",
                str(d / "keepalived.pid"),
                "-r",
                str(d / "vrrp.pid"),
            ],
        )

    def prometheus_config(self) -> Path:
        """deploy/prometheus/prometheus.yml with its scrape and rule evaluation intervals cut
        from 15 s to 1 s (the lab's failures last seconds: a router is down ~10 s) and its
        rule file named by absolute path; targets and rules are deploy/'s."""
        cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        cfg["global"].update(
            {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        )
        cfg["rule_files"] = [str(DEPLOY / "prometheus" / f) for f in cfg["rule_files"]]
        out = self.dir / "monitor" / "prometheus.yml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(cfg))
        return out

    def prometheus(self) -> None:
        data = self.dir / "monitor" / "prometheus"
        self.start(
            "prometheus",
            "monitor",
            [
                "prometheus",
                f"--config.file={self.prometheus_config()}",
                f"--storage.tsdb.path={data}",
                "--web.listen-address=0.0.0.0:9090",
                "--web.enable-lifecycle",
            ],
        )

    def claim(self) -> None:
        """Make this process the lab's owner, or LabBusy naming the one that is."""
        other = other_owner()
        if other is not None:
            raise LabBusy(
                f"another HA lab is running (process {other}, {owner_file()}): wait for it,"
                " or stop it with `make lab-down`"
            )
        owner_file().write_text(f"{os.getpid()} {self.dir}\n")

    def up(self) -> None:
        t0 = time.monotonic()
        self.claim()
        self.down()
        self.claim()  # down() cleared the file with the leftovers
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log(f"lab: network ({len(HOSTS)} hosts on {SUBNET}, bridge in namespace {HUB})")
        self.network()
        self.log("lab: etcd")
        self.etcd()
        self.log("lab: PostgreSQL under Patroni (db-1, db-2)")
        self.postgres()
        if self.prepaid:
            self.make_prepaid()
        self.log("lab: media nodes")
        for h in MEDIA:
            self.start_media(h)
        for h in MEDIA:
            wait_for(f"{h} /metrics", lambda h=h: self.media_ready(h), 30)  # type: ignore[misc]
        self.log("lab: routers")
        for h in ROUTERS:
            self.start_router(h)
        wait_for("both routers to see 4 active media nodes", self.routers_see_all_nodes, 30)
        self.log("lab: keepalived")
        for h in ROUTERS:
            self.start_keepalived(h)
        wait_for(f"{VIP_A} on router-1", lambda: self.vip_holder(VIP_A) == "router-1", 20)
        wait_for(f"{VIP_B} on router-2", lambda: self.vip_holder(VIP_B) == "router-2", 20)
        self.log("lab: the carrier's termination side (SIPp UAS on carrier:5090)")
        self.start(
            "carrier-uas",
            "carrier",
            [
                "sipp",
                "-sn",
                "uas",
                "-i",
                HOSTS["carrier"][0],
                "-p",
                "5090",
                "-nostdin",
                # its message counts (uas_<pid>_counts.csv, every second): chaos.far_end
                # checks that every call it answered got its BYE
                "-trace_counts",
                "-fd",
                "1",
            ],
        )
        self.log("lab: prometheus")
        self.prometheus()
        self.log(f"lab: up in {time.monotonic() - t0:.1f} s (logs in {self.dir})")
