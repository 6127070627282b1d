"""Message parse/serialise, lazy properties and builders (RFC 3261 §7, §8.2.6, §18.3)."""

from __future__ import annotations

import pytest

from switchboard.sip.errors import SipParseError, UnsupportedUriScheme, VersionNotSupported
from switchboard.sip.headers import CSeq, Via
from switchboard.sip.message import Request, Response, make_response, parse_message
from switchboard.sip.uri import NameAddr, SipUri

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 atlanta.example.com\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"X-Custom-Thing:   kept  verbatim ;;,,\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def test_parse_invite_and_properties() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert (m.method, m.uri, m.version) == ("INVITE", "sip:bob@biloxi.example.com", "SIP/2.0")
    assert m.ruri == SipUri("sip", "bob", None, "biloxi.example.com")
    assert m.top_via.branch == "z9hG4bKnashds8" and m.top_via.rport == ""
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.from_tag == "1928301774" and m.to_tag is None
    assert m.from_.display == "Alice" and m.to.uri.user == "bob"
    assert m.max_forwards == 70
    assert [str(r.uri) for r in m.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert m.record_routes == []
    assert [str(c.uri) for c in m.contacts] == ["sip:alice@pc33.atlanta.example.com"]
    assert not m.is_star_contact
    assert m.content_type == "application/sdp" and m.media_type == "application/sdp"
    assert m.content_length == len(SDP) and m.body == SDP
    assert m.headers.get("x-custom-thing") == "kept  verbatim ;;,,"
    assert m.parse_all() is m


def test_untouched_message_serialises_byte_for_byte() -> None:
    assert parse_message(INVITE).to_bytes() == INVITE
    odd = INVITE.replace(b"Max-Forwards: 70", b"MaX-fOrWaRdS:70").replace(b"Call-ID:", b"i  :")
    assert parse_message(odd).to_bytes() == odd


def test_proxy_edits_touch_only_changed_lines() -> None:
    m = parse_message(INVITE)
    assert m.top_via.branch == "z9hG4bKnashds8"  # cached...
    m.headers.insert("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1")
    assert m.top_via.host == "proxy.example.com"  # ...and invalidated by the edit
    m.headers.set("Max-Forwards", str(m.max_forwards - 1))  # type: ignore[operator]
    assert m.headers.remove_first("Route") == "<sip:p1.example.com;lr>"
    m.headers.insert("Record-Route", "<sip:proxy.example.com;lr>")
    out = m.to_bytes()
    again = parse_message(out)
    assert [v.host for v in again.vias] == ["proxy.example.com", "pc33.atlanta.example.com"]
    assert again.max_forwards == 69
    assert [str(r.uri) for r in again.routes] == ["sip:p2.example.com;lr"]
    assert [str(r.uri) for r in again.record_routes] == ["sip:proxy.example.com;lr"]
    assert b"X-Custom-Thing:   kept  verbatim ;;,,\r\n" in out
    assert again.body == SDP


def test_folded_headers_are_unfolded() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bK1\r\n"
        b"Subject: first\r\n\t second\r\nCall-ID: x\r\nCSeq: 1\r\n    OPTIONS\r\n"
        b"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nMax-Forwards: 5\r\n\r\n"
    )
    m = parse_message(data, strict=True)
    assert m.top_via.branch == "z9hG4bK1"
    assert m.headers.get("subject") == "first second"
    assert m.cseq == CSeq(1, "OPTIONS")


def test_body_cut_by_content_length_and_extra_discarded() -> None:
    m = parse_message(INVITE + b"garbage after the body")
    assert m.body == SDP
    with pytest.raises(SipParseError):
        parse_message(INVITE[:-5])  # §18.3: datagram shorter than Content-Length


def test_no_content_length_on_udp_takes_rest_of_datagram() -> None:
    data = INVITE.replace(b"Content-Length: " + str(len(SDP)).encode() + b"\r\n", b"")
    m = parse_message(data)
    assert m.body == SDP and m.content_length is None
    assert b"Content-Length: %d\r\n" % len(SDP) in m.to_bytes()


def test_to_bytes_recomputes_content_length() -> None:
    m = parse_message(INVITE)
    m.body = b"v=0\r\n"
    out = m.to_bytes()
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in out
    assert parse_message(out).body == b"v=0\r\n"


def test_response_parse() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1;received=1.1.1.1\r\n"
        b"t: <sip:b@c>;tag=987\r\nf: <sip:a@c>;tag=123\r\ni: abc\r\nCSeq: 2 INVITE\r\nl: 0\r\n\r\n"
    )
    m = parse_message(data, strict=True)
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (180, "Ringing") and m.is_provisional
    assert m.to_tag == "987" and m.from_tag == "123" and m.call_id == "abc"
    assert m.top_via.received == "1.1.1.1"
    assert m.to_bytes() == data
    assert parse_message(b"SIP/2.0 100 \r\nVia: SIP/2.0/UDP a\r\n\r\n").reason == ""  # type: ignore[union-attr]


