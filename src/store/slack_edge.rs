//! Persistence for the Slack edge: delivered-event deduplication and the audit log.
//!
//! CONTRACT: the Slack edge work implements this for both backends
//! (`sqlite_edge.rs`, `postgres_edge.rs`) and adds the methods it needs.

#[async_trait::async_trait]
pub trait EdgeStore: Send + Sync {}
