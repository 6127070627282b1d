"""Lawful recording on demand in a media node (docs/compliance.md, "Lawful recording").

With ``[intercept] enabled = true`` the node keeps the target list (``intercept_target``)
in memory, refreshed every ``refresh`` seconds by an asynchronous query on the billing
pool (a change of the list is written to ``audit_log`` as a ``read`` by ``node:<name>``).
A call is a target's when its caller or its destination is a listed number (canonical
digits). When such a call's two legs are bridged, its audio is taken from the legs' RTP
endpoints through a *tap* — called for every received packet after the relay has already
forwarded it — so the parties get no tone, no re-INVITE, no SDP change and no added delay:

* ``file`` targets: both legs to a stereo 16-bit WAV (left = what the caller said, as the
  node received it from the caller; right = what the called party said), in ``dir``
  (created 0700, files 0600), with a JSON metadata file (SIP Call-ID, legs, parties, times,
  node, target, warrant) and an entry in the directory's hash chain ``chain.jsonl``:
  each entry holds the SHA-256 of the WAV and of the metadata and the hash of the previous
  entry, so removing, altering or reordering any recording breaks the chain
  (:func:`verify_chain`);
* ``siprec`` targets: a recording session to ``siprec_server`` as an RFC 7866 Session
  Recording Client — INVITE with ``Require: siprec``, Contact ``+sip.src``, a multipart
  body of an SDP offer (one ``sendonly`` audio stream per leg, ``a=label:1``/``2``,
  RFC 4574) and RFC 7865 recording metadata (``application/rs-metadata+xml``,
  ``Content-Disposition: recording-session``); each leg's packets are sent on as RTP to
  the stream the server answered for its label; BYE when the call ends.

Each recording started and finished is written to ``audit_log`` (``recording`` /
``start``, ``finish``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from switchboard.rating.portability import canonical
from switchboard.rtp.resample import StreamResampler
from switchboard.rtp.source import WavRecorder

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from switchboard.media.core import Session, Switch
    from switchboard.media.rtp_endpoint import RtpEndpoint
    from switchboard.media.ua import UserAgent

log = logging.getLogger(__name__)

CHAIN_FILE = "chain.jsonl"
GENESIS = "0" * 64
METADATA_NS = "urn:ietf:params:xml:ns:recording:1"


@dataclass(frozen=True, slots=True)
class Target:
    number: str
    warrant: str
    mode: str  # file | siprec


# -- the target list ---------------------------------------------------------------------
class TargetList:
    """The numbers to record, refreshed from the database (module docstring)."""

    def __init__(self, pool: AsyncConnectionPool, node: str, refresh: float = 5.0) -> None:
        self.pool = pool
        self.node = node
        self.refresh = refresh
        self.targets: dict[str, Target] = {}
        self.loaded = False
        self._task: asyncio.Task[None] | None = None

    def match(self, *numbers: str) -> Target | None:
        for number in numbers:
            digits = canonical(number)
            if digits is not None and digits in self.targets:
                return self.targets[digits]
        return None

    async def load(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT number, warrant, mode FROM intercept_target"
                " WHERE until IS NULL OR until > now() ORDER BY number"
            )
            rows = await cur.fetchall()
            found = {n: Target(n, w, m) for n, w, m in rows}
            if found != self.targets or not self.loaded:
                # the node read the list (its content changed, or the first read)
                await conn.execute(
                    "INSERT INTO audit_log (actor, object, action, key, new)"
                    " VALUES (%s, 'intercept_target', 'read', '', %s)",
                    (f"node:{self.node}", json.dumps({"targets": len(found)})),
                )
        self.targets = found
        self.loaded = True

    async def run(self) -> None:
        while True:
            try:
                await self.load()
            except Exception as exc:  # keep the last list: the database may come back
                log.warning("intercept target list not refreshed: %s", exc)
            await asyncio.sleep(self.refresh)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="intercept-targets")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the hash chain ----------------------------------------------------------------------
def _entry_hash(prev: str, entry: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HashChain:
    """``chain.jsonl``: one JSON line per recording, each bound to the one before."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CHAIN_FILE
        self._lock = threading.Lock()

    def append(self, wav: Path, meta: Path) -> dict[str, Any]:
        """Hash the files and append their entry (blocking: run it in a thread)."""
        with self._lock:
            prev, seq = GENESIS, 0
            if self.path.exists():
                lines = self.path.read_text().splitlines()
                if lines:
                    last = json.loads(lines[-1])
                    prev, seq = last["hash"], int(last["seq"])
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "at": datetime.now(UTC).isoformat(),
                "wav": wav.name,
                "wav_sha256": _file_sha256(wav),
                "meta": meta.name,
                "meta_sha256": _file_sha256(meta),
                "prev": prev,
            }
            entry["hash"] = _entry_hash(prev, entry)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return entry


