"""Record-Route through a UAS's responses (RFC 3261 §12.1.1) and the route sets both ends
build from them (§12.1.1, §12.1.2): the in-dialog requests of each side leave through the
proxies that Record-Routed, in the right order."""

from __future__ import annotations

from switchboard.sip.dialog import Dialog, next_hop
from switchboard.sip.headers import Via
from switchboard.sip.message import Request, Response, make_response, parse_message

# Two proxies Record-Routed: p1 next to the caller, then p2 next to the callee. p2's value
# is on top; p1's line carries two values (one of them with an unknown parameter, kept).
INVITE = (
    "INVITE sip:bob@node.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2\r\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1\r\n"
    "Via: SIP/2.0/UDP alice.example.com;branch=z9hG4bKa\r\n"
    "Record-Route: <sip:p2.example.com;lr>\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:p1.example.com;transport=tcp;lr;ftag=x1>, <sip:p1.example.com;lr>\r\n"
    "From: Alice <sip:alice@example.com>;tag=a1\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "Call-ID: rr-1@example.com\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:alice@alice.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)
RR_VALUES = [
    "<sip:p2.example.com;lr>",
    "<sip:p1.example.com;transport=tcp;lr;ftag=x1>",
    "<sip:p1.example.com;lr>",
]


def request(text: str = INVITE) -> Request:
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def reparse(resp: Response) -> Response:
    """The response as the caller receives it."""
    msg = parse_message(resp.to_bytes())
    assert isinstance(msg, Response)
    return msg


def test_provisional_and_2xx_to_invite_copy_every_record_route_in_order() -> None:
    inv = request()
    for status in (180, 183, 200):
        resp = reparse(make_response(inv, status, to_tag="b1", headers=[("Contact", "<sip:n>")]))
        assert resp.headers.get_all("Record-Route") == RR_VALUES, status
        # the header lines themselves are the request's, byte for byte
        wire = resp.to_bytes().decode()
        assert "Record-Route: <sip:p2.example.com;lr>\r\n" in wire
        assert f"Record-Route: {', '.join(RR_VALUES[1:])}\r\n" in wire


def test_no_record_route_where_no_dialog_is_established() -> None:
    inv = request()
    assert make_response(inv, 100).headers.get_all("Record-Route") == []
    assert make_response(inv, 486, to_tag="b1").headers.get_all("Record-Route") == []
    bye = request(INVITE.replace("INVITE sip:", "BYE sip:").replace("7 INVITE", "8 BYE"))
    assert make_response(bye, 200, to_tag="b1").headers.get_all("Record-Route") == []


def test_both_ends_route_in_dialog_requests_through_the_recording_proxies() -> None:
    inv = request()
    ok = make_response(inv, 200, to_tag="b1", headers=[("Contact", "<sip:bob@node.example.com>")])
    # The callee (UAS): route set = Record-Route in order, nearest proxy (p2) first.
    uas = Dialog.from_request(inv, ok)
    assert [str(r.uri) for r in uas.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;transport=tcp;lr;ftag=x1",
        "sip:p1.example.com;lr",
    ]
    bye = uas.bye(Via.parse("SIP/2.0/UDP node.example.com;branch=z9hG4bKb"))
    assert bye.uri == "sip:alice@alice.example.com"  # loose routing: R-URI = remote target
    assert str(next_hop(bye)) == "sip:p2.example.com;lr"
    # The caller (UAC): the response it receives, Record-Route reversed, p1 first.
    uac = Dialog.from_response(inv, reparse(ok))
    assert [str(r.uri) for r in uac.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p1.example.com;transport=tcp;lr;ftag=x1",
        "sip:p2.example.com;lr",
    ]
    ack = uac.ack(Via.parse("SIP/2.0/UDP alice.example.com;branch=z9hG4bKc"))
    assert ack.uri == "sip:bob@node.example.com"
    assert ack.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p1.example.com;transport=tcp;lr;ftag=x1>",
        "<sip:p2.example.com;lr>",
    ]
    assert str(next_hop(ack)) == "sip:p1.example.com;lr"


def test_a_request_without_record_route_gives_empty_route_sets() -> None:
    inv = request("".join(line for line in INVITE.splitlines(True) if "Record-Route" not in line))
    ok = make_response(inv, 200, to_tag="b1", headers=[("Contact", "<sip:bob@node.example.com>")])
    assert ok.headers.get_all("Record-Route") == []
    uac = Dialog.from_response(inv, reparse(ok))
    bye = uac.bye(Via.parse("SIP/2.0/UDP alice.example.com;branch=z9hG4bKd"))
    assert uac.route_set == [] and bye.headers.get_all("Route") == []
    assert str(next_hop(bye)) == "sip:bob@node.example.com"
