"""A lean asyncio inbound Event Socket client (FreeSWITCH ESL), enough for the dialer.

It speaks only the documented inbound protocol, so it works against a Switchboard media node
and a real FreeSWITCH alike: ``auth``, ``event plain``, ``bgapi`` with a ``Job-UUID`` header
(so the result is matched to the originate even when replies of other jobs interleave), and
``api``. Replies to commands arrive in order (one per command), so pending commands are a FIFO
of futures; events go to the ``on_event`` callback.

Why not a library: the maintained PyPI clients are either gevent-based (greenswitch) or a
framework pulling Redis, OpenTelemetry and JWT (genesis); the framing is a header block and a
Content-Length body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

log = logging.getLogger(__name__)

MAX_FRAME = 4 * 1024 * 1024


class EslError(Exception):
    """Connection, authentication or protocol failure talking to an Event Socket."""


@dataclass
class Frame:
    headers: dict[str, str]
    body: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass
class EslEvent:
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)


def parse_headers(block: str, *, decode: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        if not line:
            continue
        name, _, value = line.partition(":")
        value = value.strip()
        headers[name.strip()] = unquote(value) if decode else value
    return headers


def parse_event_plain(text: str) -> EslEvent:
    """The body of a ``text/event-plain`` frame: URL-encoded headers, blank line, optional body."""
    block, _, rest = text.partition("\n\n")
    headers = parse_headers(block, decode=True)
    length = int(headers.get("Content-Length", "0") or 0)
    return EslEvent(headers, rest[:length] if length else "")


class EslClient:
    """One authenticated inbound connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[EslEvent], None] | None = None,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._pending: deque[asyncio.Future[Frame]] = deque()
        self.on_event = on_event
        self.on_frame: Callable[[Frame], None] | None = None  # other frames (log/data)
        self.closed = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        password: str,
        *,
        timeout: float = 5.0,
        on_event: Callable[[EslEvent], None] | None = None,
    ) -> EslClient:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise EslError(f"cannot connect to Event Socket {host}:{port}: {exc}") from None
        client = cls(reader, writer, on_event)
        try:
            greeting = await asyncio.wait_for(client._read_frame(), timeout)
            if greeting.content_type != "auth/request":
                raise EslError(f"{host}:{port} is not an Event Socket (got {greeting.headers})")
            client._task = asyncio.create_task(client._read_loop())
            reply = await asyncio.wait_for(client.command(f"auth {password}"), timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            client.close()
            raise EslError(
                f"Event Socket {host}:{port} did not complete the handshake: {exc!r}"
            ) from None
        if not reply.headers.get("Reply-Text", "").startswith("+OK"):
            client.close()
            raise EslError(
                f"Event Socket {host}:{port} refused authentication: {reply.headers.get('Reply-Text')}"
            )
        return client

    async def command(self, line: str, headers: dict[str, str] | None = None) -> Frame:
        """Send one command (with optional extra header lines) and return its reply."""
        return await self.send(line, headers)

    def send(self, line: str, headers: dict[str, str] | None = None) -> asyncio.Future[Frame]:
        """Write one command now; the returned future gets its reply (replies come in order)."""
        extra = "".join(f"\n{k}: {v}" for k, v in (headers or {}).items())
        if (
            "\n" in line
            or "\n\n" in extra
            or any("\n" in k + v for k, v in (headers or {}).items())
        ):
            raise ValueError("an ESL command is one line, header names and values too")
        if self.closed.done():
            raise EslError("Event Socket connection is closed")
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self._writer.write((line + extra).encode() + b"\n\n")
        return fut

    async def api(self, cmd: str) -> str:
        return (await self.command(f"api {cmd}")).body

    async def bgapi(self, cmd: str, job_uuid: str) -> str:
        """Start a background job; returns the Reply-Text (``+OK Job-UUID: ...``)."""
        return (await self.bgapi_start(cmd, job_uuid)).headers.get("Reply-Text", "")

    def bgapi_start(self, cmd: str, job_uuid: str) -> asyncio.Future[Frame]:
        """Write ``bgapi`` now; the future gets its command/reply. The result comes later as a
        BACKGROUND_JOB event with this Job-UUID."""
        return self.send(f"bgapi {cmd}", {"Job-UUID": job_uuid})

    async def _read_frame(self) -> Frame:
        block = await self._reader.readuntil(b"\n\n")
        headers = parse_headers(block.decode("utf-8", "replace"), decode=False)
        length = int(headers.get("Content-Length", "0") or 0)
        if length > MAX_FRAME:
            raise EslError(f"frame of {length} bytes exceeds {MAX_FRAME}")
        body = (await self._reader.readexactly(length)).decode("utf-8", "replace") if length else ""
        return Frame(headers, body)

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self._read_frame()
                ctype = frame.content_type
                if ctype in ("command/reply", "api/response"):
                    if self._pending:
                        fut = self._pending.popleft()
                        if not fut.done():
                            fut.set_result(frame)
                elif ctype == "text/event-plain":
                    if self.on_event is not None:
                        try:
                            self.on_event(parse_event_plain(frame.body))
                        except Exception:  # a bad handler must not kill the connection
                            log.exception("event handler failed")
                elif ctype in ("text/disconnect-notice", "text/rude-rejection"):
                    break
                elif self.on_frame is not None:
                    try:
                        self.on_frame(frame)
                    except Exception:  # a bad handler must not kill the connection
                        log.exception("frame handler failed")
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            EslError,
            ValueError,
            asyncio.LimitOverrunError,
        ) as exc:
            log.debug("event socket read loop ended: %r", exc)
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(EslError("Event Socket connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()
        self._fail_pending()
