"""Audio codecs for RTP: G.711 µ-law/A-law, L16, optional G.722 (RFC 3551 §4.5).

Every codec converts between payload bytes and 16-bit signed linear PCM (``numpy.int16``)
at the codec's *audio* rate. Transcoding pivots through linear PCM, as FreeSWITCH does
(``switch_core_codec``); PCMU↔PCMA has a direct 256-entry table.

G.711 (ITU-T G.711, RFC 3551 §4.5.14) is done with vectorised table lookups: a 256-entry
decode table and a 65536-entry encode table indexed by the int16 sample viewed as
uint16. The tables are built from the bit-exact algorithm of the ITU-T reference
(the Sun Microsystems ``g711.c`` that the ITU-T Software Tool Library and CPython's
``audioop`` use): µ-law on a 14-bit magnitude with bias 0x84, A-law on 13 bits with
even-bit inversion (XOR 0x55).

Opus and G.722 (decision):

* **G.722** uses the ``G722`` package (PyPI ``g722`` 1.2.x, Sippy Labs, released 2026):
  a small C extension of the ITU-T reference that is bit-exact and passes the ITU test
  vectors, maintained by the sippy/b2bua authors and used by their RTP stack. It is a
  declared dependency. RTP clock 8000, audio 16 kHz (RFC 3551 §4.5.2). Its optional
  8 kHz linear mode (``G722(sample_rate=8000)``) talks to wideband terminals while the
  PCM side stays at 8 kHz, so a G.722↔G.711 relay needs no resampler.
* **Opus** is not provided: ``opuslib`` (last release 2018) and ``PyOgg`` (2020) are
  unmaintained; ``opuslib-next`` is a months-old fork that needs a system libopus via
  ctypes; PyAV bundles libopus but is a ~30 MB FFmpeg wheel whose per-frame wrapper costs
  ~150 µs per encode (an indicative figure on a 2-core x86, Python 3.11), i.e. ~100
  transcoded streams per core. Carriers
  interconnect in G.711, so Opus is left out rather than added on a weak dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

PCM = npt.NDArray[np.int16]

# Static payload types, RFC 3551 §6 table 4.
PT_PCMU = 0
PT_PCMA = 8
PT_G722 = 9
PT_CN = 13

# --- G.711 tables (ITU-T G.711; bit-exact with the reference g711.c) ------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude ceiling after >> 2


def _build_ulaw_decode() -> PCM:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> PCM:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _segment(value: npt.NDArray[np.int32], ends: tuple[int, ...]) -> npt.NDArray[np.int32]:
    """Index of the first segment end ≥ value (8 when beyond the last), as g711.c search()."""
    return np.searchsorted(np.asarray(ends, dtype=np.int32), value, side="left").astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2  # index is the int16 viewed as uint16
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(mag, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(mag, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    quant = np.where(seg < 2, mag >> 1, mag >> np.minimum(seg, 7)) & 0x0F
    aval = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    return (aval ^ mask).astype(np.uint8)


ULAW_DECODE: PCM = _build_ulaw_decode()
ALAW_DECODE: PCM = _build_alaw_decode()
ULAW_ENCODE: npt.NDArray[np.uint8] = _build_ulaw_encode()
ALAW_ENCODE: npt.NDArray[np.uint8] = _build_alaw_encode()
ULAW_TO_ALAW: npt.NDArray[np.uint8] = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)]
ALAW_TO_ULAW: npt.NDArray[np.uint8] = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)]
# µ-law↔A-law is a byte-to-byte map: bytes.translate does it in C with no numpy call.
_ULAW_TO_ALAW_BYTES = ULAW_TO_ALAW.tobytes()
_ALAW_TO_ULAW_BYTES = ALAW_TO_ULAW.tobytes()
for _t in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE, ULAW_TO_ALAW, ALAW_TO_ULAW):
    _t.setflags(write=False)


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_I16 = np.dtype(np.int16)
_frombuffer = np.frombuffer


def _as_pcm(samples: npt.ArrayLike) -> PCM:
    arr = samples if type(samples) is np.ndarray else np.asarray(samples)
    dtype = arr.dtype
    if dtype is not _I16 and dtype != _I16:
        raise TypeError(f"expected int16 PCM, got {dtype}")
    return arr


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Linear int16 → µ-law bytes (ITU-T G.711)."""
    return bytes(ULAW_ENCODE.take(_as_pcm(pcm).view(np.uint16)).tobytes())


