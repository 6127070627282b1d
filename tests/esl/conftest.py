"""Fixtures: a real :class:`Switch` with a scripted endpoint, served by the ESL server.

The scripted endpoint stands in for SIP until a test needs the real media node (the
e2e tests in tests/e2e/test_esl_*.py use SIPp). Numbers decide what the far end does:
``answer``/digits answer after ~20 ms, ``early`` sends 183, ``busy`` rejects (486),
``slow<ms>`` answers after <ms>, ``never`` rings until the originate timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from switchboard.esl.dialstring import DialLeg
from switchboard.media.applications import new_switch
from switchboard.media.causes import Cause
from switchboard.media.core import Session, Switch
from switchboard.media.event_socket import EslSettings, EventSocketServer
from switchboard.media.limits import SessionLimiter


class ScriptedLeg:
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
    def __init__(self, sw: Switch) -> None:
        self.sw = sw
        self.tasks: set[asyncio.Task[None]] = set()

    async def place(self, s: Session, leg: DialLeg) -> None:
        s.leg = ScriptedLeg()
        number = leg.endpoint.rsplit("/", 1)[-1].split("@")[0]

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


@pytest.fixture
def switch() -> Switch:
    sw = new_switch(name="media-t", hostname="mediasrv1",
                limits=SessionLimiter(max_sessions=1000, sessions_per_second=1000))  # fmt: skip
    endpoint = ScriptedEndpoint(sw)
    for kind in ("gateway", "user", "sofia", "sip", "loopback"):
        sw.endpoints[kind] = endpoint
    return sw


@pytest.fixture
def settings() -> EslSettings:
    return EslSettings(port=0, heartbeat=0)


@pytest.fixture
async def server(switch: Switch, settings: EslSettings) -> AsyncIterator[EventSocketServer]:
    srv = EventSocketServer(switch, settings)
    await srv.start()
    yield srv
    await srv.close()
    await switch.stop()
