"""Calls survive a crash of their media node: journal at bridge time, resume on restart.

**What is written.** When two SIP legs are bridged (``bridge``, ``uuid_bridge``), a
``B`` record in the node's :mod:`journal <switchboard.media.journal>` keeps, for each
leg: the SIP dialog (Call-ID, tags, CSeq counters, route set, remote target, peer and
transport), the local SDP and the negotiated media (codec, remote address), the RTP port,
SSRC, sequence number and timestamp, the channel's uuid, times, caller profile and
variables. When a leg ends, an ``E`` record carries its CDR.

**What a restart does** (:func:`restore` and :func:`start_resumed`, before the node takes new calls): for each
bridge with a live leg, each leg is rebuilt on the *same* RTP port, with the same SSRC
and its sequence number and timestamp moved on by the time that passed (RFC 3550 §5.1:
the far end sees packet loss, not a new stream), the same SIP dialog (our CSeq moved on
by :data:`CSEQ_SKIP`, so a request we sent after the snapshot is never reused), the same
channel uuid, creation and answer time — then the two legs are bridged again. Nothing is
signalled: the node binds the same SIP address, the far ends keep sending to the same
ports, and their in-dialog requests (a BYE retransmitted while the node was down) match
the restored dialogs. Each leg still gets exactly one CDR, from its original start and
answer times to its real end.

A bridge whose other leg had ended, or a leg that cannot be rebuilt (its RTP port is
taken, a TCP/TLS connection that died with the process), is ended cleanly instead: BYE
to its far end, CDR with cause ``NORMAL_TEMPORARY_FAILURE`` and the channel variable
``switchboard_recovery=ended``. CDRs found in ``E`` records are submitted again (stored
once: ingest is idempotent on the leg's uuid), so a CDR the billing writer held in memory
when the process died is not lost.

An inbound call still in setup (``S`` record, no bridge) is answered 503 after the
restart (:func:`hand_back_setups`) so that the router tries another node; a far leg it
had opened and that answers later is ACKed, BYE'd and billed (:func:`install_strays`).

**A node that does not come back** within ``[media] recovery_timeout`` (its restarts fail
or hang) is *reaped* (:func:`end_all`, run by ``switchboard media --reap``, which the
supervisor of ``switchboard up`` starts): a short-lived process of the same node takes
the journal's lock, rebuilds the live legs as a restart would, and ends every one of them
— BYE to each far end with ``Reason: Q.850;cause=38``, a CDR with cause
``NETWORK_OUT_OF_ORDER`` and ``switchboard_recovery=node_lost``, an end record in the
journal — then exits. A node that starts later finds those legs ended (nothing resumed,
their CDRs stored once: ingest is idempotent on the leg's uuid).

Only SIP legs over UDP are journaled. A conference member (its ``add-member``) is
journaled as a record of one leg with its room: a restart puts it back in the room (the
room is created again; mute/deaf flags kept, no PIN asked again). Any other answered
inbound leg outside a bridge — playback, IVR, echo, park — is journaled at its answer
and *ended* by a restart (BYE, CDR with ``NORMAL_TEMPORARY_FAILURE``,
``switchboard_recovery=ended``): where it was in its prompt or menu is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from switchboard.media.applications.conference import parse_conference_arg
from switchboard.media.causes import Cause
from switchboard.media.channel import CallerProfile
from switchboard.media.rtp_endpoint import RtpEndpoint
from switchboard.media.ua import InboundLeg, OutboundLeg, SipLeg, codec_specs, engine_codec
from switchboard.sdp import Negotiated, parse_sdp
from switchboard.sip.dialog import INITIAL_LOCAL_SEQ, Dialog, DialogState
from switchboard.sip.transaction import Output, Peer, TransactionLayer, Transmit
from switchboard.sip.uri import NameAddr

if TYPE_CHECKING:
    from switchboard.media.cdr import CdrSink
    from switchboard.media.core import Session
    from switchboard.media.journal import Journal, JournalState
    from switchboard.media.ua import UserAgent
    from switchboard.sip.message import Request, Response

log = logging.getLogger(__name__)

CSEQ_SKIP = 1000  # our CSeq after a restart: past any request sent after the snapshot
SEQ_SKIP = 100  # RTP sequence numbers skipped on top of the time that passed
PACKETS_PER_SECOND = 50  # 20 ms packets: how far the sequence number moves per second
_SKIP_VARS = frozenset({"switch_r_sdp", "switch_l_sdp"})  # kept as SDP, not variables
RECOVERY_VAR = "switchboard_recovery"  # "resumed", "ended" or "node_lost" on recovered legs
MOVED = "recovery_moved"  # Session.data key: the leg's RTP port changed at the restart
RESEND_2XX = "recovery_resend_2xx"  # Session.data key: the task resending its 2xx
HUNG_UP = "recovery_hung_up"  # Session.data key: (time, cause) its far end had hung up
LOST_CAUSE = Cause.NETWORK_OUT_OF_ORDER  # a reaped leg: its node did not come back


def snapshot_leg(s: Session) -> dict[str, Any] | None:
    """A leg's recoverable state, or None when it cannot be resumed (not a SIP leg over
    UDP with a confirmed dialog and negotiated media)."""
    leg = s.leg
    if not isinstance(leg, SipLeg) or leg.dialog is None or leg.negotiated is None:
        return None
    if leg.peer.transport != "UDP" or leg.rtp.closed or leg.local_sdp is None:
        return None
    ch = s.channel
    d = leg.dialog
    w = leg.rtp.writer
    return {
        "uuid": s.uuid,
        "dir": ch.direction,
        "name": ch.name,
        "created": ch.created_at,
        "answered": ch.answered_at,
        "other": ch.other_leg,  # an originated leg's A-leg: a call counts once, not twice
        "profile": dataclasses.asdict(ch.profile),
        "vars": {k: v for k, v in ch.variables.items() if k not in _SKIP_VARS},
        "call_id": leg.call_id,
        "tag": leg.local_tag,
        "peer": [leg.peer.transport, leg.peer.host, leg.peer.port],
        "dialog": {
            "local": str(d.local),
            "remote": str(d.remote),
            "target": d.remote_target,
            "routes": [str(r) for r in d.route_set],
            "lseq": d.local_seq,
            "rseq": d.remote_seq,
            "secure": d.secure,
            "uac": d.is_uac,
            "contact": d.local_contact,
        },
        "rtp": {
            "ip": leg.rtp.local_address[0],
            "port": leg.rtp.port,
            "ssrc": w.ssrc,
            "seq": w.sequence_number,
            "ts": w.timestamp,
            "rate": leg.rtp.codec.clock_rate,
            "at": time.time(),
        },
        "neg": dataclasses.asdict(leg.negotiated),
        "sdp": [leg.sdp_session_id, leg.sdp_version, leg.local_sdp.to_bytes().decode()],
        "codecs": [c.name for c in leg.codecs],
        "gateway": getattr(leg, "gateway", ""),
    } | _awaiting_ack(leg)


def _awaiting_ack(leg: SipLeg) -> dict[str, Any]:
    """An inbound leg's 2xx as sent and when, while its ACK has not come (the bridge is
    usually journaled a round trip before it): a restart retransmits it."""
    if not isinstance(leg, InboundLeg) or leg.ok_2xx is None or leg.acked.is_set():
        return {}
    raw = leg.ok_2xx if isinstance(leg.ok_2xx, bytes) else leg.ok_2xx.to_bytes()
    return {"ok": [raw.decode("utf-8", "replace"), leg.ok_at]}


def install(journal: Journal, switch: Any, metrics: Any = None) -> None:
    """Journal every bridge of two resumable legs (their cost on /metrics); inbound
    calls' setups are journaled by :func:`install_setups`."""

    # key → (leg uuids, app) of the records written, to write them again on an update;
    # forgotten when their legs end (on_hangup below)
    records: dict[str, tuple[tuple[str, ...], list[str] | None]] = {}

    records_with_app: set[str] = set()  # conference members journaled with their room

    def on_hangup(s: Session) -> None:
        records.pop(s.uuid, None)
        records_with_app.discard(s.uuid)

    switch.hangup_hooks.append(on_hangup)

    def journal_alone(uuid: str, app: list[str] | None) -> None:
        """A leg in an application of its own (not a bridge): a record of one leg —
        ``app`` is what a restart runs on it again (a conference); without one the
        restart ends it cleanly (BYE, CDR) instead of leaving it silent."""
        s = switch.session(uuid)
        if s is None or s.is_hungup:
            return
        t0 = time.thread_time()
        leg = snapshot_leg(s)
        if leg is None:
            return
        journal.bridged(uuid, (uuid,), {"legs": [leg], "app": app})
        records[uuid] = ((uuid,), app)
        if metrics is not None:
            metrics.journal_seconds.inc(time.thread_time() - t0)
            metrics.journal_records.inc()

    def on_update(uuid: str) -> None:
        """A re-INVITE changed a journaled leg (far-end address, hold, codec): its record
        is written again, or the next restart would send to where the far end was."""
        key = journal.record_of(uuid)
        if key is None:
            return
        rec = records.get(key)
        if rec is None:
            return
        legs = [switch.session(leg_uuid) for leg_uuid in rec[0]]
        if any(s is None or s.is_hungup for s in legs):
            return
        t0 = time.thread_time()
        snaps = [snapshot_leg(s) for s in legs if s is not None]
        if any(x is None for x in snaps):
            return
        journal.bridged(key, rec[0], {"legs": snaps, "app": rec[1]})
        if metrics is not None:
            metrics.journal_seconds.inc(time.thread_time() - t0)
            metrics.journal_records.inc()

    def on_event(ev: Any) -> None:
        name = ev.name
        if name == "CHANNEL_HANGUP":
            # the far end's BYE, answered 200 in this very step: journaled now, as its CDR
            # (the E record) comes a few loop turns later — a restart in between must
            # neither BYE a far end that hung up nor bill it up to the restart
            uuid = ev.channel_uuid
            if journal.tracks(uuid):
                ch = switch.channel(uuid)
                if ch is not None and ch.hangup_disposition == "recv_bye" and ch.hangup_cause:
                    journal.hung_up(uuid, ch.hangup_cause.name, ch.hangup_at or time.time())
        elif name == "CALL_UPDATE":
            on_update(ev.channel_uuid)
        elif name == "CHANNEL_ANSWER":
            uuid = ev.channel_uuid
            # answered by an application (echo, IVR...): no longer a setup to hand back
            if journal.in_setup(uuid):
                journal.setup_over(uuid)
            ch = switch.channel(uuid)
            if ch is None:
                return
            if ch.direction == "inbound" and ch.application != "bridge":
                journal_alone(uuid, None)  # playback, IVR, echo, park...
            elif ch.direction == "outbound" and ch.other_leg and journal.in_setup(ch.other_leg):
                # A bridge's far leg answered — its 2xx ACKed in this very step — while
                # the caller's leg is still in setup: the bridge record comes a loop turn
                # later, when the bridge application runs again. A crash in between left
                # a leg the far end keeps (and bills) with no BYE and no CDR; journaled
                # alone here, a restart hands the caller's setup back (503) and ends this
                # leg (BYE, CDR). The bridge record supersedes it.
                journal_alone(uuid, None)
        elif name == "CUSTOM":
            # a conference's add-member (read from the channel: events carry no headers
            # when no Event Socket client wants them); the member rejoins its room on a
            # restart, without its PIN again (it was let in)
            uuid = ev.channel_uuid
            ch = switch.channel(uuid) if uuid else None
            if ch is None or ch.application != "conference" or uuid in records_with_app:
                return
            room = ch.variables.get("conference_name")
            if not room:
                return  # still at its PIN prompt
            _room, _pin, flags = parse_conference_arg(ch.application_data)
            kept = "|".join(sorted(flags & {"mute", "deaf"}))
            records_with_app.add(uuid)
            journal_alone(uuid, ["conference", room + (f"+flags{{{kept}}}" if kept else "")])

    switch.events.subscribe(on_event, headers=False)

    def on_bridge(a: Session, b: Session) -> None:
        t0 = time.thread_time()
        legs = (snapshot_leg(a), snapshot_leg(b))
        if legs[0] is None or legs[1] is None:
            return
        journal.bridged(a.uuid, (a.uuid, b.uuid), {"legs": list(legs)})
        records[a.uuid] = ((a.uuid, b.uuid), None)
        records.pop(b.uuid, None)
        if metrics is not None:
            metrics.journal_seconds.inc(time.thread_time() - t0)
            metrics.journal_records.inc()

    switch.bridge_hooks.append(on_bridge)


