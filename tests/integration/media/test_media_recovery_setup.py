"""Calls in setup when their node is killed: nothing left waiting, nothing left up.

Two moments a ``kill -9`` under load (bench/chaos at 50 calls/s) hit: right after the
node's 100 Trying (the router then waits minutes for a final response), and right after
the carrier's 2xx was ACKed, before the bridge was journaled (the carrier then keeps a leg
nobody ends or bills). The kill is emulated by copying the journal at that very moment —
what the disk would hold had the process died there — and starting a node on the copy.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from switchboard.media import journal
from switchboard.sip.message import Request, Response
from tests.support.media import crash_lab, start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import SDP, Peer, final, ok_to, request


class SnapshotOnTrying(Peer):
    """A caller that copies the node's journal the instant the 100 Trying arrives."""

    def __init__(self, journal_path: Path, copy: Path) -> None:
        super().__init__()
        self.journal_path, self.copy = journal_path, copy

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data.startswith(b"SIP/2.0 100 ") and not self.copy.exists():
            shutil.copy(self.journal_path, self.copy)
        super().datagram_received(data, addr)


async def test_a_setup_is_journaled_before_its_100_trying_leaves(tmp_path: Path) -> None:
    """From the 100 on, the router stops retransmitting and waits for our final answer
    (Timer C, 3 minutes): the setup must already be on disk for a restart to answer 503."""
    node, _ = await start_node(tmp_path)
    path = tmp_path / "state" / "journal" / "media-1.jnl"
    copy = tmp_path / "at-100.jnl"
    peer = SnapshotOnTrying(path, copy)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: peer, local_addr=("127.0.0.1", 0)
    )
    peer.transport, peer.port = transport, transport.get_extra_info("sockname")[1]
    try:
        offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
        peer.send(request(peer, "INVITE", node.sip_port, call_id="t100", cseq=1,
                          branch="t100", body=offer), node.sip_port)  # fmt: skip
        ok = await peer.expect(final)
        assert isinstance(ok, Response) and ok.status == 200  # echo answers
        (setup,) = journal.read(copy).pending_setups()
        assert "Call-ID: t100" in setup["invite"]
        assert setup["tag"] == ok.to_tag  # the 503 of a restart would carry the same tag
        assert setup["peer"] == ["UDP", "127.0.0.1", peer.port]
        # answered by an application: no longer a setup to hand back
        assert journal.read(path).pending_setups() == []
    finally:
        peer.close()
        await node.stop()


async def test_a_far_leg_answered_before_the_bridge_was_journaled_is_ended_by_a_restart(
    tmp_path: Path,
) -> None:
    """Killed right after ACKing the carrier's 2xx (the bridge application had not run
    again): the restart hands the caller's setup back (503: the router tries another
    node) and sends the carrier a BYE, with a CDR for that leg."""
    lab = await crash_lab(tmp_path)
    node, caller, carrier, gateways = lab.node, lab.caller, lab.carrier, lab.gateways
    path, copy = lab.path, lab.copy

    def on_event(ev: Any) -> None:  # subscribed after the journal's own hook
        ch = node.switch.channel(ev.channel_uuid) if ev.name == "CHANNEL_ANSWER" else None
        if ch is not None and ch.direction == "outbound" and not copy.exists():
            shutil.copy(path, copy)

    node.switch.events.subscribe(on_event, headers=False)
    restarted = None
    try:
        offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
        invite = request(caller, "INVITE", node.sip_port, call_id="w2", cseq=1,
                         branch="w2", body=offer)  # fmt: skip
        caller.send(invite.replace("sip:echo@", "sip:+12155550131@", 2), node.sip_port)
        out = await carrier.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
        assert isinstance(out, Request)
        answer = SDP.format(ver=1, port=40002, fmt="0", dir="sendrecv")
        contact = f"sip:carrier@127.0.0.1:{carrier.port}"
        carrier.send(ok_to(out, tag="carrier1", sdp=answer, contact=contact), node.sip_port)
        ack = await carrier.expect(lambda m: isinstance(m, Request))
        assert isinstance(ack, Request) and ack.method == "ACK"
        assert copy.exists()
        (setup,) = journal.read(copy).pending_setups()
        assert "Call-ID: w2" in setup["invite"]

        # the node "died" there: a node started on that journal (its own SIP port)
        restarted, sink = await start_node(tmp_path / "b", gateways)
        handed_back = await caller.expect(
            lambda m: isinstance(m, Response) and m.status == 503 and m.call_id == "w2"
        )
        assert isinstance(handed_back, Response) and handed_back.to_tag == setup["tag"]
        # the INVITE's retransmission, read by the restarted node, is the same refused
        # transaction (503 again), not a new call (a 100 Trying and a second carrier leg)
        retransmitted = invite.replace("sip:echo@", "sip:+12155550131@", 2)
        caller.send(retransmitted, restarted.sip_port)
        again = await caller.expect(lambda m: isinstance(m, Response) and m.call_id == "w2")
        assert isinstance(again, Response) and again.status == 503
        assert not any(c.direction == "inbound" for c in restarted.switch.channels.values())
        bye = await carrier.expect(
            lambda m: isinstance(m, Request) and m.method == "BYE" and m.cseq.seq > 1000
        )
        assert isinstance(bye, Request) and bye.call_id == out.call_id
        assert bye.to_tag == "carrier1" and "cause=41" in bye.headers.get("Reason", "")
        carrier.send(ok_to(bye), restarted.sip_port)
        await async_wait_until(
            lambda: any(c.sip_call_id == out.call_id for c in sink.records), 5, "carrier CDR"
        )
        (cdr,) = [c for c in sink.records if c.sip_call_id == out.call_id]
        assert (cdr.direction, cdr.disposition, cdr.hangup_cause) == (
            "outbound", "ANSWERED", "NORMAL_TEMPORARY_FAILURE",
        )  # fmt: skip
    finally:
        await lab.close(restarted)
