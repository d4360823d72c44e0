-- Game days (postgres): an agenda of experiments run one after another in one channel.
-- Keep in step with migrations/sqlite/0007_gamedays.sql.

CREATE TABLE gamedays (
    id             TEXT PRIMARY KEY,
    plan           TEXT NOT NULL,
    -- The plan as validated when the game day started (JSON), agenda experiments resolved:
    -- what was announced is what runs, whatever happens to the catalog meanwhile.
    plan_json      TEXT NOT NULL,
    team           TEXT NOT NULL,
    channel        TEXT NOT NULL,
    started_by     TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('running', 'done', 'stopped')),
    -- The agenda item being run or waited for (0-based).
    current_item   BIGINT NOT NULL DEFAULT 0,
    -- JSON list, one entry per agenda item: its run id, or null before it is submitted.
    run_ids        TEXT NOT NULL,
    -- The current item is not submitted before this (the previous run's Q&A window).
    wait_until_ms  BIGINT,
    -- The replica driving it, and until when its claim holds without renewal.
    owner          TEXT,
    lease_until_ms BIGINT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    finished_ms    BIGINT,
    -- Set once the closing summary is queued: nothing is left to drive.
    closed_ms      BIGINT,
    stopped_by     TEXT,
    reason         TEXT
);

CREATE INDEX gamedays_open ON gamedays (closed_ms);