def install_setups(journal: Journal, ua: UserAgent, metrics: Any = None) -> None:
    """Journal every inbound INVITE over UDP (an ``S`` record) the moment it is received,
    in the same step as its 100 Trying: from that 100 on, the router waits for our final
    response (Timer C, minutes) instead of retransmitting or trying another node, so a
    setup journaled only once its session exists (after the RTP port is opened, a few
    loop turns later) left a window in which a crash cost the caller the call — at 50
    calls/s under load, a few calls per kill. The restart answers every such setup 503
    (:func:`hand_back_setups`). An INVITE refused before its session existed gets its
    ``X`` record at once."""

    def on_invite(pending: Any) -> None:
        peer = pending.peer
        if peer.transport != "UDP":
            return
        t0 = time.thread_time()
        invite = pending.request.to_bytes().decode("utf-8", "replace")
        journal.setup(pending.uuid, {"invite": invite, "tag": pending.tag,
                                     "peer": [peer.transport, peer.host, peer.port]})  # fmt: skip
        if metrics is not None:
            metrics.journal_seconds.inc(time.thread_time() - t0)
            metrics.journal_records.inc()

    ua.invite_hooks.append(on_invite)
    ua.setup_refused_hooks.append(journal.setup_over)
    ua.ack_hooks.append(lambda leg: journal.acked(leg.session.uuid))


