"""The proxy core (RFC 3261 §16) driven with bytes and a fake clock."""

from __future__ import annotations

import logging

import pytest

from switchboard.router.dispatcher import DestinationState, Dispatcher, ProbingConfig, parse_list
from switchboard.router.protection import Acl, Pike
from switchboard.router.proxy import Interface, Proxy, ProxySettings
from tests.support.proxy_core import M1, M2, UAC, make_proxy, one, to_uac
from tests.support.sipmsg import header, invite, response_to, start_line


def test_invite_gets_100_and_is_forwarded_with_via_and_record_route() -> None:
    p = make_proxy()
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    assert to_uac(out) == ["SIP/2.0 100 Trying"]
    fwd = one(out, M1)
    assert start_line(fwd) == "INVITE sip:echo@127.0.0.1:5060 SIP/2.0"  # $du: R-URI kept
    vias = header(fwd, "Via")
    assert vias[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
    assert vias[1] == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uac-1"
    assert header(fwd, "Record-Route") == ["<sip:127.0.0.1:5060;transport=udp;lr>"]
    assert header(fwd, "Max-Forwards") == ["69"]
    assert fwd.endswith(b"\r\n\r\nv=0\r\n")  # body untouched
    assert p.transaction_count == 1


def test_full_call_through_the_route_set() -> None:
    p = make_proxy()
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    fwd = one(out, M1)
    assert p.receive(response_to(fwd, 100, "Trying"), "udp", M1, None, 0.01) == []
    ringing = p.receive(response_to(fwd, 180, "Ringing"), "udp", M1, None, 0.02)
    assert to_uac(ringing) == ["SIP/2.0 180 Ringing"]
    assert len(header(ringing[0].data, "Via")) == 1  # own Via removed
    ok = p.receive(response_to(fwd, 200), "udp", M1, None, 0.03)
    assert to_uac(ok) == ["SIP/2.0 200 OK"]
    assert header(ok[0].data, "Record-Route") == ["<sip:127.0.0.1:5060;transport=udp;lr>"]
    assert p.dialog_count == 1
    assert p.dispatcher.find(1, "sip:127.0.0.1:5081").active_calls == 1  # type: ignore[union-attr]
    # the UAC sends ACK and BYE to the router with the route set; they reach the UAS contact
    route = "<sip:127.0.0.1:5060;transport=udp;lr>"
    ack = invite(
        method="ACK",
        branch="z9hG4bK-ack",
        ruri="sip:uas@127.0.0.1:5081",
        to_tag="uas1",
        route=route,
        body="",
    )
    sent = p.receive(ack, "udp", UAC, None, 0.04)
    a = one(sent, M1)
    assert start_line(a) == "ACK sip:uas@127.0.0.1:5081 SIP/2.0"
    assert header(a, "Route") == []
    assert len(header(a, "Via")) == 2
    bye = invite(
        method="BYE",
        branch="z9hG4bK-bye",
        ruri="sip:uas@127.0.0.1:5081",
        to_tag="uas1",
        route=route,
        cseq=2,
        body="",
    )
    sent = p.receive(bye, "udp", UAC, None, 5.0)
    b = one(sent, M1)
    assert header(b, "Record-Route") == []  # no Record-Route on in-dialog requests
    done = p.receive(response_to(b, 200), "udp", M1, None, 5.01)
    assert to_uac(done) == ["SIP/2.0 200 OK"]
    assert p.dialog_count == 0
    assert p.dispatcher.find(1, "sip:127.0.0.1:5081").active_calls == 0  # type: ignore[union-attr]
    assert p.stats.requests == {"INVITE": 1, "ACK": 1, "BYE": 1}
    p.handle_timer(20.0)
    assert p.transaction_count == 0


def test_calls_alternate_between_destinations() -> None:
    p = make_proxy()
    targets = []
    for i in range(4):
        out = p.receive(invite(call_id=f"c{i}", branch=f"z9hG4bK-{i}"), "udp", UAC, None, 0.0)
        targets += [s.addr for s in out if s.addr != UAC]
    assert targets == [M1, M2, M1, M2]


def test_retransmitted_invite_is_absorbed_and_answered_with_last_response() -> None:
    p = make_proxy()
    p.receive(invite(), "udp", UAC, None, 0.0)
    again = p.receive(invite(), "udp", UAC, None, 0.5)
    assert [(s.addr, start_line(s.data)) for s in again] == [(UAC, "SIP/2.0 100 Trying")]
    assert p.stats.retransmissions == 1


def test_udp_invite_is_retransmitted_downstream_until_answered() -> None:
    p = make_proxy(settings=ProxySettings(failover_timeout=10.0))
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    assert p.handle_timer(0.49) == []
    assert [s.data for s in p.handle_timer(0.5)] == [fwd]  # Timer A = T1
    assert [s.data for s in p.handle_timer(1.5)] == [fwd]  # then 2·T1
    p.receive(response_to(fwd, 100, "Trying"), "udp", M1, None, 1.6)
    assert p.handle_timer(3.5) == []


def test_failover_on_503_goes_to_next_destination_with_new_branch() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(response_to(fwd1, 503, "Service Unavailable"), "udp", M1, None, 0.01)
    ack = one(out, M1)
    assert start_line(ack).startswith("ACK ")
    assert header(ack, "Via")[0] == header(fwd1, "Via")[0]  # hop-by-hop ACK, same branch
    assert header(ack, "To")[0].endswith("tag=uas1")
    fwd2 = one(out, M2)
    assert header(fwd2, "Call-ID") == ["call-1@carrier"]
    assert header(fwd2, "Via")[0] != header(fwd1, "Via")[0]
    assert to_uac(out) == []  # the caller sees nothing of the failed branch
    ok = p.receive(response_to(fwd2, 200), "udp", M2, None, 0.02)
    assert to_uac(ok) == ["SIP/2.0 200 OK"]
    assert p.stats.failovers == 1


def test_failover_on_timeout_counts_toward_probing() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.handle_timer(2.0)  # failover_timeout, after retransmissions at 0.5 and 1.5
    fwd2 = one(out, M2)
    assert fwd2 != fwd1
    d1 = p.dispatcher.find(1, "sip:127.0.0.1:5081")
    assert d1 is not None and d1.state is DestinationState.TRYING and d1.timeouts == 1
    assert d1.active_calls == 0
    assert p.dispatcher.find(1, "sip:127.0.0.1:5082").active_calls == 1  # type: ignore[union-attr]
    # the dead branch waking up later is cancelled, not forwarded
    late = p.receive(response_to(fwd1, 180, "Ringing"), "udp", M1, None, 2.5)
    assert [start_line(s.data).split()[0] for s in late] == ["CANCEL"]


def test_all_destinations_busy_gives_one_500() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(response_to(fwd1, 503, "Busy"), "udp", M1, None, 0.01)
    fwd2 = one(out, M2)
    out = p.receive(response_to(fwd2, 503, "Busy"), "udp", M2, None, 0.02)
    assert to_uac(out) == ["SIP/2.0 500 Server Internal Error"]  # §16.7: a lone 503 → 500
    # the final is retransmitted upstream (Timer G) until the caller ACKs it
    assert to_uac(p.handle_timer(0.52)) == ["SIP/2.0 500 Server Internal Error"]
    ack = invite(method="ACK", body="")
    assert p.receive(ack, "udp", UAC, None, 0.6) == []
    assert to_uac(p.handle_timer(2.0)) == []


def test_non_failover_code_is_relayed_at_once() -> None:
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(response_to(fwd1, 486, "Busy Here"), "udp", M1, None, 0.01)
    assert to_uac(out) == ["SIP/2.0 486 Busy Here"]
    assert p.stats.failovers == 0


def test_no_destination_gives_503_with_reason_and_retry_after() -> None:
    p = make_proxy("1 sip:127.0.0.1:5081 4\n")
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    assert to_uac(out) == ["SIP/2.0 503 No Media Server Available"]
    assert header(out[0].data, "Retry-After") == ["5"]
    assert header(out[0].data, "To")[0].startswith("<sip:echo@127.0.0.1:5060>;tag=")


def test_acl_rejects_new_calls_from_unknown_sources() -> None:
    p = make_proxy(acl=Acl(["127.0.0.1"]))
    src = ("127.0.0.2", 5070)
    out = p.receive(invite(via="127.0.0.2:5070"), "udp", src, None, 0.0)
    assert [start_line(s.data) for s in out] == ["SIP/2.0 403 Forbidden"]
    assert out[0].addr == src
    assert p.stats.acl_rejects == 1
    assert p.transaction_count == 0


def test_pike_blocks_one_source_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    p = make_proxy(pike=Pike(sampling_time_unit=2, reqs_density_per_unit=3, ban_seconds=30))
    flood = ("127.0.0.3", 5070)
    codes = []
    with caplog.at_level(logging.WARNING):
        for i in range(40):
            out = p.receive(
                invite(call_id=f"f{i}", branch=f"z9hG4bK-f{i}", via="127.0.0.3:5070"),
                "udp",
                flood,
                None,
                i * 0.01,
            )
            codes.append(tuple(start_line(s.data) for s in out if s.addr == flood))
    assert codes[:3] == [("SIP/2.0 100 Trying",)] * 3
    assert codes[3] == ("SIP/2.0 503 Too Many Requests",)
    assert codes[31:] == [()] * 9  # silently dropped above 10 × density
    assert [r.getMessage() for r in caplog.records if "RATE LIMIT" in r.getMessage()] == [
        "RATE LIMIT: 127.0.0.3"
    ]
    ok = p.receive(invite(call_id="good"), "udp", UAC, None, 0.5)
    assert to_uac(ok) == ["SIP/2.0 100 Trying"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"max_forwards": "0"}, "483 Too Many Hops"),
        ({"extra": "Proxy-Require: foo"}, "420 Bad Extension"),
        ({"ruri": "tel:+15551234"}, "416 Unsupported URI Scheme"),
        ({"max_forwards": "abc"}, "400 Bad Max-Forwards"),
    ],
)
def test_validation(kwargs: dict, status: str) -> None:
    p = make_proxy()
    out = p.receive(invite(**kwargs), "udp", UAC, None, 0.0)
    assert to_uac(out) == [f"SIP/2.0 {status}"]
    if status.startswith("420"):
        assert header(out[0].data, "Unsupported") == ["foo"]


