//! Persistence of the weekly digest: which weeks have been posted.
//!
//! A digest is "posted" when its row exists; the row is inserted in the same transaction as
//! the digest's outbox rows, so two replicas (or a restart) never post it twice, and a crash
//! never leaves a row without its messages, nor messages without their row.

use sqlx::types::Json;

use super::StoreResult;
use super::outbox::{self as ob, OutboundMessage};
use crate::run::now_ms;

/// A digest as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub channel: String,
    pub queued_by: String,
    pub queued_ms: i64,
}

#[async_trait::async_trait]
pub trait DigestStore: Send + Sync {
    /// Records the digest of the period starting at `period_start_ms` and queues its messages,
    /// atomically. `false` (and nothing queued) when that period's digest was already recorded.
    async fn enqueue_digest(
        &self,
        period_start_ms: i64,
        period_end_ms: i64,
        queued_by: &str,
        messages: &[OutboundMessage],
    ) -> StoreResult<bool>;

    /// The digest recorded for the period starting at `period_start_ms`, if any.
    async fn digest(&self, period_start_ms: i64) -> StoreResult<Option<DigestRecord>>;
}

const INSERT_DIGEST: &str = "INSERT INTO digests \
     (period_start_ms, period_end_ms, channel, queued_by, queued_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (period_start_ms) DO NOTHING";
const SELECT_DIGEST: &str = "SELECT period_start_ms, period_end_ms, channel, queued_by, \
     queued_ms FROM digests WHERE period_start_ms = $1";

/// One implementation for both backends. The write transaction is the store's `begin_write()`
/// (see `runs.rs`): SQLite takes its write lock up front; on Postgres the primary key makes a
/// second inserter wait for the first to commit, then insert nothing.
macro_rules! impl_digest_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl DigestStore for $store {
            async fn enqueue_digest(
                &self,
                period_start_ms: i64,
                period_end_ms: i64,
                queued_by: &str,
                messages: &[OutboundMessage],
            ) -> StoreResult<bool> {
                let now = now_ms();
                let channel = messages.first().map(|m| m.channel.as_str()).unwrap_or("");
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(INSERT_DIGEST)
                    .bind(period_start_ms)
                    .bind(period_end_ms)
                    .bind(channel)
                    .bind(queued_by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for m in messages {
                    sqlx::query(ob::INSERT_ROW)
                        .bind(&m.thread_key)
                        .bind(&m.channel)
                        .bind(m.action.kind())
                        .bind(m.action.msg_key())
                        .bind(Json(&m.action))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn digest(&self, period_start_ms: i64) -> StoreResult<Option<DigestRecord>> {
                let row: Option<(i64, i64, String, String, i64)> = sqlx::query_as(SELECT_DIGEST)
                    .bind(period_start_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(
                    |(period_start_ms, period_end_ms, channel, queued_by, queued_ms)| {
                        DigestRecord {
                            period_start_ms,
                            period_end_ms,
                            channel,
                            queued_by,
                            queued_ms,
                        }
                    },
                ))
            }
        }
    };
}

impl_digest_store!(super::sqlite::SqliteStore);
impl_digest_store!(super::postgres::PostgresStore);
