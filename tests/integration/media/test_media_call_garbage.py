"""A finished call leaves nothing for the cyclic garbage collector.

Each call kind runs through real media nodes in this process (SIP over loopback UDP,
RTP, the Event Socket): a scripted caller's echo, playback, conference, a transit call
bridged through the carrier gateway to a second node, a recorded call (``record``) and a
recorded transit call (``record_session`` + ``bridge``), an ESL ``originate``, a refused
call (488, and a dialplan miss), a call the caller CANCELs while it rings and a
transit call cancelled while the carrier rings. The garbage collector is off while
they run. Afterwards every session must already be gone — freed by reference
counting when its last transaction ended — and ``gc.collect()`` must find none of the
node's objects in a reference cycle. A cycle here is what made the nodes' full
collections take seconds under load (docs/media.md, "Memory").
"""

from __future__ import annotations

import asyncio
import collections
import gc
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.media.core import Session
from switchboard.media.event_socket import EslSettings, EventSocketServer
from switchboard.media.node import MediaNode
from switchboard.sdp import parse_sdp
from switchboard.sip.message import Response
from switchboard.sip.timers import TimerValues
from tests.support.media import RtpPeer, start_node
from tests.support.net import async_wait_until
from tests.support.sip_peer import SDP, Peer, final, request

pytestmark = [pytest.mark.timeout(90)]

# Short transaction timers (64·T1 = 3.2 s, Timer D 0.1 s): the test waits for every
# transaction to end, as a loaded node's do 32 s after each call.
FAST_TIMERS = TimerValues(t1=0.05, t2=0.2, t4=0.25, timer_d=0.1)

RULES_A = [
    {"name": "echo", "destination": "^echo$", "actions": ["answer", "echo"]},
    {"name": "playback", "destination": "^playback$",
     "actions": ["answer", "playback tone_stream://%(2000,0,440)", "hangup"]},
    {"name": "conference", "destination": r"^conf-(\w+)$", "actions": ["answer", "conference $1"]},
    {"name": "ring", "destination": "^ring$", "actions": ["ring_ready", "sleep 20000"]},
    {"name": "record", "destination": "^record$", "actions": ["answer", "record rec1.wav 20"]},
    {"name": "recorded transit", "destination": r"^rec(\d{3,})$",
     "actions": ["record_session rec2.wav", "bridge sofia/gateway/carrier/$1"]},
    {"name": "transit", "destination": r"^(\d{3,})$",
     "actions": ["bridge sofia/gateway/carrier/$1"]},
]  # fmt: skip
RULES_B = [  # the carrier: 9… rings for ever, anything else is answered with an echo
    {"name": "slow", "destination": r"^9\d+$", "actions": ["ring_ready", "sleep 20000"]},
    {"name": "echo", "destination": r"^\d+$", "actions": ["answer", "echo"]},
]


@pytest.fixture
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.enable()


def _sessions_tracked(*nodes: MediaNode) -> list[weakref.ref[Session]]:
    refs: list[weakref.ref[Session]] = []
    for n in nodes:
        n.switch.hangup_hooks.append(lambda s: refs.append(weakref.ref(s)))
    return refs


def _cycle_report(garbage: list[Any], limit: int = 8) -> str:
    """The shortest reference cycle through each kind of our objects found in ``garbage``."""
    ids = {id(o) for o in garbage}
    lines: list[str] = []
    seen: set[str] = set()
    for o in garbage:
        kind = type(o).__qualname__
        if not type(o).__module__.startswith("switchboard") or kind in seen:
            continue
        seen.add(kind)
        prev: dict[int, Any] = {id(o): None}
        queue = collections.deque([o])
        last = None
        while queue and last is None:
            x = queue.popleft()
            for r in gc.get_referents(x):
                if r is o:
                    last = x
                    break
                if id(r) in ids and id(r) not in prev:
                    prev[id(r)] = x
                    queue.append(r)
        path = [kind]
        while last is not None:
            name = type(last).__qualname__
            if isinstance(last, types.FunctionType):
                name = f"function {last.__qualname__}"
            path.append(name)
            last = prev.get(id(last))
        lines.append(" <- ".join(path))
        if len(lines) >= limit:
            break
    return "\n".join(lines)


