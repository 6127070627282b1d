"""Conference mixing: every member hears the sum of the others (N−1 mix), as mod_conference.

Per tick the caller passes each member's decoded 20 ms frame (or None when nothing
arrived). Arithmetic is int32: ``total = Σ speakers``; member *m* gets
``clip16(total − own_m)`` where ``own_m`` is *m*'s contribution (zero when *m* is not
speaking), so nobody hears themself and the subtraction is exact.

* **Energy threshold** (mod_conference ``energy-level``): a frame whose mean absolute
  sample is below ``energy_level`` is not mixed (line noise does not add up across
  many members).
* **Mute**: the member's audio is never mixed. **Deaf**: the member receives silence.
* **Clipping**: sums are saturated to 16 bits, never wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchboard.rtp.codec import PCM

DEFAULT_ENERGY_LEVEL = 100  # mod_conference default profile energy-level


@dataclass
class Member:
    muted: bool = False
    deaf: bool = False
    speaking: bool = False  # was above the energy threshold in the last mix


class ConferenceMixer:
    """N−1 mixer with energy gating, mute and deaf."""

    def __init__(self, frame_samples: int = 160, energy_level: int = DEFAULT_ENERGY_LEVEL) -> None:
        self.frame_samples = frame_samples
        self.energy_level = energy_level
        self.members: dict[str, Member] = {}
        self._silence = np.zeros(frame_samples, np.int16)
        self._silence.setflags(write=False)

    def add(self, member_id: str, muted: bool = False, deaf: bool = False) -> None:
        self.members[member_id] = Member(muted, deaf)

    def remove(self, member_id: str) -> None:
        self.members.pop(member_id, None)

    def set_mute(self, member_id: str, muted: bool) -> None:
        self.members[member_id].muted = muted

    def set_deaf(self, member_id: str, deaf: bool) -> None:
        self.members[member_id].deaf = deaf

    def mix(self, frames: dict[str, PCM | None]) -> dict[str, PCM]:
        """One tick: input frames by member id → output frame for every member."""
        n = self.frame_samples
        speakers: list[str] = []
        rows: list[PCM] = []
        for member_id, member in self.members.items():
            frame = frames.get(member_id)
            member.speaking = False
            if frame is None or member.muted or len(frame) != n:
                continue
            if self.energy_level and int(np.abs(frame.astype(np.int32)).mean()) < self.energy_level:
                continue
            member.speaking = True
            speakers.append(member_id)
            rows.append(frame)
        out: dict[str, PCM] = {}
        if not rows:
            return {m: self._silence for m in self.members}
        stack = np.stack(rows).astype(np.int32)
        total = stack.sum(axis=0)
        clipped_total = np.clip(total, -32768, 32767).astype(np.int16)
        index = {m: i for i, m in enumerate(speakers)}
        for member_id, member in self.members.items():
            if member.deaf:
                out[member_id] = self._silence
            elif member_id in index:
                out[member_id] = np.clip(total - stack[index[member_id]], -32768, 32767).astype(
                    np.int16
                )
            else:
                out[member_id] = clipped_total
        return out
