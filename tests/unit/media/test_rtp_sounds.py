"""The bundled prompt is a real, short, speech-band WAV that plays through the engine."""

from __future__ import annotations

import numpy as np

from switchboard.media.sounds import PROMPT_PATH, bundled_prompt, load_sound
from switchboard.rtp.codec import PCMA, PCMU


def test_bundled_prompt_is_short_speech_at_8khz() -> None:
    assert PROMPT_PATH.exists() and PROMPT_PATH.stat().st_size < 200_000
    prompt = bundled_prompt()
    assert 3.0 < prompt.duration < 8.0 and prompt.rate == 8000
    pcm = np.concatenate(prompt.pcm_frames).astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) > 1000  # not silence
    spectrum = np.abs(np.fft.rfft(pcm))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    speech_band = spectrum[(freqs > 200) & (freqs < 3400)].sum() / spectrum.sum()
    assert speech_band > 0.8
    assert len(prompt.frames_for(PCMU)) == len(prompt) and len(prompt.frames_for(PCMA)[0]) == 160


def test_sounds_are_cached_and_resampled_on_request() -> None:
    assert load_sound(PROMPT_PATH) is bundled_prompt()
    wide = bundled_prompt(16000)
    assert wide.rate == 16000 and abs(wide.duration - bundled_prompt().duration) < 0.05
