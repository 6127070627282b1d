"""The proxy's byte-level message view: header indexing, folding, fast response path."""

from __future__ import annotations

import pytest

from switchboard.sip import fastpath as wire
from tests.support.sipmsg import invite, response_to

RESP = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbX.1\r\n"
    b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uac\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_parse_indexes_headers_and_compact_forms() -> None:
    m = wire.parse(RESP)
    assert m.status == 180 and m.vias == [1, 2] and m.call_id == b"x"
    assert (m.cseq_num, m.cseq_method) == (b"7", b"INVITE")
    assert m.to_tag() == b"2" and m.from_tag() == b"1"


def test_folded_header_is_joined() -> None:
    data = invite().replace(b"Call-ID: call-1@carrier", b"Call-ID:\r\n  call-1@carrier")
    assert wire.parse(data).call_id == b"call-1@carrier"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"INVITE sip:a SIP/2.0\r\nVia x\r\n\r\n", "Malformed Header Line"),
        (b"INVITE sip:a SIP/1.0\r\n\r\n", "505 Version Not Supported"),
        (b"SIP/2.0 099 Odd\r\n\r\n", "Bad Status Code"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "Bad Status Line"),
        (b"INVITE sip:a SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", "Truncated Body"),
        (b"INVITE sip:a SIP/2.0\r\nVia: x\r\n", "Missing Empty Line After Headers"),
        (b"INVITE sip:a SIP/2.0\r\nSubject: a\rb\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a SIP/2.0\r\nSubject: a\nb\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a SIP/2.0\r\nSubject: a\r\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a SIP/2.0\n\r\nSubject: a\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a SIP/2.0\r\nSubject: a\r\n \rb\r\n\r\n", "Bare CR or LF"),
    ],
)
def test_bad_messages(data: bytes, reason: str) -> None:
    with pytest.raises(wire.BadMessage, match=reason):
        wire.parse(data)


def test_stream_needs_content_length() -> None:
    with pytest.raises(wire.BadMessage, match="Missing Content-Length"):
        wire.parse(b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n", stream=True)


def test_uri_target() -> None:
    assert wire.uri_target(b"<sip:10.0.0.1:5080;transport=tcp;lr>") == (
        "tcp",
        "10.0.0.1",
        5080,
        True,
    )
    assert wire.uri_target(b"sip:bob@[::1]") == ("", "[::1]", 5060, False)
    with pytest.raises(wire.BadMessage) as exc:
        wire.uri_target(b"tel:+123")
    assert exc.value.status == 416


def test_first_value_respects_brackets_and_quotes() -> None:
    assert wire.first_value(b'"a, b" <sip:x;p=1,2>, <sip:y>') == (
        b'"a, b" <sip:x;p=1,2>',
        b"<sip:y>",
    )


def test_response_builder_round_trip() -> None:
    r = response_to(invite(), 200)
    assert wire.parse(r).to_tag() == b"uas1"