class JournalingSink:
    """The CDR sink of a node with recovery: a journaled leg's end record carries its CDR
    (submitted again after a crash: the billing writer may not have stored it)."""

    def __init__(self, sink: CdrSink, journal: Journal, metrics: Any = None) -> None:
        self.sink = sink
        self.journal = journal
        self.metrics = metrics

    def submit(self, cdr: Any) -> None:
        self.journal.setup_over(cdr.call_id)  # a setup that ended (X), if it was one
        if self.journal.tracks(cdr.call_id):
            t0 = time.thread_time()
            self.journal.ended(cdr.call_id, cdr.to_json())
            if self.metrics is not None:
                self.metrics.journal_seconds.inc(time.thread_time() - t0)
                self.metrics.journal_records.inc()
        self.sink.submit(cdr)


def install_strays(ua: UserAgent, sink: CdrSink, node: str) -> None:
    """A leg this node answered for nobody — its INVITE left before a crash, its 2xx came
    to the restarted node, which ACKs and BYEs it (:meth:`UserAgent._end_stray_2xx`) — is
    still a leg the far end bills: it gets a CDR (answered, 0 s, ``NORMAL_TEMPORARY_FAILURE``,
    its SIP Call-ID), so it is not unbilled."""
    from switchboard.billing.cdr import Cdr

    def on_stray(resp: Any) -> None:
        now = datetime.now(UTC)
        try:
            sink.submit(
                Cdr(
                    call_id=str(uuid.uuid4()),
                    start_time=now,
                    answer_time=now,
                    end_time=now,
                    destination=resp.to.uri.user or "",
                    disposition="ANSWERED",
                    sip_code=resp.status,
                    hangup_cause=Cause.NORMAL_TEMPORARY_FAILURE.name,
                    direction="outbound",
                    node=node,
                    sip_call_id=resp.call_id,
                )
            )
        except Exception:  # a CDR we cannot build must not break the SIP path
            log.exception("call %s: no CDR for the stray leg", resp.call_id)

    ua.stray_hooks.append(on_stray)


