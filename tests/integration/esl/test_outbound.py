"""Outbound Event Socket (the ``socket`` dialplan application) against a real switch core
with the scripted far end: the test plays the external program, a TCP server the node
connects to, and reads the bytes exactly as strict clients do (tests/esl/client.py).

What is checked is what a program sees: the ``connect`` reply's shape, no events before
``myevents``, events in order, nothing lost at hangup with ``linger`` (the disconnect
right at hangup without it), the single-channel command set without ``full``, ``sendmsg``
waiting in static mode and ordered by ``event-lock``, ``resume``, and the call's fate when
the program dies or cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from switchboard.media.core import Switch
from switchboard.media.dialplan import Dialplan
from switchboard.media.event_socket import EventSocketServer
from switchboard.media.events import Event
from tests.support.esl.client import EslClient, Frame
from tests.support.net import async_wait_until, free_port

pytestmark = pytest.mark.timeout(60)


@dataclass
class Program:
    """The external program: accepts the node's connections, one EslClient per call."""

    server: asyncio.Server | None = None
    calls: asyncio.Queue[EslClient] = field(default_factory=asyncio.Queue)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.calls.put(EslClient(reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)

    async def call(self, timeout: float = 5.0) -> EslClient:
        return await asyncio.wait_for(self.calls.get(), timeout)


@pytest.fixture
async def program() -> AsyncIterator[Program]:
    p = Program()
    await p.start()
    yield p
    assert p.server is not None
    p.server.close()


def events_of(switch: Switch) -> list[Event]:
    got: list[Event] = []
    switch.events.subscribe(got.append)
    return got


def route(switch: Switch, *actions: str) -> None:
    switch.dialplan = Dialplan.from_config(
        [{"name": "socket-test", "destination": "^9000$", "actions": list(actions)}]
    )


async def originate(server: EventSocketServer, target: str) -> None:
    """A call placed by the scripted far end, then sent through ``target``."""
    body = await server.api.execute("originate", f"sofia/gateway/carrier/answer {target}")
    assert body.startswith("+OK"), body


def hangup_of(events: list[Event], uuid: str) -> str | None:
    for e in events:
        if e.name == "CHANNEL_HANGUP" and e.headers.get("Unique-ID") == uuid:
            return e.headers.get("Hangup-Cause")
    return None


async def read_until_eof(client: EslClient, timeout: float = 5.0) -> list[Frame]:
    frames = []
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            frames.append(await client.read(timeout))
    return frames


async def test_connect_myevents_and_linger_deliver_every_event_in_order(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port} async full", "hangup")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    data = await call.read()
    # a serialised CHANNEL_DATA event, the reply headers at the bottom, no Content-Length
    names = list(data.headers)
    assert names[0] == "Event-Name" and data.headers["Event-Name"] == "CHANNEL_DATA"
    assert names[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert data.headers["Reply-Text"] == "%2BOK%0A"  # "+OK\n", URL-encoded like any value
    assert (data.headers["Socket-Mode"], data.headers["Control"]) == ("async", "full")
    assert "Content-Length" not in data.headers and data.body == b""
    uuid = data.headers["Unique-ID"]
    assert data.headers["variable_uuid"] == uuid
    assert data.headers["Caller-Destination-Number"] == "9000"
    assert data.headers["Answer-State"] == "answered"

    # nothing before myevents: a command round trip shows no event frame queued
    reply = await call.command("getvar uuid")
    assert reply.headers["Reply-Text"] == uuid and not call.pending
    assert (await call.command("myevents")).headers["Reply-Text"] == "+OK Events Enabled"
    assert (await call.command("myevents")).headers["Reply-Text"] == "-ERR aready enabled."
    assert (await call.command("linger 1")).headers["Reply-Text"] == "+OK will linger 1 seconds"
    for app, arg in (("set", "ivr_choice=2"), ("sleep", "200")):
        reply = await call.command(
            "sendmsg",
            {"call-command": "execute", "execute-app-name": app, "execute-app-arg": arg,
             "event-lock": "true", "event-uuid": f"app-{app}"},
        )  # fmt: skip
        assert reply.headers["Reply-Text"] == "+OK"
    reply = await call.command(
        "sendmsg", {"call-command": "hangup", "hangup-cause": "NORMAL_CLEARING"}
    )
    assert reply.headers["Reply-Text"] == "+OK"

    frames = await read_until_eof(call, timeout=10)
    seen = []
    for f in frames:
        if f.content_type == "text/event-plain":
            ev = f.event()
            assert ev["Unique-ID"] == uuid
            seen.append((ev["Event-Name"], ev.get("Application", ""), int(ev["Event-Sequence"])))
        else:
            seen.append((f.content_type, f.headers.get("Content-Disposition", ""), 0))
    sequence = [n for _, _, n in seen if n]
    assert sequence == sorted(sequence), seen
    order = [(name, app) for name, app, _ in seen if name != "CHANNEL_STATE"]
    # the locked hangup waited for both applications; linger kept the socket open after
    # CHANNEL_HANGUP, so HANGUP_COMPLETE and DESTROY arrive; then the linger time (1 s) or
    # nothing: the program closes below
    assert order[:6] == [
        ("CHANNEL_EXECUTE", "set"), ("CHANNEL_EXECUTE_COMPLETE", "set"),
        ("CHANNEL_EXECUTE", "sleep"), ("CHANNEL_EXECUTE_COMPLETE", "sleep"),
        ("CHANNEL_EXECUTE", "hangup"), ("CHANNEL_HANGUP", ""),
    ], order  # fmt: skip
    rest = [name for name, _ in order[6:]]
    assert rest[0] == "text/disconnect-notice"  # Content-Disposition: linger
    assert seen[[s[0] for s in seen].index("text/disconnect-notice")][1] == "linger"
    assert "CHANNEL_HANGUP_COMPLETE" in rest and rest.index("CHANNEL_HANGUP_COMPLETE") > 0
    assert rest[-1] == "text/disconnect-notice"  # the linger time ran out: disconnect
    complete = next(
        f.event() for f in frames
        if f.content_type == "text/event-plain"
        and f.event()["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
    )  # fmt: skip
    assert complete["variable_ivr_choice"] == "2"
    assert complete["Hangup-Cause"] == "NORMAL_CLEARING"


async def test_without_linger_the_socket_closes_at_hangup(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port} async full")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    uuid = (await call.read()).headers["Unique-ID"]
    await call.command("myevents")
    await call.command("sendmsg", {"call-command": "hangup", "hangup-cause": "USER_BUSY"})
    frames = await read_until_eof(call)
    names = [f.event()["Event-Name"] if f.content_type.startswith("text/event") else
             f.content_type for f in frames]  # fmt: skip
    assert "CHANNEL_HANGUP" in names
    assert "CHANNEL_HANGUP_COMPLETE" not in names  # lost: the complaint linger answers
    assert names[-1] == "text/disconnect-notice"
    notice = frames[-1].headers
    assert notice["Controlled-Session-UUID"] == uuid
    assert notice["Content-Disposition"] == "disconnect"


async def test_single_channel_mode_and_static_sendmsg(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port}")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    data = await call.read()
    assert (data.headers["Socket-Mode"], data.headers["Control"]) == ("static", "single-channel")
    for refused in ("event plain ALL", "linger", "api status", "bgapi status", "log 7"):
        assert (await call.command(refused)).headers["Reply-Text"] == "-ERR command not found", (
            refused
        )
    assert (
        (await call.command("filter Unique-ID x"))
        .headers["Reply-Text"]
        .startswith("+OK filter added")
    )
    loop = asyncio.get_running_loop()
    sleep = {"call-command": "execute", "execute-app-name": "sleep", "execute-app-arg": "400"}
    started = loop.time()
    assert (await call.command("sendmsg", sleep)).headers["Reply-Text"] == "+OK"
    assert loop.time() - started >= 0.4  # static mode: the reply waits for the application
    started = loop.time()
    assert (await call.command("sendmsg", {**sleep, "async": "true"})).headers[
        "Reply-Text"
    ] == "+OK"
    assert loop.time() - started < 0.3
    await call.command("exit")
    await call.close()


async def test_program_dying_mid_call_ends_the_call_after_the_running_application(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    events = events_of(esl_switch)
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port} async full", "set never=1")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    uuid = (await call.read()).headers["Unique-ID"]
    sleep = {"call-command": "execute", "execute-app-name": "sleep", "execute-app-arg": "300"}
    await call.command("sendmsg", sleep)
    call.writer.transport.abort()  # the program dies: RST, no exit
    await async_wait_until(lambda: hangup_of(events, uuid) is not None)
    assert hangup_of(events, uuid) == "NORMAL_CLEARING"
    done = [e for e in events if e.name == "CHANNEL_EXECUTE_COMPLETE"
            and e.headers.get("Unique-ID") == uuid]  # fmt: skip
    apps = [(e.headers["Application"], e.headers["Application-Response"]) for e in done]
    assert ("sleep", "_none_") in apps  # the running application was not cut short
    assert not any(a == "set" for a, _ in apps)  # no resume: the dialplan did not go on
    assert [e.name for e in events if e.headers.get("Unique-ID") == uuid].count(
        "CHANNEL_UNPARK"
    ) == 1


async def test_resume_continues_the_dialplan_when_the_program_leaves(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    events = events_of(esl_switch)
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port} async full",
          "set after_socket=yes", "hangup USER_BUSY")  # fmt: skip
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    uuid = (await call.read()).headers["Unique-ID"]
    assert (await call.command("resume")).headers["Reply-Text"] == "+OK"
    assert (await call.command("exit")).headers["Reply-Text"] == "+OK bye"
    await async_wait_until(lambda: hangup_of(events, uuid) is not None)
    assert hangup_of(events, uuid) == "USER_BUSY"
    complete = next(e for e in events if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert complete.headers["variable_after_socket"] == "yes"
    assert complete.headers["variable_socket_resume"] == "true"


async def test_unreachable_program_leaves_the_call_to_the_next_action(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    events = events_of(esl_switch)
    dead = free_port("tcp")  # nobody listens there
    route(esl_switch, "answer", f"socket 127.0.0.1:{dead} async full", "hangup CALL_REJECTED")
    await originate(esl_server, "9000")
    await async_wait_until(lambda: any(e.name == "CHANNEL_HANGUP" for e in events))
    socket_done = next(e for e in events if e.name == "CHANNEL_EXECUTE_COMPLETE"
                       and e.headers["Application"] == "socket")  # fmt: skip
    assert socket_done.headers["Application-Response"].startswith("-ERR Socket Error")
    assert (
        next(e for e in events if e.name == "CHANNEL_HANGUP").headers["Hangup-Cause"]
        == "CALL_REJECTED"
    )

    # several hosts: tried in order, the first that answers gets the call
    route(esl_switch, "answer", f"socket 127.0.0.1:{dead}|127.0.0.1:{program.port} async full")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    assert (await call.read()).headers["Event-Name"] == "CHANNEL_DATA"
    await call.command("exit")
    await call.close()


async def test_hangup_without_event_lock_cuts_the_running_application(
    esl_server: EventSocketServer, esl_switch: Switch, program: Program
) -> None:
    events = events_of(esl_switch)
    route(esl_switch, "answer", f"socket 127.0.0.1:{program.port} async full")
    await originate(esl_server, "9000")
    call = await program.call()
    call.send("connect")
    uuid = (await call.read()).headers["Unique-ID"]
    sleep = {"call-command": "execute", "execute-app-name": "sleep", "execute-app-arg": "5000"}
    await call.command("sendmsg", sleep)
    await async_wait_until(lambda: any(e.name == "CHANNEL_EXECUTE" and
                               e.headers.get("Application") == "sleep" for e in events))  # fmt: skip
    await call.command("sendmsg", {"call-command": "hangup", "hangup-cause": "ORIGINATOR_CANCEL"})
    await async_wait_until(lambda: hangup_of(events, uuid) is not None, timeout=2)
    assert hangup_of(events, uuid) == "ORIGINATOR_CANCEL"
    await call.close()
