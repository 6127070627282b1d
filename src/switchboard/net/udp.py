"""SIP over UDP (RFC 3261 §18): one datagram is one message.

The protocol only moves bytes: every datagram goes to the endpoint's callback with
the sender as a :class:`~switchboard.sip.transaction.Peer`; parsing, answering and
dropping happen there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from switchboard.sip.transaction import Peer

log = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes, Peer], None]


class QueueProbe(Protocol):
    """What the transport needs of net/queue_probe.py's ReceiveQueueProbe."""

    source: tuple[str, int]  # the probe's own address: its datagrams come from there

    def back(self, data: bytes) -> None: ...


def unbracket(host: str) -> str:
    """``[::1]`` → ``::1``: Via and URI hosts keep the brackets, sockets do not."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class UdpTransport(asyncio.DatagramProtocol):
    """One bound UDP socket carrying SIP datagrams."""

    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.closed = asyncio.get_running_loop().create_future()
        self.probe: QueueProbe | None = None  # net/queue_probe.py, when measured

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: asyncio's own selector transport does not inherit
        # DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host = str(addr[0])
        if ":" in host:
            host = f"[{host}]"
        probe = self.probe
        if probe is not None and data[:1] == b"\x00" and (host, addr[1]) == probe.source:
            probe.back(data)  # never SIP: the receive-queue probe's stamp
            return
        try:
            self._on_datagram(data, Peer("UDP", host, int(addr[1])))
        except Exception:  # the process never dies on a peer's bytes
            log.exception("UDP datagram from %s:%s crashed the handler; dropped", host, addr[1])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: UDP gives no way to tie them to a
        # message, so the transactions' own timers decide (§17.1.1.2 Timer B/F).
        log.debug("UDP socket error on %s: %s", self.local, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def sendto(self, data: bytes, peer: Peer) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("UDP socket closed")
        self.transport.sendto(data, (unbracket(peer.host), peer.port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_udp(host: str, port: int, on_datagram: DatagramHandler) -> UdpTransport:
    """Bind a UDP socket at ``host:port`` (0 picks a free port)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpTransport(on_datagram), local_addr=(unbracket(host), port)
    )
    return protocol
