"""A scripted inbound Event Socket peer for the dialer's logic tests.

It speaks the real wire format (greeting, auth, command/reply, text/event-plain with URL-encoded
values, BACKGROUND_JOB) and plays a scripted outcome per dialed number, so retry, resume and
failover logic can be tested deterministically. End-to-end tests use the real media node.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import quote


@dataclass
class Script:
    """Per-number behaviour: ("answer", secs) | ("busy",) | ("noanswer",) | ("fail",) | ("hang",)."""

    default: tuple = ("answer", 0.05)
    by_number: dict[str, tuple] = field(default_factory=dict)

    def for_number(self, number: str) -> tuple:
        return self.by_number.get(number, self.default)


def event(headers: dict[str, str], body: str = "") -> bytes:
    lines = "".join(f"{k}: {quote(v, safe='')}\n" for k, v in headers.items())
    if body:
        lines += f"Content-Length: {len(body.encode())}\n\n{body}"
    else:
        lines += "\n"
    data = lines.encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(data) + data


class EslPeer:
    def __init__(self, script: Script, password: str = "ClueCon") -> None:
        self.script, self.password = script, password
        self.originates: list[tuple[str, str, float]] = []  # (number, uuid, loop time)
        self.live: set[str] = set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> EslPeer:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                block = (await reader.readuntil(b"\n\n")).decode()
                cmd, *hdr_lines = block.strip("\n").split("\n")
                hdrs = dict(h.split(": ", 1) for h in hdr_lines if ": " in h)
                if cmd.startswith("auth "):
                    ok = cmd[5:] == self.password
                    text = "+OK accepted" if ok else "-ERR invalid"
                    writer.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())
                    if not ok:
                        writer.close()
                        return
                elif cmd.startswith("event "):
                    self.subscribers.add(writer)
                    writer.write(
                        b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
                    )
                elif cmd.startswith("bgapi originate "):
                    job = hdrs["Job-UUID"]
                    writer.write(
                        f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n".encode()
                    )
                    asyncio.get_running_loop().create_task(self._originate(writer, cmd, job))
                elif cmd.startswith("api uuid_exists "):
                    body = "true" if cmd.split()[-1] in self.live else "false"
                    writer.write(
                        f"Content-Type: api/response\nContent-Length: {len(body)}\n\n{body}".encode()
                    )
                else:
                    writer.write(
                        b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
                    )
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.subscribers.discard(writer)

    def broadcast(self, data: bytes) -> None:
        """Events go to every subscribed connection, as FreeSWITCH does."""
        for w in list(self.subscribers):
            if not w.is_closing():
                w.write(data)

    async def _originate(self, w: asyncio.StreamWriter, cmd: str, job: str) -> None:
        m = re.search(r"origination_uuid=([0-9a-f-]+).*sofia/gateway/[^/]+/(\+?\d+)", cmd)
        assert m, cmd
        uuid, number = m.group(1), m.group(2)
        self.originates.append((number, uuid, asyncio.get_running_loop().time()))
        kind, *args = self.script.for_number(number)
        base = {"Unique-ID": uuid, "Caller-Destination-Number": number}
        self.live.add(uuid)
        try:
            if kind == "answer":
                await asyncio.sleep(0.01)
                self.broadcast(event({"Event-Name": "CHANNEL_ANSWER", **base}))
                w.write(event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": job}, f"+OK {uuid}\n"))
                await asyncio.sleep(args[0])
                billsec = str(max(1, round(args[0])))
                self.broadcast(
                    event(
                        {
                            "Event-Name": "CHANNEL_HANGUP_COMPLETE",
                            "Hangup-Cause": "NORMAL_CLEARING",
                            "variable_billsec": billsec,
                            **base,
                        }
                    )
                )
            elif kind in ("busy", "noanswer"):
                cause = "USER_BUSY" if kind == "busy" else "NO_ANSWER"
                await asyncio.sleep(0.01)
                self.broadcast(
                    event(
                        {
                            "Event-Name": "CHANNEL_HANGUP_COMPLETE",
                            "Hangup-Cause": cause,
                            "variable_billsec": "0",
                            **base,
                        }
                    )
                )
                w.write(event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": job}, f"-ERR {cause}\n"))
            elif kind == "fail":
                w.write(
                    event(
                        {"Event-Name": "BACKGROUND_JOB", "Job-UUID": job},
                        "-ERR UNALLOCATED_NUMBER\n",
                    )
                )
            elif kind == "hang":
                await asyncio.sleep(3600)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.live.discard(uuid)
