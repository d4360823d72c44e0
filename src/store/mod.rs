//! Persistence: runs, their journals, abort requests and the faults in flight.
//!
//! One [`Store`] trait made of narrow parts ([`RunStore`], [`JournalStore`], [`AbortStore`],
//! [`FaultStore`], the outbox, ...), two backends: [`sqlite::SqliteStore`] (the default, one
//! file) and [`postgres::PostgresStore`] (several replicas). Each part has one implementation,
//! a macro expanded for both backends with their dialect points as parameters (see `runs.rs`);
//! the same behaviour tests run on both (`tests/store/behaviour.rs`).
//!
//! Nothing about a run lives only in memory: who owns it (a lease), whether someone asked to
//! abort it, and which faults are injected are all rows, so a restarted or different process
//! can take over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::run::{Entry, Event};
use crate::run::{RollbackOutcome, RunSource, RunState, Verdict};

mod common;
pub mod digest;
mod forward;
pub mod gamedays;
pub mod learning;
pub mod outbox;
pub mod postgres;
mod runs;
pub mod schedules;
pub mod slack_edge;
pub mod sqlite;
pub mod wakeups;

pub use digest::DigestStore;
pub use gamedays::GamedayStore;
pub use learning::LearningStore;
pub use outbox::{OutboxDelivery, OutboxQueue, OutboxStore};
pub use schedules::ScheduleStore;
pub use slack_edge::{AuditEntry, EdgeStore};
pub use wakeups::Change;

/// For [`forward_store!`](crate::forward_store), which expands in other crates.
#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported DATABASE_URL `{0}`: use sqlite://PATH (e.g. sqlite://chaosbot.db) or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl(String),
    #[error(
        "cannot open the database at `{url}`: {source}. Check DATABASE_URL: for SQLite, that the \
         file's directory exists and is writable; for Postgres, that the server is running and \
         accepts this user and database"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no run with id `{0}`")]
    NoSuchRun(String),
    #[error("no fault with id {0}")]
    NoSuchFault(i64),
    #[error("run `{id}` cannot go from {from} to {to}")]
    BadTransition {
        id: String,
        from: RunState,
        to: RunState,
    },
    /// `create_run` found a halt in force (checked in the transaction that would create it).
    #[error("a halt is in force since {} (set by {}: {}); nothing was started", .0.since_ms, .0.halted_by, .0.reason)]
    Halted(Box<schedules::Halt>),
    #[error("run `{0}` is owned by another worker (its lease was lost)")]
    LeaseLost(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A run as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub experiment: String,
    pub title: String,
    /// The resolved experiment (JSON of [`crate::spec::model::Experiment`]).
    pub spec: serde_json::Value,
    pub params: BTreeMap<String, String>,
    pub seed: u64,
    pub requested_by: String,
    pub source: RunSource,
    pub state: RunState,
    pub verdict: Option<Verdict>,
    pub rollback: Option<RollbackOutcome>,
    pub reason: Option<String>,
    /// Worker instance that holds the run, while it runs.
    pub owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Ownership epoch: raised each time a worker claims the run; agents fence by it.
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub experiment: String,
    pub title: String,
    pub spec: serde_json::Value,
    pub params: BTreeMap<String, String>,
    pub seed: u64,
    pub requested_by: String,
    pub source: RunSource,
}

/// What an abort request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortScope {
    Run(String),
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbortRequest {
    pub run_id: String,
    pub requested_by: String,
    pub reason: String,
    pub at_ms: i64,
}

/// What `request_abort` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AbortOutcome {
    /// Queued runs closed at once as `aborted` (they never started).
    pub cancelled_queued: Vec<String>,
    /// Running runs that now carry an abort request for their worker to act on.
    pub signalled_running: Vec<String>,
}

/// A fault as persisted *before* it is injected, so a restart can revert it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: i64,
    pub run_id: String,
    pub step: String,
    pub target: String,
    /// Fault family: "network", "process", "resource" or "load".
    pub family: String,
    /// What recovery needs to undo it (family-specific JSON: pids, paths, toxic ids...).
    pub detail: serde_json::Value,
    pub injected_ms: i64,
    pub deadline_ms: i64,
    pub reverted_ms: Option<i64>,
    /// Owner instance of the run when injected.
    pub owner: String,
}

