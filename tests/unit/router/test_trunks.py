"""Trunk identification, admission, normalisation and validation (router/trunks.py, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard import config
from switchboard.config import TrunkSection
from switchboard.router.dispatcher import Dispatcher, ProbingConfig, parse_list
from switchboard.router.proxy import Interface, Proxy
from switchboard.router.trunks import (
    ACL_TRUNK,
    TrunkConfigError,
    TrunkTable,
    disposition,
    e164,
    parse_source,
)
from tests.support.sipmsg import header, invite, response_to


def table(acl: tuple[str, ...] = (), **trunks: dict[str, Any]) -> TrunkTable:
    return TrunkTable({k: TrunkSection(**v) for k, v in trunks.items()}, acl)


def test_sources_with_port_and_transport_and_the_most_specific_wins() -> None:
    t = table(
        ("127.0.0.0/8",),
        wide={"sources": ["192.0.2.0/24"]},
        sip={"sources": ["udp:198.51.100.7:5060", "tcp:[2001:db8::1]:5061"]},
    )
    assert t.identify("192.0.2.44", 5060, "udp").name == "wide"  # type: ignore[union-attr]
    assert t.identify("198.51.100.7", 5060, "udp").name == "sip"  # type: ignore[union-attr]
    assert t.identify("198.51.100.7", 5062, "udp") is None  # another port
    assert t.identify("198.51.100.7", 5060, "tcp") is None  # another transport
    assert t.identify("2001:db8::1", 5061, "tcp").name == "sip"  # type: ignore[union-attr]
    assert t.identify("127.0.0.9", 1234, "udp").name == ACL_TRUNK  # type: ignore[union-attr]
    assert t.identify("203.0.113.1", 5060, "udp") is None
    assert t.known("198.51.100.7") and t.known("127.0.0.1") and not t.known("203.0.113.1")
    assert str(parse_source("tcp:[2001:db8::1]:5061", key="k")) == "tcp:[2001:db8::1/128]:5061"


@pytest.mark.parametrize(
    ("trunks", "key"),
    [
        ({"a": {"sources": ["10.0.0.1"]}, "b": {"sources": ["10.0.0.0/24"]}}, "trunks.b.sources"),
        ({"a": {"sources": ["10.0.0.300"]}}, "trunks.a.sources"),
        ({"a": {"sources": ["10.0.0.1"], "called_regex": "(4"}}, "trunks.a.called_regex"),
        (
            {"a": {"sources": ["10.0.0.1"], "called_regex": "(4)", "called_replace": r"\2"}},
            "trunks.a.called_replace",
        ),
        ({"a": {"sources": ["10.0.0.1"], "caller_id": "replace"}}, "trunks.a.caller_id_number"),
        (
            {"a": {"sources": ["10.0.0.1"], "allowed_prefixes": ["49x"]}},
            "trunks.a.allowed_prefixes",
        ),
        ({"a": {"direction": "inbound"}}, "trunks.a.sources"),
        ({"a": {"sources": ["10.0.0.1"], "cps": -1}}, "trunks.a.cps"),
        ({"a": {"sources": ["10.0.0.1"], "colour": "red"}}, "trunks.a.colour"),
    ],
)
def test_bad_trunk_configuration_is_refused_naming_the_key(
    trunks: dict[str, Any], key: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(environ={}, overrides={"trunks": trunks})
    assert key in str(err.value)


def test_ports_or_transports_that_differ_do_not_overlap() -> None:
    table(a={"sources": ["udp:10.0.0.1"]}, b={"sources": ["tcp:10.0.0.1"]})
    table(a={"sources": ["10.0.0.1:5060"]}, b={"sources": ["10.0.0.1:5080"]})
    with pytest.raises(TrunkConfigError, match=r"trunks\.b\.sources"):
        table(a={"sources": ["10.0.0.1:5060"]}, b={"sources": ["udp:10.0.0.0/30"]})


def test_cps_is_an_exact_sliding_second_and_refusals_use_no_budget() -> None:
    t = table(a={"sources": ["10.0.0.1"], "cps": 3, "retry_after": 9})
    a = t.trunks["a"]
    got = [t.admit(a, "4930123456", "4930999", now).status for now in (0, 0.1, 0.2, 0.3, 0.5)]
    assert got == [0, 0, 0, 503, 503]
    assert t.admit(a, "4930123456", "", 1.0).status == 0  # the call at 0 left the window
    r = t.admit(a, "4930123456", "", 1.05)
    assert (r.status, r.reason, r.retry_after) == (503, b"Trunk CPS Exceeded", 9)
    assert a.stats.rejected == {"cps": 3} and a.stats.admitted == 4


def test_max_calls_counts_until_release() -> None:
    t = table(a={"sources": ["10.0.0.1"], "max_calls": 2})
    a = t.trunks["a"]
    assert [t.admit(a, "4930123456", "", 0).status for _ in range(3)] == [0, 0, 503]
    a.release()
    assert t.admit(a, "4930123456", "", 0).status == 0 and a.active == 2


def test_numbers_are_normalised_to_e164_or_refused() -> None:
    t = table(
        uk={
            "sources": ["10.0.0.1"],
            "tech_prefix": "7788#",
            "called_regex": r"0(\d+)",
            "called_replace": r"44\1",
            "calling_strip": 2,
            "allowed_prefixes": ["+44"],
        }
    )
    uk = t.trunks["uk"]
    ok = t.admit(uk, "7788#02079460000", "0002079460123", 0)
    assert (ok.status, ok.called, ok.calling) == (0, "+442079460000", None)  # calling: not E.164
    ok = t.admit(uk, "7788#02079460000", "00442079460123", 0)
    assert ok.calling == "+442079460123"
    assert t.admit(uk, "02079460000", "", 0).status == 403  # no tech prefix
    assert t.admit(uk, "7788#12079460000", "", 0).status == 404  # regex does not match
    assert t.admit(uk, "7788#0207", "", 0).status == 484  # too short to be E.164
    de = table(de={"sources": ["10.0.0.2"], "allowed_prefixes": ["49"]})
    assert de.admit(de.trunks["de"], "+4930123456", "", 0).called == "+4930123456"
    r = de.admit(de.trunks["de"], "+3312345678", "", 0)
    assert (r.status, r.reason) == (403, b"Destination Not Allowed")
    assert de.admit(de.trunks["de"], "49abc", "", 0).status == 404


def test_caller_id_policies_and_direction() -> None:
    t = table(
        rep={"sources": ["10.0.0.1"], "caller_id": "replace", "caller_id_number": "+4930111"},
        rej={"sources": ["10.0.0.2"], "caller_id": "reject_anonymous"},
        out={"sources": ["10.0.0.3"], "direction": "outbound"},
    )
    assert t.admit(t.trunks["rep"], "4930123456", "anonymous", 0).calling == "+4930111"
    assert t.admit(t.trunks["rej"], "4930123456", "Anonymous", 0).status == 433
    assert t.admit(t.trunks["rej"], "4930123456", "4930222333", 0).status == 0
    assert t.admit(t.trunks["out"], "4930123456", "4930222333", 0).status == 403


def test_acl_trunk_passes_numbers_untouched_and_has_no_limits() -> None:
    t = table(("127.0.0.0/8",))
    acl = t.trunks[ACL_TRUNK]
    for _ in range(1000):
        r = t.admit(acl, "echo", "sipp", 0)
        assert r.status == 0 and r.called is None and r.calling is None
    assert acl.active == 1000


def test_reload_keeps_counters_and_live_calls_of_trunks_that_stay() -> None:
    old = table(a={"sources": ["10.0.0.1"], "max_calls": 5}, b={"sources": ["10.0.0.2"]})
    old.admit(old.trunks["a"], "4930123456", "", 0)
    old.trunks["a"].reject("cps")
    new = TrunkTable({"a": TrunkSection(sources=["10.0.0.1"], max_calls=1)}, (), previous=old)
    a = new.trunks["a"]
    assert (a.active, a.stats.admitted, a.stats.rejected, a.max_calls) == (1, 1, {"cps": 1}, 1)
    assert new.admit(a, "4930123456", "", 0).status == 503  # the new limit, counted live
    assert "b" not in new.trunks


def test_e164_and_dispositions() -> None:
    assert e164("+4930123456") == "+4930123456" and e164("4930123456") == "+4930123456"
    assert e164("49301") is False and e164("0301234567") is None and e164("1" * 16) is None
    assert [disposition(s) for s in (200, 486, 480, 408, 487, 503)] == [
        "answered", "busy", "no_answer", "no_answer", "cancelled", "failed",
    ]  # fmt: skip


# ------------------------------------------------------------------ through the proxy


def trunk_proxy(**trunks: dict[str, Any]) -> Proxy:
    """Two media nodes (5081, 5082) behind a router on 127.0.0.1:5060, no probing."""
    d = Dispatcher(
        parse_list("1 sip:127.0.0.1:5081\n1 sip:127.0.0.1:5082\n"),
        algorithm=4,
        probing=ProbingConfig(
            ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
        ),
        now=1e9,
    )
    ifaces = [Interface("udp", "127.0.0.1", 5060), Interface("tcp", "127.0.0.1", 5060)]
    return Proxy(ifaces, d, secret=b"test", trunks=table(("127.0.0.1",), **trunks))


def test_proxy_strips_hostile_trunk_headers_and_names_the_trunk_itself() -> None:
    p = trunk_proxy(c={"sources": ["10.1.1.1"], "account": "acme", "called_prefix": "49"})
    forged = "X-Switchboard-Trunk: premium\nx-switchboard-account : victim\nX-Other: kept"
    out = p.receive(
        invite(ruri="sip:30123456@127.0.0.1:5060", via="10.1.1.1:5060", extra=forged),
        "udp", ("10.1.1.1", 5060), None, 0.0,
    )  # fmt: skip
    fwd = next(s.data for s in out if s.addr[1] == 5081)
    assert fwd.startswith(b"INVITE sip:+4930123456@127.0.0.1:5060 SIP/2.0")
    assert header(fwd, "X-Switchboard-Trunk") == ["c"]
    assert header(fwd, "X-Switchboard-Account") == ["acme"]
    assert header(fwd, "X-Other") == ["kept"]
    # the acl trunk (no [trunks] entry) carries its name too, and nothing forged
    out = p.receive(invite(extra=forged, call_id="c2"), "udp", ("127.0.0.1", 5070), None, 0.0)
    fwd2 = next(s.data for s in out if s.addr[1] in (5081, 5082))
    assert header(fwd2, "X-Switchboard-Trunk") == ["acl"]
    assert header(fwd2, "X-Switchboard-Account") == []
    # answered → counted; the dialog holds the slot until BYE
    p.receive(response_to(fwd, 200), "udp", ("127.0.0.1", 5081), None, 0.5)
    c = p.trunks.trunks["c"]
    assert c.active == 1 and c.stats.calls == {"answered": 1} and c.stats.pdd_count == 1


def test_router_metrics_per_trunk() -> None:
    """What Prometheus scrapes from the router for each trunk: calls by disposition,
    admitted, in progress, in the last second, rejections by reason, limits, PDD."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from switchboard.router.metrics import LatencyHistogram, make_registry

    p = trunk_proxy(c={"sources": ["10.1.1.1"], "cps": 2, "max_calls": 9})
    src = ("10.1.1.1", 5060)
    fwds = []
    for i, t in enumerate((0.0, 0.1, 0.2)):  # the third is over cps 2
        out = p.receive(
            invite(ruri="sip:4930123456@127.0.0.1:5060", via="10.1.1.1:5060",
                   call_id=f"m{i}", branch=f"z9hG4bK-m{i}"),
            "udp", src, None, t,
        )  # fmt: skip
        fwds += [s for s in out if s.addr[1] in (5081, 5082)]
    assert len(fwds) == 2
    ring = response_to(fwds[0].data, 180, "Ringing")
    p.receive(ring, "udp", fwds[0].addr, None, 0.3)  # PDD 0.3 s
    p.receive(response_to(fwds[0].data, 200), "udp", fwds[0].addr, None, 0.4)
    p.receive(response_to(fwds[1].data, 486, "Busy Here"), "udp", fwds[1].addr, None, 1.2)

    text = generate_latest(make_registry(p, LatencyHistogram(), clock=lambda: 1.05)).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.labels.get("trunk") == "c"
    }
    pre = "switchboard_router_trunk_"
    assert got[(pre + "calls_total", (("disposition", "answered"), ("trunk", "c")))] == 1
    assert got[(pre + "calls_total", (("disposition", "busy"), ("trunk", "c")))] == 1
    assert got[(pre + "admitted_total", (("trunk", "c"),))] == 2
    assert got[(pre + "rejections_total", (("reason", "cps"), ("trunk", "c")))] == 1
    assert got[(pre + "rejections_total", (("reason", "max_calls"), ("trunk", "c")))] == 0
    assert got[(pre + "active_calls", (("trunk", "c"),))] == 1  # the answered call
    assert (
        got[(pre + "calls_per_second", (("trunk", "c"),))] == 1
    )  # admitted at 0.1: in (0.05, 1.05]
    assert got[(pre + "limit", (("limit", "cps"), ("trunk", "c")))] == 2
    assert got[(pre + "limit", (("limit", "max_calls"), ("trunk", "c")))] == 9
    # ringing at 0.3 s; the busy call had no provisional: its PDD runs to the 486 (1.1 s)
    assert got[(pre + "pdd_seconds_count", (("trunk", "c"),))] == 2
    assert got[(pre + "pdd_seconds_bucket", (("le", "0.5"), ("trunk", "c")))] == 1
    assert got[(pre + "pdd_seconds_bucket", (("le", "1.5"), ("trunk", "c")))] == 2
    assert abs(got[(pre + "pdd_seconds_sum", (("trunk", "c"),))] - 1.4) < 1e-9


