"""A BYE retransmitted through another router after the node ended the call.

The caller's BYE reaches the node through router-1, the node ends the call and answers
200, and the 200 is lost with router-1. The caller retransmits; the floating address has
moved, so the copy arrives through router-2 with a new top Via branch and matches no server
transaction. It must get 200 (the call did end cleanly), not 481
(docs/operations.md, "The HA lab").
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchboard.media.ua import EndedDialogs
from switchboard.sip.ids import leg_of_tag
from switchboard.sip.message import Response
from tests.support.media import start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import SDP, Peer, final, request

pytestmark = [pytest.mark.timeout(60)]


async def test_bye_retransmitted_through_another_router_gets_200(tmp_path: Path) -> None:
    node, cdrs = await start_node(tmp_path)
    router1, router2 = await Peer.udp(), await Peer.udp()
    port = node.sip_port
    try:
        offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
        router1.send(
            request(router1, "INVITE", port, call_id="rb1", cseq=1, branch="i1", body=offer), port
        )
        ok = await router1.expect(final)
        assert isinstance(ok, Response) and ok.status == 200
        tag = ok.to_tag or ""
        router1.send(
            request(router1, "ACK", port, call_id="rb1", cseq=1, branch="a1", to_tag=tag), port
        )
        bye = request(router1, "BYE", port, call_id="rb1", cseq=2, branch="b1", to_tag=tag)
        router1.send(bye, port)
        r = await router1.expect(final)
        assert isinstance(r, Response) and r.status == 200
        await async_wait_until(lambda: len(cdrs.records) == 1, what="the call's CDR")

        # the same BYE (same dialog, same CSeq) by the other router: its own Via, a new branch
        router2.send(
            request(router2, "BYE", port, call_id="rb1", cseq=2, branch="b1-r2", to_tag=tag),
            port,
        )
        r = await router2.expect(final)
        assert isinstance(r, Response) and r.status == 200, r.status
        # a retransmission through router-1 still meets its transaction: 200 again
        router1.send(bye, port)
        r = await router1.expect(final)
        assert isinstance(r, Response) and r.status == 200
        # ended once: one CDR, no channel left
        assert len(cdrs.records) == 1
        # the node's To tag named the channel the CDR is keyed on (what the router bills
        # a lost node's leg under: docs/router.md "A media node lost with its box")
        assert leg_of_tag(tag) == (cdrs.records[0].call_id, "")
        assert not node.switch.sessions

        # a BYE for a dialog that never was here is still 481 (RFC 3261 §12.2.2)
        router2.send(
            request(router2, "BYE", port, call_id="rb1", cseq=2, branch="b2", to_tag="other"),
            port,
        )
        r = await router2.expect(final)
        assert isinstance(r, Response) and r.status == 481
        # and an INFO for the ended dialog is not a retransmission: 481
        router2.send(
            request(router2, "INFO", port, call_id="rb1", cseq=3, branch="n1", to_tag=tag), port
        )
        r = await router2.expect(final)
        assert isinstance(r, Response) and r.status == 481
    finally:
        router1.close()
        router2.close()
        await node.stop()


def test_ended_dialogs_are_forgotten_after_64_t1() -> None:
    ended = EndedDialogs(keep=32.0)
    ended.note(("c1", "t1"), 100.0)
    ended.note(("c2", "t2"), 110.0)
    assert ended.recent(("c1", "t1"), 131.9)
    assert not ended.recent(("c1", "t1"), 132.0)
    assert ended.recent(("c2", "t2"), 132.0)
    assert len(ended) == 1  # the expired one pruned
    assert not ended.recent(("c2", "t2"), 142.0)
    assert len(ended) == 0


def test_an_idle_node_forgets_its_ended_dialogs_without_another_call() -> None:
    # Pruned as calls end, an idle node would keep the last 32 s of them for good (and
    # the memory they sit in): the collector's idle pass expires them first.
    ended = EndedDialogs(keep=32.0)
    now = time.monotonic()
    ended.note(("old", "t1"), now - 40.0)
    ended.note(("new", "t2"), now)
    ended.expire()
    assert len(ended) == 1
    assert ended.recent(("new", "t2"), now)
