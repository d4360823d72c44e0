-- Schedules (Sqlite): experiments that start by themselves, the fires they planned, and the
-- halt that stops them. Keep in step with migrations/postgres/0005_schedules.sql.

CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment  TEXT NOT NULL,
    -- As typed, e.g. "every tue,thu at 14:00 in Europe/Berlin".
    when_text   TEXT NOT NULL,
    -- The normalized 5-field cron expression that is evaluated.
    expr        TEXT NOT NULL,
    -- IANA time zone the expression is read in.
    tz          TEXT NOT NULL,
    -- JSON object of the run parameters (key -> value).
    params      TEXT NOT NULL,
    team        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    removed_ms  BIGINT,
    removed_by  TEXT
);

-- One row per fire a scheduler acted on. The primary key is what makes a fire happen once
-- across replicas: the heads-up row is inserted with ON CONFLICT DO NOTHING, and the fire is
-- claimed by a conditional UPDATE (claimed_ms IS NULL) that only one caller can win.
CREATE TABLE schedule_fires (
    schedule_id BIGINT NOT NULL REFERENCES schedules (id),
    fire_ms     BIGINT NOT NULL,
    heads_up_ms BIGINT,
    claimed_ms  BIGINT,
    claimed_by  TEXT,
    -- The run it started, or why it did not.
    run_id      TEXT,
    skipped     TEXT,
    skipped_by  TEXT,
    PRIMARY KEY (schedule_id, fire_ms)
);

-- "abort all" puts a halt in force until "resume" lifts it; the newest unlifted row is in force.
CREATE TABLE halts (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    halted_by TEXT NOT NULL,
    reason    TEXT NOT NULL,
    since_ms  BIGINT NOT NULL,
    lifted_by TEXT,
    lifted_ms BIGINT
);
