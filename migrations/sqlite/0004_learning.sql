-- The learning loop (SQLite): the speaker Q&A in a run's thread, and what the team learned.
-- Keep in step with migrations/postgres/0004_learning.sql.

-- A run's Q&A: open from when the run ended until closes_ms.
CREATE TABLE qa_sessions (
    run_id    TEXT PRIMARY KEY,
    channel   TEXT NOT NULL,
    opened_ms BIGINT NOT NULL,
    closes_ms BIGINT NOT NULL
);

-- A reply in a run's thread, taken as a question. (channel, ts) is the Slack message, so a
-- redelivered event finds the question it already made.
CREATE TABLE qa_questions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    channel     TEXT NOT NULL,
    ts          TEXT NOT NULL,
    asked_by    TEXT NOT NULL,
    text        TEXT NOT NULL,
    asked_ms    BIGINT NOT NULL,
    edited_ms   BIGINT,
    -- Set when the message was deleted: the question leaves the board, its row stays.
    deleted_ms  BIGINT,
    answer      TEXT,
    answered_by TEXT,
    answered_ms BIGINT,
    -- 1 when chaosbot answered it from the journal.
    answer_auto INTEGER NOT NULL DEFAULT 0,
    UNIQUE (channel, ts)
);

CREATE INDEX qa_questions_run ON qa_questions (run_id);
CREATE INDEX qa_questions_asked ON qa_questions (asked_ms);

-- One row per person and question: the latest reaction event wins (Slack may deliver an
-- add and its removal out of order), so a removal leaves the row with active false.
CREATE TABLE qa_votes (
    question_id BIGINT NOT NULL REFERENCES qa_questions (id),
    voter       TEXT NOT NULL,
    -- The reaction event's time (Slack's event_ts, in microseconds).
    event_at    BIGINT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (question_id, voter)
);

-- "What we learned" and "what we change" notes on a run.
CREATE TABLE learnings (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('learned', 'change')),
    text     TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_ms BIGINT NOT NULL
);

CREATE INDEX learnings_run ON learnings (run_id);

-- A message event names its thread by (channel, thread_ts): find the run from it.
CREATE INDEX slack_messages_channel_ts ON slack_messages (channel, ts);
