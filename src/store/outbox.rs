//! Persistence of the outbox: every message to the chat is a row first, so an outage or a
//! crash delays messages and never loses them. Also the render cursor: how far into each
//! run's journal the chat thread has been rendered, advanced in the same transaction as the
//! messages it produced (so a restart neither skips nor repeats a line).
//!
//! The store keeps what to deliver ([`OutboundAction`], stored by `kind`); the delivery side
//! (the Slack outbox worker) decides how each kind is sent. Producers use [`OutboxQueue`], the
//! delivery side [`OutboxDelivery`]. One implementation for both backends, at the end.

use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, SqliteConnection};

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{StoreError, StoreResult};
use crate::run::now_ms;

/// One write to Slack, as queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Messages with the same thread key are delivered one at a time, in enqueue order
    /// (a run's parent message and its thread share the key `run:<id>`).
    pub thread_key: String,
    pub channel: String,
    pub action: OutboundAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboundAction {
    /// A new message. `key` names the message so later updates, replies and reactions can
    /// refer to it before its `ts` is known; `in_thread_of` is the key of the parent (its `ts`
    /// becomes the thread's at delivery).
    Post {
        key: Option<String>,
        in_thread_of: Option<String>,
        text: String,
        blocks: Option<serde_json::Value>,
    },
    /// A new content for the message named `key`. Pending updates of one key coalesce: only
    /// the newest is sent, and at most about one per second per message.
    Update {
        key: String,
        text: String,
        blocks: Option<serde_json::Value>,
        /// Taken with [`OutboxQueue::next_revision`] before the content was read, when several
        /// replicas update the message (a Q&A board): the highest revision wins, and an update
        /// older than the one Slack shows is never sent. `None`: enqueue order decides.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<i64>,
    },
    /// A message only `user` sees.
    Ephemeral {
        user: String,
        in_thread_of: Option<String>,
        text: String,
        blocks: Option<serde_json::Value>,
    },
    /// A reaction (emoji `name`) on the message named `key`.
    Reaction { key: String, name: String },
    /// A file shared in the channel (in the thread of `in_thread_of`, a message key), through
    /// Slack's external upload flow; the bytes travel in the row, base64.
    Upload {
        in_thread_of: Option<String>,
        filename: String,
        title: String,
        /// Base64 (standard alphabet) of the file's bytes.
        content_base64: String,
    },
}

/// The producers' side: queue messages (and advance a run's render cursor).
#[async_trait::async_trait]
pub trait OutboxQueue: Send + Sync {
    /// Queues messages, in order; when `cursor` is given, also records that the run's journal
    /// has been rendered up to that sequence number, in the same transaction.
    async fn enqueue(
        &self,
        messages: &[OutboundMessage],
        cursor: Option<(&str, i64)>,
    ) -> StoreResult<()>;

    /// The last journal sequence number of the run rendered to Slack (0 if none).
    async fn render_cursor(&self, run_id: &str) -> StoreResult<i64>;

    /// Queues the messages rendered from the run's journal entries `(from_seq, to_seq]` and
    /// moves its render cursor from `from_seq` to `to_seq`, in one transaction, only if the
    /// cursor still stands at `from_seq` (compare-and-swap). `false`, queuing nothing, when
    /// another projector (another replica) got there first: nothing is ever posted twice.
    ///
    /// The rows carry `epoch`, the run's ownership epoch the rendering was read under, and are
    /// queued only while the run is still under it: `LeaseLost`, queuing nothing and leaving
    /// the cursor, once the run has been claimed or adopted since (render it again).
    async fn enqueue_rendered(
        &self,
        messages: &[OutboundMessage],
        run_id: &str,
        epoch: u64,
        from_seq: i64,
        to_seq: i64,
    ) -> StoreResult<bool>;

    /// The next revision of message `key` (1, 2, …; one counter in the store for every
    /// replica). Take it before reading what the update will show.
    async fn next_revision(&self, key: &str) -> StoreResult<i64>;
}

