"""The asyncio adapter between sockets and a pure SIP core (aioquic's protocol.py model).

A *core* is any object with ``receive(message, peer, now)``, ``get_timer()`` and
``handle_timer(now)`` returning outputs — a
:class:`~switchboard.sip.transaction.TransactionLayer`, or a UA/proxy core wrapping
one.  :class:`SipEndpoint` owns the UDP and TCP sockets of one core and

* parses what arrives and feeds the core with ``loop.time()``;
* sends every :class:`~switchboard.sip.transaction.Transmit` the core returns and hands
  every other output to ``on_event``;
* keeps ONE timer for the core, re-armed at ``core.get_timer()`` after every feed;
* reports delivery failures back with ``core.transport_failed(transaction, now)``
  (§17.1.4, §17.2.4) when the core has that method.

A peer's bytes never take the process down: unparseable requests are answered with
400 when enough of them is readable (§8.2, §16.3) and otherwise dropped with a debug
log; anything else unexpected is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from switchboard.net.tcp import DEFAULT_IDLE_TIMEOUT, DEFAULT_WRITE_BUFFER_LIMIT, TcpTransport
from switchboard.net.udp import UdpTransport, open_udp
from switchboard.sip.errors import SipError
from switchboard.sip.headers import header_key, parse_vias
from switchboard.sip.message import Request, Response, make_response, parse_message
from switchboard.sip.transaction import Peer, ServerTransaction, Transmit
from switchboard.sip.uri import is_token

log = logging.getLogger(__name__)


class SipCore(Protocol):
    """What :class:`SipEndpoint` drives."""

    def receive(self, message: Request | Response, peer: Peer, now: float) -> Iterable[Any]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Iterable[Any]: ...


EventHandler = Callable[[Any], None]

UDP_ROUTES_MAX = 65536
"""Peers remembered for choosing the UDP socket to answer from (cleared when full)."""

_REJECT_COPY = frozenset({"via", "from", "to", "call-id", "cseq"})
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def stateless_reject(data: bytes, status: int, reason: str) -> bytes | None:
    """A response to an unparseable request built from its raw header lines.

    §8.2.6.2 needs Via, From, To, Call-ID and CSeq copied; when the request line or the
    Via is unreadable, or it is an ACK or a response, there is nothing to answer (None).
    """
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].split(" ")
    if len(first) != 3 or first[2] != "SIP/2.0" or not is_token(first[0]) or not first[1]:
        return None
    if first[0] == "ACK" or _CONTROL.search(first[1]):
        return None
    copied: list[str] = []
    has_via = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not sep or not is_token(name) or not value or _CONTROL.search(value):
            continue  # never echo bytes that would make our own reply unparseable
        key = header_key(name)
        if key in _REJECT_COPY:
            if key == "via" and not has_via:
                try:  # the response follows the top Via back (§18.2.2): it must parse
                    parse_vias(value)
                except SipError:
                    return None
                has_via = True
            copied.append(f"{name}: {value}")
    if not has_via:
        return None
    body = "\r\n".join([f"SIP/2.0 {status} {reason}", *copied, "Content-Length: 0"])
    return (body + "\r\n\r\n").encode("utf-8", "surrogateescape")


class SipEndpoint:
    """Sockets, parsing and the single timer for one SIP core.

    Args:
        core: the pure core to drive.
        on_event: called with every non-:class:`Transmit` output, in order.
        tcp_idle_timeout: seconds before an idle TCP connection is closed.
        max_message_size: cap of one message on a TCP stream (the framer's bound).
    """

    def __init__(
        self,
        core: SipCore,
        *,
        on_event: EventHandler | None = None,
        tcp_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_message_size: int = 65535,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
    ) -> None:
        self.core = core
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.udp: list[UdpTransport] = []
        self.tcp = TcpTransport(
            self._on_message,
            self._on_send_failed,
            idle_timeout=tcp_idle_timeout,
            max_message_size=max_message_size,
            write_buffer_limit=write_buffer_limit,
        )
        self.tcp_addresses: list[tuple[str, int]] = []
        self.tls: TcpTransport | None = None  # SIP over TLS, created by listen_tls/enable_tls
        self.tls_addresses: list[tuple[str, int]] = []
        self._udp_routes: dict[tuple[str, int], UdpTransport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._closed = False
        # Called with every parsed message and its source before the core sees it; False
        # drops the message silently (trusted networks, banned sources).
        self.accept: Callable[[Request | Response | None, Peer], bool] | None = None

    # ----------------------------------------------------------------- sockets

    async def listen_udp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Bind UDP at ``host:port``; returns the bound address.  Port 0 = any free."""
        cell: list[UdpTransport] = []
        udp = await open_udp(host, port, self._udp_receiver(cell))
        cell.append(udp)
        self.udp.append(udp)
        return udp.local

    def _udp_receiver(self, cell: list[UdpTransport]) -> Callable[[bytes, Peer], None]:
        def on_datagram(data: bytes, peer: Peer) -> None:
            if len(self.udp) > 1:
                # Several sockets: answer each peer from the one it last sent to (NATs
                # and firewalls only let that 5-tuple back in).
                routes = self._udp_routes
                if len(routes) >= UDP_ROUTES_MAX:
                    routes.clear()
                routes[(peer.host, peer.port)] = cell[0]
            self._on_message(data, peer)

        return on_datagram

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Accept TCP at ``host:port``; returns the bound address."""
        address = await self.tcp.listen(host, port)
        self.tcp_addresses.append(address)
        return address

    def enable_tls(
        self, server: ssl.SSLContext | None, client: ssl.SSLContext | None
    ) -> TcpTransport:
        """The TLS transport with these contexts (created once; later calls swap the
        contexts: a reload, connections already up keep theirs)."""
        if self.tls is None:
            self.tls = TcpTransport(
                self._on_message,
                self._on_send_failed,
                idle_timeout=self.tcp.idle_timeout,
                max_message_size=self.tcp.max_message_size,
                write_buffer_limit=self.tcp.write_buffer_limit,
                tls=True,
                ssl_server=server,
                ssl_client=client,
            )
        else:
            self.tls.ssl_server, self.tls.ssl_client = server, client
        return self.tls

    async def listen_tls(self, host: str, port: int) -> tuple[str, int]:
        """Accept SIP over TLS at ``host:port`` (after :meth:`enable_tls` with a server context)."""
        if self.tls is None or self.tls.ssl_server is None:
            raise ValueError("listen_tls needs enable_tls(server_context, ...) first")
        address = await self.tls.listen(host, port)
        self.tls_addresses.append(address)
        return address

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return self.udp[0].local if self.udp else None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self.tcp_addresses[0] if self.tcp_addresses else None

    async def close(self) -> None:
        """Stop the timer, close every socket."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for udp in self.udp:
            udp.close()
        await self.tcp.close()
        if self.tls is not None:
            await self.tls.close()
        for udp in self.udp:
            await udp.closed

    # ----------------------------------------------------------------- feeding the core

    def feed(self, call: Callable[[float], Iterable[Any]]) -> None:
        """Run ``call(now)`` on the core and process what it returns.

        This is how the TU side acts too::

            endpoint.feed(lambda now: layer.send_response(txn, response, now))
        """
        self.process(call(self.loop.time()))

    def process(self, outputs: Iterable[Any]) -> None:
        """Send the transmits, deliver the events, re-arm the core's timer."""
        for output in outputs:
            if type(output) is Transmit:
                self.transmit(output)
            elif self.on_event is not None:
                try:
                    self.on_event(output)
                except Exception:
                    log.exception("event handler failed on %r", output)
        self._rearm()

    def transmit(self, output: Transmit) -> None:
        """Send one :class:`Transmit` on the transport its peer names."""
        peer = output.peer
        if peer.transport == "UDP":
            if not self.udp:
                self._on_send_failed(output.transaction)
                return
            try:
                udp = self._udp_routes.get((peer.host, peer.port)) or self._udp_for(peer.host)
                udp.sendto(output.data, peer)
            except (OSError, ValueError) as exc:
                log.debug("UDP send to %s:%s failed: %s", peer.host, peer.port, exc)
                self._on_send_failed(output.transaction)
        elif peer.transport == "TCP" or (peer.transport == "TLS" and self.tls is not None):
            stream = self.tcp if peer.transport == "TCP" else self.tls
            assert stream is not None
            txn = output.transaction
            if type(txn) is ServerTransaction and (peer.host, peer.port) not in stream.connections:
                # §18.2.2: the request's connection is gone; open one to the received
                # address and the sent-by port instead of the peer's ephemeral port.
                via = txn.request.top_via
                default = 5061 if peer.transport == "TLS" else 5060
                peer = Peer(peer.transport, peer.host, via.port or default)
            stream.send(output.data, peer, txn)
        else:
            log.warning("no %s transport; dropping message to %s:%s", peer.transport, *peer[1:])
            self._on_send_failed(output.transaction)

    def _udp_for(self, host: str) -> UdpTransport:
        """The first UDP socket of the family of ``host`` (the first socket when there is
        none of that family: its send error then fails the transaction)."""
        v6 = ":" in host
        for udp in self.udp:
            if (":" in udp.local[0]) == v6:
                return udp
        return self.udp[0]

    def _rearm(self) -> None:
        if self._closed:
            return
        deadline = self.core.get_timer()
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._deadline = None
        try:
            self.feed(self.core.handle_timer)
        except Exception:
            log.exception("core timer handling failed")
            self._rearm()

    def _on_send_failed(self, transaction: Any) -> None:
        failed = getattr(self.core, "transport_failed", None)
        if transaction is None or failed is None or self._closed:
            return
        # Deferred: a failure may surface inside process() for the same core.
        self.loop.call_soon(self._report_failure, failed, transaction)

    def _report_failure(self, failed: Callable[[Any, float], Iterable[Any]], txn: Any) -> None:
        if not self._closed:
            self.feed(lambda now: failed(txn, now))

    def _on_message(self, data: bytes, peer: Peer) -> None:
        if not data.strip():
            return  # CRLF keep-alives on UDP (RFC 5626 §4.4.1 is for streams; be lenient)
        try:
            message = parse_message(data)
        except SipError as exc:
            log.debug("unparseable message from %s:%s: %s", peer.host, peer.port, exc)
            if self.accept is not None and not self.accept(None, peer):
                return
            reply = stateless_reject(data, exc.status, exc.reason)
            if reply is not None:
                self.transmit(Transmit(reply, peer))
            return
        if self.accept is not None and not self.accept(message, peer):
            return
        try:
            self.feed(lambda now: self.core.receive(message, peer, now))
        except SipError as exc:
            self._reject(message, data, peer, exc)

    def _reject(self, message: Request | Response, data: bytes, peer: Peer, exc: SipError) -> None:
        log.debug("rejecting message from %s:%s: %s", peer.host, peer.port, exc)
        if not isinstance(message, Request) or message.method == "ACK":
            return
        try:
            _ = message.top_via  # a response must be able to follow it back (§18.2.2)
            response = make_response(message, exc.status, exc.reason, headers=exc.headers)
            reply: bytes | None = response.to_bytes()
        except SipError:
            reply = stateless_reject(data, exc.status, exc.reason)
        if reply is not None:
            self.transmit(Transmit(reply, peer))
