-- The audit trail an auditor reads: every change of a rate or an account (who, when, the
-- row before and after), every CDR archive/restore/export, and (lawful recording) every
-- access to the target list and to recordings. docs/billing.md, "Audit trail".
--
-- Append-only, enforced here and not only by the code that writes it: a trigger refuses
-- UPDATE and DELETE of any row and TRUNCATE of the table, whoever asks. (A superuser can
-- still drop the trigger; that is DDL, visible in PostgreSQL's own log.)
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    -- clock_timestamp(), not now(): rows of one long transaction keep their real order
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the operator as the tool named them (SET switchboard.actor), else the database role
    actor      text NOT NULL DEFAULT coalesce(nullif(current_setting('switchboard.actor', true), ''),
                                              session_user),
    object     text NOT NULL,          -- table or thing: rate_table, account, cdr, ...
    action     text NOT NULL,          -- insert, update, delete, archive, restore, export, read...
    key        text NOT NULL DEFAULT '',
    old        jsonb,
    new        jsonb
);
CREATE INDEX audit_log_object_at ON audit_log (object, at);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- One statement-level trigger per table and operation, with transition tables: a rate deck
-- import of 100,000 rows writes its audit rows in one INSERT ... SELECT, not 100,000
-- PL/pgSQL calls. TG_ARGV[0] is the key expression of a row (e.g. 'id').
-- An UPDATE that changes nothing (an upsert keeping a row as it was) writes no audit row.
-- account.balance and reserved are moved by calls, not by people, and every move is in the
-- account_transaction ledger already: see the account trigger below.
CREATE FUNCTION audit_log_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key_expr text := TG_ARGV[0];
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO audit_log (object, action, key, new)'
                       ' SELECT %L, ''insert'', (%s)::text, to_jsonb(n) FROM audit_new n',
                       TG_TABLE_NAME, key_expr);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO audit_log (object, action, key, old)'
                       ' SELECT %L, ''delete'', (%s)::text, to_jsonb(o) FROM audit_old o',
                       TG_TABLE_NAME, replace(key_expr, 'n.', 'o.'));
    ELSE
        -- UPDATE: old and new paired by the table's row key (ctid changes on update).
        EXECUTE format('INSERT INTO audit_log (object, action, key, old, new)'
                       ' SELECT %1$L, ''update'', (%2$s)::text, to_jsonb(o), to_jsonb(n)'
                       ' FROM audit_old o JOIN audit_new n ON (%3$s) = (%2$s)'
                       ' WHERE to_jsonb(o) IS DISTINCT FROM to_jsonb(n)',
                       TG_TABLE_NAME, key_expr, replace(key_expr, 'n.', 'o.'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_rate_table_insert AFTER INSERT ON rate_table
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_rate_table_update AFTER UPDATE ON rate_table
    REFERENCING OLD TABLE AS audit_old NEW TABLE AS audit_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_rate_table_delete AFTER DELETE ON rate_table
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');

CREATE TRIGGER audit_rate_deck_insert AFTER INSERT ON rate_deck
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_rate_deck_update AFTER UPDATE ON rate_deck
    REFERENCING OLD TABLE AS audit_old NEW TABLE AS audit_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_rate_deck_delete AFTER DELETE ON rate_deck
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');

CREATE TRIGGER audit_account_insert AFTER INSERT ON account
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
-- Every settled call updates account.balance/reserved: a row trigger whose WHEN (evaluated
-- without entering PL/pgSQL) skips those updates, so credit control pays nothing for auditing.
CREATE FUNCTION audit_log_account_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (object, action, key, old, new)
    VALUES ('account', 'update', OLD.id::text, to_jsonb(OLD), to_jsonb(NEW));
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_account_update AFTER UPDATE ON account FOR EACH ROW
    WHEN ((to_jsonb(OLD) - '{balance,reserved}'::text[])
          IS DISTINCT FROM (to_jsonb(NEW) - '{balance,reserved}'::text[]))
    EXECUTE FUNCTION audit_log_account_update();
CREATE TRIGGER audit_account_delete AFTER DELETE ON account
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');

CREATE TRIGGER audit_account_identity_insert AFTER INSERT ON account_identity
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.kind || '':'' || n.value');
CREATE TRIGGER audit_account_identity_update AFTER UPDATE ON account_identity
    REFERENCING OLD TABLE AS audit_old NEW TABLE AS audit_new FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.kind || '':'' || n.value');
CREATE TRIGGER audit_account_identity_delete AFTER DELETE ON account_identity
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT
    EXECUTE FUNCTION audit_log_rows('n.kind || '':'' || n.value');

CREATE TRIGGER audit_carrier_insert AFTER INSERT ON carrier
    REFERENCING NEW TABLE AS audit_new FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_carrier_update AFTER UPDATE ON carrier
    REFERENCING OLD TABLE AS audit_old NEW TABLE AS audit_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
CREATE TRIGGER audit_carrier_delete AFTER DELETE ON carrier
    REFERENCING OLD TABLE AS audit_old FOR EACH STATEMENT EXECUTE FUNCTION audit_log_rows('n.id');
