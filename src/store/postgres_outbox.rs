//! [`super::outbox::OutboxStore`] on Postgres. Claims take a transaction-scoped advisory lock, so
//! replicas claim one after another and a thread head is never handed to two of them.

use super::StoreResult;
use super::outbox::{
    self as ob, Delivered, MessageRef, OutboundMessage, OutboxRow, OutboxStore, RowRecord,
};
use super::postgres::PostgresStore;
use crate::run::now_ms;
use sqlx::types::Json;

/// The cursor never moves backwards: a late writer with an older position keeps the newer one.
const UPSERT_CURSOR: &str = "INSERT INTO slack_render_cursors (run_id, seq) VALUES ($1, $2) \
     ON CONFLICT (run_id) DO UPDATE SET seq = GREATEST(slack_render_cursors.seq, EXCLUDED.seq)";

/// Arbitrary constant naming the outbox claim lock ("SLKOUTBX").
const CLAIM_LOCK: i64 = 0x534C_4B4F_5554_4258;

impl PostgresStore {
    async fn begin_outbox_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

#[async_trait::async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue(
        &self,
        messages: &[OutboundMessage],
        cursor: Option<(&str, i64)>,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.begin_outbox_write().await?;
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
        if let Some((run_id, seq)) = cursor {
            sqlx::query(UPSERT_CURSOR)
                .bind(run_id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn render_cursor(&self, run_id: &str) -> StoreResult<i64> {
        let seq: Option<i64> = sqlx::query_scalar(ob::SELECT_CURSOR)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn claim_heads(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        let mut tx = self.begin_outbox_write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> = sqlx::query_scalar(ob::DUE_HEADS)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let rec: Option<RowRecord> = sqlx::query_as(ob::CLAIM_ROW)
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
        let row: Option<(String, String, Option<i64>)> = sqlx::query_as(ob::MESSAGE_REF)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(channel, ts, last_update_ms)| MessageRef {
            channel,
            ts,
            last_update_ms,
        }))
    }

    async fn post_pending(&self, key: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(ob::POST_PENDING)
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
        let recs: Vec<RowRecord> = sqlx::query_as(ob::NEWER_UPDATES)
            .bind(thread_key)
            .bind(key)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?;
        ob::into_rows(recs)
    }

    async fn mark_delivered(&self, done: Delivered<'_>) -> StoreResult<bool> {
        let mut tx = self.begin_outbox_write().await?;
        let claimed = sqlx::query(ob::DELIVER_CLAIMED)
            .bind(done.claimed_id)
            .bind(done.now_ms)
            .bind(done.owner)
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() != 1 {
            return Ok(false);
        }
        if done.sent_id != done.claimed_id {
            sqlx::query(ob::DELIVER_SENT)
                .bind(done.sent_id)
                .bind(done.now_ms)
                .execute(&mut *tx)
                .await?;
        }
        for id in &done.superseded {
            sqlx::query(ob::SUPERSEDE)
                .bind(id)
                .bind(done.now_ms)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((key, channel, ts)) = done.posted {
            sqlx::query(ob::UPSERT_MESSAGE)
                .bind(key)
                .bind(channel)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(key) = done.updated_key {
            sqlx::query(ob::TOUCH_UPDATE)
                .bind(key)
                .bind(done.now_ms)
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
        let done = sqlx::query(ob::RESCHEDULE)
            .bind(id)
            .bind(owner)
            .bind(next_attempt_ms)
            .bind(error)
            .bind(i64::from(count_attempt))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_failed(&self, id: i64, owner: &str, error: &str) -> StoreResult<bool> {
        let done = sqlx::query(ob::FAIL)
            .bind(id)
            .bind(owner)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_claims(&self, owner: &str) -> StoreResult<u64> {
        let done = sqlx::query(ob::RELEASE)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn claim_owners(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(ob::CLAIM_OWNERS)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn pending_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(ob::PENDING_COUNT)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn outbox_rows(&self, thread_key: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
        let recs: Vec<RowRecord> = sqlx::query_as(ob::ALL_ROWS)
            .bind(thread_key)
            .fetch_all(&self.pool)
            .await?;
        ob::into_rows(recs)
    }
}
