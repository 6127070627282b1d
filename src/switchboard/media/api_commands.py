"""FreeSWITCH's API commands (``api``/``bgapi``) over a :class:`~switchboard.media.core.Switch`.

What ``mod_commands.c`` answers to ``status``, ``show channels``, ``originate``, ``uuid_*``,
``hupall``, ``global_getvar`` and the rest, byte for byte: each handler takes the argument
string and returns the ``api/response`` body. The Event Socket server
(:mod:`switchboard.media.event_socket`) and the node's admin API call
:meth:`ApiCommands.execute`; nothing here knows about sockets or framing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from switchboard.esl import wire
from switchboard.esl.originate import (
    AppDestination,
    ExtensionDestination,
    OriginateRefused,
    parse_originate,
)
from switchboard.esl.output import (
    CALL_COLUMNS,
    CHANNEL_COLUMNS,
    StatusFigures,
    format_count,
    format_rows,
    format_status,
)
from switchboard.media.causes import Cause, parse_cause
from switchboard.media.core import VERSION, NoSuchChannel, OriginateError, Switch, new_uuid

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[str]]


class ApiCommands:
    """The ``api``/``bgapi`` command set over a :class:`Switch` (mod_commands.c).

    ``await execute(name, args)`` returns the ``api/response`` body exactly as
    ``mod_commands.c`` writes it; it never raises.
    """

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.globals: dict[str, str] = {
            "hostname": switch.hostname,
            "switch_serial": switch.core_uuid,
            "core_uuid": switch.core_uuid,
            "local_ip_v4": getattr(switch, "ipv4", "127.0.0.1"),
            "switchname": switch.name,
        }
        self._handlers: dict[str, Handler] = {
            "originate": self.originate,
            "uuid_kill": self.uuid_kill,
            "uuid_bridge": self.uuid_bridge,
            "uuid_transfer": self.uuid_transfer,
            "uuid_broadcast": self.uuid_broadcast,
            "uuid_record": self.uuid_record,
            "uuid_getvar": self.uuid_getvar,
            "uuid_setvar": self.uuid_setvar,
            "uuid_answer": self._simple("answer", "+OK\n", "-ERROR\n"),
            "uuid_pre_answer": self._simple("pre_answer", "+OK\n", "-ERROR\n"),
            "uuid_ring_ready": self._simple("ring_ready", "+OK\n", "-ERROR\n"),
            "uuid_park": self._simple("park", "+OK\n", "-ERR No such channel!\n"),
            "uuid_break": self._simple("break_media", "+OK\n", "-ERR No such channel!\n"),
            "uuid_exists": self.uuid_exists,
            "uuid_hold": self.uuid_hold,
            "uuid_send_dtmf": self.uuid_send_dtmf,
            "uuid_dump": self.uuid_dump,
            "hupall": self.hupall,
            "status": self.status,
            "show": self.show,
            "version": self.version,
            "reloadxml": self.reloadxml,
            "global_getvar": self.global_getvar,
            "global_setvar": self.global_setvar,
            "create_uuid": self.create_uuid,
            "uptime": self.uptime,
            "hostname": self.hostname,
        }

    @property
    def names(self) -> Iterable[str]:
        return self._handlers.keys()

    async def execute(self, name: str, args: str) -> str:
        handler = self._handlers.get(name.lower())
        if handler is None:
            return f"-ERR {name} Command not found!\n"
        try:
            body = await handler(args.strip())
        except Exception:
            log.exception("api %s %s failed", name, args)
            body = f"-ERR {name} failed\n"
        return body or "-ERR no reply\n"

    # --- originate ---------------------------------------------------------------

    async def originate(self, args: str) -> str:
        """The dial string is parsed once, by :func:`parse_originate`; the switch dials the
        parsed :class:`~switchboard.esl.dialstring.DialString` (a malformed leg fails with
        its cause there, as the same leg would in ``bridge``)."""
        try:
            req = parse_originate(args)
        except OriginateRefused as exc:
            return exc.body
        kwargs: dict[str, Any] = {
            "timeout": float(req.timeout) if req.timeout else None,
            "caller_id_name": req.cid_name,
            "caller_id_number": req.cid_num,
        }
        match req.destination:
            case AppDestination(app=app, args=app_args):
                kwargs.update(app=app or "park", app_arg=app_args)
            case ExtensionDestination(exten=exten, dialplan=dialplan, context=context):
                kwargs.update(extension=exten, dialplan=dialplan, context=context)
        try:
            channel = await self.switch.originate(req.dial, **kwargs)
        except OriginateError as exc:
            return f"-ERR {exc.cause.name}\n"
        return f"+OK {channel.uuid}\n"

    # --- uuid_* ------------------------------------------------------------------

    def _simple(self, method: str, ok: str, err: str) -> Handler:
        async def run(args: str) -> str:
            uuid = args.split()[0] if args.split() else ""
            if not uuid:
                return "-USAGE: <uuid>\n"
            return ok if getattr(self.switch, method)(uuid) else err

        return run

    async def uuid_kill(self, args: str) -> str:
        words = args.split()
        if not words:
            return "-USAGE: <uuid> [cause]\n"
        cause = parse_cause(words[1], Cause.NORMAL_CLEARING) if len(words) > 1 else None
        ok = self.switch.hangup(words[0], cause or Cause.NORMAL_CLEARING)
        return "+OK\n" if ok else "-ERR No such channel!\n"

    async def uuid_bridge(self, args: str) -> str:
        words = args.split()
        if len(words) < 2:
            return "-USAGE: <uuid> <other_uuid>\n"
        ok = await self.switch.bridge(words[0], words[1])
        return f"+OK {words[1]}\n" if ok else "-ERR Invalid uuid\n"

    async def uuid_transfer(self, args: str) -> str:
        words = args.split()
        usage = "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
        if len(words) < 2:
            return usage
        uuid, rest = words[0], words[1:]
        targets = [uuid]
        if rest[0] in ("-bleg", "-both"):
            channel = self.switch.channel(uuid)
            other = channel.other_leg if channel is not None else None
            if other:
                targets = [other] if rest[0] == "-bleg" else [uuid, other]
            rest = rest[1:]
        if not rest:
            return usage
        dest = rest[0]
        dialplan = rest[1] if len(rest) > 1 else "XML"
        context = rest[2] if len(rest) > 2 else "default"
        ok = all([self.switch.transfer(t, dest, dialplan, context) for t in targets])
        return "+OK\n" if ok else "-ERR No such channel!\n"

    async def uuid_broadcast(self, args: str) -> str:
        words = args.split()
        if len(words) < 2:
            return "-USAGE: <uuid> <path> [aleg|bleg|both]\n"
        uuid, what = words[0], words[1]
        leg = words[2].lower() if len(words) > 2 else "aleg"
        app, sep, app_arg = what.partition("::")
        if not sep:
            app, app_arg = "playback", what
        targets = [uuid]
        channel = self.switch.channel(uuid)
        if channel is not None and channel.other_leg and leg in ("bleg", "both"):
            targets = [channel.other_leg] if leg == "bleg" else [uuid, channel.other_leg]
        try:
            for target in targets:
                self.switch.execute(target, app, app_arg)
        except NoSuchChannel:
            return "-ERR invalid uuid\n"
        return "+OK Message sent\n"

    async def uuid_record(self, args: str) -> str:
        words = args.split()
        if len(words) < 3:
            return "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>]\n"
        uuid, action, path = words[0], words[1].lower(), words[2]
        if self.switch.channel(uuid) is None:
            return "-ERR Cannot locate session!\n"
        app = {"start": "record_session", "stop": "stop_record_session"}.get(action)
        if app is None or app not in self.switch.apps:
            return "-ERR Cannot record session!\n"
        arg = path if action == "stop" or len(words) < 4 else f"{path} {words[3]}"
        try:
            self.switch.execute(uuid, app, arg)
        except NoSuchChannel:
            return "-ERR Cannot locate session!\n"
        return "+OK Success\n"

    async def uuid_getvar(self, args: str) -> str:
        words = args.split()
        if len(words) < 2:
            return "-USAGE: <uuid> <var>\n"
        if self.switch.channel(words[0]) is None:
            return "-ERR No such channel!\n"
        value = self.switch.getvar(words[0], words[1])
        return value if value else "_undef_"

    async def uuid_setvar(self, args: str) -> str:
        words = args.split(None, 2)
        if not words:
            return "-USAGE: <uuid> <var> [value]\n"
        if self.switch.channel(words[0]) is None:
            return "-ERR No such channel!\n"
        if len(words) < 2:
            return "-ERR No variable specified\n"
        value = words[2] if len(words) > 2 and words[2] != "undef" else None
        self.switch.setvar(words[0], words[1], value)
        return "+OK\n"

    async def uuid_exists(self, args: str) -> str:
        uuid = args.split()[0] if args.split() else ""
        return "true" if uuid and self.switch.channel(uuid) is not None else "false"

    async def uuid_hold(self, args: str) -> str:
        words = args.split()
        on: bool | None = True
        if words and words[0] in ("off", "toggle"):
            on = False if words[0] == "off" else None
            words = words[1:]
        if not words:
            return "-USAGE: [off|toggle] <uuid> [<display>]\n"
        return "+OK Success\n" if self.switch.hold(words[0], on) else "-ERR Operation failed\n"

    async def uuid_send_dtmf(self, args: str) -> str:
        words = args.split()
        if len(words) < 2:
            return "-USAGE: <uuid> <dtmf_data>\n"
        if self.switch.channel(words[0]) is None:
            return "-ERR Cannot locate session!\n"
        if not self.switch.send_dtmf(words[0], words[1]):
            return "-ERR Operation failed\n"
        return f"+OK {words[0]} sent DTMF {words[1]}.\n"

    async def uuid_dump(self, args: str) -> str:
        words = args.split()
        channel = self.switch.channel(words[0]) if words else None
        if channel is None:
            return "-ERR No such channel!\n"
        headers = {"Event-Name": "CHANNEL_DATA", **channel.event_headers(with_variables=True)}
        if len(words) > 1 and words[1].lower() == "json":
            return wire.json_event(headers).decode("utf-8", "surrogateescape")
        return wire.plain_event(headers).decode("ascii")

    # --- whole-switch commands ---------------------------------------------------

    async def hupall(self, args: str) -> str:
        words = args.split()
        cause = parse_cause(words[0], Cause.MANAGER_REQUEST) if words else Cause.MANAGER_REQUEST
        pairs = list(zip(words[1::2], words[2::2], strict=False))
        if not pairs:
            self.switch.hupall(cause)
            return f"+OK hangup all channels with cause {cause.name}\n"
        for var, value in pairs:
            self.switch.hupall(cause, var, value)
        var, value = pairs[0]
        dots = "..." if len(pairs) > 1 else ""
        return (
            f"+OK hangup all channels matching [{var}]=[{value}]{dots} with cause: {cause.name}\n"
        )

    def status_figures(self) -> StatusFigures:
        st = self.switch.status()
        return StatusFigures(
            uptime_us=int(st.uptime_s * 1_000_000),
            version=f"{VERSION} switchboard 64bit",
            ready=st.ready,
            sessions_since_startup=st.sessions_since_startup,
            sessions=st.session_count,
            peak=st.session_peak,
            peak_5min=st.session_peak,
            sps_last=st.sps_last,
            sps_max=st.sps_limit,
            sps_peak=st.sps_peak,
            sps_peak_5min=st.sps_peak,
            max_sessions=st.max_sessions,
        )

    async def status(self, args: str) -> str:
        return format_status(self.status_figures())

    async def show(self, args: str) -> str:
        words = args.split()
        if words and words[0].lower() == "api":
            return self._show_api(words[1:])
        if not words or words[0].lower() not in ("channels", "calls"):
            return "-USAGE: calls [count|as json|as xml|as delim <c>]|channels [count|like <match string>] [as json|as xml|as delim <c>]\n"
        item, rest = words[0].lower(), words[1:]
        fmt, delim = "delim", ","
        if len(rest) >= 2 and rest[-2].lower() == "as":
            fmt = rest[-1].lower()
            rest = rest[:-2]
        elif len(rest) >= 3 and rest[-3].lower() == "as" and rest[-2].lower() == "delim":
            fmt, delim = "delim", rest[-1]
            rest = rest[:-3]
        if fmt not in ("json", "xml", "delim"):
            fmt = "delim"
        rows = self._channel_rows() if item == "channels" else self._call_rows()
        if rest and rest[0].lower() == "like" and len(rest) > 1:
            needle = rest[1].replace("%", "").lower()
            keys = ("uuid", "name", "cid_name", "cid_num", "presence_data", "accountcode")
            rows = [r for r in rows if any(needle in (r.get(k) or "").lower() for k in keys)]
        elif rest and rest[0].lower() == "count":
            return format_count(len(rows))
        columns = CHANNEL_COLUMNS if item == "channels" else CALL_COLUMNS
        return format_rows(columns, rows, fmt, delim)

    def _show_api(self, rest: list[str]) -> str:
        """``show api [as json]``: the API commands this node answers (name, description,
        syntax, ikey columns as FreeSWITCH lists them) — consoles complete from it."""
        rows = [
            {"name": name, "description": "", "syntax": "", "ikey": "switchboard"}
            for name in sorted(self._handlers)
        ]
        fmt = rest[-1].lower() if len(rest) >= 2 and rest[-2].lower() == "as" else "delim"
        columns = ("name", "description", "syntax", "ikey")
        return format_rows(columns, rows, fmt if fmt in ("json", "xml") else "delim", ",")

    def _channel_rows(self) -> list[dict[str, str]]:
        channels = sorted(self.switch.channels.values(), key=lambda c: c.created_at)
        return [self._channel_row(ch) for ch in channels]

    def _channel_row(self, ch: Any) -> dict[str, str]:
        p = ch.profile
        return {
            "uuid": ch.uuid,
            "direction": ch.direction,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ch.created_at)),
            "created_epoch": str(int(ch.created_at)),
            "name": ch.name,
            "state": ch.state.name,
            "cid_name": p.caller_id_name,
            "cid_num": p.caller_id_number,
            "ip_addr": p.network_addr,
            "dest": p.destination_number,
            "application": ch.application,
            "application_data": ch.application_data,
            "dialplan": p.dialplan,
            "context": p.context,
            "read_codec": ch.read_codec,
            "read_rate": str(ch.codec_rate),
            "read_bit_rate": "64000",
            "write_codec": ch.read_codec,
            "write_rate": str(ch.codec_rate),
            "write_bit_rate": "64000",
            "secure": "",
            "hostname": self.switch.hostname,
            "presence_id": "",
            "presence_data": "",
            "accountcode": ch.variables.get("accountcode", ""),
            "callstate": ch.call_state.value,
            "callee_name": p.callee_id_name,
            "callee_num": p.callee_id_number,
            "callee_direction": "",
            "call_uuid": ch.variables.get("call_uuid", ch.uuid),
            "sent_callee_name": "",
            "sent_callee_num": "",
            "initial_cid_name": p.caller_id_name,
            "initial_cid_num": p.caller_id_number,
            "initial_ip_addr": p.network_addr,
            "initial_dest": p.destination_number,
            "initial_dialplan": p.dialplan,
            "initial_context": p.context,
        }

    def _call_rows(self) -> list[dict[str, str]]:
        """One row per call: the A-leg plus its bridged B-leg's columns (view basic_calls)."""
        channels = sorted(self.switch.channels.values(), key=lambda c: c.created_at)
        by_uuid = {ch.uuid: ch for ch in channels}
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for ch in channels:
            if ch.uuid in seen:
                continue
            row = self._channel_row(ch)
            other = by_uuid.get(ch.other_leg) if ch.other_leg else None
            if other is not None and other.uuid not in seen:
                seen.add(other.uuid)
                b = self._channel_row(other)
                for col in CALL_COLUMNS:
                    if col.startswith("b_"):
                        row[col] = b.get(col[2:], "")
            row["call_created_epoch"] = row["created_epoch"]
            seen.add(ch.uuid)
            rows.append(row)
        return rows

    async def version(self, args: str) -> str:
        if args.strip().lower() == "short":
            return VERSION.split("-", 1)[0] + "\n"
        return f"FreeSWITCH Version {VERSION}+switchboard~64bit ({VERSION} switchboard 64bit)\n"

    async def reloadxml(self, args: str) -> str:
        try:
            self.switch.reload()
        except Exception as exc:
            log.warning("reloadxml failed: %s", exc)
            return f"-ERR [{exc}]\n"
        return "+OK [Success]\n"

    async def global_getvar(self, args: str) -> str:
        name = args.strip()
        if not name:
            return "".join(f"{k}={v}\n" for k, v in self.globals.items())
        return self.globals.get(name, "")

    async def global_setvar(self, args: str) -> str:
        name, eq, value = args.partition("=")
        if not eq or not name.strip():
            return "-USAGE: <var>=<value>\n"
        self.globals[name.strip()] = value.strip()
        return "+OK\n"

    async def create_uuid(self, args: str) -> str:
        return new_uuid()

    async def uptime(self, args: str) -> str:
        secs = self.switch.status().uptime_s
        div = {"": 1, "s": 1, "ms": 1e-3, "us": 1e-6, "m": 60, "h": 3600, "d": 86400}
        unit = args.strip().lower()
        if unit not in div:
            return "-USAGE: [us|ms|s|m|h|d|microseconds|milliseconds|seconds|minutes|hours|days]\n"
        return f"{int(secs / div[unit])}\n"

    async def hostname(self, args: str) -> str:
        return self.switch.hostname
