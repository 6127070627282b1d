"""RTP port allocation over a configured range (RFC 3550 §11: even RTP port, RTCP on +1).

Free ports form a FIFO: a released port goes to the back, so it is handed out again
only after every other free port — stray packets from the previous call are unlikely
to reach the next one. A port whose bind fails (another process has it) is put to the
back as well and the next one is tried.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque

log = logging.getLogger(__name__)


class PortsExhausted(RuntimeError):
    """Every RTP port of the range is in use (answer the call with 503 / Q.850 34)."""


class PortAllocator:
    """Even RTP ports in ``[start, end]``; each allocation reserves ``port`` and ``port+1``."""

    def __init__(self, start: int = 16384, end: int = 32767) -> None:
        first = start + (start % 2)
        if not 0 < first < end <= 65535:
            raise ValueError(f"bad RTP port range {start}-{end}")
        # The last even port p needs p+1 ≤ end. The port numbers are made once, here:
        # a port given back is queued as this object, not as the caller's (an int made by
        # getsockname() under a load, which would keep the allocator's page of that load
        # resident for as long as the port waits in the queue).
        self._ports = tuple(range(first, end, 2))
        self._first = first
        self._free: deque[int] = deque(self._ports)
        self._used: set[int] = set()
        self.start, self.end = start, end

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        """Reserve the next even port (RTCP is ``port + 1``)."""
        if not self._free:
            raise PortsExhausted(f"no free RTP port in {self.start}-{self.end}")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def bind_exact(self, host: str, port: int) -> tuple[socket.socket, socket.socket]:
        """Take ``port`` (and +1) out of the free list and bind them: a restarted node
        resumes a call on the RTP port its far end keeps sending to. OSError when bound
        elsewhere or outside the range."""
        if port in self._used or not self.start <= port < self.end or port % 2:
            raise OSError(f"RTP port {port} is not free in {self.start}-{self.end}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, port))
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            raise
        with contextlib.suppress(ValueError):
            self._free.remove(port)  # O(n), once per resumed leg at start
        self._used.add(self._ports[(port - self._first) // 2])
        return rtp, rtcp

    def hand_out_last(self, ports: set[int]) -> None:
        """Move these free ports to the end of the queue: a restarted node keeps the ports
        its journaled legs are about to take again from the legs that must move."""
        keep = [p for p in self._free if p not in ports]
        self._free = deque(keep + [p for p in self._free if p in ports])

    def release(self, port: int) -> None:
        """Give ``port`` back; it goes to the end of the queue. Unknown ports are an error."""
        if port not in self._used:
            raise ValueError(f"RTP port {port} is not allocated")
        self._used.discard(port)
        self._free.append(self._ports[(port - self._first) // 2])

    def bind_pair(
        self, host: str, attempts: int | None = None
    ) -> tuple[int, socket.socket, socket.socket]:
        """Allocate a port and bind UDP sockets on it and on +1; skip ports others hold."""
        tries = attempts if attempts is not None else len(self._free)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(max(tries, 1)):
            port = self.allocate()
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError as exc:
                rtp.close()
                rtcp.close()
                self.release(port)
                log.debug("RTP port %d unavailable (%s); trying the next", port, exc)
                continue
            return port, rtp, rtcp
        raise PortsExhausted(f"no bindable RTP port pair in {self.start}-{self.end}")
