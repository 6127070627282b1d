"""ACL and pike-style flood detection, with a fake clock."""

from __future__ import annotations

import pytest

from switchboard.router.protection import Acl, Pike, Verdict


def test_acl_ips_and_cidr() -> None:
    acl = Acl(["127.0.0.1", "10.1.0.0/16", "2001:db8::/32"])
    assert acl.allows("127.0.0.1")
    assert not acl.allows("127.0.0.2")
    assert acl.allows("10.1.200.3")
    assert not acl.allows("10.2.0.1")
    assert acl.allows("2001:db8::5")
    assert acl.allows("[2001:db8::5]")
    assert not acl.allows("not-an-ip")


def test_acl_bad_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"acl.allow: '10.0.0.0/33'"):
        Acl(["10.0.0.0/33"], key="acl.allow")


def pike(**kw: object) -> Pike:
    args: dict = dict(sampling_time_unit=2.0, reqs_density_per_unit=5, ban_seconds=60.0)
    args.update(kw)
    return Pike(**args)


def test_density_exceeded_blocks_with_retry_after_then_drops_above_ten_times() -> None:
    p = pike()
    verdicts = [p.check("198.51.100.7", 0.01 * i) for i in range(60)]
    assert all(v.verdict is Verdict.ALLOW for v in verdicts[:5])
    sixth = verdicts[5]
    assert sixth.verdict is Verdict.REJECT and sixth.newly_blocked and sixth.retry_after == 60
    assert [v.newly_blocked for v in verdicts].count(True) == 1  # one log line per block
    assert all(v.verdict is Verdict.REJECT for v in verdicts[6:50])
    assert all(v.verdict is Verdict.DROP for v in verdicts[50:])  # > 10 × density
    assert p.blocks_total == 1


def test_other_sources_are_unaffected() -> None:
    p = pike()
    for i in range(100):
        p.check("192.0.2.66", i * 0.001)
    assert all(p.check("127.0.0.1", 0.2 + i * 0.1).verdict is Verdict.ALLOW for i in range(5))


def test_rate_below_density_never_blocks() -> None:
    p = pike()
    # 5 requests per 2 s unit, for a minute
    assert all(p.check("192.0.2.1", i * 0.4).verdict is Verdict.ALLOW for i in range(150))


def test_ban_expires_after_ban_seconds() -> None:
    p = pike(ban_seconds=10.0)
    for i in range(6):
        p.check("192.0.2.9", i * 0.01)
    assert p.is_banned("192.0.2.9", 5.0)
    assert p.check("192.0.2.9", 9.0).verdict is Verdict.REJECT
    assert p.check("192.0.2.9", 9.5).retry_after == 1  # ban until 10.05
    assert p.check("192.0.2.9", 10.5).verdict is Verdict.ALLOW
    assert not p.is_banned("192.0.2.9", 10.5)


def test_allow_list_is_never_blocked() -> None:
    p = pike(allow=["203.0.113.0/24"])
    assert all(p.check("203.0.113.5", i * 0.001).verdict is Verdict.ALLOW for i in range(500))
    assert p.tracked == 0


def test_memory_is_bounded_under_spoofed_sources_and_bans_survive() -> None:
    p = pike(max_sources=1000)
    for i in range(6):
        p.check("198.51.100.1", i * 0.001)  # a real attacker gets banned
    for i in range(50_000):  # a flood of spoofed one-shot sources
        p.check(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1.0 + i * 1e-5)
    assert p.tracked <= 2 * 1000
    assert p.is_banned("198.51.100.1", 2.0)
    assert p.check("198.51.100.1", 2.0).verdict is not Verdict.ALLOW


def test_window_resets_each_unit() -> None:
    p = pike()
    for unit in range(5):
        for i in range(5):
            assert p.check("192.0.2.3", unit * 2.0 + i * 0.01).verdict is Verdict.ALLOW