def verify_chain(directory: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every entry of the chain, and what is wrong (empty: intact): a broken link, an
    altered or missing file."""
    path = directory / CHAIN_FILE
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    if not path.exists():
        return entries, problems
    prev = GENESIS
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"line {n}: not JSON")
            continue
        entries.append(entry)
        if entry.get("prev") != prev or _entry_hash(prev, entry) != entry.get("hash"):
            problems.append(f"entry {entry.get('seq', n)}: chain broken (altered or reordered)")
        prev = str(entry.get("hash"))
        for kind in ("wav", "meta"):
            f = directory / str(entry.get(kind, ""))
            if not f.is_file():
                problems.append(f"entry {entry.get('seq', n)}: {f.name} missing")
            elif _file_sha256(f) != entry.get(f"{kind}_sha256"):
                problems.append(f"entry {entry.get('seq', n)}: {f.name} altered")
    return entries, problems


# -- one recording -----------------------------------------------------------------------
def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def call_metadata(a: Session, b: Session, target: Target, node: str) -> dict[str, Any]:
    ach, bch = a.channel, b.channel
    return {
        "sip_call_id": ach.variables.get("sip_call_id", ""),
        "b_leg_sip_call_id": bch.variables.get("sip_call_id", ""),
        "a_leg": a.uuid,
        "b_leg": b.uuid,
        "caller": ach.profile.caller_id_number,
        "callee": ach.profile.destination_number,
        "target": target.number,
        "warrant": target.warrant,
        "node": node,
        "start": _iso(ach.created_at),
        "answer": _iso(ach.answered_at),
        "channels": {"left": "caller (A-leg)", "right": "called party (B-leg)"},
    }


@dataclass(slots=True)
class FileRecording:
    """Stereo WAV of a bridged call, then metadata and a chain entry at the end."""

    directory: Path
    meta: dict[str, Any]
    a: RtpEndpoint
    b: RtpEndpoint
    wav: Path = field(init=False)
    _fh: Any = field(init=False)
    _rec: WavRecorder = field(init=False)

    def __post_init__(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # both legs in the name: one A-leg bridged twice in a second makes two recordings
        legs = "_".join(str(self.meta[k]) for k in ("a_leg", "b_leg") if self.meta.get(k))
        self.wav = self.directory / f"{stamp}_{legs}.wav"
        fd = os.open(self.wav, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._rec = WavRecorder(self._fh, rate=self.a.codec.sample_rate, legs=2, split=True)
        self.a.tap = self._tap(0)
        self.b.tap = self._tap(1)

    def _tap(self, leg: int) -> Any:
        rec = self._rec
        ep = self.a if leg == 0 else self.b
        # A decoder of its own: G.722 is stateful, and the endpoint's codec object also
        # serves the relay's transcoding. A leg at another rate than the WAV is resampled.
        new_state = getattr(ep.codec, "new_state", None)
        decoder = new_state() if new_state is not None else ep.codec
        pt = ep.codec.payload_type
        resampler = (
            StreamResampler(decoder.sample_rate, rec.rate)
            if decoder.sample_rate != rec.rate
            else None
        )

        def tap(ep: RtpEndpoint, payload_type: int, marker: bool, seq: int, ts: int,
                ssrc: int, payload: bytes) -> None:  # fmt: skip
            if payload_type != pt:
                return  # telephone-events, comfort noise: not audio
            # CodecError (a ValueError): a malformed payload is not recorded
            with contextlib.suppress(ValueError):
                pcm = decoder.decode(payload)
                rec.write_pcm(pcm if resampler is None else resampler.process(pcm), leg)

        return tap

    def stop_taps(self) -> None:
        self.a.tap = None
        self.b.tap = None

    def finish(self, chain: HashChain, end: float) -> dict[str, Any]:
        """Close the WAV, write the metadata, chain both (blocking: run in a thread)."""
        self._rec.close()
        self._fh.close()
        meta = {
            **self.meta,
            "end": _iso(end),
            "wav": self.wav.name,
            "seconds": self._rec.frames_written / self._rec.rate,
        }
        meta_path = self.wav.with_suffix(".json")
        fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        return chain.append(self.wav, meta_path)


# -- SIPREC (RFC 7866 SRC) ---------------------------------------------------------------
def _rs_id() -> str:
    """An RFC 7865 identifier: a 128-bit UUID, base64 (§6.9)."""
    return base64.b64encode(uuid.uuid4().bytes).decode()


def recording_metadata(meta: dict[str, Any], host: str, labels: tuple[str, str]) -> str:
    """RFC 7865 metadata of a two-party call: one communication session, the two
    participants, one stream per participant (what it sends), the associations."""
    session_id, p_caller, p_callee = _rs_id(), _rs_id(), _rs_id()
    s_caller, s_callee = _rs_id(), _rs_id()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = meta.get("answer") or meta.get("start") or now

    def aor(number: str) -> str:
        return quoteattr(f"sip:{number}@{host}")

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<recording xmlns="{METADATA_NS}">\n'
        "  <datamode>complete</datamode>\n"
        f'  <session session_id="{session_id}">\n'
        f"    <sipSessionID>{escape(str(meta['sip_call_id']))}</sipSessionID>\n"
        f"    <start-time>{escape(str(start))}</start-time>\n"
        "  </session>\n"
        f'  <participant participant_id="{p_caller}">\n'
        f"    <nameID aor={aor(str(meta['caller']))}/>\n"
        "  </participant>\n"
        f'  <participant participant_id="{p_callee}">\n'
        f"    <nameID aor={aor(str(meta['callee']))}/>\n"
        "  </participant>\n"
        f'  <stream stream_id="{s_caller}" session_id="{session_id}">\n'
        f"    <label>{labels[0]}</label>\n"
        "  </stream>\n"
        f'  <stream stream_id="{s_callee}" session_id="{session_id}">\n'
        f"    <label>{labels[1]}</label>\n"
        "  </stream>\n"
        f'  <sessionrecordingassoc session_id="{session_id}">\n'
        f"    <associate-time>{now}</associate-time>\n"
        "  </sessionrecordingassoc>\n"
        f'  <participantsessionassoc participant_id="{p_caller}" session_id="{session_id}">\n'
        f"    <associate-time>{now}</associate-time>\n"
        "  </participantsessionassoc>\n"
        f'  <participantsessionassoc participant_id="{p_callee}" session_id="{session_id}">\n'
        f"    <associate-time>{now}</associate-time>\n"
        "  </participantsessionassoc>\n"
        f'  <participantstreamassoc participant_id="{p_caller}">\n'
        f"    <send>{s_caller}</send>\n    <recv>{s_callee}</recv>\n"
        "  </participantstreamassoc>\n"
        f'  <participantstreamassoc participant_id="{p_callee}">\n'
        f"    <send>{s_callee}</send>\n    <recv>{s_caller}</recv>\n"
        "  </participantstreamassoc>\n"
        "</recording>\n"
    )


def siprec_offer(ip: str, ports: tuple[int, int], codecs: tuple[Any, Any]) -> str:
    """The SRC's SDP offer: one sendonly audio stream per leg, labelled 1 and 2."""
    lines = [
        "v=0",
        f"o=switchboard {int(time.time())} 1 IN IP4 {ip}",
        "s=SIPREC",
        f"c=IN IP4 {ip}",
        "t=0 0",
    ]
    for n, (port, codec) in enumerate(zip(ports, codecs, strict=True), 1):
        lines += [
            f"m=audio {port} RTP/AVP {codec.payload_type}",
            f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}",
            f"a=label:{n}",
            "a=sendonly",
        ]
    return "\r\n".join(lines) + "\r\n"


