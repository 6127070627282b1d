"""``python -m switchboard.lab up|down`` — ``make lab`` / ``make lab-down``."""

from __future__ import annotations

import os
import signal
import sys

from switchboard.lab.topology import Lab, LabBusy, LabError


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("up", "down"):
        print("usage: python -m switchboard.lab up|down", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, veth links, a bridge)", file=sys.stderr)
        return 1
    lab = Lab()
    if argv[0] == "down":
        lab.down(force=True)  # the operator asked: whoever runs it
        print("lab: down")
        return 0

    def interrupted(signum: int, _frame: object) -> None:
        lab.down()
        print("lab: interrupted, torn down", file=sys.stderr)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        lab.up()
    except LabBusy as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 3
    except LabError as exc:
        print(f"lab: {exc}; tearing down (logs kept in {lab.dir})", file=sys.stderr)
        lab.down()
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
