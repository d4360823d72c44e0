//! What the run pages keep between requests, per recent run: its journal as read so far (a
//! page, each of its live refreshes and its chart read only the entries appended since the
//! last request), and the drawn view of a run that has ended (its chart and numbers no longer
//! change; only the Q&A does, which is read every time).
//!
//! A few runs only ([`RUNS`], least recently asked for leaves first): these are the runs
//! people are looking at now.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::report::record::LearningRecord;
use crate::run::Entry;

/// How many runs are kept.
pub(super) const RUNS: usize = 8;

/// One run as the pages last read it.
#[derive(Default)]
pub(super) struct RunCache {
    /// The run's journal, in order, up to the last entry read.
    pub journal: Vec<Entry>,
    /// The view of the run once it has ended.
    pub drawn: Option<Drawn>,
}

impl RunCache {
    pub fn last_seq(&self) -> i64 {
        self.journal.last().map(|e| e.seq).unwrap_or(0)
    }
}

/// A drawn view of an ended run, valid while its journal ends at `seq`.
#[derive(Clone)]
pub(super) struct Drawn {
    pub seq: i64,
    /// Without its questions (they change after the run; read each time).
    pub record: LearningRecord,
    pub svg: Result<String, String>,
    pub empty: Option<String>,
}

#[derive(Default)]
pub(super) struct Cache {
    runs: Mutex<VecDeque<(String, Arc<AsyncMutex<RunCache>>)>>,
}

impl Cache {
    /// The run's entry, locked: requests for one run take turns (the second one finds what
    /// the first one read and drew).
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<RunCache> {
        let slot = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let slot = match runs.iter().position(|(r, _)| r == id) {
                Some(i) => runs.remove(i).map(|(_, s)| s).unwrap_or_default(),
                None => Arc::default(),
            };
            runs.push_front((id.to_string(), slot.clone()));
            runs.truncate(RUNS);
            slot
        };
        slot.lock_owned().await
    }

    /// Drops what is kept of a run (it is gone from the database).
    pub fn forget(&self, id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(r, _)| r != id);
    }
}