def test_missing_max_forwards_gets_70() -> None:
    p = make_proxy()
    fwd = one(p.receive(invite(max_forwards=None), "udp", UAC, None, 0.0), M1)
    assert header(fwd, "Max-Forwards") == ["70"]


def test_loop_is_detected() -> None:
    p = make_proxy("1 sip:127.0.0.1:5060\n")  # misconfigured: the router points at itself
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), ("127.0.0.1", 5060))
    out = p.receive(fwd, "udp", ("127.0.0.1", 5060), None, 0.01)
    assert [start_line(s.data) for s in out] == ["SIP/2.0 482 Loop Detected"]


def test_malformed_request_gets_400_and_garbage_is_dropped() -> None:
    p = make_proxy()
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    out = p.receive(bad, "udp", UAC, None, 0.0)
    assert to_uac(out) == ["SIP/2.0 400 Bad CSeq"]
    truncated = invite(body="v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n")[:-10]
    assert to_uac(p.receive(truncated, "udp", UAC, None, 0.0)) == ["SIP/2.0 400 Truncated Body"]
    assert p.receive(b"\x00\xff garbage", "udp", UAC, None, 0.0) == []
    assert p.receive(b"X" * 70000, "udp", UAC, None, 0.0) == []
    assert p.receive(b"\r\n\r\n", "udp", UAC, None, 0.0) == []
    assert p.stats.bad_messages == 4
    assert p.transaction_count == 0