def test_trunk_pdd_buckets_are_the_media_nodes() -> None:
    from switchboard.observability.metrics import CATALOGUE
    from switchboard.observability.metrics import PDD_BUCKETS as MEDIA
    from switchboard.router.trunks import PDD_BUCKETS

    assert PDD_BUCKETS == MEDIA == CATALOGUE["switchboard_router_trunk_pdd_seconds"].buckets


@pytest.mark.parametrize(
    ("regex", "replace", "number", "want"),
    [
        (r"49(\d+)", r"+49\1", "4930123456", "+4930123456"),
        (r"0(?P<n>\d+)", r"44\g<n>", "02079460000", "442079460000"),
        (r"(1)?(\d+)", r"1\1{x}\2", "2345678", "1{x}2345678"),  # unmatched group: ""
        (r"(\d+)", r"\g<0>0", "4930", "49300"),
        (r"(\d+)", r"\1\n", "49", "49\n"),  # another escape: Match.expand
        (r"49(\d+)", "", "4930123456", "4930123456"),
        (r"49(\d+)", r"+49\1", "3330123456", None),
    ],
)
def test_number_rewrites_match_python_expand(
    regex: str, replace: str, number: str, want: str | None
) -> None:
    import re

    from switchboard.router.trunks import NumberRule, _template

    r = re.compile(regex)
    rule = NumberRule(regex=r, replace=replace, fmt=_template(replace, r) if replace else None)
    assert rule.apply(number) == want
    m = r.fullmatch(number)
    if m is not None and replace:
        assert rule.apply(number) == m.expand(replace)
