-- Lawful recording on demand: the numbers whose calls media nodes record (docs/compliance.md,
-- "Lawful recording"). Calls from or to a listed number are recorded while the row exists
-- and, when until is set, until that moment. Every insert, update and delete is written to
-- audit_log by the triggers of migration 0012; reads by the tools and the media nodes are
-- logged by them (action 'read').
CREATE TABLE intercept_target (
    number      text PRIMARY KEY CHECK (number ~ '^[0-9]{1,16}$'),   -- digits, no '+'
    warrant     text NOT NULL CHECK (warrant <> ''),   -- the order's reference
    mode        text NOT NULL DEFAULT 'file' CHECK (mode IN ('file', 'siprec')),
    until       timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER audit_intercept_target_insert AFTER INSERT ON intercept_target
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.number');
CREATE TRIGGER audit_intercept_target_update AFTER UPDATE ON intercept_target
    REFERENCING OLD TABLE AS audit_old NEW TABLE AS audit_new FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.number');
CREATE TRIGGER audit_intercept_target_delete AFTER DELETE ON intercept_target
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.number');