def hand_back_setups(ua: UserAgent, state: JournalState, journal: Journal | None = None) -> int:
    """Answer 503 to every inbound call whose setup the crash cut short (RFC 3261 §16.7:
    a proxy tries its next destination on a 5xx) — the router then sends the call to
    another node instead of the caller waiting for an answer that died with the process.
    The far leg that INVITE may have opened is ended when its 2xx arrives (a stray 2xx:
    ACK, BYE).

    The 503 goes out in a server transaction of its own (:meth:`TransactionLayer.
    answer_unseen`): Timer G retransmits it, and a retransmission of the INVITE still
    queued on the socket gets the 503 again. Before, the 503 was sent bare, and that
    retransmission, read after the restart, started a new call on this node: it was
    answered while the router had already sent the call elsewhere, and both legs ran
    until their RTP timeout, billed twice (bench/chaos: cdr_duplicated 3)."""
    from switchboard.sip.message import Request, make_response, parse_message

    n = 0
    assert ua.endpoint is not None
    endpoint = ua.endpoint
    for key, rec in state.pending_setup_items().items():
        if journal is not None:
            journal.setup_over(key)  # handed back: a later restart has nothing to answer
        try:
            req = parse_message(rec["invite"].encode())
            if not isinstance(req, Request):
                continue
            # no Reason: Q.850 here — it would tell the router the far end refused the call
            # (no failover); this 503 says the node itself could not serve it
            resp = make_response(req, 503, None, to_tag=rec["tag"])
            transport, host, port = rec["peer"]
            peer = Peer(transport, host, int(port))
        except Exception as exc:  # a damaged record: the router's timers end that call
            log.warning("journal: setup not handed back: %s", exc)
            continue
        endpoint.feed(functools.partial(_answer_unseen, ua.layer, req, peer, resp))
        n += 1
    if n:
        log.warning("recovery: %d call(s) in setup handed back to the router (503)", n)
    return n


