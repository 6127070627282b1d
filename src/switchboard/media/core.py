"""The switch core: the media node's public Python API (what the Event Socket server uses).

One :class:`Switch` per media node process. It owns the channels, the event bus, the
session limits, the dialplan and the endpoints (SIP user agent, gateways, users), and
runs each channel's applications (registered by :mod:`switchboard.media.applications`).
The Event Socket server (``media/event_socket.py``, API commands in ``api_commands.py``)
is a thin layer over this API; nothing in it needs SIP knowledge.

Quick reference (every coroutine must be awaited on the node's event loop)::

    sw = new_switch(name="media-1", hostname="mediasrv1")  # media.applications
    sw.core_uuid                        # str, ``Core-UUID``
    sw.channels                         # Mapping[str, Channel] uuid → Channel (live legs)
    sw.channel(uuid) -> Channel | None
    sw.events.subscribe(cb) -> unsubscribe   # cb(Event) called synchronously, must not block
    sw.make_event(name, headers=..., body=..., channel=...) -> Event   # standard headers
    sw.fire(event)                      # publish (e.g. BACKGROUND_JOB built by ESL)

    await sw.originate(dial_string, app="park", app_arg="", extension=None,
                       variables=None, timeout=None,
                       caller_id_name=None, caller_id_number=None) -> Channel
        # raises OriginateError(cause); returns on answer, or on early media unless
        # ignore_early_media=true (switch_ivr_originate.c). Then runs the app / the extension.
    sw.execute(uuid, app, arg="", *, event_uuid=None, loops=1) -> asyncio.Future[str]
        # queue an application (ESL sendmsg execute); the future resolves to its
        # Application-Response; raises NoSuchChannel
    await sw.execute_wait(uuid, app, arg="", *, event_uuid=None) -> str   # Application-Response
    sw.hangup(uuid, cause=Cause.NORMAL_CLEARING) -> bool      # False: no such channel
    sw.hupall(cause=Cause.MANAGER_REQUEST, var=None, value=None) -> int
    sw.answer(uuid) / sw.pre_answer(uuid) / sw.ring_ready(uuid) -> bool
    sw.park(uuid) -> bool
    sw.transfer(uuid, extension, dialplan="XML", context="default") -> bool
    await sw.bridge(uuid_a, uuid_b) -> bool                   # uuid_bridge
    sw.break_media(uuid, all_=False) -> bool                  # uuid_break
    sw.send_dtmf(uuid, digits, duration_ms=100) -> bool
    sw.hold(uuid, on: bool | None) -> bool                    # None = toggle
    sw.setvar(uuid, name, value) -> bool ; sw.getvar(uuid, name) -> str | None
    sw.status() -> SwitchStatus
    sw.limits                           # SessionLimiter: max_sessions / sessions_per_second
                                        # may be assigned at runtime (fsctl)
    sw.reload() -> None                 # re-read the dialplan (reloadxml); raises DialplanError
    sw.gateways -> Mapping[str, GatewayInfo]   # ``sofia status``
    sw.endpoints[kind] = Endpoint       # "gateway", "user", "sofia", "sip" (the SIP UA),
                                        # "loopback" (the Event Socket's), ...
    sw.active_calls -> int              # live channels (X-Switchboard-Calls on OPTIONS)
    sw.setup_hooks.append(async fn(session))   # awaited once when a channel is first routed,
                                        # before its apps (credit control; may hang it up)
    sw.hangup_hooks.append(fn(session)) # called in CS_REPORTING (CDRs, settlement)

Events fired (FreeSWITCH names and headers, docs/esl.md): CHANNEL_CREATE,
CHANNEL_OUTGOING (outbound legs), CHANNEL_ORIGINATE, CHANNEL_STATE, CHANNEL_CALLSTATE,
CHANNEL_PROGRESS, CHANNEL_PROGRESS_MEDIA, CHANNEL_ANSWER, CHANNEL_PARK, CHANNEL_UNPARK,
CHANNEL_EXECUTE, CHANNEL_EXECUTE_COMPLETE, CHANNEL_BRIDGE, CHANNEL_UNBRIDGE,
CHANNEL_HOLD, CHANNEL_UNHOLD, DTMF, PLAYBACK_START/STOP, RECORD_START/STOP,
CHANNEL_HANGUP, CHANNEL_HANGUP_COMPLETE, CHANNEL_DESTROY, HEARTBEAT (every 20 s when
:meth:`Switch.start` ran).

Application execution follows FreeSWITCH (mod_dptools): each application fires
CHANNEL_EXECUTE then CHANNEL_EXECUTE_COMPLETE (``Application``, ``Application-Data``,
``Application-UUID`` = the ``event_uuid`` given, ``Application-Response``). Queued
applications (``execute``) run after the current one; when a channel's application
list is exhausted and it is not parked it is hung up with NORMAL_CLEARING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid as uuid_mod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.esl.dialstring import (
    DialLeg,
    DialString,
    DialStringError,
    ErrorEndpoint,
    Step,
    parse_dial_string,
)
from switchboard.media import events as ev
from switchboard.media.causes import Cause, parse_cause
from switchboard.media.channel import (
    BODY_PARTS,
    EMERGENCY_VAR,
    ORIGINATING_LEG_VAR,
    PAI_VAR,
    CallerProfile,
    CallState,
    Channel,
    ChannelState,
)
from switchboard.media.limits import Refusal, SessionLimiter

if TYPE_CHECKING:
    from switchboard.media.dialplan import Dialplan

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 20.0  # seconds, FreeSWITCH's default
DEFAULT_ORIGINATE_TIMEOUT = 60.0  # seconds, mod_commands.c:5113-5152
VERSION = "1.10.12-release"  # FreeSWITCH version string clients parse (switchboard build)


class NoSuchChannel(KeyError):
    """No live channel with that uuid (ESL: ``-ERR No such channel!``)."""


class OriginateError(Exception):
    """A leg could not be placed or was not answered; ``cause`` says why (``-ERR <CAUSE>``)."""

    def __init__(self, cause: Cause, detail: str = "") -> None:
        super().__init__(f"{cause.name}{': ' + detail if detail else ''}")
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class SwitchStatus:
    """What ``status`` and HEARTBEAT report (mod_commands ``status``, the HEARTBEAT event)."""

    uptime_s: float
    sessions_since_startup: int
    session_count: int
    session_peak: int
    sps_last: int
    sps_limit: int
    sps_peak: int
    max_sessions: int
    ready: bool


@dataclass(frozen=True)
class GatewayInfo:
    """One gateway for ``sofia status`` (``Name Type Data State``)."""

    name: str
    uri: str
    state: str  # "UP", "DOWN", "NOREG", "REGED", "FAIL_WAIT"…
    active_calls: int = 0


class Leg(Protocol):
    """The signalling side of a session (implemented by the SIP user agent).

    ``ring``/``pre_answer``/``answer`` act on an inbound leg (send 180/183/200);
    ``terminate`` ends the leg with the right SIP action for its state (BYE when
    answered, CANCEL for an unanswered outbound leg, a final response mapped from
    ``cause`` for an unanswered inbound one). ``send_dtmf`` sends RFC 4733 (or INFO).
    """

    async def ring(self) -> None: ...
    async def pre_answer(self) -> None: ...
    async def answer(self) -> None: ...
    async def terminate(self, cause: Cause) -> None: ...
    async def send_dtmf(self, digits: str, duration_ms: int) -> None: ...
    async def hold(self, on: bool) -> None: ...


class Endpoint(Protocol):
    """Places outbound legs of one kind ("gateway", "user", "sofia", "sip", ...)."""

    async def place(self, session: Session, leg: DialLeg) -> None:
        """Start the call for ``session`` (an outbound session); set ``session.leg``.

        Progress is reported through ``Switch.on_progress/on_early/on_answer/on_failed``.
        Raise :class:`OriginateError` when the leg cannot even be started.
        """
        ...


@dataclass
class Command:
    """A queued application (or control message) for a session."""

    app: str
    arg: str = ""
    event_uuid: str | None = None
    loops: int = 1
    done: asyncio.Future[str] | None = None


App = Callable[["Session", str], Awaitable[str | None]]


@dataclass(eq=False)
class Session:
    """Runtime state of one channel: its leg, media, app queue and progress futures.

    Applications receive the session; ``session.channel`` is the data model,
    ``session.media`` the RTP side (a :class:`switchboard.media.mediaplane.MediaLeg`
    or None before SDP is negotiated), ``session.switch`` the switch.
    """

    switch: Switch
    channel: Channel
    leg: Leg | None = None
    media: Any = None
    queue: asyncio.Queue[Command] = field(default_factory=asyncio.Queue)
    apps: list[tuple[str, str]] = field(default_factory=list)
    parked: bool = False
    task: asyncio.Task[None] | None = None
    current: asyncio.Task[Any] | None = None
    progressed: asyncio.Event = field(default_factory=asyncio.Event)
    early: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    dtmf: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    bridged_to: Session | None = None
    admitted: bool = False
    transfer_to: str | None = None
    break_flag: asyncio.Event = field(default_factory=asyncio.Event)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return self.channel.uuid

    @property
    def is_hungup(self) -> bool:
        return self.channel.is_hungup

    def release(self) -> None:
        """Drop the links that make a finished call a reference cycle (CS_DESTROY).

        The SIP leg points back at its session, a bridge's partners at each other: left
        in place, a finished call's objects would wait for the garbage collector's full
        collections, whose pauses grow with the heap. Cut here, reference counting frees
        them as soon as the last transaction lets go (docs/media.md, "Memory")."""
        self.leg = None
        self.bridged_to = None
        self.current = None
        self.task = None


class Switch:
    """The media node core. See the module docstring for the API summary."""

    def __init__(
        self,
        *,
        name: str = "media-1",
        hostname: str | None = None,
        limits: SessionLimiter | None = None,
        dialplan: Dialplan | None = None,
        ipv4: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.hostname = hostname or socket.gethostname()
        self.ipv4 = ipv4
        self.core_uuid = str(uuid_mod.uuid4())
        self.events = ev.EventBus()
        self.limits = limits or SessionLimiter()
        # Dialled numbers that are emergency calls ([emergency] numbers, every country):
        # admitted from the session reserve, never credit-controlled, flagged on the CDR.
        self.emergency_numbers: frozenset[str] = frozenset()
        self.dialplan = dialplan
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._sessions: dict[str, Session] = {}
        self._sequence = 0
        self._date_second = -1
        self._date_local = ""
        self._date_gmt = ""
        self._channels_view: dict[str, Channel] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.apps: dict[str, App] = {}
        self._gateways: dict[str, GatewayInfo] = {}
        self._gateway_source: Callable[[], Mapping[str, GatewayInfo]] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.ready = True
        self.hangup_hooks: list[Callable[[Session], None]] = []
        self.bridge_hooks: list[Callable[[Session, Session], None]] = []  # (A-leg, B-leg)
        self.inbound_hooks: list[Callable[[Session], None]] = []  # a new inbound call, routed next
        # awaited in order when a channel is first routed, before its applications run
        # (credit control); a hook refuses the call by hanging it up
        self.setup_hooks: list[Callable[[Session], Awaitable[None]]] = []
        self.dialplan_loader: Callable[[], Dialplan] | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start background work (HEARTBEAT). Call from the running loop."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeats())

    async def stop(self, cause: Cause = Cause.SYSTEM_SHUTDOWN) -> None:
        """Hang up every channel and stop background tasks."""
        self.ready = False
        self.hupall(cause)
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        deadline = time.monotonic() + 2.0
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            st = self.status()
            self.fire(
                self.make_event(
                    ev.HEARTBEAT,
                    {
                        "Event-Info": "System Ready",
                        "Up-Time": _uptime_text(st.uptime_s),
                        "FreeSWITCH-Version": VERSION,
                        "Uptime-msec": str(int(st.uptime_s * 1000)),
                        "Session-Count": str(st.session_count),
                        "Max-Sessions": str(st.max_sessions),
                        "Session-Per-Sec": str(st.sps_limit),
                        "Session-Per-Sec-Last": str(st.sps_last),
                        "Session-Per-Sec-Max": str(st.sps_peak),
                        "Session-Per-Sec-FiveMin": str(st.sps_peak),
                        "Session-Since-Startup": str(st.sessions_since_startup),
                        "Session-Peak-Max": str(st.session_peak),
                        "Session-Peak-FiveMin": str(st.session_peak),
                        "Idle-CPU": "99.000000",
                    },
                )
            )

    # ---------------------------------------------------------------- read API
    @property
    def channels(self) -> Mapping[str, Channel]:
        """Live channels by uuid, in creation order (read-only view)."""
        return self._channels_view

    def channel(self, uuid: str) -> Channel | None:
        s = self._sessions.get(uuid)
        return s.channel if s else None

    def session(self, uuid: str) -> Session | None:
        return self._sessions.get(uuid)

    @property
    def sessions(self) -> Iterable[Session]:
        return list(self._sessions.values())

    @property
    def active_calls(self) -> int:
        """Live channels (``X-Switchboard-Calls`` on OPTIONS answers)."""
        return len(self._sessions)

    def status(self) -> SwitchStatus:
        now = time.monotonic()
        lim = self.limits
        return SwitchStatus(
            uptime_s=now - self._started_mono,
            sessions_since_startup=lim.since_startup,
            session_count=len(self._sessions),
            session_peak=lim.peak,
            sps_last=lim.sps_last(now),
            sps_limit=lim.sessions_per_second,
            sps_peak=lim.sps_peak,
            max_sessions=lim.max_sessions,
            ready=self.ready,
        )

    @property
    def gateways(self) -> Mapping[str, GatewayInfo]:
        if self._gateway_source is not None:
            return self._gateway_source()
        return self._gateways

    def reload(self) -> None:
        """Re-read the dialplan from its source (ESL ``reloadxml``)."""
        if self.dialplan_loader is not None:
            self.dialplan = self.dialplan_loader()

    # ---------------------------------------------------------------- events
    def make_event(
        self,
        name: str,
        headers: Mapping[str, str] | None = None,
        *,
        body: str | None = None,
        channel: Channel | None = None,
        subclass: str | None = None,
    ) -> ev.Event:
        """An event with the standard headers, channel headers if a
        channel is given (with ``variable_*`` for verbose event types), then ``headers``."""
        self._sequence += 1
        now = time.time()
        second = int(now)
        if second != self._date_second:  # strftime once per second, not per event
            self._date_second = second
            self._date_local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            self._date_gmt = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        h: dict[str, str] = {
            "Event-Name": name,
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": self.hostname,
            "FreeSWITCH-Switchname": self.name,
            "FreeSWITCH-IPv4": self.ipv4,
            "FreeSWITCH-IPv6": "::1",
            "Event-Date-Local": self._date_local,
            "Event-Date-GMT": self._date_gmt,
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Calling-File": "switch_core.c",
            "Event-Calling-Function": "switchboard",
            "Event-Calling-Line-Number": "1",
            "Event-Sequence": str(self._sequence),
        }
        if subclass:
            h["Event-Subclass"] = subclass
        if channel is None:
            if headers:
                h.update(headers)
            return ev.Event(name, h, body, None)
        if not self.events.headers_wanted():
            # nobody would render them (no Event Socket client): no channel snapshot
            return ev.Event(name, None, body, channel.uuid)
        verbose = name in ev.VERBOSE_EVENTS
        snap = channel.snapshot(verbose)
        extra = dict(headers) if headers else None

        def build() -> dict[str, str]:
            h.update(snap.event_headers(with_variables=verbose))
            if extra:
                h.update(extra)
            return h

        return ev.Event(name, None, body, channel.uuid, build=build)

    def fire(self, event: ev.Event) -> None:
        self.events.publish(event)

    def _fire(self, name: str, s: Session, extra: Mapping[str, str] | None = None) -> None:
        self.fire(self.make_event(name, extra, channel=s.channel))

    def _set_state(self, s: Session, state: ChannelState) -> None:
        if s.channel.state is state:
            return
        s.channel.set_state(state)
        self._fire(ev.CHANNEL_STATE, s)

    def _set_call_state(self, s: Session, state: CallState, old: CallState) -> None:
        self._fire(ev.CHANNEL_CALLSTATE, s, {"Original-Channel-Call-State": old.value})

    # ---------------------------------------------------------------- session creation
    def admit(self, *, emergency: bool = False) -> Refusal | None:
        """Ask the limiter for one new leg (the UA calls this for each inbound INVITE)."""
        return self.limits.admit(time.monotonic(), emergency=emergency)

    def create_session(
        self,
        *,
        direction: str,
        name: str,
        profile: CallerProfile,
        variables: Mapping[str, str] | None = None,
        uuid: str | None = None,
        admitted: bool = True,
        other_leg: str | None = None,
    ) -> Session:
        """Register a new channel (already admitted by the limiter) and fire CHANNEL_CREATE."""
        uid = uuid or str(uuid_mod.uuid4())
        if uid in self._sessions:
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER, f"duplicate uuid {uid}")
        ch = Channel(uuid=uid, name=name, direction=direction, created_at=time.time())
        ch.profile = profile
        ch.variables.update(
            {
                "uuid": uid,
                "direction": direction,
                "channel_name": name,
                "call_uuid": uid,
                "switch_name": self.name,
            }
        )
        if variables:
            ch.variables.update(variables)
        ch.other_leg = other_leg
        s = Session(switch=self, channel=ch, admitted=admitted)
        self._sessions[uid] = s
        self._channels_view[uid] = ch
        self._fire(ev.CHANNEL_CREATE, s)
        self._set_state(s, ChannelState.CS_INIT)
        return s

    def start_inbound(self, s: Session) -> None:
        """Route an inbound session through the dialplan and run its applications."""
        for hook in self.inbound_hooks:
            hook(s)
        s.task = asyncio.get_running_loop().create_task(self._run(s, route=True))

    def start_apps(self, s: Session, apps: list[tuple[str, str]]) -> None:
        s.apps = list(apps)
        s.task = asyncio.get_running_loop().create_task(self._run(s, route=False))

    # ---------------------------------------------------------------- progress from legs
    def on_ringing(self, s: Session) -> None:
        old = s.channel.call_state
        if s.channel.mark_ringing(time.time()):
            self._set_call_state(s, CallState.RINGING, old)
            self._fire(ev.CHANNEL_PROGRESS, s)
        s.progressed.set()

    def on_early(self, s: Session) -> None:
        old = s.channel.call_state
        if s.channel.mark_early(time.time()):
            self._set_call_state(s, CallState.EARLY, old)
            self._fire(ev.CHANNEL_PROGRESS_MEDIA, s)
        s.progressed.set()
        s.early.set()

    def on_answer(self, s: Session) -> None:
        if s.is_hungup:
            return
        old = s.channel.call_state
        if s.channel.mark_answered(time.time()):
            self._set_call_state(s, CallState.ACTIVE, old)
            self._fire(ev.CHANNEL_ANSWER, s)
        s.answered.set()

    def on_remote_hangup(self, s: Session, cause: Cause, *, sip_status: int | None = None,
                         disposition: str = "recv_bye", at: float | None = None) -> None:  # fmt: skip
        """The peer ended the leg (BYE, CANCEL, failure response, timeout); ``at``: when,
        if not now (a leg a crash interrupted while it was ending, ended on restart)."""
        if sip_status is not None:
            s.channel.sip_status = sip_status
        s.channel.hangup_disposition = disposition
        self._hangup(s, cause, notify_leg=False, at=at)

    def on_dtmf(self, s: Session, digit: str, duration_samples: int, source: str = "RTP") -> None:
        """A DTMF digit arrived (RFC 4733, INFO or in-band); queued for applications."""
        s.dtmf.put_nowait(digit)
        self._fire(
            ev.DTMF,
            s,
            {"DTMF-Digit": digit, "DTMF-Duration": str(duration_samples), "DTMF-Source": source},
        )

    # ---------------------------------------------------------------- control API
    def _get(self, uuid: str) -> Session:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            raise NoSuchChannel(uuid)
        return s

    def execute(
        self,
        uuid: str,
        app: str,
        arg: str = "",
        *,
        event_uuid: str | None = None,
        loops: int = 1,
    ) -> asyncio.Future[str]:
        """Queue ``app(arg)`` on the channel; returns a future of its Application-Response.

        Raises :class:`NoSuchChannel`. An unknown application completes with
        ``-ERR Invalid Application`` and leaves the channel as it was.
        """
        s = self._get(uuid)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        s.queue.put_nowait(Command(app, arg, event_uuid, max(1, loops), fut))
        if s.parked:
            s.break_flag.set()
        if s.task is None:
            s.task = asyncio.get_running_loop().create_task(self._run(s, route=False))
        return fut

    async def execute_wait(
        self, uuid: str, app: str, arg: str = "", *, event_uuid: str | None = None
    ) -> str:
        return await self.execute(uuid, app, arg, event_uuid=event_uuid)

    def hangup(self, uuid: str, cause: Cause | str = Cause.NORMAL_CLEARING) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            return False
        c = cause if isinstance(cause, Cause) else parse_cause(cause)
        self._hangup(s, c, notify_leg=True)
        return True

    def hupall(
        self,
        cause: Cause | str = Cause.MANAGER_REQUEST,
        var: str | None = None,
        value: str | None = None,
    ) -> int:
        c = cause if isinstance(cause, Cause) else parse_cause(cause, Cause.MANAGER_REQUEST)
        n = 0
        for s in list(self._sessions.values()):
            if var is not None and s.channel.variables.get(var) != value:
                continue
            if self.hangup(s.uuid, c):
                n += 1
        return n

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_task_error)

    def answer(self, uuid: str) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            return False
        self._spawn(self.do_answer(s))
        return True

    def pre_answer(self, uuid: str) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            return False
        self._spawn(self.do_pre_answer(s))
        return True

    def ring_ready(self, uuid: str) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            return False
        self._spawn(self.do_ring_ready(s))
        return True

    def park(self, uuid: str) -> bool:
        try:
            self.execute(uuid, "park")
        except NoSuchChannel:
            return False
        self.break_media(uuid)
        return True

    def transfer(
        self, uuid: str, extension: str, dialplan: str = "XML", context: str = "default"
    ) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup:
            return False
        s.transfer_to = extension
        s.channel.profile.dialplan = dialplan
        s.channel.profile.context = context
        s.apps.clear()
        self.break_media(uuid, all_=True)
        if s.current is not None:
            s.current.cancel()
        if s.task is None or s.task.done():
            s.task = asyncio.get_running_loop().create_task(self._run(s, route=True))
        return True

    async def bridge(self, uuid_a: str, uuid_b: str) -> bool:
        """Bridge two live channels (``uuid_bridge``): both stop what they run and exchange media."""
        a, b = self._sessions.get(uuid_a), self._sessions.get(uuid_b)
        if a is None or b is None or a.is_hungup or b.is_hungup or a is b:
            return False
        for s in (a, b):
            s.apps.clear()
            s.parked = False
            if s.current is not None:
                s.current.cancel()
        self.execute(uuid_a, "_bridge_existing", uuid_b)
        return True

    def break_media(self, uuid: str, all_: bool = False) -> bool:
        s = self._sessions.get(uuid)
        if s is None:
            return False
        s.break_flag.set()
        return True

    def send_dtmf(self, uuid: str, digits: str, duration_ms: int = 100) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup or s.leg is None:
            return False
        self._spawn(s.leg.send_dtmf(digits, duration_ms))
        return True

    def hold(self, uuid: str, on: bool | None = None) -> bool:
        s = self._sessions.get(uuid)
        if s is None or s.is_hungup or s.leg is None or not s.channel.answered:
            return False
        target = (not s.channel.held) if on is None else on
        self._spawn(s.leg.hold(target))
        return True

    def setvar(self, uuid: str, name: str, value: str | None) -> bool:
        s = self._sessions.get(uuid)
        if s is None:
            return False
        s.channel.set_var(name, value)
        return True

    def getvar(self, uuid: str, name: str) -> str | None:
        s = self._sessions.get(uuid)
        return None if s is None else s.channel.variables.get(name)

    # ---------------------------------------------------------------- leg actions
    async def do_ring_ready(self, s: Session) -> None:
        if s.leg is not None and s.channel.direction == "inbound" and not s.channel.answered:
            await s.leg.ring()
            self.on_ringing(s)

    async def do_pre_answer(self, s: Session) -> None:
        if (
            s.leg is not None
            and s.channel.direction == "inbound"
            and not s.channel.answered
            and s.channel.call_state is not CallState.EARLY
        ):
            await s.leg.pre_answer()
            self.on_early(s)

    async def do_answer(self, s: Session) -> None:
        if s.is_hungup:
            raise asyncio.CancelledError
        if s.channel.answered:
            return
        if s.leg is not None and s.channel.direction == "inbound":
            await s.leg.answer()
        self.on_answer(s)

    # ---------------------------------------------------------------- originate
    async def originate(
        self,
        dial_string: DialString | str,
        *,
        app: str | None = "park",
        app_arg: str = "",
        extension: str | None = None,
        dialplan: str = "XML",
        context: str = "default",
        variables: Mapping[str, str] | None = None,
        timeout: float | None = None,
        caller_id_name: str | None = None,
        caller_id_number: str | None = None,
    ) -> Channel:
        """Place a call per ``dial_string`` and, once it succeeds, run ``app(app_arg)`` on it
        (or route ``extension`` through the dialplan when given). Returns the channel.

        Success = answered, or early media unless ``ignore_early_media=true``
        (``switch_ivr_originate.c``).
        Failure raises :class:`OriginateError` with the cause (``-ERR <CAUSE>``).
        ``origination_uuid``, ``origination_caller_id_*``, ``originate_timeout``,
        ``ignore_early_media`` are read from ``variables`` and the dial string's ``{}``.
        """
        extra = dict(variables or {})
        if caller_id_name:
            extra.setdefault("origination_caller_id_name", caller_id_name)
        if caller_id_number:
            extra.setdefault("origination_caller_id_number", caller_id_number)
        s = await self.place_call(dial_string, extra, timeout=timeout, a_leg=None)
        self._fire(ev.CHANNEL_ORIGINATE, s)
        if extension is not None:
            s.channel.profile.destination_number = extension
            s.channel.profile.dialplan = dialplan
            s.channel.profile.context = context
            s.task = asyncio.get_running_loop().create_task(self._run(s, route=True))
        else:
            self.start_apps(s, [(app or "park", app_arg)])
        return s.channel

    async def place_call(
        self,
        dial: DialString | str,
        variables: Mapping[str, str],
        *,
        timeout: float | None,
        a_leg: Session | None,
        on_early: Callable[[Session], None] | None = None,
    ) -> Session:
        """Dial ``dial`` (text is parsed here; a :class:`DialString` is used as parsed).

        Steps in order (``|``), the legs of a step at once (``,``); enterprise groups
        (``:_:``) all at once, each running its own steps, early media not counting unless
        the dial string sets ``ignore_early_media`` (``switch_ivr_enterprise_originate``).
        Returns the winning outbound session (answered, or early when allowed); raises
        :class:`OriginateError` with the last failure cause.
        """
        if isinstance(dial, str):
            try:
                dial = parse_dial_string(dial)
            except DialStringError as exc:
                raise OriginateError(Cause.INVALID_URL, str(exc)) from None
        if not dial.enterprise:
            return await self._place_steps(
                dial.groups[0].steps, variables, timeout, a_leg, on_early
            )
        variables = {**variables, "ignore_early_media": "true"}  # the dial string's own wins
        tasks = [
            asyncio.ensure_future(
                self._place_steps(group.steps, variables, timeout, a_leg, on_early)
            )
            for group in dial.groups
        ]
        winner: Session | None = None
        try:
            pending = set(tasks)
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:  # in dial-string order when several finish together
                    if task in done and task.exception() is None:
                        winner = task.result()
                        break
        finally:
            for task in tasks:
                task.cancel()  # the other groups lose the race (their legs: LOSE_RACE)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:  # a second group that got through at the same moment
                if isinstance(result, Session) and result is not winner:
                    self._lose_race([result])
        if winner is not None:
            return winner
        last = Cause.NORMAL_UNSPECIFIED
        for task in tasks:
            failure = task.exception()
            if isinstance(failure, OriginateError):
                last = failure.cause
            elif failure is not None:
                raise failure
        raise OriginateError(last)

    async def _place_steps(
        self,
        steps: tuple[Step, ...],
        variables: Mapping[str, str],
        timeout: float | None,
        a_leg: Session | None,
        on_early: Callable[[Session], None] | None,
    ) -> Session:
        last = Cause.NORMAL_UNSPECIFIED
        for step in steps:
            if a_leg is not None and a_leg.is_hungup:
                raise OriginateError(Cause.ORIGINATOR_CANCEL)
            try:
                return await self._place_group(step, variables, timeout, a_leg, on_early)
            except OriginateError as exc:
                last = exc.cause
                log.debug("dial step %s failed: %s", step, exc)
        raise OriginateError(last)

    async def _place_group(
        self,
        group: Step,
        variables: Mapping[str, str],
        timeout: float | None,
        a_leg: Session | None,
        on_early: Callable[[Session], None] | None,
    ) -> Session:
        candidates: list[Session] = []
        errors: list[Cause] = []
        try:
            for leg in group:
                vars_ = {**variables, **leg.variables}
                try:
                    candidates.append(await self._start_leg(leg, vars_, a_leg))
                except OriginateError as exc:
                    errors.append(exc.cause)
        except asyncio.CancelledError:
            self._lose_race(candidates, a_leg)
            raise
        if not candidates:
            raise OriginateError(errors[-1] if errors else Cause.DESTINATION_OUT_OF_ORDER)
        t = timeout
        v = candidates[0].channel.variables
        for key in ("originate_timeout", "leg_timeout", "call_timeout"):
            if v.get(key, "").isdigit():
                t = float(v[key])
                break
        t = t if t is not None else DEFAULT_ORIGINATE_TIMEOUT
        ignore_early = candidates[0].channel.var_true("ignore_early_media") or (
            v.get("ignore_early_media") in ("ring_ready", "consume")
        )
        try:
            winner = await self._wait_first(candidates, t, ignore_early, a_leg, on_early)
        except asyncio.CancelledError:
            self._lose_race(candidates, a_leg)
            raise
        for c in candidates:
            if c is not winner and not c.is_hungup:
                self.hangup(c.uuid, Cause.LOSE_RACE if winner else Cause.NO_ANSWER)
        if winner is None:
            causes = [c.channel.hangup_cause for c in candidates if c.channel.hangup_cause]
            raise OriginateError(causes[-1] if causes else Cause.NO_ANSWER)
        return winner

    def _lose_race(self, sessions: list[Session], a_leg: Session | None = None) -> None:
        """Hang up the legs of a dial attempt that was cancelled: another enterprise group
        won (LOSE_RACE, FreeSWITCH's cancel cause for the losers of a race), or the A-leg
        hung up — a CANCEL reached us and its ``bridge`` was cancelled (ORIGINATOR_CANCEL).
        Every leg goes: CANCELled when ringing or at its first provisional response, BYEd
        at once if its 2xx crosses the CANCEL — never left up with no caller."""
        cause = (
            Cause.ORIGINATOR_CANCEL if a_leg is not None and a_leg.is_hungup else Cause.LOSE_RACE
        )
        for s in sessions:
            if not s.is_hungup:
                self.hangup(s.uuid, cause)

    async def _wait_first(
        self,
        cands: list[Session],
        timeout: float,
        ignore_early: bool,
        a_leg: Session | None,
        on_early: Callable[[Session], None] | None,
    ) -> Session | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        early_reported: set[str] = set()
        while True:
            for c in cands:
                if c.answered.is_set() and not c.is_hungup:
                    return c
                if c.early.is_set() and not c.is_hungup:
                    if not ignore_early and a_leg is None:
                        return c
                    if on_early is not None and c.uuid not in early_reported:
                        early_reported.add(c.uuid)
                        on_early(c)
            live = [c for c in cands if not c.is_hungup]
            if not live:
                return None
            if a_leg is not None and a_leg.is_hungup:
                for c in live:
                    self.hangup(c.uuid, Cause.ORIGINATOR_CANCEL)
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                for c in live:
                    self.hangup(c.uuid, Cause.NO_ANSWER)
                return None
            waiters = [
                asyncio.ensure_future(e.wait())
                for c in live
                for e in (c.answered, c.early, c.ended)
            ]
            if a_leg is not None:
                waiters.append(asyncio.ensure_future(a_leg.ended.wait()))
            _done, pending = await asyncio.wait(
                waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for p in pending:
                p.cancel()

    async def _start_leg(
        self, leg: DialLeg, variables: dict[str, str], a_leg: Session | None
    ) -> Session:
        if isinstance(leg.target, ErrorEndpoint):  # error/<cause> or a malformed endpoint
            raise OriginateError(parse_cause(leg.target.cause, Cause.NORMAL_UNSPECIFIED))
        kind = leg.kind
        endpoint = self.endpoints.get(kind)
        if endpoint is None:
            raise OriginateError(Cause.CHAN_NOT_IMPLEMENTED)
        emergency = a_leg is not None and a_leg.channel.variables.get(EMERGENCY_VAR) == "true"
        refusal = self.admit(emergency=emergency)
        if refusal is not None:
            log.warning("outbound leg to %s refused: %s", leg.endpoint, refusal.value)
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER, refusal.value)
        prof = CallerProfile(
            caller_id_name=variables.get(
                "origination_caller_id_name",
                a_leg.channel.profile.caller_id_name if a_leg else "Switchboard",
            ),
            caller_id_number=variables.get(
                "origination_caller_id_number",
                a_leg.channel.profile.caller_id_number if a_leg else "0000000000",
            ),
            destination_number=leg.endpoint.rsplit("/", 1)[-1],
        )
        # FreeSWITCH's originating_leg_uuid: on a leg created by ``bridge`` from another
        # channel, that channel's uuid (the A-leg). The switch owns it: an originate with no
        # A-leg never has one, whatever the dial string or the caller's variables say (billing
        # prices the sell side on legs without it, docs/billing.md).
        variables = {k: v for k, v in variables.items() if k != ORIGINATING_LEG_VAR}
        if a_leg is not None:
            variables[ORIGINATING_LEG_VAR] = a_leg.uuid
        if a_leg is not None and PAI_VAR in a_leg.channel.variables:
            variables.setdefault(PAI_VAR, a_leg.channel.variables[PAI_VAR])
        if emergency:
            # Both legs are the emergency call; the caller's location (RFC 6442) goes on
            # unchanged in the B-leg's INVITE (sip_h_ variables become headers).
            assert a_leg is not None
            variables[EMERGENCY_VAR] = "true"
            for k, v in a_leg.channel.variables.items():
                if k.startswith("sip_h_Geolocation"):
                    variables[k] = v
        try:
            s = self.create_session(
                direction="outbound",
                name=leg.endpoint,
                profile=prof,
                variables=variables,
                uuid=variables.get("origination_uuid"),
                other_leg=a_leg.uuid if a_leg is not None else None,
            )
        except OriginateError:
            self.limits.release()
            raise
        if emergency and a_leg is not None and BODY_PARTS in a_leg.data:
            s.data[BODY_PARTS] = a_leg.data[BODY_PARTS]
        if a_leg is not None:
            for k, v in a_leg.data.get("exported", {}).items():
                if k != ORIGINATING_LEG_VAR:
                    s.channel.set_var(k, v)
        self._fire(ev.CHANNEL_OUTGOING, s)
        try:
            await endpoint.place(s, leg)
        except OriginateError as exc:
            self._hangup(s, exc.cause, notify_leg=False)
            raise
        except asyncio.CancelledError:  # another enterprise group won, or the A-leg hung up
            gone = a_leg is not None and a_leg.is_hungup
            self._hangup(s, Cause.ORIGINATOR_CANCEL if gone else Cause.LOSE_RACE, notify_leg=True)
            raise
        except Exception:
            log.exception("endpoint %s failed placing %s", kind, leg.endpoint)
            self._hangup(s, Cause.DESTINATION_OUT_OF_ORDER, notify_leg=False)
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER) from None
        return s

    # ---------------------------------------------------------------- execution
    async def _run(self, s: Session, *, route: bool) -> None:
        try:
            await self._run_inner(s, route=route)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("channel %s: application loop failed", s.uuid)
            if not s.is_hungup:
                self._hangup(s, Cause.NORMAL_TEMPORARY_FAILURE, notify_leg=True)
        finally:
            s.task = None

    async def _run_inner(self, s: Session, *, route: bool) -> None:
        while not s.is_hungup:
            if route:
                route = False
                if s.transfer_to is not None:
                    s.channel.profile.destination_number = s.transfer_to
                    s.transfer_to = None
                self._set_state(s, ChannelState.CS_ROUTING)
                s.apps = self._route(s)
                if not s.apps:
                    log.info("no dialplan match for %r", s.channel.profile.destination_number)
                    self._hangup(s, Cause.NO_ROUTE_DESTINATION, notify_leg=True)
                    return
                if self.setup_hooks and not s.data.get("setup_done"):
                    s.data["setup_done"] = True
                    for hook in self.setup_hooks:
                        await hook(s)
                        if s.is_hungup:
                            return
            self._set_state(s, ChannelState.CS_EXECUTE)
            cmd: Command | None = None
            if not s.queue.empty():
                cmd = s.queue.get_nowait()
            elif s.apps and not s.parked:  # parked (park, socket): the dialplan waits
                app, arg = s.apps.pop(0)
                cmd = Command(app, arg)
            elif s.parked:
                self._set_state(s, ChannelState.CS_PARK)
                s.break_flag.clear()
                getter = asyncio.ensure_future(s.queue.get())
                ender = asyncio.ensure_future(s.ended.wait())
                brk = asyncio.ensure_future(s.break_flag.wait())
                await asyncio.wait({getter, ender, brk}, return_when=asyncio.FIRST_COMPLETED)
                ender.cancel()
                brk.cancel()
                if getter.done():
                    s.queue.put_nowait(getter.result())
                else:
                    getter.cancel()
                if s.transfer_to is not None:
                    route = True
                continue
            else:
                self._hangup(s, Cause.NORMAL_CLEARING, notify_leg=True)
                return
            for _ in range(cmd.loops):
                await self._exec_one(s, cmd)
                if s.is_hungup:
                    break
            if s.transfer_to is not None:
                route = True

    def _route(self, s: Session) -> list[tuple[str, str]]:
        if self.dialplan is None:
            return []
        p = s.channel.profile
        match = self.dialplan.match(
            destination=p.destination_number,
            caller=p.caller_id_number,
            source=p.network_addr,
            context=p.context,
        )
        if match is None:
            return []
        s.channel.set_var("dialplan_rule", match.rule)
        return list(match.apps)

    async def run_command(self, s: Session, cmd: Command) -> None:
        """Run one queued command (all its loops) from inside a running application — the
        ``socket`` application runs its program's ``sendmsg`` queue this way."""
        for _ in range(cmd.loops):
            await self._exec_one(s, cmd)
            if s.is_hungup:
                break

    async def _exec_one(self, s: Session, cmd: Command) -> None:
        from switchboard.media.dialplan import expand_vars

        name = cmd.app
        arg = expand_vars(cmd.arg, s.channel.variables)
        fn = self.apps.get(name)
        ch = s.channel
        extra = {"Application": name, "Application-Data": arg}
        if cmd.event_uuid:
            extra["Application-UUID"] = cmd.event_uuid
            extra["Application-UUID-Name"] = name
        ch.application, ch.application_data = name, arg
        if not name.startswith("_"):
            ch.last_app, ch.last_arg = name, arg
            ch.set_var("current_application", name)
            ch.set_var("current_application_data", arg)
        self._fire(ev.CHANNEL_EXECUTE, s, extra)
        response = "_none_"
        if fn is None:
            log.warning("channel %s: unknown application %r", s.uuid, name)
            response = "-ERR Invalid Application"
        else:
            s.break_flag.clear()
            s.current = asyncio.ensure_future(fn(s, arg))
            try:
                result = await s.current
                response = result if result is not None else "_none_"
            except asyncio.CancelledError:
                if s.task is not None and s.task.cancelling():
                    raise
                response = "-ERR cancelled"
            except Exception as exc:
                log.exception("channel %s: application %s(%s) failed", s.uuid, name, arg)
                response = f"-ERR {exc}"
            finally:
                s.current = None
        ch.application, ch.application_data = "", ""
        self._fire(ev.CHANNEL_EXECUTE_COMPLETE, s, {**extra, "Application-Response": response})
        if cmd.done is not None and not cmd.done.done():
            cmd.done.set_result(response)

    # ---------------------------------------------------------------- hangup
    def _hangup(
        self, s: Session, cause: Cause, *, notify_leg: bool, at: float | None = None
    ) -> None:
        ch = s.channel
        if not ch.mark_hangup(cause, time.time() if at is None else at):
            return
        ch.set_var("hangup_cause", cause.name)
        ch.set_var("hangup_cause_q850", str(cause.q850))
        self._fire(ev.CHANNEL_STATE, s)
        self._fire(ev.CHANNEL_CALLSTATE, s, {"Original-Channel-Call-State": "ACTIVE"})
        self._fire(ev.CHANNEL_HANGUP, s)
        s.ended.set()
        s.break_flag.set()
        if s.current is not None:
            s.current.cancel()
        partner = s.bridged_to
        if partner is not None and not partner.is_hungup:
            partner.data["partner_hangup_cause"] = cause
        self._spawn(self._finish(s, cause, notify_leg))

    async def _finish(self, s: Session, cause: Cause, notify_leg: bool) -> None:
        ch = s.channel
        try:
            if notify_leg and s.leg is not None:
                await s.leg.terminate(cause)
        except Exception:
            log.exception("channel %s: terminating the leg failed", s.uuid)
        if s.media is not None:
            try:
                s.media.close()
            except Exception:
                log.exception("channel %s: closing media failed", s.uuid)
        # let a running application see its cancellation before the completion events
        if s.task is not None and s.task is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(s.task), 1.0)
        while not s.queue.empty():
            cmd = s.queue.get_nowait()
            if cmd.done is not None and not cmd.done.done():
                cmd.done.set_result("-ERR channel hung up")
        self._set_state(s, ChannelState.CS_REPORTING)
        self._set_timestamps(ch)
        for hook in self.hangup_hooks:
            try:
                hook(s)
            except Exception:
                log.exception("hangup hook failed for %s", s.uuid)
        self._fire(ev.CHANNEL_HANGUP_COMPLETE, s)
        self._set_state(s, ChannelState.CS_DESTROY)
        self._fire(ev.CHANNEL_DESTROY, s)
        self._sessions.pop(s.uuid, None)
        self._channels_view.pop(s.uuid, None)
        if s.admitted:
            self.limits.release()
        s.release()
        if not log.isEnabledFor(logging.DEBUG):
            return
        # DEBUG, not INFO: the leg's CDR is its record; a line per leg written to the
        # supervisor's pipe cost ~7 % of a node's CPU at 150 calls/s (bench/platform-load)
        d = ch.durations()
        log.debug(
            "call %s %s dest=%s cause=%s sip=%s duration=%.1fs billsec=%.1fs",
            s.uuid,
            ch.direction,
            ch.profile.destination_number,
            cause.name,
            ch.sip_status,
            d["duration"],
            d["billsec"],
        )

    def _set_timestamps(self, ch: Channel) -> None:
        """switch_channel_set_timestamps: the CHANNEL_HANGUP_COMPLETE variables."""
        d = ch.durations()
        v = ch.variables

        def stamp(t: float | None, key: str) -> None:
            v[f"{key}_stamp"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""
            v[f"{key}_epoch"] = str(int(t)) if t else "0"
            v[f"{key}_uepoch"] = str(int(t * 1_000_000)) if t else "0"

        stamp(ch.created_at, "start")
        stamp(ch.answered_at, "answer")
        stamp(ch.progress_at, "progress")
        stamp(ch.progress_media_at, "progress_media")
        stamp(ch.hangup_at, "end")
        for key in ("duration", "billsec", "progresssec", "answersec", "waitsec",
                    "progress_mediasec"):  # fmt: skip
            v[key] = str(int(d[key]))
            v[key.replace("sec", "msec") if "sec" in key else f"m{key}"] = str(int(d[key] * 1000))
        v["mduration"] = str(int(d["duration"] * 1000))
        v["billmsec"] = str(int(d["billsec"] * 1000))
        v["flow_billsec"] = str(int(d["billsec"]))
        v["last_app"] = ch.last_app
        v["last_arg"] = ch.last_arg
        if ch.sip_status is not None:
            v["sip_term_status"] = str(ch.sip_status)
            v["proto_specific_hangup_cause"] = f"sip:{ch.sip_status}"
        if ch.hangup_disposition:
            v["sip_hangup_disposition"] = ch.hangup_disposition


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())


def _uptime_text(seconds: float) -> str:
    s = int(seconds)
    parts = [
        (s // (365 * 86400), "year"),
        ((s // 86400) % 365, "day"),
        ((s // 3600) % 24, "hour"),
        ((s // 60) % 60, "minute"),
        (s % 60, "second"),
        (int(seconds * 1000) % 1000, "millisecond"),
        (int(seconds * 1_000_000) % 1000, "microsecond"),
    ]
    return ", ".join(f"{n} {u}{'' if n == 1 else 's'}" for n, u in parts)


def new_uuid() -> str:
    """A fresh channel/job uuid (``create_uuid``)."""
    return str(uuid_mod.UUID(bytes=os.urandom(16), version=4))
