"""A process for supervisor tests: serves /metrics on a port, behaves as told.

usage: platform_child.py PORT MARKER_DIR [--ignore-term] [--grandchild] [--crash-after S] [--standby]
Writes MARKER_DIR/<pid>.started just before listening; a grandchild's pid into MARKER_DIR/<pid>.grandchild.
With --standby (a warm spare) it writes <pid>.spare, waits for a line of JSON on stdin
(end of input: exit 0), writes it to <pid>.go, then starts as usual.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from switchboard.observability.metrics import new_registry, serve_metrics


async def main() -> None:
    port, marker = int(sys.argv[1]), Path(sys.argv[2])
    flags = sys.argv[3:]
    from os import getpid

    if "--standby" in flags:
        (marker / f"{getpid()}.spare").write_text("")
        go = sys.stdin.readline()
        if not go:
            sys.exit(0)
        (marker / f"{getpid()}.go").write_text(go)
    if "--ignore-term" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def hup(signum: int, frame: object) -> None:
        (marker / f"{getpid()}.reloaded").write_text("")

    signal.signal(signal.SIGHUP, hup)
    # markers first, then listen: once the supervisor sees the port, the markers exist
    if "--grandchild" in flags:
        gc = subprocess.Popen(["sleep", "600"])
        (marker / f"{gc.pid}.grandchild").write_text(str(gc.pid))
    (marker / f"{getpid()}.started").write_text("")
    server = await serve_metrics("127.0.0.1", port, new_registry("child"))
    if "--crash-after" in flags:
        await asyncio.sleep(float(flags[flags.index("--crash-after") + 1]))
        sys.exit(7)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
