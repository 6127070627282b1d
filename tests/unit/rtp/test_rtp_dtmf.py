"""DTMF: RFC 4733 streams with loss, duplicates and reordering; in-band Goertzel detection in noise."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.rtp.dtmf import (
    DtmfEnd,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    DtmfStart,
    InbandDtmfDetector,
    TelephoneEvent,
    dtmf_tone,
)


def digits_of(events: list) -> str:  # type: ignore[type-arg]
    return "".join(e.digit for e in events if isinstance(e, DtmfEnd))


def stream(
    digits: str, start_ts: int = 1000, duration_ms: int = 100
) -> list[tuple[bytes, bool, int]]:
    """Packets of a real sender: each digit 100 ms, 60 ms apart (timestamps advance)."""
    out: list[tuple[bytes, bool, int]] = []
    ts = start_ts
    for d in digits:
        out += DtmfSender(d, ts, duration_ms).packets()
        ts = (ts + 8 * (duration_ms + 60)) & 0xFFFFFFFF
    return out


def test_payload_layout_rfc4733() -> None:
    te = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert bytes(te) == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(bytes(te)) == te
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x02")


def test_sender_marks_first_keeps_timestamp_and_repeats_end() -> None:
    pkts = DtmfSender("5", 4242, duration_ms=100).packets()
    events = [TelephoneEvent.parse(p) for p, _, _ in pkts]
    assert [m for _, m, _ in pkts] == [True] + [False] * 6
    assert {ts for _, _, ts in pkts} == {4242}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert all(e.event == 5 for e in events)
    with pytest.raises(DtmfError):
        DtmfSender("x", 0)


def test_receiver_reports_each_digit_once_despite_redundant_ends() -> None:
    rx = DtmfReceiver()
    events = []
    for i, (payload, _marker, ts) in enumerate(stream("123*#A")):
        events += rx.feed(payload, ts, now=i * 0.02)
    assert digits_of(events) == "123*#A"
    assert [e.digit for e in events if isinstance(e, DtmfStart)] == list("123*#A")
    assert all(e.duration == 800 for e in events if isinstance(e, DtmfEnd))
    assert rx.duplicates == 2 * 6  # the 2nd and 3rd end packets of every digit


def test_receiver_with_loss_duplicates_and_reordering() -> None:
    rng = np.random.default_rng(7)
    pkts = stream("0123456789")
    noisy = []
    for p in pkts:
        if rng.random() < 0.2:
            continue  # 20 % loss
        noisy.append(p)
        if rng.random() < 0.2:
            noisy.append(p)  # duplicates
    # Swap a few neighbours (reordering on the path).
    for i in range(1, len(noisy) - 1, 7):
        noisy[i], noisy[i + 1] = noisy[i + 1], noisy[i]
    rx = DtmfReceiver()
    events = []
    for i, (payload, _m, ts) in enumerate(noisy):
        events += rx.feed(payload, ts, now=i * 0.02)
    events += rx.handle_timer(now=1000.0)
    assert digits_of(events) == "0123456789"


def test_lost_end_packets_end_the_event_on_the_next_digit_or_timeout() -> None:
    rx = DtmfReceiver(timeout=0.5)
    first = [p for p in DtmfSender("7", 0).packets() if not TelephoneEvent.parse(p[0]).end]
    events = []
    for i, (payload, _m, ts) in enumerate(first):
        events += rx.feed(payload, ts, now=i * 0.02)
    assert events == [DtmfStart("7", 0, "RTP")]
    assert rx.handle_timer(now=0.1) == []
    second = DtmfSender("8", 2000).packets()
    events = rx.feed(second[0][0], 2000, now=0.3)
    assert events == [DtmfEnd("7", 0, 640, "RTP"), DtmfStart("8", 2000, "RTP")]
    rx.feed(second[1][0], 2000, now=0.32)
    assert rx.get_timer() == pytest.approx(0.82)
    assert rx.handle_timer(now=0.9) == [DtmfEnd("8", 2000, 320, "RTP")]
    assert rx.get_timer() is None


def test_marker_never_set_and_start_packet_lost() -> None:
    rx = DtmfReceiver()
    pkts = DtmfSender("9", 77).packets()[2:]  # device without marker; first two lost
    events = []
    for payload, _m, ts in pkts:
        events += rx.feed(payload, ts, now=0.0)
    assert digits_of(events) == "9"


def test_non_digit_events_ignored() -> None:
    rx = DtmfReceiver()
    assert rx.feed(bytes(TelephoneEvent(16, True, 10, 800)), 5, 0.0) == []  # flash


def feed_in_frames(det: InbandDtmfDetector, signal: np.ndarray) -> list:  # type: ignore[type-arg]
    events = []
    for i in range(0, len(signal), 160):
        events += det.feed(signal[i : i + 160])
    return events


def noisy_sequence(
    digits: str,
    tone_ms: int,
    gap_ms: int,
    level_dbfs: float,
    snr_db: float,
    seed: int = 3,
    twist_db: float = 0.0,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [np.zeros(800)]
    for d in digits:
        parts.append(dtmf_tone(d, tone_ms, level_dbfs=level_dbfs).astype(np.float64))
        parts.append(np.zeros(8 * gap_ms))
    x = np.concatenate(parts)
    tone_power = 2 * (32767 * 10 ** (level_dbfs / 20)) ** 2 / 2
    noise = rng.normal(0, np.sqrt(tone_power / 10 ** (snr_db / 10)), len(x))
    return np.clip(np.rint(x + noise), -32768, 32767).astype(np.int16)


def test_inband_all_sixteen_digits_in_noise() -> None:
    sig = noisy_sequence("0123456789*#ABCD", tone_ms=70, gap_ms=60, level_dbfs=-20, snr_db=15)
    events = feed_in_frames(InbandDtmfDetector(), sig)
    assert digits_of(events) == "0123456789*#ABCD"
    assert all(e.source == "INBAND_AUDIO" for e in events)
    for e in events:
        if isinstance(e, DtmfEnd):
            assert 8 * 40 <= e.duration <= 8 * 110


def test_inband_rejects_too_short_tones() -> None:
    # ITU-T Q.24: tones shorter than ~23 ms must not be accepted.
    sig = noisy_sequence("123", tone_ms=20, gap_ms=80, level_dbfs=-15, snr_db=30)
    assert feed_in_frames(InbandDtmfDetector(), sig) == []


def test_inband_rejects_noise_speechlike_and_single_tones() -> None:
    rng = np.random.default_rng(11)
    det = InbandDtmfDetector()
    assert feed_in_frames(det, rng.normal(0, 4000, 8000 * 5).astype(np.int16)) == []
    t = np.arange(8000 * 2) / 8000
    # Harmonic-rich "voice": 120 Hz fundamental with many harmonics.
    voice = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 30)) * 6000
    assert feed_in_frames(InbandDtmfDetector(), voice.astype(np.int16)) == []
    single = (8000 * np.sin(2 * np.pi * 770 * t)).astype(np.int16)  # row tone only
    assert feed_in_frames(InbandDtmfDetector(), single) == []


def test_inband_twist_limits() -> None:
    t = np.arange(800) / 8000
    row = np.sin(2 * np.pi * 697 * t)
    col = np.sin(2 * np.pi * 1209 * t)

    def detect(row_db: float, col_db: float) -> str:
        x = 32767 * (10 ** (row_db / 20) * row + 10 ** (col_db / 20) * col)
        sig = np.concatenate([x, np.zeros(800)]).astype(np.int16)
        return digits_of(feed_in_frames(InbandDtmfDetector(), sig))

    assert detect(-10, -16) == "1"  # 6 dB normal twist: accepted
    assert detect(-10, -20) == ""  # 10 dB normal twist: rejected
    assert detect(-13, -10) == "1"  # 3 dB reverse twist: accepted
    assert detect(-16, -10) == ""  # 6 dB reverse twist: rejected
    assert detect(-50, -50) == ""  # below the level threshold


def test_inband_needs_8khz() -> None:
    with pytest.raises(ValueError):
        InbandDtmfDetector(16000)
