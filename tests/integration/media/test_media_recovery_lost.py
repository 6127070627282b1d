"""Legs a restart must end rather than resume. A node started on a journal whose heartbeat
is older than ``recovery_timeout`` ends its calls — whoever restarted it (systemd, a
container runtime, an operator), with no supervisor's reaper around: BYE with Q.850 cause
38 to both far ends, CDRs with ``NETWORK_OUT_OF_ORDER``. A leg whose far end's BYE the
node had answered just before it died is ended without a BYE, billed to that BYE."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from switchboard.media import journal
from switchboard.sip.message import Request, Response
from tests.support.media import bridged, crash_lab, start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import ok_to, request


async def test_a_node_back_after_recovery_timeout_ends_its_calls(tmp_path: Path) -> None:
    lab = await crash_lab(tmp_path)
    node, caller, carrier, gateways = lab.node, lab.caller, lab.carrier, lab.gateways
    path, copy = lab.path, lab.copy
    later = None
    try:
        out, _ = await bridged(node, caller, carrier, "lost1")
        await async_wait_until(lambda: journal.read(path).live(), 5, "the bridge journaled")
        shutil.copy(path, copy)
        # the node "died" with that journal and was last up a minute ago
        beat = time.time() - 60
        copy.with_suffix(".lock").touch()
        os.utime(copy.with_suffix(".lock"), (beat, beat))

        later, sink = await start_node(tmp_path / "b", gateways)
        byes = []
        for peer in (caller, carrier):
            bye = await peer.expect(
                lambda m: isinstance(m, Request) and m.method == "BYE" and m.cseq.seq > 1000
            )
            assert isinstance(bye, Request)
            assert "cause=38" in (bye.headers.get("Reason") or "")  # network out of order
            peer.send(ok_to(bye), later.sip_port)
            byes.append(bye.call_id)
        assert byes == ["lost1", out.call_id]
        await async_wait_until(lambda: len(sink.records) == 2, 5, "both legs' CDRs")
        assert {(c.direction, c.hangup_cause) for c in sink.records} == {
            ("inbound", "NETWORK_OUT_OF_ORDER"),
            ("outbound", "NETWORK_OUT_OF_ORDER"),
        }
        assert later.switch is not None and later.switch.active_calls == 0  # none resumed
    finally:
        await lab.close(later)


async def test_a_leg_whose_bye_was_answered_just_before_the_crash_is_not_byed_again(
    tmp_path: Path,
) -> None:
    """Killed right after answering the caller's BYE (the leg's CDR and the carrier's BYE
    come a few loop turns later): the restart sends the carrier its BYE, not the caller,
    and the caller's CDR ends at its BYE, not at the restart."""
    lab = await crash_lab(tmp_path)
    node, caller, carrier, gateways = lab.node, lab.caller, lab.carrier, lab.gateways
    path, copy = lab.path, lab.copy
    hung_at: list[float] = []

    def on_event(ev: Any) -> None:  # subscribed after the journal's own hook
        ch = node.switch.channel(ev.channel_uuid) if ev.name == "CHANNEL_HANGUP" else None
        if ch is not None and ch.direction == "inbound" and not copy.exists():
            shutil.copy(path, copy)
            hung_at.append(time.time())

    later = None
    try:
        out, ok = await bridged(node, caller, carrier, "hung1")
        await async_wait_until(lambda: journal.read(path).live(), 5, "the bridge journaled")
        node.switch.events.subscribe(on_event, headers=False)
        caller.send(request(caller, "BYE", node.sip_port, call_id="hung1", cseq=2,
                            branch="hung1bye", to_tag=ok.to_tag or ""), node.sip_port)  # fmt: skip
        await caller.expect(lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
        assert hung_at and copy.exists()
        started = time.time()

        later, sink = await start_node(tmp_path / "b", gateways)
        bye = await carrier.expect(
            lambda m: isinstance(m, Request) and m.method == "BYE" and m.cseq.seq > 1000
        )
        assert isinstance(bye, Request) and bye.call_id == out.call_id
        assert "cause=16" in (bye.headers.get("Reason") or "")  # as the bridge would have
        carrier.send(ok_to(bye), later.sip_port)
        await async_wait_until(lambda: len(sink.records) == 2, 5, "both legs' CDRs")
        cdr_in = next(c for c in sink.records if c.direction == "inbound")
        assert cdr_in.hangup_cause == "NORMAL_CLEARING"
        assert cdr_in.end_time is not None and cdr_in.end_time.timestamp() < started
        assert abs(cdr_in.end_time.timestamp() - hung_at[0]) < 0.5
        late_byes = []
        while not caller.inbox.empty():
            m = caller.inbox.get_nowait()
            if isinstance(m, Request) and m.method == "BYE" and m.cseq.seq > 1000:
                late_byes.append(m)
        assert late_byes == []  # the caller had hung up: no BYE from the restart
    finally:
        await lab.close(later)
