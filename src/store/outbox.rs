//! Persistence of the Slack outbox: every write to Slack is a row first, so a Slack outage or
//! a crash delays messages and never loses them. Also the render cursor: how far into each
//! run's journal the Slack thread has been rendered, advanced in the same transaction as the
//! messages it produced (so a restart neither skips nor repeats a line).
//!
//! CONTRACT: the outbox work implements this for both backends
//! (`sqlite_outbox.rs`, `postgres_outbox.rs`) and may add delivery-side methods.

use serde::{Deserialize, Serialize};

use super::StoreResult;

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
}