def _answer_unseen(
    layer: TransactionLayer, req: Request, peer: Peer, resp: Response, now: float
) -> list[Output]:
    return layer.answer_unseen(req, peer, resp, now)


Restored = tuple[list["Session"], bool, "tuple[str, str] | None"]  # legs, whole, app


async def restore(
    ua: UserAgent, state: JournalState, sink: CdrSink | None, *, any_port: bool = False
) -> list[Restored]:
    """Rebuild the journal's live bridges (before the UA listens: a retransmitted BYE must
    find its dialog); each entry: the rebuilt legs and whether the bridge is whole. CDRs
    of ended legs are submitted again. :func:`start_resumed` then bridges or ends them."""
    from switchboard.billing.cdr import Cdr

    replayed = 0
    if sink is not None:
        for _uuid, (_t, cdr_json) in state.ends.items():
            try:
                sink.submit(Cdr.from_json(cdr_json))
                replayed += 1
            except ValueError as exc:
                log.warning("journal: CDR of an ended leg not replayed: %s", exc)
    out: list[Restored] = []
    # a leg that must move (its port taken) takes a port no other journaled leg needs
    if ua.ports is not None:
        ua.ports.hand_out_last({int(leg["rtp"]["port"]) for rec in state.live()
                                for leg in rec["legs"] if "rtp" in leg})  # fmt: skip
    for rec in state.live():
        legs = [leg for leg in rec["legs"] if leg["uuid"] not in state.ends]
        sessions: list[Session] = []
        for data in legs:
            try:
                s = await _restore_leg(ua, data, any_port=any_port,
                                       awaiting_ack=state.awaiting_ack(data))  # fmt: skip
            except Exception as exc:  # a leg we cannot rebuild: say so, end what we can
                log.error("call %s: leg %s not resumed: %s", data["call_id"], data["uuid"], exc)
                continue
            # read again once every leg is rebuilt: the far ends stream to each port from
            # the moment it is bound, and a thousand legs' packets served one wake-up per
            # datagram starved the rebuild of its loop — a warm spare at 50 calls/s took
            # over 10 s (recovery_timeout: reaped) instead of ~1 s
            if s.media is not None:
                s.media.pause_reading()
            sessions.append(s)
        app = rec.get("app")
        if len(rec["legs"]) == 1:  # a leg in an application: resumed only into a conference
            whole = len(sessions) == 1 and bool(app)
        else:
            whole = len(sessions) == len(rec["legs"]) == 2
        for s in sessions:
            if s.uuid in state.hangups:  # its far end had hung up before the crash
                s.data[HUNG_UP] = state.hangups[s.uuid]
                whole = False
        for s in sessions:
            s.channel.set_var(RECOVERY_VAR, "resumed" if whole else "ended")
        out.append((sessions, whole, (str(app[0]), str(app[1])) if app else None))
    for sessions, _whole, _app in out:
        for s in sessions:
            if s.media is not None:
                s.media.resume_reading()
    _end_partners_together(ua, out)
    if replayed:
        log.warning("recovery: %d CDR(s) of legs ended before the restart submitted again",
                    replayed)  # fmt: skip
    return out


