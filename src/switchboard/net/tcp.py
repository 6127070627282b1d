"""SIP over TCP (RFC 3261 §18): framed streams, connection reuse, idle timeout.

Connections are keyed by the remote (host, port).  An accepted connection is keyed by
its source address, which is the peer a request read from it carries, so the
response to that request leaves on the same connection (§18.2.2).  Sending to a peer
with no connection opens one (§18.1.1) and queues the bytes until it is up.

Buffers are bounded on both sides: the :class:`~switchboard.sip.framer.StreamFramer`
caps an incoming message (a stream that overflows it cannot be resynchronised and is
closed), and a connection whose peer stops reading is closed once its write buffer
passes ``write_buffer_limit``.  A CRLFCRLF keep-alive ping is answered with CRLF
(RFC 5626 §4.4.1).  Connections idle for ``idle_timeout`` seconds are closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from switchboard.net.tls import HANDSHAKE_TIMEOUT
from switchboard.net.udp import unbracket
from switchboard.sip.errors import FramingError
from switchboard.sip.framer import StreamFramer
from switchboard.sip.transaction import Peer

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, Peer], None]
SendFailedHandler = Callable[[Any], None]

DEFAULT_IDLE_TIMEOUT = 120.0
"""Seconds without traffic before a connection is closed (Kamailio's tcp_connection_lifetime)."""
DEFAULT_WRITE_BUFFER_LIMIT = 1 << 20
"""Bytes queued to a peer that does not read before its connection is dropped."""
CONNECT_TIMEOUT = 5.0
"""Seconds to establish an outgoing connection before reporting a transport error."""

Key = tuple[str, int]


class TcpConnection(asyncio.Protocol):
    """One SIP-carrying TCP connection, in either direction."""

    def __init__(self, owner: TcpTransport, *, outbound: bool) -> None:
        self.owner = owner
        self.outbound = outbound
        self.framer = StreamFramer(max_size=owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer = Peer(owner.name, "", 0)
        self.last_activity = owner.loop.time()
        # Names in the verified client certificate of an accepted TLS connection (mutual
        # TLS per trunk); None: none presented (or not TLS).
        self.cert_names: frozenset[str] | None = None

    @property
    def key(self) -> Key:
        return (self.peer.host, self.peer.port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        host = f"[{host}]" if ":" in host else host
        owner = self.owner
        self.peer = Peer(owner.name, host, int(port))
        self.last_activity = owner.loop.time()
        self.transport = raw
        if owner.name == "TLS" and not self.outbound:
            # accepted by the TLS accept loop: the handshake is done (connect_accepted_socket)
            owner.handshakes += 1
            self.cert_names = certificate_names(raw.get_extra_info("peercert"))
        owner._register(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        framer = self.framer
        try:
            messages = framer.feed(data)
        except FramingError as exc:
            # The stream cannot be resynchronised (§18.3): drop the connection.
            log.debug("TCP %s:%s framing error (%s); closing", *self.key, exc)
            self.close()
            return
        if framer.pings:
            # RFC 5626 §4.4.1: each CRLFCRLF ping is answered with a CRLF pong.
            self.write(b"\r\n" * framer.take_pings())
        for message in messages:
            try:
                self.owner.on_message(message, self.peer)
            except Exception:  # the process never dies on a peer's bytes
                log.exception("TCP message from %s:%s crashed the handler; dropped", *self.key)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection closed) if it cannot be sent."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        self.last_activity = self.owner.loop.time()
        if transport.get_write_buffer_size() > self.owner.write_buffer_limit:
            log.warning("TCP %s:%s does not read; write buffer over limit, closing", *self.key)
            transport.abort()
            return False
        return True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def certificate_names(cert: Any) -> frozenset[str] | None:
    """The subject common names and subjectAltName DNS names and IP addresses of a peer
    certificate as :meth:`ssl.SSLSocket.getpeercert` gives it (only ever a certificate
    the handshake verified); None when the peer presented none."""
    if not cert:
        return None
    names = {v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"}
    names.update(v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address"))
    return frozenset(names)


class TcpTransport:
    """Every TCP connection of one SIP endpoint, plus its listening sockets."""

    def __init__(
        self,
        on_message: MessageHandler,
        on_send_failed: SendFailedHandler,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_message_size: int = 65535,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
        tls: bool = False,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: this transport carries SIP over TLS (Peer transport ``TLS``);
        ``ssl_server`` is the context of accepted connections, ``ssl_client`` (or an entry
        of :attr:`client_contexts` for one peer) the context of dialled ones. Both may be
        replaced at any time: a reload; connections already up keep their context."""
        self.loop = asyncio.get_running_loop()
        self.name = "TLS" if tls else "TCP"
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.client_contexts: dict[Key, ssl.SSLContext] = {}
        self.handshakes = 0
        self.handshake_failures = 0
        self.on_handshake_failure: Callable[[], None] | None = None  # e.g. a metric's inc
        self.on_message = on_message
        self.on_send_failed = on_send_failed
        self.idle_timeout = idle_timeout
        self.max_message_size = max_message_size
        self.write_buffer_limit = write_buffer_limit
        self.connections: dict[Key, TcpConnection] = {}
        self._connecting: dict[Key, list[tuple[bytes, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._listeners: list[tuple[socket.socket, asyncio.Task[None]]] = []  # TLS
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Accept connections on ``host:port`` (0 picks a free port)."""
        if self.name == "TLS":
            return self._listen_tls(host, port)
        server = await self.loop.create_server(
            lambda: TcpConnection(self, outbound=False), unbracket(host), port
        )
        self._servers.append(server)
        self._arm_sweeper()
        sockname = server.sockets[0].getsockname()
        return (sockname[0], sockname[1])

    def _listen_tls(self, host: str, port: int) -> tuple[str, int]:
        """TLS: our own accept loop, each socket handed to ``connect_accepted_socket``
        with the current server context. Its handshake is awaited in a task of its own,
        so a failure is counted and logged, never fatal — and the loop (asyncio or
        uvloop) owns the socket from the first byte: the client's ClientHello cannot
        reach a plain protocol first (with ``start_tls`` after accepting, uvloop handed
        it to the plain protocol and both ends waited for each other)."""
        bare = unbracket(host)
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bare, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        task = self.loop.create_task(self._accept_loop(sock))
        self._listeners.append((sock, task))
        self._arm_sweeper()
        sockname = sock.getsockname()
        return (sockname[0], sockname[1])

    async def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, addr = await self.loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and the like: keep accepting after a pause
                log.warning("TLS accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = self.loop.create_task(self._accept_tls(conn, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _accept_tls(self, conn: socket.socket, addr: Any) -> None:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        ctx = self.ssl_server
        if ctx is None:  # pragma: no cover - listen_tls needs a server context
            conn.close()
            return
        try:
            await self.loop.connect_accepted_socket(
                lambda: TcpConnection(self, outbound=False),
                conn,
                ssl=ctx,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # any handshake failure: count, log, close; never fatal
            self.handshake_failed((host, int(addr[1])), exc)
            conn.close()

    def send(self, data: bytes, peer: Peer, token: Any = None) -> None:
        """Send on the connection to ``peer``, opening one if needed.  ``token`` is
        handed to ``on_send_failed`` when the bytes cannot be delivered."""
        key = (peer.host, peer.port)
        conn = self.connections.get(key)
        if conn is not None:
            if not conn.write(data):
                self.on_send_failed(token)
            return
        pending = self._connecting.get(key)
        if pending is not None:
            pending.append((data, token))
            return
        if self._closed:
            self.on_send_failed(token)
            return
        self._connecting[key] = [(data, token)]
        task = self.loop.create_task(self._connect(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, key: Key) -> None:
        kwargs: dict[str, Any] = {}
        if self.name == "TLS":
            ctx = self.client_contexts.get(key, self.ssl_client)
            if ctx is None:
                log.warning("no TLS client context; cannot reach %s:%s", *key)
                for _, token in self._connecting.pop(key, []):
                    self.on_send_failed(token)
                return
            # §26.3.1: the certificate must name the host dialled (an IP matches an IP SAN).
            kwargs = {
                "ssl": ctx,
                "server_hostname": unbracket(key[0]),
                "ssl_handshake_timeout": HANDSHAKE_TIMEOUT,
            }
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + (HANDSHAKE_TIMEOUT if kwargs else 0)):
                _, conn = await self.loop.create_connection(
                    lambda: TcpConnection(self, outbound=True),
                    unbracket(key[0]),
                    key[1],
                    **kwargs,
                )
        except Exception as exc:  # refused, timed out, or a failed handshake: never fatal
            if isinstance(exc, ssl.SSLError | ssl.CertificateError) or (
                kwargs and not isinstance(exc, ConnectionRefusedError)
            ):
                self.handshake_failed(key, exc)
            else:
                log.debug("%s connect to %s:%s failed: %s", self.name, *key, exc)
            for _, token in self._connecting.pop(key, []):
                self.on_send_failed(token)
            return
        if kwargs:
            self.handshakes += 1
        # Register under the address we dialled: that is the peer the core names.
        self.connections[key] = conn
        for data, token in self._connecting.pop(key, []):
            if not conn.write(data):
                self.on_send_failed(token)
        self._arm_sweeper()

    def peer_names(self, key: Key) -> frozenset[str] | None:
        """Names in the verified client certificate of the connection from ``key``."""
        conn = self.connections.get(key)
        return conn.cert_names if conn is not None else None

    def handshake_failed(self, key: Key, exc: BaseException) -> None:
        """Count and log a failed TLS handshake (a scanner, an expired certificate, a peer
        speaking plain SIP to the TLS port): the connection goes, the process stays."""
        self.handshake_failures += 1
        if self.on_handshake_failure is not None:
            self.on_handshake_failure()
        log.info("TLS handshake with %s:%s failed: %s", key[0], key[1], exc or type(exc).__name__)

    def _register(self, conn: TcpConnection) -> None:
        self.connections.setdefault(conn.key, conn)

    def _unregister(self, conn: TcpConnection) -> None:
        for key in [k for k, c in self.connections.items() if c is conn]:
            del self.connections[key]

    def _arm_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = self.loop.call_later(self.idle_timeout / 4, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = self.loop.time() - self.idle_timeout
        for conn in list(self.connections.values()):
            if conn.last_activity < deadline:
                log.debug("TCP %s:%s idle for %.0f s; closing", *conn.key, self.idle_timeout)
                conn.close()
        if self.connections or self._servers or self._listeners:
            self._arm_sweeper()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            server.close()
        for sock, task in self._listeners:
            task.cancel()
            sock.close()
        self._listeners.clear()
        for conn in list(self.connections.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
