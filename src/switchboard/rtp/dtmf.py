"""DTMF: RFC 4733 telephone-events (receive and send) and in-band Goertzel detection.

RFC 4733 receive (§2.5.2): an event is identified by its RTP timestamp (the event's
start); the marker bit on the first packet is not relied on (some devices never set
it). Updates extend the duration; the end packet (E bit) is usually
sent three times — redundant copies and any later packet with that timestamp are
dropped. A new timestamp while an event is open ends the open one (its end packets
were lost), and ``handle_timer(now)`` ends an event whose packets stopped.

In-band detection (ITU-T Q.23/Q.24 style, for carriers without telephone-event):
Goertzel power at the 8 DTMF frequencies over 205-sample blocks (25.6 ms at 8 kHz),
computed for all 8 bins at once as single-bin DFTs (the same quantity the Goertzel
recurrence yields, in one matrix product). A block carries a digit when the strongest
row and column tones are above the level threshold, their twist is within limits
(normal twist ≤ 8 dB, reverse ≤ 4 dB), each beats the other tones of its group by
≥ 6 dB, and the two tones hold most of the block's energy (rejects speech and noise).
A digit is reported after two consecutive agreeing blocks (≥ 40 ms, Q.24 acceptance)
and ends after two blocks without it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2 event codes 0–15
END_REDUNDANCY = 3  # RFC 4733 §2.5.1.4: the final packet is sent three times
DEFAULT_VOLUME = 10  # −10 dBm0
EVENT_TIMEOUT = 0.5  # seconds without packets before an open event is ended

_TE = struct.Struct("!BBH")


class DtmfError(ValueError):
    """Bad telephone-event payload (peer's fault) or an unknown digit (caller's)."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 §2.3 payload: event(8) | E(1) R(1) volume(6) | duration(16)."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload is 4 octets, got {len(payload)}")
        event, flags, duration = _TE.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return _TE.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )


@dataclass(frozen=True, slots=True)
class DtmfStart:
    digit: str
    timestamp: int  # RTP timestamp (RFC 4733) or sample index (in-band) of the start
    source: str  # "RTP" or "INBAND_AUDIO", as FreeSWITCH's DTMF-Source


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    digit: str
    timestamp: int
    duration: int  # samples at the event clock
    source: str  # FreeSWITCH DTMF-Source value


DtmfEvent = DtmfStart | DtmfEnd


def digit_code(digit: str) -> int:
    code = DIGITS.find(digit.upper())
    if code < 0 or len(digit) != 1:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return code


class DtmfReceiver:
    """RFC 4733 receiver with duplicate suppression by timestamp (§2.5.2)."""

    def __init__(self, timeout: float = EVENT_TIMEOUT) -> None:
        self.timeout = timeout
        self._ts: int | None = None  # timestamp of the open event
        self._digit = ""
        self._duration = 0
        self._last_seen = 0.0
        self._done: list[int] = []  # recently finished event timestamps
        self.duplicates = 0

    def feed(self, payload: bytes, timestamp: int, now: float) -> list[DtmfEvent]:
        """Account one telephone-event packet; return Start/End events it causes."""
        te = TelephoneEvent.parse(payload)
        if te.event >= len(DIGITS):
            return []  # flash (16) and other tones: not digits
        if timestamp in self._done:
            self.duplicates += 1
            return []
        out: list[DtmfEvent] = []
        if self._ts != timestamp:
            if self._ts is not None:
                out.append(self._close())  # previous event's end packets were all lost
            self._ts = timestamp
            self._digit = DIGITS[te.event]
            self._duration = 0
            out.append(DtmfStart(self._digit, timestamp, "RTP"))
        elif te.duration < self._duration and not te.end:
            self.duplicates += 1  # reordered older update
            return out
        self._duration = max(self._duration, te.duration)
        self._last_seen = now
        if te.end:
            out.append(self._close())
        return out

    def _close(self) -> DtmfEnd:
        assert self._ts is not None
        event = DtmfEnd(self._digit, self._ts, self._duration, "RTP")
        self._done.append(self._ts)
        del self._done[:-8]
        self._ts = None
        return event

    def get_timer(self) -> float | None:
        """When an open event times out (None when no event is open)."""
        return self._last_seen + self.timeout if self._ts is not None else None

    @property
    def open(self) -> bool:
        return self._ts is not None

    def handle_timer(self, now: float) -> list[DtmfEvent]:
        """End an event whose packets stopped arriving (end packets lost, sender gone)."""
        deadline = self.get_timer()
        if deadline is not None and now >= deadline:
            return [self._close()]
        return []


