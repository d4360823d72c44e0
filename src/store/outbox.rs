//! Persistence of the Slack outbox: every write to Slack is a row first, so a Slack outage or
//! a crash delays messages and never loses them. Also the render cursor: how far into each
//! run's journal the Slack thread has been rendered, advanced in the same transaction as the
//! messages it produced (so a restart neither skips nor repeats a line).
//!
//! Implemented for both backends in `sqlite_outbox.rs` and `postgres_outbox.rs`; delivered by
//! [`crate::slack::outbox`].

use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::{StoreError, StoreResult};

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
    /// `chat.postMessage`. `key` names the message so later updates, replies and reactions
    /// can refer to it before its `ts` is known; `in_thread_of` is the key of the parent
    /// (its `ts` becomes `thread_ts` at delivery).
    Post {
        key: Option<String>,
        in_thread_of: Option<String>,
        text: String,
        blocks: Option<serde_json::Value>,
    },
    /// `chat.update` of the message named `key`. Pending updates of one key coalesce: only
    /// the newest is sent, and at most about one per second per message.
    Update {
        key: String,
        text: String,
        blocks: Option<serde_json::Value>,
    },
    /// `chat.postEphemeral` to `user`.
    Ephemeral {
        user: String,
        in_thread_of: Option<String>,
        text: String,
        blocks: Option<serde_json::Value>,
    },
    /// `reactions.add` on the message named `key`.
    Reaction { key: String, name: String },
}

#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues messages, in order; when `cursor` is given, also records that the run's journal
    /// has been rendered up to that sequence number, in the same transaction.
    async fn enqueue(
        &self,
        messages: &[OutboundMessage],
        cursor: Option<(&str, i64)>,
    ) -> StoreResult<()>;

    /// The last journal sequence number of the run rendered to Slack (0 if none).
    async fn render_cursor(&self, run_id: &str) -> StoreResult<i64>;

    // ---- delivery side (used by `crate::slack::outbox`) ----

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
}

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
}

/// Where a delivered message lives in Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
    /// When its last `chat.update` was sent (unix ms).
    pub last_update_ms: Option<i64>,
}

/// What [`OutboxStore::mark_delivered`] records.
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
}

impl OutboundAction {
    /// Stored in the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundAction::Post { .. } => "post",
            OutboundAction::Update { .. } => "update",
            OutboundAction::Ephemeral { .. } => "ephemeral",
            OutboundAction::Reaction { .. } => "reaction",
        }
    }

    /// The message key it posts or targets (stored in `msg_key`).
    pub fn msg_key(&self) -> Option<&str> {
        match self {
            OutboundAction::Post { key, .. } => key.as_deref(),
            OutboundAction::Update { key, .. } | OutboundAction::Reaction { key, .. } => Some(key),
            OutboundAction::Ephemeral { .. } => None,
        }
    }

    /// The Web API method that delivers it.
    pub fn method(&self) -> &'static str {
        match self {
            OutboundAction::Post { .. } => "chat.postMessage",
            OutboundAction::Update { .. } => "chat.update",
            OutboundAction::Ephemeral { .. } => "chat.postEphemeral",
            OutboundAction::Reaction { .. } => "reactions.add",
        }
    }
}

// ---- SQL shared by both backends (`$n` placeholders work on SQLite and Postgres) ----

macro_rules! outbox_columns {
    () => {
        "id, thread_key, channel, action, state, attempts, next_attempt_ms, last_error, \
         created_ms, delivered_ms"
    };
}

pub(super) const INSERT_ROW: &str = "INSERT INTO slack_outbox (thread_key, channel, kind, msg_key, \
     action, state, attempts, next_attempt_ms, created_ms) \
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)";

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
    "SELECT channel, ts, last_update_ms FROM slack_messages WHERE msg_key = $1";

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

pub(super) const TOUCH_UPDATE: &str =
    "UPDATE slack_messages SET last_update_ms = $2 WHERE msg_key = $1";

pub(super) const RESCHEDULE: &str = "UPDATE slack_outbox SET next_attempt_ms = $3, \
     last_error = COALESCE($4, last_error), attempts = attempts + $5, claim_owner = NULL, \
     claim_until_ms = NULL WHERE id = $1 AND claim_owner = $2 AND state = 'pending'";

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
        })
    }
}

pub(super) fn into_rows(records: Vec<RowRecord>) -> StoreResult<Vec<OutboxRow>> {
    records.into_iter().map(RowRecord::into_row).collect()
}
