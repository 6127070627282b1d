"""The media node's Event Socket server, wire-compatible with FreeSWITCH inbound ESL.

Existing ESL clients (go-eventsocket, Genesis, greenswitch, modesl, the dialer) use it
unchanged. The byte-level rules live in the pure package :mod:`switchboard.esl`
(framing, commands, encoding, subscriptions, originate parsing); this module is the
asyncio adapter: connections, authentication, the event queues and the command loop. The
API commands themselves are :class:`switchboard.media.api_commands.ApiCommands`; the
``loopback/`` endpoint it installs is :mod:`switchboard.media.loopback`.

Theory of operation (``mod_event_socket.c``; docs/esl.md, "Protocol behaviour"):

* On connect: an allow-list check (``text/rude-rejection`` then the goodbye notice when
  refused), then ``Content-Type: auth/request``. Until ``auth <password>`` succeeds only
  ``auth``/``userauth``/``exit`` are understood; a connection that has not authenticated
  within ``auth_timeout`` seconds (FreeSWITCH: 25) is dropped. A wrong password gets
  ``-ERR invalid``, the goodbye notice, and the close.
* Commands on one connection run strictly serially: exactly one reply per command, in
  order. ``api`` runs inside the connection (it blocks that connection only — every
  connection is its own task, so none can stall another); ``bgapi`` replies at once and
  fires BACKGROUND_JOB when its command finishes, always after its own reply.
* Events are pushed by the switch's event bus into a per-connection **bounded** queue of
  already-serialised frames (each event is serialised once per format, however many
  connections want it). The queue is written only while no command is being processed,
  so a reply is never interleaved with, or preceded by, events queued after its command.
  A full queue loses events; after ``max_lost`` losses the listener is killed with
  FreeSWITCH's ``killed listener because of lost events`` notice — a slow or dead
  subscriber is disconnected instead of growing memory. The transport's own write buffer
  is bounded by ``write_buffer_limit`` (we await ``drain``).
* Calls started by a connection never depend on it: ``api originate`` and every bgapi
  job run as their own tasks, so a client that disconnects mid-originate does not cancel
  the call (it completes, fires its events and is recorded).
* HEARTBEAT every ``heartbeat`` seconds (20 by default) unless the switch runs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchboard.esl import wire
from switchboard.esl.commands import (
    Api,
    Auth,
    BgApi,
    Connect,
    DivertEvents,
    EventSubscribe,
    Exit,
    FilterAdd,
    FilterDelete,
    FilterSyntaxError,
    GetVar,
    Linger,
    Log,
    MyEvents,
    NixEvent,
    NoEvents,
    NoLinger,
    NoLog,
    Resume,
    SendEvent,
    SendMsg,
    Unknown,
    UserAuth,
    parse_command,
)
from switchboard.esl.framing import (
    DEFAULT_MAX_HEADER_BYTES,
    MAX_CONTENT_LENGTH,
    FramingError,
    PacketReader,
)
from switchboard.esl.outbound import SocketTargetError, parse_socket_target
from switchboard.esl.output import (
    format_uptime,
)
from switchboard.esl.subscription import Subscription, event_id
from switchboard.media.api_commands import ApiCommands
from switchboard.media.causes import Cause, parse_cause
from switchboard.media.core import VERSION, NoSuchChannel, Session, Switch, new_uuid
from switchboard.media.events import Event
from switchboard.media.loopback import LoopbackChannels
from switchboard.observability.log import current_call_id

log = logging.getLogger(__name__)

DEFAULT_PORT = 8021
DEFAULT_PASSWORD = "ClueCon"
AUTH_TIMEOUT = 25.0  # seconds, read_packet's first-packet timeout (mod_event_socket.c:2734)
HEARTBEAT_INTERVAL = 20.0  # seconds, event-heartbeat-interval (switch_core.c:1816)
MAX_LOST = 500  # MAX_MISSED, mod_event_socket.c:386-410
WRITE_BATCH = 256 * 1024  # bytes of queued events coalesced into one transport write
KILL_GRACE = 2.0  # seconds a killed listener's last bytes may take before the socket is reset
CONNECT_TIMEOUT = 5.0  # seconds to reach an outbound (socket application) program
UNAUTH_MAX_BODY = 64 * 1024  # a body before auth is never legitimate: keep it small
# FreeSWITCH log levels for ``log <level>`` (switch_log.c).
LOG_LEVELS = {
    "console": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4,
    "notice": 5, "info": 6, "debug": 7,
}  # fmt: skip


# FreeSWITCH's level names (switch_log.c LEVELS) and where Python's levels fall among them.
FS_LEVEL_NAMES = ("CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")


def fs_level(levelno: int) -> int:
    """A Python log level as a FreeSWITCH one: CRITICAL→2 CRIT, ERROR→3 ERR,
    WARNING→4, INFO→6, DEBUG→7 (NOTICE, 5, has no Python counterpart)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def python_level(level: int) -> int:
    """The lowest Python level whose records a listener at FreeSWITCH ``level`` receives."""
    if level >= 7:
        return logging.DEBUG
    if level >= 5:
        return logging.INFO
    if level == 4:
        return logging.WARNING
    if level == 3:
        return logging.ERROR
    return logging.CRITICAL