#[derive(Debug, Clone)]
pub struct NewFault {
    pub run_id: String,
    pub step: String,
    pub target: String,
    pub family: String,
    pub detail: serde_json::Value,
    pub deadline_ms: i64,
    pub owner: String,
    /// `Some`: recorded only while `owner` holds the run under this epoch (the runner's
    /// faults); `LeaseLost` otherwise, so an owner that lost the run cannot add to it.
    pub epoch: Option<u64>,
}

/// Who may write a run's side effects: its owner under the epoch it claimed the run with.
/// A write carrying a fence happens only while the run's row still says so, checked in the
/// write's own transaction; otherwise it fails with `LeaseLost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub experiment: Option<String>,
    pub limit: u32,
}

/// The whole database: its backend and health, and every part below. Consumers hold a
/// [`DynStore`]; code that needs one part names that part's trait (a test double forwards the
/// parts it does not intercept, see [`forward_store!`](crate::forward_store)).
#[async_trait::async_trait]
pub trait Store:
    RunStore
    + JournalStore
    + AbortStore
    + FaultStore
    + OutboxStore
    + EdgeStore
    + LearningStore
    + ScheduleStore
    + DigestStore
    + GamedayStore
    + Send
    + Sync
    + 'static
{
    /// Backend name for messages ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    /// Cheap round trip, for health checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Changes other processes make (new runs, aborts, runs done, halts, journal appends),
    /// told at once; `None` when the backend cannot tell (SQLite: one process, which knows
    /// its own).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;
}

/// Runs and their lifecycle: creation, claiming under a lease, transitions, the verdict, and
/// what crash recovery looks for.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts a run in state `queued` and appends `submitted` to its journal, atomically.
    /// `Halted` when a halt is in force (checked in the same transaction).
    async fn create_run(&self, run: NewRun, submitted: Event) -> StoreResult<RunRecord>;

    async fn get_run(&self, id: &str) -> StoreResult<Option<RunRecord>>;

    /// Newest first.
    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>>;

    /// Runs created at or after `from_ms` and before `to_ms`, oldest first (period summaries).
    async fn runs_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<RunRecord>>;

    /// Claims the oldest queued run for `owner` (moving it to `checking_steady_state` with a
    /// lease), unless `max_active` runs are already active across all workers. Safe under
    /// concurrent callers: a run is claimed by exactly one.
    async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>>;

    /// Like [`RunStore::claim_next`], for one named queued run only (a foreground `chaosbot run`
    /// executes its own run, never someone else's). `None` when that run is not queued or
    /// `max_active` runs are active.
    async fn claim_run(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>>;

    /// Extends the lease; `LeaseLost` if another owner holds the run or it is done.
    async fn renew_lease(&self, id: &str, owner: &str, lease: Duration) -> StoreResult<()>;

    /// Moves the run to `to` (checked against the lifecycle) and journals `state_changed`,
    /// atomically. Returns the journal entry.
    async fn transition(&self, id: &str, owner: &str, to: RunState) -> StoreResult<Entry>;

    /// Closes the run: state `done`, verdict, rollback outcome and reason; journals `verdict`.
    async fn finish_run(
        &self,
        id: &str,
        verdict: Verdict,
        rollback: RollbackOutcome,
        reason: &str,
    ) -> StoreResult<Entry>;

    /// Active runs (not queued, not done) whose lease ended before `now_ms`, or whose owner is
    /// one of `dead_owners`: candidates for crash recovery.
    async fn orphaned_runs(
        &self,
        now_ms: i64,
        dead_owners: &[String],
    ) -> StoreResult<Vec<RunRecord>>;

    /// Owners of all active runs (to check which are still alive).
    async fn active_owners(&self) -> StoreResult<Vec<String>>;

    /// Takes over an orphaned run for recovery: `owner` holds it from now on under a raised
    /// epoch (so the old owner's fenced writes and its agents' renewals are refused), with a
    /// lease timed on the database's clock. `None` when the run is no longer active under
    /// `seen_epoch` (another recoverer took it first, or it finished).
    async fn adopt_orphan(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        seen_epoch: u64,
    ) -> StoreResult<Option<RunRecord>>;

    /// Like [`RunStore::finish_run`], only while `fence` still holds the run.
    async fn finish_fenced(
        &self,
        id: &str,
        fence: &Fence,
        verdict: Verdict,
        rollback: RollbackOutcome,
        reason: &str,
    ) -> StoreResult<Entry>;

    /// The clock leases are timed on, in ms since the epoch: the database server's on
    /// Postgres (replicas on several hosts agree on it), this host's on SQLite.
    async fn clock_ms(&self) -> StoreResult<i64>;

    /// The active runs holding any of `targets` (a target is held by one active run at a
    /// time; queued runs on it wait), by target.
    async fn target_holders(&self, targets: &[String]) -> StoreResult<Vec<TargetHold>>;

    /// Where a queued run stands: the active runs holding its targets, and how many queued
    /// runs sharing a target with it are ahead of it.
    async fn queue_place(&self, id: &str) -> StoreResult<QueuePlace>;

    /// Closes a run that is still queued as `failed` with `reason` (it never started);
    /// `false` when it was no longer queued (a worker took it, or it was aborted).
    async fn fail_queued(&self, id: &str, reason: &str) -> StoreResult<bool>;

    /// Ids of the runs queued since before `created_before_ms`, oldest first.
    async fn queued_before(&self, created_before_ms: i64) -> StoreResult<Vec<String>>;
}