class DtmfSender:
    """RFC 4733 §2.5.1 sender: the packets of one digit, one per ptime.

    ``packets()`` yields ``(payload, marker, timestamp)`` for each tick: the first
    carries the marker, all share the event's start timestamp, the duration grows by one
    frame each tick, and the end packet goes out ``END_REDUNDANCY`` times.
    """

    def __init__(
        self,
        digit: str,
        start_timestamp: int,
        duration_ms: int = 100,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        volume: int = DEFAULT_VOLUME,
    ) -> None:
        self.code = digit_code(digit)
        self.digit = DIGITS[self.code]
        self.timestamp = start_timestamp
        self.step = clock_rate * ptime_ms // 1000
        self.total = max(clock_rate * duration_ms // 1000, self.step)
        self.volume = volume

    def packets(self) -> list[tuple[bytes, bool, int]]:
        out: list[tuple[bytes, bool, int]] = []
        duration = 0
        while duration + self.step < self.total:
            duration += self.step
            out.append(
                (
                    bytes(TelephoneEvent(self.code, False, self.volume, duration)),
                    not out,
                    self.timestamp,
                )
            )
        end = bytes(TelephoneEvent(self.code, True, self.volume, min(self.total, 0xFFFF)))
        out += [(end, not out, self.timestamp)] + [(end, False, self.timestamp)] * (
            END_REDUNDANCY - 1
        )
        return out


# --- in-band detection -------------------------------------------------------------------

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
BLOCK = 205  # samples at 8 kHz (classic Goertzel DTMF block, ~25.6 ms)
NORMAL_TWIST_DB = 8.0  # column (high group) weaker than row
REVERSE_TWIST_DB = 4.0  # column stronger than row
RELATIVE_PEAK_DB = 6.0
MIN_TONE_POWER_DBFS = -36.0  # each tone's level, dB relative to a full-scale sine
TONE_ENERGY_RATIO = 0.55  # share of the block's energy in the two tones


class InbandDtmfDetector:
    """Goertzel DTMF detector over a PCM stream at 8 kHz (feed any frame sizes)."""

    def __init__(self, rate: int = 8000) -> None:
        if rate != 8000:
            raise ValueError("in-band DTMF detection runs at 8 kHz (resample first)")
        self.rate = rate
        n = np.arange(BLOCK)
        freqs = np.array(ROW_FREQS + COL_FREQS)
        self._basis = np.exp(-2j * np.pi * np.outer(freqs, n) / rate)
        self._buf = np.zeros(0, dtype=np.float64)
        self._samples = 0  # samples consumed so far (position of the next block)
        self._candidate = ""
        self._candidate_blocks = 0
        self._current = ""
        self._current_start = 0
        self._misses = 0
        # Power of a full-scale sine at one bin: (A·N/2)².
        self._ref = (32767.0 * BLOCK / 2) ** 2
        self._min_power = self._ref * 10 ** (MIN_TONE_POWER_DBFS / 10)

    def _classify(self, block: npt.NDArray[np.float64]) -> str:
        power = np.abs(self._basis @ block) ** 2
        rows, cols = power[:4], power[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        pr, pc = rows[r], cols[c]
        if pr < self._min_power or pc < self._min_power:
            return ""
        if pc < pr:
            if pr > pc * 10 ** (NORMAL_TWIST_DB / 10):
                return ""
        elif pc > pr * 10 ** (REVERSE_TWIST_DB / 10):
            return ""
        peak = 10 ** (RELATIVE_PEAK_DB / 10)
        if any(rows[i] * peak > pr for i in range(4) if i != r):
            return ""
        if any(cols[i] * peak > pc for i in range(4) if i != c):
            return ""
        energy = float(block @ block) * BLOCK / 2
        if energy <= 0 or (pr + pc) / energy < TONE_ENERGY_RATIO:
            return ""
        return KEYPAD[r][c]

    def feed(self, pcm: npt.ArrayLike) -> list[DtmfEvent]:
        """Consume int16 samples; return digits that started or ended."""
        self._buf = np.concatenate([self._buf, np.asarray(pcm, dtype=np.float64)])
        out: list[DtmfEvent] = []
        while len(self._buf) >= BLOCK:
            block, self._buf = self._buf[:BLOCK], self._buf[BLOCK:]
            digit = self._classify(block)
            pos = self._samples
            self._samples += BLOCK
            if digit and digit == self._candidate:
                self._candidate_blocks += 1
            else:
                self._candidate = digit
                self._candidate_blocks = 1
            if self._current:
                if digit == self._current:
                    self._misses = 0
                    continue
                self._misses += 1
                if self._misses >= 2:  # gone for two blocks: it ended where the first miss began
                    end_pos = pos - BLOCK
                    out.append(
                        DtmfEnd(
                            self._current,
                            self._current_start,
                            end_pos - self._current_start,
                            "INBAND_AUDIO",
                        )
                    )
                    self._current = ""
                    self._misses = 0
            if not self._current and digit and self._candidate_blocks >= 2:
                self._current = digit
                self._current_start = pos - BLOCK
                self._misses = 0
                out.append(DtmfStart(digit, self._current_start, "INBAND_AUDIO"))
        return out


def dtmf_tone(
    digit: str, duration_ms: int = 100, rate: int = 8000, level_dbfs: float = -10.0
) -> npt.NDArray[np.int16]:
    """Generate the in-band dual tone for ``digit`` (each tone at ``level_dbfs``)."""
    key = DIGITS[digit_code(digit)]
    r = next(i for i, row in enumerate(KEYPAD) if key in row)
    c = KEYPAD[r].index(key)
    t = np.arange(rate * duration_ms // 1000) / rate
    amp = 32767 * 10 ** (level_dbfs / 20)
    wave = amp * (np.sin(2 * np.pi * ROW_FREQS[r] * t) + np.sin(2 * np.pi * COL_FREQS[c] * t))
    return np.clip(np.rint(wave), -32768, 32767).astype(np.int16)