def test_rport_and_received() -> None:
    p = make_proxy()
    nat = ("127.0.0.9", 40000)
    msg = invite().replace(b"branch=z9hG4bK-uac-1", b"branch=z9hG4bK-uac-1;rport")
    out = p.receive(msg, "udp", nat, None, 0.0)
    assert [s.addr for s in out if s.addr != M1] == [nat]  # responses to the real source
    fwd = one(out, M1)
    assert (
        header(fwd, "Via")[1]
        == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uac-1;rport=40000;received=127.0.0.9"
    )


def test_cancel_before_answer() -> None:
    p = make_proxy()
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    p.receive(response_to(fwd, 180, "Ringing"), "udp", M1, None, 0.01)
    cancel = invite(method="CANCEL", body="")
    out = p.receive(cancel, "udp", UAC, None, 0.1)
    assert to_uac(out) == ["SIP/2.0 200 OK"]
    c = one(out, M1)
    assert start_line(c) == "CANCEL sip:echo@127.0.0.1:5060 SIP/2.0"
    assert header(c, "Via") == header(fwd, "Via")[:1]  # §9.1: same branch as the INVITE
    assert header(c, "CSeq") == ["1 CANCEL"]
    assert p.receive(response_to(c, 200), "udp", M1, None, 0.11) == []
    out = p.receive(response_to(fwd, 487, "Request Terminated"), "udp", M1, None, 0.12)
    assert to_uac(out) == ["SIP/2.0 487 Request Terminated"]
    assert [start_line(s.data).split()[0] for s in out if s.addr == M1] == ["ACK"]
    assert p.stats.failovers == 0  # a cancelled call never fails over


