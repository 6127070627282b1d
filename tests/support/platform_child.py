"""A process for supervisor tests: serves /metrics on a port, behaves as told.

usage: platform_child.py PORT MARKER_DIR [--ignore-term] [--grandchild] [--crash-after S]
Writes MARKER_DIR/<pid>.started just before listening; a grandchild's pid into MARKER_DIR/<pid>.grandchild.
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
    if "--ignore-term" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from os import getpid

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
