"""`switchboard up` as a user runs it: bad configuration, port in use, start and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.platform import available_services

SWITCHBOARD = [sys.executable, "-m", "switchboard.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u.bind(("127.0.0.1", port))  # free for UDP too (SIP listens on both)
        return port


def run_up(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWITCHBOARD, "up", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pike]\nban_secs = 5\n", "unknown key 'pike.ban_secs'"),
        ('[router]\nadmin = "localhost"\n', "router.admin: Value error, expected HOST:PORT"),
        ('[router]\nlisten = ["udp:127.0.0.1:99999"]\n', "router.listen"),
        ("[platform]\nmedia_nodes = 0\n", "platform.media_nodes"),
    ],
)
def test_bad_configuration_is_named_and_exits_2(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "sb.toml").write_text(text)
    r = run_up("--config", "sb.toml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "configuration error" in r.stderr
    assert message in " ".join(r.stderr.split())
    assert not (tmp_path / "state").exists()  # nothing was started


def test_bad_media_node_count_flag(tmp_path: Path) -> None:
    r = run_up("--media-nodes", "99", cwd=tmp_path)
    assert r.returncode == 2
    assert "platform.media_nodes" in r.stderr


@pytest.mark.skipif("router" not in available_services(), reason="router not in this build")
def test_port_in_use_exits_3_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            sip = s.getsockname()[1]
        (tmp_path / "sb.toml").write_text(
            f'[router]\nadmin = "127.0.0.1:{port}"\nlisten = ["udp:127.0.0.1:{sip}"]\n'
            f'[database]\nurl = "postgresql://unused/x"\n'
        )
        r = run_up("--config", "sb.toml", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert f"router admin address tcp:127.0.0.1:{port}: already in use" in r.stderr


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # outside pytest's tmp_path: as root the embedded PostgreSQL runs as user pgserver,
    # which cannot enter /tmp/pytest-of-root (mode 0700)
    d = Path(tempfile.mkdtemp(prefix="sb-up-"))
    d.chmod(0o755)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def alive(pid: int) -> bool:
    """Running, not a zombie (PID 1 of some containers never reaps orphans)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def postmaster_pid(state: Path) -> int | None:
    pidfile = state / "pgdata" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def test_up_starts_what_exists_prints_addresses_and_stops_on_ctrl_c(state_dir: Path) -> None:
    if {"router", "media"} <= available_services():
        pytest.skip("covered by tests/e2e/test_platform_up.py once media nodes exist")
    sip, admin = free_port(), free_port()
    (state_dir / "sb.toml").write_text(
        f'[platform]\nstate_dir = "{state_dir / "state"}"\n'
        f'[router]\nlisten = ["udp:127.0.0.1:{sip}"]\nadmin = "127.0.0.1:{admin}"\n'
    )
    proc = subprocess.Popen(
        [*SWITCHBOARD, "up", "--config", "sb.toml"],
        cwd=state_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        out = "".join(lines)
        assert "Switchboard is up" in out, out
        assert "PostgreSQL" in out
        if "router" in available_services():
            assert f"udp:127.0.0.1:{sip}" in out
            assert f"http://127.0.0.1:{admin}/status" in out
        pg = postmaster_pid(state_dir / "state")
        assert pg is not None
        assert alive(pg)
        uri = (state_dir / "state" / "postgres.uri").read_text().strip()
        assert "switchboard" in uri or "postgres" in uri
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "database stopped" in rest
    if "router" in available_services():
        assert "router stopped" in rest  # drain semantics: tests/e2e/test_router_e2e.py
    deadline = time.monotonic() + 10
    while alive(pg) and time.monotonic() < deadline:
        time.sleep(0.05)  # postmaster exits a moment after pg_ctl stop returns
    assert not alive(pg)
