"""``bridge <dial string>``: a B-leg per dial string, and the two legs' media joined.

Rings the legs of the dial string (``,`` at once, ``|`` one group after another), bridges
the first to answer with the A-leg's RTP (relay, transcoding when the codecs differ) and
keeps them bridged until either hangs up; also the internal ``_bridge_existing`` and
``_bridge_wait`` used by ``uuid_bridge`` and originate-to-``&bridge``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from switchboard.media.applications.media import config_of, endpoint_of
from switchboard.media.causes import Cause
from switchboard.media.channel import ChannelState
from switchboard.media.core import OriginateError
from switchboard.media.rtp_endpoint import bridge as rtp_bridge

if TYPE_CHECKING:
    from switchboard.media.core import Session


log = logging.getLogger(__name__)


def _link(a: Session, b: Session) -> None:
    """Relay media both ways (transcoding when the codecs differ); a running
    ``record_session`` on ``a`` also records ``b``'s audio."""
    ea, eb = endpoint_of(a), endpoint_of(b)
    ea.stop_playback()
    eb.stop_playback()
    if "record_session" not in a.data:
        ea.record(None)
    else:
        eb.record(a.data["record_session"].leg(1))
    if "record_session" not in b.data and "record_session" not in a.data:
        eb.record(None)
    rtp_bridge(ea, eb)


def _unlink(a: Session, b: Session) -> None:
    for ep in (a.media, b.media):
        if ep is not None:
            ep.on_packet = None


def _mark_bridged(a: Session, b: Session) -> None:
    sw = a.switch
    a.bridged_to, b.bridged_to = b, a
    a.channel.other_leg, b.channel.other_leg = b.uuid, a.uuid
    import time as _time

    now = _time.time()
    a.channel.bridged_at = b.channel.bridged_at = now
    a.channel.set_var("bridge_uuid", b.uuid)
    b.channel.set_var("bridge_uuid", a.uuid)
    a.channel.set_var("last_bridge_to", b.uuid)
    extra = {"Bridge-A-Unique-ID": a.uuid, "Bridge-B-Unique-ID": b.uuid}
    # FreeSWITCH: the A-leg keeps running its bridge application (CS_EXECUTE), the
    # B-leg exchanges media (CS_EXCHANGE_MEDIA).
    if not b.is_hungup:
        sw._set_state(b, ChannelState.CS_EXCHANGE_MEDIA)
    sw._fire("CHANNEL_BRIDGE", a, extra)
    for hook in sw.bridge_hooks:  # the node's journal records the bridge for recovery
        try:
            hook(a, b)
        except Exception:
            log.exception("bridge hook failed for %s", a.uuid)


async def _stay_bridged(a: Session, b: Session) -> None:
    waits = [asyncio.ensure_future(a.ended.wait()), asyncio.ensure_future(b.ended.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        _unlink(a, b)
        a.bridged_to = b.bridged_to = None
        extra = {"Bridge-A-Unique-ID": a.uuid, "Bridge-B-Unique-ID": b.uuid}
        a.switch._fire("CHANNEL_UNBRIDGE", a, extra)


async def bridge(s: Session, arg: str) -> str | None:
    """``bridge <dial string>``: place the B-leg(s) (``|`` failover, ``,`` simultaneous),
    pass early media through, answer on answer, relay (transcoding when codecs differ)
    until one side hangs up. On failure the A-leg is hung up with the B-leg's cause
    unless ``continue_on_fail`` is set (true, or a list of cause names)."""
    sw = s.switch
    ch = s.channel
    variables = dict(s.data.get("exported", {}))
    early_linked: list[Any] = []

    def on_early(b: Session) -> None:
        if s.is_hungup or early_linked:
            return
        early_linked.append(b)

        async def pass_early() -> None:
            await sw.do_pre_answer(s)
            if not b.is_hungup and not s.is_hungup:
                _link(s, b)

        task = asyncio.ensure_future(pass_early())
        s.data.setdefault("tasks", set()).add(task)
        task.add_done_callback(s.data["tasks"].discard)

    timeout = config_of(sw).originate_timeout
    for key in ("call_timeout", "originate_timeout"):
        if ch.variables.get(key, "").isdigit():
            timeout = float(ch.variables[key])
    try:
        b = await sw.place_call(arg, variables, timeout=timeout, a_leg=s, on_early=on_early)
    except OriginateError as exc:
        if early_linked:
            _unlink(s, early_linked[0])
        cause = exc.cause
        ch.set_var("originate_disposition", cause.name)
        ch.set_var("bridge_hangup_cause", cause.name)
        ch.set_var("DIALSTATUS", cause.name)
        if s.is_hungup:
            return None
        cof = ch.variables.get("continue_on_fail", "")
        names = {c.strip().upper() for c in cof.split(",")}
        if ch.var_true("continue_on_fail") or cause.name in names or str(int(cause)) in names:
            return f"-ERR {cause.name}"
        sw.hangup(s.uuid, cause)
        return f"-ERR {cause.name}"
    if early_linked and early_linked[0] is not b:
        _unlink(s, early_linked[0])
    if s.is_hungup:
        sw.hangup(b.uuid, Cause.ORIGINATOR_CANCEL)
        return None
    _link(s, b)
    await sw.do_answer(s)
    ch.set_var("originate_disposition", "SUCCESS")
    ch.set_var("DIALSTATUS", "SUCCESS")
    ch.set_var("bridge_to", b.uuid)
    _mark_bridged(s, b)
    try:
        await _stay_bridged(s, b)
    finally:
        # runs when the A-leg hangs up too (this application is cancelled then)
        if not b.is_hungup:
            sw.hangup(b.uuid, ch.hangup_cause or Cause.NORMAL_CLEARING)
    if b.is_hungup and not s.is_hungup:
        ch.set_var("bridge_hangup_cause", (b.channel.hangup_cause or Cause.NORMAL_CLEARING).name)
        ch.set_var("last_bridge_hangup_cause", ch.variables["bridge_hangup_cause"])
        if ch.variables.get("hangup_after_bridge", "true").lower() in ("true", "yes", "1", "on"):
            sw.hangup(s.uuid, Cause.NORMAL_CLEARING)
    return None


async def _bridge_existing(s: Session, arg: str) -> str | None:
    """``uuid_bridge``: join this channel with an existing one until either hangs up."""
    sw = s.switch
    b = sw.session(arg.strip())
    if b is None or b.is_hungup or s.media is None or b.media is None:
        return "-ERR Invalid uuid"
    if not s.channel.answered and s.channel.direction == "inbound":
        await sw.do_answer(s)
    release = asyncio.Event()
    b.data["bridge_release"] = release
    sw.execute(b.uuid, "_bridge_wait")
    _link(s, b)
    _mark_bridged(s, b)
    try:
        await _stay_bridged(s, b)
    finally:
        release.set()
        if not b.is_hungup and s.is_hungup:
            sw.hangup(b.uuid, s.channel.hangup_cause or Cause.NORMAL_CLEARING)
    if b.is_hungup and not s.is_hungup:
        sw.hangup(s.uuid, Cause.NORMAL_CLEARING)
    return None


async def _bridge_wait(s: Session, arg: str) -> str | None:
    release = s.data.get("bridge_release")
    if isinstance(release, asyncio.Event):
        waits = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(s.ended.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
    return None