async def _invite(peer: Peer, port: int, dest: str, cid: str, offer: str) -> str:
    text = request(peer, "INVITE", port, call_id=cid, cseq=1, branch=f"{cid}i", body=offer)
    text = text.replace("sip:echo@", f"sip:{dest}@")
    peer.send(text, port)
    return text


async def _talk_and_bye(peer: Peer, port: int, dest: str, cid: str, rtp: RtpPeer) -> None:
    offer = SDP.format(ver=1, port=rtp.port, fmt="0 8", dir="sendrecv")
    await _invite(peer, port, dest, cid, offer)
    ok = await peer.expect(lambda m: final(m) and m.call_id == cid)  # type: ignore[attr-defined]
    assert isinstance(ok, Response) and ok.status == 200, ok
    tag = ok.to_tag or ""
    peer.send(request(peer, "ACK", port, call_id=cid, cseq=1, branch=f"{cid}a", to_tag=tag), port)
    media = parse_sdp(ok.body).media[0]
    rtp.send_tone(("127.0.0.1", media.port), 440, 0.3)
    await rtp.wait_sent()
    peer.send(request(peer, "BYE", port, call_id=cid, cseq=2, branch=f"{cid}b", to_tag=tag), port)
    r = await peer.expect(lambda m: final(m) and m.call_id == cid)  # type: ignore[attr-defined]
    assert isinstance(r, Response) and r.status == 200


async def _refused(peer: Peer, port: int, dest: str, cid: str, fmt: str, status: int) -> None:
    await _invite(peer, port, dest, cid, SDP.format(ver=1, port=40000, fmt=fmt, dir="sendrecv"))
    r = await peer.expect(lambda m: final(m) and m.call_id == cid)  # type: ignore[attr-defined]
    assert isinstance(r, Response) and r.status == status, r
    peer.send(request(peer, "ACK", port, call_id=cid, cseq=1, branch=f"{cid}i", to_tag=r.to_tag or ""), port)  # fmt: skip


async def _cancelled(peer: Peer, port: int, dest: str, cid: str, ringing: MediaNode) -> None:
    """INVITE, then CANCEL once ``ringing`` (this node, or the carrier) has a ringing call."""
    invite = await _invite(peer, port, dest, cid, SDP.format(ver=1, port=40000, fmt="0", dir="sendrecv"))  # fmt: skip
    await async_wait_until(
        lambda: any(c.call_state.name == "RINGING" for c in ringing.switch.channels.values()),
        what=f"{dest} ringing",
    )
    cancel = invite.replace("INVITE sip:", "CANCEL sip:", 1).replace(" INVITE\n", " CANCEL\n")
    cancel = cancel.split("Content-Type:")[0] + "Content-Length: 0\n\n"
    peer.send(cancel, port)
    r = await peer.expect(lambda m: final(m) and m.call_id == cid and m.status == 487)  # type: ignore[attr-defined]
    assert isinstance(r, Response)
    peer.send(request(peer, "ACK", port, call_id=cid, cseq=1, branch=f"{cid}i", to_tag=r.to_tag or ""), port)  # fmt: skip


