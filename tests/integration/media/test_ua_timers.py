"""The UA's outbound-leg timers with a fake clock: the transaction layer is pure (it
takes ``now``), so a stand-in endpoint drives it — no sockets for SIP, no sleeping. The leg
still opens its RTP sockets, hence an integration test."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from switchboard.esl.dialstring import DialLeg
from switchboard.media.applications import new_switch
from switchboard.media.causes import Cause
from switchboard.media.channel import CallerProfile
from switchboard.media.core import Switch
from switchboard.media.settings import GatewaySection
from switchboard.media.ua import UserAgent
from switchboard.sip.message import Request, make_response, parse_message
from switchboard.sip.timers import TimerValues
from switchboard.sip.transaction import Peer, Transmit

CARRIER = Peer("UDP", "127.0.0.1", 5090)


class FakeEndpoint:
    """What the UA needs of SipEndpoint, on a clock the test moves."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.now = 0.0
        self.loop = SimpleNamespace(time=lambda: self.now)
        self.sent: list[Request] = []

    def process(self, outputs: Any) -> None:
        for out in outputs:
            if isinstance(out, Transmit):
                self.transmit(out)
            else:
                self.ua._on_event(out)

    def transmit(self, out: Transmit) -> None:
        msg = parse_message(out.data)
        if isinstance(msg, Request):
            self.sent.append(msg)

    def feed(self, call: Any) -> None:
        self.process(call(self.now))

    def at(self, now: float) -> None:
        self.now = now
        self.process(self.ua.layer.handle_timer(now))

    def methods(self) -> list[str]:
        return [r.method for r in self.sent]


async def settle() -> None:
    """Let the switch's hangup tasks (CANCEL/BYE, closing media, CDR hooks) finish."""
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))


async def ringing_leg(timer_c: float | None) -> tuple[Switch, UserAgent, FakeEndpoint, Any]:
    sw = new_switch()
    ua = UserAgent(sw, timers=TimerValues(t1=0.5), timer_c=timer_c,
                   gateways={"carrier": GatewaySection()})  # fmt: skip
    ep = FakeEndpoint(ua)
    ua.endpoint = ep  # type: ignore[assignment]
    s = sw.create_session(direction="outbound", name="sofia/gateway/carrier/4930",
                          profile=CallerProfile())  # fmt: skip
    await ua.place(s, DialLeg("sofia/gateway/carrier/4930"))
    invite = ep.sent[0]
    ep.process(ua.layer.receive(make_response(invite, 180, to_tag="c1"), CARRIER, 0.1))
    return sw, ua, ep, s


async def test_timer_c_cancels_a_ringing_leg_and_the_guard_ends_it_without_answer() -> None:
    _, ua, ep, s = await ringing_leg(timer_c=181.0)
    ep.at(181.0)
    assert ep.methods() == ["INVITE"] and not s.is_hungup  # C restarted by the 180
    ep.at(181.2)  # §16.8: no final 181 s after the last provisional
    assert ep.methods() == ["INVITE", "CANCEL"]
    assert ep.sent[1].headers.get("Reason") == 'Q.850;cause=102;text="RECOVERY_ON_TIMER_EXPIRE"'
    assert s.channel.hangup_cause is Cause.RECOVERY_ON_TIMER_EXPIRE and s.channel.sip_status == 408
    await settle()
    assert s.media.closed and ep.methods() == ["INVITE", "CANCEL"]  # one CANCEL only
    # the carrier answers neither the CANCEL nor the INVITE: 64·T1 later both are gone
    ep.at(181.2 + 31.9)
    assert any(t.method == "INVITE" for t in ua.layer.clients.values())
    ep.at(181.2 + 32.0)
    assert ua.layer.clients == {} and ua.legs == {}


async def test_hangup_while_ringing_cancels_through_the_guard() -> None:
    sw, ua, ep, s = await ringing_leg(timer_c=None)
    sw.hangup(s.uuid, Cause.NO_ANSWER)  # e.g. the originate timeout
    for _ in range(100):  # the hangup task sends the CANCEL, then awaits the INVITE's end
        if len(ep.sent) == 2:
            break
        await asyncio.sleep(0)
    assert ep.methods() == ["INVITE", "CANCEL"]
    assert "cause=19" in (ep.sent[1].headers.get("Reason") or "")
    assert sw.session(s.uuid) is not None  # no CDR yet: the carrier may still answer
    ep.at(1000.0)  # never answered: the INVITE still ends (§9.1), no 408 rewrite
    await settle()
    assert ua.layer.clients == {} and sw.session(s.uuid) is None
    assert s.channel.hangup_cause is Cause.NO_ANSWER