def test_cancel_before_any_provisional_waits_for_one() -> None:
    p = make_proxy()
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(invite(method="CANCEL", body=""), "udp", UAC, None, 0.01)
    assert to_uac(out) == ["SIP/2.0 200 OK"] and [s for s in out if s.addr == M1] == []
    out = p.receive(response_to(fwd, 100, "Trying"), "udp", M1, None, 0.02)
    assert [start_line(s.data) for s in out] == ["CANCEL sip:echo@127.0.0.1:5060 SIP/2.0"]


def test_cancel_of_unanswered_branch_ends_with_487() -> None:
    p = make_proxy()
    p.receive(invite(), "udp", UAC, None, 0.0)
    p.receive(invite(method="CANCEL", body=""), "udp", UAC, None, 0.01)
    out = p.handle_timer(2.0)
    assert to_uac(out) == ["SIP/2.0 487 Request Terminated"]
    assert [s.addr for s in out if s.addr == M2] == []  # no failover after CANCEL


def test_unmatched_cancel_to_a_rotating_dispatcher_gets_481() -> None:
    # round-robin cannot say where the INVITE went: no stateless target (§16.11)
    p = make_proxy()
    out = p.receive(invite(method="CANCEL", body=""), "udp", UAC, None, 0.0)
    assert to_uac(out) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]


def test_unmatched_cancel_is_forwarded_statelessly_by_call_id_hash() -> None:
    # §16.10: no response context → statelessly forward; alg 0 picks the INVITE's node
    p = make_proxy(algorithm=0)
    call = "ha-peer-call@carrier"
    target = p.dispatcher.select(1, call)[0].address
    cancel = invite(method="CANCEL", body="", call_id=call)
    out = p.receive(cancel, "udp", UAC, None, 0.0)
    assert to_uac(out) == [] and len(out) == 1 and out[0].addr == target
    fwd = out[0].data
    assert start_line(fwd) == "CANCEL sip:echo@127.0.0.1:5060 SIP/2.0"
    assert header(fwd, "Max-Forwards") == ["69"]
    assert len(header(fwd, "Via")) == 2 and p.transaction_count == 0  # stateless
    again = p.receive(cancel, "udp", UAC, None, 0.5)  # retransmission: same branch
    assert header(again[0].data, "Via") == header(fwd, "Via")
    # the node's answer (481 here: it never saw this INVITE) goes back by the Via
    back = p.receive(response_to(fwd, 481, "Call/Transaction Does Not Exist"), "udp",
                     target, None, 0.6)  # fmt: skip
    assert to_uac(back) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]


