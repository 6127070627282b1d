from __future__ import annotations

from switchboard.media.limits import Refusal, SessionLimiter


def test_sps_30_admits_exactly_30_in_one_second() -> None:
    lim = SessionLimiter(max_sessions=1000, sessions_per_second=30)
    results = [lim.admit(10.0 + i * 0.02) for i in range(35)]  # 35 attempts in 0.7 s
    assert results.count(None) == 30
    assert results[30:] == [Refusal.THROTTLE] * 5
    assert lim.sps_last(10.7) == 35


def test_window_slides() -> None:
    lim = SessionLimiter(sessions_per_second=2)
    assert lim.admit(0.0) is None
    assert lim.admit(0.5) is None
    assert lim.admit(0.9) is Refusal.THROTTLE
    assert lim.admit(1.0) is None  # the attempt at 0.0 left the window (now - 1, now]
    assert lim.admit(1.2) is Refusal.THROTTLE
    assert lim.admit(1.5) is None


def test_max_sessions_and_release() -> None:
    lim = SessionLimiter(max_sessions=2, sessions_per_second=100)
    assert lim.admit(0) is None and lim.admit(0) is None
    assert lim.admit(0) is Refusal.OVER_LIMIT
    lim.release()
    assert lim.admit(0) is None
    assert lim.peak == 2 and lim.since_startup == 3
