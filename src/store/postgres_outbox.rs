//! [`super::outbox::OutboxStore`] on postgres. Placeholder until the outbox work lands.

use super::outbox::{OutboundMessage, OutboxStore};
use super::postgres::PostgresStore;
use super::{StoreError, StoreResult};

#[async_trait::async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue(
        &self,
        _messages: &[OutboundMessage],
        _cursor: Option<(&str, i64)>,
    ) -> StoreResult<()> {
        Err(StoreError::Corrupt("the outbox is not built yet".into()))
    }

    async fn render_cursor(&self, _run_id: &str) -> StoreResult<i64> {
        Ok(0)
    }
}
