"""``conference <room>[@profile][+flags]``: N−1 mixed audio rooms (mod_conference).

A :class:`ConferenceRoom` per room name and node mixes every member's audio with
:class:`~switchboard.rtp.mixer.ConferenceMixer` on the process tick; each member hears
everyone but itself. Join and leave tones as FreeSWITCH plays them.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from switchboard.media.applications.media import (
    config_of,
    endpoint_of,
    load_prompt,
    next_digit,
    play,
)
from switchboard.media.causes import Cause
from switchboard.media.scheduler import get_scheduler
from switchboard.rtp.codec import PCM
from switchboard.rtp.mixer import ConferenceMixer
from switchboard.rtp.source import Prompt
from switchboard.rtp.wav import WavError

if TYPE_CHECKING:
    from switchboard.media.core import Session, Switch


log = logging.getLogger(__name__)


class _MemberSource:
    """What one member hears: the room's N−1 mix for this tick (plus room tones)."""

    def __init__(self, room: ConferenceRoom, member_id: str) -> None:
        self.room = room
        self.member_id = member_id

    def read_payload(self) -> bytes | None:
        return None

    def read_pcm(self) -> PCM | None:
        return self.room.frame_for(self.member_id)


class _MemberSink:
    def __init__(self, room: ConferenceRoom, member_id: str) -> None:
        self.room = room
        self.member_id = member_id

    def write_pcm(self, pcm: PCM) -> None:
        q = self.room.inputs.get(self.member_id)
        if q is not None:
            q.append(pcm)


class ConferenceRoom:
    """One mod_conference room: members, an N−1 mixer run once per media tick, tones."""

    def __init__(self, name: str, energy_level: int, rate: int = 8000) -> None:
        self.name = name
        self.mixer = ConferenceMixer(rate // 50, energy_level)
        self.inputs: dict[str, deque[PCM]] = {}
        self.members: dict[str, Session] = {}
        self._tick = -1
        self._out: dict[str, PCM] = {}
        self.tones: deque[PCM] = deque()
        self._silence = np.zeros(rate // 50, np.int16)
        self.sched = get_scheduler()

    def frame_for(self, member_id: str) -> PCM:
        tick = self.sched.ticks
        if tick != self._tick:
            self._tick = tick
            frames = {m: (q.popleft() if q else None) for m, q in self.inputs.items()}
            out = self.mixer.mix(frames)
            if self.tones:
                tone = self.tones.popleft().astype(np.int32)
                out = {
                    m: np.clip(f.astype(np.int32) + tone, -32768, 32767).astype(np.int16)
                    for m, f in out.items()
                }
            self._out = out
        return self._out.get(member_id, self._silence)

    def add_tone(self, prompt: Prompt) -> None:
        self.tones.extend(prompt.pcm_frames)

    def join(self, s: Session, *, muted: bool, deaf: bool) -> None:
        mid = s.uuid
        self.members[mid] = s
        self.inputs[mid] = deque(maxlen=3)
        self.mixer.add(mid, muted=muted, deaf=deaf)
        ep = endpoint_of(s)
        ep.record(_MemberSink(self, mid), jitter_buffer=True)
        ep.play(_MemberSource(self, mid))

    def leave(self, s: Session) -> None:
        mid = s.uuid
        self.members.pop(mid, None)
        self.inputs.pop(mid, None)
        self.mixer.remove(mid)
        if s.media is not None and not s.media.closed:
            s.media.record(None)
            s.media.stop_playback()


def _rooms(sw: Switch) -> dict[str, ConferenceRoom]:
    rooms = getattr(sw, "conference_rooms", None)
    if rooms is None:
        rooms = {}
        sw.conference_rooms = rooms  # type: ignore[attr-defined]
    return rooms


JOIN_TONE = "tone_stream://%(200,0,880)"
LEAVE_TONE = "tone_stream://%(200,0,440)"


def parse_conference_arg(arg: str) -> tuple[str, str | None, set[str]]:
    """``room[@profile][+pin][+flags{mute|deaf|...}]`` → (room, pin, flags)."""
    flags: set[str] = set()
    m = re.search(r"\+flags\{([^}]*)\}", arg)
    if m:
        flags = {f.strip() for f in m[1].split("|") if f.strip()}
        arg = arg[: m.start()] + arg[m.end() :]
    name, _, pin = arg.strip().partition("+")
    name = name.split("@")[0]
    return name, pin or None, flags


async def conference(s: Session, arg: str) -> str | None:
    """``conference <room>[@profile][+<pin>][+flags{mute|deaf}]``: join (creating the room),
    stay until hangup; the room is destroyed when its last member leaves."""
    sw = s.switch
    name, pin, flags = parse_conference_arg(arg)
    if not name:
        return "-ERR usage: conference <room>"
    if not s.channel.answered:
        await sw.do_answer(s)
    if pin:
        for _ in range(3):
            await play(s, "prompt", interrupt=True)
            digits = ""
            while True:
                d = await next_digit(s, 5.0)
                if d is None or d == "#":
                    break
                digits += d
            if digits == pin:
                break
            with contextlib.suppress(OSError, WavError, ValueError):
                await play(s, "tone_stream://%(300,0,480,620)")
        else:
            sw.hangup(s.uuid, Cause.CALL_REJECTED)
            return "-ERR wrong pin"
    rooms = _rooms(sw)
    room = rooms.get(name)
    if room is None:
        room = rooms[name] = ConferenceRoom(
            name, config_of(sw).energy_level, endpoint_of(s).codec.sample_rate
        )
    cfg = config_of(sw)
    if room.members:
        room.add_tone(load_prompt(JOIN_TONE, cfg))
    room.join(s, muted="mute" in flags, deaf="deaf" in flags)
    s.channel.set_var("conference_name", name)
    sw._fire("CUSTOM", s, {"Event-Subclass": "conference::maintenance", "Conference-Name": name,
                           "Action": "add-member", "Conference-Size": str(len(room.members))})  # fmt: skip
    try:
        await s.ended.wait()
    finally:
        room.leave(s)
        sw._fire("CUSTOM", s, {"Event-Subclass": "conference::maintenance", "Conference-Name": name,
                               "Action": "del-member", "Conference-Size": str(len(room.members))})  # fmt: skip
        if room.members:
            room.add_tone(load_prompt(LEAVE_TONE, cfg))
        else:
            rooms.pop(name, None)
    return None
