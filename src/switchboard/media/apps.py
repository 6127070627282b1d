"""Dialplan applications (mod_dptools names and argument syntax, reference §7.1).

Each application is ``async def app(session, arg) -> str | None``; the return value is
the ``Application-Response`` of CHANNEL_EXECUTE_COMPLETE (None → ``_none_``). An
application that must stop when the caller hangs up is simply cancelled by the core.
Media applications live in :mod:`switchboard.media.media_apps` and register here too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from switchboard.media.causes import parse_cause

if TYPE_CHECKING:
    from switchboard.media.core import Session, Switch

log = logging.getLogger(__name__)


async def answer(s: Session, arg: str) -> str | None:
    await s.switch.do_answer(s)
    return None


async def pre_answer(s: Session, arg: str) -> str | None:
    await s.switch.do_pre_answer(s)
    return None


async def ring_ready(s: Session, arg: str) -> str | None:
    await s.switch.do_ring_ready(s)
    return None


async def hangup(s: Session, arg: str) -> str | None:
    s.switch.hangup(s.uuid, parse_cause(arg.strip() or None))
    return None


async def park(s: Session, arg: str) -> str | None:
    """CS_PARK: wait for ESL control (queued applications run, then we park again)."""
    if not s.parked:
        s.parked = True
        s.switch._fire("CHANNEL_PARK", s)
    return None


async def sleep(s: Session, arg: str) -> str | None:
    """``sleep <ms>``: keep the channel (and its media) alive; DTMF is kept queued."""
    try:
        ms = int(arg.strip() or "0")
    except ValueError:
        return "-ERR invalid milliseconds"
    await asyncio.sleep(max(0, ms) / 1000)
    return None


def _set_pairs(arg: str) -> tuple[str, str] | None:
    name, eq, value = arg.partition("=")
    if not eq or not name.strip():
        return None
    return name.strip(), value


async def set_(s: Session, arg: str) -> str | None:
    """``set name=value`` (empty value unsets)."""
    pair = _set_pairs(arg)
    if pair is None:
        return "-ERR usage: set name=value"
    s.channel.set_var(pair[0], pair[1] if pair[1] != "" else None)
    return None


async def export(s: Session, arg: str) -> str | None:
    """``export [nolocal:]name=value``: set here (unless nolocal) and on B-legs created later."""
    pair = _set_pairs(arg)
    if pair is None:
        return "-ERR usage: export name=value"
    name, value = pair
    nolocal = name.startswith("nolocal:")
    if nolocal:
        name = name[len("nolocal:") :]
    else:
        s.channel.set_var(name, value)
    s.data.setdefault("exported", {})[name] = value
    return None


def register_all(sw: Switch) -> None:
    """Register every built-in application on ``sw.apps``."""
    sw.apps.update(
        {
            "answer": answer,
            "pre_answer": pre_answer,
            "ring_ready": ring_ready,
            "hangup": hangup,
            "park": park,
            "sleep": sleep,
            "set": set_,
            "export": export,
        }
    )
    from switchboard.media import media_apps

    media_apps.register(sw)
