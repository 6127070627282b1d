-- Campaign dialer: campaigns, contacts and dial attempts (switchboard/dialer/store.py).
-- An attempt row, keyed by the call's origination_uuid, is committed before the originate is
-- sent: the at-most-once rule that lets a crashed campaign resume without dialing anyone twice.
CREATE TABLE dialer_campaign (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'paused', 'done', 'aborted')),
    status_reason  text NOT NULL DEFAULT '',
    source_sha256  text NOT NULL,
    settings       jsonb NOT NULL
);
CREATE TABLE dialer_contact (
    id              bigserial PRIMARY KEY,
    campaign_id     bigint NOT NULL REFERENCES dialer_campaign(id) ON DELETE CASCADE,
    line            integer NOT NULL,
    number          text NOT NULL,
    caller_id       text NOT NULL DEFAULT '',
    name            text NOT NULL DEFAULT '',
    timezone        text NOT NULL DEFAULT '',
    variables       jsonb NOT NULL DEFAULT '{}',
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'dialing', 'done')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT 'epoch',
    last_outcome    text,
    last_cause      text,
    UNIQUE (campaign_id, number)
);
CREATE INDEX dialer_contact_due
    ON dialer_contact (campaign_id, next_attempt_at) WHERE state = 'pending';
CREATE TABLE dialer_attempt (
    uuid         uuid PRIMARY KEY,
    campaign_id  bigint NOT NULL REFERENCES dialer_campaign(id) ON DELETE CASCADE,
    contact_id   bigint NOT NULL REFERENCES dialer_contact(id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    endpoint     text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL,
    answered_at  timestamptz,
    ended_at     timestamptz,
    outcome      text,
    cause        text,
    billsec      integer
);
CREATE INDEX dialer_attempt_open ON dialer_attempt (campaign_id) WHERE outcome IS NULL;
