"""The dialplan applications a channel runs (mod_dptools names and argument syntax).

Each application is ``async def app(session, arg) -> str | None``; the return value is
the ``Application-Response`` of CHANNEL_EXECUTE_COMPLETE (None → ``_none_``). An
application that must stop when the caller hangs up is simply cancelled by the core.

* :mod:`~switchboard.media.applications.control` — answer, pre_answer, ring_ready, hangup,
  park, sleep, set, export;
* :mod:`~switchboard.media.applications.media` — playback, echo, record, record_session,
  play_and_get_digits, ivr, transfer, send_dtmf, start_dtmf, gentones;
* :mod:`~switchboard.media.applications.conference` — conference rooms;
* :mod:`~switchboard.media.applications.bridge` — bridge and the B-leg plumbing.

The switch core knows none of them: the composition root (:func:`new_switch`, used by the
node) registers them on :attr:`Switch.apps <switchboard.media.core.Switch.apps>`, so
imports point from the applications down to the core only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from switchboard.media.applications import bridge, conference, control, media
from switchboard.media.core import Session, Switch

REGISTRY: Mapping[str, Callable[[Session, str], Any]] = {
    "answer": control.answer,
    "pre_answer": control.pre_answer,
    "ring_ready": control.ring_ready,
    "hangup": control.hangup,
    "park": control.park,
    "sleep": control.sleep,
    "set": control.set_,
    "export": control.export,
    "playback": media.playback,
    "echo": media.echo,
    "record": media.record,
    "record_session": media.record_session,
    "stop_record_session": media.stop_record_session,
    "play_and_get_digits": media.play_and_get_digits,
    "ivr": media.ivr,
    "conference": conference.conference,
    "bridge": bridge.bridge,
    "transfer": media.transfer,
    "send_dtmf": media.send_dtmf,
    "start_dtmf": media.start_dtmf,
    "gentones": media.gentones,
    "_bridge_existing": bridge._bridge_existing,
    "_bridge_wait": bridge._bridge_wait,
}


def register_all(sw: Switch) -> None:
    """Register every built-in application on ``sw.apps`` (and the node's app config)."""
    sw.apps.update(REGISTRY)
    media.config_of(sw)


def new_switch(**kwargs: Any) -> Switch:
    """A :class:`Switch` with every built-in application registered (what a node runs)."""
    sw = Switch(**kwargs)
    register_all(sw)
    return sw


__all__ = ["REGISTRY", "new_switch", "register_all"]
