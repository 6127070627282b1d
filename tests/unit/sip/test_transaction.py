"""RFC 3261 §17 transactions driven by a fake clock: every timer, every retransmission
path, on UDP and TCP; matching rules of §17.1.3/§17.2.3 including RFC 2543."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.sip.errors import SipParseError
from switchboard.sip.message import Request, Response, make_response, parse_message
from switchboard.sip.timers import T1, T2, T4, TimerValues
from switchboard.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    AckReceived,
    Output,
    Peer,
    RequestReceived,
    ResponseReceived,
    State,
    Terminated,
    TimedOut,
    Transaction,
    TransactionLayer,
    TransactionStateError,
    Transmit,
    TransportFailed,
    response_peer,
    stamp_via,
)

UDP = Peer("UDP", "192.0.2.10", 5070)
TCP = Peer("TCP", "192.0.2.10", 40001)


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKnashds8",
    transport: str = "UDP",
    sent_by: str = "192.0.2.10:5070",
    cseq: int = 1,
    cseq_method: str | None = None,
    ruri: str = "sip:bob@biloxi.example.com",
    from_tag: str = "9fxced76sl",
    to_tag: str | None = None,
    call_id: str = "3848276298220188511@atlanta.example.com",
    extra: str = "",
) -> Request:
    to = "<sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob {to}\r\n"
        f"From: Alice <sip:alice@atlanta.example.com>;tag={from_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def reply(req: Request, status: int, to_tag: str | None = "8321234356") -> Response:
    """A response as it would arrive from the network (serialised and parsed again)."""
    msg = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(msg, Response)
    return msg


def sent(outputs: list[Output]) -> list[bytes]:
    return [o.data for o in outputs if isinstance(o, Transmit)]


def events(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if not isinstance(o, Transmit)]


def run_until(layer: TransactionLayer, until: float) -> list[tuple[float, list[Output]]]:
    """Advance the fake clock deadline by deadline, as the net adapter's timer does."""
    fired = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        fired.append((deadline, layer.handle_timer(deadline)))
    return fired


def transmit_times(fired: list[tuple[float, list[Output]]]) -> list[float]:
    return [t for t, outs in fired for _ in sent(outs)]


# --------------------------------------------------------------------------- tables


def test_tables_only_use_states_of_their_figure() -> None:
    allowed = {
        id(INVITE_CLIENT): {State.CALLING, State.PROCEEDING, State.COMPLETED, State.ACCEPTED},
        id(NON_INVITE_CLIENT): {State.TRYING, State.PROCEEDING, State.COMPLETED},
        id(INVITE_SERVER): {State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.ACCEPTED},
        id(NON_INVITE_SERVER): {State.TRYING, State.PROCEEDING, State.COMPLETED},
    }
    for table in (INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER):
        for (state, _), (nxt, _) in table.items():
            assert state in allowed[id(table)]
            assert nxt in allowed[id(table)] | {State.TERMINATED}


# --------------------------------------------------------------------------- INVITE client


def test_invite_client_udp_timer_a_doubles_until_timer_b_times_out() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, out = layer.send_request(inv, UDP, now=0.0)
    assert sent(out) == [inv.to_bytes()]
    assert layer.get_timer() == T1
    fired = run_until(layer, 100.0)
    # Timer A: T1, 2T1, 4T1, ... (no cap) until Timer B = 64*T1 (§17.1.1.2).
    assert transmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == inv.to_bytes() for _, outs in fired for data in sent(outs))
    last_time, last = fired[-1]
    assert last_time == 64 * T1
    assert [type(e) for e in events(last)] == [TimedOut, Terminated]
    assert events(last)[0] == TimedOut(txn, "B")
    assert txn.state is State.TERMINATED
    assert len(layer) == 0 and layer.get_timer() is None


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    ringing = reply(inv, 180)
    out = layer.receive(ringing, UDP, now=0.2)
    assert out == [ResponseReceived(ringing, txn, UDP)]
    assert txn.state is State.PROCEEDING
    assert layer.get_timer() is None  # no A, no B in Proceeding (Timer C is the proxy's)
    again = layer.receive(reply(inv, 183), UDP, now=0.3)
    assert [type(e) for e in again] == [ResponseReceived]


