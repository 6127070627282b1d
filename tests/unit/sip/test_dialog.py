"""RFC 3261 §12 dialogs and §9.1 CANCEL, on messages as they appear on the wire."""

from __future__ import annotations

import pytest

from switchboard.sip.dialog import (
    Dialog,
    DialogState,
    OutOfOrderRequest,
    build_cancel,
    next_hop,
    uac_dialog_id,
    uas_dialog_id,
)
from switchboard.sip.headers import Via
from switchboard.sip.message import Request, Response, make_response, parse_message
from switchboard.sip.transaction import Peer, RequestReceived, TransactionLayer

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 70\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
    "Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n"
)


def parse_request(text: str) -> Request:
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def received_response(
    req: Request, status: int, *, to_tag: str | None = "314159", rr: list[str] | None = None
) -> Response:
    headers = [("Contact", "<sip:bob@client.biloxi.example.com>")]
    headers += [("Record-Route", r) for r in rr or []]
    msg = parse_message(make_response(req, status, to_tag=to_tag, headers=headers).to_bytes())
    assert isinstance(msg, Response)
    return msg


RR = ["<sip:ss2.biloxi.example.com;lr>", "<sip:ss1.atlanta.example.com;lr>"]
VIA = "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bKnew1"


def test_uac_dialog_from_provisional_then_confirmed_by_2xx() -> None:
    inv = parse_request(INVITE)
    ringing = received_response(inv, 180, rr=RR[:1])
    d = Dialog.from_response(inv, ringing)
    assert d.state is DialogState.EARLY and d.is_uac
    assert d.id == uac_dialog_id(ringing)
    assert d.id == ("3848276298220188511@atlanta.example.com", "9fxced76sl", "314159")
    assert d.remote_target == "sip:bob@client.biloxi.example.com"
    assert d.local_seq == 1 and d.remote_seq is None
    ok = received_response(inv, 200, rr=RR)
    d.on_response(inv, ok)
    assert d.state is DialogState.CONFIRMED
    # §12.1.2: route set = Record-Route in reverse order, recomputed from the 2xx.
    assert [str(r.uri) for r in d.route_set] == [
        "sip:ss1.atlanta.example.com;lr",
        "sip:ss2.biloxi.example.com;lr",
    ]


def test_ack_for_2xx_has_invite_cseq_and_loose_routes() -> None:
    inv = parse_request(INVITE)
    d = Dialog.from_response(inv, received_response(inv, 200, rr=RR))
    ack = parse_message(d.ack(VIA).to_bytes())
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == "sip:bob@client.biloxi.example.com"  # remote target (loose routing)
    assert [str(r.uri) for r in ack.routes] == [
        "sip:ss1.atlanta.example.com;lr",
        "sip:ss2.biloxi.example.com;lr",
    ]
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.from_tag == "9fxced76sl" and ack.to_tag == "314159"
    assert ack.call_id == inv.call_id
    assert ack.top_via.branch == "z9hG4bKnew1"
    assert ack.max_forwards == 70
    assert next_hop(ack).host == "ss1.atlanta.example.com"


