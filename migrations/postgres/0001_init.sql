-- chaosbot schema (Postgres). Keep in step with migrations/sqlite/0001_init.sql.
-- Timestamps are unix milliseconds; JSON columns are jsonb.

CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    -- Submission order, the tie-breaker when two runs share a created_ms.
    num            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    experiment     TEXT NOT NULL,
    title          TEXT NOT NULL,
    spec           JSONB NOT NULL,
    params         JSONB NOT NULL,
    -- u64 stored bit-for-bit as i64.
    seed           BIGINT NOT NULL,
    requested_by   TEXT NOT NULL,
    source         TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'checking_steady_state', 'injecting',
                                                  'observing', 'reverting', 'verifying', 'done')),
    verdict        TEXT,
    rollback       TEXT,
    reason         TEXT,
    owner          TEXT,
    lease_until_ms BIGINT,
    created_ms     BIGINT NOT NULL,
    started_ms     BIGINT,
    finished_ms    BIGINT
);

CREATE INDEX runs_state_num ON runs (state, num);
CREATE INDEX runs_experiment_created ON runs (experiment, created_ms);
CREATE INDEX runs_created ON runs (created_ms, num);

CREATE TABLE journal (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    at_ms  BIGINT NOT NULL,
    kind   TEXT NOT NULL,
    data   JSONB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE abort_requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at_ms        BIGINT NOT NULL
);

CREATE INDEX abort_requests_run ON abort_requests (run_id, id);

CREATE TABLE faults (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    target      TEXT NOT NULL,
    family      TEXT NOT NULL,
    detail      JSONB NOT NULL,
    injected_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    reverted_ms BIGINT,
    owner       TEXT NOT NULL
);

CREATE INDEX faults_open ON faults (run_id, id) WHERE reverted_ms IS NULL;
