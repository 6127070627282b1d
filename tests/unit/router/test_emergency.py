"""Emergency calls at the edge (router/emergency.py, the proxy) and at the node's session
limits: what is an emergency number per country, and what such a call is spared."""

from __future__ import annotations

import pytest

from switchboard import config
from switchboard.config import TrunkSection
from switchboard.media.limits import Refusal, SessionLimiter
from switchboard.router.dispatcher import Dispatcher, ProbingConfig, parse_list
from switchboard.router.emergency import EmergencyNumbers
from switchboard.router.protection import Acl, Pike
from switchboard.router.proxy import Interface, Proxy, ProxySettings
from switchboard.router.trunks import TrunkTable
from tests.support.sipmsg import header, invite

NUMBERS = {"*": ["112"], "GB": ["999"], "US": ["911"]}
GEO = "Geolocation: <https://lis.example.net/loc/8f2a>\nGeolocation-Routing: yes"


def test_numbers_per_country() -> None:
    e = EmergencyNumbers(NUMBERS)
    assert e.match("112", "GB") and e.match("999", "GB") and not e.match("911", "GB")
    assert e.match("911", "US") and e.match("112", "FR") and not e.match("999", "FR")
    assert e.match("999") and e.match("911")  # no country: every number listed
    assert not e.match("4930112") and not e.match("1120")
    with pytest.raises(config.ConfigError, match=r"emergency\.numbers\.Germany"):
        config.load(environ={}, overrides={"emergency": {"numbers": {"Germany": ["112"]}}})
    with pytest.raises(config.ConfigError, match=r"emergency\.numbers\.DE"):
        config.load(environ={}, overrides={"emergency": {"numbers": {"DE": ["+49 112"]}}})


def proxy(pike: Pike | None = None) -> Proxy:
    """Node 5081 in set 1, the emergency node 5099 in set 2; trunk 'uk' (GB, cps 1,
    max_calls 1, tech prefix 77, E.164 normalisation +44)."""
    d = Dispatcher(
        parse_list("1 sip:127.0.0.1:5081\n2 sip:127.0.0.1:5099\n"),
        algorithm=4,
        probing=ProbingConfig(ping_interval=5, ping_timeout=1, probing_threshold=2,
                              inactive_threshold=1),
        now=1e9,
    )  # fmt: skip
    trunks = TrunkTable({"uk": TrunkSection(
        sources=["10.1.1.1"], cps=1, max_calls=1, country="GB", tech_prefix="77",
        called_strip=1, called_prefix="+44", calling_strip=1, calling_prefix="+44",
    )})  # fmt: skip
    return Proxy([Interface("udp", "127.0.0.1", 5060)], d, secret=b"t", trunks=trunks,
                 pike=pike, emergency=EmergencyNumbers(NUMBERS),
                 settings=ProxySettings(emergency_setid=2))  # fmt: skip