def test_bye_and_reinvite_count_local_cseq_and_carry_contact_on_refresh() -> None:
    inv = parse_request(INVITE)
    d = Dialog.from_response(inv, received_response(inv, 200))
    bye = d.bye(VIA)
    assert (bye.cseq.seq, bye.cseq.method) == (2, "BYE")
    assert "Contact" not in bye.headers and "Route" not in bye.headers
    assert bye.uri == "sip:bob@client.biloxi.example.com"
    offer = b"v=0\r\no=- 2 2 IN IP4 192.0.2.1\r\n"
    re = parse_message(d.reinvite(Via.parse(VIA), body=offer).to_bytes())
    assert isinstance(re, Request)
    assert (re.cseq.seq, re.method) == (3, "INVITE")
    assert re.body == offer and re.content_type == "application/sdp"
    assert str(re.contacts[0].uri) == "sip:alice@client.atlanta.example.com;transport=udp"
    # The ACK for the re-INVITE's 2xx reuses the re-INVITE's number.
    assert d.ack(VIA).cseq.seq == 3
    info = d.info(VIA, body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay")
    assert (info.cseq.seq, info.content_type) == (4, "application/dtmf-relay")


def test_strict_route_puts_first_route_in_request_uri() -> None:
    inv = parse_request(INVITE)
    rr = ["<sip:new.example.com;lr>", "<sip:old.example.com;method=INVITE>"]
    d = Dialog.from_response(inv, received_response(inv, 200, rr=rr))
    # Reversed: the strict router (no lr) is first.
    ruri, routes = d.request_uri_and_routes()
    assert ruri == "sip:old.example.com"  # method param not allowed in a R-URI (§19.1.1)
    assert routes == ["<sip:new.example.com;lr>", "<sip:bob@client.biloxi.example.com>"]
    bye = parse_message(d.bye(VIA).to_bytes())
    assert isinstance(bye, Request)
    assert bye.uri == "sip:old.example.com"
    assert [str(r.uri) for r in bye.routes] == [
        "sip:new.example.com;lr",
        "sip:bob@client.biloxi.example.com",
    ]
    assert next_hop(bye).host == "new.example.com"


def test_uas_dialog_from_request_and_its_requests() -> None:
    inv = parse_request(INVITE.replace("Route:", "Record-Route:"))
    ok = make_response(inv, 200, to_tag="uas1", headers=[("Contact", "<sip:bob@192.0.2.4:5062>")])
    d = Dialog.from_request(inv, ok)
    assert not d.is_uac and d.state is DialogState.CONFIRMED
    assert d.id == ("3848276298220188511@atlanta.example.com", "uas1", "9fxced76sl")
    assert d.remote_seq == 1 and d.local_seq is None
    assert d.remote_target == "sip:alice@client.atlanta.example.com;transport=udp"
    assert [str(r.uri) for r in d.route_set] == ["sip:ss1.atlanta.example.com;lr"]  # in order
    bye = parse_message(d.bye("SIP/2.0/UDP 192.0.2.4:5062;branch=z9hG4bKb1").to_bytes())
    assert isinstance(bye, Request)
    assert (bye.cseq.seq, bye.cseq.method) == (1, "BYE")
    assert bye.from_tag == "uas1" and bye.to_tag == "9fxced76sl"
    assert bye.from_.uri.user == "bob" and bye.to.uri.user == "alice"
    # The peer's BYE finds this dialog by the UAS-side id.
    peer_bye = parse_request(
        "BYE sip:bob@192.0.2.4:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bKbye\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=uas1\r\n"
        "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert uas_dialog_id(peer_bye) == d.id
    d.on_request(peer_bye)
    assert d.remote_seq == 2


def test_uas_rejects_out_of_order_cseq_and_changes_nothing() -> None:
    inv = parse_request(INVITE)
    d = Dialog.from_request(inv, make_response(inv, 200, to_tag="uas1"))
    refresh = parse_request(
        INVITE.replace("CSeq: 1 INVITE", "CSeq: 5 INVITE")
        .replace("client.atlanta.example.com;transport=udp", "192.0.2.99:5080")
        .replace("To: Bob <sip:bob@biloxi.example.com>", "To: <sip:bob@b>;tag=uas1")
    )
    d.on_request(refresh)
    assert d.remote_seq == 5 and d.remote_target == "sip:alice@192.0.2.99:5080"
    old = parse_request(INVITE.replace("CSeq: 1 INVITE", "CSeq: 4 INVITE"))
    with pytest.raises(OutOfOrderRequest) as err:
        d.on_request(old)
    assert err.value.status == 500 and err.value.blame == "peer"
    assert d.remote_seq == 5 and d.remote_target == "sip:alice@192.0.2.99:5080"
    ack = parse_request(INVITE.replace("INVITE", "ACK").replace("CSeq: 1 ACK", "CSeq: 5 ACK"))
    d.on_request(ack)  # equal number: fine
    assert d.remote_seq == 5


def test_responses_that_end_or_refresh_a_dialog() -> None:
    inv = parse_request(INVITE)
    d = Dialog.from_response(inv, received_response(inv, 200))
    upd = d.create_request("UPDATE", VIA)
    moved = received_response(upd, 200)
    moved.headers.set("Contact", "<sip:bob@192.0.2.77>")
    d.on_response(upd, moved)
    assert d.remote_target == "sip:bob@192.0.2.77"
    bye = d.bye(VIA)
    d.on_response(bye, received_response(bye, 481))
    assert d.state is DialogState.TERMINATED


def test_responses_that_create_no_dialog() -> None:
    inv = parse_request(INVITE)
    with pytest.raises(ValueError):
        Dialog.from_response(inv, received_response(inv, 180, to_tag=None))
    with pytest.raises(ValueError):
        Dialog.from_response(inv, received_response(inv, 486))
    with pytest.raises(ValueError):
        Dialog.from_request(inv, make_response(inv, 180))  # no To tag of ours
    # RFC 2543 peer: 2xx without To tag still makes a dialog with an empty remote tag.
    d = Dialog.from_response(inv, received_response(inv, 200, to_tag=None))
    assert d.remote_tag == ""


def test_secure_flag_needs_sips_and_tls() -> None:
    inv = parse_request(INVITE.replace("INVITE sip:", "INVITE sips:", 1))
    ok = received_response(inv, 200)
    assert Dialog.from_response(inv, ok, over_tls=True).secure
    assert not Dialog.from_response(inv, ok, over_tls=False).secure
    assert not Dialog.from_response(parse_request(INVITE), ok, over_tls=True).secure


def test_cancel_construction_and_matching() -> None:
    # A proxy's forwarded INVITE: two Vias; the CANCEL carries only the top one.
    inv = parse_request(
        INVITE.replace(
            "Via: SIP/2.0/UDP client",
            "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKprx\r\nVia: SIP/2.0/UDP client",
        ).replace("Max-Forwards: 70", "Max-Forwards: 69\r\nRequire: 100rel")
    )
    cancel = parse_message(build_cancel(inv).to_bytes())
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri
    assert [str(v) for v in cancel.vias] == ["SIP/2.0/UDP proxy.example.com;branch=z9hG4bKprx"]
    assert cancel.headers.get("From") == inv.headers.get("From")
    assert cancel.headers.get("To") == inv.headers.get("To") and cancel.to_tag is None
    assert cancel.call_id == inv.call_id
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert [str(r) for r in cancel.routes] == ["<sip:ss1.atlanta.example.com;lr>"]
    assert "Require" not in cancel.headers and cancel.body == b""
    # The next hop's transaction layer finds the INVITE the CANCEL is for (§9.2).
    layer = TransactionLayer()
    peer = Peer("UDP", "192.0.2.1", 5060)
    (_, new) = layer.receive(inv, peer, now=0.0)
    assert isinstance(new, RequestReceived)
    out = layer.receive(cancel, peer, now=0.1)
    assert isinstance(out[0], RequestReceived) and out[0].transaction is not new.transaction
    assert layer.find_invite_for_cancel(cancel) is new.transaction


def test_ack_and_cancel_are_not_plain_dialog_requests() -> None:
    inv = parse_request(INVITE)
    d = Dialog.from_request(inv, make_response(inv, 200, to_tag="uas1"))
    with pytest.raises(ValueError):
        d.create_request("ACK", VIA)
    with pytest.raises(ValueError):
        d.create_request("CANCEL", VIA)
    with pytest.raises(ValueError):
        d.ack(VIA)  # the UAS never sent an INVITE in this dialog
