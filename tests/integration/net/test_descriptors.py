"""net/descriptors.reserve: the limit raised and the descriptor table grown at start.

Each case runs in a child process started with a low soft limit, as systemd starts
services (1,024; 64 here to keep the cases small), so this test process keeps its own.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, resource, socket
    from switchboard.net import descriptors

    def fdsize():
        for line in open("/proc/self/status"):
            if line.startswith("FDSize:"):
                return int(line.split()[1])

    before = fdsize()
    open_before = len(os.listdir("/proc/self/fd"))
    kept = os.open(os.devnull, os.O_RDONLY)
    if KEEP:  # a descriptor in use at the top of the range: it must survive
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (TOP, hard))
        os.dup2(kept, TOP - 1)
        resource.setrlimit(resource.RLIMIT_NOFILE, (START, hard))
    got = descriptors.reserve(NEEDED)
    grown = fdsize()  # before any socket: the table holds NEEDED already
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOCKETS)]
    print(json.dumps({
        "before": before, "after": grown, "reserved": got,
        "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "kept_ok": not KEEP or os.fstat(TOP - 1).st_ino == os.fstat(kept).st_ino,
        "leaked": len(os.listdir("/proc/self/fd")) - open_before - 1 - KEEP - len(socks),
        "sockets": len(socks),
    }))
    """
)


def run_child(
    needed: int, sockets: int, soft: int, hard: int, *, keep: bool = False
) -> dict[str, object]:
    import json

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    top = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    code = (
        CHILD.replace("NEEDED", str(needed))
        .replace("SOCKETS", str(sockets))
        .replace("TOP", str(top))
        .replace("START", str(soft))
        .replace("KEEP", str(int(keep)))
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=limits,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_low_soft_limit_is_raised_and_the_table_grown_before_any_socket() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = 1500 if hard == resource.RLIM_INFINITY else min(1500, hard)
    r = run_child(needed, sockets=needed - 100, soft=64, hard=hard)
    assert r["soft"] == needed  # 1,400 sockets open where the start limit allowed 64
    assert r["sockets"] == needed - 100
    assert r["reserved"] == needed
    assert isinstance(r["after"], int) and r["after"] >= needed
    assert isinstance(r["before"], int) and r["before"] < needed
    assert r["leaked"] == 0


def test_the_hard_limit_caps_what_is_reserved() -> None:
    r = run_child(5000, sockets=10, soft=64, hard=300, keep=True)
    assert r["soft"] == 300
    assert r["reserved"] == 300
    assert r["kept_ok"] is True  # the descriptor in use at the top was not replaced
    assert r["leaked"] == 0
