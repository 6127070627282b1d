"""The media node's channel journal: what a restarted node needs to resume its calls.

One append-only text file per node, ``<state_dir>/journal/<node>.jnl`` (``[media]
journal_dir`` moves it), one record per line:

* ``B <json>`` — a bridge was established (or re-established), or a leg is in an
  application of its own (one leg, ``app``: a conference room to rejoin, or none): the legs' recoverable
  state (SIP dialog, SDPs, RTP port/SSRC/sequence/timestamp, channel times and
  variables), written by :mod:`switchboard.media.recovery`;
* ``E <uuid> <cdr-json>`` — a journaled leg ended; its CDR rides along, so a CDR the
  billing writer had not stored when the process died is submitted again on restart
  (ingest is idempotent on the leg's uuid: never twice);
* ``H <uuid> <time> <cause>`` — the far end ended a journaled leg (its BYE answered): a
  crash before the leg's ``E`` (its CDR comes a few loop turns later) must not have the
  restart BYE a far end that already hung up, nor bill it up to the restart;
* ``A <uuid>`` — the caller ACKed the 2xx of inbound leg ``uuid``, whose ``B`` record
  was written before that ACK came (the record then carries the 2xx as sent, ``ok``): a
  restart retransmits the 2xx of a leg with no ``A`` (RFC 3261 §13.3.1.4) and ends the
  call when no ACK comes within 64·T1 of the original answer;
* ``S <uuid> <json>`` — an inbound call in setup (its INVITE, our To tag, the peer): a
  restarted node answers it 503 so that the router tries another node, instead of the
  caller waiting for an answer that died with the process;
* ``X <uuid>`` — that setup is over without a bridge (answered by an application, or
  ended). A setup whose leg appears in a ``B`` record is over too (nothing written).

**Cost and durability.** A record is one ``write(2)`` of a line already formatted on the
event loop — into the page cache, a few microseconds, never waiting for the disk — so a
*process* crash (``kill -9``, OOM, bug) loses nothing that was written. A background thread
calls ``fdatasync`` once per ``fsync_interval`` (1 s) when something was written: a *power
cut* or kernel crash loses at most the last second of records — bridges established in
that second are not resumed (their far ends time out), and ended legs in that second have
their CDR only if the billing writer stored it. A lost disk loses the journal: the node
then starts with no call to resume.

**Size.** Ended calls are forgotten: the file is rewritten with only the live bridges and
the recent ends (:data:`KEEP_ENDS_FOR` seconds) when it passes :data:`ROTATE_BYTES` and
at every start.

**One writer.** A node holds an exclusive ``flock`` on ``<node>.lock`` next to its
journal for as long as it runs (:func:`lock`); the kernel drops it when the process dies,
however it dies. A reaper (``switchboard media --reap``: the node did not come back within
``recovery_timeout``) ends the journaled calls only while it holds that lock, and writes
their end records before it lets go — so a node that starts late waits for it, then finds
those calls ended: it neither resumes nor bills them again.

**Heartbeat.** A node that is up (listening, not a reaper) touches ``<node>.lock`` once
per ``fsync_interval`` from the same thread (:attr:`Journal.alive`); its modification time
is when the node was last known up. A node starting on a journal whose heartbeat is older
than ``recovery_timeout`` plus that interval (:func:`down_for`) was gone too long for its calls to be resumed —
its restarts crashed or hung, or the machine was off: it ends them as a reaper would,
whoever restarts it (``switchboard up``, systemd, a container runtime, an operator).

**Damage.** A record cut short by a crash mid-``write`` (only the last line can be) or a
line that does not parse is skipped and logged; every whole record is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FSYNC_INTERVAL = 1.0  # seconds between fdatasync calls (what a power cut may lose)
ROTATE_BYTES = 64 << 20  # rewrite the file with the live records past this size
KEEP_ENDS_FOR = 120.0  # seconds an end record (with its CDR) survives a rewrite


@dataclass
class JournalState:
    """What a journal file says: live bridges and recent ends."""

    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)  # A-leg uuid → record
    ends: dict[str, tuple[float, str]] = field(default_factory=dict)  # leg uuid → (t, cdr)
    skipped: int = 0  # damaged records (logged)
    setups: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid → S record
    hangups: dict[str, tuple[float, str]] = field(default_factory=dict)  # uuid → (t, cause)
    acks: set[str] = field(default_factory=set)  # inbound legs whose 2xx was ACKed (A)

    def awaiting_ack(self, leg: dict[str, Any]) -> bool:
        """Whether a ``B`` record's leg was answered with a 2xx no ACK has confirmed: its
        record carries that 2xx (``ok``) and no ``A`` record followed."""
        return "ok" in leg and leg["uuid"] not in self.acks

    def pending_setups(self) -> list[dict[str, Any]]:
        """Inbound calls whose setup was cut short: neither bridged nor over."""
        return list(self.pending_setup_items().values())

    def pending_setup_items(self) -> dict[str, dict[str, Any]]:
        """:meth:`pending_setups` by the call's uuid."""
        bridged = {leg["uuid"] for rec in self.bridges.values() for leg in rec["legs"]}
        return {uuid: rec for uuid, rec in self.setups.items() if uuid not in bridged}

    def live(self) -> list[dict[str, Any]]:
        """Bridges with at least one leg not ended."""
        return [
            rec
            for rec in self.bridges.values()
            if any(leg["uuid"] not in self.ends for leg in rec["legs"])
        ]


