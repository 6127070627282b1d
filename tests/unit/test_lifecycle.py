"""The one service lifecycle: signals (stop, then force; reload), exit codes, logging."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal

from switchboard.lifecycle import ExitCode, Signals, run_service
from switchboard.observability.log import call_context


def test_exit_codes_are_the_documented_ones() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4]
    assert ExitCode.START_FAILED == 3 and ExitCode.USAGE == 2


def test_first_signal_stops_later_ones_force_and_sighup_reloads() -> None:
    seen: list[str] = []

    async def main() -> int:
        done = asyncio.Event()

        def stop() -> None:
            seen.append("stop")

        def force() -> None:
            seen.append("force")
            done.set()

        signals = Signals(stop=stop, force=force, reload=lambda: seen.append("reload"))
        signals.install()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(done.wait(), 5)
        finally:
            signals.remove()
        return ExitCode.OK

    assert run_service("t", main()) == 0
    assert seen == ["reload", "stop", "force"]


def test_second_signal_exits_at_once_by_default() -> None:
    async def main() -> int:
        Signals(stop=lambda: None).install()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)  # never reached: the second signal ends the loop
        return ExitCode.OK

    assert run_service("t", main()) == ExitCode.FAILED


def test_run_service_logs_with_service_and_call_id() -> None:
    out = io.StringIO()

    async def main() -> int:
        # run_service installed the switchboard handler on stderr; capture through our own
        root = logging.getLogger()
        handler = next(h for h in root.handlers if getattr(h, "_switchboard", False))
        handler.setStream(out)  # type: ignore[attr-defined]
        with call_context("abc@host"):
            logging.getLogger("switchboard.test").info("bridging")
        return ExitCode.START_FAILED

    assert run_service("media-7", main()) == 3
    line = out.getvalue().strip()
    assert " media-7 switchboard.test: bridging call_id=abc@host" in line


def test_ready_is_told_to_a_service_manager_that_asked(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """systemd's Type=notify: READY=1 on $NOTIFY_SOCKET once the service is up; nothing
    when no manager asked, and no failure when its socket is gone."""
    import socket

    from switchboard.lifecycle import notify_ready

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready() is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify_ready() is True
        assert manager.recv(64) == b"READY=1"
    path.unlink()
    assert notify_ready() is False