def _end_partners_together(ua: UserAgent, restored: list[Restored]) -> None:
    """Until a rebuilt bridge is re-established, the end of either leg ends the other.

    Installed before the SIP socket listens: a BYE the far end retransmitted while the
    node was down can arrive as soon as the UDP socket is bound — while the node still
    binds TCP and before :func:`start_resumed` runs the bridge app — and end one leg of
    a bridge nobody has re-established. Without this its partner stayed up unbridged,
    parked and billed until its RTP timeout — one way the HA lab's media kill (no warm
    spare: seconds down, callers hanging up meanwhile) left carrier legs up ~65 s."""
    sw = ua.switch
    partners: dict[str, str] = {}
    for sessions, whole, app in restored:
        if whole and app is None and len(sessions) == 2:
            a, b = sessions
            partners[a.uuid], partners[b.uuid] = b.uuid, a.uuid
    if not partners:
        return

    def on_hangup(s: Session) -> None:
        other = partners.pop(s.uuid, None)
        if other is not None:
            partners.pop(other, None)
            sw.hangup(other, Cause.NORMAL_CLEARING)  # a no-op if the bridge ended it

    sw.hangup_hooks.append(on_hangup)


def start_resumed(ua: UserAgent, restored: list[Restored]) -> tuple[int, int]:
    """Bridge the whole bridges again, put conference members back in their rooms, end
    the rest — halves of bridges, legs in playback or IVR — (BYE, CDR); (resumed, ended)
    legs."""
    resumed = ended = 0
    sw = ua.switch
    for sessions, whole, _app in restored:
        for s in sessions if whole else ():
            moved = s.data.pop(MOVED, False)
            if isinstance(s.leg, InboundLeg) and s.leg.ok_2xx is not None:
                # its re-INVITE waits for the ACK (§14.1: no new INVITE transaction while
                # the first one is in progress)
                resend_2xx(ua, s.leg, reoffer_after=moved)
            elif moved and isinstance(s.leg, SipLeg) and not s.is_hungup:
                reoffer(s.leg)
    for sessions, whole, app in restored:
        if whole and app is not None and len(sessions) == 1:
            # not parked: a parked channel waits for commands instead of running its apps
            sw.start_apps(sessions[0], [app])  # the room is created again by its first member
            resumed += 1
            continue
        if whole:
            a, b = sessions
            if a.is_hungup or b.is_hungup:
                # a BYE came in while the UDP socket listened and the rest of the node
                # was still starting: the partner hook (restore) has ended the other leg
                continue
            b.parked = True
            sw.start_apps(b, [])
            sw.start_apps(a, [("_bridge_existing", b.uuid)])
            resumed += 2
            continue
        # half a bridge (its partner ended or could not be rebuilt), or a leg in playback
        # or IVR: where it was cannot be taken up again; the partner of a leg whose far end
        # had hung up ends as its bridge would have ended it, with that cause
        cause = next((_cause(s.data[HUNG_UP][1]) for s in sessions if HUNG_UP in s.data),
                     Cause.NORMAL_TEMPORARY_FAILURE)  # fmt: skip
        for s in sessions:
            _end(sw, s, cause)
            ended += 1
    if resumed or ended:
        log.warning("recovery: %d call leg(s) resumed, %d ended (partner gone)", resumed, ended)
    return resumed, ended


