"""Server frames byte-for-byte (mod_event_socket.c: greeting, replies, URL encoding, events)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.esl import wire


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("sip:1000@10.0.0.5:5060", "sip%3A1000%4010.0.0.5%3A5060"),
        ("100%", "100%25"),
        ("100%25", "100%25"),  # no double encoding of uppercase %XX
        ("%2b", "%252b"),  # lowercase hex is not "already encoded"
        ("é", "%C3%A9"),
        ("it's/(x),y~*!$-._", "it's/(x),y~*!$-._"),
        ("\r\n", "%0D%0A"),
        ('#&;<=>?[\\]^`{|}"', "%23%26%3B%3C%3D%3E%3F%5B%5C%5D%5E%60%7B%7C%7D%22"),
        ("\x7f\x01", "%7F%01"),
        ("ab%4", "ab%254"),  # a % too close to the end is a lone %
    ],
)
def test_fs_urlencode_table(value: str, encoded: str) -> None:
    assert wire.fs_urlencode(value) == encoded


@given(st.text())
def test_urlencoded_value_never_contains_raw_separators(value: str) -> None:
    out = wire.fs_urlencode(value)
    assert not any(c in out for c in " \r\n+:") and out.isascii()


@given(st.text().filter(lambda s: "%" not in s))
def test_urlencode_roundtrips_through_a_standard_decoder(value: str) -> None:
    # What modesl (decodeURIComponent) and Genesis (unquote) do with our bytes.
    assert unquote(wire.fs_urlencode(value), errors="surrogateescape") == value


@dataclass(frozen=True)
class Ev:
    name: str
    headers: dict[str, str]
    body: str | None = None


def test_plain_event_inner_block_ends_with_blank_line_and_undef() -> None:
    inner = wire.plain_event({"Event-Name": "CHANNEL_HANGUP", "Job-Owner-UUID": ""})
    assert inner == b"Event-Name: CHANNEL_HANGUP\nJob-Owner-UUID: _undef_\n\n"


def test_background_job_frame_matches_reference_bytes() -> None:
    headers = {
        "Event-Name": "BACKGROUND_JOB",
        "Core-UUID": "6a7b1f2e-0000-4000-8000-000000000001",
        "FreeSWITCH-Hostname": "mediasrv1",
        "FreeSWITCH-Switchname": "mediasrv1",
        "FreeSWITCH-IPv4": "127.0.0.1",
        "FreeSWITCH-IPv6": "::1",
        "Event-Date-Local": "2026-05-02 07:37:03",
        "Event-Date-GMT": "Sat, 02 May 2026 07:37:03 GMT",
        "Event-Date-Timestamp": "1777707423894968",
        "Event-Calling-File": "mod_event_socket.c",
        "Event-Calling-Function": "api_exec",
        "Event-Calling-Line-Number": "1580",
        "Event-Sequence": "5123",
        "Job-UUID": "7f4db78a-17d7-11dd-b7a0-db4edd065621",
        "Job-Owner-UUID": "",
        "Job-Command": "originate",
        "Job-Command-Arg": "{origination_caller_id_number=1234}sofia/gateway/carrier/"
        "15551230000 &playback(/path/to/message.wav)",
    }
    body = "+OK 7f4de4bc-17d7-11dd-b7a0-db4edd065621\n"
    frame = wire.event_frame("plain", headers, body)
    head, _, inner = frame.partition(b"\n\n")
    assert head == b"Content-Length: 742\nContent-Type: text/event-plain"
    assert len(inner) == 742
    assert b"FreeSWITCH-IPv6: %3A%3A1\n" in inner
    assert b"Event-Date-GMT: Sat,%2002%20May%202026%2007%3A37%3A03%20GMT\n" in inner
    assert inner.endswith(b"Job-Owner-UUID: _undef_\nJob-Command: originate\n"
                          b"Job-Command-Arg: %7Borigination_caller_id_number%3D1234%7Dsofia/"
                          b"gateway/carrier/15551230000%20%26playback(/path/to/message.wav)\n"
                          b"Content-Length: 41\n\n" + body.encode())  # fmt: skip

    failed = wire.event_frame("json", headers, "-ERR NO_ANSWER\n")
    head, _, inner = failed.partition(b"\n\n")
    assert head == b"Content-Length: 741\nContent-Type: text/event-json"
    obj = json.loads(inner)
    assert obj["Job-Owner-UUID"] == "" and obj["FreeSWITCH-IPv6"] == "::1"
    assert obj["Content-Length"] == "15" and obj["_body"] == "-ERR NO_ANSWER\n"
    assert list(obj)[-2:] == ["Content-Length", "_body"]


def test_json_keeps_unicode_raw_and_arrays() -> None:
    inner = wire.json_event({"A": "é", "B": ["x", "y"]})  # type: ignore[dict-item]
    assert inner == '{"A":"é","B":["x","y"]}'.encode()


def test_plain_array_header() -> None:
    assert wire.plain_event({"A": ["x", "y z"]}) == b"A: ARRAY%3A%3Ax%7C%3Ay%20z\n\n"  # type: ignore[dict-item]


def test_invalid_header_names_are_never_emitted() -> None:
    inner = wire.plain_event({"Bad Name": "x", "": "y", "a:b": "z", "Ok": "1"})
    assert inner == b"Ok: 1\n\n"


def test_replies_exact_bytes() -> None:
    assert wire.AUTH_REQUEST == b"Content-Type: auth/request\n\n"
    assert wire.command_reply("+OK accepted") == (
        b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    )
    assert wire.command_reply("") == (
        b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
    )
    assert wire.bgapi_reply("abc") == (
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: abc\nJob-UUID: abc\n\n"
    )
    assert wire.api_response("+OK x\n") == (
        b"Content-Type: api/response\nContent-Length: 6\n\n+OK x\n"
    )
    assert wire.api_response("") == (
        b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n"
    )
    assert wire.api_response("é") == b"Content-Type: api/response\nContent-Length: 2\n\n\xc3\xa9"
    goodbye = wire.disconnect_notice()
    assert goodbye == (
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
        b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    )
    assert wire.disconnect_notice(controlled_uuid="u1").startswith(
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: u1\n"
        b"Content-Disposition: disconnect\nContent-Length: 67\n\n"
    )
    assert wire.linger_notice("u1", "sofia/internal/1000@x", 5) == (
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: u1\n"
        b"Content-Disposition: linger\nChannel-Name: sofia/internal/1000%40x\n"
        b"Linger-Time: 5\nContent-Length: 0\n\n"
    )
    assert len(wire.RUDE_REJECTION.partition(b"\n\n")[2]) == 24


def test_reply_text_cannot_inject_a_header_block() -> None:
    assert wire.command_reply("+OK x\n\nEvil: 1") == (
        b"Content-Type: command/reply\nReply-Text: +OK x  Evil: 1\n\n"
    )


def test_encoded_event_serialises_once_per_format() -> None:
    enc = wire.EncodedEvent(Ev("HEARTBEAT", {"Event-Name": "HEARTBEAT"}))
    assert enc.frame("plain") is enc.frame("plain")
    assert enc.frame("json").endswith(b'{"Event-Name":"HEARTBEAT"}')
    assert enc.frame("xml").startswith(b"Content-Length: ")


def _reference_encoder(value: str) -> str:
    """A byte-by-byte encoder following ``switch_url_encode_opt``, for differential testing."""
    unsafe = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
    hexd = b"0123456789ABCDEF"
    data = value.encode("utf-8", "surrogateescape")
    out = []
    for i, b in enumerate(data):
        already = b == 0x25 and i + 2 < len(data) and data[i + 1] in hexd and data[i + 2] in hexd
        if not already and (b < 0x20 or b > 0x7E or b in unsafe):
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("%AF09afé+ \r\n")))
def test_urlencode_matches_the_reference_encoder(value: str) -> None:
    assert wire.fs_urlencode(value) == _reference_encoder(value)


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True), st.text()))
def test_plain_block_escapes_each_value_like_the_reference(headers: dict[str, str]) -> None:
    headers.pop("Content-Length", None)
    expected = "".join(f"{k}: {_reference_encoder(v) or '_undef_'}\n" for k, v in headers.items())
    assert wire.plain_event(headers) == (expected + "\n").encode()