def test_unmatched_cancel_with_a_route_is_forwarded_and_acl_applies() -> None:
    p = make_proxy(acl=Acl(["127.0.0.0/8"]))
    cancel = invite(method="CANCEL", body="", ruri="sip:bob@10.9.9.9:5070",
                    route="<sip:127.0.0.1:5060;lr>")  # fmt: skip
    out = p.receive(cancel, "udp", UAC, None, 0.0)
    assert [(s.addr, start_line(s.data)) for s in out] == [
        (("10.9.9.9", 5070), "CANCEL sip:bob@10.9.9.9:5070 SIP/2.0")
    ]
    assert header(out[0].data, "Route") == []  # our own Route entry removed (§16.4)
    stranger = p.receive(cancel, "udp", ("192.0.2.7", 5060), None, 0.1)
    assert [start_line(s.data) for s in stranger] == ["SIP/2.0 403 Forbidden"]


def test_draining_refuses_new_invites_but_not_in_dialog_requests() -> None:
    p = make_proxy()
    p.draining = True
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    assert to_uac(out) == ["SIP/2.0 503 Shutting Down"]
    bye = invite(
        method="BYE",
        ruri="sip:uas@127.0.0.1:5081",
        to_tag="t",
        route="<sip:127.0.0.1:5060;lr>",
        body="",
    )
    assert start_line(one(p.receive(bye, "udp", UAC, None, 0.0), M1)).startswith("BYE")


def test_udp_caller_to_tcp_media_node_double_record_route() -> None:
    p = make_proxy("1 sip:127.0.0.1:5081;transport=tcp\n")
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    s = next(s for s in out if s.addr == M1)
    assert s.transport == "tcp"
    assert header(s.data, "Via")[0].startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=")
    assert header(s.data, "Record-Route") == [
        "<sip:127.0.0.1:5060;transport=tcp;lr>",
        "<sip:127.0.0.1:5060;transport=udp;lr>",
    ]
    # a BYE from the media node (TCP) to the caller (UDP) follows the route set
    route = "<sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;transport=udp;lr>"
    bye = invite(
        method="BYE",
        ruri="sip:alice@127.0.0.1:5070",
        via="127.0.0.1:5081",
        to_tag="t",
        route=route,
        body="",
    )
    bye = bye.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    out = p.receive(bye, "tcp", ("127.0.0.1", 40001), "conn-1", 1.0)
    fwd = next(s for s in out if s.addr == UAC)
    assert fwd.transport == "udp" and header(fwd.data, "Route") == []
    resp = p.receive(response_to(fwd.data, 200), "udp", UAC, None, 1.01)
    assert [(r.transport, r.conn, start_line(r.data)) for r in resp] == [
        ("tcp", "conn-1", "SIP/2.0 200 OK")
    ]


def test_transport_error_fails_over() -> None:
    p = make_proxy()
    out = p.receive(invite(), "udp", UAC, None, 0.0)
    branch = next(s.branch for s in out if s.addr == M1)
    out = p.transport_error(branch, 0.01)
    assert [s.addr for s in out] == [M2]


