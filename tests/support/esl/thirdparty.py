"""Run the three third-party ESL clients against a server and return what they saw.

Each returns a summary dict (``status`` line, originate/bgapi results, the events for
one call); tests assert on it. All three run as subprocesses printing one JSON line:
genesis (asyncio) and greenswitch (gevent) with the Python of their own venv,
``.venv-esl-clients`` (``make esl-client-deps``), so their pinned dependencies never reach
the project's environment and gevent's monkey-patching stays out of pytest; modesl with
node. Tests using genesis/greenswitch are skipped when that venv is missing. Everything is
bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
CLIENTS_VENV = HERE.parents[2] / ".venv-esl-clients"
# Written by ``make esl-client-deps`` once genesis and greenswitch are installed.
CLIENTS_STAMP = CLIENTS_VENV / "requirements.stamp"


def client_python() -> str:
    """The Python of the ESL clients' venv; skips the calling test when it is not installed."""
    python = CLIENTS_VENV / "bin" / "python"
    if not (python.exists() and CLIENTS_STAMP.is_file()):
        pytest.skip(
            f"ESL client venv {CLIENTS_VENV.name}/ (genesis, greenswitch) is not installed: "
            "run `make esl-client-deps` (`make test` does it)"
        )
    return str(python)


def ensure_modesl() -> bool:
    """Install modesl from package-lock.json into tests/support/esl/node when missing (``npm ci``)."""
    if (NODE_DIR / "node_modules" / "modesl").is_dir():
        return True
    if shutil.which("npm") is None or shutil.which("node") is None:
        return False
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=NODE_DIR, check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    return (NODE_DIR / "node_modules" / "modesl").is_dir()


async def _run(cmd: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{cmd[1]} did not finish within {timeout}s") from None
    lines = stdout.decode().strip().splitlines()
    assert lines, f"{cmd} printed nothing; stderr:\n{stderr.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["returncode"] = proc.returncode
    result["stderr"] = stderr.decode()[-2000:]
    return result


async def run_modesl(port: int, cid: str, dial: str, dest: str, kill: bool,
                     timeout: float = 40) -> dict[str, Any]:  # fmt: skip
    assert ensure_modesl(), "node/npm missing: cannot run modesl"
    args = [str(port), cid, dial, dest, "1" if kill else "0"]
    return await _run(["node", "probe.js", *args], NODE_DIR, timeout)


async def run_greenswitch(port: int, cid: str, dial: str, dest: str, kill: bool,
                          timeout: float = 40) -> dict[str, Any]:  # fmt: skip
    args = [str(port), cid, dial, dest, "1" if kill else "0"]
    return await _run([client_python(), "greenswitch_probe.py", *args], HERE, timeout)


async def run_genesis(port: int, cid: str, dial: str, dest: str, kill: bool,
                      timeout: float = 45) -> dict[str, Any]:  # fmt: skip
    args = ["call", str(port), cid, dial, dest, "1" if kill else "0"]
    return await _run([client_python(), "genesis_probe.py", *args], HERE, timeout)


async def run_genesis_concurrent(port: int, connections: int, per_connection: int, prefix: str,
                                 dest: str, timeout: float = 60) -> dict[str, Any]:  # fmt: skip
    """``connections`` genesis connections, ``per_connection`` ``bgapi originate`` each, all in
    flight at once: the replies, every BACKGROUND_JOB body by Job-UUID, then the
    ``show channels count`` and ``hupall`` bodies (see genesis_probe.py)."""
    args = ["concurrent", str(port), str(connections), str(per_connection), prefix, dest]
    return await _run([client_python(), "genesis_probe.py", *args], HERE, timeout)


CLIENTS = {"genesis": run_genesis, "greenswitch": run_greenswitch, "modesl": run_modesl}
