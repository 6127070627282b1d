"""Jitter buffer with a fake clock, conference mixer arithmetic, relay packet mapping."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.rtp.codec import L16, PCMA, PCMU
from switchboard.rtp.jitter import JitterBuffer
from switchboard.rtp.mixer import ConferenceMixer
from switchboard.rtp.relay import RelayPath


def frame(i: int) -> bytes:
    return i.to_bytes(4, "big") * 40


def run(
    jb: JitterBuffer, arrivals: list[tuple[float, int]], ticks: int, tick0: float = 0.0
) -> list[int | None]:
    """Feed packets (arrival time, frame index) and pull one frame per 20 ms tick."""
    out: list[int | None] = []
    pending = sorted(arrivals)
    for n in range(ticks):
        now = tick0 + n * 0.02
        while pending and pending[0][0] <= now:
            t, i = pending.pop(0)
            jb.put((1000 + 160 * i) & 0xFFFFFFFF, frame(i), t)
        got = jb.get()
        out.append(None if got is None else int.from_bytes(got[:4], "big"))
    return out


def test_in_order_stream_plays_every_frame_once() -> None:
    jb = JitterBuffer()
    out = run(jb, [(0.02 * i, i) for i in range(50)], 60)
    assert [x for x in out if x is not None] == list(range(50))
    assert jb.lost == 0 and jb.late == 0 and jb.played == 50


def test_reorder_and_duplicates() -> None:
    order = [0, 1, 3, 2, 4, 6, 5, 7, 8, 9]
    arrivals = [(0.02 * n, i) for n, i in enumerate(order)] + [(0.02 * 4 + 0.001, 4)]
    jb = JitterBuffer(min_frames=2)
    out = run(jb, arrivals, 20)
    assert [x for x in out if x is not None] == list(range(10))
    assert jb.duplicates == 1 and jb.lost == 0


def test_loss_is_reported_and_late_packets_are_dropped() -> None:
    arrivals = [(0.02 * i, i) for i in range(20) if i != 5]
    arrivals.append((0.02 * 12, 5))  # frame 5 arrives long after its playout time
    jb = JitterBuffer(min_frames=1, max_frames=3)
    out = run(jb, arrivals, 30)
    played = [x for x in out if x is not None]
    assert 5 not in played and played == [i for i in range(20) if i != 5]
    assert jb.lost == 1 and jb.late == 1


def test_adaptive_delay_grows_with_jitter_and_shrinks_after() -> None:
    rng = np.random.default_rng(5)
    jb = JitterBuffer(max_frames=10)
    calm = [(0.02 * i, i) for i in range(100)]
    run(jb, calm, 100)
    assert jb.target == 1
    jb2 = JitterBuffer(max_frames=10)
    jittery = [(0.02 * i + float(rng.uniform(0, 0.06)), i) for i in range(300)]
    out = run(jb2, jittery, 320)
    assert jb2.target >= 3  # ≈ 1 + 3·jitter/20 ms
    # With the adapted delay, late loss stays small.
    assert jb2.late < 15 and sum(x is not None for x in out) > 270
    high = jb2.delay
    # The network calms down: the jitter estimate decays and the buffer sheds delay.
    calm_again = [(6.4 + 0.02 * i + 0.1, 320 + i) for i in range(400)]
    run(jb2, calm_again, 420, tick0=6.4)
    assert jb2.target <= 2 and jb2.shrunk > 0 and jb2.delay <= max(high, 0.06)


def test_underrun_holds_playout_instead_of_skipping() -> None:
    jb = JitterBuffer()
    arrivals = [(0.02 * i, i) for i in range(5)] + [(0.02 * (i + 10), i) for i in range(5, 10)]
    out = run(jb, arrivals, 30)
    assert [x for x in out if x is not None] == list(range(10))
    assert jb.underruns >= 1 and jb.lost == 0


def test_timestamp_jump_resets() -> None:
    jb = JitterBuffer()
    for i in range(5):
        jb.put(1000 + 160 * i, frame(i), 0.02 * i)
        jb.get()
    jb.put(9_000_000, frame(99), 0.2)  # sender restarted with a new timestamp base
    assert jb.resets == 1
    assert jb.get() == frame(99)


def test_timestamp_wraparound() -> None:
    jb = JitterBuffer()
    base = 2**32 - 320
    got = []
    for i in range(6):
        jb.put((base + 160 * i) & 0xFFFFFFFF, frame(i), 0.02 * i)
        got.append(jb.get())
    assert got == [frame(i) for i in range(6)] and jb.resets == 0


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_frames=5, max_frames=2)


def const(v: int) -> np.ndarray:
    return np.full(160, v, np.int16)


def test_mixer_n_minus_one() -> None:
    mix = ConferenceMixer(energy_level=0)
    for m in "abc":
        mix.add(m)
    out = mix.mix({"a": const(1000), "b": const(200), "c": const(30)})
    assert out["a"][0] == 230 and out["b"][0] == 1030 and out["c"][0] == 1200
    assert all(len(f) == 160 and f.dtype == np.int16 for f in out.values())


def test_mixer_clips_instead_of_wrapping() -> None:
    mix = ConferenceMixer(energy_level=0)
    for m in "abcd":
        mix.add(m)
    out = mix.mix({"a": const(30000), "b": const(30000), "c": const(-30000), "d": const(20000)})
    assert out["c"][0] == 32767  # 80000 → clipped, not wrapped to negative
    assert out["d"][0] == 30000
    neg = mix.mix({"a": const(-30000), "b": const(-30000), "c": const(-30000), "d": None})
    assert neg["d"][0] == -32768


def test_mixer_energy_threshold_mute_and_deaf() -> None:
    mix = ConferenceMixer(energy_level=100)
    for m in "abc":
        mix.add(m)
    out = mix.mix({"a": const(50), "b": const(500), "c": const(-700)})  # a is line noise
    assert out["a"][0] == -200 and out["b"][0] == -700 and out["c"][0] == 500
    assert not mix.members["a"].speaking and mix.members["b"].speaking
    mix.set_mute("b", True)
    mix.set_deaf("c", True)
    out = mix.mix({"a": const(1000), "b": const(500), "c": const(-700)})
    assert out["a"][0] == -700 and out["b"][0] == 300 and not np.any(out["c"])
    mix.remove("c")
    assert set(mix.mix({})) == {"a", "b"} and not np.any(mix.mix({})["a"])


def test_relay_same_codec_passes_payload_and_rebases_timestamps() -> None:
    path = RelayPath(PCMU, PCMU)
    a = path.map(1, 0, True, 5000, b"\x11" * 160, out_now=700)
    b = path.map(1, 0, False, 5160, b"\x22" * 160, out_now=860)
    gap = path.map(1, 0, False, 5160 + 160 * 10, b"\x33" * 160, out_now=1020)
    assert a is not None and b is not None and gap is not None
    assert (a.timestamp, b.timestamp, gap.timestamp) == (700, 860, 700 + 160 * 11)
    assert a.payload == b"\x11" * 160 and a.payload_type == 0 and a.marker and not b.marker
    restarted = path.map(2, 0, False, 99, b"\x44" * 160, out_now=5000)  # new SSRC
    assert restarted is not None and restarted.timestamp == 5000 and restarted.marker


def test_relay_transcodes_and_passes_dtmf_with_the_other_legs_pt() -> None:
    path = RelayPath(PCMU, PCMA, src_event_pt=101, dst_event_pt=96)
    x = (8000 * np.sin(np.arange(160) / 3)).astype(np.int16)
    out = path.map(1, 0, False, 0, PCMU.encode(x), 0)
    assert out is not None and out.payload_type == 8
    assert np.max(np.abs(PCMA.decode(out.payload).astype(int) - x)) < 600
    dtmf = path.map(1, 101, True, 160, b"\x05\x0a\x00\xa0", 0)
    assert dtmf is not None and dtmf.payload_type == 96 and dtmf.payload == b"\x05\x0a\x00\xa0"
    assert path.map(1, 18, False, 320, b"x", 0) is None  # G.729 never negotiated
    assert path.map(1, 13, False, 320, b"\x40", 0) is None  # CN not negotiated on B
    assert path.dropped == 2 and path.transcoded == 1
    no_te = RelayPath(PCMU, PCMU, 101, None)
    assert no_te.map(1, 101, True, 0, b"\x05\x0a\x00\xa0", 0) is None


def test_relay_resamples_between_wideband_and_narrowband() -> None:
    wide = L16(96, 16000)
    down = RelayPath(wide, PCMU)
    up = RelayPath(PCMU, wide)
    t = np.arange(16000) / 16000
    x = np.rint(9000 * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.int16)
    narrow_frames = []
    for i in range(50):
        out = down.map(7, 96, i == 0, 320 * i, wide.encode(x[320 * i : 320 * (i + 1)]), 0)
        assert out is not None and out.payload_type == 0 and len(out.payload) == 160
        assert out.timestamp == 160 * i  # 16 kHz clock mapped onto 8 kHz
        narrow_frames.append(out.payload)
    narrow = np.concatenate([PCMU.decode(f) for f in narrow_frames]).astype(np.float64)
    ref = 9000 * np.sin(2 * np.pi * 1000 * (np.arange(8000) / 8000) + 0.3)
    # The relay adds only the filter's start-up delay (a few samples): find it, then the
    # signal must match to G.711 precision.
    snrs = [
        10
        * np.log10(
            np.mean(ref[400:7000] ** 2) / np.mean((narrow[400 + d : 7000 + d] - ref[400:7000]) ** 2)
        )
        for d in range(0, 40)
    ]
    assert max(snrs) > 30 and int(np.argmax(snrs)) <= 16
    back = [up.map(8, 0, False, 160 * i, f, 0) for i, f in enumerate(narrow_frames)]
    assert all(b is not None and len(b.payload) == 640 for b in back)
    wide_again = np.concatenate([wide.decode(b.payload) for b in back if b is not None])
    spectrum = np.abs(np.fft.rfft(wide_again[800:] * np.hanning(len(wide_again) - 800)))
    assert abs(np.argmax(spectrum) * 16000 / (len(wide_again) - 800) - 1000) < 3
    assert down.dropped == 0 and up.transcoded == 50