def resend_2xx(
    ua: UserAgent, leg: InboundLeg, *, reoffer_after: bool = False
) -> asyncio.Task[None]:
    """RFC 3261 §13.3.1.4 for a resumed leg whose 2xx no ACK had confirmed before the
    crash (the caller may never have got it: a datagram lost, the node's retransmissions
    died with it): the journaled 2xx is sent again at T1, 2·T1... up to T2 apart until
    the ACK comes, for what remains of 64·T1 since the original 2xx; no ACK by then ends
    the call as the live node would — BYE to the caller, the bridge's other leg BYE'd,
    CDRs with ``RECOVERY_ON_TIMER_EXPIRE``. ``reoffer_after``: the leg's RTP port moved,
    the new offer (:func:`reoffer`) follows the ACK."""
    raw = leg.ok_2xx if isinstance(leg.ok_2xx, bytes) else b""
    out = Transmit(raw, leg.peer)
    timers = ua.layer.timers
    deadline = leg.ok_at + 64 * timers.t1
    s = leg.session

    async def run() -> None:
        interval = timers.t1
        while not leg.acked.is_set() and not s.is_hungup:
            left = deadline - time.time()
            if left <= 0:
                log.warning("call %s: no ACK for the 2xx resent after the restart: ended",
                            leg.call_id)  # fmt: skip
                ua.switch.hangup(s.uuid, Cause.RECOVERY_ON_TIMER_EXPIRE)
                return
            assert ua.endpoint is not None
            ua.endpoint.transmit(out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leg.acked.wait(), min(interval, left))
            interval = min(2 * interval, timers.t2)
        if reoffer_after and leg.acked.is_set() and not s.is_hungup:
            reoffer(leg)

    task = asyncio.ensure_future(run())
    s.data[RESEND_2XX] = task  # a reference: the loop keeps only weak ones
    return task


def _cause(name: str) -> Cause:
    try:
        return Cause[name]
    except KeyError:
        return Cause.NORMAL_CLEARING


def _end(sw: Any, s: Session, cause: Cause) -> bool:
    """End a rebuilt leg: BYE with ``cause`` — or, when its far end had hung up before the
    crash (an ``H`` record), silently, at the time and with the cause it hung up with."""
    s.parked = True
    sw.start_apps(s, [])
    hung = s.data.pop(HUNG_UP, None)
    if hung is None:
        return bool(sw.hangup(s.uuid, cause))
    if s.is_hungup:
        return False
    if isinstance(s.leg, SipLeg):
        s.leg.bye_sent = True  # the dialog is over: no BYE
    sw.on_remote_hangup(s, _cause(hung[1]), disposition="recv_bye", at=float(hung[0]))
    if isinstance(s.leg, SipLeg):
        s.leg.close()
    return True


def reoffer(leg: SipLeg) -> None:
    """RFC 3264 §8: a new offer in a re-INVITE — same session id, version moved on, the
    leg's negotiated codec (and telephone-event) on its new port — so that the far end
    sends its media to where the leg is now. Its answer is applied as any re-INVITE's
    (:meth:`UserAgent._ack_reinvite`)."""
    from switchboard.media.ua import codec_specs as specs
    from switchboard.sdp import create_offer

    neg = leg.negotiated
    codecs = (specs([neg.codec]) if neg is not None else []) or leg.codecs
    leg.sdp_version += 1
    offer = create_offer(
        codecs=codecs,
        event_pt=neg.event_pt if neg is not None else None,
        address=leg.ua.leg_sdp_ip(leg),
        port=leg.rtp.port,
        session_id=leg.sdp_session_id,
        version=leg.sdp_version,
        srtp=leg._reoffer_srtp(),
        srtp_key=leg.srtp_key,
    )
    leg.local_sdp = offer
    leg.send_in_dialog("INVITE", body=offer.to_bytes(), content_type="application/sdp")


def end_all(ua: UserAgent, restored: list[Restored]) -> int:
    """A reaper's work: end every rebuilt leg — BYE (``Reason: Q.850;cause=38``), CDR
    with :data:`LOST_CAUSE` and ``switchboard_recovery=node_lost`` — whole bridges and
    halves alike; the number of legs ended."""
    sw = ua.switch
    n = 0
    for sessions, _whole, _app in restored:
        for s in sessions:
            s.channel.set_var(RECOVERY_VAR, "node_lost")
            if _end(sw, s, LOST_CAUSE):
                n += 1
    if n:
        log.warning("recovery: %d call leg(s) of a node that did not come back ended (%s)",
                    n, LOST_CAUSE.name)  # fmt: skip
    return n


