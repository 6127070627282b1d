"""CDR production at hangup: one :class:`switchboard.billing.cdr.Cdr` per leg.

Handed to a :class:`CdrSink` whose ``submit`` never blocks call handling: the billing
engine's :class:`~switchboard.billing.writer.CdrWriter` (batched, spooled when the
database is down) when a database is configured, else :class:`JsonLinesCdrSink`
(one JSON object per line, the billing spool format, appended via a background thread
so a slow disk never stalls the event loop).

Disposition (original ``cdr.disposition`` values): ANSWERED, NO ANSWER (no answer /
no user response / timeout / cancel by caller before answer is CANCEL), BUSY,
CONGESTION (503-class causes), FAILED (everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.billing.cdr import Cdr
from switchboard.media.causes import Cause
from switchboard.media.channel import EMERGENCY_VAR, ORIGINATING_LEG_VAR

if TYPE_CHECKING:
    from switchboard.media.core import Session

log = logging.getLogger(__name__)

_NO_ANSWER = {Cause.NO_ANSWER, Cause.NO_USER_RESPONSE, Cause.RECOVERY_ON_TIMER_EXPIRE,
              Cause.PROGRESS_TIMEOUT, Cause.ALLOTTED_TIMEOUT}  # fmt: skip
_BUSY = {Cause.USER_BUSY, Cause.BUSY_EVERYWHERE}
_CONGESTION = {Cause.NORMAL_CIRCUIT_CONGESTION, Cause.SWITCH_CONGESTION,
               Cause.NORMAL_TEMPORARY_FAILURE, Cause.REQUESTED_CHAN_UNAVAIL,
               Cause.GATEWAY_DOWN, Cause.NETWORK_OUT_OF_ORDER}  # fmt: skip


class CdrSink(Protocol):
    """Where finished legs go. ``submit`` must return at once and never raise on IO."""

    def submit(self, cdr: Cdr) -> None: ...


def disposition(answered: bool, cause: Cause | None) -> str:
    if answered:
        return "ANSWERED"
    if cause is Cause.ORIGINATOR_CANCEL:
        return "CANCEL"
    if cause in _BUSY:
        return "BUSY"
    if cause in _NO_ANSWER:
        return "NO ANSWER"
    if cause in _CONGESTION:
        return "CONGESTION"
    return "FAILED"


# set by number portability (media/portability.py) on the legs of a ported destination
ROUTING_NUMBER_VAR = "switchboard_routing_number"

METRIC_DISPOSITION = {
    "ANSWERED": "answered",
    "BUSY": "busy",
    "NO ANSWER": "no_answer",
    "CANCEL": "cancelled",
    "CONGESTION": "failed",
    "FAILED": "failed",
}


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def build_cdr(s: Session, node: str) -> Cdr:
    """The CDR of one finished leg (called in CS_REPORTING, after hangup)."""
    ch = s.channel
    v = ch.variables
    start = _dt(ch.created_at)
    assert start is not None
    end = _dt(ch.hangup_at) or start
    answer = _dt(ch.answered_at)
    pdd = v.get("pdd_ms")
    if pdd is None and ch.progress_at is not None:
        pdd = str(int((ch.progress_at - ch.created_at) * 1000))
    # call_id = the channel uuid: unique per leg (a call through the router to two nodes
    # has one SIP Call-ID on both), stable across spool replays (idempotent ingest).
    return Cdr.from_times(
        ch.uuid,
        start,
        end,
        answer,
        caller_id=ch.profile.caller_id_number,
        destination=ch.profile.destination_number,
        disposition=disposition(answer is not None, ch.hangup_cause),
        sip_code=ch.sip_status if ch.sip_status is not None else (200 if answer else None),
        hangup_cause=(ch.hangup_cause or Cause.NORMAL_CLEARING).name,
        pdd_ms=int(pdd) if pdd and pdd.isdigit() else None,
        account=v.get("accountcode", ""),
        carrier=v.get("sip_gateway_name", ""),
        direction=ch.direction,
        codec=ch.read_codec,
        node=node,
        sip_call_id=v.get("sip_call_id", ""),
        # a bridge's B-leg: the A-leg's uuid (billing charges the call's sell side there)
        originating_leg=v.get(ORIGINATING_LEG_VAR, "") if ch.direction == "outbound" else "",
        trunk=v.get("trunk", ""),
        routing_number=v.get(ROUTING_NUMBER_VAR, ""),
        emergency=v.get(EMERGENCY_VAR) == "true",
        verstat=v.get("stir_verstat", ""),
        attestation=v.get("stir_attestation", ""),
    )


class JsonLinesCdrSink:
    """Append CDRs as JSON lines to ``path`` from a writer thread (never blocks the loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._q: deque[Cdr | None] = deque()
        self._cv = threading.Condition()
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="cdr-jsonl", daemon=True)
        self._thread.start()

    def submit(self, cdr: Cdr) -> None:
        with self._cv:
            self._q.append(cdr)
            self._cv.notify()

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            while True:
                with self._cv:
                    while not self._q:
                        self._cv.wait()
                    batch = list(self._q)
                    self._q.clear()
                stop = False
                for item in batch:
                    if item is None:
                        stop = True
                        continue
                    try:
                        f.write(item.to_json() + "\n")
                        self.written += 1
                    except (OSError, ValueError):
                        log.exception("CDR %s not written", item.call_id)
                f.flush()
                if stop:
                    return

    async def close(self) -> None:
        with self._cv:
            self._q.append(None)
            self._cv.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)


class MemoryCdrSink:
    """Keeps CDRs in a list (tests, ``switchboard media`` without billing in-process)."""

    def __init__(self) -> None:
        self.records: list[Cdr] = []

    def submit(self, cdr: Cdr) -> None:
        self.records.append(cdr)


def install(switch: object, sink: CdrSink, node: str, metrics: Any = None) -> None:
    """Produce a CDR (and the call metrics) for every leg at hangup."""
    from switchboard.media.core import Switch

    assert isinstance(switch, Switch)

    def on_hangup(s: Session) -> None:
        try:
            cdr = build_cdr(s, node)
        except ValueError:
            log.exception("channel %s: no CDR", s.uuid)
            return
        with contextlib.suppress(Exception):
            sink.submit(cdr)
        if metrics is not None:
            metrics.call_ended(
                s.channel.direction, METRIC_DISPOSITION[cdr.disposition], float(cdr.billsec)
            )
            metrics.hangups.labels(cause=cdr.hangup_cause).inc()

    switch.hangup_hooks.append(on_hangup)
