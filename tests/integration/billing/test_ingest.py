"""CDR ingest: priced at insert by the trigger (longest prefix, both sides), idempotent on
call_id, unmatched rows kept and flagged, monthly partitions, re-rating."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import psycopg
from psycopg import sql

from switchboard.billing import database
from switchboard.billing.accounts import create_account, create_carrier, topup
from switchboard.billing.cdr import Cdr
from switchboard.billing.ingest import write_batch, write_batch_sync
from switchboard.billing.rates import import_deck, load_deck, rerate
from switchboard.billing.reports import list_cdrs, report
from switchboard.rating import Increment, Rate, price

NOW = datetime.now(UTC).replace(microsecond=0)


def cdr(call_id: str, dest: str, billsec: int, **kw: object) -> Cdr:
    start = kw.pop("start", NOW)
    assert isinstance(start, datetime)
    return Cdr(
        call_id=call_id,
        start_time=start,
        destination=dest,
        answer_time=start + timedelta(seconds=2) if billsec else None,
        end_time=start + timedelta(seconds=2 + billsec),
        duration=2 + billsec,
        billsec=billsec,
        disposition="ANSWERED" if billsec else "NO ANSWER",
        sip_code=200 if billsec else 487,
        **kw,  # type: ignore[arg-type]
    )


def row(conn: psycopg.Connection, call_id: str) -> dict[str, object]:
    cur = conn.execute(
        "SELECT rate, cost, buy_rate, buy_cost, rating_status, sell_prefix, buy_prefix,"
        " billed_seconds, carrier_id, account_id FROM cdr WHERE call_id = %s",
        (call_id,),
    )
    names = [d.name for d in cur.description or []]
    values = cur.fetchone()
    assert values is not None, call_id
    return dict(zip(names, values, strict=True))


SELL = """prefix,rate,connect_fee,increment,min_duration
44,0.60,0.10,60/60,0
447,1.20,0,30/6,0
4479,2.00,0,1/1,10
1,0.05,0,1/1,0
"""
BUY = """prefix,rate,increment
44,0.30,60/60
447,0.90,1/1
"""


def test_trigger_prices_both_sides_by_longest_prefix(conn: psycopg.Connection) -> None:
    import_deck(conn, SELL.splitlines(keepends=True))
    import_deck(conn, BUY.splitlines(keepends=True), carrier="acme")
    res = write_batch_sync(
        conn,
        [
            cdr("a", "+442079460000", 61, carrier="acme"),
            cdr("b", "447700900123", 31, carrier="acme"),
            cdr("c", "4479111", 3, carrier="acme"),
            cdr("d", "12125550100", 0),
        ],
    )
    assert (res.inserted, res.duplicates) == (4, 0)
    a = row(conn, "a")
    assert (a["sell_prefix"], a["cost"], a["buy_cost"], a["billed_seconds"]) == (
        "44",
        D("1.3000"),  # 0.10 + 2 minutes at 0.60
        D("0.6000"),
        120,
    )
    b = row(conn, "b")
    assert (b["sell_prefix"], b["cost"], b["buy_prefix"], b["buy_cost"]) == (
        "447",
        D("0.7200"),  # 36 s at 1.20/min
        "447",
        D("0.4650"),  # 31 s at 0.90/min
    )
    c = row(conn, "c")
    # 4479 has a 10 s minimum; the carrier has no 4479 and falls back to 447.
    assert (c["sell_prefix"], c["cost"], c["buy_prefix"]) == ("4479", D("0.3333"), "447")
    d = row(conn, "d")
    assert (d["cost"], d["rating_status"], d["carrier_id"]) == (D("0.0000"), "rated", None)


def test_trigger_agrees_with_the_python_rater(conn: psycopg.Connection) -> None:
    rng = random.Random(7)
    deck_lines = ["prefix,rate,connect_fee,increment,min_duration\n"]
    rates: list[Rate] = []
    for prefix in ("3", "33", "331", "3312", "34", "349", "35"):
        r = Rate(
            prefix,
            D(rng.randint(1, 99999)) / 10000,
            D(rng.randint(0, 50)) / 100,
            Increment(rng.choice([1, 6, 30, 60]), rng.choice([1, 6, 10, 60])),
            rng.choice([0, 0, 15, 60]),
        )
        rates.append(r)
        deck_lines.append(f"{r.prefix},{r.rate},{r.connect_fee},{r.increment},{r.min_duration}\n")
    import_deck(conn, deck_lines)
    deck = load_deck(conn)
    calls = []
    for i in range(300):
        dest = rng.choice(["3", "33", "331", "3312", "34", "349", "35"]) + str(
            rng.randint(0, 99999)
        )
        calls.append(cdr(f"x{i}", dest, rng.choice([0, 1, 5, 29, 30, 31, 59, 60, 61, 3599])))
    write_batch_sync(conn, calls)
    for c in calls:
        expected = deck.lookup(c.destination, c.start_time)
        assert expected is not None
        got = row(conn, c.call_id)
        assert got["sell_prefix"] == expected.prefix
        assert got["cost"] == price(expected, c.billsec).cost, c


def test_unmatched_cdrs_are_kept_and_flagged(conn: psycopg.Connection) -> None:
    import_deck(conn, SELL.splitlines(keepends=True))
    create_carrier(conn, "acme")
    write_batch_sync(
        conn,
        [
            cdr("no-sell", "861012345678", 30),
            cdr("no-buy", "4420", 30, carrier="acme"),
            cdr("echo", "echo", 30),
        ],
    )
    assert row(conn, "no-sell")["rating_status"] == "unmatched"
    assert row(conn, "no-sell")["cost"] is None
    no_buy = row(conn, "no-buy")
    assert (no_buy["rating_status"], no_buy["cost"], no_buy["buy_cost"]) == (
        "unmatched",
        D("0.1000") + D("0.6000"),
        None,
    )
    assert row(conn, "echo")["rating_status"] == "internal"
    (n,) = conn.execute("SELECT count(*) FROM cdr").fetchone()  # type: ignore[misc]
    assert n == 3


def test_effective_dates_decide_the_price_by_call_start(conn: psycopg.Connection) -> None:
    old = NOW - timedelta(days=3)
    import_deck(
        conn,
        [
            "prefix,rate,effective_from\n",
            f"44,0.60,{(NOW - timedelta(days=10)).isoformat()}\n",
            f"44,1.20,{(NOW - timedelta(days=1)).isoformat()}\n",
        ],
    )
    write_batch_sync(conn, [cdr("old", "4420", 60, start=old), cdr("new", "4420", 60)])
    assert row(conn, "old")["cost"] == D("0.6000")
    assert row(conn, "new")["cost"] == D("1.2000")


def test_ingest_is_idempotent_on_call_id(conn: psycopg.Connection) -> None:
    import_deck(conn, SELL.splitlines(keepends=True))
    first = [cdr(f"c{i}", "4420", i) for i in range(50)]
    assert write_batch_sync(conn, first).inserted == 50
    # Re-sent, duplicated within the batch, and one with a different start_time.
    again = [*first[:20], first[0], cdr("c1", "4420", 1, start=NOW + timedelta(seconds=5))]
    again += [cdr(f"n{i}", "4420", 5) for i in range(10)]
    res = write_batch_sync(conn, again)
    assert (res.inserted, res.duplicates) == (10, 22)
    (n,) = conn.execute("SELECT count(*) FROM cdr").fetchone()  # type: ignore[misc]
    assert n == 60


async def test_async_write_batch(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        res = await write_batch(aconn, [cdr("a1", "4420", 3), cdr("a1", "4420", 3)])
        assert (res.inserted, res.duplicates) == (1, 1)


def test_cdrs_land_in_monthly_partitions_and_default_catches_the_rest(
    conn: psycopg.Connection,
) -> None:
    months_ago = NOW.year * 12 + NOW.month - 1 - 14  # older than the partitions made ahead
    ancient = datetime(months_ago // 12, months_ago % 12 + 1, 17, tzinfo=UTC)
    write_batch_sync(conn, [cdr("now", "4420", 1), cdr("ancient", "4420", 1, start=ancient)])
    parts = dict(
        conn.execute("SELECT call_id, tableoid::regclass::text FROM cdr").fetchall()  # type: ignore[arg-type]
    )
    assert parts["now"] == f"cdr_{NOW:%Y_%m}"
    assert parts["ancient"] == "cdr_default"
    months = (NOW.year - ancient.year) * 12 + NOW.month - ancient.month
    conn.execute("SELECT cdr_ensure_partitions(%s, 0)", (months,))
    parts = dict(
        conn.execute("SELECT call_id, tableoid::regclass::text FROM cdr").fetchall()  # type: ignore[arg-type]
    )
    assert parts["ancient"] == f"cdr_{ancient:%Y_%m}"
    assert row(conn, "ancient")["rating_status"] == "unmatched"  # moved, not lost
    ahead = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'cdr'::regclass"
    ).fetchone()
    assert ahead is not None and ahead[0] >= 5


def test_longest_prefix_lookup_is_an_index_probe(conn: psycopg.Connection) -> None:
    lines = ["prefix,rate\n"] + [f"{p},0.01\n" for p in range(100000, 120000)]
    import_deck(conn, lines)
    conn.execute("ANALYZE rate_table")
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN SELECT * FROM rate_table r WHERE r.deck_id IN (1, NULL)"
            " AND r.prefix = ANY (sb_prefixes('1100054321')) AND r.effective_from <= now()"
            " ORDER BY length(r.prefix) DESC LIMIT 1"
        ).fetchall()
    )
    assert "Index" in plan and "Seq Scan" not in plan, plan


def test_rerate_after_a_deck_change_adjusts_debited_balances(conn: psycopg.Connection) -> None:
    import_deck(conn, ["prefix,rate\n", "44,0.60\n"])
    create_account(conn, "alice")
    topup(conn, "alice", "10")
    write_batch_sync(conn, [cdr("r1", "4420", 60, account="alice"), cdr("r2", "4420", 30)])
    # Simulate the credit-control debit of r1 at the old price.
    conn.execute(
        "INSERT INTO account_transaction (account_id, amount, kind, call_id)"
        " SELECT id, -0.60, 'call', 'r1' FROM account WHERE name = 'alice';"
        " UPDATE account SET balance = balance - 0.60 WHERE name = 'alice'"
    )
    import_deck(conn, ["prefix,rate\n", "44,0.30\n"])  # same prefix, price cut
    result = rerate(conn, NOW - timedelta(hours=1))
    assert (result.cdrs, result.changed, result.adjustments) == (2, 2, 1)
    assert result.adjusted_amount == D("0.30")
    assert row(conn, "r1")["cost"] == D("0.3000")
    (balance,) = conn.execute("SELECT balance FROM account WHERE name = 'alice'").fetchone()  # type: ignore[misc]
    assert balance == D("9.70")
    # Re-running changes nothing and adjusts nothing twice.
    again = rerate(conn, NOW - timedelta(hours=1))
    assert (again.changed, again.adjustments) == (0, 0)
    (version,) = conn.execute("SELECT rating_version FROM cdr WHERE call_id = 'r1'").fetchone()  # type: ignore[misc]
    assert version == 2


RATING_COLUMNS = (
    "rate, cost, cost_exact, billed_seconds, sell_prefix, buy_rate, buy_cost, buy_cost_exact,"
    " buy_prefix, rating_status, carrier_id, account_id, originating_leg"
)


def test_batch_pricing_equals_the_trigger_row_by_row(conn: psycopg.Connection) -> None:
    """The set-based pricing of the ingest path and the BEFORE INSERT trigger (used by any
    other insert) give identical results: decks with fallback, effective dates, carriers with
    and without a deck, accounts with and without their own deck, internal destinations."""
    rng = random.Random(11)
    old = (NOW - timedelta(days=20)).isoformat()
    new = (NOW - timedelta(days=2)).isoformat()
    sell = ["prefix,rate,connect_fee,increment,min_duration,effective_from\n"]
    for p in ("3", "33", "331", "3312", "34", "349", "44", "447"):
        for when in (old, new):
            sell.append(
                f"{p},0.{rng.randint(1000, 9999)},0.0{rng.randint(0, 9)},{rng.choice(['1/1', '60/60', '30/6'])},{rng.choice([0, 20])},{when}\n"
            )
    import_deck(conn, sell)
    create_account(conn, "own")
    import_deck(
        conn, ["prefix,rate,increment\n", "33,0.0100,6/6\n", "4471,0.9,1/1\n"], account="own"
    )
    create_account(conn, "plain")
    import_deck(conn, ["prefix,rate\n", "33,0.20\n", "3312,0.25\n", "44,0.10\n"], carrier="acme")
    create_carrier(conn, "nodeck")
    conn.execute("UPDATE carrier SET deck_id = NULL WHERE name = 'nodeck'")
    calls = []
    for i in range(1200):
        dest = rng.choice(["3", "33", "331", "3312", "34", "349", "44", "447", "4471", "5", "+33"])
        dest += str(rng.randint(0, 999999)) if rng.random() < 0.95 else "x"
        if rng.random() < 0.03:
            dest = rng.choice(["echo", "conf-1", ""])
        start = NOW - timedelta(days=rng.choice([1, 10, 30]), seconds=rng.randint(0, 999))
        calls.append(
            cdr(
                f"p{i}",
                dest,
                rng.choice([0, 1, 6, 19, 29, 31, 60, 61, 3600]),
                start=start,
                account=rng.choice(["", "own", "plain", "ghost"]),
                carrier=rng.choice(["", "acme", "nodeck"]),
                # a third are bridge B-legs: no sell side, the buy side as any leg
                originating_leg=f"a{i}" if rng.random() < 0.33 else "",
            )
        )
    write_batch_sync(conn, calls)  # hash-join path
    write_batch_sync(conn, [cdr("small", "33123", 61, account="own", carrier="acme")])
    batch = conn.execute(f"SELECT call_id, {RATING_COLUMNS} FROM cdr ORDER BY call_id").fetchall()
    # The same CDRs inserted one by one through the trigger, as psql would.
    conn.execute("TRUNCATE cdr, cdr_seen")
    with conn.transaction():
        for c in [*calls, cdr("small", "33123", 61, account="own", carrier="acme")]:
            conn.execute(
                "INSERT INTO cdr (call_id, destination, start_time, billsec, duration,"
                " carrier_id, account_id, originating_leg) VALUES (%s, %s, %s, %s, %s,"
                " (SELECT id FROM carrier WHERE name = %s), (SELECT id FROM account WHERE name = %s),"
                " %s)",
                (
                    c.call_id,
                    c.destination,
                    c.start_time,
                    c.billsec,
                    c.duration,
                    c.carrier,
                    c.account,
                    c.originating_leg,  # '' on A-legs: stored as NULL, as ingest does
                ),
            )
    trigger = conn.execute(f"SELECT call_id, {RATING_COLUMNS} FROM cdr ORDER BY call_id").fetchall()
    assert len(batch) == len(trigger) == 1201
    assert batch == trigger
    statuses = {r[10] for r in batch}
    assert statuses == {"rated", "unmatched", "internal"}
    b_legs = [r for r in batch if r[13] is not None]
    assert 300 < len(b_legs) < 500
    assert all(r[1] is None and r[5] is None for r in b_legs if r[10] != "internal")
    assert {r[10] for r in b_legs} == {"rated", "unmatched", "internal"}


def test_a_cdr_inserted_by_hand_is_priced_by_the_trigger(conn: psycopg.Connection) -> None:
    import_deck(conn, ["prefix,rate\n", "44,0.60\n"])
    conn.execute(
        "INSERT INTO cdr (call_id, destination, start_time, billsec) VALUES ('psql', '4420', now(), 90)"
    )
    assert row(conn, "psql")["cost"] == D("0.9000")


def test_copy_escaping_round_trips_awkward_text(conn: psycopg.Connection) -> None:
    awkward = 'tab\there\nnew\\line "q" ünï ☎ \\N'
    c = Cdr(
        call_id="odd\tid\\1",
        start_time=NOW,
        caller_id=awkward,
        destination="+4420",
        hangup_cause="NORMAL_CLEARING",
        codec="PCMU",
        node="media-1",
        sip_code=None,
        pdd_ms=None,
    )
    assert write_batch_sync(conn, [c]).inserted == 1
    got = conn.execute(
        "SELECT call_id, caller_id, sip_code, pdd_ms, codec, node FROM cdr"
    ).fetchone()
    assert got == ("odd\tid\\1", awkward, None, None, "PCMU", "media-1")


def test_legs_sharing_a_sip_call_id_are_all_stored_and_replays_still_dropped(
    conn: psycopg.Connection,
) -> None:
    """A call through the router to media-1, which bridges through media-2: one SIP
    Call-ID, two legs, two CDRs (keyed by channel uuid). A spool replay of either leg
    (the JSON line read back) is recognised and dropped."""
    import_deck(conn, SELL.splitlines(keepends=True))
    legs = [
        cdr("6f1c0e2a-leg-a", "4420", 30, node="media-1", sip_call_id="abc@carrier"),
        cdr("0b9d4c11-leg-b", "4420", 30, node="media-2", sip_call_id="abc@carrier"),
    ]
    assert write_batch_sync(conn, legs[:1]).inserted == 1
    assert write_batch_sync(conn, legs[1:]).inserted == 1
    replayed = [Cdr.from_json(c.to_json()) for c in legs]
    res = write_batch_sync(conn, replayed)
    assert (res.inserted, res.duplicates) == (0, 2)
    stored = list_cdrs(conn)
    assert sorted((r["call_id"], r["sip_call_id"], str(r["cost"])) for r in stored) == [
        ("0b9d4c11-leg-b", "abc@carrier", "0.7000"),  # 0.10 + 0.60/min, 60/60
        ("6f1c0e2a-leg-a", "abc@carrier", "0.7000"),
    ]


def test_rows_inserted_by_other_tools_keep_their_sip_call_id(conn: psycopg.Connection) -> None:
    """The trigger path: a row in the original layout (call_id = the SIP Call-ID) gets it
    copied into sip_call_id; a row that names its sip_call_id keeps it."""
    conn.execute(
        "INSERT INTO cdr (call_id, destination, start_time, billsec) VALUES"
        " ('legacy@pbx', '4420', now(), 60)"
    )
    conn.execute(
        "INSERT INTO cdr (call_id, sip_call_id, destination, start_time, billsec) VALUES"
        " ('uuid-1', 'shared@pbx', '4420', now(), 60)"
    )
    got = dict(conn.execute("SELECT call_id, sip_call_id FROM cdr").fetchall())  # type: ignore[arg-type]
    assert got == {"legacy@pbx": "legacy@pbx", "uuid-1": "shared@pbx"}


def test_sip_call_id_migration_applies_to_an_already_migrated_database(admin_url: str) -> None:
    """0002 lands after 0010 on a database migrated before it existed (versions are
    applied by what schema_migrations lacks, not by the highest one)."""
    name = f"sb_old_{random.getrandbits(32):x}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database.with_dbname(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as c:  # the schema as it was before 0002
            c.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in database.migrations():
                if m.version in (1, 10):  # what existed before 0002
                    c.execute(m.text.encode())
                    c.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (m.version, m.name))
            c.execute("SELECT cdr_ensure_partitions(1, 3)")
            c.execute(
                "INSERT INTO cdr (call_id, destination, start_time, billsec)"
                " VALUES ('before@pbx', '4420', now(), 5)"
            )
        # 0002 and 0003 (and any later one: 0011 ...), never 0010 again
        assert database.migrate(url)[:2] == [2, 3]
        assert database.migrate(url) == []
        with psycopg.connect(url, autocommit=True) as c:
            write_batch_sync(c, [cdr("after", "4420", 5, sip_call_id="x@y")])
            got = dict(c.execute("SELECT call_id, sip_call_id FROM cdr").fetchall())  # type: ignore[arg-type]
        assert got == {"before@pbx": "", "after": "x@y"}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_bridge_b_leg_is_priced_on_the_buy_side_only_by_both_paths(
    conn: psycopg.Connection,
) -> None:
    """A transit call: the A-leg (inbound, the customer's) is sold, the B-leg that bridge
    created out on the carrier gateway is bought, and the call is sold once. The same by the
    batched ingest, by the BEFORE INSERT trigger and by re-rating."""
    import_deck(conn, SELL.splitlines(keepends=True))  # 'default' sell deck
    import_deck(conn, BUY.splitlines(keepends=True), carrier="acme")
    create_carrier(conn, "nodeck")
    legs = [
        # the customer's A-leg: sell side (default deck), no carrier
        cdr("a-leg", "447700900123", 31, direction="inbound", sip_call_id="x@customer"),
        # its B-leg on the carrier: buy side only; rated (nothing due on the sell side)
        cdr("b-leg", "447700900123", 31, carrier="acme", originating_leg="a-leg",
            sip_call_id="y@media"),
        # a B-leg on a carrier without a buy rate: unmatched for the buy side only
        cdr("b-nobuy", "447700900123", 31, carrier="nodeck", originating_leg="a-leg"),
        # a B-leg with no carrier (to a registered user): nothing to price, rated
        cdr("b-user", "447700900123", 31, originating_leg="a-leg"),
        # a B-leg to a non-number: internal, as any leg
        cdr("b-echo", "echo", 31, originating_leg="a-leg"),
        # an originated leg with no A-leg (the dialer's) is the customer's call: both sides
        cdr("dialer", "447700900123", 31, carrier="acme"),
    ]  # fmt: skip
    write_batch_sync(conn, legs)
    got_batch = {c.call_id: row(conn, c.call_id) for c in legs}
    conn.execute("TRUNCATE cdr, cdr_seen")
    for c in legs:
        conn.execute(
            "INSERT INTO cdr (call_id, destination, start_time, billsec, duration, carrier_id,"
            " originating_leg) VALUES (%s, %s, %s, %s, %s,"
            " (SELECT id FROM carrier WHERE name = %s), %s)",
            (c.call_id, c.destination, c.start_time, c.billsec, c.duration, c.carrier,
             c.originating_leg),
        )  # fmt: skip
    got_trigger = {c.call_id: row(conn, c.call_id) for c in legs}
    assert got_batch == got_trigger
    rerate(conn, NOW - timedelta(days=1))
    assert {c.call_id: row(conn, c.call_id) for c in legs} == got_trigger

    sell = (D("0.7200"), "447")  # 36 s (30/6) at 1.20/min
    buy = (D("0.4650"), "447")  # 31 s at 0.90/min, 1/1
    a, b = got_batch["a-leg"], got_batch["b-leg"]
    assert ((a["cost"], a["sell_prefix"]), a["buy_cost"], a["rating_status"]) == (
        sell, None, "rated",
    )  # fmt: skip
    assert (b["rate"], b["cost"], b["sell_prefix"], b["billed_seconds"]) == (None, None, None, 0)
    assert ((b["buy_cost"], b["buy_prefix"]), b["rating_status"]) == (buy, "rated")
    nobuy = got_batch["b-nobuy"]
    assert (nobuy["cost"], nobuy["buy_cost"], nobuy["rating_status"]) == (None, None, "unmatched")
    user = got_batch["b-user"]
    assert (user["cost"], user["buy_cost"], user["rating_status"]) == (None, None, "rated")
    assert (got_batch["b-echo"]["cost"], got_batch["b-echo"]["rating_status"]) == (
        D("0.0000"), "internal",
    )  # fmt: skip
    dialer = got_batch["dialer"]
    assert ((dialer["cost"], dialer["sell_prefix"]), (dialer["buy_cost"], dialer["buy_prefix"])) == (
        sell, buy,
    )  # fmt: skip
    stored = {r["call_id"]: r["originating_leg"] for r in list_cdrs(conn)}
    assert stored["b-leg"] == "a-leg" and stored["a-leg"] == "" and stored["dialer"] == ""


def test_report_revenue_counts_a_bridged_call_once(conn: psycopg.Connection) -> None:
    import_deck(conn, SELL.splitlines(keepends=True))
    import_deck(conn, BUY.splitlines(keepends=True), carrier="acme")
    write_batch_sync(
        conn,
        [
            cdr("in", "447700900123", 31, direction="inbound"),
            cdr("out", "447700900123", 31, carrier="acme", originating_leg="in"),
        ],
    )
    (total,) = report(conn)
    assert (total.seizures, total.revenue, total.cost) == (2, D("0.7200"), D("0.4650"))
    assert (total.margin, total.unmatched) == (D("0.2550"), 0)


def test_originating_leg_migration_applies_to_an_already_migrated_database(
    admin_url: str,
) -> None:
    """0003 lands on a database migrated through 0010: CDRs stored before keep their
    prices; B-legs stored after get no sell side, by ingest and by the trigger."""
    name = f"sb_old_{random.getrandbits(32):x}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database.with_dbname(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as c:  # the schema as it was before 0003
            c.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in database.migrations():
                if m.version in (1, 2, 10):
                    c.execute(m.text.encode())
                    c.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (m.version, m.name))
            c.execute("SELECT cdr_ensure_partitions(1, 3)")
            import_deck(c, ["prefix,rate\n", "44,0.60\n"])
            c.execute(
                "INSERT INTO cdr (call_id, destination, start_time, billsec)"
                " VALUES ('before', '4420', now(), 60)"
            )
        assert database.migrate(url)[:1] == [3]  # then the later ones (0011 ...)
        assert database.migrate(url) == []
        with psycopg.connect(url, autocommit=True) as c:
            write_batch_sync(c, [cdr("after-b", "4420", 60, originating_leg="x")])
            c.execute(
                "INSERT INTO cdr (call_id, destination, start_time, billsec, originating_leg)"
                " VALUES ('psql-b', '4420', now(), 60, 'y'), ('psql-a', '4420', now(), 60, '')"
            )
            got = {
                r[0]: r[1:]
                for r in c.execute(
                    "SELECT call_id, originating_leg, cost, rating_status FROM cdr"
                ).fetchall()
            }
        assert got == {
            "before": (None, D("0.6000"), "rated"),
            "after-b": ("x", None, "rated"),
            "psql-b": ("y", None, "rated"),
            "psql-a": (None, D("0.6000"), "rated"),
        }
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_compliance_columns_round_trip(conn: psycopg.Connection) -> None:
    """emergency, verstat and attestation (docs/compliance.md) through the batch COPY and
    the spool's JSON; a CDR written before they existed reads as not flagged."""
    flagged = cdr("e1", "112", 30, emergency=True)
    verified = cdr("v1", "4420", 5, verstat="TN-Validation-Passed", attestation="A")
    assert Cdr.from_json(verified.to_json()) == verified
    old = verified.to_json().replace(',"emergency":false', "")
    assert Cdr.from_json(old).emergency is False
    write_batch_sync(conn, [flagged, verified, cdr("p1", "4420", 5)])
    rows = {r["call_id"]: r for r in list_cdrs(conn)}
    assert (rows["e1"]["emergency"], rows["e1"]["verstat"]) == (True, "")
    assert (rows["v1"]["emergency"], rows["v1"]["verstat"], rows["v1"]["attestation"]) == (
        False, "TN-Validation-Passed", "A",
    )  # fmt: skip
    assert conn.execute("SELECT verstat FROM cdr WHERE call_id = 'p1'").fetchone() == (None,)
