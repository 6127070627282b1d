"""The campaign runner: paces originates over one or more Event Sockets and records outcomes.

One persistent, authenticated connection per Event Socket carries both the ``bgapi originate``
commands and the events (CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE, BACKGROUND_JOB); every
originate sets ``origination_uuid`` and uses the same value as its ``Job-UUID``, so the reply,
the events and the database attempt row share one key. If an Event Socket drops, its calls in
flight are closed as ``unknown`` (never re-dialed) and new calls go to the others while it is
reconnected in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from switchboard.dialer.contacts import escape_var
from switchboard.dialer.esl_client import EslClient, EslError, EslEvent, Frame
from switchboard.dialer.pacing import Pacer
from switchboard.dialer.policy import (
    CallingWindow,
    DoNotCall,
    Outcome,
    classify,
    next_attempt_delay,
    parse_retry_spec,
    zone,
)
from switchboard.dialer.store import DIAL, SKIP_DNC, CampaignStore, Claim, retry_time
from switchboard.observability.metrics import DialerMetrics

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # outcome of an attempt whose fate was lost (Event Socket or dialer died)


@dataclass
class Settings:
    """A campaign's settings; stored with it, so a resume uses the same ones."""

    gateway: str = "carrier"
    cps: float = 30.0
    max_concurrent: int = 100
    play: str = ""
    extension: str = ""  # dial a dialplan extension instead of &playback(...)
    caller_id: str = "0000000000"
    timezone: str = "UTC"
    window: str = "00:00-24:00"
    weekdays: str = ""
    retries: str = ""
    max_attempts: int = 3
    originate_timeout: int = 30
    max_failed_ratio: float = 0.5
    failed_ratio_min_attempts: int = 20

    def validate(self) -> None:
        if not self.cps > 0:
            raise ValueError("--cps must be positive")
        if self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be at least 1")
        if not self.play and not self.extension:
            raise ValueError("give --play FILE or --extension EXT: what an answered call hears")
        if not 0 < self.max_failed_ratio <= 1:
            raise ValueError("--max-failed-ratio must be in (0, 1]")
        CallingWindow.parse(self.window, self.weekdays)
        parse_retry_spec(self.retries)
        zone(self.timezone)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Endpoint:
    host: str
    port: int
    client: EslClient | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.client is not None and not self.client.closed.done()


@dataclass
class InFlight:
    claim: Claim
    endpoint: Endpoint
    sent_at: float
    answered_at: datetime | None = None
    job_ok: bool = False


@dataclass
class Progress:
    total: int = 0
    dialed: int = 0
    answered: int = 0
    busy: int = 0
    noanswer: int = 0
    failed: int = 0
    unknown: int = 0
    dnc: int = 0
    in_progress: int = 0
    remaining: int = 0
    achieved_cps: float = 0.0
    eta_seconds: float | None = None
    status: str = "running"
    outcomes: dict[str, int] = field(default_factory=dict)


def build_originate(s: Settings, claim: Claim, campaign_id: int) -> str:
    """The ``originate`` arguments for one contact (FreeSWITCH syntax)."""
    variables = {
        "origination_uuid": claim.uuid,
        "origination_caller_id_number": claim.caller_id or s.caller_id,
        "ignore_early_media": "true",
        "originate_timeout": str(s.originate_timeout),
        "sb_campaign_id": str(campaign_id),
        **({"origination_caller_id_name": claim.name} if claim.name else {}),
        **claim.variables,
    }
    block = ",".join(f"{k}={escape_var(str(v))}" for k, v in variables.items())
    target = f"&playback({s.play})" if s.play else f"{s.extension} XML default"
    return f"originate {{{block}}}sofia/gateway/{s.gateway}/{claim.number} {target}"