def test_emergency_call_spared_trunk_limits_and_numbers_unchanged() -> None:
    p = proxy()
    out = p.receive(invite(ruri="sip:7702071234567@127.0.0.1:5060", via="10.1.1.1:5060"),
                    "udp", ("10.1.1.1", 5060), None, 0.0)  # fmt: skip
    ordinary = next(s.data for s in out if s.addr[1] == 5081)
    assert ordinary.startswith(b"INVITE sip:+442071234567@")
    # The trunk is now at max_calls and at its cps: an ordinary call is refused ...
    out = p.receive(invite(ruri="sip:7702071234568@127.0.0.1:5060", via="10.1.1.1:5060",
                           call_id="c2", branch="z9hG4bK-2"), "udp", ("10.1.1.1", 5060), None, 0.1)  # fmt: skip
    assert out[0].data.startswith(b"SIP/2.0 503 Trunk")
    # ... an emergency call (tech prefix + 999, caller 07700900123, location by reference)
    # goes to the emergency set first, its numbers as they came, location untouched.
    extra = "P-Asserted-Identity: <sip:07700900123@carrier>\n" + GEO
    msg = invite(ruri="sip:77999@127.0.0.1:5060", via="10.1.1.1:5060", call_id="e1",
                 branch="z9hG4bK-e1", extra=extra + "\nX-Switchboard-Emergency: forged")  # fmt: skip
    msg = msg.replace(b"From: <sip:alice@carrier>", b"From: <sip:07700900123@carrier>")
    out = p.receive(msg, "udp", ("10.1.1.1", 5060), None, 0.2)
    fwd = next(s.data for s in out if s.addr[1] == 5099)
    assert fwd.startswith(b"INVITE sip:999@127.0.0.1:5060 SIP/2.0")
    assert header(fwd, "X-Switchboard-Emergency") == ["999"]
    assert header(fwd, "From")[0].startswith("<sip:07700900123@carrier>")
    assert header(fwd, "P-Asserted-Identity") == ["<sip:07700900123@carrier>"]
    assert header(fwd, "Geolocation") == ["<https://lis.example.net/loc/8f2a>"]
    assert header(fwd, "Geolocation-Routing") == ["yes"]
    uk = p.trunks.trunks["uk"]  # type: ignore[union-attr]
    assert uk.active == 2 and p.stats.emergency == {"GB": 1}
    # 911 is not an emergency number in GB: an ordinary (refused) call.
    out = p.receive(invite(ruri="sip:77911@127.0.0.1:5060", via="10.1.1.1:5060",
                           call_id="e2", branch="z9hG4bK-e2"), "udp", ("10.1.1.1", 5060), None, 0.3)  # fmt: skip
    assert out[0].data.startswith((b"SIP/2.0 484", b"SIP/2.0 503"))
    assert not any(s.addr[1] in (5081, 5099) for s in out)


def test_emergency_call_spared_pike_and_draining() -> None:
    pike = Pike(sampling_time_unit=10, reqs_density_per_unit=1, ban_seconds=60)
    p = proxy(pike)
    # No trunks: the ACL admits (trunk sources are never counted by pike at all).
    p.acl = Acl(["0.0.0.0/0"])
    p.trunks = None
    for i in range(5):  # a flooding source: pike blocks it
        p.receive(invite(via="203.0.113.9:5060", call_id=f"f{i}", branch=f"z9hG4bK-f{i}"),
                  "udp", ("203.0.113.9", 5060), None, 0.01 * i)  # fmt: skip
    out = p.receive(invite(via="203.0.113.9:5060", call_id="f9", branch="z9hG4bK-f9"),
                    "udp", ("203.0.113.9", 5060), None, 0.1)  # fmt: skip
    assert not out or out[0].data.startswith(b"SIP/2.0 503")
    assert not any(s.addr[1] in (5081, 5099) for s in out)
    p.draining = True
    out = p.receive(invite(ruri="sip:112@127.0.0.1:5060", via="203.0.113.9:5060",
                           call_id="e", branch="z9hG4bK-e"), "udp", ("203.0.113.9", 5060), None, 0.2)  # fmt: skip
    assert any(s.addr[1] == 5099 for s in out), [s.data[:30] for s in out]


def test_session_reserve_and_no_rate_limit_for_emergency_legs() -> None:
    lim = SessionLimiter(max_sessions=2, sessions_per_second=2, emergency_reserve=2)
    assert lim.admit(0.0) is None and lim.admit(0.1) is None
    assert lim.admit(0.2) is Refusal.THROTTLE
    assert lim.admit(1.5) is Refusal.OVER_LIMIT
    assert lim.admit(1.5, emergency=True) is None  # the A-leg ...
    assert lim.admit(1.5, emergency=True) is None  # ... and its B-leg, from the reserve
    assert lim.admit(1.6, emergency=True) is Refusal.OVER_LIMIT  # the reserve is bounded
