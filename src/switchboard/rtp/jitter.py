"""Adaptive jitter buffer for legs where media terminates (record, IVR, conference, ASR).

Not used on a bridged relay: there the endpoints keep the original timing (as
FreeSWITCH does when it bridges without transcoding). Packets are keyed by RTP timestamp,
so reordering and duplicates fall out naturally; the playout side is pulled once per 20 ms tick.

Behaviour:

* **Reorder / de-duplicate** — packets are stored by timestamp; a second copy is
  counted in ``duplicates`` and dropped.
* **Late loss** — a packet whose timestamp is before the playout point arrived too
  late to be played: counted in ``late`` and dropped.
* **Loss** — a missing frame with later frames already buffered is lost: ``get``
  returns ``None`` (the caller conceals: silence or repeat) and counts ``lost``.
* **Underrun** — nothing buffered at all: playout holds (does not advance), which
  grows the delay by one frame; counted in ``underruns``.
* **Adaptive delay** — the target depth follows the interarrival jitter (RFC 3550
  §6.4.1 estimator, in seconds): ``target = 1 + ceil(3·jitter / ptime)`` frames,
  clamped to ``[min_frames, max_frames]``; when the buffer holds more than
  ``target + 2`` frames one frame is dropped (``shrunk``) to cut the delay.
* **Timestamp jumps** — a timestamp more than ``max_jump`` samples away from the
  playout point (new SSRC, sender restart, long silence suppression) resets the buffer
  (``resets``) instead of waiting for or discarding everything.
"""

from __future__ import annotations

import math

from switchboard.rtp.packet import ts_diff


class JitterBuffer:
    """Timestamp-ordered playout buffer; ``put`` on receive, ``get`` once per tick."""

    def __init__(
        self,
        frame_samples: int = 160,
        clock_rate: int = 8000,
        min_frames: int = 1,
        max_frames: int = 10,
        max_jump: int | None = None,
    ) -> None:
        if not 1 <= min_frames <= max_frames:
            raise ValueError("need 1 ≤ min_frames ≤ max_frames")
        self.frame = frame_samples
        self.clock_rate = clock_rate
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.max_jump = max_jump if max_jump is not None else clock_rate  # 1 s
        self._packets: dict[int, bytes] = {}
        self._playout: int | None = None  # timestamp of the next frame to play
        self._playing = False
        self.target = min_frames
        self.jitter = 0.0  # seconds
        self._transit: float | None = None
        self.received = 0
        self.played = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.underruns = 0
        self.shrunk = 0
        self.resets = 0
        self.overflow = 0

    @property
    def depth(self) -> int:
        """Frames buffered from the playout point to the newest packet."""
        if self._playout is None or not self._packets:
            return 0
        newest = max(ts_diff(ts, self._playout) for ts in self._packets)
        return newest // self.frame + 1 if newest >= 0 else 0

    @property
    def delay(self) -> float:
        """Current buffering delay, seconds."""
        return self.depth * self.frame / self.clock_rate

    def put(self, timestamp: int, payload: bytes, arrival: float) -> None:
        """Store one packet's payload (``arrival`` in seconds, any epoch)."""
        self.received += 1
        transit = arrival - timestamp / self.clock_rate
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 1.0:  # ignore timestamp wraps and jumps in the estimate
                self.jitter += (d - self.jitter) / 16.0
        self._transit = transit
        # 0.1 frame of dead band keeps float noise on a perfectly paced stream at the minimum.
        wanted = 1 + max(math.ceil(3 * self.jitter * self.clock_rate / self.frame - 0.1), 0)
        self.target = min(max(wanted, self.min_frames), self.max_frames)
        if self._playout is None:
            self._playout = timestamp
        offset = ts_diff(timestamp, self._playout)
        if offset > self.max_jump or offset < -self.max_jump:
            self.resets += 1
            self._packets.clear()
            self._playout = timestamp
            self._playing = False
            offset = 0
        if offset < 0:
            self.late += 1
            return
        if timestamp in self._packets:
            self.duplicates += 1
            return
        if offset >= self.max_frames * 4 * self.frame:
            self.overflow += 1  # far ahead of playout: the buffer would grow without bound
            return
        self._packets[timestamp] = payload

    def get(self) -> bytes | None:
        """The frame due now, or None (buffering, lost or underrun: conceal it)."""
        playout = self._playout
        if playout is None:
            return None
        if not self._playing:
            if self.depth < self.target:
                return None
            self._playing = True
        packets = self._packets
        if not packets:
            self.underruns += 1
            self._playing = False  # rebuild depth to the target before playing again
            return None
        if self.depth > self.target + 2:
            # Too much delay for the current jitter: drop the oldest frame.
            packets.pop(playout, None)
            playout = (playout + self.frame) & 0xFFFFFFFF
            self.shrunk += 1
        payload = packets.pop(playout, None)
        self._playout = (playout + self.frame) & 0xFFFFFFFF
        if payload is None:
            self.lost += 1
        else:
            self.played += 1
        return payload
