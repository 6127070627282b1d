"""The switch core against an in-memory endpoint: originate, apps, events, hangup, limits."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.media.applications import new_switch
from switchboard.media.causes import Cause
from switchboard.media.core import OriginateError, Switch
from switchboard.media.events import Event
from switchboard.media.limits import SessionLimiter
from tests.support.net import async_wait_until
from tests.support.switch import ScriptedEndpoint


@pytest.fixture
def sw() -> Switch:
    s = new_switch(name="media-t", limits=SessionLimiter(max_sessions=10, sessions_per_second=100))
    s.endpoints["sip"] = ScriptedEndpoint(s)
    return s


def collect(sw: Switch) -> list[Event]:
    got: list[Event] = []
    sw.events.subscribe(got.append)
    return got


async def test_originate_park_then_hangup_event_order(sw: Switch) -> None:
    got = collect(sw)
    ch = await sw.originate("{origination_uuid=u-1,foo=bar}sip:answer@127.0.0.1", app="park")
    assert ch.uuid == "u-1" and ch.answered and ch.variables["foo"] == "bar"
    await async_wait_until(lambda: any(e.name == "CHANNEL_PARK" for e in got))
    assert sw.hangup("u-1", "USER_BUSY")
    await async_wait_until(lambda: "u-1" not in sw.channels)
    names = [e.name for e in got if e.name not in ("CHANNEL_STATE", "CHANNEL_CALLSTATE")]
    assert names == [
        "CHANNEL_CREATE", "CHANNEL_OUTGOING", "CHANNEL_PROGRESS", "CHANNEL_ANSWER",
        "CHANNEL_ORIGINATE", "CHANNEL_EXECUTE", "CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY",
    ]  # fmt: skip
    complete = next(e for e in got if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert complete.headers["Hangup-Cause"] == "USER_BUSY"
    assert complete.headers["variable_hangup_cause_q850"] == "17"
    assert complete.headers["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
    assert list(complete.headers)[:2] == ["Event-Name", "Core-UUID"]
    assert "variable_billsec" in complete.headers
    dtmf_like = next(e for e in got if e.name == "CHANNEL_STATE")
    assert not any(k.startswith("variable_") for k in dtmf_like.headers)
    assert sw.limits.active == 0


async def test_channel_headers_rendered_only_while_a_subscriber_reads_them(sw: Switch) -> None:
    """Name-only subscribers (the node's counters, the journal) cost no channel snapshot;
    a reader that wants headers now and then (an Event Socket server with a client) gets
    the full channel headers of every event fired while it wants them."""
    names: list[Event] = []
    sw.events.subscribe(names.append, headers=False)
    reading = False
    full: list[Event] = []
    sw.events.subscribe(full.append, headers=lambda: reading)
    ch = await sw.originate("{origination_uuid=u-9}sip:answer@127.0.0.1", app="park")
    await async_wait_until(lambda: any(e.name == "CHANNEL_PARK" for e in names))
    park = next(e for e in full if e.name == "CHANNEL_PARK")
    assert park.channel_uuid == ch.uuid
    assert dict(park.headers) == {"Event-Name": "CHANNEL_PARK"}  # nothing was snapshotted
    reading = True
    assert sw.hangup("u-9", "NORMAL_CLEARING")
    await async_wait_until(lambda: any(e.name == "CHANNEL_DESTROY" for e in full))
    complete = next(e for e in full if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert complete.headers["Unique-ID"] == "u-9"
    assert complete.headers["Hangup-Cause"] == "NORMAL_CLEARING"
    assert "variable_billsec" in complete.headers
    assert [e.name for e in names] == [e.name for e in full]  # both saw every event


async def test_originate_failure_cause_and_early_media(sw: Switch) -> None:
    with pytest.raises(OriginateError) as err:
        await sw.originate("sip:busy@127.0.0.1")
    assert err.value.cause is Cause.USER_BUSY
    ch = await sw.originate("sip:early@127.0.0.1", timeout=1)
    assert (
        not ch.answered and ch.call_state.value == "EARLY"
    )  # early media counts (FreeSWITCH's early_ok)
    sw.hangup(ch.uuid)
    with pytest.raises(OriginateError) as err:
        await sw.originate("{ignore_early_media=true}sip:early@127.0.0.1", timeout=0.2)
    assert err.value.cause is Cause.NO_ANSWER
    with pytest.raises(OriginateError) as err:
        await sw.originate("error/user_busy")
    assert err.value.cause is Cause.USER_BUSY
    with pytest.raises(OriginateError) as err:
        await sw.originate("bogus/thing")  # no such endpoint module, as over the Event Socket
    assert err.value.cause is Cause.CHAN_NOT_IMPLEMENTED
    with pytest.raises(OriginateError) as err:
        await sw.originate("nothing")  # no technology at all
    assert err.value.cause is Cause.INVALID_URL


async def test_failover_and_parallel_groups(sw: Switch) -> None:
    ch = await sw.originate("sip:busy@h|sip:answer@h")
    assert ch.answered
    ch2 = await sw.originate("sip:busy@h,sip:answer@h")
    assert ch2.answered
    await async_wait_until(lambda: len(sw.channels) == 2)


async def test_enterprise_groups_race_and_early_media_does_not_win(sw: Switch) -> None:
    got = collect(sw)
    # Alone, "early" would win on its 183; across enterprise groups only an answer counts.
    ch = await sw.originate("<x=1>sip:early@h:_:{y=2}sip:answer@h", timeout=2)
    assert ch.answered and ch.name == "sip:answer@h"
    assert ch.variables["x"] == "1" and ch.variables["y"] == "2"
    await async_wait_until(lambda: len(sw.channels) == 1)
    (lost,) = [e for e in got if e.name == "CHANNEL_HANGUP_COMPLETE"]
    assert lost.headers["Caller-Destination-Number"] == "sip:early@h"
    assert lost.headers["Hangup-Cause"] == "LOSE_RACE"
    with pytest.raises(OriginateError) as err:  # every group failed: the last group's cause
        await sw.originate("sip:busy@h:_:error/NO_ROUTE_DESTINATION")
    assert err.value.cause is Cause.NO_ROUTE_DESTINATION
    assert sw.hupall() == 1


async def test_execute_queue_and_application_uuid(sw: Switch) -> None:
    got = collect(sw)
    ch = await sw.originate("sip:answer@h", app="park")
    fut = sw.execute(ch.uuid, "set", "x=1", event_uuid="ev-9")
    assert await asyncio.wait_for(fut, 1) == "_none_"
    assert sw.getvar(ch.uuid, "x") == "1"
    done = [
        e
        for e in got
        if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.headers.get("Application-UUID") == "ev-9"
    ]
    assert done and done[0].headers["Application"] == "set"
    assert (
        await asyncio.wait_for(sw.execute(ch.uuid, "no_such_app"), 1) == "-ERR Invalid Application"
    )
    assert ch.uuid in sw.channels  # still parked
    sw.execute(ch.uuid, "hangup", "CALL_REJECTED")
    await async_wait_until(lambda: ch.uuid not in sw.channels)
    assert ch.hangup_cause is Cause.CALL_REJECTED


async def test_one_app_extension_ends_with_normal_clearing(sw: Switch) -> None:
    ch = await sw.originate("sip:answer@h", app="sleep", app_arg="10")
    await async_wait_until(lambda: ch.uuid not in sw.channels)
    assert ch.hangup_cause is Cause.NORMAL_CLEARING


async def test_outbound_limit_gives_destination_out_of_order() -> None:
    sw = new_switch(limits=SessionLimiter(max_sessions=1, sessions_per_second=100))
    sw.endpoints["sip"] = ScriptedEndpoint(sw)
    await sw.originate("sip:answer@h")
    with pytest.raises(OriginateError) as err:
        await sw.originate("sip:answer@h")
    assert err.value.cause is Cause.DESTINATION_OUT_OF_ORDER
    assert sw.hupall() == 1


async def test_a_bridge_b_leg_carries_its_a_leg_and_an_originate_does_not(sw: Switch) -> None:
    """FreeSWITCH's originating_leg_uuid: set by the switch on a leg placed for another
    channel (what ``bridge`` does), never on an originate with no A-leg, even if asked to.
    It reaches the leg's CDR as ``originating_leg`` (billing prices no sell side there)."""
    from switchboard.media.cdr import build_cdr

    a = await sw.originate("{originating_leg_uuid=spoofed}sip:answer@h", app="park")
    assert "originating_leg_uuid" not in a.variables
    a_session = sw.session(a.uuid)
    assert a_session is not None
    b = await sw.place_call("sip:answer@h", {}, timeout=1, a_leg=a_session)
    assert b.channel.variables["originating_leg_uuid"] == a.uuid
    assert build_cdr(b, "media-t").originating_leg == a.uuid
    assert build_cdr(a_session, "media-t").originating_leg == ""
    sw.hangup(b.uuid)
    sw.hangup(a.uuid)
    await async_wait_until(lambda: not sw.channels)