def test_star_contact() -> None:
    data = (
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"To: <sip:u@example.com>\r\nFrom: <sip:u@example.com>;tag=1\r\nCall-ID: r\r\n"
        b"CSeq: 2 REGISTER\r\nMax-Forwards: 70\r\nContact: *\r\nExpires: 0\r\n\r\n"
    )
    m = parse_message(data, strict=True)
    assert m.is_star_contact and m.contacts == [] and m.expires == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"garbage\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", 400),  # no blank line
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", 400),
        (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", 400),
        (b"INV ITE sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/7.0\r\n\r\n", 505),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", 400),
        (b"SIP/2.0 4294967301 Big\r\n\r\n", 400),
        (b"SIP/2.0 20 OK\r\n\r\n", 400),
        (b"SIP/2.0 099 OK\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nVia\r\n\r\n", 400),  # a known name, no colon
        (b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nFromx\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\n: no name\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nX: a\nY: b\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 3\r\n\r\nabc", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99\r\n\r\nabc", 400),
    ],
)
def test_malformed_messages(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == status and info.value.blame == "peer"
    assert (status == 505) == isinstance(info.value, VersionNotSupported)


def test_lazy_errors_surface_on_access_and_in_parse_all() -> None:
    m = parse_message(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"))
    assert m.call_id  # untouched headers do not matter...
    with pytest.raises(SipParseError):
        m.parse_all()  # ...but a UAS's full check sees the method mismatch
    bad_mf = parse_message(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 300"))
    with pytest.raises(SipParseError):
        _ = bad_mf.max_forwards
    unk = parse_message(
        INVITE.replace(b"INVITE sip:bob@biloxi.example.com", b"INVITE soap.beep://192.0.2.103:3002")
    )
    with pytest.raises(UnsupportedUriScheme):
        _ = unk.ruri
    for header in (b"Call-ID", b"From", b"To", b"Via", b"CSeq"):
        lines = [ln for ln in INVITE.split(b"\r\n") if not ln.startswith(header + b":")]
        with pytest.raises(SipParseError):
            parse_message(b"\r\n".join(lines), strict=True)
    dup = INVITE.replace(b"Call-ID: a84", b"Call-ID: dup\r\nCall-ID: a84")
    with pytest.raises(SipParseError):
        parse_message(dup, strict=True)


def test_make_response_copies_dialog_headers() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    r = make_response(req, 486, to_tag="tt1", headers=[("Retry-After", "60")])
    assert (r.status, r.reason) == (486, "Busy Here")
    assert [n for n, _ in r.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Retry-After"]
    assert r.to_tag == "tt1" and r.from_tag == "1928301774"
    assert r.top_via == req.top_via and r.cseq == req.cseq and r.call_id == req.call_id
    trying = make_response(req, 100, to_tag="tt1")
    assert trying.to_tag is None and trying.reason == "Trying"
    again = make_response(
        parse_message(r.to_bytes().replace(b"SIP/2.0 486 Busy Here", b"BYE sip:x SIP/2.0")),
        200,
        to_tag="other",
    )  # type: ignore[arg-type]
    assert again.to_tag == "tt1"  # an existing tag is never replaced
    assert parse_message(r.to_bytes()).headers.get("Content-Length") == "0"
    assert make_response(req, 200, "Fine Thanks").reason == "Fine Thanks"


def test_build_request() -> None:
    req = Request.build(
        "OPTIONS",
        SipUri.parse("sip:10.0.0.1:5080"),
        via=Via("UDP", "127.0.0.1", 5060, {"branch": "z9hG4bKabc", "rport": None}),
        from_=NameAddr(None, SipUri.parse("sip:ping@127.0.0.1"), {"tag": "f1"}),
        to="<sip:10.0.0.1:5080>",
        call_id="c1@127.0.0.1",
        cseq=1,
        headers=[("User-Agent", "switchboard")],
    )
    data = req.to_bytes()
    assert data.startswith(
        b"OPTIONS sip:10.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"
    )
    back = parse_message(data, strict=True)
    assert back == req.__class__("OPTIONS", "sip:10.0.0.1:5080", back.headers)
    assert back.cseq == CSeq(1, "OPTIONS") and back.max_forwards == 70 and back.from_tag == "f1"
    assert back.headers.get("Content-Length") == "0"


def test_non_utf8_bytes_round_trip() -> None:
    data = INVITE.replace(b'"Alice"', b'"Al\xffice"')
    m = parse_message(data)
    assert m.to_bytes() == data
    assert m.from_.display is not None


def test_lookups_after_non_ascii_text_whose_lower_case_is_longer() -> None:
    # "İ".lower() is two characters; lookups must not depend on lower-casing the text.
    data = INVITE.replace(b"To: Bob", '"İİİ"'.join(["To: ", ""]).encode())
    m = parse_message(data)
    assert m.to.display == "İİİ" and m.call_id.startswith("a84b4c76")
    assert m.cseq == CSeq(314159, "INVITE") and m.to_bytes() == data


def test_lookup_handles_lws_before_colon_and_name_prefixes() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards-Extra: 1\r\nMAX-FORWARDS \t: 9")
    m = parse_message(data)
    assert m.max_forwards == 9
    assert m.headers.get("max-forwards-extra") == "1"
    assert "Max-Forwards" in m.headers and "Max" not in m.headers
    assert m.to_bytes() == data
