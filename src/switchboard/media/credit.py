"""Credit control in the call path of a media node (docs/billing.md "Credit control").

With ``[billing] credit_control = true`` the node asks billing about every **billable**
call — an inbound leg whose destination is a number (what rating prices; ``echo``,
``ivr``, ``conf-*`` are internal and free) — when the dialplan has routed it, before its
applications run:

* ``authorise()`` reserves funds; billing finds the account from the ``accountcode``
  variable if the channel already has one, the gateway (``sip_gateway_name``) if set, the
  signalling source IP (``account_identity`` CIDRs), then the caller id.
  A :class:`~switchboard.billing.credit.CreditDenied` refuses the call with its Q.850
  cause and SIP status (402 no funds, 404 no rate, 403 unknown account when
  ``unknown_account = "refuse"``, 503 billing unreachable: fails closed). A call no
  account matches goes ahead uncontrolled with ``unknown_account = "allow"`` (default).
  With ``authorise_retry_for`` > 0 an unreachable database (a PostgreSQL failover) is asked
  again, 0.25 s then every second, for that long before the call is refused; authorising
  is idempotent per call (one reservation per Call-ID), so a retry never reserves twice.
* The call is hung up with ``ALLOTTED_TIMEOUT`` when its talk time reaches
  ``max_seconds`` (counted from answer, so billsec never exceeds what was reserved). A
  renewable authorisation (``reserve_seconds`` > 0) is extended ``extend_before`` seconds
  before each chunk runs out, until billing says it is the last one; an extension that
  finds billing unreachable is retried (``authorise_retry_for``) until the chunk ends.
* At hangup the call is settled with its billsec (whole seconds, as its CDR): debited once,
  reservation released. A settlement the database refuses to take (down, failing over)
  is retried with back-off for ``reservation_grace`` seconds — settling is idempotent. The leg's CDR gets ``accountcode`` = the account, so the sell
  side is priced with the account's deck.

After a crash of the node, a resumed call is policed again (:meth:`CallCredit.resume`):
its reservation is still open in the database, so the restarted node asks ``extend()``
for its current limit (a renewable call gets its next chunk; an expired or settled one
its last limit) — or, when billing does not answer, keeps the limit the journal holds —
and hangs up with ``ALLOTTED_TIMEOUT`` at it, counted from the call's original answer.
At its end it is settled once with the whole call's billsec. A reaper (the node did not
come back) settles the calls it ends the same way, without policing them. A call the
crash caught in setup is handed back to the router (503), which dials it again from another
node: the reservation its first authorisation made is released (:meth:`CallCredit.release`)
— before, it stayed reserved until its expiry. Whatever still escapes (a node that never
comes back and no reaper) is swept by billing (:meth:`CreditControl.sweep`). A call that
ended just before the crash may have lost its settlement with the process: the restart
settles the journal's recently ended legs that still hold a reservation
(:meth:`CallCredit.settle_ended`), with the billsec of their journaled CDR.

Timers are awaits on the session's own events (answered, ended) with a timeout: no
polling. Low-balance notices become a ``CUSTOM`` event with ``Event-Subclass:
switchboard::low_balance`` on the Event Socket (:func:`low_balance_event`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from switchboard.billing.credit import (
    Authorisation,
    BillingUnavailable,
    CreditControl,
    CreditDenied,
    LowBalance,
    UnknownAccount,
)
from switchboard.media.causes import Cause, parse_cause
from switchboard.media.cdr import ROUTING_NUMBER_VAR
from switchboard.media.channel import EMERGENCY_VAR
from switchboard.rating.deck import normalise_number

if TYPE_CHECKING:
    from switchboard.media.core import Session, Switch
    from switchboard.media.events import Event

log = logging.getLogger(__name__)

LOW_BALANCE_SUBCLASS = "switchboard::low_balance"
DEFAULT_EXTEND_BEFORE = 5.0  # seconds before a reservation chunk ends that extend() is asked
DEFAULT_SETTLE_RETRY_FOR = 120.0  # [billing] reservation_grace: an open reservation's life
SETTLE_RETRY_FIRST = 0.5  # seconds before the first retry of a failed settlement, doubling
SETTLE_RETRY_MAX = 10.0
AUTHORISE_RETRY_FIRST = 0.25  # [billing] authorise_retry_for: first wait, doubling
AUTHORISE_RETRY_MAX = 1.0  # a Patroni failover takes ~5 s: ask at least every second


def low_balance_event(switch: Switch, low: LowBalance) -> Event:
    """The Event Socket notice of an account falling below its low-balance mark."""
    return switch.make_event(
        "CUSTOM",
        {
            "Account": low.account,
            "Account-ID": str(low.account_id),
            "Balance": str(low.balance),
            "Threshold": str(low.threshold),
        },
        subclass=LOW_BALANCE_SUBCLASS,
    )


def billsec(s: Session) -> int:
    """Whole seconds from answer to hangup, rounded down: the CDR's billsec."""
    ch = s.channel
    if ch.answered_at is None:
        return 0
    end = ch.hangup_at if ch.hangup_at is not None else time.time()
    return max(0, math.floor(end - ch.answered_at))


