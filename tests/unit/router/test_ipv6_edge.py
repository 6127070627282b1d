"""IPv6 sources in every address-based decision of the edge: trunks, ACL, pike and the
authentication bans (fake clock). Addresses as the kernel reports them (no brackets) and as
they appear in SIP (bracketed) are the same source."""

from __future__ import annotations

import pytest

from switchboard.config import TrunkSection
from switchboard.router.protection import Acl, AuthBans, Pike, Verdict
from switchboard.router.trunks import TrunkConfigError, TrunkTable


def table() -> TrunkTable:
    return TrunkTable(
        {
            "carrier6": TrunkSection(sources=["udp:[2001:db8::10]:5060", "2001:db8:1::/48"]),
            "carrier4": TrunkSection(sources=["192.0.2.10"]),
        },
        acl=["2001:db8:ff::/64"],
    )


def test_trunks_identify_ipv6_sources_by_address_port_transport_and_prefix() -> None:
    t = table()
    found = t.identify("2001:db8::10", 5060, "udp")
    assert found is not None and found.name == "carrier6"
    assert t.identify("2001:db8::10", 5062, "udp") is None  # port-bound entry
    assert t.identify("2001:db8::10", 5060, "tcp") is None  # transport-bound entry
    inside = t.identify("[2001:db8:1:7::99]", 40000, "tls")
    assert inside is not None and inside.name == "carrier6"
    acl = t.identify("2001:db8:ff::5", 5060, "udp")
    assert acl is not None and acl.name == "acl"
    assert t.identify("2001:db8:2::1", 5060, "udp") is None
    assert t.known("2001:db8:1::1") and not t.known("2001:db8:2::1")
    # an IPv4-mapped address is not an IPv6 trunk's address
    assert t.identify("::ffff:192.0.2.10", 5060, "udp") is None


def test_overlapping_ipv6_trunk_sources_are_refused() -> None:
    with pytest.raises(TrunkConfigError, match=r"trunks\.b\.sources.*overlaps trunks\.a"):
        TrunkTable(
            {
                "a": TrunkSection(sources=["2001:db8::/32"]),
                "b": TrunkSection(sources=["[2001:db8::1]:5060"]),
            }
        )


def test_acl_ipv6_networks_and_loopback() -> None:
    acl = Acl(["::1", "2001:db8:1::/48"], key="acl.allow")
    assert acl.allows("::1") and acl.allows("[::1]")
    assert acl.allows("2001:db8:1:ffff::1")
    assert not acl.allows("2001:db8:2::1")
    assert not acl.allows("127.0.0.1")  # the IPv4 loopback is another address
    with pytest.raises(ValueError, match=r"acl.allow: '2001:db8::/129'"):
        Acl(["2001:db8::/129"], key="acl.allow")


def test_pike_counts_ipv6_sources_by_their_64() -> None:
    p = Pike(sampling_time_unit=2.0, reqs_density_per_unit=5, ban_seconds=60.0,
             allow=["2001:db8:aaaa::/48"])  # fmt: skip
    # a flooder taking a new address of its /64 for every request is still one source
    verdicts = [p.check(f"2001:db8:0:1::{i:x}", 0.01 * i) for i in range(1, 9)]
    assert [v.verdict for v in verdicts[:5]] == [Verdict.ALLOW] * 5
    assert verdicts[5].verdict is Verdict.REJECT and verdicts[5].newly_blocked
    assert p.is_banned("2001:db8:0:1::ffff", 1.0)  # the whole /64
    assert p.check("2001:db8:0:2::1", 1.0).verdict is Verdict.ALLOW  # the next /64 is not
    assert all(p.check("2001:db8:aaaa::1", 0.001 * i).verdict is Verdict.ALLOW for i in range(100))
    # per address when asked: the flooder's neighbour is unaffected
    q = Pike(sampling_time_unit=2.0, reqs_density_per_unit=5, ban_seconds=60.0, ipv6_prefix=128)
    for i in range(8):
        q.check("2001:db8::66", 0.01 * i)
    assert q.is_banned("2001:db8::66", 1.0) and not q.is_banned("2001:db8::67", 1.0)


def test_auth_bans_ipv6_guesser_banned_with_its_64_logged_by_address() -> None:
    b = AuthBans(limit=2, window=10, ban_seconds=60, allow=["2001:db8:1::/48"])
    assert b.failed("2001:db8::66", 0) is None and b.failed("[2001:db8::67]", 1) is None
    ban = b.failed("2001:db8::68", 2)  # three addresses of one /64: three failures
    assert ban is not None
    assert ban.log_line() == (
        "SECURITY BAN: source 2001:db8::68 banned for 60 s after 3 authentication failures "
        "in 10 s (network 2001:db8::/64)"
    )
    assert b.is_banned("2001:db8::1234", 3) and b.is_banned("[2001:db8::66]", 3)
    assert not b.is_banned("2001:db8:0:1::66", 3)  # another /64
    assert all(b.failed("2001:db8:1::5", t) is None for t in range(10))  # allow-listed
    # IPv4 lines are unchanged (fail2ban's <HOST> matches the bare address either way)
    v4 = AuthBans(limit=0, window=10, ban_seconds=60).failed("192.0.2.1", 0)
    assert v4 is not None and v4.log_line().endswith("failures in 10 s")
    # per address when asked
    c = AuthBans(limit=0, window=10, ban_seconds=60, ipv6_prefix=128)
    assert c.failed("2001:db8::66", 0) is not None
    assert not c.is_banned("2001:db8::67", 1)
