"""G.711 tables against ITU-T G.711 reference values, SNR through each codec, L16, transcoding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from switchboard.rtp.codec import (
    ALAW_DECODE,
    ALAW_ENCODE,
    L16,
    PCMA,
    PCMU,
    ULAW_DECODE,
    ULAW_ENCODE,
    CodecError,
    alaw_decode,
    alaw_encode,
    codec_by_name,
    codec_by_payload_type,
    frame_samples,
    transcode,
    ulaw_decode,
    ulaw_encode,
)


def full_scale_sine(freq: float = 1004.0, seconds: float = 1.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = out.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))


def test_ulaw_reference_points() -> None:
    # G.711 Table 2a: code 0x80 decodes to +8031 (14-bit) = +32124 in 16-bit; 0xFF/0x7F are ±0.
    assert ULAW_DECODE[0x80] == 32124 and ULAW_DECODE[0x00] == -32124
    assert ULAW_DECODE[0xFF] == 0 and ULAW_DECODE[0x7F] == 0
    assert ULAW_DECODE[0xFE] == 8 and ULAW_DECODE[0x7E] == -8
    # Segment boundaries of the first segment end: decision values 1, 3, ... (×4).
    assert ULAW_DECODE[0xEF] == 132 and ULAW_DECODE[0xF0] == 120
    assert ulaw_encode(np.array([0, -1, 32767, -32768], np.int16)) == bytes(
        [0xFF, 0x7E, 0x80, 0x00]
    )


def test_alaw_reference_points() -> None:
    # G.711 Table 1a: A-law with even bits inverted; 0xD5/0x55 are ±1 (×8 = ±8), 0xAA/0x2A ±4032 (×8).
    assert ALAW_DECODE[0xD5] == 8 and ALAW_DECODE[0x55] == -8
    assert ALAW_DECODE[0xAA] == 32256 and ALAW_DECODE[0x2A] == -32256
    assert ALAW_DECODE[0xD4] == 24 and ALAW_DECODE[0xC5] == 264
    assert alaw_encode(np.array([0, -1, 32767, -32768], np.int16)) == bytes(
        [0xD5, 0x55, 0xAA, 0x2A]
    )


def test_tables_match_the_reference_implementation_bit_for_bit() -> None:
    """CPython's audioop is the ITU-T/Sun g711.c; compare all 65536 inputs and 256 codes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(every) == audioop.lin2ulaw(every.tobytes(), 2)
    assert alaw_encode(every) == audioop.lin2alaw(every.tobytes(), 2)
    codes = bytes(range(256))
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_decoded_values_are_fixed_points_of_the_encoder() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(ALAW_ENCODE[ALAW_DECODE.view(np.uint16)], codes)
    reenc = ULAW_ENCODE[ULAW_DECODE.view(np.uint16)]
    assert np.array_equal(reenc[codes != 0x7F], codes[codes != 0x7F])  # -0 re-encodes as +0
    assert len(ULAW_ENCODE) == 65536 and ULAW_ENCODE.dtype == np.uint8


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_full_scale_sine_snr(codec) -> None:  # type: ignore[no-untyped-def]
    """G.711 gives ≈ 38 dB SNR on a full-scale sine (companding, 8 bits)."""
    x = full_scale_sine()
    snr = snr_db(x, codec.decode(codec.encode(x)))
    assert 36.0 < snr < 40.0, snr


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_snr_stays_high_across_levels(codec) -> None:  # type: ignore[no-untyped-def]
    """Logarithmic companding keeps SNR nearly constant from -30 dBFS up (unlike linear 8-bit)."""
    for level_db in (-30, -20, -10):
        x = np.rint(full_scale_sine().astype(np.float64) * 10 ** (level_db / 20)).astype(np.int16)
        assert snr_db(x, codec.decode(codec.encode(x))) > 30.0


def test_l16_is_big_endian_and_round_trips() -> None:
    codec = L16(payload_type=96, sample_rate=16000)
    x = np.array([1, -2, 0x1234], np.int16)
    assert codec.encode(x) == b"\x00\x01\xff\xfe\x12\x34"
    assert np.array_equal(codec.decode(codec.encode(x)), x)
    assert codec.clock_rate == 16000
    with pytest.raises(CodecError):
        codec.decode(b"\x00")


def test_transcoding_between_codecs() -> None:
    x = full_scale_sine(seconds=0.02)
    ulaw = PCMU.encode(x)
    alaw = transcode(ulaw, PCMU, PCMA)
    assert len(alaw) == 160
    assert snr_db(x, PCMA.decode(alaw)) > 33.0
    assert transcode(alaw, PCMA, PCMU) != alaw
    assert snr_db(x, PCMU.decode(transcode(alaw, PCMA, PCMU))) > 33.0
    assert transcode(ulaw, PCMU, PCMU) is ulaw
    l16 = L16(97)
    assert np.array_equal(l16.decode(transcode(ulaw, PCMU, l16)), PCMU.decode(ulaw))


def test_codec_lookup() -> None:
    assert codec_by_name("pcmu") is PCMU and codec_by_name("PCMA") is PCMA
    assert codec_by_payload_type(0) is PCMU and codec_by_payload_type(8) is PCMA
    assert codec_by_name("L16", 96, 16000).sample_rate == 16000
    with pytest.raises(CodecError):
        codec_by_name("GSM")
    with pytest.raises(CodecError):
        codec_by_payload_type(3)
    assert frame_samples(PCMU) == (160, 160)


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        PCMU.encode(np.zeros(160, np.float32))  # type: ignore[arg-type]


def _aligned_snr(ref: np.ndarray, out: np.ndarray, max_delay: int = 64) -> float:
    """SNR after removing the codec's fixed delay (G.722's QMF filters delay the signal)."""
    best = -np.inf
    for d in range(max_delay):
        n = len(ref) - d
        best = max(best, snr_db(ref[:n], out[d : d + n]))
    return best


@pytest.mark.parametrize("rate", [16000, 8000])
def test_g722_round_trip(rate: int) -> None:
    from switchboard.rtp.codec import G722, PT_G722

    codec = codec_by_name("G722", sample_rate=rate)
    assert isinstance(codec, G722) and codec.payload_type == PT_G722 and codec.clock_rate == 8000
    t = np.arange(rate) / rate
    x = np.rint(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    n = rate // 50
    payloads = [codec.encode(x[i : i + n]) for i in range(0, len(x), n)]
    assert all(len(p) == 160 for p in payloads)  # 64 kb/s × 20 ms, whatever the PCM rate
    decoded = np.concatenate([codec.decode(p) for p in payloads])
    assert len(decoded) == len(x) and decoded.dtype == np.int16
    assert _aligned_snr(x[n:], decoded[n:]) > 20.0
    assert codec_by_name("g722") is not codec_by_name("g722")  # state per stream
    with pytest.raises(CodecError):
        G722(sample_rate=44100)


def test_g722_narrowband_mode_relays_with_g711_without_resampling() -> None:
    from switchboard.rtp.codec import G722

    wide_peer = G722(16000)
    bridge_side = G722(8000)
    t = np.arange(16000) / 16000
    x = np.rint(8000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    payloads = [wide_peer.encode(x[i : i + 320]) for i in range(0, len(x), 320)]
    ulaw = [transcode(p, bridge_side, PCMU) for p in payloads]
    pcm = np.concatenate([PCMU.decode(u) for u in ulaw]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm[800:] * np.hanning(len(pcm) - 800)))
    assert abs(np.argmax(spectrum) * 8000 / (len(pcm) - 800) - 700) < 5