def log_frame(record: logging.LogRecord) -> tuple[int, bytes]:
    """A log record as FreeSWITCH's ``log/data`` frame: the line fs_cli prints
    (``2026-12-07 07:10:31.123456 [INFO] event_socket.py:123 text``) as the body."""
    level = fs_level(record.levelno)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    call_id = getattr(record, "call_id", None) or current_call_id() or ""
    body = (
        f"{stamp}.{int(record.msecs * 1000):06d} [{FS_LEVEL_NAMES[level]}] "
        f"{record.filename}:{record.lineno} {text}\n"
    )
    frame = wire.log_data(
        body, level, file=record.filename, func=record.funcName, line=record.lineno,
        user_data=call_id,
    )  # fmt: skip
    return level, frame


class _LogTap(logging.Handler):
    """Hands the node's log records to the connections that asked with ``log <level>``."""

    def __init__(self, server: EventSocketServer) -> None:
        super().__init__(logging.DEBUG)
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.server.log_listeners:
            return
        try:
            item = log_frame(record)
        except Exception:  # a broken record must not break the caller's logging
            return
        if threading.get_ident() == self.thread:
            self.server.offer_log(*item)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.loop.call_soon_threadsafe(self.server.offer_log, *item)


@dataclass(frozen=True)
class EslUser:
    """``userauth`` credentials (FreeSWITCH: a directory user's esl-password and
    esl-allowed-events / esl-allowed-api / esl-allowed-log). None: everything allowed."""

    password: str
    allowed_events: frozenset[str] | None = None
    allowed_api: frozenset[str] | None = None
    allowed_log: bool = True


