"""Band-limited sample-rate conversion with a polyphase windowed-sinc filter (numpy only).

Converting ``rate_in`` → ``rate_out`` is done as an exact rational ratio ``L/M``
(``L = rate_out/g``, ``M = rate_in/g``, ``g = gcd``): conceptually upsample by L,
low-pass at ``min(1/L, 1/M)`` of the up-sampled Nyquist, decimate by M. Only the
outputs are computed: output sample ``k`` sits at up-sampled position ``k·M``, whose
phase ``(k·M) mod L`` selects one of L sub-filters of ``TAPS`` taps each. The
prototype is a Kaiser-windowed sinc (β = 8.6, ≈ 80 dB stop band), cut off at 0.9 of
the lower Nyquist so that 44.1/48 kHz → 8 kHz keeps telephone band (≤ 3.6 kHz) flat and
rejects aliases.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
import numpy.typing as npt

TAPS = 32  # filter support in samples of the lower of the two rates
KAISER_BETA = 8.6
CUTOFF = 0.9  # fraction of the lower Nyquist frequency kept
_CHUNK = 16384  # outputs computed per block (bounds memory for long prompts)


@lru_cache(maxsize=32)
def _polyphase(up: int, down: int) -> npt.NDArray[np.float64]:
    """Sub-filter bank of shape ``(up, taps)``; row p is phase p (gain already ×up).

    When decimating (down > up) the cut-off is lower, so the filter spans
    ``TAPS·down/up`` input samples to keep the same number of sinc lobes.
    """
    taps = -(-TAPS * max(up, down) // up)
    taps += taps % 2
    n = taps * up
    cutoff = CUTOFF / max(up, down)  # in cycles per up-sampled sample ×2 (Nyquist = 1)
    t = np.arange(n) - n / 2.0  # integer centre: output k aligns with input k·M/L
    proto = cutoff * np.sinc(cutoff * t) * np.kaiser(n, KAISER_BETA) * up
    # h[p + j*up] for j = 0..TAPS-1 is phase p's j-th tap.
    bank = proto.reshape(taps, up).T.copy()
    bank.setflags(write=False)
    return bank


def resample(samples: npt.ArrayLike, rate_in: int, rate_out: int) -> npt.NDArray[np.int16]:
    """Resample mono int16 PCM from ``rate_in`` to ``rate_out`` Hz; returns int16 (clipped)."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError("resample expects mono (1-D) samples")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError("sample rates must be positive")
    if rate_in == rate_out:
        return x.astype(np.int16, copy=True)
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    bank = _polyphase(up, down)
    taps = bank.shape[1]
    n_out = (len(x) * up) // down
    half = taps // 2
    # Pad so every tap window is in range; the centre tap of phase 0 aligns with x[base].
    pad = np.zeros(taps, np.float64)
    xp = np.concatenate([pad, x.astype(np.float64), pad])
    out = np.empty(n_out, dtype=np.float64)
    offsets = np.arange(taps)
    for start in range(0, n_out, _CHUNK):
        k = np.arange(start, min(start + _CHUNK, n_out), dtype=np.int64)
        pos = k * down
        base = pos // up
        phase = pos % up
        # Output at up-sampled position m = base·up + phase uses prototype taps
        # h[phase + j·up] against input x[base + half - j] (j = 0..TAPS-1).
        idx = (base + half + taps)[:, None] - offsets[None, :]
        out[start : start + len(k)] = np.einsum("ij,ij->i", xp[idx], bank[phase])
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


class StreamResampler:
    """The same filter as :func:`resample`, fed frame by frame (a call's audio, a relay).

    Keeps the last input samples as filter history, so consecutive frames join without
    clicks. Output sample ``k`` is produced once its whole tap window has arrived, which
    delays the stream by half the filter (2 ms for 16 → 8 kHz); the number of output
    samples per call can therefore differ by one from ``len(frame)·out/in``.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError("sample rates must be positive")
        g = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        self.rate_in, self.rate_out = rate_in, rate_out
        self._bank = _polyphase(self.up, self.down)
        self._taps = self._bank.shape[1]
        self._half = self._taps // 2
        self._offsets = np.arange(self._taps)
        # History starts as `taps` zeros; _origin is the absolute index of _buf[0].
        self._buf = np.zeros(self._taps, np.float64)
        self._origin = -self._taps
        self._consumed = 0  # input samples received so far
        self._k = 0  # next output index

    def process(self, frame: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """Feed int16 samples; return every output sample that is now complete."""
        x = np.asarray(frame, dtype=np.float64)
        if self.up == self.down:
            return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
        self._buf = np.concatenate([self._buf, x])
        self._consumed += len(x)
        # Output k needs input up to index (k·down)//up + half.
        last_in = self._consumed - 1 - self._half
        k_end = (last_in * self.up) // self.down + 1 if last_in >= 0 else 0
        if k_end <= self._k:
            return np.zeros(0, np.int16)
        k = np.arange(self._k, k_end, dtype=np.int64)
        pos = k * self.down
        base = pos // self.up
        phase = pos % self.up
        idx = (base + self._half - self._origin)[:, None] - self._offsets[None, :]
        out = np.einsum("ij,ij->i", self._buf[idx], self._bank[phase])
        self._k = k_end
        # Keep only the history the next output can still reach.
        next_base = (self._k * self.down) // self.up
        keep_from = next_base + self._half - (self._taps - 1) - self._origin
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._origin += keep_from
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def to_mono(interleaved: npt.NDArray[np.int16], channels: int) -> npt.NDArray[np.int16]:
    """Average interleaved channels into one (int32 accumulation, no overflow)."""
    if channels == 1:
        return interleaved
    frames = interleaved[: len(interleaved) - len(interleaved) % channels].reshape(-1, channels)
    return (frames.astype(np.int32).sum(axis=1) // channels).astype(np.int16)
