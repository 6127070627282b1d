"""Even a SIGKILLed `switchboard up` leaves nothing behind: every child was told by the
kernel to exit with its parent (PR_SET_PDEATHSIG), and the database child stops PostgreSQL."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.platform_harness import Platform, alive, descendants

pytestmark = [
    pytest.mark.timeout(120),
]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def test_supervisor_killed_leaves_no_process() -> None:
    p = Platform(media_nodes=1)
    try:
        p.start()
        assert p.proc is not None
        tree = descendants(p.proc.pid)
        tree.add(int((p.state / "state" / "pgdata" / "postmaster.pid").read_text().split()[0]))
        assert len(tree) >= 4  # database child, media-1, router, postgres
        os.kill(p.proc.pid, signal.SIGKILL)
        p.proc.wait(10)
        deadline = time.monotonic() + 30
        while any(alive(x) for x in tree) and time.monotonic() < deadline:
            time.sleep(0.2)  # other processes exiting: nothing to await
        survivors = {x: cmdline(x) for x in tree if alive(x)}
        assert not survivors, f"still running 30 s after the supervisor's SIGKILL: {survivors}"
    finally:
        p.cleanup()
