-- When a call posting the row was started and not known to have failed (no answer, or the
-- process died mid-call): Slack may show the message already, so the next attempt looks for
-- it (by the row id in the message's metadata) before posting it again.
ALTER TABLE slack_outbox ADD COLUMN call_started_ms BIGINT;