async def _esl_originate(node: MediaNode) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(node.esl.port))

    async def frame() -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
        length = 0
        for line in head.split(b"\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head + (await reader.readexactly(length) if length else b"")

    try:
        await frame()  # auth/request
        writer.write(b"auth ClueCon\n\n")
        assert b"+OK accepted" in await frame()
        writer.write(b"api originate sofia/gateway/carrier/15550001 &echo\n\n")
        reply = (await frame()).decode()
        assert "+OK " in reply, reply
        uuid = reply.rsplit("+OK ", 1)[1].strip()
        writer.write(f"api uuid_kill {uuid}\n\n".encode())
        assert b"+OK" in await frame()
    finally:
        writer.close()


async def test_finished_calls_are_freed_by_reference_counting(tmp_path: Path, gc_off: None) -> None:
    carrier, carrier_cdrs = await start_node(tmp_path / "b", {"dialplan": {"rules": RULES_B}})
    node, cdrs = await start_node(
        tmp_path / "a",
        {
            "dialplan": {"rules": RULES_A},
            "gateways": {"carrier": {"proxy": f"127.0.0.1:{carrier.sip_port}"}},
            "esl": {"listen": "127.0.0.1:0", "heartbeat": 0},
        },
    )
    # start_node runs without ESL; this node needs it
    node.esl = EventSocketServer(node.switch, EslSettings.from_config(node.cfg.esl, node.n))
    await node.esl.start()
    for n in (node, carrier):
        assert n.ua is not None
        n.ua.layer.timers = FAST_TIMERS
    refs = _sessions_tracked(node, carrier)
    peer = await Peer.udp()
    rtp = await RtpPeer.open()
    port = node.sip_port
    try:
        await _talk_and_bye(peer, port, "echo", "echo1", rtp)
        await _talk_and_bye(peer, port, "playback", "play1", rtp)
        await _talk_and_bye(peer, port, "conf-room1", "conf1", rtp)
        await _talk_and_bye(peer, port, "15551230000", "transit1", rtp)
        await _talk_and_bye(peer, port, "record", "rec1", rtp)
        await _talk_and_bye(peer, port, "rec15551230001", "rec2", rtp)
        await _esl_originate(node)
        await _refused(peer, port, "echo", "nocodec1", "18", 488)
        await _refused(peer, port, "nowhere", "noroute1", "0", 404)
        await _cancelled(peer, port, "ring", "cancel1", node)
        await _cancelled(peer, port, "95551230000", "cancel2", carrier)
        # on A: 9 inbound calls with a session (the 488 has none) and 4 outbound legs
        # (transit, recorded transit, originate, cancelled transit); on B: those 4 legs'
        # inbound side
        await async_wait_until(lambda: len(cdrs.records) == 13 and len(carrier_cdrs.records) == 4,
                         timeout=15, what="every CDR")  # fmt: skip
        await async_wait_until(
            lambda: not node.switch.active_calls and not carrier.switch.active_calls,
            timeout=15, what="every call to end",
        )  # fmt: skip
        await asyncio.sleep(0.2)  # the transports' connection_lost callbacks
        assert len(refs) == 17
        recordings = sorted(p.name for p in (tmp_path / "a" / "recordings").glob("*.wav"))
        assert recordings == ["rec1.wav", "rec2.wav"]
        # A finished call's transactions stay 64·T1 for retransmissions (32 s by default):
        # they must not keep the call's session, legs and media with them that long.
        assert len(node.ua.layer) and len(carrier.ua.layer)  # type: ignore[union-attr]
        kept = sum(1 for r in refs if r() is not None)
        assert kept == 0, f"{kept} finished sessions kept alive by their transactions"
        await async_wait_until(
            lambda: not len(node.ua.layer) and not len(carrier.ua.layer),  # type: ignore[union-attr]
            timeout=15, what="every transaction to end",
        )  # fmt: skip
        # counted, not kept: a list of them would hide their cycles from the collector
        alive = sum(1 for r in refs if r() is not None)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("switchboard")]
        report = _cycle_report(gc.garbage)
        kinds = collections.Counter(type(o).__qualname__ for o in ours)
        gc.garbage.clear()
        assert not ours, f"cyclic garbage left by finished calls: {dict(kinds)}\n{report}"
        assert alive == 0, f"{alive} finished sessions still referenced"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        peer.close()
        rtp.close()
        await node.stop()
        await carrier.stop()
