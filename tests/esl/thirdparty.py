"""Run the three third-party ESL clients against a server and return what they saw.

Each returns a summary dict (``status`` line, originate/bgapi results, the events for
one call); tests assert on it. genesis runs in-process (asyncio), greenswitch (gevent)
and modesl (node) run as subprocesses: gevent's monkey-patching and node stay out of
pytest. Everything is bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"


def ensure_modesl() -> bool:
    """Install modesl from package-lock.json into tests/esl/node when missing (``npm ci``)."""
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
    return await _run([sys.executable, "greenswitch_probe.py", *args], HERE, timeout)


async def run_genesis(port: int, cid: str, dial: str, dest: str, kill: bool,
                      timeout: float = 30) -> dict[str, Any]:  # fmt: skip
    from genesis import Inbound
    from genesis.exceptions import AuthenticationError

    out: dict[str, Any] = {"client": "genesis", "events": []}
    try:
        async with Inbound("127.0.0.1", port, "wrong-password"):
            out["bad_auth"] = "accepted"
    except AuthenticationError as exc:
        out["bad_auth"] = f"AuthenticationError: {exc}"
    done = asyncio.Event()
    async with Inbound("127.0.0.1", port, "ClueCon") as client:
        out["status"] = (await client.send("api status")).body.split("\n")[0]
        jobs: dict[str, str] = {}

        async def on_event(ev: Any) -> None:
            name = ev.get("Event-Name")
            if name == "BACKGROUND_JOB":
                jobs[ev.get("Job-UUID")] = ev.body or ""
                return
            out["events"].append(
                {
                    "name": name, "uuid": ev.get("Unique-ID"), "cause": ev.get("Hangup-Cause"),
                    "billsec": ev.get("variable_billsec"), "duration": ev.get("variable_duration"),
                    "cid": ev.get("Caller-Caller-ID-Number"),
                }
            )  # fmt: skip
            if name == "CHANNEL_ANSWER" and kill:
                out["kill"] = (await client.send(f"api uuid_kill {ev.get('Unique-ID')}")).body
            if name == "CHANNEL_HANGUP_COMPLETE":
                done.set()

        for name in (
            "CHANNEL_ANSWER",
            "CHANNEL_HANGUP",
            "CHANNEL_HANGUP_COMPLETE",
            "BACKGROUND_JOB",
        ):
            client.on(name, on_event)
        await client.send(
            "events plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
        )
        out["filter"] = (await client.send(f"filter Caller-Caller-ID-Number {cid}"))["Reply-Text"]
        await client.send("filter Event-Name BACKGROUND_JOB")
        reply = await client.send(
            f"bgapi originate {{origination_caller_id_number={cid}}}{dial} {dest}"
        )
        out["job_uuid"] = reply.get("Job-UUID")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while out["job_uuid"] not in jobs and loop.time() < deadline:
            await asyncio.sleep(0.02)
        out["bgapi"] = jobs.get(out["job_uuid"])
        if str(out["bgapi"]).startswith("+OK"):
            await asyncio.wait_for(done.wait(), max(0.1, deadline - loop.time()))
            await asyncio.sleep(0.05)
    return out


CLIENTS = {"genesis": run_genesis, "greenswitch": run_greenswitch, "modesl": run_modesl}