def answered_streams(sdp: bytes) -> dict[str, tuple[str, int]]:
    """label → (address, port) of each audio stream the SRS accepted (port 0: refused)."""
    from switchboard.sdp import parse_sdp

    parsed = parse_sdp(sdp)
    out: dict[str, tuple[str, int]] = {}
    for n, media in enumerate(parsed.media, 1):
        conn = parsed.connection_for(media)
        if media.port == 0 or conn is None:
            continue
        out[(media.attr("label") or str(n)).strip()] = (conn.address, media.port)
    return out


@dataclass(slots=True)
class SiprecRecording:
    """A recording session with an SRS for one bridged call."""

    ua: UserAgent
    server: str  # HOST:PORT
    meta: dict[str, Any]
    a: RtpEndpoint
    b: RtpEndpoint
    socks: list[socket.socket] = field(default_factory=list)
    dialog: Any = None
    peer: Any = None
    started: bool = False

    async def start(self) -> None:
        from switchboard.sip.dialog import Dialog
        from switchboard.sip.ids import new_call_id, new_tag
        from switchboard.sip.message import Request
        from switchboard.sip.transaction import Peer

        host, _, port = self.server.rpartition(":")
        self.peer = Peer("UDP", host, int(port))
        ip = self.a.local_address[0]
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind((ip, 0))
            self.socks.append(s)
        ports = (self.socks[0].getsockname()[1], self.socks[1].getsockname()[1])
        boundary = f"sb{uuid.uuid4().hex}"
        sdp = siprec_offer(ip, ports, (self.a.codec, self.b.codec))
        xml = recording_metadata(self.meta, self.ua.host, ("1", "2"))
        body = (
            f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}"
            f"--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n"
            f"Content-Disposition: recording-session\r\n\r\n{xml}"
            f"--{boundary}--\r\n"
        ).encode()
        uri = f"sip:srs@{self.server}"
        contact = self.ua.contact("UDP", "src", host).replace(">", ">;+sip.src")
        req = Request.build(
            "INVITE", uri, via=self.ua.via(self.peer),
            from_=f"<sip:src@{self.ua.host}>;tag={new_tag(os.urandom(8))}",
            to=f"<{uri}>", call_id=new_call_id(os.urandom(8), self.ua.host), cseq=1,
            contact=contact, content_type=f"multipart/mixed;boundary={boundary}",
            headers=[("Require", "siprec"), ("Accept", "application/sdp"), *self.ua.ua_header],
            body=body,
        )  # fmt: skip
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.ua.send_request(req, self.peer, context=("register", fut))
        resp = await asyncio.wait_for(fut, 40.0)
        if resp is None or not 200 <= resp.status < 300:
            raise ConnectionError(
                f"SRS {self.server} refused: {resp.status if resp else 'no answer'}"
            )
        self.dialog = Dialog.from_response(req, resp)
        self._send_raw(self.dialog.ack(self.ua.via(self.peer)).to_bytes())
        streams = answered_streams(resp.body)
        for label, ep, sock in (("1", self.a, self.socks[0]), ("2", self.b, self.socks[1])):
            if label in streams:
                ep.tap = self._forwarder(sock, streams[label])
        self.started = True

    def _send_raw(self, data: bytes) -> None:
        from switchboard.sip.transaction import Transmit

        assert self.ua.endpoint is not None
        self.ua.endpoint.transmit(Transmit(data, self.peer))

    @staticmethod
    def _forwarder(sock: socket.socket, dest: tuple[str, int]) -> Any:
        ssrc = int.from_bytes(os.urandom(4), "big")
        state = {"seq": int.from_bytes(os.urandom(2), "big")}

        def tap(ep: RtpEndpoint, pt: int, marker: bool, seq: int, ts: int, src: int,
                payload: bytes) -> None:  # fmt: skip
            state["seq"] = (state["seq"] + 1) & 0xFFFF
            header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), state["seq"],
                                 ts, ssrc)  # fmt: skip
            with contextlib.suppress(OSError):
                sock.sendto(header + payload, dest)

        return tap

    def stop_taps(self) -> None:
        self.a.tap = None
        self.b.tap = None

    async def finish(self) -> None:
        self.stop_taps()
        if self.dialog is not None:
            bye = self.dialog.bye(self.ua.via(self.peer))
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.ua.send_request(bye, self.peer, context=("register", fut))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, 40.0)
        for s in self.socks:
            s.close()


