"""RTP inactivity (MEDIA_TIMEOUT) with a fake clock."""

from __future__ import annotations

from switchboard.media.rtp_timeout import RtpInactivity


def test_silence_for_the_timeout_expires_once() -> None:
    w = RtpInactivity(30.0)
    assert not w.observe("a", 0, False, now=0.0)
    assert not w.observe("a", 0, False, now=29.9)
    assert w.observe("a", 0, False, now=30.0)
    assert len(w) == 0  # reported once, then forgotten


def test_packets_reset_the_clock() -> None:
    w = RtpInactivity(30.0)
    w.observe("a", 0, False, now=0.0)
    assert not w.observe("a", 50, False, now=20.0)
    assert not w.observe("a", 50, False, now=49.0)
    assert w.observe("a", 50, False, now=50.0)


def test_hold_does_not_count_and_restarts_the_clock() -> None:
    w = RtpInactivity(10.0)
    w.observe("a", 5, False, now=0.0)
    assert not w.observe("a", 5, True, now=100.0)  # on hold: silence expected
    assert not w.observe("a", 5, False, now=109.0)
    assert w.observe("a", 5, False, now=110.0)


def test_off_and_forgetting_legs() -> None:
    off = RtpInactivity(0.0)
    assert not off.observe("a", 0, False, now=0.0)
    assert not off.observe("a", 0, False, now=1e9)
    w = RtpInactivity(5.0)
    w.observe("a", 0, False, now=0.0)
    w.observe("b", 0, False, now=0.0)
    w.retain(["b"])
    assert len(w) == 1