def test_probing_sends_options_and_marks_destinations() -> None:
    p = make_proxy()
    p.dispatcher._next_round = 0.0
    out = p.handle_timer(0.0)
    assert sorted(s.addr for s in out) == [M1, M2]
    opt = one(out, M1)
    assert start_line(opt) == "OPTIONS sip:127.0.0.1:5081 SIP/2.0"
    p.receive(response_to(opt, 200), "udp", M1, None, 0.003)
    p.handle_timer(1.0)  # M2 never answered
    again = one(p.handle_timer(5.0), M1)
    p.receive(response_to(again, 200), "udp", M1, None, 5.003)
    p.handle_timer(6.0)
    d1, d2 = p.dispatcher.destinations()
    assert d1.state is DestinationState.ACTIVE and d1.latency_ms == pytest.approx(3.0)
    assert d2.state is DestinationState.INACTIVE
    out = p.receive(invite(), "udp", UAC, None, 6.5)
    assert [s.addr for s in out if s.addr != UAC] == [M1]


def test_late_2xx_without_transaction_is_forwarded_statelessly() -> None:
    p = make_proxy()
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    ok = response_to(fwd, 200)
    p.receive(ok, "udp", M1, None, 0.01)
    p.handle_timer(40.0)  # transaction gone
    assert p.transaction_count == 0
    again = p.receive(ok, "udp", M1, None, 40.1)
    assert [(s.addr, start_line(s.data)) for s in again] == [(UAC, "SIP/2.0 200 OK")]
    # a response that does not carry our Via on top is dropped
    assert p.receive(response_to(invite(), 200), "udp", M1, None, 40.2) == []


def test_probe_answer_carries_the_nodes_call_count_for_call_load() -> None:
    p = make_proxy(algorithm=10)
    p.dispatcher._next_round = 0.0
    out = p.handle_timer(0.0)
    for addr, calls in ((M1, "7"), (M2, "0")):
        ok = response_to(one(out, addr), 200).replace(
            b"Content-Length: 0", f"X-Switchboard-Calls: {calls}\r\nContent-Length: 0".encode()
        )
        p.receive(ok, "udp", addr, None, 0.003)
    d1, d2 = p.dispatcher.destinations()
    assert (d1.reported_calls, d1.load, d2.load) == (7, 7, 0)
    # the node with 7 calls from elsewhere is not chosen until the other catches up
    targets = [
        next(s.addr for s in p.receive(invite(call_id=f"c{i}", branch=f"z9hG4bK-c{i}"),
                                       "udp", UAC, None, 1.0) if s.addr != UAC)
        for i in range(8)
    ]  # fmt: skip
    assert targets[:7] == [M2] * 7


def test_options_to_the_router_itself_is_answered() -> None:
    p = make_proxy()
    msg = invite(method="OPTIONS", ruri="sip:127.0.0.1:5060", body="")
    assert to_uac(p.receive(msg, "udp", UAC, None, 0.0)) == ["SIP/2.0 200 OK"]


def test_call_load_released_on_failure_and_bye() -> None:
    p = make_proxy("1 sip:127.0.0.1:5081 0 0 maxload=1\n", algorithm=10)
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    full = p.receive(invite(call_id="c2", branch="z9hG4bK-2"), "udp", UAC, None, 0.0)
    assert to_uac(full) == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 503 No Media Server Available",
    ] or to_uac(full) == ["SIP/2.0 503 No Media Server Available"]
    p.receive(response_to(fwd, 486, "Busy Here"), "udp", M1, None, 0.1)
    again = p.receive(invite(call_id="c3", branch="z9hG4bK-3"), "udp", UAC, None, 0.2)
    assert [s.addr for s in again if s.addr != UAC] == [M1]


