//! Schedules: experiments that start by themselves at planned times.

use serde::{Deserialize, Serialize};

use crate::store::{DynStore, StoreResult};

/// A run a schedule plans to start (for period summaries and the weekly digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpcomingRun {
    /// Unix ms at which the run is planned to start.
    pub at_ms: i64,
    pub experiment: String,
    pub schedule_id: i64,
    /// The Slack channel the run will appear in.
    pub channel: String,
}

/// Runs planned by schedules between `from_ms` (inclusive) and `to_ms` (exclusive), in time
/// order.
pub async fn upcoming(
    _store: &DynStore,
    _from_ms: i64,
    _to_ms: i64,
) -> StoreResult<Vec<UpcomingRun>> {
    // Filled in by the scheduler work (issue 5, item 4).
    Ok(Vec::new())
}