class CallCredit:
    """Authorise, police and settle billable calls of one switch (module docstring)."""

    def __init__(
        self,
        switch: Switch,
        credit: CreditControl,
        *,
        unknown_account: str = "allow",
        extend_before: float = DEFAULT_EXTEND_BEFORE,
        settle_retry_for: float = DEFAULT_SETTLE_RETRY_FOR,
        authorise_retry_for: float = 0.0,
    ) -> None:
        self.switch = switch
        self.settle_retry_for = settle_retry_for
        self.authorise_retry_for = authorise_retry_for
        self.credit = credit
        self.refuse_unknown = unknown_account == "refuse"
        self.extend_before = extend_before
        self._calls: dict[str, asyncio.Future[None]] = {}
        self._settling: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        self.switch.setup_hooks.append(self.on_setup)
        self.switch.hangup_hooks.append(self.on_hangup)

    # ------------------------------------------------------------------ setup
    async def on_setup(self, s: Session) -> None:
        ch = s.channel
        destination = ch.profile.destination_number
        if ch.direction != "inbound" or not normalise_number(destination):
            return
        v = ch.variables
        if v.get(EMERGENCY_VAR) == "true":
            # An emergency call is never held to a balance (docs/compliance.md).
            log.info("call %s: emergency call to %s, no credit control", s.uuid, destination)
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.authorise_retry_for
        delay = AUTHORISE_RETRY_FIRST
        try:
            while True:
                try:
                    auth = await self.credit.authorise(
                        s.uuid,
                        # a ported number is priced by its routing number (media/portability.py)
                        v.get(ROUTING_NUMBER_VAR) or destination,
                        now=datetime.now(UTC),
                        account=v.get("accountcode") or None,
                        gateway=v.get("sip_gateway_name") or None,
                        source_ip=ch.profile.network_addr or None,
                        caller=ch.profile.caller_id_number or None,
                    )
                    break
                except BillingUnavailable as exc:
                    # a failover: authorising again is safe (one reservation per call id)
                    if s.is_hungup or loop.time() + delay > give_up:
                        raise
                    log.warning("call %s: billing unreachable, authorising again in %.2fs: %s",
                                s.uuid, delay, exc)  # fmt: skip
                    if await self._ends_within(s, delay):
                        # the caller gave up meanwhile; an attempt whose answer was lost
                        # may have reserved all the same (committed, then the connection
                        # broke): release it (nothing to do when it did not)
                        self._settle_later(s.uuid, 0)
                        return
                    delay = min(delay * 2, AUTHORISE_RETRY_MAX)
        except UnknownAccount as exc:
            if self.refuse_unknown:
                self.refuse(s, exc)
            return
        except BillingUnavailable as exc:
            self.refuse(s, exc)
            self._settle_later(s.uuid, 0)  # the same: a lost answer's reservation
            return
        except CreditDenied as exc:
            self.refuse(s, exc)
            return
        if s.is_hungup:  # the caller gave up while we asked: release at once
            self._settle_later(s.uuid, 0)
            return
        ch.set_var("accountcode", auth.account)
        ch.set_var("credit_max_seconds", str(auth.max_seconds))
        log.info(
            "call %s: account %s authorised for %ds%s",
            s.uuid, auth.account, auth.max_seconds, " (renewable)" if auth.renewable else "",
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(
            self._police(s, auth.max_seconds, auth.renewable)
        )
        self._calls[s.uuid] = task

    def resume(self, s: Session, *, police: bool = True) -> bool:
        """A leg rebuilt from the journal after a crash: if it was credit controlled (it
        carries ``credit_max_seconds``), police it again (``police``: hang up at its
        limit) and settle it at its end. False: nothing to control."""
        v = s.channel.variables
        if s.channel.direction != "inbound" or "credit_max_seconds" not in v:
            return False
        loop = asyncio.get_running_loop()
        if police:
            task: asyncio.Future[None] = loop.create_task(self._police_resumed(s))
        else:  # a reaper: the leg ends now, settled by on_hangup
            task = loop.create_future()
            task.set_result(None)
        self._calls[s.uuid] = task
        return True

    async def _police_resumed(self, s: Session) -> None:
        try:
            journaled = int(s.channel.variables.get("credit_max_seconds", "0"))
        except ValueError:
            journaled = 0
        try:
            # its reservation is open: extend() reads its limit now (renewed past the
            # journal's, perhaps) and reserves the next chunk of a renewable call
            auth = await self.credit.extend(s.uuid, now=datetime.now(UTC))
        except UnknownAccount:
            return  # never authorised after all: nothing to police
        except CreditDenied as exc:  # billing unreachable: the last limit we know
            log.warning("call %s: resumed with its journaled limit %ds: %s",
                        s.uuid, journaled, exc)  # fmt: skip
            max_seconds, renewable = journaled, False
        else:
            max_seconds, renewable = max(auth.max_seconds, 0), auth.renewable
        s.channel.set_var("credit_max_seconds", str(max_seconds))
        log.info("call %s: credit control resumed, %ds%s", s.uuid, max_seconds,
                 " (renewable)" if renewable else "")  # fmt: skip
        await self._police(s, max_seconds, renewable)

    def refuse(self, s: Session, exc: CreditDenied) -> None:
        """Hang the unanswered call up with the denial's cause; its SIP status travels in
        ``proto_specific_hangup_cause`` (``sip:402``), which the SIP side answers with, as
        FreeSWITCH's mod_sofia does."""
        log.info("call %s refused by credit control: %s %s", s.uuid, exc.status, exc)
        s.channel.set_var("proto_specific_hangup_cause", f"sip:{exc.status}")
        s.channel.set_var("credit_denied", type(exc).__name__)
        self.switch.hangup(s.uuid, parse_cause(exc.cause, Cause.CALL_REJECTED))

    # ------------------------------------------------------------------ in call
    async def _police(self, s: Session, max_seconds: int, renewable: bool) -> None:
        answered = asyncio.ensure_future(s.answered.wait())
        ended = asyncio.ensure_future(s.ended.wait())
        try:
            await asyncio.wait({answered, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        if s.is_hungup:
            return
        answered_at = s.channel.answered_at or time.time()
        while True:
            end = answered_at + max_seconds
            wake = end - self.extend_before if renewable else end
            if await self._ends_before(s, wake):
                return
            if not renewable:
                break
            try:
                auth = await self._extend(s, end)
                max_seconds, renewable = auth.max_seconds, auth.renewable
            except CreditDenied as exc:  # billing unreachable: keep the limit we have
                log.warning("call %s: credit extension failed: %s", s.uuid, exc)
                renewable = False
            s.channel.set_var("credit_max_seconds", str(max_seconds))
        log.info("call %s: allotted %ds used up", s.uuid, max_seconds)
        self.switch.hangup(s.uuid, Cause.ALLOTTED_TIMEOUT)

    async def _extend(self, s: Session, end: float) -> Authorisation:
        """extend(), retried while billing is unreachable (a failover) for up to
        ``authorise_retry_for`` seconds and never past the chunk's ``end`` (wall clock):
        the call keeps the talk time it has meanwhile."""
        give_up = min(time.time() + self.authorise_retry_for, end)
        delay = AUTHORISE_RETRY_FIRST
        while True:
            try:
                return await self.credit.extend(s.uuid, now=datetime.now(UTC))
            except BillingUnavailable as exc:
                if time.time() + delay > give_up or s.is_hungup:
                    raise
                log.warning("call %s: billing unreachable, extending again in %.2fs: %s",
                            s.uuid, delay, exc)  # fmt: skip
                if await self._ends_within(s, delay):
                    raise
                delay = min(delay * 2, AUTHORISE_RETRY_MAX)

    @classmethod
    async def _ends_before(cls, s: Session, when: float) -> bool:
        """True if the leg ends before the wall-clock time ``when``. The loop's timers may
        fire a little early (uvloop counts whole milliseconds from its cached clock): a
        call cut at 7.999 s is billed 7 s (billsec rounds down) where 8 s were bought, so
        the wait goes on until the wall clock has passed ``when``."""
        while (left := when - time.time()) > 0:
            if await cls._ends_within(s, left + 0.001):
                return True
        return s.is_hungup

    @staticmethod
    async def _ends_within(s: Session, seconds: float) -> bool:
        try:
            await asyncio.wait_for(s.ended.wait(), max(0.0, seconds))
        except TimeoutError:
            return s.is_hungup
        return True

    # ------------------------------------------------------------------ hangup
    def on_hangup(self, s: Session) -> None:
        task = self._calls.pop(s.uuid, None)
        if task is None:
            return
        task.cancel()
        self._settle_later(s.uuid, billsec(s))

    def release(self, call_id: str) -> None:
        """Release the reservation of a leg that never talked (a setup a crash cut short
        and the restart handed back): settled with 0 s, nothing debited; nothing happens
        when the leg was never authorised."""
        self._settle_later(call_id, 0)

    def settle_ended(self, ended: dict[str, int]) -> None:
        """Settle the legs a crash caught just after their hangup (call id → billsec, from
        the journal's end records and their CDRs): their settlement may have died with
        the process. One query finds which of them still hold an open reservation (the
        journal keeps a couple of minutes of ends: thousands at 50 calls/s, nearly all
        settled); those are settled one after another. When billing does not answer,
        the sweep settles them from their CDRs later (:meth:`CreditControl.sweep`)."""
        if ended:
            task = asyncio.get_running_loop().create_task(self._settle_ended(ended))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle_ended(self, ended: dict[str, int]) -> None:
        try:
            still_open = await self.credit.open_among(list(ended))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("%d ended legs' settlements not checked (left to the sweep): %s",
                        len(ended), exc)  # fmt: skip
            return
        for call_id in still_open:
            log.warning("call %s ended before the restart and was never settled: settling "
                        "%ds", call_id, ended[call_id])  # fmt: skip
            await self._settle(call_id, ended[call_id])

    def _settle_later(self, call_id: str, seconds: int) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(call_id, seconds))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, call_id: str, seconds: int) -> None:
        """Settle, retrying while the database is unreachable (settling is idempotent) for
        up to ``settle_retry_for`` seconds — after that the reservation expires unbilled."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settle_retry_for
        delay = SETTLE_RETRY_FIRST
        while True:
            try:
                done = await self.credit.settle(call_id, seconds, now=datetime.now(UTC))
                break
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if loop.time() + delay > give_up:
                    log.error("call %s: settlement of %ds abandoned: %s", call_id, seconds, exc)
                    return
                log.warning("call %s: settlement failed, retrying in %.1fs: %s",
                            call_id, delay, exc)  # fmt: skip
                await asyncio.sleep(delay)  # back-off between attempts, nothing to await
                delay = min(delay * 2, SETTLE_RETRY_MAX)
        if done is not None:
            log.info(
                "call %s: account %s debited %s for %ds, balance %s",
                call_id, done.account, done.cost, done.billsec, done.balance,
            )  # fmt: skip

    async def close(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for settlements in flight, after the switch hung every call up."""
        for task in list(self._calls.values()):
            task.cancel()
        if not self._settling:
            return
        _, pending = await asyncio.wait(set(self._settling), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.error("%d settlements still failing at shutdown: their reservations expire "
                      "unbilled", len(pending))  # fmt: skip
        with contextlib.suppress(Exception):
            await asyncio.gather(*pending, return_exceptions=True)
