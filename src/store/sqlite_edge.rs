//! [`super::slack_edge::EdgeStore`] on sqlite. Placeholder until the Slack edge work lands.

use super::slack_edge::EdgeStore;
use super::sqlite::SqliteStore;

#[async_trait::async_trait]
impl EdgeStore for SqliteStore {}
