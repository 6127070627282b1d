"""Pure frame producers and consumers: prompts, players, tones, silence, echo, recorder.

A *source* yields one 20 ms frame per scheduler tick, either as linear PCM
(``read_pcm``, for mixing and recording) or already encoded for the stream's codec
(``read_payload``, the hot send path). A :class:`Prompt` holds the audio once and
caches its frames encoded per codec, so a thousand channels playing the same
announcement share one list of ``bytes`` and the tick does no DSP at all.

A *sink* consumes frames (``write_pcm``). Nothing here knows about sockets or time:
the scheduler decides when a frame is due.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import BinaryIO, Protocol

import numpy as np

from switchboard.rtp.codec import PCM, Codec
from switchboard.rtp.resample import resample
from switchboard.rtp.wav import WavWriter, decode_wav

PTIME_MS = 20


class FrameSource(Protocol):
    """One frame per call; ``None`` when the source has ended."""

    def read_payload(self) -> bytes | None: ...

    def read_pcm(self) -> PCM | None: ...


class FrameSink(Protocol):
    def write_pcm(self, pcm: PCM) -> None: ...


def _frame_len(rate: int) -> int:
    return rate * PTIME_MS // 1000


class Prompt:
    """Audio at one sample rate, split into 20 ms frames (last frame padded with silence).

    ``frames_for(codec)`` encodes every frame once per codec and caches the result.
    """

    def __init__(self, pcm: PCM, rate: int = 8000) -> None:
        n = _frame_len(rate)
        if len(pcm) == 0:
            raise ValueError("a prompt needs at least one sample")
        pad = (-len(pcm)) % n
        full = np.concatenate([np.asarray(pcm, dtype=np.int16), np.zeros(pad, np.int16)])
        full.setflags(write=False)
        self.rate = rate
        self.pcm_frames: tuple[PCM, ...] = tuple(full.reshape(-1, n))
        self._encoded: dict[tuple[str, int], tuple[bytes, ...]] = {}
        self._rates: dict[int, Prompt] = {rate: self}

    def at_rate(self, rate: int) -> Prompt:
        """This prompt resampled to ``rate`` (computed once, cached): an 8 kHz prompt on a
        G.722 call, a 16 kHz one on G.711."""
        other = self._rates.get(rate)
        if other is None:
            other = self._rates[rate] = Prompt(
                resample(np.concatenate(self.pcm_frames), self.rate, rate), rate
            )
        return other

    @classmethod
    def from_wav(cls, data: bytes, rate: int = 8000) -> Prompt:
        """Prompt from WAV bytes (any rate, mono/stereo, 16-bit), resampled to ``rate``."""
        pcm, _ = decode_wav(data, rate)
        return cls(pcm, rate)

    def __len__(self) -> int:
        return len(self.pcm_frames)

    @property
    def duration(self) -> float:
        return len(self.pcm_frames) * PTIME_MS / 1000

    def frames_for(self, codec: Codec) -> tuple[bytes, ...]:
        """Every frame encoded with ``codec``, computed once (one vectorised call)."""
        key = (codec.name, codec.sample_rate)
        frames = self._encoded.get(key)
        if frames is None:
            if codec.sample_rate != self.rate:
                frames = self.at_rate(codec.sample_rate).frames_for(codec)
                self._encoded[key] = frames
                return frames
            if codec.name in ("PCMU", "PCMA"):
                blob = codec.encode(np.concatenate(self.pcm_frames))
                n = len(self.pcm_frames[0])
                frames = tuple(blob[i : i + n] for i in range(0, len(blob), n))
            else:  # stateful codecs (G.722): a private encoder, frame by frame, in order
                fresh = getattr(codec, "new_state", None)
                encoder: Codec = fresh() if callable(fresh) else codec
                frames = tuple(encoder.encode(f) for f in self.pcm_frames)
            self._encoded[key] = frames
        return frames


class Player:
    """Plays a :class:`Prompt` for one stream; optional looping (``loops=0`` = forever)."""

    __slots__ = ("_loops_left", "_n", "_payloads", "_pcm", "_pos", "codec", "finished", "prompt")

    def __init__(self, prompt: Prompt, codec: Codec | None = None, loops: int = 1) -> None:
        if codec is not None and codec.sample_rate != prompt.rate:
            prompt = prompt.at_rate(codec.sample_rate)
        self.prompt = prompt
        self.codec = codec
        self._payloads: Sequence[bytes] = prompt.frames_for(codec) if codec is not None else ()
        self._pcm = prompt.pcm_frames
        self._n = len(prompt.pcm_frames)
        self._pos = 0
        self._loops_left = loops
        self.finished = False

    def _advance(self) -> int | None:
        if self.finished:
            return None
        pos = self._pos
        if pos >= self._n:
            if self._loops_left == 1:
                self.finished = True
                return None
            if self._loops_left > 1:
                self._loops_left -= 1
            pos = 0
        self._pos = pos + 1
        return pos

    def with_codec(self, codec: Codec) -> Player:
        """The same playback (position, loops left) with frames for another codec."""
        other = Player(self.prompt, codec, self._loops_left)
        other._pos = self._pos
        other.finished = self.finished
        return other

    def encoded_for(self, codec: Codec) -> bool:
        """True when this player has ``codec``'s pre-encoded frames (the fast send path)."""
        c = self.codec
        return c is not None and c.name == codec.name and c.sample_rate == codec.sample_rate

    def read_payload(self) -> bytes | None:
        pos = self._pos
        if pos < self._n:  # fast path inside the prompt: one compare, one index
            self._pos = pos + 1
            return self._payloads[pos]
        i = self._advance()
        return None if i is None else self._payloads[i]

    def read_pcm(self) -> PCM | None:
        i = self._advance()
        return None if i is None else self._pcm[i]

    def skip(self, frames: int) -> None:
        """Advance without producing (frames the scheduler skipped after a stall)."""
        for _ in range(frames):
            if self._advance() is None:
                break


