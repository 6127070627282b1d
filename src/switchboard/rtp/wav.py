"""WAV (RIFF, 16-bit PCM) input and output with the stdlib ``wave`` module.

Input: 8/16/44.1/48 kHz (any rate, in fact), mono or stereo, 16-bit → mono int16 at the
call's rate (stereo is averaged, then band-limited resampling). Output: a streaming
writer over any binary file object the caller opened, so recording never holds a call
in memory and this module does no file IO of its own.
"""

from __future__ import annotations

import io
import wave
from typing import BinaryIO

import numpy as np

from switchboard.rtp.codec import PCM
from switchboard.rtp.resample import resample, to_mono


class WavError(ValueError):
    """The WAV data cannot be used (not RIFF/WAVE PCM, or not 16-bit)."""


def decode_wav(data: bytes, rate: int | None = None) -> tuple[PCM, int]:
    """Decode WAV bytes to mono int16; resample to ``rate`` if given. Returns ``(pcm, rate)``."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, src_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise WavError(f"not a PCM WAV file: {exc}") from exc
    if width != 2:
        raise WavError(f"only 16-bit PCM WAV is supported, got {8 * width}-bit")
    if channels not in (1, 2):
        raise WavError(f"only mono or stereo WAV is supported, got {channels} channels")
    pcm = to_mono(np.frombuffer(raw, dtype="<i2").astype(np.int16), channels)
    if rate is not None and rate != src_rate:
        return resample(pcm, src_rate, rate), rate
    return pcm, src_rate


def encode_wav(pcm: PCM, rate: int, channels: int = 1) -> bytes:
    """Whole-file WAV bytes for int16 ``pcm`` (interleaved when ``channels`` > 1)."""
    out = io.BytesIO()
    writer = WavWriter(out, rate, channels)
    writer.write(pcm)
    writer.close()
    return out.getvalue()


class WavWriter:
    """Streaming 16-bit PCM WAV writer; the header's sizes are fixed up on ``close()``."""

    def __init__(self, file: BinaryIO, rate: int, channels: int = 1) -> None:
        self._wave = wave.open(file, "wb")  # noqa: SIM115 - lifetime is this object's
        self._wave.setnchannels(channels)
        self._wave.setsampwidth(2)
        self._wave.setframerate(rate)
        self.rate = rate
        self.channels = channels
        self.frames_written = 0
        self._closed = False

    def write(self, pcm: PCM) -> None:
        """Append interleaved int16 samples."""
        if self._closed:
            raise ValueError("WAV writer is closed")
        self._wave.writeframesraw(np.asarray(pcm, dtype="<i2").tobytes())
        self.frames_written += len(pcm) // self.channels

    def close(self) -> None:
        """Finish the header (RIFF and data sizes). Idempotent."""
        if not self._closed:
            self._closed = True
            self._wave.close()
