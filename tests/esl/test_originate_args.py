"""originate argument and dial-string parsing (reference §4.1, §4.3, §4.4)."""

from __future__ import annotations

import pytest

from switchboard.esl import originate as o


def test_campaign_line() -> None:
    r = o.parse_originate(
        "{origination_caller_id_number=1234}sofia/gateway/carrier/15551230000 "
        "&playback(/path/to/message.wav)"
    )
    assert r.url == "{origination_caller_id_number=1234}sofia/gateway/carrier/15551230000"
    (leg,) = r.legs
    assert leg.endpoint == o.GatewayEndpoint("carrier", "15551230000")
    assert leg.variables == {"origination_caller_id_number": "1234"}
    assert r.destination == o.AppDestination("playback", "/path/to/message.wav")
    assert r.timeout_for(leg) == 60
    assert r.caller_id_for(leg) == (None, "1234")


def test_user_park_and_empty_parens() -> None:
    r = o.parse_originate("user/1000@example.com &park()")
    assert r.legs[0].endpoint == o.UserEndpoint("1000", "example.com")
    assert r.destination == o.AppDestination("park", "")
    assert o.parse_originate("user/1000 &park").destination == o.AppDestination("park", "")


def test_extension_dialplan_context_cid_timeout_and_undef() -> None:
    r = o.parse_originate("loopback/9999/internal 1000 XML public Alice 555 30")
    assert r.legs[0].endpoint == o.LoopbackEndpoint("9999", "internal", "XML")
    assert r.destination == o.ExtensionDestination("1000", "XML", "public")
    assert (r.cid_name, r.cid_num, r.timeout) == ("Alice", "555", 30)
    r = o.parse_originate("user/1000 1000 undef undef undef 777")
    assert r.destination == o.ExtensionDestination("1000", "XML", "default")
    assert r.cid_num == "777" and r.cid_name is None


def test_variables_precedence_escapes_quotes_and_delimiter() -> None:
    r = o.parse_originate(
        "<ent=1,g=e>{g=global,originate_timeout=15,note='a b',list=x\\,y}"
        "[g=leg1,ignore_early_media=true]sofia/gateway/gw/1|[^^;a=1,2;b=3]user/1000 &park"
    )
    first, second = r.legs
    assert first.variables == {
        "ent": "1", "g": "leg1", "originate_timeout": "15", "note": "a b",
        "list": "x,y", "ignore_early_media": "true",
    }  # fmt: skip
    assert second.variables["a"] == "1,2" and second.variables["b"] == "3"
    assert second.variables["g"] == "global"
    assert r.timeout_for(first) == 15
    assert [len(g) for g in r.dial[0].sequence] == [1, 1]  # '|' = two groups in sequence


def test_simultaneous_legs_and_enterprise_groups() -> None:
    r = o.parse_originate("{a=1}user/1000,user/1001|user/1002:_:user/2000 &park")
    assert len(r.dial) == 2
    assert [len(g) for g in r.dial[0].sequence] == [2, 1]
    assert r.dial[1].legs[0].endpoint == o.UserEndpoint("2000", None)


def test_quoted_argument_and_spaces_in_braces() -> None:
    r = o.parse_originate("{origination_caller_id_name='John Doe'}user/1000 '&echo()'")
    assert r.legs[0].variables["origination_caller_id_name"] == "John Doe"
    assert r.destination == o.AppDestination("echo", "")
    r = o.parse_originate("user/1000 &playback(/tmp/a b.wav)")
    assert r.destination == o.AppDestination("playback", "/tmp/a b.wav")


def test_app_args_end_at_the_first_paren() -> None:
    assert o.parse_destination("&bridge(a)b)", None, None) == o.AppDestination("bridge", "a")


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("sofia/gateway/carrier", o.ErrorEndpoint("INVALID_URL")),
        ("sofia/internal/1000@127.0.0.1:5090", o.SofiaEndpoint("internal", "1000@127.0.0.1:5090")),
        ("error/user_busy", o.ErrorEndpoint("USER_BUSY")),
        ("bogus/1000", o.ErrorEndpoint("CHAN_NOT_IMPLEMENTED")),
        ("nothing", o.ErrorEndpoint("INVALID_URL")),
        ("loopback/1000", o.LoopbackEndpoint("1000", "default", "XML")),
    ],
)
def test_endpoints(url: str, endpoint: o.Endpoint) -> None:
    assert o.parse_originate(f"{url} &park").legs[0].endpoint == endpoint


@pytest.mark.parametrize("args", ["", "user/1000", "a b c d e f g h"])
def test_usage(args: str) -> None:
    with pytest.raises(o.OriginateUsageError) as info:
        o.parse_originate(args)
    assert info.value.body.startswith("-USAGE: originate <call url> ")
