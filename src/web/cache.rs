//! What the run pages keep between requests, per recent run: its journal as read so far (a
//! page, each of its live refreshes and its chart read only the entries appended since the
//! last request), and the drawn view of a run that has ended (its chart and numbers no longer
//! change; only the Q&A does, which is read every time).
//!
//! A few runs only ([`RUNS`], least recently asked for leaves first): these are the runs
//! people are looking at now. Their journals together stay under [`ENTRIES`] (a ten-hour run
//! sampled four times a second is 144,000 entries): the least recent leave first, but never
//! the run asked for now, which a request reads in full either way.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::report::record::LearningRecord;
use crate::run::Entry;

/// How many runs are kept.
pub(super) const RUNS: usize = 8;

/// How many journal entries the kept runs hold together at most: an entry is about 400
/// bytes (304 inline and its strings), so about 100 MB.
pub(super) const ENTRIES: usize = 250_000;

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
            let mut kept = 0;
            let within = runs
                .iter()
                .enumerate()
                .take_while(|(i, (_, s))| {
                    // One being read now counts as nothing: it is in use, not idle.
                    kept += s.try_lock().map(|c| c.journal.len()).unwrap_or(0);
                    *i == 0 || kept <= ENTRIES
                })
                .count();
            runs.truncate(within);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Event;

    fn entries(run: &str, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                run_id: run.into(),
                seq: i as i64 + 1,
                at_ms: 0,
                event: Event::Warning {
                    text: String::new(),
                },
            })
            .collect()
    }

    async fn fill(cache: &Cache, id: &str, n: usize) {
        cache.lock(id).await.journal = entries(id, n);
    }

    fn kept(cache: &Cache) -> Vec<String> {
        let runs = cache.runs.lock().unwrap();
        runs.iter().map(|(r, _)| r.clone()).collect()
    }

    #[tokio::test]
    async fn the_least_recent_runs_leave_when_the_journals_outgrow_the_budget() {
        let cache = Cache::default();
        fill(&cache, "a", ENTRIES / 2).await;
        fill(&cache, "b", ENTRIES / 4).await;
        fill(&cache, "c", ENTRIES / 4).await;
        assert_eq!(
            kept(&cache),
            ["c", "b", "a"],
            "exactly the budget: all kept"
        );
        // Asked for again: `a` is the most recent now, and `b`'s journal is what is over.
        let a = cache.lock("a").await;
        assert_eq!(a.journal.len(), ENTRIES / 2, "kept as read");
        drop(a);
        // Counted when a run is asked for: `d` had nothing yet, the four were at the budget.
        fill(&cache, "d", 1).await;
        assert_eq!(kept(&cache), ["d", "a", "c", "b"]);
        fill(&cache, "e", 1).await;
        assert_eq!(kept(&cache), ["e", "d", "a", "c"], "the least recent left");
        // A run bigger than the budget stays while it is the one asked for.
        fill(&cache, "huge", ENTRIES * 2).await;
        assert_eq!(cache.lock("huge").await.journal.len(), ENTRIES * 2);
        assert_eq!(kept(&cache), ["huge"]);
        fill(&cache, "f", 1).await;
        assert_eq!(kept(&cache), ["f"], "and leaves once another is asked for");
    }

    #[tokio::test]
    async fn no_more_than_runs_are_kept() {
        let cache = Cache::default();
        for i in 0..RUNS + 3 {
            fill(&cache, &format!("r{i}"), 1).await;
        }
        assert_eq!(kept(&cache).len(), RUNS);
        assert_eq!(kept(&cache)[0], format!("r{}", RUNS + 2));
    }
}
