"""originate argument parsing (mod_commands.c); the dial string itself: test_dialstring.py."""

from __future__ import annotations

import pytest

from switchboard.esl import dialstring as d
from switchboard.esl import originate as o


def test_campaign_line() -> None:
    r = o.parse_originate(
        "{origination_caller_id_number=1234}sofia/gateway/carrier/15551230000 "
        "&playback(/path/to/message.wav)"
    )
    assert r.url == "{origination_caller_id_number=1234}sofia/gateway/carrier/15551230000"
    assert r.dial == d.parse_dial_string(r.url)  # parsed once, here, by the one grammar
    (leg,) = r.legs
    assert leg.target == d.GatewayEndpoint("carrier", "15551230000")
    assert leg.variables == {"origination_caller_id_number": "1234"}
    assert r.destination == o.AppDestination("playback", "/path/to/message.wav")
    assert r.timeout is None and r.cid_num is None


def test_user_park_and_empty_parens() -> None:
    r = o.parse_originate("user/1000@example.com &park()")
    assert r.legs[0].target == d.UserEndpoint("1000", "example.com")
    assert r.destination == o.AppDestination("park", "")
    assert o.parse_originate("user/1000 &park").destination == o.AppDestination("park", "")


def test_extension_dialplan_context_cid_timeout_and_undef() -> None:
    r = o.parse_originate("loopback/9999/internal 1000 XML public Alice 555 30")
    assert r.legs[0].target == d.LoopbackEndpoint("9999", "internal", "XML")
    assert r.destination == o.ExtensionDestination("1000", "XML", "public")
    assert (r.cid_name, r.cid_num, r.timeout) == ("Alice", "555", 30)
    r = o.parse_originate("user/1000 1000 undef undef undef 777")
    assert r.destination == o.ExtensionDestination("1000", "XML", "default")
    assert r.cid_num == "777" and r.cid_name is None


def test_spaces_inside_blocks_stay_in_the_dial_string() -> None:
    r = o.parse_originate(
        "<ent=1>{note='a b',list=x\\,y}[g=leg 1]sofia/gateway/gw/1|user/1000:_:user/2000 &park"
    )
    assert (
        r.url == "<ent=1>{note='a b',list=x\\,y}[g=leg 1]sofia/gateway/gw/1|user/1000:_:user/2000"
    )
    assert r.dial.enterprise and len(r.legs) == 3
    assert r.legs[0].variables == {"ent": "1", "note": "a b", "list": "x,y", "g": "leg 1"}


def test_quoted_argument_and_spaces_in_braces() -> None:
    r = o.parse_originate("{origination_caller_id_name='John Doe'}user/1000 '&echo()'")
    assert r.legs[0].variables["origination_caller_id_name"] == "John Doe"
    assert r.destination == o.AppDestination("echo", "")
    r = o.parse_originate("user/1000 &playback(/tmp/a b.wav)")
    assert r.destination == o.AppDestination("playback", "/tmp/a b.wav")


def test_app_args_end_at_the_first_paren() -> None:
    assert o.parse_destination("&bridge(a)b)", None, None) == o.AppDestination("bridge", "a")


@pytest.mark.parametrize("url", ["user/1000,", "user/1|", "user/1||user/2"])
def test_a_dial_string_without_structure_is_invalid_url(url: str) -> None:
    with pytest.raises(o.InvalidDialString) as info:
        o.parse_originate(f"{url} &park")
    assert info.value.body == "-ERR INVALID_URL\n"


@pytest.mark.parametrize("args", ["", "user/1000", "a b c d e f g h"])
def test_usage(args: str) -> None:
    with pytest.raises(o.OriginateUsageError) as info:
        o.parse_originate(args)
    assert info.value.body.startswith("-USAGE: originate <call url> ")
