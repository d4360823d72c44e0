//! [`super::slack_edge::EdgeStore`] on sqlite. The SQL is shared (`$n` placeholders and
//! `ON CONFLICT DO NOTHING` work on both backends).

use super::StoreResult;
use super::slack_edge::{AuditEntry, EdgeStore};
use super::sqlite::SqliteStore;

const REMEMBER_EVENT: &str = "INSERT INTO slack_events (event_id, received_ms) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING";

const INSERT_AUDIT: &str = "INSERT INTO slack_audit \
     (at_ms, team, user_id, channel, action, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)";

const AUDIT_LOG: &str = "SELECT at_ms, team, user_id, channel, action, detail, outcome \
     FROM slack_audit ORDER BY id DESC LIMIT $1";

type AuditRow = (i64, String, String, String, String, String, String);

#[async_trait::async_trait]
impl EdgeStore for SqliteStore {
    async fn remember_event(&self, event_id: &str, at_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(REMEMBER_EVENT)
            .bind(event_id)
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
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
