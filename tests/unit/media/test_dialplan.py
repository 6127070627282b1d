from __future__ import annotations

import pytest

from switchboard.media.dialplan import Dialplan, DialplanError, expand_vars, parse_action


def test_default_dialplan_matches_design_section_2() -> None:
    dp = Dialplan.default()
    assert dp.match(destination="echo").apps == (("answer", ""), ("echo", ""))  # type: ignore[union-attr]
    m = dp.match(destination="conf-sales")
    assert m is not None and ("conference", "sales") in m.apps
    m = dp.match(destination="+4930123")
    assert m is not None and m.apps == (("bridge", "sofia/gateway/carrier/+4930123"),)
    assert dp.match(destination="12") is None
    assert dp.match(destination="playback") is not None
    assert dp.match(destination="ivr") is not None


def test_rules_order_caller_source_context() -> None:
    dp = Dialplan.from_config(
        [
            {
                "name": "vip",
                "destination": "^1(\\d+)$",
                "caller": "^555",
                "actions": ["bridge user/$1"],
            },
            {"name": "lab", "destination": "^1", "source": "^10\\.", "actions": ["echo"]},
            {"name": "other", "destination": "^1", "context": "public", "actions": ["park"]},
            {"name": "any", "destination": "^1", "actions": ["hangup USER_BUSY"]},
        ]
    )
    assert dp.match(destination="1234", caller="5551").apps == (("bridge", "user/234"),)  # type: ignore[union-attr]
    assert dp.match(destination="1234", caller="6", source="10.0.0.1").rule == "lab"  # type: ignore[union-attr]
    assert dp.match(destination="1234", context="public").rule == "other"  # type: ignore[union-attr]
    assert dp.match(destination="1234").apps == (("hangup", "USER_BUSY"),)  # type: ignore[union-attr]


def test_bad_rules_are_rejected_with_the_rule_name() -> None:
    with pytest.raises(DialplanError, match="broken"):
        Dialplan.from_config([{"name": "broken", "destination": "(", "actions": ["echo"]}])
    with pytest.raises(DialplanError, match="actions"):
        Dialplan.from_config([{"name": "x", "destination": "x", "actions": []}])


def test_actions_and_variables() -> None:
    assert parse_action("playback /tmp/a.wav") == ("playback", "/tmp/a.wav")
    assert parse_action("bridge(user/100)") == ("bridge", "user/100")
    assert expand_vars("a ${x} ${y}", {"x": "1"}) == "a 1 "


def test_conference_argument_syntax() -> None:
    from switchboard.media.applications.conference import parse_conference_arg

    assert parse_conference_arg("sales@default+1234+flags{mute|deaf}") == (
        "sales",
        "1234",
        {"mute", "deaf"},
    )
    assert parse_conference_arg("room1") == ("room1", None, set())
    assert parse_conference_arg("r+flags{moderator}") == ("r", None, {"moderator"})
