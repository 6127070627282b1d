"""Topology hiding in the proxy core: what a carrier sees of a call dispatched to a media
node, and in-dialog requests both ways (bytes in, bytes out, fake clock)."""

from __future__ import annotations

import re

import pytest

from switchboard.router import proxy as proxy_mod
from switchboard.router.dispatcher import Dispatcher, parse_list
from switchboard.router.proxy import Interface, Proxy, Send
from tests.support.sipmsg import header, invite, response_to, start_line

CARRIER = ("192.0.2.10", 5070)
NODE = ("10.0.0.5", 5081)


def hiding_proxy() -> Proxy:
    return Proxy(
        [Interface("udp", "203.0.113.1", 5060)],
        Dispatcher(parse_list("1 sip:10.0.0.5:5081\n"), algorithm=4, now=1e9),
        secret=b"test",
        hide_topology=True,
    )


def to(sends: list[Send], addr: tuple[str, int]) -> list[bytes]:
    return [s.data for s in sends if s.addr == addr]


def leaks(data: bytes) -> list[str]:
    """Internal addresses, ports or product names in a message towards the carrier."""
    text = data.decode()
    return re.findall(r"10\.0\.0\.5|5081|switchboard|Switchboard", text)


def node_answer(fwd: bytes, status: int, reason: str = "OK") -> bytes:
    data = response_to(fwd, status, reason, contact="10.0.0.5:5081")
    return data.replace(b"Content-Length", b"Server: Switchboard\r\nContent-Length", 1)


