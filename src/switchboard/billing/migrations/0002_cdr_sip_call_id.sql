-- One CDR per call leg: call_id is the leg's channel uuid (what FreeSWITCH-based CDR
-- pipelines key on), unique per leg even when a call crosses two media nodes with one SIP
-- Call-ID. The SIP Call-ID is kept in its own column to correlate the legs of one call.
ALTER TABLE cdr ADD COLUMN sip_call_id text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX cdr_sip_call_id ON cdr (sip_call_id) WHERE sip_call_id <> '';

-- Rows inserted by other tools (psql, COPY) in the original layout carry the SIP Call-ID in
-- call_id: keep it in sip_call_id too, so legs can be correlated whatever wrote them.
CREATE OR REPLACE FUNCTION cdr_rate_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sip_call_id IS NULL OR NEW.sip_call_id = '' THEN
        NEW.sip_call_id := NEW.call_id;
    END IF;
    NEW := cdr_apply_rating(NEW);
    RETURN NEW;
END
$$;
