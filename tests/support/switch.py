"""A scripted far end for a real :class:`Switch`: what a call does depends on its number.

The scripted endpoint stands in for SIP until a test needs the real media node (the
e2e tests in tests/e2e/test_esl_*.py use SIPp). Numbers decide what the far end does:
``answer``/digits answer after ~20 ms, ``early`` sends 183, ``busy`` rejects (486),
``slow<ms>`` answers after <ms>, ``never`` rings until the originate timeout.
"""

from __future__ import annotations

import asyncio

from switchboard.esl.dialstring import DialLeg
from switchboard.media.causes import Cause
from switchboard.media.core import Session, Switch


class ScriptedLeg:
    """Records what the switch asked of the far end (``180``, ``200``, ``end:CAUSE``...)."""

    def __init__(self) -> None:
        self.actions: list[str] = []

    async def ring(self) -> None:
        self.actions.append("180")

    async def pre_answer(self) -> None:
        self.actions.append("183")

    async def answer(self) -> None:
        self.actions.append("200")

    async def terminate(self, cause: Cause) -> None:
        self.actions.append(f"end:{cause.name}")

    async def send_dtmf(self, digits: str, duration_ms: int) -> None:
        self.actions.append(f"dtmf:{digits}")

    async def hold(self, on: bool) -> None:
        self.actions.append(f"hold:{on}")


class ScriptedEndpoint:
    """Plays the far end of every leg placed on it, as the module docstring describes."""

    def __init__(self, sw: Switch) -> None:
        self.sw = sw
        self.tasks: set[asyncio.Task[None]] = set()

    async def place(self, s: Session, leg: DialLeg) -> None:
        s.leg = ScriptedLeg()
        # "sofia/gateway/carrier/busy", "user/answer", "sip:early@host": the user part decides
        number = leg.endpoint.rsplit("/", 1)[-1].removeprefix("sip:").split("@")[0]

        async def progress() -> None:
            await asyncio.sleep(0.01)
            if s.is_hungup:
                return
            self.sw.on_ringing(s)
            if number == "early":
                self.sw.on_early(s)
            elif number == "busy":
                self.sw.on_remote_hangup(
                    s, Cause.USER_BUSY, sip_status=486, disposition="recv_refuse"
                )
            elif number == "never":
                return
            else:
                delay = int(number[4:]) / 1000 if number.startswith("slow") else 0.01
                await asyncio.sleep(delay)
                if not s.is_hungup:
                    self.sw.on_answer(s)

        task = asyncio.get_running_loop().create_task(progress())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
