"""A 2xx the caller never got: a node killed after answering a bridged call's caller but
before that 200's ACK came resends it after the restart (RFC 3261 §13.3.1.4) — the
caller's ACK then lets the call go on — and ends the call when no ACK comes within 64·T1
of the original 200: BYE to the caller and the carrier, CDRs with
``RECOVERY_ON_TIMER_EXPIRE``. Before, the restart resumed such a call as if ACKed: its
caller, which had not heard the 200, sent neither RTP nor BYE, and both legs were billed
until ``rtp_timeout``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from switchboard.media import journal
from switchboard.sip.message import Request, Response
from switchboard.sip.timers import T1
from tests.support.media import CrashLab, bridged, crash_lab, start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import SDP, Peer, ok_to, request


def ack(caller: Peer, ok: Response, port: int) -> None:
    caller.send(request(caller, "ACK", port, call_id=ok.call_id, cseq=1, branch="ack" + ok.call_id,
                        to_tag=ok.to_tag or ""), port)  # fmt: skip


async def killed_before_the_ack(tmp_path: Path, call_id: str) -> tuple[CrashLab, Request, Response]:
    """A bridged call, its journal copied (the node "killed") before the caller's ACK;
    then the caller ACKs the first node, whose retransmissions stop."""
    lab = await crash_lab(tmp_path)
    node, caller, carrier, path, copy = lab.node, lab.caller, lab.carrier, lab.path, lab.copy
    out, ok = await bridged(node, caller, carrier, call_id)
    await async_wait_until(lambda: journal.read(path).live(), 5, "the bridge journaled")
    shutil.copy(path, copy)
    (leg,) = journal.read(copy).live()[0]["legs"][:1]
    assert leg["dir"] == "inbound" and journal.read(copy).awaiting_ack(leg)
    ack(caller, ok, node.sip_port)
    # the live node journals the ACK (A): its own restart would not resend the 200
    await async_wait_until(lambda: not journal.read(path).awaiting_ack(
        journal.read(path).live()[0]["legs"][0]), 5, "the ACK journaled")  # fmt: skip
    while not caller.inbox.empty():  # the first node's retransmissions, before the ACK
        caller.inbox.get_nowait()
    return lab, out, ok


async def test_a_restart_resends_an_unacked_2xx_and_the_acked_call_goes_on(tmp_path: Path) -> None:
    lab, out, ok = await killed_before_the_ack(tmp_path, "ack1")
    caller, carrier = lab.caller, lab.carrier
    later = None
    try:
        later, sink = await start_node(tmp_path / "b", lab.gateways)
        again = await caller.expect(lambda m: isinstance(m, Response))
        assert isinstance(again, Response) and again.status == 200
        assert (again.call_id, again.to_tag, again.body) == (ok.call_id, ok.to_tag, ok.body)
        ack(caller, again, later.sip_port)
        # its RTP port moved (the first node holds it): the new offer follows the ACK
        reinvite = await caller.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
        assert isinstance(reinvite, Request) and reinvite.call_id == "ack1"
        copy = tmp_path / "b" / "state" / "journal" / "media-1.jnl"
        await async_wait_until(lambda: not journal.read(copy).awaiting_ack(
            journal.read(copy).live()[0]["legs"][0]), 5, "the ACK journaled")  # fmt: skip
        assert later.switch is not None and later.switch.active_calls == 2  # both legs resumed
        # the carrier's 200, retransmitted (our ACK lost): ACKed with its INVITE's CSeq
        while not carrier.inbox.empty():  # the first node's ACK, re-INVITE (ports moved)
            carrier.inbox.get_nowait()
        answer = SDP.format(ver=1, port=40002, fmt="0", dir="sendrecv")
        contact = f"sip:carrier@127.0.0.1:{carrier.port}"
        carrier.send(ok_to(out, tag="carrier1", sdp=answer, contact=contact), later.sip_port)
        carrier_ack = await carrier.expect(lambda m: isinstance(m, Request) and m.method == "ACK")
        assert isinstance(carrier_ack, Request)
        assert (carrier_ack.call_id, carrier_ack.cseq.seq) == (out.call_id, out.cseq.seq)
        assert carrier_ack.to_tag == "carrier1"
        # the call goes on: the caller's BYE ends it, the carrier gets its BYE
        caller.send(request(caller, "BYE", later.sip_port, call_id="ack1", cseq=2,
                            branch="ack1bye", to_tag=ok.to_tag or ""), later.sip_port)  # fmt: skip
        r = await caller.expect(lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
        assert isinstance(r, Response) and r.status == 200
        bye = await carrier.expect(lambda m: isinstance(m, Request) and m.method == "BYE")
        assert isinstance(bye, Request) and bye.call_id == out.call_id
        carrier.send(ok_to(bye), later.sip_port)
        await async_wait_until(lambda: len(sink.records) == 2, 5, "both legs' CDRs")
        cdr_in = next(c for c in sink.records if c.direction == "inbound")
        assert cdr_in.hangup_cause == "NORMAL_CLEARING"
    finally:
        await lab.close(later)


async def test_a_resent_2xx_never_acked_ends_the_call_after_64_t1(tmp_path: Path) -> None:
    lab, out, _ok = await killed_before_the_ack(tmp_path, "ack2")
    caller, carrier, copy = lab.caller, lab.carrier, lab.copy
    later = None
    try:
        # the 200 was sent 64·T1 - 1 s before this restart: one second of retransmissions
        lines = copy.read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith("B "):
                rec = json.loads(line[2:])
                for leg in rec["legs"]:
                    if "ok" in leg:
                        leg["ok"][1] = time.time() - 64 * T1 + 1.0
                lines[i] = "B " + json.dumps(rec) + "\n"
        copy.write_text("".join(lines))
        later, sink = await start_node(tmp_path / "b", lab.gateways)
        again = await caller.expect(lambda m: isinstance(m, Response))
        assert isinstance(again, Response) and again.status == 200  # resent, never ACKed
        for peer in (caller, carrier):
            bye = await peer.expect(
                lambda m: isinstance(m, Request) and m.method == "BYE", timeout=10
            )
            assert isinstance(bye, Request)
            peer.send(ok_to(bye), later.sip_port)
            assert bye.call_id == ("ack2" if peer is caller else out.call_id)
        await async_wait_until(lambda: len(sink.records) == 2, 5, "both legs' CDRs")
        cdr_in = next(c for c in sink.records if c.direction == "inbound")
        assert cdr_in.hangup_cause == "RECOVERY_ON_TIMER_EXPIRE"
        assert later.switch is not None and later.switch.active_calls == 0
    finally:
        await lab.close(later)
