"""Inbound Event Socket commands: a packet's first line → one frozen dataclass.

Command names are matched case-insensitively **by prefix**, in FreeSWITCH's order
(``parse_command``, mod_event_socket.c:1743-2623):
``events plain ALL`` is the ``event`` command, ``exiting`` is ``exit``, and ``api``/
``bgapi`` need the following space. Whatever matches nothing is :class:`Unknown`,
answered ``-ERR command not found``.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.esl.framing import Packet


@dataclass(frozen=True, slots=True)
class Exit:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    password: str


@dataclass(frozen=True, slots=True)
class UserAuth:
    credentials: str


@dataclass(frozen=True, slots=True)
class FilterAdd:
    header: str
    value: str


@dataclass(frozen=True, slots=True)
class FilterDelete:
    header: str  # "all" deletes every filter
    value: str | None


@dataclass(frozen=True, slots=True)
class FilterSyntaxError:
    pass


@dataclass(frozen=True, slots=True)
class Resume:
    pass


@dataclass(frozen=True, slots=True)
class Connect:
    pass


@dataclass(frozen=True, slots=True)
class GetVar:
    name: str


@dataclass(frozen=True, slots=True)
class MyEvents:
    uuid: str | None
    fmt: str | None  # None: keep the current format


@dataclass(frozen=True, slots=True)
class DivertEvents:
    value: str | None  # "on" / "off" / None (missing)


@dataclass(frozen=True, slots=True)
class SendMsg:
    uuid: str | None
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SendEvent:
    name: str
    headers: tuple[tuple[str, str], ...]
    body: str


@dataclass(frozen=True, slots=True)
class Api:
    command: str
    args: str

    @property
    def text(self) -> str:
        return f"{self.command} {self.args}" if self.args else self.command


@dataclass(frozen=True, slots=True)
class BgApi:
    command: str
    args: str
    job_uuid: str | None  # the client's Job-UUID header, honoured when present


@dataclass(frozen=True, slots=True)
class Log:
    level: str | None


@dataclass(frozen=True, slots=True)
class NoLog:
    pass


@dataclass(frozen=True, slots=True)
class Linger:
    seconds: int | None  # None: linger until the client exits


@dataclass(frozen=True, slots=True)
class NoLinger:
    pass


@dataclass(frozen=True, slots=True)
class EventSubscribe:
    fmt: str | None  # "plain" / "json" / "xml", or None when the first word is a name
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NixEvent:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoEvents:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str


Command = (
    Exit | Auth | UserAuth | FilterAdd | FilterDelete | FilterSyntaxError | Resume | Connect
    | GetVar | MyEvents | DivertEvents | SendMsg | SendEvent | Api | BgApi | Log | NoLog
    | Linger | NoLinger | EventSubscribe | NixEvent | NoEvents | Unknown
)  # fmt: skip


def _starts(cmd: str, prefix: str) -> bool:
    return cmd[: len(prefix)].lower() == prefix


def _rest(cmd: str, n: int) -> str:
    return cmd[n:].strip()


def _split_api(text: str) -> tuple[str, str]:
    name, _, args = text.strip().partition(" ")
    return name, args.strip()


def parse_command(packet: Packet) -> Command:
    """Classify one packet. Never raises: unknown input is :class:`Unknown`."""
    cmd = packet.command
    if _starts(cmd, "exit") or _starts(cmd, "..."):
        return Exit()
    if _starts(cmd, "auth "):
        return Auth(cmd[5:])  # byte-exact, up to the CR/LF already cut (:1752)
    if _starts(cmd, "userauth "):
        return UserAuth(cmd[9:])
    if _starts(cmd, "filter "):
        return _parse_filter(_rest(cmd, 7))
    if _starts(cmd, "resume"):
        return Resume()
    if _starts(cmd, "connect"):
        return Connect()
    if _starts(cmd, "getvar"):
        return GetVar(_rest(cmd, 6))
    if _starts(cmd, "myevents"):
        return _parse_myevents(_rest(cmd, 8))
    if _starts(cmd, "divert_events"):
        value = _rest(cmd, 13)
        return DivertEvents(value.lower() or None)
    if _starts(cmd, "sendmsg"):
        uuid = _rest(cmd, 7) or packet.header("session-id") or None
        return SendMsg(uuid, packet.headers, packet.body.decode("utf-8", "replace"))
    if _starts(cmd, "sendevent"):
        return SendEvent(
            _rest(cmd, 9) or "CUSTOM", packet.headers, packet.body.decode("utf-8", "replace")
        )
    if _starts(cmd, "api "):
        name, args = _split_api(cmd[4:])
        return Api(name, args) if name else Unknown(cmd)
    if _starts(cmd, "bgapi "):
        name, args = _split_api(cmd[6:])
        if not name:
            return Unknown(cmd)
        return BgApi(name, args, (packet.header("job-uuid") or "").strip() or None)
    if _starts(cmd, "log"):
        return Log(_rest(cmd, 3) or None)
    if _starts(cmd, "linger"):
        arg = _rest(cmd, 6)
        return Linger(int(arg) if arg.isdigit() and int(arg) > 0 else None)
    if _starts(cmd, "nolinger"):
        return NoLinger()
    if _starts(cmd, "nolog"):
        return NoLog()
    if _starts(cmd, "event"):
        words = cmd.split()[1:]
        if words and words[0].lower() in ("plain", "json", "xml"):
            return EventSubscribe(words[0].lower(), tuple(words[1:]))
        return EventSubscribe(None, tuple(words))
    if _starts(cmd, "nixevent"):
        return NixEvent(tuple(cmd.split()[1:]))
    if _starts(cmd, "noevents"):
        return NoEvents()
    return Unknown(cmd)


def _parse_filter(rest: str) -> Command:
    words = rest.split(None, 2)
    if words and words[0].lower() == "delete":
        if len(words) < 2:
            return FilterSyntaxError()
        return FilterDelete(words[1], words[2] if len(words) > 2 else None)
    if words and words[0].lower() == "add":
        words = rest.split(None, 1)[1:]
        words = words[0].split(None, 1) if words else []
    else:
        words = rest.split(None, 1)
    if len(words) < 2:
        return FilterSyntaxError()
    return FilterAdd(words[0], words[1])


def _parse_myevents(rest: str) -> Command:
    words = rest.split()
    fmt: str | None = None
    low = rest.lower()
    if "json" in low:
        fmt = "json"
    elif "xml" in low:
        fmt = "xml"
    elif "plain" in low:
        fmt = "plain"
    uuid = words[0] if words and words[0].lower() not in ("plain", "json", "xml") else None
    return MyEvents(uuid, fmt)