/// The delivery side: claim thread heads, record what was sent.
#[async_trait::async_trait]
pub trait OutboxDelivery: Send + Sync {
    /// Claims for `owner`, until `lease_until_ms`, up to `limit` thread heads (the oldest pending
    /// row of a thread) that are due at `now_ms` and not claimed by a live lease. Only heads are
    /// claimable, so a thread has at most one row in flight across all replicas.
    async fn claim_heads(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;

    /// Where a delivered post landed (`None` while it is not delivered).
    async fn message_ref(&self, key: &str) -> StoreResult<Option<MessageRef>>;

    /// Whether a pending row still posts the message named `key`.
    async fn post_pending(&self, key: &str) -> StoreResult<bool>;

    /// Pending updates of `key` in `thread_key` queued after row `after_id`, oldest first.
    async fn newer_updates(
        &self,
        thread_key: &str,
        key: &str,
        after_id: i64,
    ) -> StoreResult<Vec<OutboxRow>>;

    /// Records a successful call, atomically: the claimed row and `sent_id` delivered, the rows
    /// in `superseded` delivered as superseded, the posted key's `ts`, the update time of an
    /// updated key. `false` (and nothing changed) when `owner` no longer holds the claim.
    async fn mark_delivered(&self, done: Delivered<'_>) -> StoreResult<bool>;

    /// Puts a claimed row back for a later attempt (releasing the claim). `count_attempt` is
    /// false when no call was made (a pacing wait). `false` when the claim was lost.
    async fn reschedule(
        &self,
        id: i64,
        owner: &str,
        next_attempt_ms: i64,
        error: Option<&str>,
        count_attempt: bool,
    ) -> StoreResult<bool>;

    /// Records that a call sending claimed row `id` starts at `at` (`None`: the call is known
    /// not to have been carried out, e.g. a 429). `false` when the claim was lost.
    async fn set_call_started(&self, id: i64, owner: &str, at: Option<i64>) -> StoreResult<bool>;

    /// Records the file an upload of claimed row `id` is sharing (after
    /// [`set_call_started`](Self::set_call_started), which forgets it). `false` when the claim
    /// was lost.
    async fn set_call_file(&self, id: i64, owner: &str, file_id: &str) -> StoreResult<bool>;

    /// Gives up on a claimed row: state `failed` with the reason. `false` when the claim was lost.
    async fn mark_failed(&self, id: i64, owner: &str, error: &str) -> StoreResult<bool>;

    /// Releases every claim `owner` holds (on shutdown), so a successor need not wait out leases.
    async fn release_claims(&self, owner: &str) -> StoreResult<u64>;

    /// Owners holding claims on pending rows (to release those of dead processes).
    async fn claim_owners(&self) -> StoreResult<Vec<String>>;

    /// Rows still pending.
    async fn pending_count(&self) -> StoreResult<i64>;

    /// Every outbox row (of one thread, if given), in enqueue order: for tests and inspection.
    async fn outbox_rows(&self, thread_key: Option<&str>) -> StoreResult<Vec<OutboxRow>>;

    /// Holds `method` for every replica for `for_ms` from now on the database's clock (a 429's
    /// `Retry-After`); a longer hold already in place stays.
    async fn hold_method(&self, method: &str, for_ms: i64) -> StoreResult<()>;

    /// How long `method` is still held (ms, on the database's clock), if it is.
    async fn method_held_for(&self, method: &str) -> StoreResult<Option<i64>>;

    /// Takes the next post slot of `channel`: one post per `interval_ms` on the database's
    /// clock, up to `burst` at once after a quiet spell, shared by every replica. Slots are
    /// handed out in the order they are asked for, up to `max_wait_ms` ahead.
    async fn take_post_slot(
        &self,
        channel: &str,
        interval_ms: i64,
        burst: u32,
        max_wait_ms: i64,
    ) -> StoreResult<PostSlot>;
}

/// What [`OutboxDelivery::take_post_slot`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostSlot {
    /// A slot is reserved: post after this many ms (0: now).
    Reserved { in_ms: i64 },
    /// The next slot is further away than allowed: ask again after this many ms.
    Busy { retry_in_ms: i64 },
}

/// Both sides of the outbox.
pub trait OutboxStore: OutboxQueue + OutboxDelivery {}

impl<T: OutboxQueue + OutboxDelivery + ?Sized> OutboxStore for T {}

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Delivered,
    Failed,
}

/// An outbox row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub thread_key: String,
    pub channel: String,
    pub action: OutboundAction,
    pub state: OutboxState,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    /// Why the last attempt failed; for a row delivered as superseded, that it was.
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
    /// When a call posting it started that is not known to have failed (no answer came, or
    /// its process died): Slack may already show it.
    pub call_started_ms: Option<i64>,
    /// For an upload whose call started: the id of the file it uploaded, which a message
    /// sharing it would carry.
    pub call_file_id: Option<String>,
}

