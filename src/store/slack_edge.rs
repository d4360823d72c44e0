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

    /// Forgets the events received before `before_ms` (Slack stops retrying an event within
    /// about an hour, so older rows only take space). Returns how many were removed.
    async fn prune_events(&self, before_ms: i64) -> StoreResult<u64>;

    /// Appends an audit row.
    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// The newest `limit` audit rows, newest first.
    async fn audit_log(&self, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

// ---- implementations (the SQL is shared: `$n` placeholders and `ON CONFLICT DO NOTHING`
// work on both backends) ----

const REMEMBER_EVENT: &str = "INSERT INTO slack_events (event_id, received_ms) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING";

const PRUNE_EVENTS: &str = "DELETE FROM slack_events WHERE received_ms < $1";

const INSERT_AUDIT: &str = "INSERT INTO slack_audit \
     (at_ms, team, user_id, channel, action, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)";

const AUDIT_LOG: &str = "SELECT at_ms, team, user_id, channel, action, detail, outcome \
     FROM slack_audit ORDER BY id DESC LIMIT $1";

type AuditRow = (i64, String, String, String, String, String, String);

/// One implementation for both backends: the SQL is the same, only the pool type differs.
macro_rules! impl_edge_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl EdgeStore for $store {
            async fn remember_event(&self, event_id: &str, at_ms: i64) -> StoreResult<bool> {
                let done = sqlx::query(REMEMBER_EVENT)
                    .bind(event_id)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_events(&self, before_ms: i64) -> StoreResult<u64> {
                let done = sqlx::query(PRUNE_EVENTS)
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
                sqlx::query(INSERT_AUDIT)
                    .bind(e.at_ms)
                    .bind(&e.team)
                    .bind(&e.user)
                    .bind(&e.channel)
                    .bind(&e.action)
                    .bind(&e.detail)
                    .bind(&e.outcome)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn audit_log(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(AUDIT_LOG)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(at_ms, team, user, channel, action, detail, outcome)| AuditEntry {
                            at_ms,
                            team,
                            user,
                            channel,
                            action,
                            detail,
                            outcome,
                        },
                    )
                    .collect())
            }
        }
    };
}

impl_edge_store!(super::sqlite::SqliteStore);
impl_edge_store!(super::postgres::PostgresStore);
