//! Persistence of the learning loop: the speaker Q&A in each run's thread (questions, votes,
//! answers) and the "what we learned / what we change" notes.
//!
//! Questions are keyed by their Slack message (`channel`, `ts`), so a redelivered event, an
//! edit or a deletion finds the question it concerns, and nothing is counted twice.

use serde::{Deserialize, Serialize};

use super::StoreResult;

/// A run's Q&A window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaSession {
    pub run_id: String,
    pub channel: String,
    pub opened_ms: i64,
    /// After this, new replies are not taken as questions (answers are still accepted).
    pub closes_ms: i64,
}

impl QaSession {
    pub fn is_open(&self, now_ms: i64) -> bool {
        now_ms < self.closes_ms
    }
}

/// A question as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub id: i64,
    pub run_id: String,
    pub channel: String,
    /// The Slack message that asked it.
    pub ts: String,
    pub asked_by: String,
    pub text: String,
    pub asked_ms: i64,
    pub edited_ms: Option<i64>,
    pub deleted_ms: Option<i64>,
    pub votes: i64,
    pub answer: Option<Answer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    /// A Slack user id, or `chaosbot` for an answer taken from the journal.
    pub by: String,
    pub at_ms: i64,
    /// Answered by chaosbot from the journal, not by a person.
    pub auto: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuestion {
    pub run_id: String,
    pub channel: String,
    pub ts: String,
    pub asked_by: String,
    pub text: String,
    pub asked_ms: i64,
}

/// Which of the two notes a learning is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningKind {
    /// What we learned.
    Learned,
    /// What we change because of it.
    Change,
}

