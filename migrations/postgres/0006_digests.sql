-- The weekly digest (postgres): one row per posted week, so it is posted once across replicas and
-- restarts. The row is inserted in the same transaction as the digest's outbox rows.
-- Keep in step with migrations/sqlite/0006_digests.sql.

CREATE TABLE digests (
    -- Unix ms of the start of the week the digest covers (its key).
    period_start_ms BIGINT PRIMARY KEY,
    period_end_ms   BIGINT NOT NULL,
    channel         TEXT NOT NULL,
    -- The process that queued it (for the logs of whoever wonders who posted it).
    queued_by       TEXT NOT NULL,
    queued_ms       BIGINT NOT NULL
);
