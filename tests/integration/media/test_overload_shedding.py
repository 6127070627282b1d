"""Overloaded media nodes shed new calls with 503 and the router never dials twice
(docs/media.md "Overload", docs/router.md "Overload").

A real router in the test's event loop, two real media nodes on an event loop of their
own (a thread); the overload under test is the nodes' loop running 0.3 s late on every
turn (nodes starved of CPU) while the router keeps time. Transit calls sent meanwhile are
refused by both nodes before any channel exists — the carrier sees no INVITE — tried once
more after the nodes' Retry-After and refused again, and the caller gets the router's own
503 with that Retry-After; no branch times out, no
node is marked inactive. An emergency call sent with them is shed by neither tier: it
is the carrier's only INVITE. Once the nodes keep time again, calls go through.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from switchboard.router.dispatcher import DestinationState
from switchboard.sip.message import Request, Response
from tests.support.media import start_node
from tests.support.net import async_wait_until, free_port
from tests.support.router import both_active, router_sections, running_router
from tests.support.sip_peer import SDP, Peer, final, ok_to, request

pytestmark = [pytest.mark.timeout(60)]
T = TypeVar("T")

CALLS = 4
TURN = 0.3  # seconds: how late the loop runs on every turn while overloaded


class NodeLoop:
    """An event loop in a thread of its own, for the media nodes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def overload(self) -> threading.Event:
        """The overload under test: every turn of the nodes' loop comes TURN s late, until
        the event returned is set."""
        over = threading.Event()

        def late_turn() -> None:
            time.sleep(TURN)
            if not over.is_set():
                self.loop.call_soon(late_turn)

        self.loop.call_soon_threadsafe(late_turn)
        return over

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def shed(node: object) -> float:
    reg = node.registry  # type: ignore[attr-defined]
    return reg.get_sample_value("switchboard_media_overload_shed_total", {"reason": "delay"}) or 0.0


async def test_overloaded_nodes_shed_calls_and_the_router_answers_503_without_duplicates(
    tmp_path: Path,
) -> None:
    carrier = await Peer.udp()
    caller = await Peer.udp()
    # overload_delay 0.1 s: every new call is shed from 0.2 s behind
    limits = {"limits": {"overload_delay": 0.1},
              "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.port}"}}}  # fmt: skip
    nodes = []
    node_loop = NodeLoop()
    for name in ("n1", "n2"):
        (tmp_path / name).mkdir()
        node, _ = await node_loop.run(start_node(tmp_path / name, limits))
        nodes.append(node)
    rport = free_port()
    uris = [f"sip:127.0.0.1:{n.sip_port}" for n in nodes]
    try:
        # failover_timeout past the overload: the emergency call, admitted by a node whose
        # every loop turn is late, must not be failed over on timeout
        sections = router_sections(
            rport, uris, dispatcher={"failover_timeout": 8.0, "ping_timeout": 4.0}
        )
        async with running_router(tmp_path, sections) as router:
            await async_wait_until(lambda: both_active(router), what="probing")
            offer = SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv")
            over = node_loop.overload()
            # shedding by delay waits for it to be sustained: two receive-queue readings
            # in a row over overload_delay (a single stall sheds nothing)
            await async_wait_until(
                lambda: all(n.overload_guard.sustained for n in nodes), 10, "overload seen"
            )
            for i in range(CALLS):  # transit calls: each admitted one would dial the carrier
                invite = request(caller, "INVITE", rport, call_id=f"o{i}", cseq=1,
                                 branch=f"o{i}", body=offer)  # fmt: skip
                caller.send(invite.replace("sip:echo@", "sip:442071234567@", 1), rport)
            # and an emergency call ([emergency] numbers' default): never shed, by either tier
            sos = request(caller, "INVITE", rport, call_id="sos", cseq=1, branch="sos", body=offer)
            caller.send(sos.replace("sip:echo@", "sip:112@", 1), rport)
            finals: dict[str, Response] = {}
            while len(finals) < CALLS:  # (the router retransmits a 503 until its ACK)
                r = await caller.expect(final)
                assert isinstance(r, Response) and r.call_id != "sos", r
                finals[r.call_id] = r
            assert sorted(finals) == [f"o{i}" for i in range(CALLS)]
            over.set()  # the nodes catch up (the router's 503s are in)
            for r in finals.values():
                assert (r.status, r.headers.get("Retry-After")) == (503, "1"), r
                ack = request(caller, "ACK", rport, call_id=r.call_id, cseq=1,
                              branch=r.call_id, to_tag=r.to_tag or "")  # fmt: skip
                caller.send(ack.replace("sip:echo@", "sip:442071234567@", 1), rport)
            # the emergency call went through: the carrier's only INVITE (no leg for the
            # others), and the carrier's answer is the caller's
            leg = await carrier.expect(lambda m: isinstance(m, Request), timeout=15)
            assert isinstance(leg, Request) and (leg.method, leg.ruri.user) == ("INVITE", "112")
            port = int(str(leg.headers.get("Via")).split(";")[0].rsplit(":", 1)[1])
            carrier.send(ok_to(leg, tag="psap").replace("200 OK", "486 Busy Here", 1), port)
            r = await caller.expect(lambda m: final(m) and m.call_id == "sos", timeout=15)
            assert isinstance(r, Response) and r.status == 486, r
            caller.send(request(caller, "ACK", rport, call_id="sos", cseq=1, branch="sos",
                                to_tag=r.to_tag or "").replace("sip:echo@", "sip:112@", 1),
                        rport)  # fmt: skip
            await async_wait_until(lambda: all(not n.switch.sessions for n in nodes), 10,
                                   "the emergency call's legs ended")  # fmt: skip
            while not carrier.inbox.empty():  # the node's ACK of the 486, nothing else
                m = carrier.inbox.get_nowait()  # (but the 112 INVITE's retransmissions)
                assert isinstance(m, Request) and m.call_id == leg.call_id, m
                assert m.method == "ACK" or m.cseq == leg.cseq, m
            # each call was tried on every node the dispatcher had selectable (both, unless a
            # probe answered late during the overload), every node shed it, and it was
            # tried once more after the nodes' Retry-After (1 s) and shed again
            stats = router.proxy.stats
            total = sum(shed(n) for n in nodes)
            assert (stats.overload_rejects, stats.shed_retries) == (CALLS, CALLS)
            assert CALLS + stats.failovers < total <= CALLS + stats.failovers + CALLS
            assert stats.branch_timeouts == 0  # every node answered in time: no timeout failover
            # caught up: the next call is admitted (the delay is forgotten within a second)
            await async_wait_until(
                lambda: (
                    all(n.loop_lag.behind() < 0.05 for n in nodes)
                    and {d.state for d in router.proxy.dispatcher.destinations()}
                    == {DestinationState.ACTIVE}
                ),
                5,
                "nodes caught up and active",
            )
            caller.send(request(caller, "INVITE", rport, call_id="after", cseq=1,
                                branch="after", body=offer), rport)  # fmt: skip
            ok = await caller.expect(lambda m: final(m) and m.call_id == "after")
            assert isinstance(ok, Response) and ok.status == 200, ok
            assert sum(shed(n) for n in nodes) == total
    finally:
        caller.close()
        carrier.close()
        for n in nodes:
            await node_loop.run(n.stop())
        node_loop.close()
