"""``switchboard console``: an interactive console over an Event Socket, in the manner of
FreeSWITCH's ``fs_cli`` — for a Switchboard media node or FreeSWITCH itself.

* A line is an API command (``status``, ``show channels``, ``uuid_kill <uuid>``): sent as
  ``api <line>``, its answer printed. Lines starting with ``/`` are the console's own:
  ``/event [plain] <NAMES|ALL>``, ``/noevents``, ``/nixevent <NAMES>``, ``/filter <H> <V>``,
  ``/log <level>``, ``/nolog``, ``/help``, ``/exit`` (also ``/quit``, ``/bye``, ``...``).
* History in ``~/.switchboard_console_history``; Tab completes API command names (the
  node's own list from ``show api``, else FreeSWITCH's usual ones), console commands, log
  levels, event names, and live channel UUIDs (``show channels as json``) after any
  command that takes one.
* Log lines (``log/data``) are coloured by level as fs_cli colours them; events are printed
  header by header. Both appear above the prompt without breaking the line being typed.
* When the node goes away the console says so and reconnects (every second); once back it
  asks again for the same log level, events and filters. Ctrl-D (or ``/exit``) leaves.
* ``-x COMMAND`` (repeatable) runs API commands one-shot, prints their answers and exits:
  0 when every answer is a success, 1 when one starts with ``-ERR``/``-USAGE``, 3 when the
  Event Socket cannot be reached or refuses the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.dialer.esl_client import EslClient, EslError, EslEvent, Frame
from switchboard.esl.subscription import EVENT_NAMES
from switchboard.lifecycle import ExitCode

LEVELS = ("console", "alert", "crit", "err", "warning", "notice", "info", "debug")
# fs_cli's colours by log level (fs_cli.c COLORS): red for the alarming ones, magenta for
# warnings, cyan notice, green info, yellow debug.
LEVEL_COLOURS = (
    "\x1b[1;31m", "\x1b[1;31m", "\x1b[1;31m", "\x1b[0;31m",
    "\x1b[0;35m", "\x1b[0;36m", "\x1b[0;32m", "\x1b[0;33m",
)  # fmt: skip
EVENT_COLOUR = "\x1b[0;36m"
RESET = "\x1b[0m"
CONSOLE_COMMANDS = (
    "/help", "/exit", "/quit", "/bye", "/event", "/noevents", "/nixevent", "/filter",
    "/log", "/nolog",
)  # fmt: skip
# FreeSWITCH's everyday API commands: completion when the peer has no ``show api``.
KNOWN_API = (
    "status", "show", "version", "uptime", "hostname", "originate", "hupall", "reloadxml",
    "global_getvar", "global_setvar", "create_uuid", "uuid_kill", "uuid_bridge",
    "uuid_transfer", "uuid_broadcast", "uuid_record", "uuid_getvar", "uuid_setvar",
    "uuid_answer", "uuid_pre_answer", "uuid_park", "uuid_break", "uuid_exists", "uuid_hold",
    "uuid_send_dtmf", "uuid_dump", "sofia", "conference", "fsctl", "load", "reload",
)  # fmt: skip
SHOW_ITEMS = ("channels", "calls", "api", "registrations", "status")
RECONNECT_EVERY = 1.0  # seconds between attempts while the node is away
HISTORY = Path("~/.switchboard_console_history")


def is_error(answer: str) -> bool:
    """An API answer that reports a failure (what ``-x`` turns into exit code 1)."""
    return answer.lstrip().startswith(("-ERR", "-USAGE"))


def takes_uuid(command: str) -> bool:
    return command.startswith("uuid_") or command in ("getvar", "setvar")


@dataclass
class ConsoleState:
    """What the console asked the node for; asked again after a reconnect."""

    log_level: str | None = None
    events: list[str] = field(default_factory=list)  # full `event ...` command lines
    filters: list[str] = field(default_factory=list)  # full `filter ...` command lines


class EslConsole:
    """One console: the connection (kept alive), its state, and the output formatting."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        colour: bool = True,
        log_level: str | None = "info",
        write: object = None,
    ) -> None:
        self.host, self.port, self.password = host, port, password
        self.colour = colour
        self.state = ConsoleState(log_level=log_level)
        self.client: EslClient | None = None
        self.api_names: list[str] = list(KNOWN_API)
        self._uuids: tuple[float, list[str]] = (0.0, [])
        self._write = write or (lambda text: print(text, end="", flush=True))
        self.connected = asyncio.Event()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def out(self, text: str) -> None:
        self._write(text if text.endswith("\n") else text + "\n")  # type: ignore[operator]

    def paint(self, colour: str, text: str) -> str:
        return f"{colour}{text}{RESET}" if self.colour else text

    # --- connection -----------------------------------------------------------------

    async def connect(self, timeout: float = 5.0) -> EslClient:
        client = await EslClient.connect(
            self.host, self.port, self.password, timeout=timeout, on_event=self.on_event
        )
        client.on_frame = self.on_frame
        self.client = client
        await self._ask_again(client)
        self.connected.set()
        with contextlib.suppress(EslError):
            await self._load_api_names(client)
        return client

    async def _ask_again(self, client: EslClient) -> None:
        if self.state.log_level is not None:
            await client.command(f"log {self.state.log_level}")
        for line in (*self.state.events, *self.state.filters):
            await client.command(line)

    async def _load_api_names(self, client: EslClient) -> None:
        """The peer's own command list (``show api as json``), for completion."""
        body = await client.api("show api as json")
        try:
            rows = json.loads(body).get("rows", [])
        except (ValueError, AttributeError):
            return
        names = sorted({str(r.get("name", "")) for r in rows if isinstance(r, dict)} - {""})
        if names:
            self.api_names = names

    async def keep_connected(self) -> None:
        """Reconnect whenever the connection drops (the node restarted): say so, retry."""
        while True:
            client = self.client
            if client is not None:
                await asyncio.shield(client.closed)
                self.connected.clear()
                self.client = None
                self.out(
                    self.paint(LEVEL_COLOURS[3], f"disconnected from {self.where}; reconnecting…")
                )
            while self.client is None:
                try:
                    await self.connect(timeout=2.0)
                    self.out(self.paint(LEVEL_COLOURS[6], f"reconnected to {self.where}"))
                except EslError:
                    await asyncio.sleep(RECONNECT_EVERY)

    # --- what arrives -----------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if frame.content_type == "log/data":
            level = frame.headers.get("Log-Level", "7")
            n = int(level) if level.isdigit() and int(level) < len(LEVEL_COLOURS) else 7
            self.out(self.paint(LEVEL_COLOURS[n], frame.body.rstrip("\n")))

    def on_event(self, event: EslEvent) -> None:
        lines = [f"[EVENT] {event.name}"]
        lines += [f"{k}: {v}" for k, v in event.headers.items()]
        if event.body:
            lines += ["", event.body.rstrip("\n")]
        self.out(self.paint(EVENT_COLOUR, "\n".join(lines)) + "\n")

    # --- commands ---------------------------------------------------------------------

    async def api(self, line: str) -> str:
        if self.client is None:
            return f"-ERR not connected to {self.where} (reconnecting…)\n"
        try:
            return await self.client.api(line)
        except EslError as exc:
            return f"-ERR {exc}\n"

    async def command(self, line: str) -> str:
        if self.client is None:
            return f"-ERR not connected to {self.where} (reconnecting…)"
        try:
            return (await self.client.command(line)).headers.get("Reply-Text", "")
        except EslError as exc:
            return f"-ERR {exc}"

    async def run_line(self, line: str) -> bool:
        """Handle one typed line; False when the console should end."""
        text = line.strip()
        if not text:
            return True
        if text in ("/exit", "/quit", "/bye", "...") or text == "exit":
            return False
        if not text.startswith("/"):
            self.out(await self.api(text))
            return True
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        match word:
            case "/help":
                self.out(HELP)
            case "/event":
                words = rest.split() or ["ALL"]
                fmt = "plain"  # every header is printed, whatever the format asked for
                if words[0].lower() in ("plain", "json", "xml"):
                    if words[0].lower() != "plain":
                        self.out(f"(events are asked for as plain: {words[0]} is shown the same)")
                    words = words[1:] or ["ALL"]
                reply = await self.command(f"event {fmt} {' '.join(words)}")
                if reply.startswith("+OK"):
                    self.state.events.append(f"event {fmt} {' '.join(words)}")
                self.out(reply)
            case "/noevents":
                self.state.events.clear()
                self.out(await self.command("noevents"))
            case "/nixevent":
                reply = await self.command(f"nixevent {rest}")
                if reply.startswith("+OK"):
                    self.state.events.append(f"nixevent {rest}")
                self.out(reply)
            case "/filter":
                reply = await self.command(f"filter {rest}")
                if reply.startswith("+OK"):
                    self.state.filters.append(f"filter {rest}")
                self.out(reply)
            case "/log":
                level = rest or "debug"
                reply = await self.command(f"log {level}")
                if reply.startswith("+OK"):
                    self.state.log_level = level
                self.out(reply)
            case "/nolog":
                self.state.log_level = None
                self.out(await self.command("nolog"))
            case _:
                self.out(f"-ERR unknown console command {word} (/help lists them)")
        return True

    # --- completion -------------------------------------------------------------------

    async def live_uuids(self) -> list[str]:
        """UUIDs of the node's channels now (cached for a second while Tab is pressed)."""
        stamp, cached = self._uuids
        if time.monotonic() - stamp < 1.0:
            return cached
        body = await self.api("show channels as json")
        try:
            rows = json.loads(body).get("rows", [])
        except (ValueError, AttributeError):
            rows = []
        uuids = [str(r["uuid"]) for r in rows if isinstance(r, dict) and r.get("uuid")]
        self._uuids = (time.monotonic(), uuids)
        return uuids

    async def candidates(self, before: str) -> list[str]:
        """Words that may complete the last word of ``before`` (the text left of the cursor)."""
        words = before.split(" ")
        current, previous = words[-1], [w for w in words[:-1] if w]
        if not previous:
            pool: Iterable[str] = (*CONSOLE_COMMANDS, *self.api_names)
        elif previous[0] == "/log":
            pool = LEVELS
        elif previous[0] in ("/event", "/nixevent"):
            pool = ("plain", "ALL", *EVENT_NAMES)
        elif previous[0] == "show" and len(previous) == 1:
            pool = SHOW_ITEMS
        elif takes_uuid(previous[0]) and len(previous) == 1:
            pool = await self.live_uuids()
        else:
            return []
        return sorted({p for p in pool if p.startswith(current)})


