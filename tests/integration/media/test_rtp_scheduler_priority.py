"""The media tick's real-time priority helper, tried in a child process."""

from __future__ import annotations


def test_realtime_priority_helper_in_a_child_process() -> None:
    """SCHED_FIFO when permitted (root/CAP_SYS_NICE), a clean False otherwise; never raises."""
    import subprocess
    import sys

    code = (
        "import os; from switchboard.media.scheduler import set_realtime_priority as f; "
        "ok = f(5); print(ok, os.sched_getscheduler(0) == os.SCHED_FIFO)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    ok, fifo = out.stdout.split()
    assert ok == fifo  # reports exactly what happened
