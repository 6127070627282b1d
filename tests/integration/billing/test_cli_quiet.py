"""No warning noise on a clean install (issue 18, item 4): the operator commands, run as a
user would run them — a subprocess, the embedded PostgreSQL, no ``XDG_RUNTIME_DIR`` (a
service account, a container, ``sudo``) — print their answer and nothing else on stderr."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import new_server_dir

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def clean_env() -> Iterator[tuple[dict[str, str], Path]]:
    root = new_server_dir("sb-quiet-")
    (root / "sb.toml").write_text(f'[platform]\nstate_dir = "{root / "state"}"\n')
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "COLUMNS": "80",
    }
    try:
        yield env, root
    finally:
        subprocess.run(
            [sys.executable, "-m", "switchboard.cli", "db", "stop", "-c", str(root / "sb.toml")],
            env=env,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def switchboard(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *args, "-c", str(root / "sb.toml")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_commands_print_no_warning_without_xdg_runtime_dir(
    clean_env: tuple[dict[str, str], Path],
) -> None:
    env, root = clean_env
    assert "XDG_RUNTIME_DIR" not in env
    url = switchboard(env, root, "db", "url")  # starts the embedded server and leaves it up
    assert url.returncode == 0 and "dbname=switchboard" in url.stdout, url
    assert url.stderr == ""
    for args in (("cdr", "list"), ("report",), ("accounts", "list"), ("campaign", "status")):
        done = switchboard(env, root, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == "", (args, done.stderr)
        assert "Warning" not in done.stdout, (args, done.stdout)