@dataclass(frozen=True)
class EslSettings:
    """Everything the server needs; built from the ``[esl]`` config section."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    password: str = DEFAULT_PASSWORD
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # empty tuple: allow everyone
    ssl: ssl.SSLContext | None = None
    auth_timeout: float = AUTH_TIMEOUT
    heartbeat: float = HEARTBEAT_INTERVAL  # 0 disables the server's HEARTBEAT
    max_queue: int = 10_000  # events waiting per connection
    max_lost: int = MAX_LOST
    write_buffer_limit: int = 1 << 20  # bytes handed to the kernel-side transport buffer
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_bytes: int = MAX_CONTENT_LENGTH
    users: Mapping[str, EslUser] = field(default_factory=dict)  # "user@domain" → credentials

    @classmethod
    def from_config(cls, section: Any, node_number: int = 1) -> EslSettings:
        """From :class:`switchboard.config.EslSection` (``[esl]``); an empty ``listen``
        means 127.0.0.1:802N for node ``media-N``."""
        listen = section.listen or f"127.0.0.1:{DEFAULT_PORT - 1 + node_number}"
        host, _, port = listen.rpartition(":")
        context = None
        if section.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(section.tls_cert, section.tls_key or None)
        return cls(
            host=host.strip("[]"),
            port=int(port),
            password=section.password,
            allow=tuple(section.allow),
            ssl=context,
            auth_timeout=section.auth_timeout,
            heartbeat=section.heartbeat,
            max_queue=section.max_queue,
            users={
                key: EslUser(
                    u.password,
                    _allowed(u.allowed_events, event_id),
                    _allowed(u.allowed_api, lambda name: name.lower()),
                    u.allowed_log,
                )
                for key, u in getattr(section, "users", {}).items()
            },
        )


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class _SessionEnded:
    """Queue marker: the controlled channel hung up (linger or disconnect)."""

    uuid: str
    channel_name: str


class _Closed(Exception):
    """The connection is finished; leave the command loop."""


# Commands of an outbound connection without ``full`` (mod_event_socket.c parse_command).
_SINGLE_CHANNEL = (
    Exit, FilterAdd, FilterDelete, FilterSyntaxError, Resume, Connect, GetVar, MyEvents,
    DivertEvents, SendMsg,
)  # fmt: skip


def _allowed(names: Iterable[str], norm: Callable[[str], str | None]) -> frozenset[str] | None:
    """An allow-list from configuration; None when it contains ``all``."""
    out = set()
    for name in names:
        if name.lower() == "all":
            return None
        n = norm(name)
        if n:
            out.add(n)
    return frozenset(out)


def _is_log(item: bytes | _SessionEnded) -> bool:
    return isinstance(item, bytes) and item.startswith(b"Content-Type: log/data\n")


def _true(value: str | None) -> bool:
    """switch_true: yes/on/true/t/enabled/allow, or a non-zero number."""
    if value is None:
        return False
    v = value.strip().lower()
    return v in ("yes", "on", "true", "t", "enabled", "enable", "allow") or (
        v.lstrip("-").isdigit() and int(v) != 0
    )


@dataclass(eq=False)
class EslConnection:
    """One client connection: the command loop plus the event writer."""

    server: EventSocketServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str = ""
    authenticated: bool = False
    busy: bool = False
    closing: bool = False
    lost: int = 0
    log_level: int | None = None
    linger: bool = False
    linger_time: int | None = None
    session_channel_name: str = ""
    queue: deque[bytes | _SessionEnded] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # outbound mode (the ``socket`` application): we connected to the program
    outbound: bool = False
    full: bool = True  # outbound without ``full``: the single-channel command set only
    async_mode: bool = True  # outbound without ``async``: sendmsg waits for its application
    resume: bool = False  # ``resume``: the dialplan continues when the program leaves
    seen_packet: bool = False
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    # userauth restrictions (None: everything)
    allowed_events: frozenset[str] | None = None
    allowed_api: frozenset[str] | None = None
    allowed_log: bool = True

    def __post_init__(self) -> None:
        st = self.server.settings
        self.sub = Subscription()
        self.packets = PacketReader(
            max_header_bytes=st.max_header_bytes,
            max_body_bytes=min(st.max_body_bytes, UNAUTH_MAX_BODY),
        )

    # --- event side ----------------------------------------------------------------

    def offer(self, event: Event, encoded: wire.EncodedEvent) -> None:
        """Called synchronously from the event bus: queue the frame or count a loss."""
        if self.closing or not self.authenticated:
            return
        sub = self.sub
        if self.allowed_events is not None and event.name not in self.allowed_events:
            pass  # userauth: not this user's to see
        elif sub.active and sub.wants(event):
            if len(self.queue) >= self.server.settings.max_queue:
                self.lost += 1
                self.server.lost_events += 1
                if self.lost > self.server.settings.max_lost:
                    self.kill(wire.KILLED_LOST_EVENTS)
                return
            self.queue.append(encoded.frame(sub.fmt))
            self.wake.set()
        if (
            sub.session_uuid is not None
            and event.name == "CHANNEL_HANGUP"
            and event.headers.get("Unique-ID") == sub.session_uuid
        ):
            self.queue.append(
                _SessionEnded(sub.session_uuid, event.headers.get("Channel-Name", ""))
            )
            self.wake.set()

    def offer_log(self, level: int, frame: bytes) -> None:
        """A log line for a connection that asked with ``log <level>`` (same queue as events)."""
        if self.closing or self.log_level is None or level > self.log_level:
            return
        if len(self.queue) >= self.server.settings.max_queue:
            self.lost += 1  # counted, but a log line never kills the listener by itself
            return
        self.queue.append(frame)
        self.wake.set()

    def kill(self, body: str) -> None:
        """Disconnect at once (slow consumer or shutdown): notice, then close; never wait."""
        if self.closing:
            return
        log.warning(
            "ESL %s: disconnecting: %s (lost %d events)", self.peer, body.strip(), self.lost
        )
        self.closing = True
        self.queue.clear()
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            transport.write(wire.disconnect_notice(body, self.sub.session_uuid))
            transport.close()
        # The command loop leaves now; a dead peer never drains, so the buffer (bounded by
        # write_buffer_limit plus the notice) is dropped after a short grace period.
        self.reader.feed_eof()
        self.server.forget(self)
        asyncio.get_running_loop().call_later(KILL_GRACE, transport.abort)
        self.wake.set()

    async def _write_events(self) -> None:
        """Write queued events whenever no command is in progress (as mod_event_socket does)."""
        transport = self.writer.transport
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            while self.queue and not self.busy and not self.closing:
                item = self.queue.popleft()
                if isinstance(item, _SessionEnded):
                    await self._session_ended(item)
                    continue
                # Coalesce what is queued into one write: one syscall per burst, not per event.
                batch = [item]
                size = len(item)
                while self.queue and size < WRITE_BATCH and isinstance(self.queue[0], bytes):
                    frame = self.queue.popleft()
                    assert isinstance(frame, bytes)
                    batch.append(frame)
                    size += len(frame)
                transport.write(b"".join(batch) if len(batch) > 1 else item)
                if transport.get_write_buffer_size() > self.server.settings.write_buffer_limit:
                    await self.writer.drain()

    async def _session_ended(self, marker: _SessionEnded) -> None:
        if self.linger:
            self.writer.write(
                wire.linger_notice(marker.uuid, marker.channel_name, self.linger_time)
            )
            if self.linger_time is not None:
                asyncio.get_running_loop().call_later(self.linger_time, self._linger_expired)
        else:
            await self.close(controlled=True)

    def _linger_expired(self) -> None:
        if not self.closing:
            task = asyncio.ensure_future(self.close(controlled=True))
            self.server.jobs.add(task)
            task.add_done_callback(self.server.jobs.discard)

    async def close(self, *, controlled: bool = False, notice: bool = True) -> None:
        if self.closing:
            return
        self.closing = True
        self.wake.set()
        with contextlib.suppress(Exception):
            if notice:
                # With a controlled session the notice names it (send_disconnect, :631-660).
                self.writer.write(wire.disconnect_notice(wire.GOODBYE, self.sub.session_uuid))
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    # --- command side --------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        writer_task = loop.create_task(self._write_events())
        deadline = loop.time() + self.server.settings.auth_timeout
        try:
            if not self.outbound:  # we dialled out: the connection is pre-authenticated
                self.writer.write(wire.AUTH_REQUEST)
            while not self.closing:
                # the first packet (auth, or connect in outbound mode) within auth_timeout
                waiting = not (self.authenticated and self.seen_packet)
                timeout = deadline - loop.time() if waiting else None
                if timeout is not None and timeout <= 0:
                    log.info(
                        "ESL %s: no auth within %.0fs, closing",
                        self.peer,
                        self.server.settings.auth_timeout,
                    )
                    break
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), timeout)
                except TimeoutError:
                    log.info("ESL %s: no auth within timeout, closing", self.peer)
                    break
                if not data:
                    break
                error: FramingError | None = None
                try:
                    packets = self.packets.feed(data)
                except FramingError as exc:
                    packets, error = exc.packets, exc
                for packet in packets:
                    self.seen_packet = True
                    self.busy = True
                    try:
                        await self.handle(parse_command(packet), packet.command)
                        # A client that pipelines commands but never reads its replies
                        # must not grow our buffer: wait for it like for events.
                        await self._drain()
                    finally:
                        self.busy = False
                        self.wake.set()
                if error is not None:
                    # FreeSWITCH drops such a connection without a reply (mod_event_socket.c).
                    log.warning("ESL %s: dropping connection: %s", self.peer, error)
                    break
        except _Closed:
            pass
        except (ConnectionError, OSError) as exc:
            log.debug("ESL %s: connection error: %s", self.peer, exc)
        finally:
            if not self.closing:
                await self.close(notice=False)
            writer_task.cancel()
            with contextlib.suppress(BaseException):
                await writer_task

    def reply(self, text: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self.writer.write(wire.command_reply(text, extra))

    async def handle(self, cmd: Any, text: str) -> None:
        if not self.authenticated:
            await self._handle_unauthenticated(cmd)
            return
        if self.outbound and not self.full and not isinstance(cmd, _SINGLE_CHANNEL):
            self.reply("-ERR command not found")  # socket without ``full`` (§1.7)
            return
        match cmd:
            case Exit():
                self.reply("+OK bye")
                await self.close()
                raise _Closed
            case Auth() | UserAuth():
                self.reply("-ERR command not found")
            case Api(command=name) | BgApi(command=name) if (
                self.allowed_api is not None and name.lower() not in self.allowed_api
            ):
                self.reply("-ERR permission denied")  # a command/reply, even for api
            case Log() if not self.allowed_log:
                self.reply("-ERR permission denied")
            case Api(command=name, args=args):
                body = await self.server.run_api(name, args)
                self.writer.write(wire.api_response(body))
            case BgApi(command=name, args=args, job_uuid=job):
                job_uuid = job or new_uuid()
                self.writer.write(wire.bgapi_reply(job_uuid))
                self.server.start_job(name, args, job_uuid, self.sub.session_uuid or "")
            case EventSubscribe(fmt=fmt, names=names):
                self.reply(self.sub.subscribe(fmt, names))
            case NixEvent(names=names):
                self.reply(self.sub.nix(names))
            case NoEvents():
                self.reply(self.sub.clear())
            case FilterAdd(header=header, value=value):
                self.reply(self.sub.add_filter(header, value))
            case FilterDelete(header=header, value=value):
                self.reply(self.sub.delete_filter(header, value))
            case FilterSyntaxError():
                self.reply("-ERR invalid syntax")
            case MyEvents(uuid=uuid, fmt=fmt):
                self.reply(self._myevents(uuid, fmt))
            case Connect() if self.outbound:
                self._connect()
            case Linger(seconds=seconds):
                if self.sub.session_uuid is None:
                    self.reply("-ERR not controlling a session")
                else:
                    self.linger, self.linger_time = True, seconds
                    self.reply(
                        f"+OK will linger {seconds} seconds" if seconds else "+OK will linger"
                    )
            case NoLinger():
                if self.sub.session_uuid is None:
                    self.reply("-ERR not controlling a session")
                else:
                    self.linger = False
                    self.reply("+OK will not linger")
            case DivertEvents(value=value):
                if self.sub.session_uuid is None:
                    self.reply("-ERR not controlling a session.")
                elif value not in ("on", "off"):
                    self.reply("-ERR missing value.")
                else:
                    self.reply(
                        "+OK events diverted" if value == "on" else "+OK events not diverted"
                    )
            case GetVar(name=name):
                value = (
                    self.server.switch.getvar(self.sub.session_uuid, name)
                    if self.sub.session_uuid
                    else None
                )
                self.reply(value or "-ERR command not found")
            case Resume():
                if self.sub.session_uuid:
                    self.resume = True
                    self.server.switch.setvar(self.sub.session_uuid, "socket_resume", "true")
                    self.reply("+OK")
                else:
                    self.reply("-ERR command not found")
            case SendMsg():
                self.reply(await self._sendmsg(cmd))
            case SendEvent(name=name, headers=headers, body=body):
                self.reply(self._sendevent(name, headers, body))
            case Log(level=level):
                self.reply(self._log(level))
            case NoLog():
                if self.log_level is None:
                    self.reply("-ERR not loging")  # (sic) mod_event_socket.c:2457-2464
                else:
                    self.log_level = None
                    self.server.log_listeners.discard(self)
                    self.server.log_levels_changed()
                    # lines already queued are dropped, as FreeSWITCH flushes its log queue
                    self.queue = deque(f for f in self.queue if not _is_log(f))
                    self.reply("+OK no longer logging")
            case Connect() | Unknown():
                self.reply("-ERR command not found")
            case _:
                self.reply("-ERR command not found")

    async def _handle_unauthenticated(self, cmd: Any) -> None:
        match cmd:
            case Auth(password=password):
                if password == self.server.settings.password:
                    self.authenticated = True
                    self.packets.max_body_bytes = self.server.settings.max_body_bytes
                    self.reply("+OK accepted")
                    return
                log.warning("ESL %s: authentication failed", self.peer)
                self.reply("-ERR invalid")
                await self.close()
                raise _Closed
            case UserAuth(credentials=credentials):
                user = self._userauth(credentials)
                if user is not None:
                    return
                log.warning("ESL %s: userauth failed", self.peer)
                self.reply("-ERR invalid")
                await self.close()
                raise _Closed
            case Exit():
                self.reply("+OK bye")
                await self.close()
                raise _Closed
            case _:
                self.reply("-ERR command not found")

    def _userauth(self, credentials: str) -> EslUser | None:
        """``userauth <user>@<domain>:<password>`` (mod_event_socket.c:1766-1950): the
        "~" reply lists what the user may do."""
        who, colon, password = credentials.partition(":")
        user = self.server.settings.users.get(who) if colon and "@" in who else None
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        self.authenticated = True
        self.packets.max_body_bytes = self.server.settings.max_body_bytes
        self.allowed_events = user.allowed_events
        self.allowed_api = user.allowed_api
        self.allowed_log = user.allowed_log
        listed = lambda names: "all" if names is None else ",".join(sorted(names))  # noqa: E731
        self.reply(
            "+OK accepted",
            [
                ("Allowed-Events", listed(user.allowed_events)),
                ("Allowed-API", listed(user.allowed_api)),
                ("Allowed-LOG", "true" if user.allowed_log else "false"),
            ],
        )
        return user

    async def _drain(self) -> None:
        if self.writer.transport.get_write_buffer_size() > self.server.settings.write_buffer_limit:
            await self.writer.drain()

    def _myevents(self, uuid: str | None, fmt: str | None) -> str:
        if self.sub.only_session:
            return "-ERR aready enabled."  # (sic) mod_event_socket.c:2063-2139
        if self.outbound and self.sub.session_uuid is not None:
            # outbound: the channel we were started for (a uuid given is not looked at)
            self.sub.bind_session(self.sub.session_uuid, fmt)
            return "+OK Events Enabled"
        if not uuid:
            return "-ERR invalid uuid"
        channel = self.server.switch.channel(uuid)
        if channel is None:
            return "-ERR invalid uuid"
        self.sub.bind_session(uuid, fmt)
        self.session_channel_name = channel.name
        return "+OK Events Enabled"

    async def _sendmsg(self, cmd: SendMsg) -> str:
        """``sendmsg [<uuid>]`` (switch_ivr_parse_event; mod_event_socket.c:2180-2233).

        ``execute`` queues the application on the channel; every queued application runs
        after the previous one has finished, in order — FreeSWITCH guarantees that only with
        ``event-lock: true``. The reply comes at once, except on an outbound connection
        without ``async`` (and without an ``async: true`` header), where it waits for the
        application to finish. ``hangup`` ends the call at once, unless it carries
        ``event-lock`` or an event-locked application of this channel is still queued or
        running: then it waits its turn like an application.
        """
        sw = self.server.switch
        uuid = cmd.uuid or self.sub.session_uuid
        if not uuid or sw.channel(uuid) is None:
            return f"-ERR invalid session id [{uuid or ''}]"
        command = (cmd.header("call-command") or "").lower()
        own = self.outbound and uuid == self.sub.session_uuid
        wait = own and not self.async_mode and not _true(cmd.header("async"))
        locked = _true(cmd.header("event-lock")) or _true(cmd.header("event-lock-pri"))
        session = sw.session(uuid)
        pending: set[asyncio.Future[str]] = (
            session.data.setdefault("esl_locked", set()) if session is not None else set()
        )
        try:
            if command == "execute":
                app = cmd.header("execute-app-name") or ""
                arg = cmd.header("execute-app-arg") or cmd.body
                loops = cmd.header("loops") or "1"
                fut = sw.execute(
                    uuid,
                    app,
                    arg,
                    event_uuid=cmd.header("event-uuid"),
                    loops=int(loops) if loops.isdigit() else 1,
                )
                if locked:
                    pending.add(fut)
                    fut.add_done_callback(pending.discard)
                if wait:
                    await fut
            elif command == "hangup":
                cause = cmd.header("hangup-cause") or "NORMAL_CLEARING"
                if locked or pending:
                    fut = sw.execute(uuid, "hangup", cause)
                    if wait:
                        await fut
                else:
                    sw.hangup(uuid, parse_cause(cause, Cause.NORMAL_CLEARING))
            elif command:
                log.warning("ESL %s: sendmsg call-command %r is not supported", self.peer, command)
        except NoSuchChannel:
            return f"-ERR invalid session id [{uuid}]"
        return "+OK"

    def _connect(self) -> None:
        """Outbound ``connect``: the channel's data as a serialised CHANNEL_DATA event."""
        sw = self.server.switch
        uuid = self.sub.session_uuid or ""
        channel = sw.channel(uuid)
        headers: dict[str, str] = {}
        if channel is not None:
            headers = dict(sw.make_event("CHANNEL_DATA", channel=channel).headers)
        self.writer.write(wire.connect_reply(headers, async_mode=self.async_mode, full=self.full))
        self.connected.set()

    def _sendevent(self, name: str, headers: tuple[tuple[str, str], ...], body: str) -> str:
        sw = self.server.switch
        event_name = event_id(name.split()[0]) or "CUSTOM"
        extra = {k: v for k, v in headers if k.lower() not in ("content-length", "content-type")}
        subclass = extra.pop("Event-Subclass", None)
        event_uuid = new_uuid()
        extra["Event-UUID"] = event_uuid
        sw.fire(sw.make_event(event_name, extra, body=body or None, subclass=subclass))
        return f"+OK {event_uuid}"

    def _log(self, level: str | None) -> str:
        """``log [level]``: from now on the node's log lines up to that level arrive as
        ``log/data`` frames, interleaved with events (mod_event_socket.c:2396-2430)."""
        if level is None:
            self.log_level = 7
            self.server.log_listeners.add(self)
            self.server.log_levels_changed()
            return "+OK log level  [7]"
        text = level.strip().lower()
        n = int(text) if text.isdigit() else LOG_LEVELS.get(text)
        if n is None or not 0 <= n <= 7:
            return "-ERR invalid log level"
        self.log_level = n
        self.server.log_listeners.add(self)
        self.server.log_levels_changed()
        return f"+OK log level {level.strip()} [{n}]"


