"""How every Switchboard process lives: event loop, logging, signals and exit codes.

One lifecycle for the router, a media node and the ``switchboard up`` supervisor, in the
manner of uvicorn's (``main()`` → ``run()`` → serve until a signal):

* **event loop** — :func:`run_service` runs the service's main coroutine on uvloop (plain
  asyncio where uvloop is missing) via :func:`switchboard.net.loop.run`;
* **logging** — the root logger gets the call-id filter and the ``service`` field
  (:func:`switchboard.observability.log.setup_logging`), so a line logged while handling a
  call carries ``call_id=...`` whether the process was started alone or by the supervisor;
* **signals** — :class:`Signals`: the first SIGTERM/SIGINT asks the service to stop
  gracefully (drain), any further one forces the stop; SIGHUP reloads;
* **exit codes** — :class:`ExitCode`, the one definition the CLI documents: 0 success,
  1 runtime failure (or a forced stop), 2 usage or configuration error, 3 a service failed
  to start or a dependency is unreachable, 4 a campaign paused itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from switchboard.net.loop import run as run_loop
from switchboard.observability.log import setup_logging

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    """Process exit codes of every ``switchboard`` command (README, "Command line")."""

    OK = 0
    FAILED = 1
    USAGE = 2
    START_FAILED = 3
    CAMPAIGN_PAUSED = 4


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_now() -> None:
    raise SystemExit(ExitCode.FAILED)


@dataclass
class Signals:
    """The signal policy of a service, installed on its running loop.

    ``stop`` is called on the first SIGTERM/SIGINT, ``force`` on every later one (by
    default the process exits at once with :attr:`ExitCode.FAILED`), ``reload`` on SIGHUP
    (SIGHUP is left alone when there is none).
    """

    stop: Callable[[], None]
    force: Callable[[], None] = _exit_now
    reload: Callable[[], None] | None = None
    received: int = 0

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_stop)
        if self.reload is not None:
            loop.add_signal_handler(signal.SIGHUP, self.reload)

    def remove(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop(self) -> None:
        self.received += 1
        if self.received == 1:
            self.stop()
        else:
            self.force()


def notify_ready() -> bool:
    """Tell a service manager the service is up: ``READY=1`` to ``$NOTIFY_SOCKET`` (systemd's
    ``Type=notify``, sd_notify(3)), so that ``TimeoutStartSec=`` catches a start that hangs.
    False when no manager asked (the variable is unset) or the socket is gone."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(b"READY=1")
    except OSError as exc:
        log.warning("NOTIFY_SOCKET %s: %s", addr, exc)
        return False
    return True


def run_service(service: str, main: Coroutine[Any, Any, int], *, level: str = "INFO") -> int:
    """Set up logging for ``service`` and run ``main`` on a fresh event loop.

    Returns ``main``'s exit code; a :class:`SystemExit` raised by a forced stop becomes
    its code.
    """
    setup_logging(service, level=level)
    try:
        return int(run_loop(main))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else ExitCode.FAILED


__all__ = ["STOP_SIGNALS", "ExitCode", "Signals", "notify_ready", "run_service"]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: deliver SIGTERM to this child when its parent dies, even by SIGKILL, so a
    supervisor's children (the platform's services, a router's workers) are never left
    running on their own. Pass as ``preexec_fn``; a no-op where prctl is missing."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