def tone_prompt(
    freqs: Sequence[float],
    rate: int = 8000,
    amplitude: float = 0.25,
    on_ms: int = 1000,
    off_ms: int = 0,
) -> Prompt:
    """One cadence cycle of a tone (sum of ``freqs``, e.g. 350+440 Hz dial tone) as a prompt.

    ``amplitude`` is the peak of the sum relative to full scale. For continuous tones
    (``off_ms=0``) use a whole number of seconds so integer frequencies loop seamlessly.
    """
    n_on = rate * on_ms // 1000
    t = np.arange(n_on) / rate
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / max(len(freqs), 1)
    on = np.rint(np.asarray(wave) * amplitude * 32767).astype(np.int16)
    off = np.zeros(rate * off_ms // 1000, np.int16)
    return Prompt(np.concatenate([on, off]), rate)


def silence_prompt(rate: int = 8000) -> Prompt:
    """One frame of digital silence (loop it)."""
    return Prompt(np.zeros(_frame_len(rate), np.int16), rate)


class Echo:
    """Returns what it was given, one frame per tick; bounded so a fast peer cannot grow it."""

    def __init__(self, max_frames: int = 10) -> None:
        self._q: deque[bytes] = deque(maxlen=max_frames)
        self._pcm: deque[PCM] = deque(maxlen=max_frames)

    def write_payload(self, payload: bytes) -> None:
        self._q.append(payload)

    def write_pcm(self, pcm: PCM) -> None:
        self._pcm.append(pcm)

    def read_payload(self) -> bytes | None:
        return self._q.popleft() if self._q else None

    def read_pcm(self) -> PCM | None:
        return self._pcm.popleft() if self._pcm else None


class _LegSink:
    """One leg's input of a :class:`WavRecorder`. A module-level class: a class made per
    recording is itself a reference cycle (class ↔ its dict) holding the recorder, which
    only the cyclic collector would free."""

    __slots__ = ("index", "recorder")

    def __init__(self, recorder: WavRecorder, index: int) -> None:
        self.recorder = recorder
        self.index = index

    def write_pcm(self, pcm: PCM) -> None:
        self.recorder.write_pcm(pcm, self.index)


class WavRecorder:
    """Records one or more legs to a 16-bit WAV: mono mix (``split=False``) or one channel per leg.

    Frames from each leg are aligned in arrival order; when one leg runs more than
    ``max_skew`` frames ahead (the other is silent or gone) the others are padded with
    silence, so a one-way call still records in real time.
    """

    def __init__(
        self,
        file: BinaryIO,
        rate: int = 8000,
        legs: int = 1,
        split: bool = False,
        max_skew: int = 5,
    ) -> None:
        if legs < 1:
            raise ValueError("a recording needs at least one leg")
        self.rate = rate
        self.legs = legs
        self.split = split and legs > 1
        self._writer = WavWriter(file, rate, legs if self.split else 1)
        self._pending: list[deque[PCM]] = [deque() for _ in range(legs)]
        self._max_skew = max_skew
        self._silence = np.zeros(_frame_len(rate), np.int16)
        self._closed = False

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def write_pcm(self, pcm: PCM, leg: int = 0) -> None:
        """Add a frame of leg ``leg``; frames arriving after :meth:`close` are dropped."""
        if self._closed:
            return
        self._pending[leg].append(pcm)
        if self.legs == 1:
            self._emit()
            return
        if all(self._pending) or len(self._pending[leg]) > self._max_skew:
            self._emit()

    def leg(self, index: int) -> FrameSink:
        """A sink that writes into leg ``index``."""
        return _LegSink(self, index)

    def _emit(self) -> None:
        while any(self._pending):
            frames = [q.popleft() if q else self._silence for q in self._pending]
            if self.legs == 1:
                self._writer.write(frames[0])
            elif self.split:
                n = min(len(f) for f in frames)
                self._writer.write(np.stack([f[:n] for f in frames], axis=1).reshape(-1))
            else:
                n = min(len(f) for f in frames)
                total = np.sum([f[:n].astype(np.int32) for f in frames], axis=0)
                self._writer.write(np.clip(total, -32768, 32767).astype(np.int16))
            if (
                self.legs > 1
                and not all(self._pending)
                and max(len(q) for q in self._pending) <= self._max_skew
            ):
                break

    def close(self) -> None:
        """Write what is pending (padding missing legs) and finish the WAV header."""
        if self._closed:
            return
        while any(self._pending):
            self._max_skew = -1
            self._emit()
        self._closed = True
        self._writer.close()