impl LearningKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LearningKind::Learned => "learned",
            LearningKind::Change => "change",
        }
    }

    fn parse(s: &str) -> LearningKind {
        if s == "change" {
            LearningKind::Change
        } else {
            LearningKind::Learned
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learning {
    pub id: i64,
    pub run_id: String,
    pub kind: LearningKind,
    pub text: String,
    pub added_by: String,
    pub added_ms: i64,
}

#[async_trait::async_trait]
pub trait LearningStore: Send + Sync {
    /// Opens the run's Q&A. `true` the first time; later calls change nothing.
    async fn open_qa(
        &self,
        run_id: &str,
        channel: &str,
        opened_ms: i64,
        closes_ms: i64,
    ) -> StoreResult<bool>;

    async fn qa_session(&self, run_id: &str) -> StoreResult<Option<QaSession>>;

    /// Q&A windows that closed after `after_ms` and at or before `until_ms` (their boards must
    /// say so).
    async fn qa_sessions_closed(&self, after_ms: i64, until_ms: i64)
    -> StoreResult<Vec<QaSession>>;

    /// The run whose parent message is `thread_ts` in `channel` (a thread reply names its
    /// parent this way), if any.
    async fn run_for_thread(&self, channel: &str, thread_ts: &str) -> StoreResult<Option<String>>;

    /// Records a question. `(question, true)` when new; for a message already recorded
    /// (a redelivered event), the existing question and `false`.
    async fn add_question(&self, q: &NewQuestion) -> StoreResult<(Question, bool)>;

    /// The question asked by the message, deleted or not.
    async fn question_by_ts(&self, channel: &str, ts: &str) -> StoreResult<Option<Question>>;

    async fn question(&self, id: i64) -> StoreResult<Option<Question>>;

    /// Replaces the text of the question asked by the message (an edit). `None` if that
    /// message is not a question.
    async fn edit_question(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Question>>;

    /// Takes the question off the board (its message was deleted). `None` if not a question.
    async fn remove_question(
        &self,
        channel: &str,
        ts: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Question>>;

    /// The run's questions still on the board, most votes first, then oldest first.
    async fn questions(&self, run_id: &str) -> StoreResult<Vec<Question>>;

    /// Questions asked since `since_ms` (across runs) that nobody answered yet, oldest first.
    async fn unanswered_questions(&self, since_ms: i64) -> StoreResult<Vec<Question>>;

    /// A vote by `voter`, from a reaction event at `event_at` (µs). The latest event per
    /// person and question wins, whatever order they arrive in. `true` when the vote now counts
    /// and did not before.
    async fn add_vote(&self, question_id: i64, voter: &str, event_at: i64) -> StoreResult<bool>;

    /// Takes `voter`'s vote back (a reaction removed at `event_at`, µs); an older add arriving
    /// later does not bring it back. `true` when a counted vote stopped counting.
    async fn remove_vote(&self, question_id: i64, voter: &str, event_at: i64) -> StoreResult<bool>;

    /// Stores (or replaces) the answer. `None` if there is no such question.
    async fn answer_question(&self, id: i64, answer: &Answer) -> StoreResult<Option<Question>>;

    async fn add_learning(
        &self,
        run_id: &str,
        kind: LearningKind,
        text: &str,
        added_by: &str,
        added_ms: i64,
    ) -> StoreResult<Learning>;

    /// The run's learnings, oldest first.
    async fn learnings(&self, run_id: &str) -> StoreResult<Vec<Learning>>;
}

// ---- one implementation for both backends: `$n` placeholders, `ON CONFLICT` and
// `RETURNING` work on SQLite and Postgres alike ----

type QuestionRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    bool,
    i64,
);

fn question_from(row: QuestionRow) -> Question {
    let (
        id,
        run_id,
        channel,
        ts,
        asked_by,
        text,
        asked_ms,
        edited_ms,
        deleted_ms,
        answer,
        answered_by,
        answered_ms,
        auto,
        votes,
    ) = row;
    Question {
        id,
        run_id,
        channel,
        ts,
        asked_by,
        text,
        asked_ms,
        edited_ms,
        deleted_ms,
        votes,
        answer: answer.map(|text| Answer {
            text,
            by: answered_by.unwrap_or_default(),
            at_ms: answered_ms.unwrap_or(0),
            auto,
        }),
    }
}

/// `SELECT <question columns> FROM qa_questions q <tail>` as one `&'static str`.
macro_rules! select_questions {
    ($tail:literal) => {
        concat!(
            "SELECT q.id, q.run_id, q.channel, q.ts, q.asked_by, q.text, q.asked_ms, ",
            "q.edited_ms, q.deleted_ms, q.answer, q.answered_by, q.answered_ms, q.answer_auto, ",
            "(SELECT COUNT(*) FROM qa_votes v WHERE v.question_id = q.id AND v.active) AS votes ",
            "FROM qa_questions q ",
            $tail
        )
    };
}

const OPEN_QA: &str = "INSERT INTO qa_sessions (run_id, channel, opened_ms, closes_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO NOTHING";
const QA_SESSION: &str =
    "SELECT run_id, channel, opened_ms, closes_ms FROM qa_sessions WHERE run_id = $1";
const QA_CLOSED: &str = "SELECT run_id, channel, opened_ms, closes_ms FROM qa_sessions \
     WHERE closes_ms > $1 AND closes_ms <= $2 ORDER BY closes_ms";
const RUN_FOR_THREAD: &str = "SELECT msg_key FROM slack_messages \
     WHERE channel = $1 AND ts = $2 AND msg_key LIKE 'run:%:parent'";
const INSERT_QUESTION: &str = "INSERT INTO qa_questions \
     (run_id, channel, ts, asked_by, text, asked_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (channel, ts) DO NOTHING";
const BY_TS: &str = select_questions!("WHERE q.channel = $1 AND q.ts = $2");
const BY_ID: &str = select_questions!("WHERE q.id = $1");
const EDIT: &str = "UPDATE qa_questions SET text = $3, edited_ms = $4 \
     WHERE channel = $1 AND ts = $2";
const REMOVE: &str = "UPDATE qa_questions SET deleted_ms = $3 \
     WHERE channel = $1 AND ts = $2 AND deleted_ms IS NULL";
const BOARD: &str = select_questions!(
    "WHERE q.run_id = $1 AND q.deleted_ms IS NULL ORDER BY votes DESC, q.asked_ms, q.id"
);
const UNANSWERED: &str = select_questions!(
    "WHERE q.asked_ms >= $1 AND q.deleted_ms IS NULL AND q.answer IS NULL ORDER BY q.asked_ms, q.id"
);
// A vote's state changes only for a newer event: first a change of state, else just the time.
const TOGGLE_VOTE: &str = "UPDATE qa_votes SET active = $4, event_at = $3 \
     WHERE question_id = $1 AND voter = $2 AND event_at < $3 AND active <> $4";
const TOUCH_VOTE: &str = "UPDATE qa_votes SET event_at = $3 \
     WHERE question_id = $1 AND voter = $2 AND event_at < $3 AND active = $4";
const INSERT_VOTE: &str = "INSERT INTO qa_votes (question_id, voter, event_at, active) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (question_id, voter) DO NOTHING";
const VOTE_IS_NEWER: &str = "SELECT COUNT(*) FROM qa_votes \
     WHERE question_id = $1 AND voter = $2 AND event_at >= $3";
const ANSWER: &str = "UPDATE qa_questions SET answer = $2, answered_by = $3, answered_ms = $4, \
     answer_auto = $5 WHERE id = $1";
const ADD_LEARNING: &str = "INSERT INTO learnings (run_id, kind, text, added_by, added_ms) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
const LEARNINGS: &str = "SELECT id, run_id, kind, text, added_by, added_ms FROM learnings \
     WHERE run_id = $1 ORDER BY added_ms, id";

/// The run id in a parent message key `run:<id>:parent`.
fn run_of_parent_key(key: &str) -> Option<String> {
    key.strip_prefix("run:")
        .and_then(|k| k.strip_suffix(":parent"))
        .map(str::to_string)
}

macro_rules! impl_learning_store {
    ($store:ty) => {
        impl $store {
            /// Applies a reaction event to a vote, the latest event winning. Each statement is
            /// conditional on the event being newer, so concurrent handlers converge.
            async fn set_vote(
                &self,
                question_id: i64,
                voter: &str,
                event_at: i64,
                active: bool,
            ) -> StoreResult<bool> {
                // Each step is one conditional statement; when another handler changes the row
                // between two steps, none applies and the loop looks again (bounded).
                for _ in 0..5 {
                    let toggled = sqlx::query(TOGGLE_VOTE)
                        .bind(question_id)
                        .bind(voter)
                        .bind(event_at)
                        .bind(active)
                        .execute(&self.pool)
                        .await?;
                    if toggled.rows_affected() == 1 {
                        return Ok(true);
                    }
                    let touched = sqlx::query(TOUCH_VOTE)
                        .bind(question_id)
                        .bind(voter)
                        .bind(event_at)
                        .bind(active)
                        .execute(&self.pool)
                        .await?;
                    if touched.rows_affected() == 1 {
                        return Ok(false); // already in that state
                    }
                    let inserted = sqlx::query(INSERT_VOTE)
                        .bind(question_id)
                        .bind(voter)
                        .bind(event_at)
                        .bind(active)
                        .execute(&self.pool)
                        .await?;
                    if inserted.rows_affected() == 1 {
                        // A first removal leaves a marker so an older add cannot count later.
                        return Ok(active);
                    }
                    let (newer,): (i64,) = sqlx::query_as(VOTE_IS_NEWER)
                        .bind(question_id)
                        .bind(voter)
                        .bind(event_at)
                        .fetch_one(&self.pool)
                        .await?;
                    if newer > 0 {
                        return Ok(false); // a later event already decided
                    }
                }
                Ok(false)
            }
        }

        #[async_trait::async_trait]
        impl LearningStore for $store {
            async fn open_qa(
                &self,
                run_id: &str,
                channel: &str,
                opened_ms: i64,
                closes_ms: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query(OPEN_QA)
                    .bind(run_id)
                    .bind(channel)
                    .bind(opened_ms)
                    .bind(closes_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn qa_session(&self, run_id: &str) -> StoreResult<Option<QaSession>> {
                let row: Option<(String, String, i64, i64)> = sqlx::query_as(QA_SESSION)
                    .bind(run_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(
                    row.map(|(run_id, channel, opened_ms, closes_ms)| QaSession {
                        run_id,
                        channel,
                        opened_ms,
                        closes_ms,
                    }),
                )
            }

            async fn qa_sessions_closed(
                &self,
                after_ms: i64,
                until_ms: i64,
            ) -> StoreResult<Vec<QaSession>> {
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(QA_CLOSED)
                    .bind(after_ms)
                    .bind(until_ms)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(run_id, channel, opened_ms, closes_ms)| QaSession {
                        run_id,
                        channel,
                        opened_ms,
                        closes_ms,
                    })
                    .collect())
            }

            async fn run_for_thread(
                &self,
                channel: &str,
                thread_ts: &str,
            ) -> StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as(RUN_FOR_THREAD)
                    .bind(channel)
                    .bind(thread_ts)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.and_then(|(key,)| run_of_parent_key(&key)))
            }

            async fn add_question(&self, q: &NewQuestion) -> StoreResult<(Question, bool)> {
                let done = sqlx::query(INSERT_QUESTION)
                    .bind(&q.run_id)
                    .bind(&q.channel)
                    .bind(&q.ts)
                    .bind(&q.asked_by)
                    .bind(&q.text)
                    .bind(q.asked_ms)
                    .execute(&self.pool)
                    .await?;
                let fresh = done.rows_affected() == 1;
                match self.question_by_ts(&q.channel, &q.ts).await? {
                    Some(found) => Ok((found, fresh)),
                    None => Err(super::StoreError::Corrupt(format!(
                        "question {}/{} vanished after insert",
                        q.channel, q.ts
                    ))),
                }
            }

            async fn question_by_ts(
                &self,
                channel: &str,
                ts: &str,
            ) -> StoreResult<Option<Question>> {
                let row: Option<QuestionRow> = sqlx::query_as(BY_TS)
                    .bind(channel)
                    .bind(ts)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(question_from))
            }

            async fn question(&self, id: i64) -> StoreResult<Option<Question>> {
                let row: Option<QuestionRow> = sqlx::query_as(BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(question_from))
            }

            async fn edit_question(
                &self,
                channel: &str,
                ts: &str,
                text: &str,
                at_ms: i64,
            ) -> StoreResult<Option<Question>> {
                sqlx::query(EDIT)
                    .bind(channel)
                    .bind(ts)
                    .bind(text)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                self.question_by_ts(channel, ts).await
            }

            async fn remove_question(
                &self,
                channel: &str,
                ts: &str,
                at_ms: i64,
            ) -> StoreResult<Option<Question>> {
                sqlx::query(REMOVE)
                    .bind(channel)
                    .bind(ts)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                self.question_by_ts(channel, ts).await
            }

            async fn questions(&self, run_id: &str) -> StoreResult<Vec<Question>> {
                let rows: Vec<QuestionRow> = sqlx::query_as(BOARD)
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(question_from).collect())
            }

            async fn unanswered_questions(&self, since_ms: i64) -> StoreResult<Vec<Question>> {
                let rows: Vec<QuestionRow> = sqlx::query_as(UNANSWERED)
                    .bind(since_ms)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(question_from).collect())
            }

            async fn add_vote(
                &self,
                question_id: i64,
                voter: &str,
                event_at: i64,
            ) -> StoreResult<bool> {
                self.set_vote(question_id, voter, event_at, true).await
            }

            async fn remove_vote(
                &self,
                question_id: i64,
                voter: &str,
                event_at: i64,
            ) -> StoreResult<bool> {
                self.set_vote(question_id, voter, event_at, false).await
            }

            async fn answer_question(
                &self,
                id: i64,
                answer: &Answer,
            ) -> StoreResult<Option<Question>> {
                sqlx::query(ANSWER)
                    .bind(id)
                    .bind(&answer.text)
                    .bind(&answer.by)
                    .bind(answer.at_ms)
                    .bind(answer.auto)
                    .execute(&self.pool)
                    .await?;
                self.question(id).await
            }

            async fn add_learning(
                &self,
                run_id: &str,
                kind: LearningKind,
                text: &str,
                added_by: &str,
                added_ms: i64,
            ) -> StoreResult<Learning> {
                let (id,): (i64,) = sqlx::query_as(ADD_LEARNING)
                    .bind(run_id)
                    .bind(kind.as_str())
                    .bind(text)
                    .bind(added_by)
                    .bind(added_ms)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Learning {
                    id,
                    run_id: run_id.to_string(),
                    kind,
                    text: text.to_string(),
                    added_by: added_by.to_string(),
                    added_ms,
                })
            }

            async fn learnings(&self, run_id: &str) -> StoreResult<Vec<Learning>> {
                let rows: Vec<(i64, String, String, String, String, i64)> =
                    sqlx::query_as(LEARNINGS)
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, run_id, kind, text, added_by, added_ms)| Learning {
                        id,
                        run_id,
                        kind: LearningKind::parse(&kind),
                        text,
                        added_by,
                        added_ms,
                    })
                    .collect())
            }
        }
    };
}

impl_learning_store!(super::sqlite::SqliteStore);
impl_learning_store!(super::postgres::PostgresStore);