HELP = """\
Type an API command (status, show channels, uuid_kill <uuid>, …) or:
  /event [plain] <NAMES|ALL>        subscribe to events      /noevents   stop them
  /nixevent <NAMES>                 drop some events          /filter <Header> <value>
  /log <level>                      stream the node's log (console alert crit err warning
                                    notice info debug, or 0-7) /nolog  stop it
  /exit, /quit, /bye, ... or Ctrl-D leave                     Tab completes, ↑ history"""


async def one_shot(console: EslConsole, commands: Sequence[str]) -> int:
    """``-x``: each command's answer on stdout; the exit code says whether all succeeded."""
    try:
        client = await console.connect()
    except EslError as exc:
        print(f"switchboard console: {exc}", file=sys.stderr)
        return int(ExitCode.START_FAILED)
    failed = False
    try:
        for command in commands:
            answer = await console.api(command)
            console.out(answer)
            failed = failed or is_error(answer)
    finally:
        client.close()
    return int(ExitCode.FAILED if failed else ExitCode.OK)


async def interactive(console: EslConsole, history: Path | None) -> int:
    """The prompt loop; output from the node is printed above the prompt."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    class _Completer(Completer):
        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterable[Completion]:
            return []  # everything is asynchronous: the peer is asked

        async def get_completions_async(
            self, document: Document, complete_event: CompleteEvent
        ) -> AsyncGenerator[Completion, None]:
            current = document.text_before_cursor.split(" ")[-1]
            for word in await console.candidates(document.text_before_cursor):
                yield Completion(word, start_position=-len(current))

    try:
        await console.connect()
    except EslError as exc:
        print(f"switchboard console: {exc}", file=sys.stderr)
        return int(ExitCode.START_FAILED)
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)) if history else InMemoryHistory(),
        completer=_Completer(),
        complete_while_typing=False,
    )
    with patch_stdout(raw=True):
        console._write = lambda text: print(text, end="", flush=True)
        console.out(f"connected to {console.where}; /help for help, Ctrl-D to leave")
        keeper = asyncio.ensure_future(console.keep_connected())
        try:
            while True:
                try:
                    line = await session.prompt_async(f"switchboard@{console.where}> ")
                except KeyboardInterrupt:
                    continue  # Ctrl-C clears the line, as in fs_cli
                except EOFError:
                    break
                if not await console.run_line(line):
                    break
        finally:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
            if console.client is not None:
                console.client.close()
    return int(ExitCode.OK)


def main(
    host: str,
    port: int,
    password: str,
    execute: Sequence[str],
    *,
    log_level: str | None,
    colour: bool,
) -> int:
    console = EslConsole(host, port, password, colour=colour, log_level=log_level)
    if execute:
        console.state.log_level = None  # one-shot: answers only, no log lines
        return asyncio.run(one_shot(console, execute))
    history = HISTORY.expanduser()
    try:
        history.touch(exist_ok=True)
    except OSError:
        history = None  # type: ignore[assignment]
    return asyncio.run(interactive(console, history))


def colour_wanted(no_colour: bool) -> bool:
    """Colours on a terminal, unless --no-color or NO_COLOR (https://no-color.org/)."""
    return not no_colour and "NO_COLOR" not in os.environ and sys.stdout.isatty()
