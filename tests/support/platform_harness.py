"""A running `switchboard up` on free loopback ports, a real Prometheus, SIPp load.

Used by tests/e2e/test_platform_*.py. Nothing here stubs a service: the platform is the
real command in a subprocess, Prometheus is the Debian binary, load comes from SIPp.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import claim, release

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "switchboard.json"


def port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_run(n: int, lo: int = 20000, hi: int = 32000) -> int:
    """First port of ``n`` consecutive ports free for both TCP and UDP on 127.0.0.1.

    Below Linux's ephemeral range (32768+) by default, so a port found free is not taken
    by some process's outgoing connection before the service binds it. A port is not
    handed out twice within two minutes in one process: a configuration picks all its
    ports before anything binds them, and two picks must not land on the same port."""
    for _ in range(200):
        base = random.randrange(lo, hi - n)
        run = range(base, base + n)
        if all(port_free(p) for p in run) and claim(run):
            return base
    raise RuntimeError("no free port range")


def release_run(base: int, n: int) -> None:
    """Give back a run free_run handed out, once whatever used it has ended (a large RTP
    range held for two minutes would leave no room for the next configuration's)."""
    release(range(base, base + n))


def alive(pid: int) -> bool:
    """Running and not a zombie (some containers' PID 1 never reaps orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (by /proc parent links), zombies excluded."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text.rsplit(")", 1)[1].split()
        children.setdefault(int(rest[1]), []).append(int(stat.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out and alive(c):
                out.add(c)
                todo.append(c)
    return out


def http_json(url: str, data: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@dataclass
class Platform:
    """`switchboard up` in a subprocess, every address on a free loopback port."""

    media_nodes: int = 2
    state: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-e2e-up-")))
    rtp_span: int = 200  # RTP ports per media node (a call leg takes 2: RTP and RTCP)
    extra_config: str = ""  # TOML appended to the generated config (e.g. a [limits] table)
    media_config: str = ""  # TOML lines added to the generated [media] table
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    # [pike] allow of the generated config; () = pike's defaults (loopback is the [acl]
    # trunk, which pike does not count anyway: docs/router.md "Trunks")
    pike_allow: tuple[str, ...] = ("127.0.0.1",)
    # [dispatcher] probing and failover: quick for tests (a dead node is seen in ~1 s);
    # None = the product's defaults (5 s pings, 1 s ping timeout, 2 misses, 2 s failover),
    # what the benchmarks measure — the quick settings mark a node that a busy machine
    # leaves without CPU for 0.5 s inactive.
    dispatcher: str | None = (
        "ping_interval = 1.0\nping_timeout = 0.5\nprobing_threshold = 2\n"
        "inactive_threshold = 1\nfailover_timeout = 1.0\n"
    )

    def __post_init__(self) -> None:
        # as root, the embedded PostgreSQL runs as user pgserver: it must reach the state dir
        self.state.chmod(0o755)
        n = self.media_nodes
        self.router_sip = free_run(1)
        self.router_admin = free_run(1)
        self.platform_admin = free_run(1)
        self.media_sip = free_run(n)
        self.media_admin = free_run(n)
        self.esl = free_run(n)
        self.carrier = free_run(1)
        self.rtp = free_run(self.rtp_span * n, 10000, 20000)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.router_admin}"

    def media_admin_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.media_admin + i}" for i in range(self.media_nodes)]

    def config_text(self) -> str:
        text = (
            f'[platform]\nstate_dir = "{self.state / "state"}"\nmedia_nodes = {self.media_nodes}\n'
            f'admin = "127.0.0.1:{self.platform_admin}"\n'
            f'[router]\nlisten = ["udp:127.0.0.1:{self.router_sip}", "tcp:127.0.0.1:{self.router_sip}"]\n'
            f'admin = "127.0.0.1:{self.router_admin}"\n'
            + (f"[dispatcher]\n{self.dispatcher}" if self.dispatcher is not None else "")
            # SIPp load comes from 127.0.0.1, like a trusted carrier: not flood-limited
            + (f"[pike]\nallow = {json.dumps(list(self.pike_allow))}\n" if self.pike_allow else "")
            + f'[esl]\nlisten = "127.0.0.1:{self.esl}"\n'
        )
        text += (
            f'[media]\nlisten = ["udp:127.0.0.1:{self.media_sip}", "tcp:127.0.0.1:{self.media_sip}"]\n'
            f'admin = "127.0.0.1:{self.media_admin}"\n'
            f"rtp_port_start = {self.rtp}\nrtp_port_end = {self.rtp + self.rtp_span - 1}\n"
            + self.media_config
            + f'[gateways.carrier]\nproxy = "127.0.0.1:{self.carrier}"\n'
        )
        return text + self.extra_config

    def start(self, *args: str, timeout: float = 90.0) -> None:
        cfg = self.state / "sb.toml"
        cfg.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["COLUMNS"] = "200"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "up", "--config", str(cfg), *args],
            cwd=self.state,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "Ctrl-C stops everything" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("switchboard up did not start:\n" + self.text())

    def text(self) -> str:
        return "".join(self.output)

    def pids(self) -> dict[str, int]:
        """Service name → pid, from the supervisor's "started NAME (pid N)" lines (latest)."""
        out = {}
        for line in self.output:
            if "switchboard.supervisor: started " in line:
                name, _, pid = line.split("started ", 1)[1].partition(" (pid ")
                out[name] = int(pid.rstrip(")\n"))
        return out

    def spare_pid(self, name: str) -> int:
        """The pid of ``name``'s warm spare, from the supervisor's latest "warm spare for
        NAME waiting (pid N)" line."""
        pid = 0
        for line in self.output:
            if f"switchboard.supervisor: warm spare for {name} waiting (pid " in line:
                pid = int(line.rsplit("(pid ", 1)[1].rstrip(")\n"))
        if not pid:
            raise AssertionError(f"no warm spare for {name}:\n" + self.text()[-3000:])
        return pid

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        n = self.media_nodes
        for base, count in (
            (self.router_sip, 1), (self.router_admin, 1), (self.platform_admin, 1),
            (self.media_sip, n), (self.media_admin, n), (self.esl, n), (self.carrier, 1),
            (self.rtp, self.rtp_span * n),
        ):  # fmt: skip
            release_run(base, count)


@dataclass
class Prometheus:
    """The Debian Prometheus server scraping the platform, with deploy/'s rule file."""

    targets: dict[str, list[str]]
    port: int = field(default_factory=lambda: free_run(1))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-e2e-prom-")))
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(t)}\n"
            for job, t in self.targets.items()
        )
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\nscrape_configs:\n{jobs}"
        )
        self.log = open(self.workdir / "log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.2)  # external process starting: nothing to await
        raise AssertionError("prometheus did not start: " + (self.workdir / "log").read_text())

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        body = http_json(url)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def rules(self) -> list[dict[str, Any]]:
        body = http_json(f"http://127.0.0.1:{self.port}/api/v1/rules")
        return [r for g in body["data"]["groups"] for r in g["rules"]]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def sipp_calls(
    target: str,
    service: str,
    calls: int,
    rate: float,
    duration_ms: int = 1000,
    timeout: float = 60.0,
    source: str = "127.0.0.1",
) -> subprocess.CompletedProcess[str]:
    """SIPp calls through the router (``tests/data/sipp/router_uac.xml``: ACK and BYE follow
    the Record-Route set, as a carrier's switch does): ``calls`` calls to ``service`` at
    ``rate``/s from ``source`` (another loopback address stands for another carrier),
    bounded in time."""
    port = free_run(1)
    return subprocess.run(
        [
            shutil.which("sipp") or "sipp",
            target,
            "-sf", str(ROOT / "tests" / "data" / "sipp" / "router_uac.xml"),
            "-s", service,
            "-m", str(calls),
            "-r", str(rate),
            "-d", str(duration_ms),
            "-i", source,
            "-p", str(port),
            "-timeout", f"{int(timeout)}s",
            "-timeout_error",
            "-nostdin",
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 15,
    )  # fmt: skip


class Chromium:
    """Headless Debian chromium driven over the DevTools protocol on a pipe (fds 3/4).

    No browser-automation dependency: CDP messages are JSON objects separated by NUL bytes
    (``--remote-debugging-pipe``); one page target, flat session.
    """

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="sb-e2e-chromium-"))
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        mine = (self._to_browser, self._from_browser)

        def fds() -> None:  # in the child, before exec: the pipe on fds 3 (in) and 4 (out)
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)  # above 4, so dup2 is safe
            os.dup2(r, 3)
            os.dup2(w, 4)
            for fd in {r, w, to_browser_r, from_browser_w, *mine} - {3, 4}:
                with contextlib.suppress(OSError):
                    os.close(fd)

        self.proc = subprocess.Popen(
            [
                shutil.which("chromium") or "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,  # subprocess would close 3 and 4 after preexec_fn
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.session = ""

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        return self._id

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        want = self._send(
            method,
            params,
            self.session if "." in method and not method.startswith("Target.") else "",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                import select

                ready, _, _ = select.select(
                    [self._from_browser], [], [], max(0.0, deadline - time.monotonic())
                )
                if not ready:
                    raise TimeoutError(f"chromium: no answer to {method}")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise ConnectionError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, _, self._buf = self._buf.partition(b"\0")
            msg = json.loads(raw)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
        raise TimeoutError(f"chromium: no answer to {method}")

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Runtime.enable")

    def js(self, expression: str) -> Any:
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a page expression until it is truthy (the page updates itself every 2 s)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError as exc:  # the page is still loading: its elements are missing
                last, value = exc, None
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"page never satisfied: {expression} ({last})")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the element's centre."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        assert box, f"no element {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path, width: int = 1280, height: int = 1100) -> bytes:
        """The page as a PNG at ``width``×``height`` CSS pixels, written to ``path``."""
        import base64

        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        png = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(png)
        return png

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)
