//! [`super::slack_edge::EdgeStore`] on postgres. Placeholder until the Slack edge work lands.

use super::postgres::PostgresStore;
use super::slack_edge::EdgeStore;

#[async_trait::async_trait]
impl EdgeStore for PostgresStore {}
