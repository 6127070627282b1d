"""Credit control against real PostgreSQL: authorisation with a maximum duration,
reservations that stop parallel calls overspending, settlement, postpaid limits,
low-balance events, failing closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import TYPE_CHECKING, cast

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from switchboard.billing.accounts import AccountError, create_account, show, topup
from switchboard.billing.credit import (
    BillingUnavailable,
    CreditControl,
    CreditDenied,
    InsufficientFunds,
    LowBalance,
    NoRate,
    Swept,
    UnknownAccount,
)
from switchboard.billing.rates import import_deck

if TYPE_CHECKING:
    from switchboard.media.core import Switch

NOW = datetime.now(UTC)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = AsyncConnectionPool(db_url, min_size=8, max_size=8, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


@pytest.fixture
def deck(conn: psycopg.Connection) -> None:
    # 0.60/min per second; UK mobile in 60/60 with a connect fee.
    import_deck(
        conn,
        ["prefix,rate,connect_fee,increment\n", "44,0.60,0,1/1\n", "447,1.20,0.05,60/60\n"],
    )


def balance(conn: psycopg.Connection, name: str) -> tuple[D, D]:
    view = show(conn, name)
    return view.balance, view.reserved


async def test_authorise_returns_the_duration_the_balance_allows(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "alice", ips=["192.0.2.0/24"])
    topup(conn, "alice", "1.00")
    cc = CreditControl(pool)
    auth = await cc.authorise("c1", "442079460000", source_ip="192.0.2.10", now=NOW)
    assert (auth.account, auth.max_seconds, auth.reserved) == ("alice", 100, D("1.0000"))
    assert balance(conn, "alice") == (D("1.00"), D("1.00"))
    # 60/60 with a connect fee: 0.05 + 1.20 per started minute; 2.50 covers two minutes.
    create_account(conn, "bob", gateways=["gw-bob"])
    topup(conn, "bob", "2.50")
    auth = await cc.authorise("c2", "447700900123", gateway="gw-bob", now=NOW)
    assert auth.max_seconds == 120 and auth.reserved == D("2.4500")


async def test_settle_debits_and_releases_in_one_step(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "alice", callers=["+15550001"])
    topup(conn, "alice", "5")  # stamped with the database's clock
    # the call comes after the top-up in the account's history: a clock read now, not the
    # module's NOW, which a long session leaves minutes behind the database's
    now = datetime.now(UTC)
    cc = CreditControl(pool)
    auth = await cc.authorise("c1", "4420", caller="15550001", now=now)
    settled = await cc.settle("c1", 30, now=now + timedelta(seconds=32))
    assert settled is not None and settled.cost == D("0.3000") and settled.balance == D("4.70")
    assert balance(conn, "alice") == (D("4.70"), D("0"))
    # A second settle (retransmitted BYE, node retry) changes nothing.
    again = await cc.settle("c1", 30, now=now)
    assert again is not None and again.cost == D("0.3000")
    assert balance(conn, "alice") == (D("4.70"), D("0"))
    assert auth.max_seconds == 500
    assert show(conn, "alice").transactions[0][1:3] == ("call", D("-0.3"))
    assert await cc.settle("never-authorised", 10, now=now) is None


async def test_parallel_authorisations_never_overspend(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "shared", gateways=["gw"])
    topup(conn, "shared", "5.00")
    cc = CreditControl(pool, max_call_seconds=60)  # each call reserves at most a minute

    async def call(i: int) -> int:
        try:
            auth = await cc.authorise(f"p{i}", "4420", gateway="gw", now=NOW)
        except InsufficientFunds:
            return 0
        return auth.max_seconds

    granted = await asyncio.gather(*(call(i) for i in range(40)))
    # 5.00 at 0.01/s = 500 s in total, whatever the interleaving.
    assert sum(granted) == 500
    assert sorted(g for g in granted if g)[:1] == [20] and granted.count(60) == 8
    assert balance(conn, "shared") == (D("5.00"), D("5.00"))
    # Every call talks exactly as long as allowed and hangs up.
    await asyncio.gather(*(cc.settle(f"p{i}", g, now=NOW) for i, g in enumerate(granted) if g))
    assert balance(conn, "shared") == (D("0.00"), D("0"))
    with pytest.raises(InsufficientFunds) as info:
        await cc.authorise("late", "4420", gateway="gw", now=NOW)
    assert info.value.status == 402


async def test_the_same_call_asked_for_at_once_is_reserved_once(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    # A retransmitted INVITE handled in parallel (two nodes, or a retry racing the first
    # ask): both asks find no reservation before either commits; one reserves, the other
    # gets the same answer, and the account holds the amount once.
    create_account(conn, "dup", gateways=["gw"])
    topup(conn, "dup", "5.00")
    cc = CreditControl(pool, max_call_seconds=60)
    answers = await asyncio.gather(
        *(cc.authorise("same", "4420", gateway="gw", now=NOW) for _ in range(8))
    )
    assert {(a.max_seconds, a.reserved) for a in answers} == {(60, D("0.6000"))}
    assert balance(conn, "dup") == (D("5.00"), D("0.60"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reservation WHERE call_id = 'same'")
        assert cur.fetchone() == (1,)


async def test_funds_spent_between_the_reads_are_seen_under_the_lock(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    # The price is worked out before the row is locked; if another call reserves the
    # funds in between, the locked check refuses the stale amount and the decision is
    # taken again on the locked row: the second call gets what is left, not 0 and not more.
    create_account(conn, "race", gateways=["gw"])
    topup(conn, "race", "1.00")  # 100 s at 0.01/s
    cc = CreditControl(pool)
    first = await cc.authorise("r1", "4420", gateway="gw", now=NOW)
    assert first.max_seconds == 100
    await cc.settle("r1", 70, now=NOW)  # 0.30 left
    # Another node reserves 0.20 of it and has not committed yet: our read sees 0.30 free,
    # our reserving statement waits for its lock.
    with conn.transaction():
        conn.execute("UPDATE account SET reserved = reserved + 0.20 WHERE name = 'race'")
        second = asyncio.create_task(cc.authorise("r2", "4420", gateway="gw", now=NOW))
        for _ in range(500):  # bounded: until our statement waits on the row lock
            await asyncio.sleep(0.01)
            waiting = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if waiting and waiting[0]:
                break
        else:
            raise AssertionError("the authorisation never waited for the row lock")
    auth = await second
    assert (auth.max_seconds, auth.reserved) == (10, D("0.1000"))
    assert balance(conn, "race") == (D("0.30"), D("0.30"))


async def test_late_hangup_overspends_at_most_one_increment(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "m", gateways=["gw"])
    topup(conn, "m", "1.30")
    cc = CreditControl(pool)
    auth = await cc.authorise("c1", "447700", gateway="gw", now=NOW)
    assert auth.max_seconds == 60  # 0.05 + 1.20 of 1.30
    settled = await cc.settle("c1", auth.max_seconds + 1, now=NOW)  # node hung up 1 s late
    assert settled is not None
    overspend = -settled.balance
    assert overspend == D("1.15") and overspend <= D("1.20")  # under one 60 s increment


async def test_postpaid_credit_limit(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "corp", kind="postpaid", credit_limit="3.00", gateways=["corp"])
    cc = CreditControl(pool)
    auth = await cc.authorise("c1", "4420", gateway="corp", now=NOW)
    assert auth.max_seconds == 300
    await cc.settle("c1", 300, now=NOW)
    assert balance(conn, "corp") == (D("-3.00"), D("0"))
    with pytest.raises(InsufficientFunds):
        await cc.authorise("c2", "4420", gateway="corp", now=NOW)
    with pytest.raises(AccountError, match="postpaid"):
        create_account(conn, "pre", credit_limit="5")


async def test_refusals_are_typed_with_the_sip_answer(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "alice", ips=["10.1.0.0/16"])
    topup(conn, "alice", "1")
    cc = CreditControl(pool)
    with pytest.raises(UnknownAccount) as unknown:
        await cc.authorise("c1", "4420", source_ip="10.2.0.1", now=NOW)
    assert (unknown.value.status, unknown.value.cause) == (403, "CALL_REJECTED")
    with pytest.raises(NoRate) as norate:
        await cc.authorise("c2", "861012345", source_ip="10.1.2.3", now=NOW)
    assert norate.value.status == 404
    assert balance(conn, "alice") == (D("1"), D("0"))


async def test_low_balance_event_fires_once_when_crossing(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "alice", low_balance="1.00", gateways=["gw"])
    topup(conn, "alice", "1.50")
    events: list[LowBalance] = []
    cc = CreditControl(pool, on_low_balance=events.append)
    before = REGISTRY.get_sample_value("switchboard_low_balance_events_total") or 0
    for i, billsec in enumerate((30, 30, 10)):
        await cc.authorise(f"c{i}", "4420", gateway="gw", now=NOW)
        await cc.settle(f"c{i}", billsec, now=NOW)
    assert events == [LowBalance("alice", events[0].account_id, D("0.90"), D("1.00"))]
    assert REGISTRY.get_sample_value("switchboard_low_balance_events_total") == before + 1


def swept(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchboard_credit_reservations_swept_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_the_sweep_settles_or_releases_reservations_nobody_settled(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    """Three calls authorised; their settlements never come (the node died after hangup).
    Until their expiry (the reservation's end + grace) the sweep leaves them alone; then
    the call whose CDR is stored is settled from it (debited once, as the node would
    have), the other two are released with nothing debited. Two nodes sweeping at once
    and a late settlement from the node change nothing more."""
    create_account(conn, "alice", gateways=["gw"])
    topup(conn, "alice", "3")
    now = datetime.now(UTC)
    cc = CreditControl(pool, grace_seconds=10, reserve_seconds=60)  # 0.60 each
    auths = [await cc.authorise(f"c{i}", "4420", gateway="gw", now=now) for i in range(3)]
    assert balance(conn, "alice") == (D("3"), D("1.80"))
    # c0 was answered and talked 42 s: its CDR is stored (the writer spools and retries)
    conn.execute(
        "INSERT INTO cdr (call_id, start_time, billsec, direction) VALUES ('c0', %s, 42,"
        " 'inbound')",
        (now,),
    )
    before = swept("settled"), swept("expired")
    end = now + timedelta(seconds=auths[0].max_seconds)
    assert await cc.sweep(end + timedelta(seconds=10)) == Swept(0, 0)  # not expired yet
    later = end + timedelta(seconds=11)
    first, second = await asyncio.gather(cc.sweep(later), cc.sweep(later))
    assert (first.settled + second.settled, first.expired + second.expired) == (1, 2)
    assert (swept("settled"), swept("expired")) == (before[0] + 1, before[1] + 2)
    assert balance(conn, "alice") == (D("2.58"), D("0"))  # 42 s at 0.60/min, once
    states = conn.execute("SELECT call_id, state, billsec FROM reservation ORDER BY call_id")
    assert states.fetchall() == [("c0", "settled", 42), ("c1", "expired", None),
                                 ("c2", "expired", None)]  # fmt: skip
    assert await cc.sweep(later) == Swept(0, 0)
    late = await cc.settle("c0", 42, now=later)  # the node's own retry, at last
    assert late is not None and late.balance == D("2.58")
    debits = conn.execute("SELECT count(*) FROM account_transaction WHERE kind = 'call'")
    assert debits.fetchone() == (1,)


async def test_billing_database_down_fails_closed() -> None:
    dead = AsyncConnectionPool(
        "host=127.0.0.1 port=1 dbname=x connect_timeout=1", min_size=1, open=False, timeout=1
    )
    await dead.open(wait=False)
    try:
        cc = CreditControl(dead)
        with pytest.raises(BillingUnavailable) as info:
            await cc.authorise("c1", "4420", gateway="gw", now=NOW)
        assert isinstance(info.value, CreditDenied) and info.value.status == 503
    finally:
        await dead.close()


async def test_chunked_reservations_share_a_balance_and_extend_to_the_limit(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    create_account(conn, "shared", gateways=["gw"])
    topup(conn, "shared", "3.00")  # 300 s at 0.01/s
    cc = CreditControl(pool, reserve_seconds=60)
    a = await cc.authorise("a", "4420", gateway="gw", now=NOW)
    b = await cc.authorise("b", "4420", gateway="gw", now=NOW)
    # Both calls get a minute, not the first one the whole balance.
    assert (a.max_seconds, a.renewable, b.max_seconds, b.renewable) == (60, True, 60, True)
    assert balance(conn, "shared") == (D("3.00"), D("1.20"))

    async def talk(call: str) -> int:
        limit = 60
        for _ in range(10):  # bounded: the funds end well before
            auth = await cc.extend(call, now=NOW)
            assert auth.max_seconds >= limit
            limit = auth.max_seconds
            if not auth.renewable:
                break
        return limit

    limits = await asyncio.gather(talk("a"), talk("b"))
    assert sum(limits) == 300  # every second of the balance, and not one more
    assert balance(conn, "shared") == (D("3.00"), D("3.00"))
    for call, limit in zip(("a", "b"), limits, strict=True):
        await cc.settle(call, limit, now=NOW)
    assert balance(conn, "shared") == (D("0.00"), D("0"))
    again = await cc.extend("a", now=NOW)  # settled: nothing more
    assert not again.renewable
    with pytest.raises(UnknownAccount):
        await cc.extend("never", now=NOW)


async def test_a_restart_settles_the_calls_that_ended_just_before_the_crash(
    conn: psycopg.Connection, pool: AsyncConnectionPool, deck: None
) -> None:
    """A node killed just after three calls hung up: one settlement had committed, two
    died with the process. The restart hands CallCredit the journal's ended legs with
    their CDRs' billsec: the two open reservations are settled, the settled one is not
    debited again, a call billing never saw is ignored."""
    from switchboard.media.credit import CallCredit

    create_account(conn, "alice", gateways=["gw"])
    topup(conn, "alice", "3")
    now = datetime.now(UTC)
    cc = CreditControl(pool, reserve_seconds=60)
    for call in ("c1", "c2", "c3"):
        await cc.authorise(call, "4420", gateway="gw", now=now)
    await cc.settle("c1", 30, now=now)  # its node's own settlement made it
    node = CallCredit(cast("Switch", object()), cc)
    node.settle_ended({"c1": 30, "c2": 12, "c3": 0, "never": 5})
    await node.close()  # waits for the settlements in flight
    rows = conn.execute(
        "SELECT call_id, state, billsec FROM reservation ORDER BY call_id"
    ).fetchall()
    assert rows == [("c1", "settled", 30), ("c2", "settled", 12), ("c3", "settled", 0)]
    assert balance(conn, "alice") == (D("2.58"), D("0"))  # 30 s + 12 s, each once
