"""The Event Socket and the switch read every dial string alike.

Each dial string of the table goes through both entry points a user has:

* the Event Socket: ``api originate <dial string> &park`` from a client over TCP;
* the switch: the dialplan's ``bridge <dial string>`` application on a parked A-leg.

A recording endpoint stands in for SIP (every technology: ``user/``, ``sofia/gateway/``,
``sofia/<profile>/``, ``sip:``, ``loopback/``). Both paths must dial the same legs, in the
same steps, with the same variables on the channels, and end the same way (``+OK`` /
``-ERR <CAUSE>``). Before the grammar was one module, the Event Socket read
``<ignore_early_media=true>user/1000:_:sofia/gateway/carrier/123`` as two enterprise groups
and the switch as one leg of no known technology.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.esl.dialstring import DialLeg, DialString
from switchboard.media import core
from switchboard.media.applications import new_switch
from switchboard.media.causes import Cause
from switchboard.media.core import Session, Switch
from switchboard.media.event_socket import EslSettings, EventSocketServer
from switchboard.media.limits import SessionLimiter
from switchboard.media.rtp_endpoint import RtpEndpoint
from tests.support.esl.client import EslClient
from tests.support.switch import ScriptedLeg

# Variables the table sets; what the placed channels carry of them is compared.
WATCHED = ("x", "list", "note", "a", "b", "g", "ignore_early_media")


@dataclass(frozen=True)
class Placed:
    endpoint: str
    kind: str
    variables: tuple[tuple[str, str], ...]


class RecordingEndpoint:
    """Records every leg the switch places; the number decides: ``busy`` → 486, else answer.
    Each leg gets a real RTP endpoint on 127.0.0.1 so that ``bridge`` can relay."""

    def __init__(self, sw: Switch) -> None:
        self.sw = sw
        self.placed: list[Placed] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def place(self, s: Session, leg: DialLeg) -> None:
        s.leg = ScriptedLeg()
        s.media = await RtpEndpoint.open("127.0.0.1", rtcp=False)  # bridge relays media
        v = s.channel.variables
        self.placed.append(
            Placed(leg.endpoint, leg.kind, tuple((k, v[k]) for k in WATCHED if k in v))
        )
        number = leg.endpoint.rsplit("/", 1)[-1].removeprefix("sip:").split("@")[0]

        async def progress() -> None:
            await asyncio.sleep(0.01)
            if s.is_hungup:
                return
            if number == "busy":
                self.sw.on_remote_hangup(
                    s, Cause.USER_BUSY, sip_status=486, disposition="recv_refuse"
                )
            else:
                self.sw.on_answer(s)

        task = asyncio.get_running_loop().create_task(progress())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@pytest.fixture
async def node() -> AsyncIterator[tuple[Switch, RecordingEndpoint, EventSocketServer]]:
    sw = new_switch(
        name="media-t", limits=SessionLimiter(max_sessions=100, sessions_per_second=1000)
    )
    rec = RecordingEndpoint(sw)
    for kind in ("gateway", "user", "sofia", "sip", "loopback"):
        sw.endpoints[kind] = rec
    srv = EventSocketServer(sw, EslSettings(port=0, heartbeat=0))
    await srv.start()
    yield sw, rec, srv
    await srv.close()
    await sw.stop()


async def settle(sw: Switch) -> None:
    """Hang everything up and wait until no channel is left."""
    sw.hupall()
    deadline = asyncio.get_running_loop().time() + 5
    while sw.channels:
        assert asyncio.get_running_loop().time() < deadline, f"channels left: {list(sw.channels)}"
        await asyncio.sleep(0.005)


async def via_event_socket(
    sw: Switch, rec: RecordingEndpoint, port: int, dial: str
) -> tuple[str, list[Placed]]:
    rec.placed.clear()
    client = await EslClient.connect(port)
    try:
        body = await client.api(f"originate {dial} &park")
    finally:
        await client.close()
    placed = list(rec.placed)
    await settle(sw)
    return ("+OK" if body.startswith("+OK ") else body.rstrip("\n")), placed


async def via_bridge(sw: Switch, rec: RecordingEndpoint, dial: str) -> tuple[str, list[Placed]]:
    a = await sw.originate("{continue_on_fail=true}sip:caller@127.0.0.1", app="park")
    rec.placed.clear()
    done = sw.execute(a.uuid, "bridge", dial)
    deadline = asyncio.get_running_loop().time() + 5
    while not done.done() and a.variables.get("DIALSTATUS") != "SUCCESS":
        assert asyncio.get_running_loop().time() < deadline, "bridge neither failed nor connected"
        await asyncio.sleep(0.005)
    outcome = "+OK" if a.variables.get("DIALSTATUS") == "SUCCESS" else done.result()
    placed = list(rec.placed)
    await settle(sw)
    return outcome, placed


TABLE = [
    # (dial string, outcome, endpoints dialled)
    (
        "<ignore_early_media=true>user/1000:_:sofia/gateway/carrier/123",
        "+OK",
        ["user/1000", "sofia/gateway/carrier/123"],
    ),
    ("user/busy:_:sofia/gateway/carrier/123", "+OK", ["user/busy", "sofia/gateway/carrier/123"]),
    ("sofia/gateway/carrier/busy|user/1000", "+OK", ["sofia/gateway/carrier/busy", "user/1000"]),
    ("user/busy,user/1000", "+OK", ["user/busy", "user/1000"]),
    ("user/busy|error/NO_ROUTE_DESTINATION", "-ERR NO_ROUTE_DESTINATION", ["user/busy"]),
    (
        "{list=a\\,b,note='x, y'}[g=1]sofia/gateway/carrier/123",
        "+OK",
        ["sofia/gateway/carrier/123"],
    ),
    ("{^^;a=1,2;b=3}user/1000", "+OK", ["user/1000"]),
    ("<x=1>{x=2}[x=3]user/1000", "+OK", ["user/1000"]),
    ("loopback/1000", "+OK", ["loopback/1000"]),
    ("loopback/9999/internal/XML", "+OK", ["loopback/9999/internal/XML"]),
    ("sofia/internal/1000@127.0.0.1", "+OK", ["sofia/internal/1000@127.0.0.1"]),
    ("sip:1000@127.0.0.1", "+OK", ["sip:1000@127.0.0.1"]),
    ("error/USER_BUSY", "-ERR USER_BUSY", []),
    ("bogus/1000", "-ERR CHAN_NOT_IMPLEMENTED", []),
    ("sofia/gateway/carrier", "-ERR INVALID_URL", []),
    ("user/1000,", "-ERR INVALID_URL", []),
]


@pytest.mark.parametrize(("dial", "outcome", "dialled"), TABLE, ids=[t[0] for t in TABLE])
async def test_event_socket_and_bridge_read_the_dial_string_alike(
    node: tuple[Switch, RecordingEndpoint, EventSocketServer],
    dial: str,
    outcome: str,
    dialled: list[str],
) -> None:
    sw, rec, srv = node
    esl_outcome, esl_placed = await via_event_socket(sw, rec, srv.port, dial)
    bridge_outcome, bridge_placed = await via_bridge(sw, rec, dial)
    assert esl_outcome == bridge_outcome == outcome
    assert sorted(p.endpoint for p in esl_placed) == sorted(dialled)
    assert sorted(esl_placed, key=repr) == sorted(bridge_placed, key=repr)


async def test_the_variables_each_leg_gets(
    node: tuple[Switch, RecordingEndpoint, EventSocketServer],
) -> None:
    sw, rec, srv = node
    cases = {
        "{list=a\\,b,note='x, y'}[g=1]sofia/gateway/carrier/123": {
            "list": "a,b", "note": "x, y", "g": "1",
        },
        "{^^;a=1,2;b=3}user/1000": {"a": "1,2", "b": "3"},
        "<x=1>{x=2}[x=3]user/1000": {"x": "3"},
        # enterprise: early media does not count, so ignore_early_media is set on every leg
        "<x=1>user/1000:_:user/1001": {"x": "1", "ignore_early_media": "true"},
    }  # fmt: skip
    for dial, want in cases.items():
        for _, placed in (
            await via_event_socket(sw, rec, srv.port, dial),
            await via_bridge(sw, rec, dial),
        ):
            assert placed and all(dict(p.variables) == want for p in placed), (dial, placed)


async def test_the_event_socket_parses_once_and_hands_the_structure_on(
    node: tuple[Switch, RecordingEndpoint, EventSocketServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    sw, rec, srv = node
    reparsed: list[str] = []
    real_parse = core.parse_dial_string
    monkeypatch.setattr(core, "parse_dial_string", lambda t: reparsed.append(t) or real_parse(t))
    dialled: list[object] = []
    real_place_call = sw.place_call

    async def place_call(dial: DialString | str, *args: Any, **kwargs: Any) -> Session:
        dialled.append(dial)
        return await real_place_call(dial, *args, **kwargs)

    monkeypatch.setattr(sw, "place_call", place_call)
    outcome, _ = await via_event_socket(sw, rec, srv.port, "<x=1>user/1000:_:user/1001")
    assert outcome == "+OK"
    assert [type(d) for d in dialled] == [DialString] and reparsed == []
    outcome, _ = await via_bridge(sw, rec, "user/1000")  # bridge text is parsed by the switch
    assert outcome == "+OK" and reparsed[-1] == "user/1000"
