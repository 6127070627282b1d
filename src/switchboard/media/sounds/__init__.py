"""Bundled sounds for media nodes.

``prompt.wav`` — the demo announcement played by the ``playback`` destination
("Welcome to Switchboard. This is the demo prompt. Goodbye.", 4.7 s, 8 kHz mono
16-bit). It was generated once and committed (not built in CI) with::

    espeak-ng -v en-us -s 150 -w raw.wav "Welcome to Switchboard. This is the demo prompt. Goodbye."
    sox raw.wav -r 8000 -c 1 -b 16 -e signed-integer prompt.wav norm -3
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from switchboard.rtp.source import Prompt

SOUNDS_DIR = Path(__file__).resolve().parent
PROMPT_PATH = SOUNDS_DIR / "prompt.wav"


def load_sound(path: str | Path = PROMPT_PATH, rate: int = 8000) -> Prompt:
    """A WAV file (any rate, mono/stereo, 16-bit) as a :class:`Prompt` at ``rate``.

    Cached: every channel playing the same file shares its frames and their per-codec
    encodings. Raises ``OSError`` if unreadable, :class:`~switchboard.rtp.wav.WavError`
    if not a usable WAV.
    """
    return _load(str(Path(path).resolve()), rate)


@lru_cache(maxsize=16)
def _load(path: str, rate: int) -> Prompt:
    return Prompt.from_wav(Path(path).read_bytes(), rate)


def bundled_prompt(rate: int = 8000) -> Prompt:
    """The bundled demo prompt."""
    return load_sound(PROMPT_PATH, rate)