# -- the call path -----------------------------------------------------------------------
class CallIntercept:
    """Hooks of the switch: target check at setup, recording at bridge, end at hangup."""

    def __init__(
        self,
        switch: Switch,
        ua: UserAgent,
        targets: TargetList,
        directory: Path,
        *,
        node: str,
        siprec_server: str = "",
    ) -> None:
        self.switch = switch
        self.ua = ua
        self.targets = targets
        self.directory = directory
        self.node = node
        self.siprec_server = siprec_server
        self.chain = HashChain(directory)
        self.active: dict[str, Any] = {}  # A-leg uuid → its recording
        self._a_of: dict[str, str] = {}  # B-leg uuid → A-leg uuid
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recorded = 0
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)

    def install(self) -> None:
        self.switch.setup_hooks.append(self.on_setup)
        self.switch.bridge_hooks.append(self.on_bridge)
        self.switch.hangup_hooks.append(self.on_hangup)

    async def on_setup(self, s: Session) -> None:
        ch = s.channel
        if ch.direction != "inbound":
            return
        target = self.targets.match(ch.profile.caller_id_number, ch.profile.destination_number)
        if target is not None:
            # kept off the channel variables: nothing about it reaches events, CDRs or ESL
            s.data["intercept_target"] = target

    def on_bridge(self, a: Session, b: Session) -> None:
        target = a.data.get("intercept_target")
        if target is None or a.uuid in self.active or a.media is None or b.media is None:
            return
        meta = call_metadata(a, b, target, self.node)
        if target.mode == "siprec" and self.siprec_server:
            rec: Any = SiprecRecording(self.ua, self.siprec_server, meta, a.media, b.media)
            self.active[a.uuid] = rec
            self._a_of[b.uuid] = a.uuid
            self._spawn(self._start_siprec(a.uuid, rec))
        else:
            try:
                rec = FileRecording(self.directory, meta, a.media, b.media)
            except OSError as exc:
                log.error("intercept of %s: cannot record: %s", a.uuid, exc)
                return
            self.active[a.uuid] = rec
            self._a_of[b.uuid] = a.uuid
            meta = {**meta, "file": rec.wav.name}
        self._spawn(self._audit("start", a.uuid, {k: meta[k] for k in (
            "sip_call_id", "caller", "callee", "target", "warrant", "node")} | {
            "mode": target.mode, "file": meta.get("file", ""), "srs": self.siprec_server
            if target.mode == "siprec" else ""}))  # fmt: skip

    def on_hangup(self, s: Session) -> None:
        """Either leg's end ends the recording (the A-leg may go on to another bridge,
        which is then a recording of its own)."""
        key = self._a_of.pop(s.uuid, s.uuid)
        rec = self.active.pop(key, None)
        if rec is None:
            return
        for b_uuid in [b for b, a in self._a_of.items() if a == key]:
            del self._a_of[b_uuid]
        rec.stop_taps()
        self._spawn(self._finish(key, rec, time.time()))

    async def _start_siprec(self, key: str, rec: SiprecRecording) -> None:
        try:
            await rec.start()
        except Exception as exc:
            log.error("intercept of %s: SIPREC session failed: %s", key, exc)
            await self._audit("failed", key, {"srs": rec.server, "error": str(exc)})
        if key not in self.active:  # the call ended while the SRS answered
            await rec.finish()

    async def _finish(self, key: str, rec: Any, end: float) -> None:
        if isinstance(rec, FileRecording):
            entry = await asyncio.get_running_loop().run_in_executor(
                None, rec.finish, self.chain, end
            )
            self.recorded += 1
            await self._audit("finish", key, {"file": rec.wav.name, "wav_sha256": entry[
                "wav_sha256"], "chain_seq": entry["seq"], "chain_hash": entry["hash"]})  # fmt: skip
        else:
            started = rec.started
            await rec.finish()  # BYE if the session is up; its sockets closed in any case
            if started:
                self.recorded += 1
            await self._audit("finish", key, {"srs": rec.server, "recorded": started})

    async def _audit(self, action: str, key: str, new: dict[str, Any]) -> None:
        try:
            async with self.targets.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO audit_log (actor, object, action, key, new)"
                    " VALUES (%s, 'recording', %s, %s, %s)",
                    (f"node:{self.node}", action, key, json.dumps(new, default=str)),
                )
        except Exception as exc:  # the recording itself goes on; the chain has it too
            log.error("intercept audit row %s %s not written: %s", action, key, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for key in list(self.active):
            rec = self.active.pop(key)
            rec.stop_taps()
            self._spawn(self._finish(key, rec, time.time()))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
