"""A scripted FreeSWITCH-like Event Socket peer, byte for byte as mod_event_socket answers,
for clients that must work against FreeSWITCH itself (``switchboard console``).

Run as a process: ``python -m tests.support.esl.fs_peer <port>`` prints ``READY`` and
serves until killed. It knows ``auth ClueCon``, ``api status``, ``api show api as json``
(a FreeSWITCH-sized command list), ``api show channels as json`` (one channel), ``api
uuid_kill <uuid>``, ``log <level>`` (then a ``log/data`` line at each level up to it,
FreeSWITCH's exact frame), ``event plain …`` (then one CHANNEL_ANSWER, plain-encoded),
``nolog``, ``noevents``, ``exit``; anything else gets ``-ERR <cmd> Command not found!``.
"""

from __future__ import annotations

import asyncio
import json
import sys

UUID = "0c1e2f3a-1111-4222-8333-444455556666"
API = ("status", "show", "version", "uuid_kill", "uuid_bridge", "uuid_transfer", "sofia",
       "originate", "conference", "fsctl", "reloadxml", "uuid_dump", "hupall")  # fmt: skip
LEVEL = {"console": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
         "info": 6, "debug": 7}  # fmt: skip
NAMES = ("CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: str) -> bytes:
    raw = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(raw) + raw


def log_data(level: int, text: str) -> bytes:
    body = f"2026-12-07 09:00:00.000000 [{NAMES[level]}] switch_core.c:{100 + level} {text}\n"
    raw = body.encode()
    head = (
        f"Content-Type: log/data\nContent-Length: {len(raw)}\nLog-Level: {level}\n"
        "Text-Channel: 3\nLog-File: switch_core.c\nLog-Func: switch_core_session_run\n"
        f"Log-Line: {100 + level}\nUser-Data: {UUID}\n\n"
    )
    return head.encode() + raw


def event_answer() -> bytes:
    inner = (
        "Event-Name: CHANNEL_ANSWER\nCore-UUID: 6a7b1f2e-0000-4000-8000-000000000001\n"
        "FreeSWITCH-Hostname: fs1\nEvent-Sequence: 4711\n"
        f"Unique-ID: {UUID}\nChannel-Name: sofia/internal/1000%40192.0.2.10\n"
        "Caller-Caller-ID-Number: 1000\n\n"
    ).encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) + inner


def answer(command: str) -> bytes:
    name, _, args = command[4:].partition(" ")
    if name == "status":
        return api_response(
            "UP 0 years, 0 days, 1 hour, 2 minutes, 3 seconds\nFreeSWITCH (Version 1.10.12) is ready\n"
        )
    if name == "show" and args == "api as json":
        rows = [{"name": n, "description": "", "syntax": "", "ikey": "mod_commands"} for n in API]
        return api_response(json.dumps({"row_count": len(rows), "rows": rows}) + "\n")
    if name == "show" and args == "channels as json":
        rows = [{"uuid": UUID, "direction": "inbound", "name": "sofia/internal/1000@192.0.2.10"}]
        return api_response(json.dumps({"row_count": 1, "rows": rows}) + "\n")
    if name == "uuid_kill":
        return api_response("+OK\n" if args == UUID else "-ERR No such channel!\n")
    return api_response(f"-ERR {name} Command not found!\n")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"Content-Type: auth/request\n\n")
    authed = False
    try:
        while True:
            packet = (await reader.readuntil(b"\n\n")).decode().strip()
            command = packet.split("\n", 1)[0]
            if command.startswith("exit"):
                writer.write(reply("+OK bye"))
                break
            if not authed:
                authed = command == "auth ClueCon"
                writer.write(reply("+OK accepted" if authed else "-ERR invalid"))
                if not authed:
                    break
            elif command.startswith("api "):
                writer.write(answer(command))
            elif command.startswith("log"):
                word = command[3:].strip() or "debug"
                level = int(word) if word.isdigit() else LEVEL.get(word.lower(), -1)
                if not 0 <= level <= 7:
                    writer.write(reply("-ERR invalid log level"))
                    continue
                writer.write(reply(f"+OK log level {word} [{level}]"))
                for n in range(level + 1):
                    writer.write(log_data(n, f"fs-peer line at level {NAMES[n].lower()}"))
            elif command.startswith("nolog"):
                writer.write(reply("+OK no longer logging"))
            elif command.startswith("event"):
                writer.write(reply("+OK event listener enabled plain"))
                writer.write(event_answer())
            elif command.startswith("noevents"):
                writer.write(reply("+OK no longer listening for events"))
            else:
                writer.write(reply("-ERR command not found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
