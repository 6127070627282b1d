"""`switchboard up` as a user runs it: bad configuration, port in use, start and Ctrl-C."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

SWITCHBOARD = [sys.executable, "-m", "switchboard.cli"]


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