class Dialer:
    def __init__(
        self,
        store: CampaignStore,
        campaign_id: int,
        name: str,
        settings: Settings,
        endpoints: list[tuple[str, int]],
        password: str,
        *,
        dnc: DoNotCall | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: DialerMetrics | None = None,
    ) -> None:
        settings.validate()
        self.store, self.campaign_id, self.name, self.s = store, campaign_id, name, settings
        self.endpoints = [Endpoint(h, p) for h, p in endpoints]
        self.password = password
        self.dnc = dnc or DoNotCall()
        self.window = CallingWindow.parse(settings.window, settings.weekdays)
        self.rules = parse_retry_spec(settings.retries)
        self.clock, self.wallclock = clock, wallclock
        self.in_flight: dict[str, InFlight] = {}
        self.pacer = Pacer(settings.cps)
        # switchboard_dialer_* (docs/metrics.md); a private registry unless the CLI serves one.
        self.metrics = metrics or DialerMetrics.create(CollectorRegistry())
        self.metrics.target_cps.labels(name).set(settings.cps)
        self.progress = Progress()
        self.send_times: list[float] = []
        self._rr = 0
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()  # graceful: no new calls, let those in flight finish
        self._closed = (
            False  # shut down: nothing more is written (a hard stop leaves attempts open)
        )
        self._first_send: float | None = None
        self._finished = 0  # attempts finished (this campaign, all runs) for the failed-ratio rule
        self._failed = 0
        self._pause_reason = ""
        self._tasks: set[asyncio.Task[None]] = set()  # event-driven finishes, cancelled at close

    # -- connections -------------------------------------------------------------------------
    async def _connect(self, ep: Endpoint) -> bool:
        try:
            ep.client = await EslClient.connect(
                ep.host, ep.port, self.password, on_event=self._on_event
            )
            await ep.client.command(
                "event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
            )
        except EslError as exc:
            log.warning("Event Socket %s unavailable: %s", ep.label, exc)
            ep.client = None
            return False
        log.info("connected to Event Socket %s", ep.label)
        self._spawn(self._watch(ep, ep.client))
        return True

    async def _watch(self, ep: Endpoint, client: EslClient) -> None:
        await client.closed
        if ep.client is client:
            ep.client = None
        if self._closed:
            return
        lost = [u for u, f in self.in_flight.items() if f.endpoint is ep]
        if lost:
            log.warning(
                "Event Socket %s dropped with %d calls in flight; closing them as unknown",
                ep.label,
                len(lost),
            )
        for u in lost:
            await self._finish(u, UNKNOWN, "EVENT_SOCKET_LOST", None)
        while not self._closed and ep.client is None:
            await asyncio.sleep(
                2.0
            )  # reconnect backoff (not a wait for a condition we could await)
            if not self._closed:
                await self._connect(ep)

    def _pick(self) -> Endpoint | None:
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self._rr + i) % n]
            if ep.alive:
                self._rr = (self._rr + i + 1) % n
                return ep
        return None

    # -- events ------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, ev: EslEvent) -> None:
        name = ev.name
        if name == "BACKGROUND_JOB":
            u = ev.get("Job-UUID")
            f = self.in_flight.get(u)
            if f is None:
                return
            reply = ev.body.strip()
            if reply.startswith("+OK"):
                f.job_ok = True
                f.answered_at = f.answered_at or self.wallclock()
            else:
                cause = reply.removeprefix("-ERR").strip().split()[0] if reply else "UNKNOWN"
                self._spawn(self._finish(u, classify(cause, answered=False).value, cause, 0))
        elif name == "CHANNEL_ANSWER":
            f = self.in_flight.get(ev.get("Unique-ID"))
            if f is not None:
                f.answered_at = f.answered_at or self.wallclock()
        elif name == "CHANNEL_HANGUP_COMPLETE":
            u = ev.get("Unique-ID")
            if u not in self.in_flight:
                return
            billsec = _int(ev.get("variable_billsec"))
            answered = billsec > 0 or ev.get("variable_answer_epoch", "0") not in ("", "0")
            hangup = ev.get("Hangup-Cause") or ev.get("variable_hangup_cause") or None
            self._spawn(self._finish(u, classify(hangup, answered=answered).value, hangup, billsec))

    async def _finish(
        self, call_uuid: str, outcome: str, cause: str | None, billsec: int | None
    ) -> None:
        if self._closed:
            return  # hard stop: the attempt stays open and the next run settles it
        f = self.in_flight.pop(call_uuid, None)
        if f is None:
            return
        now = self.wallclock()
        delay = None
        if outcome != UNKNOWN:
            delay = next_attempt_delay(
                Outcome(outcome), f.claim.attempt, self.rules, self.s.max_attempts
            )
        await self.store.finish(
            call_uuid,
            outcome=outcome,
            cause=cause,
            billsec=billsec,
            ended_at=now,
            answered_at=f.answered_at,
            retry_at=retry_time(now, delay),
        )
        self.metrics.outcomes.labels(self.name, outcome).inc()
        self._count(outcome)
        self.metrics.in_progress.labels(self.name).set(len(self.in_flight))
        self._slot_freed.set()

    def _count(self, outcome: str) -> None:
        self._finished += 1
        if outcome in (Outcome.FAILED.value, Outcome.CONGESTION.value):
            self._failed += 1
        if (
            not self._pause_reason
            and self._finished >= self.s.failed_ratio_min_attempts
            and self._failed / self._finished > self.s.max_failed_ratio
        ):
            self._pause_reason = (
                f"failed ratio {self._failed}/{self._finished} above {self.s.max_failed_ratio:.0%}"
            )
            log.warning("campaign %s pausing: %s", self.name, self._pause_reason)
            self._slot_freed.set()

    # -- main loop ---------------------------------------------------------------------------
    def _decide(self, row: dict[str, Any]) -> tuple[str, datetime | None]:
        if row["number"] in self.dnc:
            self.metrics.blocked.labels(self.name, "dnc").inc()
            return SKIP_DNC, None
        tz = zone(row["timezone"] or self.s.timezone)
        now = self.wallclock()
        if self.window.allows(now.astimezone(tz)):
            return DIAL, None
        self.metrics.blocked.labels(self.name, "window").inc()
        return "later", self.window.next_open(now, tz)

    async def resolve_unresolved(self) -> int:
        """Settle attempts an earlier run left open; returns how many were closed as unknown.

        An attempt whose channel still exists on its Event Socket is followed to its hangup;
        any other is closed as ``unknown`` and its contact is not dialed again (it may have
        been). The attempt is registered before asking, so a hangup in between is not missed.
        """
        n = 0
        for a in await self.store.unresolved(self.campaign_id):
            ep = next((e for e in self.endpoints if e.alive and e.label == a["endpoint"]), None)
            claim = Claim(a["uuid"], a["contact_id"], a["attempt"], "", "", "", "", {})
            if ep is not None and ep.client is not None:
                self.in_flight[a["uuid"]] = InFlight(claim, ep, self.clock(), job_ok=True)
                exists = False
                with contextlib.suppress(EslError):
                    exists = (await ep.client.api(f"uuid_exists {a['uuid']}")).strip() == "true"
                if exists or a["uuid"] not in self.in_flight:
                    continue  # still up (followed), or its hangup arrived while we asked
                self.in_flight.pop(a["uuid"], None)
            await self.store.finish(
                a["uuid"],
                outcome=UNKNOWN,
                cause="DIALER_RESTARTED",
                billsec=None,
                ended_at=self.wallclock(),
                retry_at=None,
            )
            n += 1
        return n

    def stop(self) -> None:
        """Graceful stop (first Ctrl-C): dial no one new, let calls in flight finish."""
        self._stop.set()
        self._slot_freed.set()

    async def run(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Dial until every contact is finished, the campaign pauses, or :meth:`stop`.

        Cancelling the task is a hard stop: calls in flight keep their open attempt rows, and
        the next run settles them (see :meth:`resolve_unresolved`) instead of re-dialing.
        """
        await asyncio.gather(*(self._connect(ep) for ep in self.endpoints))
        if not any(ep.alive for ep in self.endpoints):
            self._closed = True
            raise EslError(
                "no Event Socket reachable: " + ", ".join(ep.label for ep in self.endpoints)
            )
        reporter = asyncio.create_task(self._report_loop(on_progress)) if on_progress else None
        try:
            c = await self.store.counts(self.campaign_id)
            self._finished = sum(
                v for k, v in c.items() if k.startswith("attempts_") and k != "attempts_in_progress"
            )
            self._failed = c.get("attempts_failed", 0) + c.get("attempts_congestion", 0)
            await self.resolve_unresolved()
            await self._dial_loop()
            await self._drain()
            await self.refresh_progress()
        finally:
            self._closed = True
            if reporter:
                reporter.cancel()
            for task in list(self._tasks):
                task.cancel()
            for ep in self.endpoints:
                if ep.client:
                    ep.client.close()
        if self._stop.is_set() and self.progress.status == "running":
            self.progress.status = "stopped"
        return self.progress

    async def _dial_loop(self) -> None:
        """Pace originates from a small hopper of claimed contacts (0.1 s worth, at least one),
        so a slow database round trip does not delay a send. Claims are committed before
        anything is sent: a graceful stop gives unsent ones back; a crash leaves them to be
        closed as ``unknown`` on resume (never dialed twice; ``campaign requeue-unknown``
        puts them back deliberately)."""
        hopper: deque[Claim] = deque()
        size = max(1, math.ceil(self.s.cps * 0.1))
        try:
            while not self._stop.is_set():
                if self._pause_reason:
                    await self.store.set_status(self.campaign_id, "paused", self._pause_reason)
                    self.progress.status = "paused"
                    return
                if len(self.in_flight) >= self.s.max_concurrent:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                ep = self._pick()
                if ep is None:
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), 1.0)
                    continue
                if not hopper:
                    hopper.extend(
                        await self.store.claim(
                            self.campaign_id, self.wallclock(), self._decide, limit=size
                        )
                    )
                    if not hopper:
                        if await self._finished_or_paused():
                            return
                        continue
                now = self.clock()
                due = self.pacer.next_due(now)
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                self.pacer.take(self.clock())
                self._send(ep, hopper.popleft())
        finally:
            for claim in hopper:  # claimed, never sent: give them back
                with contextlib.suppress(Exception):
                    await self.store.release(claim.uuid)

    def _send(self, ep: Endpoint, claim: Claim) -> None:
        f = InFlight(claim, ep, self.clock())
        self.in_flight[claim.uuid] = f
        self.metrics.in_progress.labels(self.name).set(len(self.in_flight))
        t = self.clock()
        self._first_send = self._first_send if self._first_send is not None else t
        self.send_times.append(t)
        self.metrics.originates.labels(self.name).inc()
        assert ep.client is not None
        # The command is written now; its reply is awaited off the pacing path.
        try:
            reply = ep.client.bgapi_start(
                build_originate(self.s, claim, self.campaign_id), claim.uuid
            )
        except EslError:
            return  # closed just now: the watcher closes it as unknown
        self._spawn(self._sent(ep, claim, reply))

    async def _sent(self, ep: Endpoint, claim: Claim, reply: Awaitable[Frame]) -> None:
        try:
            text = (await reply).headers.get("Reply-Text", "")
        except EslError:
            return  # the watcher closes it as unknown: it may have been sent
        if not text.startswith("+OK"):
            await self._finish(claim.uuid, Outcome.FAILED.value, text or "BGAPI_REFUSED", 0)
        elif ep.label:
            await self.store.set_endpoint(claim.uuid, ep.label)

    async def _finished_or_paused(self) -> bool:
        """No contact due now: done, or wait for the next retry, window or a call to end."""
        c = await self.store.counts(self.campaign_id)
        if (
            c.get("contacts_pending", 0) == 0
            and not self.in_flight
            and c.get("contacts_dialing", 0) == 0
        ):
            await self.store.set_status(self.campaign_id, "done")
            self.progress.status = "done"
            return True
        nxt = await self.store.next_due(self.campaign_id)
        wait = 0.5
        if nxt is not None:
            wait = min(max((nxt - self.wallclock()).total_seconds(), 0.01), 1.0)
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), wait)
        return False

    async def _drain(self, timeout: float | None = None) -> None:
        """Wait for calls in flight to end (a second Ctrl-C cancels this: a hard stop)."""
        deadline = None if timeout is None else self.clock() + timeout
        while self.in_flight and (deadline is None or self.clock() < deadline):
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), 1.0)

    async def refresh_progress(self) -> Progress:
        c = await self.store.counts(self.campaign_id)
        p = self.progress
        p.outcomes = c
        p.total = sum(v for k, v in c.items() if k.startswith("contacts_"))
        p.dialed = len(self.send_times)
        p.answered = c.get("attempts_answered", 0)
        p.busy = c.get("attempts_busy", 0)
        p.noanswer = c.get("attempts_noanswer", 0)
        p.failed = c.get("attempts_failed", 0) + c.get("attempts_congestion", 0)
        p.unknown = c.get("attempts_unknown", 0)
        p.dnc = c.get("dnc", 0)
        p.in_progress = len(self.in_flight)
        p.remaining = c.get("contacts_pending", 0)
        self.metrics.contacts_remaining.labels(self.name).set(p.remaining)
        if self._first_send is not None and len(self.send_times) > 1:
            span = self.send_times[-1] - self._first_send
            p.achieved_cps = (len(self.send_times) - 1) / span if span > 0 else 0.0
            p.eta_seconds = p.remaining / self.s.cps
        return p

    async def _report_loop(self, on_progress: Callable[[Progress], None]) -> None:
        while True:
            with contextlib.suppress(Exception):
                on_progress(await self.refresh_progress())
            await asyncio.sleep(0.25)


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0
