"""A strict, minimal ESL client for tests: reads frames exactly as go-eventsocket/modesl do.

It checks what the strictest clients need (go-eventsocket, modesl): bare LF only, header names
are MIME tokens, Content-Length is exact. Every read has a bounded timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class Frame:
    headers: dict[str, str]
    body: bytes = b""
    raw: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def text(self) -> str:
        return self.body.decode()

    def event(self) -> dict[str, str]:
        """The event's headers (plain: URL-decoded like modesl; json: parsed)."""
        if self.content_type == "text/event-json":
            return json.loads(self.body)
        assert self.content_type == "text/event-plain", self.content_type
        head, sep, body = self.body.partition(b"\n\n")
        assert sep, "inner event block must end with a blank line"
        out: dict[str, str] = {}
        for line in head.decode("ascii").split("\n"):
            name, _, value = line.partition(": ")
            out[name] = unquote(value, errors="strict")
        if "Content-Length" in out:
            assert len(body) == int(out["Content-Length"])
            out["_body"] = body.decode()
        return out


@dataclass
class EslClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: list[Frame] = field(default_factory=list)

    @classmethod
    async def connect(
        cls, port: int, password: str | None = "ClueCon", ssl_ctx: ssl.SSLContext | None = None
    ) -> EslClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx), 5
        )
        client = cls(reader, writer)
        greeting = await client.read()
        assert greeting.raw == b"Content-Type: auth/request\n\n"
        if password is not None:
            reply = await client.command(f"auth {password}")
            assert reply.headers["Reply-Text"] == "+OK accepted", reply.headers
        return client

    async def read(self, timeout: float = 5.0) -> Frame:
        if self.pending:
            return self.pending.pop(0)
        head = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), timeout)
        assert b"\r" not in head, "server sent CR"
        headers: dict[str, str] = {}
        for line in head[:-2].decode().split("\n"):
            name, sep, value = line.partition(": ")
            assert sep and name and " " not in name and ":" not in name, line
            headers[name] = value
        body = b""
        if "Content-Length" in headers:
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers["Content-Length"])), timeout
            )
        return Frame(headers, body, head + body)

    def send(self, text: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        lines = [text] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\n".join(lines) + "\n\n").encode() + body)

    async def reply_frame(self, types: tuple[str, ...], timeout: float) -> Frame:
        """Next frame of one of ``types``; events seen meanwhile are kept for ``event()``."""
        skipped: list[Frame] = []
        try:
            while True:
                frame = await self._read_raw(timeout)
                if frame.content_type in types:
                    return frame
                skipped.append(frame)
        finally:
            self.pending = self.pending + skipped  # older frames first

    async def _read_raw(self, timeout: float) -> Frame:
        saved, self.pending = self.pending, []
        try:
            return await self.read(timeout)
        finally:
            self.pending = saved + self.pending

    async def command(self, text: str, headers: dict[str, str] | None = None,
                      timeout: float = 5.0) -> Frame:  # fmt: skip
        self.send(text, headers)
        return await self.reply_frame(("command/reply",), timeout)

    async def api(self, text: str, timeout: float = 10.0) -> str:
        self.send(f"api {text}")
        frame = await self.reply_frame(("api/response",), timeout)
        return frame.text

    async def event(
        self, name: str | None = None, timeout: float = 5.0, **match: str
    ) -> dict[str, str]:
        """Next event (optionally of ``name`` with matching headers), skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, f"no {name} event within {timeout}s"
            frame = await self.read(remaining)
            if not frame.content_type.startswith("text/event-"):
                continue
            ev = frame.event()
            if name and ev.get("Event-Name") != name:
                continue
            if all(ev.get(k.replace("_", "-")) == v for k, v in match.items()):
                return ev

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