/// An active run holding a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHold {
    pub target: String,
    pub run_id: String,
    pub requested_by: String,
    pub source: RunSource,
}

/// Where a queued run stands in the queue of its targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePlace {
    pub holders: Vec<TargetHold>,
    /// Queued runs ahead of it on its targets (0: it is next).
    pub ahead: u64,
}

/// Each run's journal: what happened, in order.
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync {
    /// Appends one event to the run's journal (sequence numbers are dense, from 1).
    async fn append(&self, id: &str, event: &Event) -> StoreResult<Entry>;

    /// Like [`JournalStore::append`], only while `fence` still holds the run (checked in the
    /// same transaction); `LeaseLost` otherwise.
    async fn append_fenced(&self, id: &str, fence: &Fence, event: &Event) -> StoreResult<Entry>;

    /// The run's journal from `after_seq` on (0 = all), in order.
    async fn journal(&self, id: &str, after_seq: i64) -> StoreResult<Vec<Entry>>;
}

/// Abort requests, for a worker to act on.
#[async_trait::async_trait]
pub trait AbortStore: Send + Sync {
    /// Records an abort request. Queued runs are closed at once as `aborted`; running ones get
    /// a pending request (and an `abort_requested` journal entry) for their worker.
    async fn request_abort(
        &self,
        scope: AbortScope,
        requested_by: &str,
        reason: &str,
    ) -> StoreResult<AbortOutcome>;

    /// The first abort request for the run, if any.
    async fn pending_abort(&self, id: &str) -> StoreResult<Option<AbortRequest>>;
}

/// Faults in flight, persisted before injection so a restart can revert them.
#[async_trait::async_trait]
pub trait FaultStore: Send + Sync {
    /// Persists a fault before injection; returns its id.
    async fn record_fault(&self, fault: NewFault) -> StoreResult<i64>;

    async fn mark_fault_reverted(&self, fault_id: i64) -> StoreResult<()>;

    /// Faults of the run not yet marked reverted.
    async fn open_faults(&self, run_id: &str) -> StoreResult<Vec<FaultRecord>>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store named by a `DATABASE_URL` and applies its migrations.
pub async fn open(url: &str) -> StoreResult<DynStore> {
    open_with_pool(url, None).await
}

/// Like [`open`], with the most connections a Postgres store keeps (`database_pool`; SQLite
/// is one file in one process and keeps its own small pool).
pub async fn open_with_pool(url: &str, pool: Option<u32>) -> StoreResult<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = pool.unwrap_or(postgres::DEFAULT_POOL);
        Ok(Arc::new(
            postgres::PostgresStore::open_with_pool(url, pool).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl(common::redact(url)))
    }
}
