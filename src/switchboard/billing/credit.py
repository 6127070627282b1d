"""Real-time credit control: authorise at call setup, settle at hangup.

Theory of operation (prepaid session control as carriers' billing systems do it;
docs/billing.md, "Credit control"):

* **Authorise** (call setup): find the account (gateway, source IP, caller id, or given by
  name), find the sell rate by longest prefix, and compute the longest call the *available*
  funds cover::

      available = balance + credit_limit - reserved

  (prepaid accounts have ``credit_limit = 0``; postpaid ones may go that far below zero).
  The cost of that maximum is **reserved** (``account.reserved`` grows, a ``reservation``
  row keeps the rate used) and the media node gets ``max_seconds``: it hangs the call up at
  that point with cause ALLOTTED_TIMEOUT. The reservation is one statement that locks the
  account row (``SELECT ... FOR UPDATE``), checks the funds again on the locked row and
  reserves; if they no longer cover it, the whole decision is taken again under the lock.
  Concurrent authorisations on one account queue on the row lock only for that statement
  and the commit, and each sees the reservations before it: calls in parallel can never
  spend more than the account has; a hangup later than ``max_seconds`` overspends by at
  most one billing increment.
* **Settle** (hangup): in one statement, price the call with the reserved rate, debit the
  balance, release the reservation and write the ledger row. Settling twice is harmless.
* Billing fails closed: any database error refuses the call (:class:`BillingUnavailable`,
  503), unlike mod_nibblebill which treats failed queries as success.
* When a settlement takes a balance below the account's ``low_balance`` mark, the
  ``on_low_balance`` hook receives a :class:`LowBalance` event (the media node publishes it
  on the Event Socket) and ``switchboard_low_balance_events_total`` counts it.

Errors are typed by blame and carry the SIP response and Q.850 cause to use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from switchboard.billing import metrics
from switchboard.rating import Increment, Rate, max_duration, price

log = logging.getLogger(__name__)

DEFAULT_MAX_CALL_SECONDS = 4 * 3600
DEFAULT_GRACE_SECONDS = 120


class CreditDenied(Exception):
    """The call must not go ahead; ``status``/``reason`` are the SIP answer (RFC 3261
    §21) and ``cause`` the Q.850 hangup cause name."""

    status = 403
    reason = "Forbidden"
    cause = "CALL_REJECTED"


class UnknownAccount(CreditDenied):
    """No account matches the call's gateway, source IP or caller id."""


class NoRate(CreditDenied):
    """The account's rate deck has no price for the destination."""

    status = 404
    reason = "Not Found"
    cause = "NO_ROUTE_DESTINATION"


class InsufficientFunds(CreditDenied):
    """Not even the first billing increment is covered."""

    status = 402
    reason = "Payment Required"
    cause = "OUTGOING_CALL_BARRED"


class BillingUnavailable(CreditDenied):
    """The billing database did not answer: refuse rather than give calls away."""

    status = 503
    reason = "Service Unavailable"
    cause = "NORMAL_TEMPORARY_FAILURE"


@dataclass(frozen=True, slots=True)
class Authorisation:
    """What the media node needs: hang up after ``max_seconds`` of talk time."""

    call_id: str
    account: str
    account_id: int
    max_seconds: int
    reserved: Decimal
    rate: Rate
    # True when max_seconds is one reservation chunk and the funds allow more: ask
    # extend() before it runs out. False: max_seconds is the limit of the call.
    renewable: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    call_id: str
    account: str
    billsec: int
    cost: Decimal
    balance: Decimal


@dataclass(frozen=True, slots=True)
class Swept:
    """What one :meth:`CreditControl.sweep` did: reservations settled from their call's
    CDR, and released with nothing debited."""

    settled: int = 0
    expired: int = 0


@dataclass(frozen=True, slots=True)
class LowBalance:
    """An account's balance fell below its low-balance mark."""

    account: str
    account_id: int
    balance: Decimal
    threshold: Decimal


def _rate_from_row(row: dict[str, object]) -> Rate:
    return Rate(
        prefix=str(row["prefix"]),
        rate=Decimal(str(row["rate"])),
        connect_fee=Decimal(str(row["connect_fee"])),
        increment=Increment(int(str(row["increment_initial"])), int(str(row["increment"]))),
        min_duration=int(str(row["min_duration"])),
    )