def test_carrier_sees_only_the_router_and_in_dialog_requests_work_both_ways() -> None:
    p = hiding_proxy()
    inv = invite(via="192.0.2.10:5070", ruri="sip:echo@203.0.113.1:5060")
    out = p.receive(inv, "udp", CARRIER, None, 0.0)
    [fwd] = to(out, NODE)
    assert header(fwd, "Contact") == ["<sip:alice@192.0.2.10:5070>"]  # the node sees all
    seen: list[bytes] = []
    for status, reason in ((180, "Ringing"), (200, "OK")):
        up = to(p.receive(node_answer(fwd, status, reason), "udp", NODE, None, 0.1), CARRIER)
        seen += up
    assert [start_line(d) for d in seen] == ["SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]
    ok = seen[-1]
    [contact] = header(ok, "Contact")
    assert re.fullmatch(r"<sip:sbth-[0-9a-f]+@203\.0\.113\.1:5060;transport=udp>", contact)
    assert header(ok, "Record-Route") == [] and header(ok, "Server") == []
    assert all(leaks(d) == [] for d in seen), [leaks(d) for d in seen]
    target = contact[1:-1]
    # The carrier's ACK and BYE go to the router's Contact and reach the node's.
    ack = invite(method="ACK", via="192.0.2.10:5070", branch="z9hG4bK-ack", to_tag="uas1",
                 ruri=target, body="")  # fmt: skip
    [fack] = to(p.receive(ack, "udp", CARRIER, None, 0.2), NODE)
    assert start_line(fack) == "ACK sip:uas@10.0.0.5:5081 SIP/2.0"
    # The node puts the call on hold: its re-INVITE reaches the carrier with only the
    # router in Via and Contact; the carrier's answer comes back with the node's Vias.
    reinv = (
        invite(
            via="10.0.0.5:5081",
            branch="z9hG4bK-node-re",
            to_tag="from1",
            cseq=7,
            ruri="sip:alice@192.0.2.10:5070",
            route="<sip:203.0.113.1:5060;transport=udp;lr>",
        )
        .replace(b"Contact: <sip:alice@10.0.0.5:5081>", b"Contact: <sip:node@10.0.0.5:5081>")
        .replace(b"Content-Length", b"User-Agent: Switchboard\r\nContent-Length", 1)
    )
    out = p.receive(reinv, "udp", NODE, None, 1.0)
    [to_carrier] = [d for d in to(out, CARRIER) if d.startswith(b"INVITE")]
    assert leaks(to_carrier) == [], to_carrier
    assert len(header(to_carrier, "Via")) == 1
    assert header(to_carrier, "Contact") == [contact]
    answer = response_to(to_carrier, 200, contact="192.0.2.10:5070")
    back = to(p.receive(answer, "udp", CARRIER, None, 1.1), NODE)
    assert [start_line(d) for d in back] == ["SIP/2.0 200 OK"]
    assert header(back[0], "Via")[0].startswith("SIP/2.0/UDP 10.0.0.5:5081;branch=z9hG4bK-node-re")
    # The carrier hangs up: BYE to the router's Contact, 200 from the node, hidden.
    bye = invite(method="BYE", via="192.0.2.10:5070", branch="z9hG4bK-bye", to_tag="uas1",
                 cseq=2, ruri=target, body="")  # fmt: skip
    [fbye] = to(p.receive(bye, "udp", CARRIER, None, 2.0), NODE)
    assert start_line(fbye) == "BYE sip:uas@10.0.0.5:5081 SIP/2.0"
    done = to(p.receive(node_answer(fbye, 200), "udp", NODE, None, 2.1), CARRIER)
    assert [start_line(d) for d in done] == ["SIP/2.0 200 OK"] and leaks(done[0]) == []
    assert p.hidden == {} and p.hidden_calls == {}


def sipp_answer(fwd: bytes, status: int, reason: str, product: bool) -> bytes:
    """A node's answer as SIPp writes it: both Vias joined on one line, a compact
    Contact, a body; with ``product`` also a Server line."""
    data = response_to(fwd, status, reason, contact="10.0.0.5:5081")
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    vias = [ln for ln in lines if ln.startswith(b"Via: ")]
    joined = b"Via: " + b", ".join(v[5:] for v in vias)
    out = [lines[0], joined] + [ln for ln in lines[1:] if not ln.startswith(b"Via: ")]
    out = [b"m:" + ln[8:] if ln.startswith(b"Contact:") else ln for ln in out]
    out = [ln for ln in out if not ln.startswith(b"Content-Length")]
    body = b"v=0\r\nc=IN IP4 198.51.100.7\r\n" if status == 200 else b""
    if product:
        out.append(b"Server: Switchboard")
    out.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


@pytest.mark.parametrize("product", [False, True])
def test_hidden_answers_are_kept_hidden_for_retransmissions(product: bool) -> None:
    """The carrier's answers are hidden from the parsed lines (no Server line) or from
    the bytes (with one) alike, and a retransmitted INVITE gets the hidden answer again
    (it once got the node's as it came: Contact, Record-Route and all)."""
    p = hiding_proxy()
    inv = invite(via="192.0.2.10:5070", ruri="sip:echo@203.0.113.1:5060")
    [fwd] = to(p.receive(inv, "udp", CARRIER, None, 0.0), NODE)
    seen: dict[int, bytes] = {}
    for status, reason in ((180, "Ringing"), (200, "OK")):
        answer = sipp_answer(fwd, status, reason, product)
        [up] = to(p.receive(answer, "udp", NODE, None, 0.1), CARRIER)
        assert leaks(up) == [] and header(up, "Record-Route") == [], up
        assert up.split(b"\r\n\r\n", 1)[1] == answer.split(b"\r\n\r\n", 1)[1]
        assert header(up, "Via") == ["SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-uac-1"]
        seen[status] = up
        again = to(p.receive(inv, "udp", CARRIER, None, 0.2), CARRIER)
        assert again == [up], again
    [contact] = header(seen[200], "Contact")
    target = contact[1:-1]
    # Both ways give the same bytes (the keys are the same: same secret, same counter).
    q = hiding_proxy()
    [qfwd] = to(q.receive(inv, "udp", CARRIER, None, 0.0), NODE)
    [other] = to(
        q.receive(sipp_answer(qfwd, 200, "OK", not product), "udp", NODE, None, 0.1), CARRIER
    )
    assert other == seen[200]
    # The carrier's ACK to the Contact as given, its BYE to it with a parameter added.
    ack = invite(method="ACK", via="192.0.2.10:5070", branch="z9hG4bK-ack", to_tag="uas1",
                 ruri=target, body="")  # fmt: skip
    [fack] = to(p.receive(ack, "udp", CARRIER, None, 0.3), NODE)
    assert start_line(fack) == "ACK sip:uas@10.0.0.5:5081 SIP/2.0"
    bye = invite(method="BYE", via="192.0.2.10:5070", branch="z9hG4bK-bye", to_tag="uas1",
                 cseq=2, ruri=target + ";x=1", body="")  # fmt: skip
    [fbye] = to(p.receive(bye, "udp", CARRIER, None, 1.0), NODE)
    assert start_line(fbye) == "BYE sip:uas@10.0.0.5:5081 SIP/2.0"
    # A Request-URI naming the key but not valid is answered as the core would (400).
    bad = bye.replace(target.encode(), target.encode() + b";x=%zz").replace(b"-bye", b"-bad")
    [answer] = to(p.receive(bad, "udp", CARRIER, None, 1.1), CARRIER)
    assert start_line(answer).startswith("SIP/2.0 400"), answer


def test_failed_call_forgets_its_hidden_dialog_and_hiding_is_switchable() -> None:
    p = hiding_proxy()
    out = p.receive(
        invite(via="192.0.2.10:5070", ruri="sip:echo@203.0.113.1:5060"), "udp", CARRIER, None, 0.0
    )
    [fwd] = to(out, NODE)
    busy = to(p.receive(node_answer(fwd, 486, "Busy Here"), "udp", NODE, None, 0.1), CARRIER)
    assert [start_line(d) for d in busy] == ["SIP/2.0 486 Busy Here"] and leaks(busy[0]) == []
    assert p.hidden == {} and p.hidden_calls == {}
    plain = Proxy(
        [Interface("udp", "203.0.113.1", 5060)],
        Dispatcher(parse_list("1 sip:10.0.0.5:5081\n"), algorithm=4, now=1e9),
        secret=b"test",
    )
    [fwd] = to(
        plain.receive(
            invite(via="192.0.2.10:5070", ruri="sip:echo@203.0.113.1:5060"),
            "udp",
            CARRIER,
            None,
            0.0,
        ),
        NODE,
    )
    [ok] = to(plain.receive(node_answer(fwd, 200), "udp", NODE, None, 0.1), CARRIER)
    assert header(ok, "Contact") == ["<sip:uas@10.0.0.5:5081>"]


@pytest.mark.parametrize(
    "line",
    [
        b"Contact: <sip:a@b>", b"contact : <sip:a@b>", b"m: <sip:a@b>", b"M:<sip:a@b>",
        b"Record-Route: <sip:r;lr>", b"record-route :<sip:r;lr>", b"Server: x/1.0",
        b"server :x", b"User-Agent: x", b"USER-AGENT : x", b"Via: SIP/2.0/UDP h",
        b"v: SIP/2.0/UDP h", b"via : SIP/2.0/UDP h", b"From: <sip:a@b>;tag=1",
        b"Route: <sip:r;lr>", b"Contact-X: y", b"Servers: y", b"v", b"Subject: Contact: m:",
    ],
)  # fmt: skip
def test_line_role_by_name_agrees_with_the_prefix_tests(line: bytes) -> None:
    """Topology hiding classifies a header line by its name, remembered per spelling:
    the same answer as the prefix tests, the second time (cached) as the first."""
    expected = (
        proxy_mod._CONTACT_LINE if proxy_mod._is_contact(line)
        else proxy_mod._RR_LINE if proxy_mod._is_rr(line)
        else proxy_mod._PRODUCT_LINE if proxy_mod._is_product(line)
        else proxy_mod._VIA_LINE if proxy_mod._is_via(line)
        else proxy_mod._OTHER
    )  # fmt: skip
    assert proxy_mod._role(line) == expected
    assert proxy_mod._role(line) == expected


def test_a_bye_retransmitted_after_its_transaction_ended_gets_the_same_200() -> None:
    """§17.2.2: the BYE's server transaction stays Completed for Timer J (32 s over UDP);
    a retransmission arriving after the router's 5 s wait_time is answered with the 200,
    not ``404 Not Here`` for a dialog whose hidden mapping is gone."""
    p = hiding_proxy()
    inv = invite(via="192.0.2.10:5070", ruri="sip:echo@203.0.113.1:5060")
    [fwd] = to(p.receive(inv, "udp", CARRIER, None, 0.0), NODE)
    [ok] = to(p.receive(node_answer(fwd, 200), "udp", NODE, None, 0.1), CARRIER)
    target = header(ok, "Contact")[0][1:-1]
    bye = invite(method="BYE", via="192.0.2.10:5070", branch="z9hG4bK-bye", to_tag="uas1",
                 cseq=2, ruri=target, body="")  # fmt: skip
    [fbye] = to(p.receive(bye, "udp", CARRIER, None, 2.0), NODE)
    [done] = to(p.receive(node_answer(fbye, 200), "udp", NODE, None, 2.1), CARRIER)
    p.handle_timer(10.0)  # wait_time over: the transaction is gone
    assert p.transaction_count == 0 and p.hidden_calls == {}
    again = p.receive(bye, "udp", CARRIER, None, 20.0)
    assert [(s.addr, s.data) for s in again] == [(CARRIER, done)]  # not forwarded, not 404
    # after Timer J the key is gone; the copy is then a request for a dialog that ended
    p.handle_timer(40.0)
    late = p.receive(bye, "udp", CARRIER, None, 40.0)
    assert [start_line(s.data) for s in late] == ["SIP/2.0 404 Not Here"]
