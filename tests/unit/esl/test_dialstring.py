"""The dial-string grammar (``switchboard.esl.dialstring``), the one both the Event Socket's
``originate`` and the switch's ``bridge``/``originate`` use. Pure: text in, structure out."""

from __future__ import annotations

import pytest

from switchboard.esl import dialstring as d


def endpoints(ds: d.DialString) -> list[list[list[str]]]:
    """groups → steps → legs' endpoint text."""
    return [[[leg.endpoint for leg in step] for step in g.steps] for g in ds.groups]


def test_global_and_per_leg_variables_failover_and_simultaneous() -> None:
    ds = d.parse_dial_string(
        "{ignore_early_media=true,a=1\\,2}[leg=1]sofia/gateway/gw/100,user/200|sip:300@127.0.0.1:5090"
    )
    assert endpoints(ds) == [[["sofia/gateway/gw/100", "user/200"], ["sip:300@127.0.0.1:5090"]]]
    first, second, third = ds.legs
    assert first.variables == {"ignore_early_media": "true", "a": "1,2", "leg": "1"}
    assert second.variables == {"ignore_early_media": "true", "a": "1,2"}
    assert [leg.kind for leg in ds.legs] == ["gateway", "user", "sip"]
    assert first.target == d.GatewayEndpoint("gw", "100")
    assert second.target == d.UserEndpoint("200", None)
    assert third.target == d.SipUriEndpoint("sip:300@127.0.0.1:5090")
    assert not ds.enterprise


def test_enterprise_groups_with_enterprise_variables() -> None:
    ds = d.parse_dial_string("<ignore_early_media=true>user/1000:_:sofia/gateway/carrier/123")
    assert ds.enterprise and ds.variables == {"ignore_early_media": "true"}
    assert endpoints(ds) == [[["user/1000"]], [["sofia/gateway/carrier/123"]]]
    for leg in ds.legs:
        assert leg.variables == {"ignore_early_media": "true"}


def test_precedence_enterprise_group_leg() -> None:
    ds = d.parse_dial_string(
        "<ent=1,g=e>{g=global,originate_timeout=15,note='a b',list=x\\,y}"
        "[g=leg1,ignore_early_media=true]sofia/gateway/gw/1|[^^;a=1,2;b=3]user/1000"
        ":_:{g=second}user/2000"
    )
    first, second, other = ds.legs
    assert first.variables == {
        "ent": "1", "g": "leg1", "originate_timeout": "15", "note": "a b",
        "list": "x,y", "ignore_early_media": "true",
    }  # fmt: skip
    assert second.variables["a"] == "1,2" and second.variables["b"] == "3"
    assert second.variables["g"] == "global"
    assert other.variables == {"ent": "1", "g": "second"}  # the group's {} is its own


def test_quotes_group_a_value_but_an_apostrophe_is_a_character() -> None:
    ds = d.parse_dial_string("{note='a,b',name=O'Brien,x=1}user/1")
    assert ds.legs[0].variables == {"note": "a,b", "name": "O'Brien", "x": "1"}


def test_items_without_equals_are_ignored_other_backslashes_kept() -> None:
    (leg,) = d.parse_dial_string("{novalue,path=c:\\tmp}user/1").legs
    assert leg.variables == {"path": "c:\\tmp"}


def test_per_leg_braces_on_a_later_leg() -> None:
    ds = d.parse_dial_string("user/1|{a=1}user/2,[b=2]user/3")
    assert [dict(leg.variables) for leg in ds.legs] == [{}, {"a": "1"}, {"b": "2"}]


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("sofia/gateway/carrier", d.ErrorEndpoint("INVALID_URL")),
        ("sofia/internal/1000@127.0.0.1:5090", d.SofiaEndpoint("internal", "1000@127.0.0.1:5090")),
        ("user/1000@example.com", d.UserEndpoint("1000", "example.com")),
        ("error/user_busy", d.ErrorEndpoint("USER_BUSY")),
        ("bogus/1000", d.ErrorEndpoint("CHAN_NOT_IMPLEMENTED")),
        ("nothing", d.ErrorEndpoint("INVALID_URL")),
        ("loopback/1000", d.LoopbackEndpoint("1000", "default", "XML")),
        ("loopback/9999/internal", d.LoopbackEndpoint("9999", "internal", "XML")),
        ("sips:1@h", d.SipUriEndpoint("sips:1@h")),
    ],
)
def test_endpoints(text: str, target: d.Endpoint) -> None:
    assert d.parse_dial_string(text).legs[0].target == target


@pytest.mark.parametrize("text", ["", "   ", "{a=1", "[a=1user/1", "user/1,", "user/1||user/2"])
def test_no_structure_is_an_error(text: str) -> None:
    with pytest.raises(d.DialStringError):
        d.parse_dial_string(text)


def test_split_keeps_blocks_and_escapes() -> None:
    assert d.split_top("[a=1,b=2]x,y\\,z|w", ",") == ["[a=1,b=2]x", "y\\,z|w"]
    assert d.split_top("{a=x|y}u|v", "|") == ["{a=x|y}u", "v"]