/// Where a delivered message lives in Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
    /// When its last update was sent (unix ms).
    pub last_update_ms: Option<i64>,
    /// The revision of the last update sent, for messages updated by revision.
    pub revision: Option<i64>,
}

/// What [`OutboxDelivery::mark_delivered`] records.
#[derive(Debug, Clone)]
pub struct Delivered<'a> {
    /// The claimed thread head.
    pub claimed_id: i64,
    pub owner: &'a str,
    pub now_ms: i64,
    /// The row whose content was sent (a newer coalesced update, or the head itself).
    pub sent_id: i64,
    /// Older coalesced updates, delivered without their own call.
    pub superseded: Vec<i64>,
    /// A post with a key: key → (channel, ts).
    pub posted: Option<(&'a str, &'a str, &'a str)>,
    /// An update: the key whose rate window starts now.
    pub updated_key: Option<&'a str>,
    /// The revision the update showed (see [`OutboundAction::Update`]).
    pub revision: Option<i64>,
}

impl OutboundAction {
    /// Stored in the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundAction::Post { .. } => "post",
            OutboundAction::Update { .. } => "update",
            OutboundAction::Ephemeral { .. } => "ephemeral",
            OutboundAction::Reaction { .. } => "reaction",
            OutboundAction::Upload { .. } => "upload",
        }
    }

    /// The message key it posts or targets (stored in `msg_key`).
    pub fn msg_key(&self) -> Option<&str> {
        match self {
            OutboundAction::Post { key, .. } => key.as_deref(),
            OutboundAction::Update { key, .. } | OutboundAction::Reaction { key, .. } => Some(key),
            OutboundAction::Ephemeral { .. } | OutboundAction::Upload { .. } => None,
        }
    }
}

// ---- SQL shared by both backends (`$n` placeholders work on SQLite and Postgres) ----

macro_rules! outbox_columns {
    () => {
        "id, thread_key, channel, action, state, attempts, next_attempt_ms, last_error, \
         created_ms, delivered_ms, call_started_ms, call_file_id"
    };
}

pub(super) const INSERT_ROW: &str = "INSERT INTO slack_outbox (thread_key, channel, kind, msg_key, \
     action, state, attempts, next_attempt_ms, created_ms) \
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)";

/// The first render of a run: the cursor row is created by exactly one projector.
pub(super) const START_CURSOR: &str =
    "INSERT INTO slack_render_cursors (run_id, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Moves the cursor only from where the projector read it.
pub(super) const ADVANCE_CURSOR: &str =
    "UPDATE slack_render_cursors SET seq = $3 WHERE run_id = $1 AND seq = $2";

pub(super) const SELECT_CURSOR: &str = "SELECT seq FROM slack_render_cursors WHERE run_id = $1";

/// Due, unclaimed thread heads, oldest first.
pub(super) const DUE_HEADS: &str = "SELECT o.id FROM slack_outbox o \
     WHERE o.state = 'pending' AND o.next_attempt_ms <= $1 \
     AND (o.claim_until_ms IS NULL OR o.claim_until_ms < $1) \
     AND o.id = (SELECT MIN(p.id) FROM slack_outbox p \
                 WHERE p.thread_key = o.thread_key AND p.state = 'pending') \
     ORDER BY o.id LIMIT $2";

pub(super) const CLAIM_ROW: &str = concat!(
    "UPDATE slack_outbox SET claim_owner = $2, claim_until_ms = $3 \
     WHERE id = $1 AND state = 'pending' AND (claim_until_ms IS NULL OR claim_until_ms < $4) \
     RETURNING ",
    outbox_columns!()
);

pub(super) const MESSAGE_REF: &str =
    "SELECT channel, ts, last_update_ms, revision FROM slack_messages WHERE msg_key = $1";

pub(super) const POST_PENDING: &str = "SELECT COUNT(*) FROM slack_outbox \
     WHERE msg_key = $1 AND kind = 'post' AND state = 'pending'";

pub(super) const NEWER_UPDATES: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM slack_outbox WHERE thread_key = $1 AND msg_key = $2 AND kind = 'update' \
     AND state = 'pending' AND id > $3 ORDER BY id"
);

