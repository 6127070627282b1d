"""Command recognition: case-insensitive prefix matching in FreeSWITCH's order (parse_command)."""

from __future__ import annotations

import pytest

from switchboard.esl import commands as c
from switchboard.esl.framing import Packet


def cmd(text: str, *headers: tuple[str, str], body: bytes = b"") -> c.Command:
    return c.parse_command(Packet(text, tuple(headers), body))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exit", c.Exit()),
        ("EXITING", c.Exit()),
        ("...", c.Exit()),
        ("auth ClueCon", c.Auth("ClueCon")),
        ("auth  two spaces", c.Auth(" two spaces")),
        ("auth", c.Unknown("auth")),
        ("api status", c.Api("status", "")),
        ("API show channels as json", c.Api("show", "channels as json")),
        ("api", c.Unknown("api")),
        ("apistatus", c.Unknown("apistatus")),
        ("bgapi status", c.BgApi("status", "", None)),
        ("events plain ALL", c.EventSubscribe("plain", ("ALL",))),
        ("event JSON CHANNEL_ANSWER", c.EventSubscribe("json", ("CHANNEL_ANSWER",))),
        ("event CHANNEL_ANSWER", c.EventSubscribe(None, ("CHANNEL_ANSWER",))),
        ("nixevent DTMF", c.NixEvent(("DTMF",))),
        ("noevents", c.NoEvents()),
        ("filter Unique-ID abc", c.FilterAdd("Unique-ID", "abc")),
        ("filter add Unique-ID abc", c.FilterAdd("Unique-ID", "abc")),
        ("filter Caller-Caller-ID-Name John Doe", c.FilterAdd("Caller-Caller-ID-Name", "John Doe")),
        ("filter Unique-ID", c.FilterSyntaxError()),
        ("filter delete Unique-ID abc", c.FilterDelete("Unique-ID", "abc")),
        ("filter delete Unique-ID", c.FilterDelete("Unique-ID", None)),
        ("filter delete all", c.FilterDelete("all", None)),
        ("myevents abc", c.MyEvents("abc", None)),
        ("myevents abc json", c.MyEvents("abc", "json")),
        ("linger", c.Linger(None)),
        ("linger 5", c.Linger(5)),
        ("nolinger", c.NoLinger()),
        ("log", c.Log(None)),
        ("log info", c.Log("info")),
        ("nolog", c.NoLog()),
        ("divert_events on", c.DivertEvents("on")),
        ("getvar x", c.GetVar("x")),
        ("hello", c.Unknown("hello")),
        ("", c.Unknown("")),
    ],
)
def test_recognition(text: str, expected: c.Command) -> None:
    assert cmd(text) == expected


def test_bgapi_honours_client_job_uuid() -> None:
    assert cmd("bgapi originate a b", ("Job-UUID", "j-1")) == c.BgApi("originate", "a b", "j-1")


def test_sendmsg_headers_body_and_session_id() -> None:
    got = cmd("sendmsg", ("session-id", "u1"), ("call-command", "execute"), body=b"x")
    assert isinstance(got, c.SendMsg)
    assert got.uuid == "u1" and got.header("CALL-COMMAND") == "execute" and got.body == "x"


def test_api_text_roundtrip() -> None:
    got = cmd("api originate user/1000 &park")
    assert isinstance(got, c.Api) and got.text == "originate user/1000 &park"