# Lock the account row only if the funds still cover ``amount`` (FOR UPDATE re-reads the
# row a concurrent reservation changed), add the reservation unless this call has one (a
# concurrent ask for the same call: no row, the caller retries under the lock), and move
# the amount into ``reserved``; a row back means reserved.
_RESERVE_IF_FUNDED = """
WITH acct AS (
    SELECT id FROM account
     WHERE id = %(account_id)s AND balance + credit_limit - reserved >= %(amount)s
       FOR UPDATE
), ins AS (
    INSERT INTO reservation (account_id, call_id, destination, amount, max_seconds, prefix,
        rate, connect_fee, increment_initial, increment, min_duration, created_at,
        expires_at)
    SELECT acct.id, %(call_id)s, %(destination)s, %(amount)s, %(max_seconds)s, %(prefix)s,
        %(rate)s, %(connect_fee)s, %(increment_initial)s, %(increment)s, %(min_duration)s,
        %(created_at)s, %(expires_at)s
      FROM acct
    ON CONFLICT (call_id) DO NOTHING
    RETURNING account_id, amount
)
UPDATE account SET reserved = account.reserved + ins.amount
  FROM ins WHERE account.id = ins.account_id
RETURNING account.id
"""


# Settle one call (CreditControl.settle): lock the account row, settle the reservation if
# it is still open (the reservation's row lock is taken after the account's, the order of
# every other statement here: no deadlocks), debit, release, write the ledger row. ``after``
# is NULL when the reservation was settled or expired already: nothing changed.
_SETTLE = """
WITH acct AS (
    SELECT id, name, balance, low_balance FROM account WHERE id = %(account_id)s FOR UPDATE
), res AS (
    UPDATE reservation SET state = 'settled', billsec = %(billsec)s, cost = %(cost)s,
           settled_at = %(now)s
      FROM acct
     WHERE reservation.id = %(id)s AND reservation.state = 'open'
       AND reservation.account_id = acct.id
    RETURNING reservation.account_id, reservation.amount
), debit AS (
    UPDATE account SET balance = account.balance - %(cost)s,
           reserved = greatest(0, account.reserved - res.amount)
      FROM res WHERE account.id = res.account_id
    RETURNING account.balance
), ledger AS (
    INSERT INTO account_transaction (account_id, at, amount, kind, call_id, note)
    SELECT res.account_id, %(now)s, %(debit)s, 'call', %(call_id)s, %(note)s
      FROM res WHERE %(cost)s <> 0
)
SELECT acct.name, acct.balance AS before, acct.low_balance, debit.balance AS after
  FROM acct LEFT JOIN debit ON true
"""


# Release one reservation nobody settled (CreditControl.sweep): account row first, as in
# _SETTLE; a row back means this statement released it (another sweeper did not).
_EXPIRE = """
WITH acct AS (
    SELECT id FROM account WHERE id = %(account_id)s FOR UPDATE
), res AS (
    UPDATE reservation SET state = 'expired', settled_at = %(now)s
      FROM acct
     WHERE reservation.id = %(id)s AND reservation.state = 'open'
       AND reservation.account_id = acct.id
    RETURNING reservation.account_id, reservation.amount
)
UPDATE account SET reserved = greatest(0, account.reserved - res.amount)
  FROM res WHERE account.id = res.account_id
RETURNING account.id
"""


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    """Credit control's connections run in autocommit: a statement that locks an account
    row commits as it ends, and explicit transactions are ``conn.transaction()`` blocks.
    Setting it on an idle connection costs no round trip; it stays set for the pool's
    other users (portability lookups, the intercept list), whose single statements then
    commit as they end instead of when the pool takes the connection back."""
    if not conn.autocommit:
        await conn.set_autocommit(True)


