-- Slack outbox (Postgres). Keep in step with migrations/sqlite/0002_outbox.sql.
-- Every write to Slack is a row here first; delivery marks it delivered or failed.

CREATE TABLE slack_outbox (
    -- Global enqueue order; within a thread_key it is the delivery order.
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_key      TEXT NOT NULL,
    channel         TEXT NOT NULL,
    -- post | update | ephemeral | reaction (copied from the action, for queries).
    kind            TEXT NOT NULL,
    -- The message key the action posts or targets (Post/Update/Reaction), if any.
    msg_key         TEXT,
    action          JSONB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL,
    delivered_ms    BIGINT,
    -- Which delivery worker holds the row, and until when (another replica may take it after).
    claim_owner     TEXT,
    claim_until_ms  BIGINT
);

CREATE INDEX slack_outbox_pending ON slack_outbox (thread_key, id) WHERE state = 'pending';
CREATE INDEX slack_outbox_key ON slack_outbox (msg_key, kind, state);

-- Message keys resolved to Slack's (channel, ts) once their post was delivered.
CREATE TABLE slack_messages (
    msg_key        TEXT PRIMARY KEY,
    channel        TEXT NOT NULL,
    ts             TEXT NOT NULL,
    -- When the last chat.update of this message was sent (rate window per message).
    last_update_ms BIGINT
);

-- How far into each run's journal the Slack thread has been rendered.
CREATE TABLE slack_render_cursors (
    run_id TEXT PRIMARY KEY,
    seq    BIGINT NOT NULL
);
