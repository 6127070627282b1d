-- Number portability (RFC 4694 names): a number moved to another network keeps its digits;
-- the network it now belongs to is named by a routing number (the US LRN, a European
-- routing prefix). docs/compliance.md, "Number portability".
--
-- ported_number: the operator's copy of the portability database, loaded in bulk with
-- `switchboard portability import` (all or nothing, like `rates import`). Media nodes look
-- numbers up at call setup (cached) and carry the routing number towards the gateway.
CREATE TABLE ported_number (
    number          text PRIMARY KEY CHECK (number ~ '^[0-9]{1,16}$'),   -- digits, no '+'
    routing_number  text NOT NULL CHECK (routing_number ~ '^[0-9]{1,16}$'),
    description     text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The routing number a call was sent with (NULL: not ported, or no lookup). Rating prices
-- it instead of the dialled number: the operator pays, and charges, for the network the
-- call really terminates in. CDRs stored before this migration have none.
ALTER TABLE cdr ADD COLUMN routing_number text;

CREATE OR REPLACE FUNCTION cdr_apply_rating(c cdr) RETURNS cdr LANGUAGE plpgsql STABLE AS $$
DECLARE
    default_deck integer;
    sell_deck integer;
    buy_deck integer;
    s rate_table;
    b rate_table;
    billed integer;
    b_leg boolean := nullif(c.originating_leg, '') IS NOT NULL;
    -- a ported number is priced by its routing number (the network it now belongs to)
    dialled text := coalesce(nullif(c.routing_number, ''), c.destination);
BEGIN
    c.rated_at := now();
    IF sb_number(dialled) IS NULL THEN
        c.rating_status := 'internal';
        c.rate := NULL; c.cost := 0; c.cost_exact := 0; c.billed_seconds := 0;
        c.buy_rate := NULL; c.buy_cost := 0; c.buy_cost_exact := 0;
        c.sell_prefix := NULL; c.buy_prefix := NULL;
        RETURN c;
    END IF;
    -- A bridge's B-leg: the call's sell side is charged on its A-leg, not here.
    IF NOT b_leg THEN
        SELECT id INTO default_deck FROM rate_deck WHERE name = 'default';
        IF c.account_id IS NOT NULL THEN
            SELECT deck_id INTO sell_deck FROM account WHERE id = c.account_id;
        END IF;
        s := sb_find_rate(sell_deck, default_deck, dialled, c.start_time);
    END IF;
    IF c.carrier_id IS NOT NULL THEN
        SELECT deck_id INTO buy_deck FROM carrier WHERE id = c.carrier_id;
        IF buy_deck IS NOT NULL THEN
            b := sb_find_rate(buy_deck, NULL, dialled, c.start_time);
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
    -- Unmatched CDRs are kept and flagged, never dropped: a sell side is expected on every
    -- leg but a B-leg, a buy side whenever the call went to a carrier.
    IF (s.id IS NULL AND NOT b_leg) OR (c.carrier_id IS NOT NULL AND b.id IS NULL) THEN
        c.rating_status := 'unmatched';
    ELSE
        c.rating_status := 'rated';
    END IF;
    RETURN c;
END
$$;

CREATE OR REPLACE FUNCTION cdr_rate_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sip_call_id IS NULL OR NEW.sip_call_id = '' THEN
        NEW.sip_call_id := NEW.call_id;
    END IF;
    NEW.originating_leg := nullif(NEW.originating_leg, '');
    NEW.routing_number := nullif(NEW.routing_number, '');
    NEW := cdr_apply_rating(NEW);
    RETURN NEW;
END
$$;