class CreditControl:
    """Authorise and settle calls against account balances (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_call_seconds: int = DEFAULT_MAX_CALL_SECONDS,
        grace_seconds: int = DEFAULT_GRACE_SECONDS,
        reserve_seconds: int = 0,
        on_low_balance: Callable[[LowBalance], None] | None = None,
    ) -> None:
        self.pool = pool
        self.max_call_seconds = max_call_seconds
        self.grace_seconds = grace_seconds
        # 0: reserve the whole allowed call up front. N: reserve about N seconds at a time,
        # so parallel calls share a balance; the media node renews with extend().
        self.reserve_seconds = reserve_seconds
        self.on_low_balance = on_low_balance

    def _chunk(self, rate: Rate, start: int, allowed: int) -> tuple[int, bool]:
        """The reservation end after ``start`` seconds: ``start + reserve_seconds`` rounded
        up to an increment boundary, or ``allowed`` when that is sooner (not renewable)."""
        if not self.reserve_seconds or allowed <= start + self.reserve_seconds:
            return allowed, False
        wanted = start + self.reserve_seconds
        boundary = max_duration(rate, price(rate, wanted).cost, self.max_call_seconds)
        if boundary >= allowed:
            return allowed, False
        return boundary, True

    async def authorise(
        self,
        call_id: str,
        destination: str,
        *,
        now: datetime,
        account: str | None = None,
        gateway: str | None = None,
        source_ip: str | None = None,
        caller: str | None = None,
    ) -> Authorisation:
        """Reserve funds for the call; raise a :class:`CreditDenied` subclass to refuse it."""
        started = time.perf_counter()
        try:
            auth = await self._authorise(
                call_id, destination, now, account, gateway, source_ip, caller
            )
        except CreditDenied as exc:
            metrics.AUTHORISATIONS.labels(type(exc).__name__).inc()
            raise
        except (psycopg.Error, OSError, TimeoutError) as exc:
            metrics.AUTHORISATIONS.labels("BillingUnavailable").inc()
            log.error("credit authorisation for %s failed closed: %s", call_id, exc)
            raise BillingUnavailable(str(exc)) from exc
        finally:
            metrics.AUTH_SECONDS.observe(time.perf_counter() - started)
        metrics.AUTHORISATIONS.labels("ok").inc()
        return auth

    async def _authorise(
        self,
        call_id: str,
        destination: str,
        now: datetime,
        account: str | None,
        gateway: str | None,
        source_ip: str | None,
        caller: str | None,
    ) -> Authorisation:
        async with self.pool.connection() as conn:
            # Autocommit: the reads below need no transaction, and the one statement that
            # locks the account row commits on the server as it ends — the lock is not
            # held while a busy node reads the answer and sends COMMIT (below).
            await _autocommit(conn)
            cur = conn.cursor(row_factory=dict_row)
            account_id = await self._find_account(cur, account, gateway, source_ip, caller)
            # Everything that needs no lock first: the account's deck and funds as they are
            # now, the rate, the price. Then one statement locks the row, checks the funds
            # again on the locked row, reserves and commits: concurrent calls on one
            # account hold its lock for that statement's execution and commit only (at 50
            # calls/s on one prepaid account the queue on the lock grew to seconds).
            seen = await self._account(cur, account_id, lock=False)
            await cur.execute("SELECT 1 FROM reservation WHERE call_id = %s", (call_id,))
            if await cur.fetchone() is None:
                rate = await self._rate(cur, seen, destination, now)
                funds = seen["balance"] + seen["credit_limit"] - seen["reserved"]
                seconds = max_duration(rate, funds, self.max_call_seconds)
                if seconds > 0:
                    seconds, renewable = self._chunk(rate, 0, seconds)
                    amount = price(rate, seconds).cost
                    await cur.execute(_RESERVE_IF_FUNDED, self._reservation_row(
                        seen["id"], call_id, destination, amount, seconds, rate, now
                    ))  # fmt: skip
                    if await cur.fetchone() is not None:
                        return Authorisation(
                            call_id, seen["name"], seen["id"], seconds, amount, rate, renewable
                        )
            # A reservation for this call exists already (a retransmitted INVITE), or the
            # funds changed between the two reads: decide on the locked row.
            async with conn.transaction():
                return await self._authorise_locked(cur, account_id, call_id, destination, now)

    @staticmethod
    async def _account(cur: Any, account_id: int, *, lock: bool) -> dict[str, Any]:
        """The account row the authorisation decides on; ``lock``: ``FOR UPDATE``."""
        await cur.execute(
            "SELECT id, name, balance, credit_limit, reserved, deck_id FROM account"
            " WHERE id = %s" + (" FOR UPDATE" if lock else ""),
            (account_id,),
        )
        row: dict[str, Any] | None = await cur.fetchone()
        assert row is not None
        return row

    async def _rate(self, cur: Any, acct: dict[str, Any], destination: str, now: datetime) -> Rate:
        """The sell rate for ``destination`` in the account's deck (or the default deck)."""
        await cur.execute(
            "SELECT id, prefix, rate, connect_fee, increment_initial, increment, min_duration"
            " FROM sb_find_rate(%s, (SELECT id FROM rate_deck WHERE name = 'default'),"
            " %s, %s) WHERE id IS NOT NULL",
            (acct["deck_id"], destination, now),
        )
        rate_row = await cur.fetchone()
        if rate_row is None:
            raise NoRate(f"no rate for {destination!r} in the deck of account {acct['name']}")
        return _rate_from_row(rate_row)

    def _reservation_row(
        self,
        account_id: int,
        call_id: str,
        destination: str,
        amount: Decimal,
        seconds: int,
        rate: Rate,
        now: datetime,
    ) -> dict[str, object]:
        return {
            "account_id": account_id,
            "call_id": call_id,
            "destination": destination,
            "amount": amount,
            "max_seconds": seconds,
            "prefix": rate.prefix,
            "rate": rate.rate,
            "connect_fee": rate.connect_fee,
            "increment_initial": rate.increment.initial,
            "increment": rate.increment.step,
            "min_duration": rate.min_duration,
            "created_at": now,
            "expires_at": now + timedelta(seconds=seconds + self.grace_seconds),
        }

    async def _authorise_locked(
        self, cur: Any, account_id: int, call_id: str, destination: str, now: datetime
    ) -> Authorisation:
        acct = await self._account(cur, account_id, lock=True)
        # A retransmitted INVITE or a second ask for the same call gets the same answer.
        await cur.execute("SELECT * FROM reservation WHERE call_id = %s", (call_id,))
        existing = await cur.fetchone()
        if existing is not None and existing["state"] == "open":
            return Authorisation(
                call_id,
                acct["name"],
                acct["id"],
                existing["max_seconds"],
                existing["amount"],
                _rate_from_row(existing),
                existing["max_seconds"] < self.max_call_seconds and bool(self.reserve_seconds),
            )
        rate = await self._rate(cur, acct, destination, now)
        available = acct["balance"] + acct["credit_limit"] - acct["reserved"]
        seconds = max_duration(rate, available, self.max_call_seconds)
        if seconds <= 0:
            raise InsufficientFunds(
                f"account {acct['name']}: {available} available, first increment costs"
                f" {price(rate, 1).cost}"
            )
        seconds, renewable = self._chunk(rate, 0, seconds)
        amount = price(rate, seconds).cost
        await cur.execute(
            "INSERT INTO reservation (account_id, call_id, destination, amount, max_seconds,"
            " prefix, rate, connect_fee, increment_initial, increment, min_duration,"
            " created_at, expires_at) VALUES (%(account_id)s, %(call_id)s, %(destination)s,"
            " %(amount)s, %(max_seconds)s, %(prefix)s, %(rate)s, %(connect_fee)s,"
            " %(increment_initial)s, %(increment)s, %(min_duration)s, %(created_at)s,"
            " %(expires_at)s)"
            " ON CONFLICT (call_id) DO UPDATE SET state = 'open', amount = EXCLUDED.amount,"
            " max_seconds = EXCLUDED.max_seconds, created_at = EXCLUDED.created_at,"
            " expires_at = EXCLUDED.expires_at",
            self._reservation_row(acct["id"], call_id, destination, amount, seconds, rate, now),
        )
        await cur.execute(
            "UPDATE account SET reserved = reserved + %s WHERE id = %s", (amount, acct["id"])
        )
        return Authorisation(call_id, acct["name"], acct["id"], seconds, amount, rate, renewable)

    async def extend(self, call_id: str, *, now: datetime) -> Authorisation:
        """Reserve the next chunk of an authorised call (``reserve_seconds`` mode).

        Returns the call's new ``max_seconds`` (unchanged and ``renewable=False`` when the
        funds allow no more: hang up at it). Same locking as authorise(), so calls sharing an
        account still cannot overspend it.
        """
        try:
            return await self._extend(call_id, now)
        except CreditDenied:
            raise
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.error("credit extension for %s failed closed: %s", call_id, exc)
            raise BillingUnavailable(str(exc)) from exc

    async def _extend(self, call_id: str, now: datetime) -> Authorisation:
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT account_id FROM reservation WHERE call_id = %s", (call_id,))
            found = await cur.fetchone()
            if found is None:
                raise UnknownAccount(f"call {call_id} was never authorised")
            await cur.execute(
                "SELECT id, name, balance, credit_limit, reserved FROM account"
                " WHERE id = %s FOR UPDATE",
                (found["account_id"],),
            )
            acct = await cur.fetchone()
            assert acct is not None
            await cur.execute("SELECT * FROM reservation WHERE call_id = %s FOR UPDATE", (call_id,))
            res = await cur.fetchone()
            assert res is not None
            rate = _rate_from_row(res)
            if res["state"] != "open":
                return Authorisation(
                    call_id, acct["name"], acct["id"], res["max_seconds"], res["amount"], rate
                )
            # What this call holds already counts as available to it.
            available = acct["balance"] + acct["credit_limit"] - acct["reserved"] + res["amount"]
            allowed = max(res["max_seconds"], max_duration(rate, available, self.max_call_seconds))
            seconds, renewable = self._chunk(rate, res["max_seconds"], allowed)
            amount = price(rate, seconds).cost
            if seconds > res["max_seconds"]:
                await cur.execute(
                    "UPDATE reservation SET max_seconds = %s, amount = %s, expires_at = %s"
                    " WHERE id = %s",
                    (
                        seconds,
                        amount,
                        res["created_at"] + timedelta(seconds=seconds + self.grace_seconds),
                        res["id"],
                    ),
                )
                await cur.execute(
                    "UPDATE account SET reserved = reserved + %s WHERE id = %s",
                    (amount - res["amount"], acct["id"]),
                )
            else:
                amount = res["amount"]
            return Authorisation(
                call_id, acct["name"], acct["id"], seconds, amount, rate, renewable
            )

    async def _find_account(
        self,
        cur: psycopg.AsyncCursor[dict[str, Any]],
        account: str | None,
        gateway: str | None,
        source_ip: str | None,
        caller: str | None,
    ) -> int:
        probes: list[tuple[str, tuple[object, ...]]] = []
        if account:
            probes.append(("SELECT id FROM account WHERE name = %s", (account,)))
        if gateway:
            probes.append(
                (
                    "SELECT account_id FROM account_identity WHERE kind = 'gateway' AND value = %s",
                    (gateway,),
                )
            )
        if source_ip:
            probes.append(
                (
                    "SELECT account_id FROM account_identity WHERE kind = 'ip'"
                    " AND %s::inet <<= net ORDER BY masklen(net) DESC LIMIT 1",
                    (source_ip,),
                )
            )
        if caller:
            probes.append(
                (
                    "SELECT account_id FROM account_identity WHERE kind = 'caller' AND value = %s",
                    (caller.lstrip("+"),),
                )
            )
        for query, params in probes:
            await cur.execute(query, params)
            row = await cur.fetchone()
            if row is not None:
                return int(next(iter(row.values())) if isinstance(row, dict) else row[0])
        raise UnknownAccount(
            f"no account for gateway={gateway!r} source_ip={source_ip!r} caller={caller!r}"
            + (f" account={account!r}" if account else "")
        )

    async def settle(self, call_id: str, billsec: int, *, now: datetime) -> Settlement | None:
        """Debit the call and release its reservation, in one transaction. None when the
        call was never authorised; a second settle returns the first result unchanged.

        The reservation is read unlocked and the call priced with its rate (which never
        changes); then one autocommitted statement (:data:`_SETTLE`) locks the account
        row, settles the reservation if it is still open, debits and writes the ledger
        row. Before, the row stayed locked across five round trips: at 50 calls/s on one
        prepaid account the settlements' lock held every authorisation of that account
        waiting for seconds (docs/operations.md, "Prepaid at 50 calls/s").
        """
        return (await self._settle(call_id, billsec, now))[0]

    async def _settle(
        self, call_id: str, billsec: int, now: datetime
    ) -> tuple[Settlement | None, bool]:
        """settle(); the flag says whether this call of it debited (False: settled before)."""
        async with self.pool.connection() as conn:
            await _autocommit(conn)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM reservation WHERE call_id = %s", (call_id,))
            res = await cur.fetchone()
            if res is None:
                return None, False
            row = None
            if res["state"] == "open":
                cost = price(_rate_from_row(res), billsec).cost
                await cur.execute(
                    _SETTLE,
                    {
                        "account_id": res["account_id"],
                        "id": res["id"],
                        "billsec": billsec,
                        "cost": cost,
                        "debit": -cost,
                        "now": now,
                        "call_id": call_id,
                        "note": f"{res['destination']} {billsec}s",
                    },
                )
                row = await cur.fetchone()
            if row is None or row["after"] is None:
                # settled (or expired) already, also by a settlement that overtook ours
                await cur.execute(
                    "SELECT r.billsec, r.cost, a.name, a.balance FROM reservation r"
                    " JOIN account a ON a.id = r.account_id WHERE r.call_id = %s",
                    (call_id,),
                )
                done = await cur.fetchone()
                assert done is not None
                return Settlement(
                    call_id,
                    done["name"],
                    done["billsec"] or 0,
                    done["cost"] or Decimal(0),
                    done["balance"],
                ), False
        balance = row["after"]
        threshold = row["low_balance"]
        low: LowBalance | None = None
        if threshold and row["before"] >= threshold > balance:
            low = LowBalance(row["name"], res["account_id"], balance, threshold)
        if low is not None:
            metrics.LOW_BALANCE.inc()
            log.warning("account %s balance %s below %s", low.account, low.balance, low.threshold)
            if self.on_low_balance is not None:
                try:
                    self.on_low_balance(low)
                except Exception:  # a faulty hook must not undo a committed debit
                    log.exception("low-balance hook failed")
        return Settlement(call_id, row["name"], billsec, cost, balance), True

    async def open_among(self, call_ids: list[str]) -> list[str]:
        """The calls of ``call_ids`` whose reservation is still open (one query)."""
        async with self.pool.connection() as conn:
            await _autocommit(conn)
            cur = await conn.execute(
                "SELECT call_id FROM reservation WHERE call_id = ANY(%s) AND state = 'open'",
                (call_ids,),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def sweep(self, now: datetime, *, limit: int = 500) -> Swept:
        """Settle or release the reservations nobody settled: open past ``expires_at``.

        ``expires_at`` is the reservation's end (``max_seconds``, renewed by extend())
        plus ``grace_seconds``: a node hangs every call up at its reservation's end when it
        cannot renew it, and retries a failed settlement for the grace period, so past it
        no live channel anywhere still holds the reservation — the session TTL of
        prepaid systems (CGRateS' session TTL, a Diameter credit-control session timeout).
        A reservation left open means its settlement was lost (a node killed between
        hangup and settlement, a node that never came back): if the call's CDR is stored
        it is settled with the CDR's billsec — debited once, as the node would have —
        otherwise it is released, nothing debited. Each one is logged with its call id
        and counted in ``switchboard_credit_reservations_swept_total{outcome}``.

        Every node may sweep at once: each reservation changes state once (the statements
        act only on a reservation still open), so none is settled or released twice.
        """
        settled = expired = 0
        async with self.pool.connection() as conn:
            await _autocommit(conn)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT r.id, r.call_id, r.account_id, r.amount, r.created_at, c.billsec"
                " FROM reservation r LEFT JOIN LATERAL (SELECT billsec FROM cdr"
                "  WHERE cdr.call_id = r.call_id LIMIT 1) c ON true"
                " WHERE r.state = 'open' AND r.expires_at < %s ORDER BY r.expires_at LIMIT %s",
                (now, limit),
            )
            stale = await cur.fetchall()
            for r in stale:
                age = (now - r["created_at"]).total_seconds()
                if r["billsec"] is not None:
                    done, fresh = await self._settle(r["call_id"], int(r["billsec"]), now)
                    if done is not None and fresh:
                        settled += 1
                        metrics.SWEPT.labels("settled").inc()
                        log.warning(
                            "reservation of call %s (account %s, %s reserved, %.0f s old)"
                            " never settled: settled from its CDR, %d s, %s",
                            r["call_id"], done.account, r["amount"], age, done.billsec,
                            done.cost,
                        )  # fmt: skip
                    continue
                await cur.execute(_EXPIRE, {"id": r["id"], "account_id": r["account_id"],
                                            "now": now})  # fmt: skip
                if await cur.fetchone() is not None:
                    expired += 1
                    metrics.SWEPT.labels("expired").inc()
                    log.warning(
                        "reservation of call %s (account %d, %s reserved, %.0f s old) never"
                        " settled and no CDR: released, nothing debited",
                        r["call_id"], r["account_id"], r["amount"], age,
                    )  # fmt: skip
        return Swept(settled, expired)
