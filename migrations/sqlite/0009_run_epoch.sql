-- The ownership epoch of a run: raised by one each time a worker claims it. Agents hold each
-- fault under the epoch it was applied with and refuse renewals and reverts from an older one,
-- so a controller that lost the run cannot touch its faults.
ALTER TABLE runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