def test_invite_client_failure_response_is_acked_and_absorbed_until_timer_d() -> None:
    layer = TransactionLayer()
    inv = request(extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    busy = reply(inv, 486)
    out = layer.receive(busy, UDP, now=0.1)
    (ack_bytes,) = sent(out)
    assert events(out) == [ResponseReceived(busy, txn, UDP)]
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request)
    # §17.1.1.3: same R-URI, Call-ID, From, CSeq number; To of the response; one Via.
    assert ack.method == "ACK" and ack.uri == inv.uri
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.call_id == inv.call_id and ack.from_tag == inv.from_tag
    assert ack.to_tag == "8321234356"
    assert [v.branch for v in ack.vias] == ["z9hG4bKnashds8"]
    assert [str(r.uri) for r in ack.routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert txn.state is State.COMPLETED
    # A retransmitted 486 gets the same ACK again and is not passed up.
    again = layer.receive(reply(inv, 486), UDP, now=0.6)
    assert sent(again) == [ack_bytes] and events(again) == []
    fired = run_until(layer, 100.0)
    assert [(t, [type(e) for e in events(o)]) for t, o in fired] == [(0.1 + 32.0, [Terminated])]


def test_invite_client_2xx_goes_to_tu_every_time_until_timer_m() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    ok = reply(inv, 200)
    out = layer.receive(ok, UDP, now=0.1)
    # 2xx: no ACK from the transaction (the TU acks it, §13.2.2.4), passed up.
    assert out == [ResponseReceived(ok, txn, UDP)]
    assert txn.state is State.ACCEPTED
    # RFC 6026 §8.4: retransmitted 2xx are passed up too (the TU re-sends its ACK).
    assert layer.receive(reply(inv, 200), UDP, now=0.6)[0].transaction is txn
    fired = run_until(layer, 100.0)
    assert [(t, [type(e) for e in events(o)]) for t, o in fired] == [(0.1 + 64 * T1, [Terminated])]
    # After Timer M the 2xx is a stray: still delivered, without a transaction.
    late = layer.receive(reply(inv, 200), UDP, now=40.0)
    assert [(type(e), e.transaction) for e in late] == [(ResponseReceived, None)]


def test_invite_client_tcp_has_no_timer_a_and_zero_timer_d() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    txn, out = layer.send_request(inv, TCP, now=0.0)
    assert len(sent(out)) == 1
    assert layer.get_timer() == 64 * T1  # only Timer B
    out = layer.receive(reply(inv, 503), TCP, now=0.1)
    assert len(sent(out)) == 1  # the ACK
    assert [type(e) for e in events(out)] == [ResponseReceived, Terminated]
    assert txn.state is State.TERMINATED and layer.get_timer() is None


def test_invite_client_tcp_timer_b() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(transport="TCP"), TCP, now=10.0)
    fired = run_until(layer, 100.0)
    assert [(t, events(o)) for t, o in fired] == [
        (10.0 + 64 * T1, [TimedOut(txn, "B"), Terminated(txn)])
    ]
    assert transmit_times(fired) == []


def test_invite_client_transport_error_informs_tu() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(), UDP, now=0.0)
    out = layer.transport_failed(txn, now=0.01)
    assert out == [TransportFailed(txn), Terminated(txn)]
    assert layer.get_timer() is None and len(layer) == 0
    assert layer.transport_failed(txn, now=0.02) == []  # already gone: no-op


def test_configurable_timer_b_for_failover() -> None:
    layer = TransactionLayer(timers=TimerValues(timer_b=2.0))
    txn, _ = layer.send_request(request(), UDP, now=0.0)
    fired = run_until(layer, 10.0)
    assert transmit_times(fired) == [0.5, 1.5]
    assert fired[-1] == (2.0, [TimedOut(txn, "B"), Terminated(txn)])


# --------------------------------------------------------------------------- non-INVITE client


def test_non_invite_client_udp_timer_e_caps_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    txn, out = layer.send_request(opt, UDP, now=0.0)
    assert len(sent(out)) == 1
    fired = run_until(layer, 100.0)
    # Timer E: T1, 2T1, 4T1, then T2 (§17.1.2.2) until Timer F = 64*T1.
    assert transmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, [TimedOut(txn, "F"), Terminated(txn)])


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    opt = request("BYE")
    txn, _ = layer.send_request(opt, UDP, now=0.0)
    trying = reply(opt, 100, to_tag=None)
    assert layer.receive(trying, UDP, now=0.1) == [ResponseReceived(trying, txn, UDP)]
    assert txn.state is State.PROCEEDING
    fired = run_until(layer, 13.0)
    # E was armed for 0.5 s; once it fires in Proceeding it is reset to T2.
    assert transmit_times(fired) == [0.5, 0.5 + T2, 0.5 + 2 * T2, 0.5 + 3 * T2]
    ok = reply(opt, 200)
    out = layer.receive(ok, UDP, now=13.0)
    assert out == [ResponseReceived(ok, txn, UDP)]
    assert txn.state is State.COMPLETED