pub(super) const DELIVER_CLAIMED: &str = "UPDATE slack_outbox SET state = 'delivered', \
     delivered_ms = $2, last_error = NULL, attempts = attempts + 1, claim_owner = NULL, \
     claim_until_ms = NULL WHERE id = $1 AND claim_owner = $3 AND state = 'pending'";

pub(super) const DELIVER_SENT: &str = "UPDATE slack_outbox SET state = 'delivered', \
     delivered_ms = $2, last_error = NULL WHERE id = $1 AND state = 'pending'";

pub(super) const SUPERSEDE: &str = "UPDATE slack_outbox SET state = 'delivered', \
     delivered_ms = $2, last_error = 'superseded by a newer update', claim_owner = NULL, \
     claim_until_ms = NULL WHERE id = $1";

pub(super) const UPSERT_MESSAGE: &str = "INSERT INTO slack_messages (msg_key, channel, ts) \
     VALUES ($1, $2, $3) ON CONFLICT (msg_key) DO UPDATE SET channel = EXCLUDED.channel, \
     ts = EXCLUDED.ts";

pub(super) const TOUCH_UPDATE: &str = "UPDATE slack_messages SET last_update_ms = $2, \
     revision = COALESCE($3, revision) WHERE msg_key = $1";

/// A row rendered for a run, with the epoch it was rendered under.
pub(super) const INSERT_RUN_ROW: &str = "INSERT INTO slack_outbox (thread_key, channel, kind, \
     msg_key, action, state, attempts, next_attempt_ms, created_ms, run_id, epoch) \
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7, $8)";

pub(super) const NEXT_REVISION: &str = "INSERT INTO slack_revisions (msg_key, rev) VALUES ($1, 1) \
     ON CONFLICT (msg_key) DO UPDATE SET rev = slack_revisions.rev + 1 RETURNING rev";

pub(super) const RESCHEDULE: &str = "UPDATE slack_outbox SET next_attempt_ms = $3, \
     last_error = COALESCE($4, last_error), attempts = attempts + $5, claim_owner = NULL, \
     claim_until_ms = NULL WHERE id = $1 AND claim_owner = $2 AND state = 'pending'";

pub(super) const SET_CALL_STARTED: &str = "UPDATE slack_outbox SET call_started_ms = $3, \
     call_file_id = NULL WHERE id = $1 AND claim_owner = $2 AND state = 'pending'";

pub(super) const SET_CALL_FILE: &str = "UPDATE slack_outbox SET call_file_id = $3 \
     WHERE id = $1 AND claim_owner = $2 AND state = 'pending'";

pub(super) const FAIL: &str = "UPDATE slack_outbox SET state = 'failed', last_error = $3, \
     attempts = attempts + 1, claim_owner = NULL, claim_until_ms = NULL \
     WHERE id = $1 AND claim_owner = $2 AND state = 'pending'";

pub(super) const RELEASE: &str = "UPDATE slack_outbox SET claim_owner = NULL, \
     claim_until_ms = NULL WHERE claim_owner = $1 AND state = 'pending'";

pub(super) const CLAIM_OWNERS: &str = "SELECT DISTINCT claim_owner FROM slack_outbox \
     WHERE state = 'pending' AND claim_owner IS NOT NULL";

pub(super) const PENDING_COUNT: &str = "SELECT COUNT(*) FROM slack_outbox WHERE state = 'pending'";

pub(super) const ALL_ROWS: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM slack_outbox WHERE ($1 IS NULL OR thread_key = $1) ORDER BY id"
);

#[derive(sqlx::FromRow)]
pub(super) struct RowRecord {
    id: i64,
    thread_key: String,
    channel: String,
    action: Json<OutboundAction>,
    state: String,
    attempts: i64,
    next_attempt_ms: i64,
    last_error: Option<String>,
    created_ms: i64,
    delivered_ms: Option<i64>,
    call_started_ms: Option<i64>,
    call_file_id: Option<String>,
}

