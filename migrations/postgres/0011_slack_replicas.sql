-- Slack across replicas (Postgres). Keep in step with migrations/sqlite/0011_slack_replicas.sql.

-- The rows a run's projector queues name the run and the ownership epoch they were rendered
-- under; an enqueue under an epoch the run has moved past is refused.
ALTER TABLE slack_outbox ADD COLUMN run_id TEXT;
ALTER TABLE slack_outbox ADD COLUMN epoch BIGINT;

-- Pacing every replica obeys, timed on the database's clock. `method:<name>`: no call of that
-- Web API method before until_ms (a 429's Retry-After). `channel:<id>`: the theoretical time
-- of the channel's next post (one post per interval, with a small burst).
CREATE TABLE slack_pacing (
    scope    TEXT PRIMARY KEY,
    until_ms BIGINT NOT NULL
);

-- Revisions of messages updated from several replicas (a Q&A board): each render takes the
-- next revision before it reads what it shows, and an update older than the one Slack already
-- shows is never sent.
CREATE TABLE slack_revisions (
    msg_key TEXT PRIMARY KEY,
    rev     BIGINT NOT NULL
);
ALTER TABLE slack_messages ADD COLUMN revision BIGINT;
