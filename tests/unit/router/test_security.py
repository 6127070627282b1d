"""Edge hygiene in the router core: scanners, authentication bans, the Server header and
what a source outside the ACL learns (fake clock, bytes in, bytes out)."""

from __future__ import annotations

import logging

import pytest

from switchboard.router.protection import DEFAULT_SCANNERS, Acl, AuthBans, ScannerFilter
from tests.support.sipmsg import header, invite, response_to, start_line

from .test_proxy import M1, UAC, make_proxy, one, to_uac

GUESSER = ("192.0.2.66", 5070)
OTHER = ("192.0.2.77", 5070)
ONE_NODE = "1 sip:127.0.0.1:5081\n"


# ------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize(
    "ua",
    ["friendly-scanner", "sipvicious 0.3.4", "SIPVicious", "sipcli/v1.8", "VaxSIPUserAgent/3.1"],
)
def test_scanner_user_agents_match_case_insensitively(ua: str) -> None:
    f = ScannerFilter(DEFAULT_SCANNERS)
    assert f.match(invite(extra=f"User-Agent: {ua}"))


def test_scanner_filter_ignores_bodies_other_headers_and_real_phones() -> None:
    f = ScannerFilter(DEFAULT_SCANNERS)
    assert not f.match(invite(extra="User-Agent: baresip v1.0.0 (x86_64/linux)"))
    assert not f.match(invite(extra="Subject: friendly-scanner"))
    assert not f.match(invite(body="v=0\r\ns=friendly-scanner\r\n"))
    assert not ScannerFilter([]).match(invite(extra="User-Agent: friendly-scanner"))


@pytest.mark.parametrize(
    ("extra", "scanner"),
    [
        ("uSER-aGENT:friendly-scanner", True),
        ("Server: sipvicious", True),
        ("SERVER \t: x sipcli/v1", True),
        ("User-Agent: baresip\r\nX-Note: friendly-scanner", False),
        ("X-User-Agent: friendly-scanner", False),  # not a line starting with the name
        ("Subject: server friendly-scanner", False),
    ],
)
def test_scanner_filter_agrees_with_its_search(extra: str, scanner: bool) -> None:
    """match() skips the regular expression when no line starts with User-Agent or
    Server; the answer is the search's over the whole header block either way."""
    f = ScannerFilter(DEFAULT_SCANNERS)
    data = invite(extra=extra)
    assert f._re is not None
    full = f._re.search(data, 0, data.find(b"\r\n\r\n")) is not None
    assert f.match(data) is full is scanner


def test_auth_bans_more_than_limit_in_window_then_expires() -> None:
    b = AuthBans(limit=3, window=10, ban_seconds=60)
    assert [b.failed("192.0.2.1", t) for t in (0, 1, 2)] == [None, None, None]
    ban = b.failed("192.0.2.1", 3)
    assert ban is not None and ban.failures == 4
    assert ban.log_line() == (
        "SECURITY BAN: source 192.0.2.1 banned for 60 s after 4 authentication failures in 10 s"
    )
    assert b.is_banned("192.0.2.1", 62) and not b.is_banned("192.0.2.2", 62)
    assert not b.is_banned("192.0.2.1", 63.1)
    assert b.bans_total == 1 and b.dropped_total == 1


def test_auth_bans_slow_guessing_outside_the_window_and_allow_list() -> None:
    b = AuthBans(limit=2, window=10, ban_seconds=60, allow=["10.0.0.0/8"])
    assert all(b.failed("192.0.2.1", t * 6.0) is None for t in range(20))  # 1 per 6 s
    assert all(b.failed("10.1.2.3", t) is None for t in range(20))
    assert b.banned(200) == []


# ------------------------------------------------------------------------- in the proxy
def test_scanner_gets_no_answer_and_is_counted() -> None:
    p = make_proxy(scanners=ScannerFilter(DEFAULT_SCANNERS))
    opt = invite(
        method="OPTIONS", ruri="sip:100@127.0.0.1:5060", extra="User-Agent: friendly-scanner"
    )
    assert p.receive(opt, "udp", GUESSER, None, 0.0) == []
    assert p.receive(invite(extra="User-Agent: sipvicious"), "udp", GUESSER, None, 0.0) == []
    assert p.stats.scanner_drops == 2 and p.transaction_count == 0
    # an honest caller from the same address still gets through
    assert to_uac(p.receive(invite(), "udp", UAC, None, 0.0)) == ["SIP/2.0 100 Trying"]


