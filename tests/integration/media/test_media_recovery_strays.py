"""A 2xx to an INVITE the node holds no call for: ACKed, ended with BYE, billed.

After a ``kill -9`` a carrier may answer an INVITE the dead node had sent — the caller's
INVITE, unanswered, went to another node — and retransmit its 200 to the restarted node,
which knows nothing of it. Left alone, the carrier keeps (and bills) a leg nobody hears.
"""

from __future__ import annotations

from pathlib import Path

from switchboard.sip.message import Request
from tests.support.media import start_node
from tests.support.sip_peer import Peer


def ok(peer: Peer, node_port: int) -> str:
    return (
        "SIP/2.0 200 OK\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{node_port};branch=z9hG4bKbeforecrash\n"
        f"From: <sip:442071234567@127.0.0.1:{node_port}>;tag=deadnode1\n"
        f"To: <sip:442071234567@127.0.0.1:{peer.port}>;tag=carrier1\n"
        "Call-ID: stray-1\nCSeq: 7 INVITE\n"
        f"Contact: <sip:carrier@127.0.0.1:{peer.port}>\n"
        "Content-Length: 0\n\n"
    )


async def test_a_stray_2xx_is_acked_ended_with_bye_once_and_gets_a_cdr(tmp_path: Path) -> None:
    node, sink = await start_node(tmp_path)
    carrier = await Peer.udp()
    try:
        port = node.sip_port
        carrier.send(ok(carrier, port), port)
        got: list[Request] = []
        while len(got) < 2:
            msg = await carrier.expect(lambda m: isinstance(m, Request))
            assert isinstance(msg, Request)
            got.append(msg)
        ack, bye = sorted(got, key=lambda r: r.method)
        assert (ack.method, ack.cseq.seq, ack.call_id) == ("ACK", 7, "stray-1")
        assert (bye.method, bye.cseq.seq, bye.call_id) == ("BYE", 8, "stray-1")
        assert bye.to_tag == "carrier1" and bye.from_tag == "deadnode1"
        assert bye.uri.startswith("sip:carrier@127.0.0.1")
        assert "cause=41" in bye.headers.get("Reason", "")  # NORMAL_TEMPORARY_FAILURE
        carrier.send(
            f"SIP/2.0 200 OK\nVia: {bye.headers.get('Via')}\nFrom: {bye.headers.get('From')}\n"
            f"To: {bye.headers.get('To')}\nCall-ID: stray-1\nCSeq: 8 BYE\nContent-Length: 0\n\n",
            port,
        )
        # the carrier retransmits its 200 (our ACK lost): ACKed again, no second BYE
        carrier.send(ok(carrier, port), port)
        again = await carrier.expect(lambda m: isinstance(m, Request))
        assert isinstance(again, Request) and again.method == "ACK"
        stray = [c for c in sink.records if c.sip_call_id == "stray-1"]
        assert len(stray) == 1
        cdr = stray[0]
        assert (cdr.direction, cdr.disposition, cdr.hangup_cause, cdr.billsec) == (
            "outbound", "ANSWERED", "NORMAL_TEMPORARY_FAILURE", 0,
        )  # fmt: skip
        assert carrier.inbox.empty()  # no second BYE
    finally:
        carrier.close()
        await node.stop()