class JournalBusy(Exception):
    """Another live process (the node itself, or a reaper) holds the journal's lock."""


def lock(path: Path, *, wait: bool) -> int:
    """Take the exclusive lock of the journal at ``path`` and return its descriptor (held
    until closed or the process exits). ``wait=False``: :class:`JournalBusy` when another
    process holds it; ``wait=True``: block until it is free (a reaper ending the calls
    finishes first: seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise JournalBusy(f"{path}: held by another process") from None
            log.warning("journal %s: held by another process (a reaper?); waiting", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def down_for(path: Path, now: float | None = None) -> float | None:
    """Seconds since the node of the journal at ``path`` was last up (its heartbeat on
    ``<node>.lock``); None when it never ran here."""
    try:
        beat = path.with_suffix(".lock").stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - beat)


def read(path: Path) -> JournalState:
    """Parse a journal; damaged records are counted and logged, never fatal."""
    state = JournalState()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # no newline after it: cut short mid-write
    if torn:
        state.skipped += 1
        log.warning("journal %s: last record cut short (%d bytes) skipped", path, len(torn))
    for raw in lines:
        if not raw:
            continue
        try:
            kind, _, rest = raw.decode().partition(" ")
            if kind == "B":
                rec = json.loads(rest)
                key = rec["legs"][0]["uuid"]
                for leg in rec["legs"][1:]:  # a leg's record of its own is superseded
                    state.bridges.pop(leg["uuid"], None)
                state.bridges[key] = rec
            elif kind == "E":
                uuid, _, cdr = rest.partition(" ")
                t, _, cdr_json = cdr.partition(" ")
                state.ends[uuid] = (float(t), cdr_json)
            elif kind == "S":
                uuid, _, rec_json = rest.partition(" ")
                state.setups[uuid] = json.loads(rec_json)
            elif kind == "X":
                state.setups.pop(rest, None)
            elif kind == "H":
                uuid, t, cause = rest.split(" ")
                state.hangups[uuid] = (float(t), cause)
            elif kind == "A":
                if not rest or " " in rest:
                    raise ValueError("bad ACK record")
                state.acks.add(rest)
            else:
                raise ValueError(f"unknown record kind {kind!r}")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            state.skipped += 1
            log.warning("journal %s: damaged record skipped (%s): %.80r", path, exc, raw)
    return state


class Journal:
    """Appends records to the node's journal; fdatasync in a background thread."""

    def __init__(self, path: Path, *, fsync_interval: float = FSYNC_INTERVAL) -> None:
        self.path = path
        self.fsync_interval = fsync_interval
        self._fd = -1
        self._dirty = False
        self._size = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the fd is swapped on rotation
        self._thread: threading.Thread | None = None
        self._live: dict[str, str] = {}  # A-leg uuid → its B line (for rewrites)
        self._leg_of: dict[str, str] = {}  # leg uuid → A-leg uuid of its bridge
        self._open_legs: dict[str, int] = {}  # A-leg uuid → its legs not ended yet
        self._ends: dict[str, str] = {}  # leg uuid → its E line, recent ones kept on rewrite
        self._end_times: dict[str, float] = {}
        # (time, leg uuid) of the kept ends, oldest first: each new end drops those past
        # KEEP_ENDS_FOR, so the CDR lines held for a rewrite are the last 120 s of them,
        # not every end since the last rewrite (up to ROTATE_BYTES of them: tens of MB).
        self._end_order: deque[tuple[float, str]] = deque()
        self._setups: set[str] = set()  # inbound uuids in setup (S written, no B/X yet)
        # S lines of the previous run's setups, kept by rewrites until handed back (X): a
        # node killed again between its start's rewrite and the hand-back left them to
        # nobody — the router then waited out Timer C for those callers
        self._carried: dict[str, str] = {}
        self._hangups: dict[str, str] = {}  # leg uuid → its H line, until its E
        # inbound legs whose B line carries a 2xx not yet ACKed; and those ACKed since
        # (their A line is written again by a rewrite, after the B line, until their E)
        self._unacked: set[str] = set()
        self._acked: set[str] = set()
        self.records = 0
        self.bytes = 0
        # set once the node is up (not by a reaper): the sync thread touches <node>.lock
        # every fsync_interval, the heartbeat down_for() reads
        self.alive = False

    def open(self, state: JournalState | None = None) -> None:
        """Rewrite the file from ``state`` (what survives of the previous run), then append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        if state is not None:
            # the bridges being resumed stay journaled until their new records replace them
            for rec in state.live():
                a_uuid = rec["legs"][0]["uuid"]
                self._live[a_uuid] = "B " + json.dumps(rec, separators=(",", ":")) + "\n"
                for leg in rec["legs"]:
                    if leg["uuid"] not in state.ends:
                        self._leg_of[leg["uuid"]] = a_uuid
                        self._open_legs[a_uuid] = self._open_legs.get(a_uuid, 0) + 1
            for uuid, rec in state.pending_setup_items().items():
                self._setups.add(uuid)
                self._carried[uuid] = f"S {uuid} " + json.dumps(rec, separators=(",", ":")) + "\n"
            for uuid, (t, cause) in state.hangups.items():
                if uuid in self._leg_of:
                    self._hangups[uuid] = f"H {uuid} {t:.3f} {cause}\n"
            for rec in state.live():
                for leg in rec["legs"]:
                    if "ok" in leg and leg["uuid"] in self._leg_of:
                        (self._acked if leg["uuid"] in state.acks else self._unacked).add(
                            leg["uuid"]
                        )
            for uuid, (t, cdr) in sorted(state.ends.items(), key=lambda item: item[1][0]):
                if now - t < KEEP_ENDS_FOR:
                    self._ends[uuid] = f"E {uuid} {t:.3f} {cdr}\n"
                    self._end_times[uuid] = t
                    self._end_order.append((t, uuid))
        self._rewrite()
        self._thread = threading.Thread(target=self._sync_loop, name="journal-sync", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = -1

    # -- records ----------------------------------------------------------------------

    def bridged(self, a_uuid: str, leg_uuids: tuple[str, ...], record: dict[str, Any]) -> None:
        """A bridge was established: its legs' state (replaces an earlier record)."""
        line = "B " + json.dumps(record, separators=(",", ":")) + "\n"
        self._live[a_uuid] = line
        for leg in record["legs"]:  # a 2xx awaiting its ACK rides in the leg's record
            if "ok" in leg:
                self._unacked.add(leg["uuid"])
                self._acked.discard(leg["uuid"])
            elif self._unacked or self._acked:
                self._unacked.discard(leg["uuid"])
                self._acked.discard(leg["uuid"])
        for uuid in leg_uuids:
            if uuid != a_uuid and self._live.pop(uuid, None) is not None:
                self._open_legs.pop(uuid, None)  # its record of one leg: superseded
            self._setups.discard(uuid)  # the B record says its setup is over
            self._carried.pop(uuid, None)
            if self._leg_of.get(uuid) != a_uuid:
                self._leg_of[uuid] = a_uuid
                self._open_legs[a_uuid] = self._open_legs.get(a_uuid, 0) + 1
        self._append(line)

    def ended(self, uuid: str, cdr_json: str) -> None:
        """A journaled leg ended; ``cdr_json`` is its CDR (replayed if not stored)."""
        a_uuid = self._leg_of.pop(uuid, None)
        self._hangups.pop(uuid, None)
        if self._unacked or self._acked:
            self._unacked.discard(uuid)
            self._acked.discard(uuid)
        if a_uuid is None:
            return  # never journaled: nothing to resume, nothing to write
        left = self._open_legs.get(a_uuid, 1) - 1
        if left <= 0:  # every leg over: the bridge is forgotten at the next rewrite
            self._open_legs.pop(a_uuid, None)
            self._live.pop(a_uuid, None)
        else:
            self._open_legs[a_uuid] = left
        t = time.time()
        line = f"E {uuid} {t:.3f} {cdr_json}\n"
        self._forget_ends_before(t - KEEP_ENDS_FOR)
        self._ends[uuid] = line
        self._end_times[uuid] = t
        self._end_order.append((t, uuid))
        self._append(line)

    def forget_ends(self) -> None:
        """Drop every end record held for a rewrite (the node's idle pass: no call for 40 s).

        The file keeps them (it is not rewritten here): a restart still reads their CDRs.
        What goes is the in-memory copy a rewrite past :data:`ROTATE_BYTES` would have
        carried over, and the memory with it: ends are pruned only when the next call
        ends, so after a load an idle node held the E lines (CDRs) of the load's last
        120 s — in ``bench/platform-load`` (150 calls/s) its C heap stayed at 32 MB (17 MB
        idle); dropped here, 18 MB. Their CDRs went to the billing writer when the legs
        ended, 40 s or more before.
        """
        # new tables, not cleared ones: a dict never shrinks its table
        self._ends, self._end_times, self._end_order = {}, {}, deque()

    def _forget_ends_before(self, cutoff: float) -> None:
        """Drop the end records a rewrite would no longer keep (ended at ``cutoff`` or before)."""
        order = self._end_order
        while order and order[0][0] <= cutoff:
            _, uuid = order.popleft()
            self._end_times.pop(uuid, None)
            self._ends.pop(uuid, None)

    def hung_up(self, uuid: str, cause: str, at: float) -> None:
        """The far end ended journaled leg ``uuid`` at ``at`` (H); its E follows with its
        CDR."""
        if uuid not in self._leg_of or uuid in self._hangups:
            return
        line = f"H {uuid} {at:.3f} {cause}\n"
        self._hangups[uuid] = line
        self._append(line)

    def acked(self, uuid: str) -> None:
        """The caller ACKed the 2xx of inbound leg ``uuid`` (A) — written only when its
        record carries that 2xx (the B record came first): most ACKs cost nothing."""
        if uuid in self._unacked:
            self._unacked.discard(uuid)
            self._acked.add(uuid)
            self._append(f"A {uuid}\n")

    def tracks(self, uuid: str) -> bool:
        return uuid in self._leg_of

    def record_of(self, uuid: str) -> str | None:
        """The key (A-leg uuid) of the live record holding leg ``uuid``, if any."""
        return self._leg_of.get(uuid)

    def setup(self, uuid: str, record: dict[str, Any]) -> None:
        """An inbound call entered setup (S). Not kept across a rotation past ROTATE_BYTES
        (a setup lost then only means its caller waits for the router's own timers, as
        without a journal); the previous run's setups are kept by the start's rewrite
        until handed back."""
        self._setups.add(uuid)
        self._append(f"S {uuid} " + json.dumps(record, separators=(",", ":")) + "\n")

    def in_setup(self, uuid: str) -> bool:
        return uuid in self._setups

    def setup_over(self, uuid: str) -> None:
        """The setup ended without a bridge (X)."""
        if uuid in self._setups:
            self._setups.discard(uuid)
            self._carried.pop(uuid, None)
            self._append(f"X {uuid}\n")

    # -- file -------------------------------------------------------------------------

    def _append(self, line: str) -> None:
        data = line.encode()
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.write(self._fd, data)  # O_APPEND: one write, one whole line
            except OSError as exc:
                log.error("journal %s: write failed: %s", self.path, exc)
                return
            self._dirty = True
        self._size += len(data)
        self.records += 1
        self.bytes += len(data)
        if self._size > ROTATE_BYTES:
            self._rewrite()

    def _rewrite(self) -> None:
        """Write the live records to a new file and switch to it (atomic rename)."""
        self._forget_ends_before(time.time() - KEEP_ENDS_FOR)
        text = (
            "".join(self._live.values())
            + "".join(self._carried.values())
            + "".join(self._hangups.values())
            + "".join(f"A {uuid}\n" for uuid in self._acked)
            + "".join(self._ends.values())
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        # no fdatasync here (the event loop must not wait for the disk): the sync thread
        # syncs the new file within fsync_interval, like any other write
        os.replace(tmp, self.path)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._dirty = True
        self._size = len(text)

    def heartbeat(self) -> None:
        """Say the node is up now (the lock file's modification time)."""
        try:
            os.utime(self.path.with_suffix(".lock"))
        except OSError as exc:
            log.error("journal %s: heartbeat failed: %s", self.path, exc)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            if self.alive:
                self.heartbeat()
            with self._lock:
                if not self._dirty or self._fd < 0:
                    continue
                self._dirty = False
                fd = os.dup(self._fd)  # fdatasync outside the lock: writers never wait
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.error("journal %s: fdatasync failed: %s", self.path, exc)
            finally:
                os.close(fd)