def test_non_invite_client_completed_absorbs_until_timer_k() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    txn, _ = layer.send_request(opt, UDP, now=0.0)
    layer.receive(reply(opt, 200), UDP, now=0.1)
    assert layer.get_timer() == pytest.approx(0.1 + T4)
    assert layer.receive(reply(opt, 200), UDP, now=1.0) == []  # retransmission absorbed
    fired = run_until(layer, 100.0)
    assert fired == [(pytest.approx(0.1 + T4), [Terminated(txn)])]


def test_non_invite_client_tcp_no_timer_e_and_zero_timer_k() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS", transport="TCP")
    txn, _ = layer.send_request(opt, TCP, now=0.0)
    assert layer.get_timer() == 64 * T1  # Timer F only
    ok = reply(opt, 404)
    assert layer.receive(ok, TCP, now=0.1) == [ResponseReceived(ok, txn, TCP), Terminated(txn)]
    assert len(layer) == 0


def test_non_invite_client_tcp_timer_f() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request("OPTIONS", transport="TCP"), TCP, now=0.0)
    assert run_until(layer, 100.0) == [(32.0, [TimedOut(txn, "F"), Terminated(txn)])]


# --------------------------------------------------------------------------- INVITE server


def test_invite_server_sends_trying_and_resends_last_provisional() -> None:
    layer = TransactionLayer()
    inv = request()
    out = layer.receive(inv, UDP, now=0.0)
    (trying,) = sent(out)
    assert trying.startswith(b"SIP/2.0 100 Trying\r\n")
    (new,) = events(out)
    assert isinstance(new, RequestReceived) and new.request is inv
    txn = new.transaction
    assert txn.state is State.PROCEEDING
    # A retransmitted INVITE is answered with the last provisional, not passed up.
    assert layer.receive(request(), UDP, now=0.5) == [Transmit(trying, UDP, txn)]
    ringing = make_response(inv, 180, to_tag="tt1")
    out = layer.send_response(txn, ringing, now=0.6)
    assert sent(out) == [ringing.to_bytes()]
    assert sent(layer.receive(request(), UDP, now=1.0)) == [ringing.to_bytes()]
    assert layer.get_timer() is None  # Proceeding runs no timer


def test_invite_server_failure_retransmitted_by_timer_g_until_timer_h() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    assert isinstance(new, RequestReceived)
    txn = new.transaction
    busy = make_response(inv, 486, to_tag="tt1")
    assert sent(layer.send_response(txn, busy, now=1.0)) == [busy.to_bytes()]
    assert txn.state is State.COMPLETED
    fired = run_until(layer, 100.0)
    # Timer G: T1 doubling up to T2 (§17.2.1) until Timer H = 64*T1 (no ACK).
    assert transmit_times(fired) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert fired[-1] == (33.0, [TimedOut(txn, "H"), Terminated(txn)])
    # An INVITE retransmission in Completed gets the final response again.


def test_invite_server_completed_resends_final_on_retransmitted_invite() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    busy = make_response(inv, 486, to_tag="tt1")
    layer.send_response(txn, busy, now=0.0)
    assert sent(layer.receive(request(), UDP, now=0.1)) == [busy.to_bytes()]


def test_a_request_answered_unseen_absorbs_its_retransmissions_and_ack() -> None:
    """An INVITE from an earlier life of the element (a restarted media node handing a
    setup back with 503): a server transaction the TU never sees, so the INVITE's
    retransmission read afterwards is answered 503 again, not delivered as a new call."""
    layer = TransactionLayer()
    inv = request()
    refused = make_response(inv, 503, to_tag="tt1")
    out = layer.answer_unseen(inv, UDP, refused, now=0.0)
    assert sent(out) == [refused.to_bytes()] and events(out) == []
    again = layer.receive(request(), UDP, now=0.2)
    assert sent(again) == [refused.to_bytes()] and events(again) == []  # no new call
    assert transmit_times(run_until(layer, 1.6)) == [0.5, 1.5]  # Timer G
    ack = request("ACK", to_tag="tt1", cseq_method="ACK")
    assert layer.receive(ack, UDP, now=1.7) == []  # §17.2.1: absorbed
    assert layer.answer_unseen(inv, UDP, refused, now=1.8) == []  # already answered
    assert [type(e) for _, outs in run_until(layer, 100.0) for e in outs] == [Terminated]


