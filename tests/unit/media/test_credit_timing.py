"""A prepaid call is cut when the time it bought has passed on the wall clock, not a
millisecond before: billsec rounds down, so a cut at 7.999 s bills 7 s of 8 bought (seen
in the crash-recovery e2e: uvloop's timers fire up to ~1 ms early, one time in five)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import uvloop

from switchboard.billing.credit import BillingUnavailable
from switchboard.media.credit import CallCredit


@dataclass
class FakeSession:
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    is_hungup: bool = False


def test_the_wait_for_a_credit_limit_never_ends_before_the_wall_clock_reaches_it() -> None:
    async def run() -> list[float]:
        s = FakeSession()
        early = []
        for i in range(60):
            when = time.time() + 0.002 + (i % 7) * 0.0013
            assert await CallCredit._ends_before(s, when) is False  # type: ignore[arg-type]
            if (now := time.time()) < when:
                early.append(when - now)
        return early

    assert uvloop.run(run()) == []


def test_a_leg_that_ends_first_is_reported_at_once() -> None:
    async def run() -> tuple[bool, float]:
        s = FakeSession()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, s.ended.set)
        t0 = time.monotonic()
        ended = await CallCredit._ends_before(s, time.time() + 5)  # type: ignore[arg-type]
        return ended, time.monotonic() - t0

    ended, took = uvloop.run(run())
    assert ended and took < 1


class _Credit:
    """CreditControl whose database answers nothing: every authorisation fails closed."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, int]] = []

    async def authorise(self, call_id: str, destination: str, **_kw: object) -> None:
        raise BillingUnavailable("connection lost")

    async def settle(self, call_id: str, billsec: int, **_kw: object) -> None:
        self.settled.append((call_id, billsec))


def test_a_call_refused_for_an_unreachable_database_releases_what_a_lost_answer_reserved() -> None:
    """An authorisation whose commit went through but whose answer was lost (the
    connection broke in a PostgreSQL failover) leaves a reservation the node never heard
    of. When the node gives up and refuses the call, it settles the call id at 0 s — which
    releases such a reservation and does nothing otherwise — instead of leaving the funds
    reserved until the reservation expires (seen in the HA lab: 1.20 left reserved after
    a failover at 50 calls/s)."""
    hung: list[str] = []
    channel = SimpleNamespace(
        direction="inbound",
        profile=SimpleNamespace(
            destination_number="4930123456", network_addr="192.0.2.1", caller_id_number="1"
        ),
        variables={},
        set_var=lambda k, v: channel.variables.__setitem__(k, v),
    )
    s = SimpleNamespace(uuid="u-1", channel=channel, is_hungup=False, ended=asyncio.Event())
    switch = SimpleNamespace(hangup=lambda uuid, cause: hung.append(uuid))
    credit = _Credit()
    cc = CallCredit(switch, credit, authorise_retry_for=0.0)  # type: ignore[arg-type]

    async def run() -> None:
        await cc.on_setup(s)  # type: ignore[arg-type]
        await asyncio.gather(*cc._settling)

    uvloop.run(run())
    assert hung == ["u-1"]
    assert channel.variables["proto_specific_hangup_cause"] == "sip:503"
    assert credit.settled == [("u-1", 0)]
