"""RTP inactivity detection (FreeSWITCH ``rtp_timeout_sec``, cause MEDIA_TIMEOUT).

Pure: the caller reports each answered leg's received-packet counter with ``now`` and
learns whether the leg has been silent for ``timeout`` seconds. A leg on hold (either
side) is not expected to send, so its silence does not count (FreeSWITCH keeps a
separate ``rtp_hold_timeout_sec``, off by default). Tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class RtpInactivity:
    """Per-leg "last time the packet counter moved" tracker; ``timeout`` 0 = off."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[Hashable, tuple[int, float]] = {}

    def observe(self, key: Hashable, packets: int, paused: bool, now: float) -> bool:
        """Record ``packets`` (a cumulative counter) for leg ``key`` at ``now``; True
        when nothing arrived for ``timeout`` seconds while not paused."""
        if self.timeout <= 0:
            return False
        last = self._seen.get(key)
        if paused or last is None or packets != last[0]:
            self._seen[key] = (packets, now)
            return False
        if now - last[1] >= self.timeout:
            del self._seen[key]  # reported once
            return True
        return False

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget legs that are gone (bounded by the live legs)."""
        live = set(keys)
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