# --------------------------------------------------------------------------- server


class EventSocketServer:
    """Serve the Event Socket for one :class:`Switch`.

    ``await server.start()`` binds (``settings.port`` 0 picks a free port, see
    :attr:`port`); ``await server.close()`` says goodbye to every client and stops.
    """

    def __init__(self, switch: Switch, settings: EslSettings | None = None) -> None:
        self.switch = switch
        self.settings = settings or EslSettings()
        self.api = ApiCommands(switch)
        self.connections: set[EslConnection] = set()
        self.log_listeners: set[EslConnection] = set()
        self._log_tap: _LogTap | None = None
        # while a listener wants more detail than the node logs: the root logger's own
        # level, and the handlers pinned to it so the node's log output stays as it was
        self._root_level: int | None = None
        self._pinned: list[logging.Handler] = []
        self.lost_events = 0
        self.jobs: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.settings.allow]
        if "loopback" not in switch.endpoints:  # originate loopback/<exten> (mod_loopback)
            switch.endpoints["loopback"] = LoopbackChannels(switch)
        # the ``socket`` dialplan application belongs to the Event Socket (mod_event_socket)
        switch.apps.setdefault("socket", self.socket_app)
        self._started_at = time.monotonic()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._unsubscribe = self.switch.events.subscribe(
            self._on_event, headers=lambda: bool(self.connections)
        )
        self._log_tap = _LogTap(self)
        logging.getLogger().addHandler(self._log_tap)
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            ssl=self.settings.ssl,
            limit=1 << 16,
            backlog=512,
        )
        if self.settings.heartbeat > 0:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeats())
        log.info("ESL listening on %s:%d", self.settings.host, self.port)

    async def close(self) -> None:
        if self._log_tap is not None:
            logging.getLogger().removeHandler(self._log_tap)
            self._log_tap = None
        self.log_listeners.clear()
        self.log_levels_changed()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.kill(wire.SHUTDOWN)
        if self._handlers:  # let every connection's task finish its cleanup
            await asyncio.wait(list(self._handlers), timeout=3.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3.0)
            self._server = None

    async def __aenter__(self) -> EventSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connections -----------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if not self._networks:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._networks)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        host = str(peername[0])
        if not self._allowed(host):
            log.warning("ESL: connection from %s refused by the allow-list", host)
            writer.write(wire.RUDE_REJECTION + wire.disconnect_notice())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 2.0)
            writer.close()
            return
        transport = writer.transport
        transport.set_write_buffer_limits(high=self.settings.write_buffer_limit)
        conn = EslConnection(self, reader, writer, peer=f"{host}:{peername[1]}")
        self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await conn.run()
        finally:
            self.forget(conn)
            if task is not None:
                self._handlers.discard(task)

    # --- outbound mode: the ``socket`` application ------------------------------------

    async def socket_app(self, s: Session, arg: str) -> str | None:
        """``socket HOST[:PORT][|HOST[:PORT]…] [async] [full]``: hand the call to a program.

        We connect to the program (hosts tried in order, CONNECT_TIMEOUT each), which then
        speaks the Event Socket from the other side: pre-authenticated, its first command
        (normally ``connect``) within ``auth_timeout``. Once connected the channel is parked
        under the program's control: applications it sends with ``sendmsg`` run in order.
        When the program leaves (``exit``, closing the socket, dying) the application that
        is running finishes, queued ones still run, then the call ends NORMAL_CLEARING —
        or, after ``resume`` (or with the variable ``socket_resume=true``), the dialplan
        continues after ``socket``. A program that cannot be reached leaves the call to the
        next dialplan action (``socket`` completes with ``-ERR``).
        """
        try:
            target = parse_socket_target(arg)
        except SocketTargetError as exc:
            log.error("channel %s: %s", s.uuid, exc)
            return f"-ERR {exc}"
        sw = self.switch
        ch = s.channel
        opened: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        errors = []
        for host, port in target.hosts:
            ch.set_var("socket_host", host)
            try:
                opened = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
                break
            except (OSError, TimeoutError) as exc:
                errors.append(
                    f"{host}:{port}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else 'timeout'}"
                )
        if opened is None:
            log.error(
                "channel %s: socket: cannot reach the program (%s)", s.uuid, "; ".join(errors)
            )
            return "-ERR Socket Error: " + "; ".join(errors)
        reader, writer = opened
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=self.settings.write_buffer_limit)
        peer = writer.get_extra_info("peername") or ("?", 0)
        conn = EslConnection(
            self,
            reader,
            writer,
            peer=f"outbound {peer[0]}:{peer[1]}",
            authenticated=True,
            outbound=True,
            full=target.full,
            async_mode=target.async_mode,
        )
        conn.packets.max_body_bytes = self.settings.max_body_bytes
        conn.sub.session_uuid = s.uuid
        conn.session_channel_name = ch.name
        self.connections.add(conn)
        task = asyncio.get_running_loop().create_task(self._run_outbound(conn, s))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        log.info("channel %s: socket connected to %s:%s", s.uuid, peer[0], peer[1])
        connected = asyncio.ensure_future(conn.connected.wait())
        ended = asyncio.ensure_future(s.ended.wait())
        try:
            await asyncio.wait({connected, ended, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            ended.cancel()
        if s.is_hungup or task.done():
            return self._after_program(s, conn)
        # Parked under the program's control (socket_function's switch_ivr_park): the
        # applications it queues run here, one after another, until it leaves.
        s.parked = True
        sw._fire("CHANNEL_PARK", s)
        while not s.is_hungup and s.parked and not task.done():
            getter = asyncio.ensure_future(s.queue.get())
            ended = asyncio.ensure_future(s.ended.wait())
            try:
                await asyncio.wait({getter, ended, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                await sw.run_command(s, getter.result())
        # the program has gone: what it queued still runs (switch_ivr_parse_all_events)
        while not s.is_hungup and not s.queue.empty():
            await sw.run_command(s, s.queue.get_nowait())
        return self._after_program(s, conn)

    async def _run_outbound(self, conn: EslConnection, s: Session) -> None:
        try:
            await conn.run()
        finally:
            self.forget(conn)

    def _after_program(self, s: Session, conn: EslConnection) -> str | None:
        """The program has gone: the call leaves its control (see :meth:`socket_app`)."""
        if s.parked:
            s.parked = False
            self.switch._fire("CHANNEL_UNPARK", s)
        if s.is_hungup:
            return None
        resume = conn.resume or _true(s.channel.variables.get("socket_resume"))
        log.info(
            "channel %s: the socket program left; %s",
            s.uuid,
            "the dialplan continues" if resume else "the call ends",
        )
        if not resume:
            s.apps.clear()  # nothing left to run: the channel hangs up NORMAL_CLEARING
        return None

    def forget(self, conn: EslConnection) -> None:
        """A connection has ended: no more events or log lines for it."""
        self.connections.discard(conn)
        if conn in self.log_listeners:
            self.log_listeners.discard(conn)
            self.log_levels_changed()

    def log_levels_changed(self) -> None:
        """Let the node's loggers produce what the listeners asked for, as FreeSWITCH does
        (``log debug`` shows DEBUG lines even when the node logs INFO): the root logger's
        level goes down to the most detailed listener's, and every handler without a level
        of its own is pinned to the old one, so the node's own log output does not change.
        All restored when the last such listener leaves."""
        root = logging.getLogger()
        levels = [c.log_level for c in self.log_listeners if c.log_level is not None]
        want = python_level(max(levels)) if levels else None
        base = self._root_level if self._root_level is not None else root.level
        if want is not None and base != logging.NOTSET and want < base:
            if self._root_level is None:
                self._root_level = base
                self._pinned = [
                    h for h in root.handlers if h is not self._log_tap and h.level == logging.NOTSET
                ]
                for h in self._pinned:
                    h.setLevel(base)
            root.setLevel(want)
        elif self._root_level is not None:
            root.setLevel(self._root_level)
            for h in self._pinned:
                if h.level == self._root_level:  # unless someone set it since
                    h.setLevel(logging.NOTSET)
            self._pinned = []
            self._root_level = None

    def offer_log(self, level: int, frame: bytes) -> None:
        for conn in list(self.log_listeners):
            if conn.closing:
                self.log_listeners.discard(conn)
            else:
                conn.offer_log(level, frame)

    def _on_event(self, event: Event) -> None:
        if not self.connections:
            return
        encoded = wire.EncodedEvent(event)
        for conn in list(self.connections):
            conn.offer(event, encoded)

    # --- api / bgapi -----------------------------------------------------------------

    async def run_api(self, name: str, args: str) -> str:
        """Run an API command as its own task so a disconnecting client cannot cancel it."""
        task = asyncio.get_running_loop().create_task(self.api.execute(name, args))
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        return await asyncio.shield(task)

    def start_job(self, name: str, args: str, job_uuid: str, owner: str) -> None:
        async def job() -> None:
            body = await self.api.execute(name, args)
            headers = {"Job-UUID": job_uuid, "Job-Owner-UUID": owner, "Job-Command": name}
            if args:
                headers["Job-Command-Arg"] = args
            self.switch.fire(self.switch.make_event("BACKGROUND_JOB", headers, body=body))

        task = asyncio.get_running_loop().create_task(job())
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    # --- heartbeat -------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            # The switch may run its own HEARTBEAT loop (Switch.start); never fire twice.
            if getattr(self.switch, "_heartbeat", None) is not None:
                continue
            self.switch.fire(self.heartbeat_event())

    def heartbeat_event(self) -> Event:
        f = self.api.status_figures()
        return self.switch.make_event(
            "HEARTBEAT",
            {
                "Event-Info": "System Ready",
                "Up-Time": format_uptime(f.uptime_us),
                "FreeSWITCH-Version": VERSION,
                "Uptime-msec": str(f.uptime_us // 1000),
                "Session-Count": str(f.sessions),
                "Max-Sessions": str(f.max_sessions),
                "Session-Per-Sec": str(f.sps_max),
                "Session-Per-Sec-Last": str(f.sps_last),
                "Session-Per-Sec-Max": str(f.sps_peak),
                "Session-Per-Sec-FiveMin": str(f.sps_peak_5min),
                "Session-Since-Startup": str(f.sessions_since_startup),
                "Session-Peak-Max": str(f.peak),
                "Session-Peak-FiveMin": str(f.peak_5min),
                "Idle-CPU": f"{f.idle_cpu:.6f}",
            },
        )


async def serve(switch: Switch, settings: EslSettings | None = None) -> EventSocketServer:
    """Start an Event Socket server for ``switch`` and return it (call ``close()`` later)."""
    server = EventSocketServer(switch, settings)
    await server.start()
    return server


__all__ = [
    "EslConnection",
    "EslSettings",
    "EventSocketServer",
    "serve",
]