@pytest.mark.parametrize(
    ("extra", "scanner"),
    [
        ("uSER-aGENT:friendly-scanner", True),
        ("Server: sipvicious", True),
        ("SERVER \t: x sipcli/v1", True),
        ("User-Agent\t:sipvicious", True),
        ("User-Agent: baresip\r\nX-Note: friendly-scanner", False),
        ("X-User-Agent: friendly-scanner", False),
        ("Subject: server friendly-scanner", False),
        ("", False),
    ],
)
def test_proxy_drops_scanners_by_the_searchs_answer(extra: str, scanner: bool) -> None:
    """The proxy runs the filter only on requests whose parse saw a User-Agent or Server
    line (any spelling, space before the colon): what it drops is what the search finds
    in the header block."""
    f = ScannerFilter(DEFAULT_SCANNERS)
    p = make_proxy(scanners=f)
    data = invite(extra=extra) if extra else invite()
    assert f._re is not None
    assert (f._re.search(data, 0, data.find(b"\r\n\r\n")) is not None) is scanner
    assert (p.receive(data, "udp", GUESSER, None, 0.0) == []) is scanner
    assert p.stats.scanner_drops == int(scanner)


def test_no_server_header_by_default_and_configurable() -> None:
    p = make_proxy()
    opt = invite(method="OPTIONS", ruri="sip:127.0.0.1:5060", body="")
    [ok] = p.receive(opt, "udp", UAC, None, 0.0)
    assert b"switchboard" not in ok.data.lower() and header(ok.data, "Server") == []
    p = make_proxy(server="edge")
    [ok] = p.receive(opt, "udp", UAC, None, 0.0)
    assert header(ok.data, "Server") == ["edge"]


def test_options_from_outside_the_acl_is_refused_or_dropped() -> None:
    opt = invite(method="OPTIONS", ruri="sip:127.0.0.1:5060", via="192.0.2.66:5070", body="")
    p = make_proxy(acl=Acl(["127.0.0.1"]))
    [refused] = p.receive(opt, "udp", GUESSER, None, 0.0)
    assert start_line(refused.data) == "SIP/2.0 403 Forbidden"
    assert b"switchboard" not in refused.data.lower() and b"Allow:" not in refused.data
    p = make_proxy(acl=Acl(["127.0.0.1"]), acl_drop=True)
    assert p.receive(opt, "udp", GUESSER, None, 0.0) == []
    assert p.stats.acl_drops == 1


def _register(n: int, src: tuple[str, int], auth: bool = True) -> bytes:
    return invite(
        method="REGISTER",
        call_id=f"reg-{src[0]}-{n}",
        branch=f"z9hG4bK-r{n}",
        via=f"{src[0]}:{src[1]}",
        cseq=n,
        ruri="sip:127.0.0.1:5060",
        body="",
        extra='Authorization: Digest username="1000", response="00"' if auth else "",
    )


def test_password_guesser_is_banned_silently_other_sources_unaffected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = make_proxy(ONE_NODE, bans=AuthBans(limit=3, window=60, ban_seconds=600))
    now = 0.0
    with caplog.at_level(logging.WARNING):
        for n in range(1, 5):  # four wrong passwords: the node answers 403 each time
            now += 1
            fwd = one(p.receive(_register(n, GUESSER), "udp", GUESSER, None, now), M1)
            up = p.receive(response_to(fwd, 403, "Forbidden"), "udp", M1, None, now)
            assert [s.addr for s in up] == [GUESSER]
    assert p.stats.auth_failures == 4 and p.stats.auth_bans == 1
    bans = [r.getMessage() for r in caplog.records if "SECURITY BAN" in r.getMessage()]
    assert bans == [
        "SECURITY BAN: source 192.0.2.66 banned for 600 s after 4 authentication failures in 60 s"
    ]
    # banned: every request from that source is dropped, with no answer at all
    assert p.receive(_register(5, GUESSER), "udp", GUESSER, None, now + 1) == []
    assert p.receive(invite(via="192.0.2.66:5070"), "udp", GUESSER, None, now + 1) == []
    assert p.stats.auth_ban_drops == 2
    # another source still registers
    fwd = one(p.receive(_register(1, OTHER), "udp", OTHER, None, now + 2), M1)
    ok = p.receive(response_to(fwd, 200), "udp", M1, None, now + 2)
    assert [start_line(s.data) for s in ok] == ["SIP/2.0 200 OK"]
    # and the ban ends
    assert p.receive(_register(6, GUESSER), "udp", GUESSER, None, now + 700) != []


def test_a_401_challenge_without_credentials_is_not_a_failure() -> None:
    p = make_proxy(ONE_NODE, bans=AuthBans(limit=1, window=60, ban_seconds=600))
    for n in range(1, 6):
        fwd = one(p.receive(_register(n, GUESSER, auth=False), "udp", GUESSER, None, n), M1)
        p.receive(response_to(fwd, 401, "Unauthorized"), "udp", M1, None, n)
    assert p.stats.auth_failures == 0 and p.stats.auth_bans == 0
