"""A media node that answers after the router gave it up (RFC 3261 §9.1, §16.7, §16.10).

A node restarted after a crash reads the INVITE retransmission queued for it and answers
it while the router, its ``failover_timeout`` expired, has sent the call to the other
node: the late branch is cancelled (CANCEL retransmitted until answered), and a 2xx on it
is ACKed and ended with BYE by the router itself, never forwarded to the caller."""

from __future__ import annotations

from switchboard.router.proxy import Proxy, Send
from tests.support.proxy_core import M1, M2, UAC, make_proxy, one, to_uac
from tests.support.sipmsg import header, invite, response_to, start_line


def methods(sends: list[Send], addr: tuple[str, int]) -> list[str]:
    return [start_line(s.data).split()[0] for s in sends if s.addr == addr]


def failed_over() -> tuple[Proxy, bytes]:
    """A call whose first node said nothing within failover_timeout (2 s) and that the
    second node answered."""
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    fwd2 = one(p.handle_timer(2.0), M2)
    ok = p.receive(response_to(fwd2, 200, to_tag="node2"), "udp", M2, None, 2.1)
    assert to_uac(ok) == ["SIP/2.0 200 OK"]
    return p, fwd1


def test_late_2xx_is_acked_and_ended_with_bye_not_forwarded() -> None:
    p, fwd1 = failed_over()
    late = response_to(fwd1, 200, to_tag="node1", contact="127.0.0.1:5081;transport=udp")
    out = p.receive(late, "udp", M1, None, 3.0)
    assert to_uac(out) == []  # the caller has its answer from node 2
    assert methods(out, M1) == ["ACK", "BYE"]
    ack, bye = (s.data for s in out)
    for req in (ack, bye):
        assert start_line(req).split()[1] == "sip:uas@127.0.0.1:5081;transport=udp"  # Contact
        assert header(req, "To") == header(late, "To")  # the late node's dialog
        assert header(req, "From") == header(fwd1, "From")
        assert header(req, "Call-ID") == ["call-1@carrier"]
        assert header(req, "Route") == []
    assert header(ack, "CSeq") == ["1 ACK"] and header(bye, "CSeq") == ["2 BYE"]
    assert header(ack, "Via")[0] != header(fwd1, "Via")[0]  # §17.1.1.3: ACK for 2xx is new
    assert header(bye, "Reason") == ['SIP;cause=200;text="Call completed elsewhere"']
    assert p.stats.late_answers_ended == 1
    # the node retransmits its 2xx (our ACK lost): ACKed again, no second BYE
    again = p.receive(late, "udp", M1, None, 3.5)
    assert [s.data for s in again] == [ack]
    # the BYE is retransmitted (Timer E) until answered, then no more
    assert [s.data for s in p.handle_timer(3.5)] == [bye]
    assert p.receive(response_to(bye, 200), "udp", M1, None, 3.6) == []
    assert methods(p.handle_timer(10.0), M1) == []
    assert p.stats.late_answers_ended == 1


def test_late_2xx_after_the_transaction_ended_is_still_ended_not_forwarded() -> None:
    p, fwd1 = failed_over()
    p.handle_timer(20.0)  # the winning transaction is long gone (wait_time 5 s)
    assert p.transaction_count == 0
    out = p.receive(response_to(fwd1, 200, to_tag="node1"), "udp", M1, None, 20.0)
    assert to_uac(out) == [] and methods(out, M1) == ["ACK", "BYE"]
    # an unanswered BYE is given up after Timer F
    bye = out[1].data
    assert [s.data for s in p.handle_timer(21.0)] == [bye]
    p.handle_timer(60.0)
    assert methods(p.handle_timer(70.0), M1) == []


def test_late_provisional_gets_a_cancel_retransmitted_until_answered() -> None:
    p, fwd1 = failed_over()
    out = p.receive(response_to(fwd1, 100, "Trying"), "udp", M1, None, 2.2)
    cancel = one(out, M1)
    assert start_line(cancel).startswith("CANCEL ")
    assert header(cancel, "Via") == header(fwd1, "Via")[:1]  # §9.1
    assert [s.data for s in p.handle_timer(2.7)] == [cancel]  # T1
    assert [s.data for s in p.handle_timer(3.7)] == [cancel]  # 2·T1
    assert [s.data for s in p.handle_timer(5.7)] == [cancel]  # doubling up to T2
    assert [s.data for s in p.handle_timer(9.7)] == [cancel]
    assert p.transaction_count == 0  # the winning transaction ended (wait_time 5 s)
    assert [s.data for s in p.handle_timer(13.7)] == [cancel]  # the CANCEL goes on
    assert p.receive(response_to(cancel, 200), "udp", M1, None, 12.0) == []
    assert p.handle_timer(30.0) == []
    # its 487 is ACKed hop by hop and never reaches the caller
    out = p.receive(
        response_to(fwd1, 487, "Request Terminated", to_tag="node1"), "udp", M1, None, 30.0
    )
    assert methods(out, M1) == ["ACK"] and to_uac(out) == []