def test_timer_c_cancels_a_branch_that_rings_forever() -> None:
    p = make_proxy("1 sip:127.0.0.1:5081\n", settings=ProxySettings(timer_c=180.0))
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    p.receive(response_to(fwd, 180, "Ringing"), "udp", M1, None, 0.1)
    p.handle_timer(100.0)
    p.receive(response_to(fwd, 183, "Session Progress"), "udp", M1, None, 100.0)  # resets C
    assert [s for s in p.handle_timer(181.0) if s.addr == M1] == []
    out = p.handle_timer(281.0)
    assert [start_line(s.data).split()[0] for s in out if s.addr == M1] == ["CANCEL"]
    assert to_uac(out) == ["SIP/2.0 408 Request Timeout"]


def test_an_answered_call_clears_earlier_silences() -> None:
    # probing_threshold=2 here: one silence, then an answered call, then one more
    # silence must leave the destination selectable (failures are consecutive only).
    p = make_proxy("1 sip:127.0.0.1:5081\n1 sip:127.0.0.1:5082\n")
    d1 = p.dispatcher.find(1, "sip:127.0.0.1:5081")
    assert d1 is not None
    p.receive(invite(call_id="a", branch="z9hG4bK-a"), "udp", UAC, None, 0.0)  # → M1, silent
    p.handle_timer(2.0)
    assert d1.state is DestinationState.TRYING and d1.failures == 1
    p.receive(invite(call_id="b", branch="z9hG4bK-b"), "udp", UAC, None, 3.0)  # → M2
    out = p.receive(invite(call_id="c", branch="z9hG4bK-c"), "udp", UAC, None, 3.0)
    fwd = next(s.data for s in out if s.addr == M1)
    p.receive(response_to(fwd, 180, "Ringing"), "udp", M1, None, 3.01)
    assert d1.state is DestinationState.ACTIVE and d1.failures == 0


def test_invented_methods_are_counted_as_other() -> None:
    p = make_proxy()
    for i in range(50):
        p.receive(invite(method=f"X{i}", branch=f"z9hG4bK-x{i}", body=""), "udp", UAC, None, 0.0)
    assert p.stats.requests == {"OTHER": 50}


def test_tls_caller_is_reached_back_over_its_connection_by_contact_alias() -> None:
    p = Proxy(
        [Interface("udp", "127.0.0.1", 5060), Interface("tls", "127.0.0.1", 5061)],
        Dispatcher(parse_list("1 sip:127.0.0.1:5081\n"), algorithm=4, now=1e9),
        secret=b"test",
    )
    conn = object()
    caller = ("127.0.0.1", 40123)  # the phone's ephemeral TLS source port
    out = p.receive(invite(), "tls", caller, conn, 0.0)
    fwd = one(out, M1)
    assert header(fwd, "Contact") == ["<sip:alice@127.0.0.1:5070;alias=127.0.0.1~40123~tls>"]
    # the node's BYE towards that Contact goes to the connection, alias removed
    bye = invite(
        method="BYE",
        branch="z9hG4bK-nbye",
        via="127.0.0.1:5081",
        to_tag="t1",
        cseq=2,
        ruri="sip:alice@127.0.0.1:5070;alias=127.0.0.1~40123~tls",
        route="<sip:127.0.0.1:5060;transport=udp;lr>",
    )
    out = p.receive(bye, "udp", M1, None, 1.0)
    [sent] = [s for s in out if s.data.startswith(b"BYE ")]
    assert sent.transport == "tls" and sent.addr == caller
    assert start_line(sent.data) == "BYE sip:alice@127.0.0.1:5070 SIP/2.0"


