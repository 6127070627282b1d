"""WAV files written by sox (another program's encoder) decode to the right rate and tone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from switchboard.rtp.wav import decode_wav


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


def test_decode_wav_from_sox(tmp_path: Path) -> None:
    if shutil.which("sox") is None:
        pytest.skip("sox not installed (Makefile APT_PACKAGES installs it)")
    path = tmp_path / "t.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "44100",
            "-c",
            "2",
            "-b",
            "16",
            str(path),
            "synth",
            "0.5",
            "sine",
            "1500",
        ],
        check=True,
    )
    pcm, rate = decode_wav(path.read_bytes(), 8000)
    assert rate == 8000 and abs(len(pcm) - 4000) <= 1
    assert abs(dominant_hz(pcm, 8000) - 1500) < 3