impl RowRecord {
    pub(super) fn into_row(self) -> StoreResult<OutboxRow> {
        let state = match self.state.as_str() {
            "pending" => OutboxState::Pending,
            "delivered" => OutboxState::Delivered,
            "failed" => OutboxState::Failed,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "outbox row {} has unknown state `{other}`",
                    self.id
                )));
            }
        };
        Ok(OutboxRow {
            id: self.id,
            thread_key: self.thread_key,
            channel: self.channel,
            action: self.action.0,
            state,
            attempts: self.attempts,
            next_attempt_ms: self.next_attempt_ms,
            last_error: self.last_error,
            created_ms: self.created_ms,
            delivered_ms: self.delivered_ms,
            call_started_ms: self.call_started_ms,
            call_file_id: self.call_file_id,
        })
    }
}

pub(super) fn into_rows(records: Vec<RowRecord>) -> StoreResult<Vec<OutboxRow>> {
    records.into_iter().map(RowRecord::into_row).collect()
}

// ---- one implementation for both backends ----

/// The cursor never moves backwards: a late writer with an older position keeps the newer one.
const SQLITE_UPSERT_CURSOR: &str = "INSERT INTO slack_render_cursors (run_id, seq) VALUES ($1, $2) \
     ON CONFLICT (run_id) DO UPDATE SET seq = max(slack_render_cursors.seq, excluded.seq)";
const POSTGRES_UPSERT_CURSOR: &str = "INSERT INTO slack_render_cursors (run_id, seq) \
     VALUES ($1, $2) \
     ON CONFLICT (run_id) DO UPDATE SET seq = GREATEST(slack_render_cursors.seq, EXCLUDED.seq)";

/// Arbitrary constant naming the Postgres outbox claim lock ("SLKOUTBX").
const CLAIM_LOCK: i64 = 0x534C_4B4F_5554_4258;

/// The pacing statements of one backend; `$now` is its spelling of the database clock in ms.
macro_rules! pacing_sql {
    ($now:literal, $greatest:literal) => {
        /// `$1` method scope, `$2` how long.
        const HOLD_METHOD: &str = concat!(
            "INSERT INTO slack_pacing (scope, until_ms) VALUES ($1, ",
            $now,
            " + $2) ON CONFLICT (scope) DO UPDATE SET until_ms = ",
            $greatest,
            "(slack_pacing.until_ms, excluded.until_ms)"
        );
        const HELD_FOR: &str = concat!(
            "SELECT until_ms - ",
            $now,
            " FROM slack_pacing WHERE scope = $1"
        );
        /// Generic cell rate algorithm with reservations: `until_ms` is the theoretical time
        /// of the channel's next post. A post may go `$3` (the burst tolerance) before it; a
        /// request reserves the next slot (moving it `$2`, the interval, on) when that slot is
        /// at most `$4` away, and gets how long to wait for it (≤ 0: go now).
        const TAKE_SLOT: &str = concat!(
            "INSERT INTO slack_pacing (scope, until_ms) VALUES ($1, ",
            $now,
            " + $2) ON CONFLICT (scope) DO UPDATE SET until_ms = ",
            $greatest,
            "(slack_pacing.until_ms, ",
            $now,
            ") + $2 WHERE slack_pacing.until_ms - $3 - ",
            $now,
            " <= $4 RETURNING until_ms - $2 - $3 - ",
            $now
        );
        /// How long until the next slot: `$2` the burst tolerance.
        const SLOT_WAIT: &str = concat!(
            "SELECT until_ms - $2 - ",
            $now,
            " FROM slack_pacing WHERE scope = $1"
        );
    };
}

impl SqliteStore {
    pacing_sql!(
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        "max"
    );

    /// Nothing more to take: the write transaction (`BEGIN IMMEDIATE`, see `sqlite.rs`) already
    /// serializes a claim's read-then-write against every other writer of the file.
    async fn lock_outbox_claims(_conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }
}

impl PostgresStore {
    pacing_sql!(
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        "GREATEST"
    );

