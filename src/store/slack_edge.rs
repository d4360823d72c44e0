//! Persistence for the Slack edge: delivered-event deduplication and the audit log.
//!
//! Deduplication is persistent (a row per `event_id`) because Slack retries an event it thinks
//! was not acknowledged, possibly after a restart or to another replica.

use serde::{Deserialize, Serialize};

use super::StoreResult;

/// One thing a person did through Slack, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub team: String,
    pub user: String,
    pub channel: String,
    /// `command:start`, `button:abort_run`, `modal:start`, `event:app_mention`, ...
    pub action: String,
    /// The command text, run id, or parameters (truncated).
    pub detail: String,
    /// `ok: ...`, `refused: ...`, `error: ...`.
    pub outcome: String,
}

#[async_trait::async_trait]
pub trait EdgeStore: Send + Sync {
    /// Records that the event was seen. `true` the first time, `false` for a repeat.
    async fn remember_event(&self, event_id: &str, at_ms: i64) -> StoreResult<bool>;

    /// Appends an audit row.
    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// The newest `limit` audit rows, newest first.
    async fn audit_log(&self, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}
