"""The ``loopback/`` endpoint (mod_loopback): two channels joined back to back inside a node.

``loopback/<exten>[/<context>[/<dialplan>]]`` creates an originated ``-a`` half and an
inbound ``-b`` half that runs the dialplan; what the b-half does to its caller (ring,
pre-answer, answer, hang up, DTMF) happens to the a-half. Each half has an RTP endpoint
sending to the other's, so media applications work on both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from switchboard.esl.dialstring import DialLeg, LoopbackEndpoint
from switchboard.media.causes import Cause
from switchboard.media.channel import CallerProfile
from switchboard.media.core import OriginateError, Switch
from switchboard.media.rtp_endpoint import RtpEndpoint

log = logging.getLogger(__name__)


class _LoopbackLeg:
    """Signalling side of one half of a loopback pair: the other half hears about it.

    The b-half is an inbound channel that runs the dialplan; what it does to its caller
    (ring, pre-answer, answer, hang up) happens to the a-half, as in mod_loopback.
    """

    def __init__(self, switch: Switch, partner: Callable[[], Any]) -> None:
        self.switch = switch
        self.partner = partner

    async def ring(self) -> None:
        other = self.partner()
        if other is not None and not other.is_hungup:
            self.switch.on_ringing(other)

    async def pre_answer(self) -> None:
        other = self.partner()
        if other is not None and not other.is_hungup:
            self.switch.on_early(other)

    async def answer(self) -> None:
        other = self.partner()
        if other is not None and not other.is_hungup:
            self.switch.on_answer(other)

    async def terminate(self, cause: Cause) -> None:
        other = self.partner()
        if other is not None and not other.is_hungup:
            self.switch.on_remote_hangup(other, cause, disposition="recv_bye")

    async def send_dtmf(self, digits: str, duration_ms: int) -> None:
        other = self.partner()
        for digit in digits:
            if other is not None and not other.is_hungup:
                self.switch.on_dtmf(other, digit, duration_ms * 8, "ENDPOINT")

    async def hold(self, on: bool) -> None:
        return None


class LoopbackChannels:
    """``loopback/<exten>[/<context>[/<dialplan>]]`` (mod_loopback.c).

    Two channels, ``loopback/<exten>-a`` (the originated leg) and ``loopback/<exten>-b``
    (an inbound leg routed through the dialplan). Each half has an RTP endpoint sending to
    the other's, so media applications work on both sides. Installed by the Event Socket
    server when the node has no ``loopback`` endpoint of its own.
    """

    def __init__(self, switch: Switch) -> None:
        self.switch = switch

    async def place(self, session: Any, leg: DialLeg) -> None:
        sw = self.switch
        target = leg.target
        if not isinstance(target, LoopbackEndpoint):
            raise OriginateError(Cause.INVALID_URL, leg.endpoint)
        if (
            sw.admit() is not None
        ):  # the b-leg is a session too (decrement-then-check, media/limits.py)
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER, "loopback b-leg refused")
        a_ch = session.channel
        a_ch.name = f"loopback/{target.exten}-a"
        profile = CallerProfile(
            caller_id_name=a_ch.profile.caller_id_name,
            caller_id_number=a_ch.profile.caller_id_number,
            destination_number=target.exten,
            dialplan=target.dialplan,
            context=target.context,
            source="mod_loopback",
        )
        b = sw.create_session(
            direction="inbound", name=f"loopback/{target.exten}-b", profile=profile
        )
        opened: list[RtpEndpoint] = []
        try:
            for _ in range(2):
                opened.append(await RtpEndpoint.open("127.0.0.1", rtcp=False))
        except OSError as exc:
            for ep in opened:
                ep.close()
            sw.hangup(b.uuid, Cause.DESTINATION_OUT_OF_ORDER)
            raise OriginateError(Cause.DESTINATION_OUT_OF_ORDER, f"RTP: {exc}") from None
        a_rtp, b_rtp = opened
        a_rtp.set_remote(b_rtp.local_address)
        b_rtp.set_remote(a_rtp.local_address)
        session.media, b.media = a_rtp, b_rtp
        session.leg = _LoopbackLeg(sw, lambda: b)
        b.leg = _LoopbackLeg(sw, lambda: session)
        a_ch.set_var("loopback_leg", "A")
        b.channel.set_var("loopback_leg", "B")
        b.channel.set_var("other_loopback_leg_uuid", a_ch.uuid)
        a_ch.set_var("other_loopback_leg_uuid", b.uuid)
        sw.start_inbound(b)
