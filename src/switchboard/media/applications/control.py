"""Call-control applications: answer, pre_answer, ring_ready, hangup, park, sleep, set, export
(mod_dptools names and argument syntax)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from switchboard.media.causes import parse_cause

if TYPE_CHECKING:
    from switchboard.media.core import Session

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
