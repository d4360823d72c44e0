-- Slack edge (Postgres): event deduplication and the audit log.
-- Keep in step with migrations/sqlite/0003_slack_edge.sql.

CREATE TABLE slack_events (
    event_id    TEXT PRIMARY KEY,
    received_ms BIGINT NOT NULL
);

CREATE INDEX slack_events_received ON slack_events (received_ms);

CREATE TABLE slack_audit (
    id       BIGSERIAL PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    team     TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    channel  TEXT NOT NULL,
    action   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    outcome  TEXT NOT NULL
);

CREATE INDEX slack_audit_at ON slack_audit (at_ms);