def test_invite_server_ack_confirms_and_is_absorbed_until_timer_i() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    layer.send_response(txn, make_response(inv, 404, to_tag="tt1"), now=0.0)
    ack = request("ACK", to_tag="tt1")  # same branch as the INVITE (§17.1.1.3)
    assert layer.receive(ack, UDP, now=0.2) == []  # absorbed, not passed up
    assert txn.state is State.CONFIRMED
    assert layer.get_timer() == pytest.approx(0.2 + T4)  # G and H stopped, I running
    assert layer.receive(request("ACK", to_tag="tt1"), UDP, now=1.0) == []
    assert run_until(layer, 100.0) == [(pytest.approx(0.2 + T4), [Terminated(txn)])]


def test_invite_server_tcp_no_timer_g_and_zero_timer_i() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request(transport="TCP")
    (new,) = layer.receive(inv, TCP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    layer.send_response(txn, make_response(inv, 480, to_tag="tt1"), now=0.0)
    assert layer.get_timer() == 64 * T1  # only H
    out = layer.receive(request("ACK", transport="TCP", to_tag="tt1"), TCP, now=0.1)
    assert out == [Terminated(txn)]


def test_invite_server_tcp_timer_h() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request(transport="TCP")
    (new,) = layer.receive(inv, TCP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    layer.send_response(txn, make_response(inv, 480, to_tag="tt1"), now=0.0)
    fired = run_until(layer, 100.0)
    assert fired == [(32.0, [TimedOut(txn, "H"), Terminated(txn)])]


def test_invite_server_2xx_accepted_passes_ack_and_terminates_on_timer_l() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    ok = make_response(inv, 200, to_tag="tt1")
    assert sent(layer.send_response(txn, ok, now=0.1)) == [ok.to_bytes()]
    assert txn.state is State.ACCEPTED
    # A proxy layer does not retransmit the 2xx itself; INVITE retransmissions absorbed.
    assert layer.get_timer() == pytest.approx(0.1 + 64 * T1)
    assert layer.receive(request(), UDP, now=0.5) == []
    # The ACK for a 2xx is a new transaction (new branch) but reaches the TU with it.
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="tt1")
    assert layer.receive(ack, UDP, now=0.6) == [AckReceived(ack, txn, UDP)]
    # The TU may hand down 2xx retransmissions while Accepted (RFC 6026 §8.7).
    assert len(sent(layer.send_response(txn, ok, now=0.7))) == 1
    assert run_until(layer, 100.0) == [(pytest.approx(0.1 + 64 * T1), [Terminated(txn)])]
    # Afterwards an ACK is a stray for the TU (a proxy forwards it statelessly).
    late = request("ACK", branch="z9hG4bKack2xx", to_tag="tt1")
    assert layer.receive(late, UDP, now=50.0) == [AckReceived(late, None, UDP)]


def test_uas_layer_retransmits_2xx_until_ack() -> None:
    layer = TransactionLayer(send_trying=False, retransmit_2xx=True)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    ok = make_response(inv, 200, to_tag="tt1")
    layer.send_response(txn, ok, now=0.0)
    fired = run_until(layer, 4.0)
    # §13.3.1.4: T1, doubling up to T2.
    assert transmit_times(fired) == [0.5, 1.5, 3.5]
    assert all(data == ok.to_bytes() for _, o in fired for data in sent(o))
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="tt1")
    assert layer.receive(ack, UDP, now=4.0) == [AckReceived(ack, txn, UDP)]
    fired = run_until(layer, 100.0)
    assert transmit_times(fired) == []  # retransmission stopped by the ACK
    assert fired == [(32.0, [Terminated(txn)])]


def test_uas_layer_reports_unacknowledged_2xx() -> None:
    layer = TransactionLayer(send_trying=False, retransmit_2xx=True)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    layer.send_response(txn, make_response(inv, 200, to_tag="tt1"), now=0.0)
    fired = run_until(layer, 100.0)
    assert transmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, [TimedOut(txn, "L"), Terminated(txn)])


def test_server_rejects_response_the_state_forbids() -> None:
    layer = TransactionLayer(send_trying=False)
    inv = request()
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    busy = make_response(inv, 486, to_tag="tt1")
    layer.send_response(txn, busy, now=0.0)
    with pytest.raises(TransactionStateError):
        layer.send_response(txn, make_response(inv, 200, to_tag="tt1"), now=0.1)
    assert txn.state is State.COMPLETED and txn.last_response is busy


