"""WAV input at other rates/layouts, band-limited resampling, prompts, players, tones, recorder."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from switchboard.rtp.codec import PCMA, PCMU
from switchboard.rtp.resample import StreamResampler, resample, to_mono
from switchboard.rtp.source import Echo, Player, Prompt, WavRecorder, silence_prompt, tone_prompt
from switchboard.rtp.wav import WavError, decode_wav, encode_wav


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("rate_in", [8000, 16000, 44100, 48000])
def test_resample_keeps_a_passband_tone(rate_in: int) -> None:
    out = resample(sine(1000, rate_in), rate_in, 8000)
    assert len(out) == 8000
    ref = sine(1000, 8000).astype(np.float64)
    err = out[200:-200] - ref[200:-200]
    assert (
        10 * np.log10(np.mean(ref[200:-200] ** 2) / (np.mean(err**2) + 1e-12)) > 50
    )  # no delay, flat gain


@pytest.mark.parametrize("rate_in", [16000, 44100, 48000])
def test_resample_rejects_aliases(rate_in: int) -> None:
    # 5 kHz and 6 kHz would fold to 3 kHz and 2 kHz without the low-pass filter.
    for f in (5000, 6000):
        out = resample(sine(f, rate_in), rate_in, 8000)
        assert rms(out[200:-200]) < 10000 * 0.001  # > 60 dB down


def test_upsampling_8k_to_16k() -> None:
    out = resample(sine(1000, 8000), 8000, 16000)
    assert len(out) == 16000 and abs(dominant_hz(out, 16000) - 1000) < 2


def test_resample_validates_input() -> None:
    with pytest.raises(ValueError):
        resample(np.zeros((2, 2), np.int16), 8000, 16000)
    with pytest.raises(ValueError):
        resample(np.zeros(4, np.int16), 0, 8000)
    assert len(resample(np.zeros(0, np.int16), 44100, 8000)) == 0


def test_to_mono_averages_without_overflow() -> None:
    stereo = np.array([32767, 32767, -32768, -32768, 100, -100], np.int16)
    assert list(to_mono(stereo, 2)) == [32767, -32768, 0]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decode_wav_any_layout_to_call_rate(rate: int, channels: int) -> None:
    mono = sine(440, rate, 0.5)
    data = encode_wav(np.repeat(mono, channels) if channels == 2 else mono, rate, channels)
    pcm, out_rate = decode_wav(data, 8000)
    assert out_rate == 8000 and len(pcm) == 4000
    assert abs(dominant_hz(pcm, 8000) - 440) < 3
    assert abs(rms(pcm) - rms(mono)) / rms(mono) < 0.02


def test_decode_wav_rejects_bad_input() -> None:
    with pytest.raises(WavError):
        decode_wav(b"RIFF....not a wav")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 100)
    with pytest.raises(WavError, match="16-bit"):
        decode_wav(buf.getvalue())


def test_prompt_frames_are_padded_and_cached_per_codec() -> None:
    prompt = Prompt(sine(1000, 8000, 0.05))  # 400 samples → 3 frames, last padded
    assert len(prompt) == 3 and prompt.duration == pytest.approx(0.06)
    assert np.all(prompt.pcm_frames[2][80:] == 0)
    ulaw = prompt.frames_for(PCMU)
    assert ulaw is prompt.frames_for(PCMU)  # cached: shared by every player
    assert [len(f) for f in ulaw] == [160, 160, 160]
    assert ulaw[0] == PCMU.encode(prompt.pcm_frames[0])
    assert prompt.frames_for(PCMA)[1] == PCMA.encode(prompt.pcm_frames[1])
    with pytest.raises(ValueError):
        Prompt(np.zeros(0, np.int16))


def test_player_plays_once_loops_and_skips() -> None:
    prompt = Prompt(np.arange(480, dtype=np.int16))
    once = Player(prompt, PCMU)
    assert [once.read_payload() is not None for _ in range(4)] == [True, True, True, False]
    assert once.finished
    twice = Player(prompt, PCMU, loops=2)
    assert sum(twice.read_payload() is not None for _ in range(10)) == 6
    forever = Player(prompt, loops=0)
    assert all(forever.read_pcm() is not None for _ in range(100))
    skipper = Player(prompt, PCMU)
    skipper.skip(2)
    assert skipper.read_payload() == prompt.frames_for(PCMU)[2]


def test_tone_and_silence() -> None:
    dial = tone_prompt([350, 440], on_ms=1000)
    pcm = np.concatenate(dial.pcm_frames)
    spec = np.abs(np.fft.rfft(pcm))
    assert sorted(np.argsort(spec)[-2:]) == [350, 440]
    ring = tone_prompt([440, 480], on_ms=2000, off_ms=4000)
    assert len(ring) == 300 and not np.any(ring.pcm_frames[-1])
    assert silence_prompt().frames_for(PCMU) == (b"\xff" * 160,)


def test_echo_is_bounded_fifo() -> None:
    echo = Echo(max_frames=3)
    for i in range(5):
        echo.write_payload(bytes([i]))
    assert [echo.read_payload() for _ in range(4)] == [b"\x02", b"\x03", b"\x04", None]


def test_recorder_mono_single_leg() -> None:
    buf = io.BytesIO()
    rec = WavRecorder(buf)
    for f in tone_prompt([1000], on_ms=200).pcm_frames:
        rec.write_pcm(f)
    rec.close()
    pcm, rate = decode_wav(buf.getvalue())
    assert rate == 8000 and len(pcm) == 1600 and abs(dominant_hz(pcm, 8000) - 1000) < 5


def test_recorder_split_legs_and_mix_with_a_silent_leg() -> None:
    a = tone_prompt([500], on_ms=200).pcm_frames
    b = tone_prompt([1500], on_ms=200).pcm_frames
    buf = io.BytesIO()
    rec = WavRecorder(buf, legs=2, split=True)
    for fa, fb in zip(a, b, strict=True):
        rec.write_pcm(fa, 0)
        rec.leg(1).write_pcm(fb)
    rec.close()
    with wave.open(io.BytesIO(buf.getvalue())) as w:
        assert w.getnchannels() == 2 and w.getnframes() == 1600
        both = np.frombuffer(w.readframes(1600), "<i2").reshape(-1, 2)
    assert (
        abs(dominant_hz(both[:, 0], 8000) - 500) < 5
        and abs(dominant_hz(both[:, 1], 8000) - 1500) < 5
    )

    buf = io.BytesIO()
    mix = WavRecorder(buf, legs=2)
    for fa in a:  # leg 1 never sends: recording must still advance in real time
        mix.write_pcm(fa, 0)
    mix.close()
    pcm, _ = decode_wav(buf.getvalue())
    assert len(pcm) == 1600 and abs(dominant_hz(pcm, 8000) - 500) < 5


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "frame"), [(16000, 8000, 320), (8000, 16000, 160), (44100, 8000, 882)]
)
def test_stream_resampler_matches_the_batch_filter(rate_in: int, rate_out: int, frame: int) -> None:
    rng = np.random.default_rng(2)
    x = np.rint(rng.normal(0, 3000, rate_in)).astype(np.int16)
    sr = StreamResampler(rate_in, rate_out)
    outs = [sr.process(x[i : i + frame]) for i in range(0, len(x), frame)]
    streamed = np.concatenate(outs)
    batch = resample(x, rate_in, rate_out)
    # Same samples, just produced once their filter window is complete.
    assert np.array_equal(streamed, batch[: len(streamed)])
    assert len(batch) - len(streamed) < 64
    assert {len(o) for o in outs[1:-1]} == {frame * rate_out // rate_in}


def test_prompt_plays_on_a_codec_of_another_rate() -> None:
    from switchboard.rtp.codec import G722

    narrow = tone_prompt([1000], rate=8000, on_ms=400)
    wide_codec = G722(16000)
    frames = narrow.frames_for(wide_codec)
    assert len(frames) == len(narrow) and all(len(f) == 160 for f in frames)
    assert narrow.at_rate(16000) is narrow.at_rate(16000) and narrow.at_rate(8000) is narrow
    player = Player(narrow, wide_codec)
    pcm = player.read_pcm()
    assert pcm is not None and len(pcm) == 320  # PCM at the codec's rate
    decoder = G722(16000)
    wide = np.concatenate([decoder.decode(f) for f in frames])
    assert abs(dominant_hz(wide[320:], 16000) - 1000) < 5
    # And the other way: a 16 kHz recording played on G.711.
    assert len(tone_prompt([500], rate=16000, on_ms=200).frames_for(PCMU)[0]) == 160