def test_cancel_retransmissions_stop_at_timer_f_and_on_the_final() -> None:
    p, fwd1 = failed_over()
    p.receive(response_to(fwd1, 180, "Ringing"), "udp", M1, None, 2.2)
    p.receive(response_to(fwd1, 487, "Request Terminated"), "udp", M1, None, 2.4)
    assert methods(p.handle_timer(5.0), M1) == []  # the final came: no CANCEL again
    q, fwd = failed_over()
    q.receive(response_to(fwd, 180, "Ringing"), "udp", M1, None, 2.2)
    sent = [s for t in range(3, 60) for s in q.handle_timer(float(t)) if s.addr == M1]
    assert sent and all(start_line(s.data).startswith("CANCEL ") for s in sent)
    assert q.handle_timer(100.0) == []  # Timer F (32 s after the CANCEL): given up


def test_a_node_that_answers_in_time_is_not_affected() -> None:
    p = make_proxy()
    fwd = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(response_to(fwd, 200), "udp", M1, None, 0.5)
    assert to_uac(out) == ["SIP/2.0 200 OK"] and methods(out, M1) == []
    assert to_uac(p.receive(response_to(fwd, 200), "udp", M1, None, 0.6)) == ["SIP/2.0 200 OK"]
    assert p.stats.late_answers_ended == 0


def test_an_answered_invite_retransmitted_after_its_transaction_is_not_a_new_call() -> None:
    # RFC 6026 §7.1: a caller that missed the 100 and the 2xx retransmits its INVITE;
    # a copy arriving after the transaction ended (wait_time) must not be dispatched
    # again — the other node would answer the same call a second time
    p = make_proxy()
    inv = invite()
    fwd = one(p.receive(inv, "udp", UAC, None, 0.0), M1)
    assert to_uac(p.receive(response_to(fwd, 200), "udp", M1, None, 0.1)) == ["SIP/2.0 200 OK"]
    p.handle_timer(6.0)
    assert p.transaction_count == 0
    assert p.receive(inv, "udp", UAC, None, 7.5) == []  # absorbed: no node sees it
    # a new INVITE (another branch) of the same caller is a new transaction at once
    other = invite(branch="z9hG4bK-uac-2", call_id="call-2@carrier")
    assert to_uac(p.receive(other, "udp", UAC, None, 8.0)) == ["SIP/2.0 100 Trying"]
    assert p.receive(inv, "udp", UAC, None, 30.0) == []
    # past Timer L (64·T1 after the transaction ended) it is a request like any other
    late = p.receive(inv, "udp", UAC, None, 40.0)
    assert to_uac(late) == ["SIP/2.0 100 Trying"]


def test_a_2xx_after_the_branch_failed_is_ended_not_forwarded() -> None:
    # A node restarted after a crash hands a setup back (503: the router tries the other
    # node) and then reads the INVITE's retransmission as a new call and answers it: that
    # 2xx on a branch that already failed is ended by the router, never a second answer
    p = make_proxy()
    fwd1 = one(p.receive(invite(), "udp", UAC, None, 0.0), M1)
    out = p.receive(response_to(fwd1, 503, "Service Unavailable", to_tag="n1a"),
                    "udp", M1, None, 0.5)  # fmt: skip
    assert methods(out, M1) == ["ACK"]
    fwd2 = one(out, M2)
    late = response_to(fwd1, 200, to_tag="n1b", contact="127.0.0.1:5081;transport=udp")
    ended = p.receive(late, "udp", M1, None, 0.6)
    assert to_uac(ended) == [] and methods(ended, M1) == ["ACK", "BYE"]
    assert p.stats.late_answers_ended == 1
    ok = p.receive(response_to(fwd2, 200, to_tag="n2"), "udp", M2, None, 0.7)
    assert to_uac(ok) == ["SIP/2.0 200 OK"]  # the caller's one answer