    /// A transaction-scoped advisory lock: replicas claim one after another, so a thread head
    /// is never handed to two of them.
    async fn lock_outbox_claims(conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Writes begin with the store's `begin_write()` (see `runs.rs`); `$upsert_cursor` is the
/// backend's spelling of "the greater of the two".
macro_rules! impl_outbox_store {
    ($store:ty, $upsert_cursor:expr) => {
        #[async_trait::async_trait]
        impl OutboxQueue for $store {
            async fn enqueue(
                &self,
                messages: &[OutboundMessage],
                cursor: Option<(&str, i64)>,
            ) -> StoreResult<()> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                for m in messages {
                    sqlx::query(INSERT_ROW)
                        .bind(&m.thread_key)
                        .bind(&m.channel)
                        .bind(m.action.kind())
                        .bind(m.action.msg_key())
                        .bind(Json(&m.action))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some((run_id, seq)) = cursor {
                    sqlx::query($upsert_cursor)
                        .bind(run_id)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn enqueue_rendered(
                &self,
                messages: &[OutboundMessage],
                run_id: &str,
                epoch: u64,
                from_seq: i64,
                to_seq: i64,
            ) -> StoreResult<bool> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                // The cursor first: a second projector waits here on the row (or its key)
                // until the first commits, then finds it moved and queues nothing.
                let moved = if from_seq == 0 {
                    sqlx::query(START_CURSOR)
                        .bind(run_id)
                        .bind(to_seq)
                        .execute(&mut *tx)
                        .await?
                } else {
                    sqlx::query(ADVANCE_CURSOR)
                        .bind(run_id)
                        .bind(from_seq)
                        .bind(to_seq)
                        .execute(&mut *tx)
                        .await?
                };
                if moved.rows_affected() != 1 {
                    return Ok(false);
                }
                // The fence: the run's row locked (a claim or an adoption waits for this
                // commit) and still under the epoch the rendering was read with.
                let (_, _, row_epoch): (String, Option<String>, i64) =
                    sqlx::query_as(Self::LOCK_RUN_FENCE)
                        .bind(run_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))?;
                if u64::try_from(row_epoch).ok() != Some(epoch) {
                    tracing::debug!(
                        run = run_id,
                        epoch,
                        row_epoch,
                        "rendering refused: the run's epoch moved on"
                    );
                    return Err(StoreError::LeaseLost(run_id.to_string()));
                }
                let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
                for m in messages {
                    sqlx::query(INSERT_RUN_ROW)
                        .bind(&m.thread_key)
                        .bind(&m.channel)
                        .bind(m.action.kind())
                        .bind(m.action.msg_key())
                        .bind(Json(&m.action))
                        .bind(now)
                        .bind(run_id)
                        .bind(epoch)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn next_revision(&self, key: &str) -> StoreResult<i64> {
                let mut tx = self.begin_write().await?;
                let rev: i64 = sqlx::query_scalar(NEXT_REVISION)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(rev)
            }

            async fn render_cursor(&self, run_id: &str) -> StoreResult<i64> {
                let seq: Option<i64> = sqlx::query_scalar(SELECT_CURSOR)
                    .bind(run_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(seq.unwrap_or(0))
            }
        }

        #[async_trait::async_trait]
        impl OutboxDelivery for $store {
            async fn claim_heads(
                &self,
                owner: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: u32,
            ) -> StoreResult<Vec<OutboxRow>> {
                let mut tx = self.begin_write().await?;
                Self::lock_outbox_claims(&mut tx).await?;
                let ids: Vec<i64> = sqlx::query_scalar(DUE_HEADS)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let mut rows = Vec::with_capacity(ids.len());
                for id in ids {
                    let rec: Option<RowRecord> = sqlx::query_as(CLAIM_ROW)
                        .bind(id)
                        .bind(owner)
                        .bind(lease_until_ms)
                        .bind(now_ms)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(rec) = rec {
                        rows.push(rec.into_row()?);
                    }
                }
                tx.commit().await?;
                Ok(rows)
            }

            async fn message_ref(&self, key: &str) -> StoreResult<Option<MessageRef>> {
                let row: Option<(String, String, Option<i64>, Option<i64>)> =
                    sqlx::query_as(MESSAGE_REF)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(
                    row.map(|(channel, ts, last_update_ms, revision)| MessageRef {
                        channel,
                        ts,
                        last_update_ms,
                        revision,
                    }),
                )
            }

            async fn post_pending(&self, key: &str) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar(POST_PENDING)
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn newer_updates(
                &self,
                thread_key: &str,
                key: &str,
                after_id: i64,
            ) -> StoreResult<Vec<OutboxRow>> {
                let recs: Vec<RowRecord> = sqlx::query_as(NEWER_UPDATES)
                    .bind(thread_key)
                    .bind(key)
                    .bind(after_id)
                    .fetch_all(&self.pool)
                    .await?;
                into_rows(recs)
            }

            async fn mark_delivered(&self, done: Delivered<'_>) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let claimed = sqlx::query(DELIVER_CLAIMED)
                    .bind(done.claimed_id)
                    .bind(done.now_ms)
                    .bind(done.owner)
                    .execute(&mut *tx)
                    .await?;
                if claimed.rows_affected() != 1 {
                    return Ok(false);
                }
                if done.sent_id != done.claimed_id {
                    sqlx::query(DELIVER_SENT)
                        .bind(done.sent_id)
                        .bind(done.now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                for id in &done.superseded {
                    sqlx::query(SUPERSEDE)
                        .bind(id)
                        .bind(done.now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some((key, channel, ts)) = done.posted {
                    sqlx::query(UPSERT_MESSAGE)
                        .bind(key)
                        .bind(channel)
                        .bind(ts)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(key) = done.updated_key {
                    sqlx::query(TOUCH_UPDATE)
                        .bind(key)
                        .bind(done.now_ms)
                        .bind(done.revision)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn reschedule(
                &self,
                id: i64,
                owner: &str,
                next_attempt_ms: i64,
                error: Option<&str>,
                count_attempt: bool,
            ) -> StoreResult<bool> {
                let done = sqlx::query(RESCHEDULE)
                    .bind(id)
                    .bind(owner)
                    .bind(next_attempt_ms)
                    .bind(error)
                    .bind(i64::from(count_attempt))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_call_started(
                &self,
                id: i64,
                owner: &str,
                at: Option<i64>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(SET_CALL_STARTED)
                    .bind(id)
                    .bind(owner)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_call_file(
                &self,
                id: i64,
                owner: &str,
                file_id: &str,
            ) -> StoreResult<bool> {
                let done = sqlx::query(SET_CALL_FILE)
                    .bind(id)
                    .bind(owner)
                    .bind(file_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn mark_failed(&self, id: i64, owner: &str, error: &str) -> StoreResult<bool> {
                let done = sqlx::query(FAIL)
                    .bind(id)
                    .bind(owner)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_claims(&self, owner: &str) -> StoreResult<u64> {
                let done = sqlx::query(RELEASE).bind(owner).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn claim_owners(&self) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(CLAIM_OWNERS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn pending_count(&self) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(PENDING_COUNT)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn outbox_rows(&self, thread_key: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
                let recs: Vec<RowRecord> = sqlx::query_as(ALL_ROWS)
                    .bind(thread_key)
                    .fetch_all(&self.pool)
                    .await?;
                into_rows(recs)
            }

            async fn hold_method(&self, method: &str, for_ms: i64) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(Self::HOLD_METHOD)
                    .bind(format!("method:{method}"))
                    .bind(for_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn method_held_for(&self, method: &str) -> StoreResult<Option<i64>> {
                let left: Option<i64> = sqlx::query_scalar(Self::HELD_FOR)
                    .bind(format!("method:{method}"))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(left.filter(|&ms| ms > 0))
            }

            async fn take_post_slot(
                &self,
                channel: &str,
                interval_ms: i64,
                burst: u32,
                max_wait_ms: i64,
            ) -> StoreResult<PostSlot> {
                if interval_ms <= 0 {
                    return Ok(PostSlot::Reserved { in_ms: 0 });
                }
                let tolerance = interval_ms.saturating_mul(i64::from(burst.max(1) - 1));
                let scope = format!("channel:{channel}");
                let mut tx = self.begin_write().await?;
                let reserved: Option<i64> = sqlx::query_scalar(Self::TAKE_SLOT)
                    .bind(&scope)
                    .bind(interval_ms)
                    .bind(tolerance)
                    .bind(max_wait_ms.max(0))
                    .fetch_optional(&mut *tx)
                    .await?;
                let slot = match reserved {
                    Some(wait) => PostSlot::Reserved { in_ms: wait.max(0) },
                    None => {
                        let wait: i64 = sqlx::query_scalar(Self::SLOT_WAIT)
                            .bind(&scope)
                            .bind(tolerance)
                            .fetch_one(&mut *tx)
                            .await?;
                        PostSlot::Busy {
                            retry_in_ms: (wait - max_wait_ms).max(1),
                        }
                    }
                };
                tx.commit().await?;
                Ok(slot)
            }
        }
    };
}

impl_outbox_store!(SqliteStore, SQLITE_UPSERT_CURSOR);
impl_outbox_store!(PostgresStore, POSTGRES_UPSERT_CURSOR);