async def _restore_leg(
    ua: UserAgent, data: dict[str, Any], *, any_port: bool = False, awaiting_ack: bool = False
) -> Session:
    sw = ua.switch
    r = data["rtp"]
    elapsed = max(0.0, time.time() - float(r["at"]))
    neg = Negotiated(**data["neg"])
    kw: dict[str, Any] = {
        "allocator": ua.ports,
        "codec": engine_codec(neg),
        "event_pt": neg.event_pt,
        "ssrc": int(r["ssrc"]),
        "seq": (int(r["seq"]) + int(elapsed * PACKETS_PER_SECOND) + SEQ_SKIP) & 0xFFFF,
        "ts": (int(r["ts"]) + int(elapsed * int(r["rate"]))) & 0xFFFFFFFF,
    }
    ip = str(r.get("ip") or ua.rtp_ip)  # the leg's family (journals before IPv6: IPv4)
    moved = False
    try:
        rtp = await RtpEndpoint.open(ip, port=int(r["port"]), **kw)
    except OSError as exc:
        # another process took the port while the node was down: another port of the
        # range, and (not for a reaper, which only says goodbye) a re-INVITE telling the
        # far end where its media goes now (:func:`reoffer`)
        rtp = await RtpEndpoint.open(ip, **kw)
        moved = not any_port
        log.warning("call %s: RTP port %s taken (%s): leg moved to %d", data["call_id"],
                    r["port"], exc, rtp.port)  # fmt: skip
    try:
        s = sw.create_session(
            direction=data["dir"],
            name=data["name"],
            profile=CallerProfile(**data["profile"]),
            variables=data["vars"],
            uuid=data["uuid"],
            admitted=False,
            other_leg=data.get("other"),
        )
    except Exception:
        rtp.close()
        raise
    ch = s.channel
    ch.created_at = float(data["created"])
    ch.mark_answered(float(data["answered"] or data["created"]))
    s.answered.set()
    dl = data["dialog"]
    dialog = Dialog(
        call_id=data["call_id"],
        local=NameAddr.parse(dl["local"]),
        remote=NameAddr.parse(dl["remote"]),
        remote_target=dl["target"],
        route_set=[NameAddr.parse(x) for x in dl["routes"]],
        local_seq=(dl["lseq"] or INITIAL_LOCAL_SEQ) + CSEQ_SKIP,
        remote_seq=dl["rseq"],
        secure=bool(dl["secure"]),
        state=DialogState.CONFIRMED,
        is_uac=bool(dl["uac"]),
        local_contact=dl["contact"],
    )
    transport, host, port = data["peer"]
    common: dict[str, Any] = {
        "ua": ua,
        "session": s,
        "peer": Peer(transport, host, int(port)),
        "call_id": data["call_id"],
        "local_tag": data["tag"],
        "rtp": rtp,
        "codecs": codec_specs(data["codecs"]) or ua.codecs,
        "dialog": dialog,
    }
    leg: SipLeg
    if data["dir"] == "inbound":
        leg = InboundLeg(**common, final_sent=True, answered=True,
                         contact=ua.contact(transport, peer_host=host))  # fmt: skip
    else:
        gateway = data.get("gateway", "")
        leg = OutboundLeg(**common, answered=True, gateway=gateway)
        if gateway:
            ua.gateway_calls[gateway] = ua.gateway_calls.get(gateway, 0) + 1
            s.data["gateway"] = gateway
            s.data["gateway_slot"] = gateway
    if awaiting_ack and isinstance(leg, InboundLeg):
        # its caller may never have got the 2xx: retransmitted by start_resumed
        text, at = data["ok"]
        leg.ok_2xx, leg.ok_at = str(text).encode(), float(at)
    else:
        leg.acked.set()
    if moved:
        s.data[MOVED] = True
    session_id, version, local_sdp = data["sdp"]
    leg.sdp_session_id, leg.sdp_version = str(session_id), int(version)
    leg.local_sdp = parse_sdp(local_sdp.encode())
    leg.apply_negotiated(neg)
    s.leg = leg
    s.media = rtp
    ua._wire_media(leg)
    ua.legs[leg.key] = leg
    return s