def test_invite_server_transport_error() -> None:
    layer = TransactionLayer(send_trying=False)
    (new,) = layer.receive(request(), UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    assert layer.transport_failed(txn, now=0.1) == [TransportFailed(txn), Terminated(txn)]


# --------------------------------------------------------------------------- non-INVITE server


def test_non_invite_server_udp_absorbs_resends_and_waits_timer_j() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    out = layer.receive(opt, UDP, now=0.0)
    assert sent(out) == []  # no automatic 100 for non-INVITE (§16.2)
    txn = out[0].transaction  # type: ignore[union-attr]
    assert txn.state is State.TRYING
    assert layer.receive(request("OPTIONS"), UDP, now=0.3) == []  # Trying: discarded
    trying = make_response(opt, 100)
    layer.send_response(txn, trying, now=0.4)
    assert txn.state is State.PROCEEDING
    assert sent(layer.receive(request("OPTIONS"), UDP, now=0.5)) == [trying.to_bytes()]
    ok = make_response(opt, 200, to_tag="tt1")
    assert sent(layer.send_response(txn, ok, now=1.0)) == [ok.to_bytes()]
    assert sent(layer.receive(request("OPTIONS"), UDP, now=2.0)) == [ok.to_bytes()]
    # Further final responses from the TU are discarded in Completed (§17.2.2).
    assert layer.send_response(txn, make_response(opt, 500), now=2.5) == []
    assert run_until(layer, 100.0) == [(1.0 + 64 * T1, [Terminated(txn)])]


def test_non_invite_server_tcp_zero_timer_j() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS", transport="TCP")
    (new,) = layer.receive(opt, TCP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    ok = make_response(opt, 200, to_tag="tt1")
    out = layer.send_response(txn, ok, now=0.1)
    assert out == [Transmit(ok.to_bytes(), TCP, txn), Terminated(txn)]
    assert len(layer) == 0 and layer.get_timer() is None


# --------------------------------------------------------------------------- matching


def test_response_matches_by_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    inv = request()
    inv_txn, _ = layer.send_request(inv, UDP, now=0.0)
    cancel = request("CANCEL")  # same branch as the INVITE (§9.1)
    cancel_txn, _ = layer.send_request(cancel, UDP, now=0.1)
    ok_cancel = reply(cancel, 200)
    assert layer.receive(ok_cancel, UDP, 0.2) == [ResponseReceived(ok_cancel, cancel_txn, UDP)]
    assert inv_txn.state is State.CALLING  # the CANCEL's 200 did not touch the INVITE
    terminated = reply(inv, 487)
    out = layer.receive(terminated, UDP, 0.3)
    assert events(out) == [ResponseReceived(terminated, inv_txn, UDP)]
    other = reply(request(branch="z9hG4bKother"), 200)
    assert layer.receive(other, UDP, 0.4) == [ResponseReceived(other, None, UDP)]


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer(send_trying=False)
    (first,) = layer.receive(request(), UDP, now=0.0)
    # Same branch from a different sent-by: a different transaction.
    out = layer.receive(request(sent_by="192.0.2.99:5060"), UDP, now=0.1)
    assert [type(e) for e in out] == [RequestReceived]
    assert out[0].transaction is not first.transaction  # type: ignore[union-attr]
    # Same branch, CANCEL: its own transaction, which finds the INVITE (§9.2).
    cancel = request("CANCEL")
    (c,) = layer.receive(cancel, UDP, now=0.2)
    assert isinstance(c, RequestReceived) and c.transaction.method == "CANCEL"
    assert layer.find_invite_for_cancel(cancel) is first.transaction  # type: ignore[union-attr]
    assert layer.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKnone")) is None
    # sent-by compares host case-insensitively with the default port filled in.
    layer.receive(request("OPTIONS", sent_by="Host.Example"), UDP, now=0.3)
    assert layer.receive(request("OPTIONS", sent_by="host.example:5060"), UDP, now=0.4) == []


def test_rfc2543_matching_without_magic_cookie() -> None:
    layer = TransactionLayer(send_trying=False)
    old = dict(branch="1", sent_by="192.0.2.10:5060")
    inv = request(**old)  # type: ignore[arg-type]
    (new,) = layer.receive(inv, UDP, now=0.0)
    txn = new.transaction  # type: ignore[union-attr]
    busy = make_response(inv, 486, to_tag="2543tag")
    layer.send_response(txn, busy, now=0.0)
    # Retransmission: same R-URI, tags, Call-ID, CSeq, top Via -> the final again.
    assert sent(layer.receive(request(**old), UDP, now=0.1)) == [busy.to_bytes()]  # type: ignore[arg-type]
    # A different From tag is a different request.
    out = layer.receive(request(**old, from_tag="other"), UDP, now=0.2)  # type: ignore[arg-type]
    assert [type(e) for e in out] == [RequestReceived]
    # ACK with a To tag other than the response's does not match...
    stray = request("ACK", **old, to_tag="wrong")  # type: ignore[arg-type]
    assert layer.receive(stray, UDP, now=0.3) == [AckReceived(stray, None, UDP)]
    assert txn.state is State.COMPLETED
    # ...the ACK with the response's To tag does, and is absorbed.
    assert layer.receive(request("ACK", **old, to_tag="2543tag"), UDP, now=0.4) == []  # type: ignore[arg-type]
    assert txn.state is State.CONFIRMED


def test_rfc2543_matching_without_branch() -> None:
    layer = TransactionLayer(send_trying=False)
    text = (
        b"OPTIONS sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10\r\n"
        b"To: <sip:bob@biloxi.example.com>\r\nFrom: <sip:a@b>;tag=x\r\n"
        b"Call-ID: c1\r\nCSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    (new,) = layer.receive(parse_message(text), UDP, now=0.0)
    assert isinstance(new, RequestReceived)
    assert layer.receive(parse_message(text), UDP, now=0.1) == []
    other = parse_message(text.replace(b"5 OPTIONS", b"6 OPTIONS"))
    assert [type(e) for e in layer.receive(other, UDP, now=0.2)] == [RequestReceived]


def test_bare_magic_cookie_branch_uses_rfc2543_matching() -> None:
    # RFC 4475 §3.2.1: "z9hG4bK" alone identifies nothing; two different requests
    # carrying it must not be taken for retransmissions of each other.
    layer = TransactionLayer(send_trying=False)
    first = layer.receive(request("OPTIONS", branch="z9hG4bK", cseq=1), UDP, now=0.0)
    other = layer.receive(request("OPTIONS", branch="z9hG4bK", cseq=2), UDP, now=0.1)
    assert [type(e) for e in first + other] == [RequestReceived, RequestReceived]
    assert layer.receive(request("OPTIONS", branch="z9hG4bK", cseq=2), UDP, now=0.2) == []


def test_malformed_requests_raise_typed_error_and_change_nothing() -> None:
    layer = TransactionLayer()
    no_via = parse_message(
        b"OPTIONS sip:b@h SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(SipParseError):
        layer.receive(no_via, UDP, now=0.0)
    with pytest.raises(SipParseError):
        layer.receive(request("OPTIONS", cseq_method="INVITE"), UDP, now=0.0)
    assert len(layer) == 0 and layer.get_timer() is None


def test_one_timer_over_all_transactions() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", branch="z9hG4bKa"), UDP, now=0.0)
    b, _ = layer.send_request(request("OPTIONS", branch="z9hG4bKb"), UDP, now=0.2)
    assert layer.get_timer() == 0.5
    layer.receive(reply(request("OPTIONS", branch="z9hG4bKa"), 200), UDP, now=0.3)
    assert layer.get_timer() == 0.7  # a's Timer E gone, b's is next
    fired = layer.handle_timer(0.7)
    assert fired == [Transmit(b.data, UDP, b)]


def test_cancelled_timers_do_not_accumulate() -> None:
    # Over TCP a transaction answered at once leaves only its cancelled Timer F behind.
    layer = TransactionLayer()
    for i in range(5000):  # > 4096 cancelled entries: enough to force a rebuild
        req = request("OPTIONS", branch=f"z9hG4bK{i}", transport="TCP")
        layer.send_request(req, TCP, now=0.0)
        layer.receive(reply(req, 200), TCP, now=0.0)
    assert len(layer) == 0
    assert len(layer._heap) <= 64 + 1
    assert layer.get_timer() is None


def test_an_idle_layer_keeps_no_ended_transaction() -> None:
    # A stopped timer's heap entry held its transaction (request, SDP, headers) until
    # its deadline: Timer C (181 s) of every INVITE of a load, behind the timers an
    # idle node still runs (its routers' probes).
    layer = TransactionLayer(timer_c=181.0)  # as a media node's user agent runs it
    before = sum(isinstance(o, Transaction) for o in gc.get_objects())
    for i in range(1000):
        req = request("INVITE", branch=f"z9hG4bK{i}", call_id=f"c{i}")
        layer.send_request(req, UDP, now=0.0)  # Timers A, B and C running
        layer.receive(reply(req, 486), UDP, now=0.1)  # A-C stopped, Timer D (32 s)
    probe = request("OPTIONS", branch="z9hG4bKprobe", call_id="probe")
    (new,) = layer.receive(probe, UDP, now=30.0)
    assert isinstance(new, RequestReceived)
    layer.send_response(new.transaction, make_response(probe, 200, to_tag="p"), now=30.0)
    del new
    run_until(layer, 40.0)  # every Timer D has fired; the probe's Timer J runs to 62 s
    assert len(layer) == 1
    left = sum(isinstance(o, Transaction) for o in gc.get_objects()) - before
    assert left == 1  # the probe's, none of the 1,000 ended INVITEs'


def test_duplicate_client_branch_is_refused() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), UDP, now=0.0)
    with pytest.raises(TransactionStateError):
        layer.send_request(request(), UDP, now=0.0)
    with pytest.raises(TransactionStateError):
        layer.send_request(request("ACK"), UDP, now=0.0)


# --------------------------------------------------------------------------- response routing


def test_response_peer_follows_18_2_2_and_rfc3581() -> None:
    src = Peer("UDP", "203.0.113.7", 40000)
    rport = request(extra="").top_via
    rport.params["rport"] = None
    assert response_peer(rport, src) == src
    plain = request(sent_by="10.0.0.1:5066").top_via
    assert response_peer(plain, src) == Peer("UDP", "203.0.113.7", 5066)
    no_port = request(sent_by="10.0.0.1").top_via
    assert response_peer(no_port, src) == Peer("UDP", "203.0.113.7", 5060)
    tcp_src = Peer("TCP", "203.0.113.7", 40001)
    assert response_peer(plain, tcp_src) == tcp_src
    maddr = request(sent_by="10.0.0.1:5070").top_via
    maddr.params["maddr"] = "239.1.1.1"
    assert response_peer(maddr, src) == Peer("UDP", "239.1.1.1", 5070)


def test_stamp_via_adds_received_and_rport() -> None:
    req = request(sent_by="10.0.0.1:5060")
    req.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx")
    stamp_via(req, Peer("UDP", "203.0.113.7", 40000))
    via = req.top_via
    assert via.received == "203.0.113.7" and via.rport == "40000"
    assert via.branch == "z9hG4bKx"
    wire = parse_message(req.to_bytes())
    assert wire.top_via.params == {
        "rport": "40000",
        "branch": "z9hG4bKx",
        "received": "203.0.113.7",
    }
    same = request(sent_by="203.0.113.7:5060")
    before = same.to_bytes()
    stamp_via(same, Peer("UDP", "203.0.113.7", 5060))
    assert same.to_bytes() == before  # nothing to add


# --------------------------------------------------------------------------- Timer C, CANCEL


def test_proxy_timer_c_reset_by_provisionals_but_not_by_100() -> None:
    layer = TransactionLayer(timer_c=181.0)
    inv = request()
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    layer.receive(reply(inv, 100, to_tag=None), UDP, now=1.0)  # 100 keeps C running
    layer.receive(reply(inv, 180), UDP, now=100.0)  # 180 restarts C
    fired = run_until(layer, 1000.0)
    assert fired == [(281.0, [TimedOut(txn, "C")])]
    assert txn.state is State.PROCEEDING  # the proxy decides: it CANCELs (§16.8)
    layer.cancel_sent(txn, now=281.0)
    fired = run_until(layer, 1000.0)
    assert fired == [(281.0 + 64 * T1, [TimedOut(txn, "CANCEL sent 64*T1 ago"), Terminated(txn)])]


def test_cancelled_invite_ends_on_487_or_after_64_t1() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    layer.receive(reply(inv, 180), UDP, now=0.1)
    assert layer.get_timer() is None  # a UA's Proceeding INVITE waits for ever...
    layer.cancel_sent(txn, now=5.0)  # ...until it CANCELs (§9.1)
    assert layer.get_timer() == 5.0 + 64 * T1
    terminated = reply(inv, 487)
    out = layer.receive(terminated, UDP, now=5.2)
    assert events(out) == [ResponseReceived(terminated, txn, UDP)]
    assert txn.state is State.COMPLETED and layer.get_timer() == 5.2 + 32.0  # D only


def test_send_cancel_only_after_a_provisional() -> None:
    layer = TransactionLayer()
    inv = request(extra="Route: <sip:edge.example.com;lr>\r\n")
    txn, _ = layer.send_request(inv, UDP, now=0.0)
    with pytest.raises(TransactionStateError):
        layer.send_cancel(txn, now=0.1)  # §9.1: wait for a 1xx first
    assert len(layer) == 1
    layer.receive(reply(inv, 180), UDP, now=0.2)
    cancel_txn, out = layer.send_cancel(txn, now=0.3)
    (wire,) = sent(out)
    cancel = parse_message(wire)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == inv.top_via.branch and cancel.cseq.seq == inv.cseq.seq
    assert [str(r.uri) for r in cancel.routes] == ["sip:edge.example.com;lr"]
    assert cancel_txn.peer == txn.peer and cancel_txn.method == "CANCEL"
    # The CANCEL's 200 and the INVITE's 487 each reach their own transaction.
    ok = reply(cancel, 200)
    assert layer.receive(ok, UDP, now=0.4) == [ResponseReceived(ok, cancel_txn, UDP)]
    gone = reply(inv, 487)
    assert events(layer.receive(gone, UDP, now=0.5)) == [ResponseReceived(gone, txn, UDP)]
    with pytest.raises(TransactionStateError):
        layer.send_cancel(txn, now=0.6)  # already completed


# --------------------------------------------------------------------------- properties

SERVER_STEPS = ["retransmit", "ack", "tu_1xx", "tu_2xx", "tu_4xx", "transport_error", "tick"]
CLIENT_STEPS = ["r100", "r180", "r200", "r486", "transport_error", "tick"]


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["UDP", "TCP"]),
    server_steps=st.lists(st.sampled_from(SERVER_STEPS), max_size=12),
    client_steps=st.lists(st.sampled_from(CLIENT_STEPS), max_size=12),
    ticks=st.lists(st.floats(0.0, 40.0), min_size=12, max_size=12),
)
def test_any_event_sequence_ends_with_an_empty_layer(
    method: str,
    transport: str,
    server_steps: list[str],
    client_steps: list[str],
    ticks: list[float],
) -> None:
    """Liveness and containment: whatever arrives in whatever order, only the typed
    state error escapes, and once the TU has answered (server) or cancelled (client)
    every transaction terminates when its timers run out: nothing leaks."""
    peer = UDP if transport == "UDP" else TCP
    layer = TransactionLayer()
    now = 0.0
    servers: list[Any] = []  # every server transaction the TU was handed

    def feed(outputs: list[Output]) -> None:
        servers.extend(e.transaction for e in outputs if isinstance(e, RequestReceived))

    inv = request(method, transport=transport)
    feed(layer.receive(inv, peer, now))
    stxn = servers[0]
    out_req = request(method, branch="z9hG4bKout", transport=transport)
    ctxn, _ = layer.send_request(out_req, peer, now)
    for i, step in enumerate(server_steps):
        try:
            match step:
                case "retransmit":
                    feed(layer.receive(request(method, transport=transport), peer, now))
                case "ack":
                    layer.receive(request("ACK", transport=transport, to_tag="t"), peer, now)
                case "tu_1xx":
                    layer.send_response(stxn, make_response(inv, 183, to_tag="t"), now)
                case "tu_2xx":
                    layer.send_response(stxn, make_response(inv, 200, to_tag="t"), now)
                case "tu_4xx":
                    layer.send_response(stxn, make_response(inv, 486, to_tag="t"), now)
                case "transport_error":
                    layer.transport_failed(stxn, now)
                case "tick":
                    now += ticks[i]
                    layer.handle_timer(now)
        except TransactionStateError:
            assert stxn.state is not State.PROCEEDING or method != "INVITE"
    for i, step in enumerate(client_steps):
        match step:
            case "r100":
                layer.receive(reply(out_req, 100, to_tag=None), peer, now)
            case "r180" | "r200" | "r486":
                layer.receive(reply(out_req, int(step[1:])), peer, now)
            case "transport_error":
                layer.transport_failed(ctxn, now)
            case "tick":
                now += ticks[-1 - i]
                layer.handle_timer(now)
    # The TU's duties: answer what it got, CANCEL what it sent.
    for txn in servers:
        if txn.state in (State.TRYING, State.PROCEEDING):
            layer.send_response(txn, make_response(txn.request, 500, to_tag="t"), now)
    if ctxn.state is State.PROCEEDING and method == "INVITE":
        layer.cancel_sent(ctxn, now)
    run_until(layer, now + 1000.0)
    assert len(layer) == 0 and layer.get_timer() is None
    assert all(txn.state is State.TERMINATED for txn in [*servers, ctxn])