def test_record_route_names_the_floating_address_and_the_peer_router_routes_by_it() -> None:
    """[router] record_route_host: two routers behind one floating address. Record-Route
    names the address, not the router; the other router takes a Route naming it as its
    own, so a BYE after a failover reaches the node through whichever router holds it."""
    vip = "172.28.0.100"

    def router(own: str) -> Proxy:
        d = Dispatcher(
            parse_list("1 sip:127.0.0.1:5081\n"),
            algorithm=4,
            probing=ProbingConfig(
                ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
            ),
            now=1e9,
        )
        iface = Interface("udp", own, 5060, rr_host=vip)
        return Proxy([iface], d, secret=b"test", aliases=((vip, 5060),))

    first, second = router("172.28.0.11"), router("172.28.0.12")
    # the carrier calls the floating address: the router holding it dispatches the call
    fwd = one(first.receive(invite(ruri=f"sip:echo@{vip}:5060"), "udp", UAC, None, 0.0), M1)
    assert header(fwd, "Record-Route") == [f"<sip:{vip}:5060;transport=udp;lr>"]
    assert header(fwd, "Via")[0].startswith("SIP/2.0/UDP 172.28.0.11:5060;")  # Via: its own
    bye = invite(
        method="BYE",
        branch="z9hG4bK-bye",
        ruri="sip:uas@127.0.0.1:5081",
        to_tag="uas1",
        route=f"<sip:{vip}:5060;transport=udp;lr>",
        cseq=2,
        body="",
    )
    b = one(second.receive(bye, "udp", UAC, None, 5.0), M1)
    assert start_line(b) == "BYE sip:uas@127.0.0.1:5081 SIP/2.0"
    assert header(b, "Route") == []  # its own Route entry taken off
    assert header(b, "Via")[0].startswith("SIP/2.0/UDP 172.28.0.12:5060;")


def test_via_names_the_floating_address_and_the_peer_forwards_a_setup_response() -> None:
    """[router] via_host: the Via of a forwarded INVITE names the floating address, so
    when the router dies with the call in setup, the node's 200 reaches the router that
    took the address over; it has no transaction and forwards the 200 statelessly by the
    next Via to the carrier (RFC 3261 §16.11). The node's probes still name the router's
    own address (their answers must come back to the router that asked)."""
    vip, vip_b = "172.28.0.100", "172.28.0.101"

    def router(own: str, via_host: str) -> Proxy:
        d = Dispatcher(
            parse_list("1 sip:127.0.0.1:5081\n"),
            algorithm=4,
            probing=ProbingConfig(
                ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
            ),
            now=0.0,
        )
        iface = Interface("udp", own, 5060, rr_host=vip, via_host=via_host)
        # active-active: each names the address it holds; both are each router's own
        return Proxy([iface], d, secret=own.encode(), aliases=((vip, 5060), (vip_b, 5060)))

    first, second = router("172.28.0.11", vip), router("172.28.0.12", vip_b)
    fwd = one(first.receive(invite(ruri=f"sip:echo@{vip}:5060"), "udp", UAC, None, 0.0), M1)
    assert header(fwd, "Via")[0].startswith(f"SIP/2.0/UDP {vip}:5060;branch=z9hG4bK")
    # the first router dies; the node's 180 and 200 arrive at the second one
    for status, reason in ((180, "Ringing"), (200, "OK")):
        out = second.receive(response_to(fwd, status, reason), "udp", M1, None, 1.0)
        assert [(s.addr, start_line(s.data)) for s in out] == [(UAC, f"SIP/2.0 {status} {reason}")]
        assert header(out[0].data, "Via") == ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uac-1"]
    assert second.transaction_count == 0
    # a response whose top Via is not a router's own is dropped, not relayed
    stranger = response_to(fwd, 200).replace(vip.encode() + b":5060", b"10.9.9.9:5060", 1)
    assert second.receive(stranger, "udp", M1, None, 1.1) == []
    # its own calls name its own floating address
    own = one(
        second.receive(invite(call_id="c2", ruri=f"sip:echo@{vip_b}:5060"), "udp", UAC, None, 2.0),
        M1,
    )
    assert header(own, "Via")[0].startswith(f"SIP/2.0/UDP {vip_b}:5060;branch=z9hG4bK")
    # probes: the router's own address
    [probe] = [s for s in second.handle_timer(10.0) if s.data.startswith(b"OPTIONS ")]
    assert header(probe.data, "Via")[0].startswith("SIP/2.0/UDP 172.28.0.12:5060;")
