"""How long a datagram waits in a UDP socket's receive queue before the process reads it.

A process that falls behind does not see it in its event loop's lag alone: the loop
reads up to 32 datagrams per socket per iteration and stays busy, while new INVITEs wait
in the kernel's receive buffer for as long as the backlog takes to clear — seconds, when a
node is starved of CPU. :class:`ReceiveQueueProbe` measures that wait directly, as the
router does for its own socket (docs/router.md "Benchmark", load shedding): every
``interval`` seconds it sends the socket a tiny stamped datagram from a socket of its own,
starting with a NUL byte (no SIP message does), and reads the stamp when the socket hands
it over. :meth:`delay` is the last wait seen, or — when probes stop coming out (a long
queue, or a full one dropping them) — how long the last one has been due.

The probed :class:`~switchboard.net.udp.UdpTransport` passes datagrams from the probe's
own address that start with NUL to :meth:`back` instead of its SIP handler; the same
bytes from any other source are SIP input as usual (and dropped as garbage there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from switchboard.net.udp import UdpTransport, unbracket

log = logging.getLogger(__name__)

MAGIC = b"\x00sbq"
INTERVAL = 0.02  # s: 50 probes a second, a few µs each


class ReceiveQueueProbe:
    """Measures the receive-queue wait of one UDP socket (see module doc)."""

    def __init__(self, target: UdpTransport, *, interval: float = INTERVAL) -> None:
        self.target = target
        self.interval = interval
        self.last = 0.0  # the last wait measured (seconds)
        self.peak = 0.0  # the largest since start, for benchmarks and tests
        self.source: tuple[str, int] = ("", 0)
        self._sock: socket.socket | None = None
        self._to: tuple[str, int] = ("", 0)
        self._back = 0.0  # when the last probe came out (monotonic)
        self._timer: asyncio.TimerHandle | None = None
        self.on_reading: Callable[[float], None] | None = None  # each wait measured

    def start(self) -> bool:
        """Start probing; False (and a warning) when no socket could be made."""
        host, port = self.target.local
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(unbracket(host), unbracket(host))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            log.warning("no receive-queue probe on %s:%d: %s", host, port, exc)
            return False
        sock.setblocking(False)
        self._sock = sock
        self._to = (host, port)
        name = sock.getsockname()
        self.source = (f"[{name[0]}]" if ":" in name[0] else name[0], name[1])
        self.target.probe = self
        self._back = time.monotonic()
        self._send()
        return True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.target.probe is self:
            self.target.probe = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def delay(self) -> float:
        """How long a datagram arriving now waits before it is read (seconds, estimated
        from the last probe; the time the next one is overdue if that is longer)."""
        if self._sock is None:
            return 0.0
        overdue = time.monotonic() - self._back - self.interval
        return max(self.last, overdue)

    def _send(self) -> None:
        self._timer = None
        if self._sock is None:
            return
        with contextlib.suppress(OSError):  # a full buffer drops it: delay() sees that
            self._sock.sendto(MAGIC + b"%.6f" % time.monotonic(), self._to)
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._send)

    def back(self, data: bytes) -> None:
        """A probe came out of the socket (called by the transport)."""
        if not data.startswith(MAGIC):
            return
        now = time.monotonic()
        try:
            wait = now - float(data[len(MAGIC) :])
        except ValueError:
            return
        self._back = now
        self.last = max(0.0, wait)
        self.peak = max(self.peak, self.last)
        if self.on_reading is not None:
            self.on_reading(self.last)