def ulaw_decode(payload: bytes) -> PCM:
    """µ-law bytes → linear int16 (ITU-T G.711)."""
    return ULAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Linear int16 → A-law bytes (ITU-T G.711)."""
    return bytes(ALAW_ENCODE.take(_as_pcm(pcm).view(np.uint16)).tobytes())


def alaw_decode(payload: bytes) -> PCM:
    """A-law bytes → linear int16 (ITU-T G.711)."""
    return ALAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))


# --- codec objects ---------------------------------------------------------------------


class CodecError(ValueError):
    """A payload cannot be decoded by this codec (peer's fault), or a codec is unknown."""


class Codec(Protocol):
    """What the engine needs from a codec. Frames are ``ptime`` long (20 ms default)."""

    @property
    def name(self) -> str:
        """SDP encoding name (RFC 3551 §6, RFC 4855)."""

    @property
    def payload_type(self) -> int: ...

    @property
    def clock_rate(self) -> int:
        """RTP timestamp units per second."""

    @property
    def sample_rate(self) -> int:
        """Audio samples per second on the PCM side."""

    @property
    def channels(self) -> int: ...

    def encode(self, pcm: PCM) -> bytes: ...

    def decode(self, payload: bytes) -> PCM: ...


class G711:
    """PCMU (µ-law, PT 0) or PCMA (A-law, PT 8): 8000 Hz, one octet per sample.

    Hot path: one ``frombuffer`` and one ``ndarray.take`` per frame, with bound methods
    and dtype objects prepared once (keyword ``dtype=np.uint8`` or fancy indexing each
    cost 2–3× more per 160-sample frame).
    """

    __slots__ = ("_dec", "_enc", "channels", "clock_rate", "name", "payload_type", "sample_rate")

    def __init__(self, name: str, payload_type: int) -> None:
        if payload_type not in (PT_PCMU, PT_PCMA):
            raise CodecError(f"G.711 is PT 0 or 8, not {payload_type}")
        self.name = name
        self.payload_type = payload_type
        self.clock_rate = 8000
        self.sample_rate = 8000
        self.channels = 1
        ulaw = payload_type == PT_PCMU
        self._dec = (ULAW_DECODE if ulaw else ALAW_DECODE).take
        self._enc = (ULAW_ENCODE if ulaw else ALAW_ENCODE).take

    def __repr__(self) -> str:
        return f"G711({self.name!r}, {self.payload_type})"

    def encode(self, pcm: PCM) -> bytes:
        return bytes(self._enc(_as_pcm(pcm).view(_U16)).tobytes())

    def decode(self, payload: bytes) -> PCM:
        return self._dec(_frombuffer(payload, _U8))


@dataclass(frozen=True)
class L16:
    """Linear 16-bit big-endian PCM (RFC 3551 §4.5.11); dynamic PT unless 10/11 at 44.1 kHz."""

    payload_type: int
    sample_rate: int = 8000
    channels: int = 1
    name: str = "L16"

    @property
    def clock_rate(self) -> int:
        return self.sample_rate

    def encode(self, pcm: PCM) -> bytes:
        return bytes(_as_pcm(pcm).astype(">i2").tobytes())

    def decode(self, payload: bytes) -> PCM:
        if len(payload) % 2:
            raise CodecError("L16 payload has an odd number of octets")
        return np.frombuffer(payload, dtype=">i2").astype(np.int16)


class G722:
    """G.722 at 64 kb/s via the ``G722`` package (RFC 3551 §4.5.2: RTP clock 8000).

    ``sample_rate`` is the PCM side: 16000 (wideband) or 8000 (the library's narrowband
    interworking mode; the RTP payload is still standard G.722). G.722 is ADPCM with
    state, so every stream needs its own object (:meth:`new_state`; ``codec_by_name``
    returns a fresh one).
    """

    name = "G722"
    payload_type = PT_G722
    clock_rate = 8000
    channels = 1

    def __init__(self, sample_rate: int = 16000, bit_rate: int = 64000) -> None:
        import G722 as _g722

        if sample_rate not in (8000, 16000):
            raise CodecError("G.722 PCM side is 16000 Hz (or 8000 Hz narrowband mode)")
        self.sample_rate = sample_rate
        self.bit_rate = bit_rate
        self._enc: Any = _g722.G722(sample_rate, bit_rate)
        self._dec: Any = _g722.G722(sample_rate, bit_rate)

    def new_state(self) -> G722:
        """A codec with fresh encoder/decoder state and the same parameters."""
        return G722(self.sample_rate, self.bit_rate)

    def encode(self, pcm: PCM) -> bytes:
        return bytes(self._enc.encode(_as_pcm(pcm)))

    def decode(self, payload: bytes) -> PCM:
        return np.frombuffer(self._dec.decode(payload), dtype=np.int16).copy()


PCMU = G711("PCMU", PT_PCMU)
PCMA = G711("PCMA", PT_PCMA)


def g722_available() -> bool:
    """True when the optional ``g722`` package is importable."""
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def codec_by_name(
    name: str, payload_type: int | None = None, sample_rate: int | None = None
) -> Codec:
    """Codec for an SDP ``rtpmap`` encoding name (case-insensitive, RFC 4855 §3)."""
    key = name.upper()
    if key == "PCMU":
        return PCMU
    if key == "PCMA":
        return PCMA
    if key == "L16":
        if payload_type is None:
            raise CodecError("L16 needs a (dynamic) payload type")
        return L16(payload_type, sample_rate or 8000)
    if key == "G722" and g722_available():
        return G722(sample_rate or 16000)
    raise CodecError(f"unsupported codec {name!r}")


def codec_by_payload_type(pt: int) -> Codec:
    """Codec for a static payload type (RFC 3551 §6)."""
    if pt == PT_PCMU:
        return PCMU
    if pt == PT_PCMA:
        return PCMA
    if pt == PT_G722 and g722_available():
        return G722()
    raise CodecError(f"no static codec for payload type {pt}")


def frame_samples(codec: Codec, ptime_ms: int = 20) -> tuple[int, int]:
    """``(pcm_samples, timestamp_increment)`` per frame of ``ptime_ms``."""
    return codec.sample_rate * ptime_ms // 1000, codec.clock_rate * ptime_ms // 1000


def transcode(payload: bytes, src: Codec, dst: Codec) -> bytes:
    """Convert one frame between codecs through linear PCM (the L16 pivot).

    PCMU↔PCMA uses a direct table. Sample-rate changes are not done here: a relay
    between codecs of different audio rates resamples with :mod:`switchboard.rtp.resample`.
    """
    if src is dst or (src.name == dst.name and src.payload_type == dst.payload_type):
        return payload
    if src.name == "PCMU" and dst.name == "PCMA":
        return bytes(payload).translate(_ULAW_TO_ALAW_BYTES)
    if src.name == "PCMA" and dst.name == "PCMU":
        return bytes(payload).translate(_ALAW_TO_ULAW_BYTES)
    if src.sample_rate != dst.sample_rate:
        raise CodecError(f"transcode {src.name}→{dst.name} needs resampling")
    return dst.encode(src.decode(payload))
