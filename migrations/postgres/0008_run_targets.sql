-- The declared targets each run touches. A target is held by one active run at a time: a
-- queued run whose target an active run holds is not claimed until the holder ends.
CREATE TABLE run_targets (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    target  TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
);
CREATE INDEX run_targets_by_target ON run_targets (target, run_id);
