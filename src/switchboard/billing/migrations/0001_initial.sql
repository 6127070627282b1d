-- Switchboard billing schema, version 1.
-- The original system's cdr columns (call_id … cost) and rate_table(prefix, rate) keep their
-- names and meaning (operators' reports rely on them); everything else extends them.
-- Money is NUMERIC, never float.

-- Rate decks: a named set of prefix rates. 'sell' decks price calls to accounts (customers),
-- 'buy' decks price what carriers charge us. The deck named 'default' is the sell deck for
-- accounts without their own deck, and the fallback for prefixes missing from theirs.
CREATE TABLE rate_deck (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    direction   text NOT NULL CHECK (direction IN ('buy', 'sell')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rate_deck (name, direction) VALUES ('default', 'sell');

CREATE TABLE carrier (
    id       serial PRIMARY KEY,
    name     text NOT NULL UNIQUE,            -- the media node's gateway name
    deck_id  integer REFERENCES rate_deck (id)
);

CREATE TABLE account (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    kind          text NOT NULL DEFAULT 'prepaid' CHECK (kind IN ('prepaid', 'postpaid')),
    balance       numeric(20, 6) NOT NULL DEFAULT 0,
    -- postpaid: how far below zero the balance may go; prepaid accounts have 0.
    credit_limit  numeric(20, 6) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    -- sum of open reservations (calls in progress); maintained with the reservations.
    reserved      numeric(20, 6) NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    low_balance   numeric(20, 6) NOT NULL DEFAULT 0,
    currency      text NOT NULL DEFAULT 'USD',
    deck_id       integer REFERENCES rate_deck (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- How a call finds its account at setup: the carrier gateway it arrived on, the source IP
-- (a CIDR, longest mask wins) or the caller id.
CREATE TABLE account_identity (
    kind        text NOT NULL CHECK (kind IN ('gateway', 'ip', 'caller')),
    value       text NOT NULL,
    net         cidr,
    account_id  integer NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    PRIMARY KEY (kind, value),
    CHECK ((kind = 'ip') = (net IS NOT NULL))
);
CREATE INDEX account_identity_net ON account_identity USING gist (net inet_ops) WHERE kind = 'ip';

-- Every change of a balance, with its reason: the audit trail behind account.balance.
CREATE TABLE account_transaction (
    id          bigserial PRIMARY KEY,
    account_id  integer NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    amount      numeric(20, 6) NOT NULL,       -- positive credits, negative debits
    kind        text NOT NULL CHECK (kind IN ('topup', 'call', 'rerate', 'adjust')),
    call_id     text COLLATE "C",
    note        text NOT NULL DEFAULT ''
);
CREATE INDEX account_transaction_account ON account_transaction (account_id, at);

-- The original rate_table(prefix, rate), rate per minute, extended with its deck, billing
-- increments (initial/step seconds: 60/60, 1/1, 30/6), minimum duration, connect fee and
-- effective dates. The unique btree on (deck_id, prefix, effective_from) is also the index
-- the longest-prefix probe `prefix = ANY(<all prefixes of the number>)` uses
-- (rating/deck.py does the same in memory): an index probe per prefix, not a scan.
CREATE TABLE rate_table (
    id                 bigserial PRIMARY KEY,
    deck_id            integer NOT NULL REFERENCES rate_deck (id) ON DELETE CASCADE,
    prefix             text NOT NULL CHECK (prefix ~ '^[0-9]{1,16}$'),
    rate               numeric(12, 6) NOT NULL CHECK (rate >= 0),
    connect_fee        numeric(12, 6) NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    increment_initial  integer NOT NULL DEFAULT 1 CHECK (increment_initial >= 1),
    increment          integer NOT NULL DEFAULT 1 CHECK (increment >= 1),
    min_duration       integer NOT NULL DEFAULT 0 CHECK (min_duration >= 0),
    effective_from     timestamptz NOT NULL DEFAULT '-infinity',
    effective_to       timestamptz,
    description        text NOT NULL DEFAULT '',
    UNIQUE (deck_id, prefix, effective_from),
    CHECK (effective_to IS NULL OR effective_to > effective_from)
);
-- min/max prefix length in one index probe: batch rating only tries prefix lengths that exist.
CREATE INDEX rate_table_prefix_length ON rate_table (length(prefix));

-- Digits a rate deck is matched against: a leading '+' dropped; NULL for non-numbers
-- (echo, conf-1). Mirrors switchboard.rating.deck.normalise_number. One expression, so
-- the planner inlines it (a SQL function with a FROM clause is re-planned on every call).
CREATE FUNCTION sb_number(destination text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN btrim(destination) ~ '^\+?[0-9]+$' THEN ltrim(btrim(destination), '+') END
$$;

-- Every prefix of a dialled number from `longest` down to `shortest` digits, longest
-- first; '{}' for non-numbers. Mirrors switchboard.rating.deck.prefixes_of. PL/pgSQL, not
-- SQL: a non-inlinable SQL function is planned again on every call (10x slower here).
CREATE FUNCTION sb_prefixes(number text, shortest integer DEFAULT 1, longest integer DEFAULT 16)
RETURNS text[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    d text := btrim(number);
    out text[] := '{}';
BEGIN
    IF left(d, 1) = '+' THEN
        d := substr(d, 2);
    END IF;
    IF d !~ '^[0-9]+$' THEN
        RETURN out;
    END IF;
    FOR n IN REVERSE least(length(d), longest, 16) .. greatest(shortest, 1) LOOP
        out := out || left(d, n);
    END LOOP;
    RETURN out;
END
$$;

-- Billed seconds: first block `initial`, then blocks of `step`, floor `minimum`; 0 when
-- unanswered. Mirrors switchboard.rating.rate.billable_seconds.
CREATE FUNCTION sb_billable_seconds(billsec integer, initial integer, step integer, minimum integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN billsec <= 0 THEN 0
                ELSE greatest(minimum,
                              CASE WHEN billsec <= initial THEN initial
                                   ELSE initial + ((billsec - initial + step - 1) / step) * step END)
           END
$$;

-- Exact cost of a call billed `billed` seconds (rate per minute); rounded once by callers.
-- Mirrors switchboard.rating.rate.price.
CREATE FUNCTION sb_call_cost(rate numeric, connect_fee numeric, billed integer) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN billed = 0 THEN 0 ELSE connect_fee + rate * billed / 60 END
$$;

-- The rate for a number at a time in a deck, falling back to the default sell deck:
-- longest prefix first, then the newest version in force. One index probe per prefix on
-- rate_table's unique btree (deck_id, prefix, effective_from).
CREATE FUNCTION sb_find_rate(deck integer, fallback integer, number text, at timestamptz)
RETURNS rate_table LANGUAGE plpgsql STABLE AS $$
DECLARE
    found rate_table;
BEGIN
    SELECT r.* INTO found FROM rate_table AS r
    WHERE r.deck_id IN (deck, fallback)
      AND r.prefix = ANY (sb_prefixes(number))
      AND r.effective_from <= at
      AND (r.effective_to IS NULL OR r.effective_to > at)
    ORDER BY (r.deck_id IS DISTINCT FROM deck), length(r.prefix) DESC, r.effective_from DESC
    LIMIT 1;
    RETURN found;
END
$$;

-- CDRs: one row per call leg, partitioned by month on start_time (old months drop
-- cheaply). The original
-- columns first; `rate`/`cost` are the sell side (what the account pays), `buy_rate`/
-- `buy_cost` what the carrier charges. Uniqueness of call_id across partitions is kept by
-- cdr_seen below; the primary key must contain the partition key (a PostgreSQL rule).
CREATE TABLE cdr (
    call_id          text COLLATE "C" NOT NULL,  -- opaque id: byte order, fastest
    caller_id        text NOT NULL DEFAULT '',
    destination      text NOT NULL DEFAULT '',
    start_time       timestamptz NOT NULL,
    answer_time      timestamptz,
    end_time         timestamptz,
    duration         integer NOT NULL DEFAULT 0,
    billsec          integer NOT NULL DEFAULT 0,
    disposition      text NOT NULL DEFAULT '',
    carrier_id       integer,
    rate             numeric(12, 6),
    cost             numeric(20, 4),
    -- carrier-grade extensions
    sip_code         smallint,
    hangup_cause     text NOT NULL DEFAULT '',
    pdd_ms           integer,
    account_id       integer,
    direction        text NOT NULL DEFAULT 'outbound',
    codec            text NOT NULL DEFAULT '',
    node             text NOT NULL DEFAULT '',
    buy_rate         numeric(12, 6),
    buy_cost         numeric(20, 4),
    cost_exact       numeric,
    buy_cost_exact   numeric,
    billed_seconds   integer NOT NULL DEFAULT 0,
    sell_prefix      text,
    buy_prefix       text,
    -- rated: priced; unmatched: a side that should be priced found no prefix (kept, flagged);
    -- internal: not a number (echo, ivr, conference), nothing to price
    rating_status    text NOT NULL DEFAULT 'pending',
    rating_version   integer NOT NULL DEFAULT 1,
    rated_at         timestamptz,
    PRIMARY KEY (call_id, start_time)
) PARTITION BY RANGE (start_time);
CREATE INDEX cdr_account_time ON cdr (account_id, start_time);
CREATE INDEX cdr_carrier_time ON cdr (carrier_id, start_time);
CREATE TABLE cdr_default PARTITION OF cdr DEFAULT;

-- Idempotent ingest: call_id is unique across all partitions here (a non-partitioned table
-- can have a primary key without the partition key). Ingest inserts into cdr_seen first with
-- ON CONFLICT DO NOTHING and only the call_ids that were new go on to cdr, in the same
-- transaction, so a replayed or re-sent CDR is dropped even if its start_time differs.
CREATE TABLE cdr_seen (
    call_id     text COLLATE "C" PRIMARY KEY,
    start_time  timestamptz NOT NULL
);

-- Price one call on both sides. Used by the insert trigger and by re-rating.
CREATE FUNCTION cdr_apply_rating(c cdr) RETURNS cdr LANGUAGE plpgsql STABLE AS $$
DECLARE
    default_deck integer;
    sell_deck integer;
    buy_deck integer;
    s rate_table;
    b rate_table;
    billed integer;
BEGIN
    c.rated_at := now();
    IF sb_number(c.destination) IS NULL THEN
        c.rating_status := 'internal';
        c.rate := NULL; c.cost := 0; c.cost_exact := 0; c.billed_seconds := 0;
        c.buy_rate := NULL; c.buy_cost := 0; c.buy_cost_exact := 0;
        c.sell_prefix := NULL; c.buy_prefix := NULL;
        RETURN c;
    END IF;
    SELECT id INTO default_deck FROM rate_deck WHERE name = 'default';
    IF c.account_id IS NOT NULL THEN
        SELECT deck_id INTO sell_deck FROM account WHERE id = c.account_id;
    END IF;
    s := sb_find_rate(sell_deck, default_deck, c.destination, c.start_time);
    IF c.carrier_id IS NOT NULL THEN
        SELECT deck_id INTO buy_deck FROM carrier WHERE id = c.carrier_id;
        IF buy_deck IS NOT NULL THEN
            b := sb_find_rate(buy_deck, NULL, c.destination, c.start_time);
        END IF;
    END IF;

    IF s.id IS NULL THEN
        c.rate := NULL; c.cost := NULL; c.cost_exact := NULL; c.sell_prefix := NULL;
        c.billed_seconds := 0;
    ELSE
        billed := sb_billable_seconds(c.billsec, s.increment_initial, s.increment, s.min_duration);
        c.rate := s.rate;
        c.sell_prefix := s.prefix;
        c.billed_seconds := billed;
        c.cost_exact := sb_call_cost(s.rate, s.connect_fee, billed);
        c.cost := round(c.cost_exact, 4);
    END IF;
    IF b.id IS NULL THEN
        c.buy_rate := NULL; c.buy_cost := NULL; c.buy_cost_exact := NULL; c.buy_prefix := NULL;
    ELSE
        billed := sb_billable_seconds(c.billsec, b.increment_initial, b.increment, b.min_duration);
        c.buy_rate := b.rate;
        c.buy_prefix := b.prefix;
        c.buy_cost_exact := sb_call_cost(b.rate, b.connect_fee, billed);
        c.buy_cost := round(c.buy_cost_exact, 4);
    END IF;
    -- Unmatched CDRs are kept and flagged, never dropped: a sell side is always expected,
    -- a buy side whenever the call went to a carrier.
    IF s.id IS NULL OR (c.carrier_id IS NOT NULL AND b.id IS NULL) THEN
        c.rating_status := 'unmatched';
    ELSE
        c.rating_status := 'rated';
    END IF;
    RETURN c;
END
$$;

-- As in the original system: cost is computed at insert, in the database, for every row
-- that arrives unpriced (rated_at NULL): psql, COPY into cdr, other tools. The batched CDR
-- ingest (switchboard.billing.ingest) prices a whole batch in its INSERT ... SELECT with
-- the same functions and sets rated_at, because running this trigger's two index lookups
-- per row through PL/pgSQL caps ingest near 4,000 rows/s on 2 cores, below the 20,000/s
-- target; a test checks both paths give identical results.
CREATE FUNCTION cdr_rate_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW := cdr_apply_rating(NEW);
    RETURN NEW;
END
$$;
CREATE TRIGGER before_cdr_insert BEFORE INSERT ON cdr
    FOR EACH ROW WHEN (NEW.rated_at IS NULL) EXECUTE FUNCTION cdr_rate_before_insert();

-- Monthly partitions, created ahead of time. A partition for a month whose CDRs already
-- landed in cdr_default takes them over (rows are moved, not re-priced).
CREATE FUNCTION cdr_ensure_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    name text;
    created integer := 0;
BEGIN
    -- Several writers may call this at once: one at a time (the migrations' lock key).
    PERFORM pg_advisory_xact_lock(6009105);
    FOR i IN -months_back .. months_ahead LOOP
        m := (first_month + make_interval(months => i))::date;
        name := format('cdr_%s', to_char(m, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE cdr INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE format(
            'WITH moved AS (DELETE FROM cdr_default WHERE start_time >= %L::timestamptz '
            'AND start_time < %L::timestamptz RETURNING *) INSERT INTO %I SELECT * FROM moved',
            m::text || ' 00:00:00+00', (m + interval '1 month')::date::text || ' 00:00:00+00', name);
        EXECUTE format(
            'ALTER TABLE cdr ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            name, m::text || ' 00:00:00+00', (m + interval '1 month')::date::text || ' 00:00:00+00');
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Credit control (prepaid and postpaid): funds reserved at call setup, settled at hangup.
-- The rate in force at setup is copied so the settlement prices with what was authorised.
CREATE TABLE reservation (
    id                 bigserial PRIMARY KEY,
    account_id         integer NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    call_id            text COLLATE "C" NOT NULL UNIQUE,
    destination        text NOT NULL,
    amount             numeric(20, 6) NOT NULL CHECK (amount >= 0),
    max_seconds        integer NOT NULL,
    prefix             text NOT NULL,
    rate               numeric(12, 6) NOT NULL,
    connect_fee        numeric(12, 6) NOT NULL,
    increment_initial  integer NOT NULL,
    increment          integer NOT NULL,
    min_duration       integer NOT NULL,
    state              text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'expired')),
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    settled_at         timestamptz,
    billsec            integer,
    cost               numeric(20, 4)
);
CREATE INDEX reservation_open ON reservation (account_id) WHERE state = 'open';
CREATE INDEX reservation_expiry ON reservation (expires_at) WHERE state = 'open';
