//! The run engine: lifecycle state machine, worker pool, abort handling and crash recovery.
//!
//! Submitting writes a `queued` run row and returns its id at once. Worker tasks claim queued
//! runs from the store (so several processes can share one database), execute them through
//! [`runner`], and append every step to the run's journal. Everything a run's owner must know
//! (lease, abort requests, faults in flight) is in the store; in-process channels only make
//! it faster (live views, the local abort fast path).

pub use crate::run::instance;
pub mod agents;
pub mod recovery;
pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::config::GuardRails;
use crate::faults::{FaultFamily, TargetRegistry};
use crate::run::{Entry, Event};
use crate::run::{RollbackOutcome, RunSource, RunState, Verdict};
use crate::spec::model::Experiment;
use crate::store::{
    AbortOutcome, AbortScope, Change, DynStore, Fence, NewRun, RunRecord, StoreError,
};
use instance::InstanceId;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "experiment `{name}` may run for up to {wanted}, above the guard rail of {limit}; shorten it or raise guard_rails.max_run_duration"
    )]
    TooLong {
        name: String,
        wanted: String,
        limit: String,
    },
    #[error("the engine is shutting down; no new runs are accepted")]
    ShuttingDown,
}

/// Timing knobs; the defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub guard_rails: GuardRails,
    /// How long a claimed run stays ours without a heartbeat.
    pub lease: Duration,
    /// How often a running run looks for abort requests made by other processes.
    pub abort_poll: Duration,
    /// How often idle workers look for queued runs submitted by other processes.
    pub idle_poll: Duration,
    /// Extra time a fault may outlive its step before its own deadline removes it.
    pub deadline_grace: Duration,
    /// Execute only runs submitted through this engine (a foreground `chaosbot run`), never
    /// runs that other processes queued in the same store.
    pub only_own_runs: bool,
    /// Where network, process and resource faults are put in place: `None` inside this
    /// process (library tests, embedding); `Some` through agents (the binary's default).
    pub agents: Option<Arc<agents::AgentRouter>>,
}

impl EngineOptions {
    pub fn new(guard_rails: GuardRails) -> Self {
        EngineOptions {
            guard_rails,
            lease: Duration::from_secs(15),
            abort_poll: Duration::from_millis(250),
            idle_poll: Duration::from_millis(500),
            deadline_grace: Duration::from_secs(3),
            only_own_runs: false,
            agents: None,
        }
    }
}

/// Who asked for a run, and from where.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub requested_by: String,
    pub source: RunSource,
    /// Replays a run's random decisions when given; a fresh random seed otherwise.
    pub seed: Option<u64>,
}

pub struct Engine {
    store: DynStore,
    targets: TargetRegistry,
    opts: EngineOptions,
    instance: InstanceId,
    events: broadcast::Sender<Entry>,
    /// Halt tokens of the runs this process executes (the local abort fast path).
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The epoch of each run this process holds (executing or recovering it): its journal
    /// entries and verdict are written only while the store still says so.
    fences: Mutex<HashMap<String, u64>>,
    wake: Notify,
    shutdown: CancellationToken,
    shutdown_reason: Mutex<Option<String>>,
    tracker: TaskTracker,
    family_override: Option<Arc<dyn FaultFamily>>,
    /// Runs submitted here and not claimed yet (used with `only_own_runs`).
    own_queue: Mutex<Vec<String>>,
    /// How often the store is polled for aborts and queued runs: as the options say, or only
    /// as a slow sweep behind the store's wake-ups when it tells changes (Postgres).
    abort_poll: Duration,
    idle_poll: Duration,
}

/// The sweep behind the store's wake-ups: they can be lost while a listener reconnects.
const SWEEP_BEHIND_WAKEUPS: Duration = Duration::from_secs(2);

impl Engine {
    pub fn new(store: DynStore, targets: TargetRegistry, opts: EngineOptions) -> Arc<Engine> {
        Self::build(store, targets, opts, None)
    }

    /// Like [`Engine::new`], with every fault step executed by `family` (tests use it to
    /// exercise failure paths, e.g. a step that panics after injecting).
    pub fn with_family(
        store: DynStore,
        targets: TargetRegistry,
        opts: EngineOptions,
        family: Arc<dyn FaultFamily>,
    ) -> Arc<Engine> {
        Self::build(store, targets, opts, Some(family))
    }

    fn build(
        store: DynStore,
        targets: TargetRegistry,
        opts: EngineOptions,
        family_override: Option<Arc<dyn FaultFamily>>,
    ) -> Arc<Engine> {
        let (events, _) = broadcast::channel(4096);
        let (abort_poll, idle_poll) = match store.changes() {
            Some(_) => (
                opts.abort_poll.max(SWEEP_BEHIND_WAKEUPS),
                opts.idle_poll.max(SWEEP_BEHIND_WAKEUPS),
            ),
            None => (opts.abort_poll, opts.idle_poll),
        };
        Arc::new(Engine {
            abort_poll,
            idle_poll,
            store,
            targets,
            opts,
            instance: InstanceId::current(),
            events,
            running: Mutex::new(HashMap::new()),
            fences: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            shutdown_reason: Mutex::new(None),
            tracker: TaskTracker::new(),
            family_override,
            own_queue: Mutex::new(Vec::new()),
        })
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn targets(&self) -> &TargetRegistry {
        &self.targets
    }

    /// The agent router, when faults go through agents.
    pub fn agents(&self) -> Option<&Arc<agents::AgentRouter>> {
        self.opts.agents.as_ref()
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Live journal entries of every run this process touches.
    pub fn subscribe(&self) -> broadcast::Receiver<Entry> {
        self.events.subscribe()
    }

    /// Recovers runs left behind by dead processes, then starts the worker pool and a periodic
    /// sweep that recovers runs whose owner stopped renewing its lease.
    pub async fn start(self: &Arc<Self>) -> Result<Vec<String>, EngineError> {
        let recovered = recovery::recover_orphans(self).await?;
        for n in 0..self.opts.guard_rails.worker_pool_size {
            let eng = Arc::clone(self);
            self.tracker.spawn(
                async move { eng.worker_loop().await }.instrument(tracing::info_span!("worker", n)),
            );
        }
        let eng = Arc::clone(self);
        self.tracker.spawn(async move { eng.sweep_loop().await });
        if let Some(changes) = self.store.changes() {
            let eng = Arc::clone(self);
            self.tracker
                .spawn(async move { eng.wake_loop(changes).await });
        }
        Ok(recovered)
    }

    /// Queues a run and returns its id at once.
    pub async fn submit(
        &self,
        exp: &Experiment,
        req: SubmitRequest,
    ) -> Result<String, EngineError> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let limit = self.opts.guard_rails.max_run_duration;
        let wanted = exp.method_duration() + exp.recovery_timeout;
        if wanted > limit {
            return Err(EngineError::TooLong {
                name: exp.name.clone(),
                wanted: humantime::format_duration(wanted).to_string(),
                limit: humantime::format_duration(limit).to_string(),
            });
        }
        let seed = req.seed.unwrap_or_else(rand::random);
        let id = new_run_id();
        let spec = serde_json::to_value(exp)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode experiment: {e}")))?;
        let submitted = Event::Submitted {
            experiment: exp.name.clone(),
            title: exp.title.clone(),
            requested_by: req.requested_by.clone(),
            source: req.source.clone(),
            params: exp.params.clone(),
            seed,
            targets: exp.targets(),
        };
        self.store
            .create_run(
                NewRun {
                    id: id.clone(),
                    experiment: exp.name.clone(),
                    title: exp.title.clone(),
                    spec,
                    params: exp.params.clone(),
                    seed,
                    requested_by: req.requested_by,
                    source: req.source,
                },
                submitted,
            )
            .await?;
        if self.opts.only_own_runs {
            lock(&self.own_queue).push(id.clone());
        }
        self.publish_tail(&id, 1).await;
        info!(run_id = %id, experiment = %exp.name, seed, "run queued");
        self.wake.notify_one();
        Ok(id)
    }

    /// Aborts one run or all: queued ones close at once; running ones revert. The request is
    /// a row in the store, so the process that runs it sees it even if it is not this one.
    pub async fn abort(
        &self,
        scope: AbortScope,
        requested_by: &str,
        reason: &str,
    ) -> Result<AbortOutcome, EngineError> {
        let outcome = self
            .store
            .request_abort(scope, requested_by, reason)
            .await?;
        let tokens: Vec<CancellationToken> = {
            let running = lock(&self.running);
            outcome
                .signalled_running
                .iter()
                .filter_map(|id| running.get(id).cloned())
                .collect()
        };
        for t in tokens {
            t.cancel();
        }
        for id in &outcome.cancelled_queued {
            self.publish_tail(id, 2).await;
        }
        for id in &outcome.signalled_running {
            self.publish_tail(id, 1).await;
        }
        Ok(outcome)
    }

    /// Waits until the run is done and returns its final record.
    pub async fn wait(&self, run_id: &str) -> Result<RunRecord, EngineError> {
        let mut rx = self.subscribe();
        loop {
            match self.store.get_run(run_id).await? {
                None => return Err(StoreError::NoSuchRun(run_id.to_string()).into()),
                Some(r) if r.state == RunState::Done => return Ok(r),
                Some(_) => {}
            }
            // Woken by our own verdict entry, or by polling (another process may run it).
            let deadline = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    msg = rx.recv() => match msg {
                        Ok(e) if e.run_id == run_id && matches!(e.event, Event::Verdict { .. }) => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        }
    }

    /// Stops accepting runs, halts the running ones (they revert and journal), waits for them,
    /// and stops the proxies. `reason` ends up in each halted run's verdict.
    pub async fn shutdown(&self, reason: &str, grace: Duration) {
        {
            let mut r = lock(&self.shutdown_reason);
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "some runs did not finish reverting within {grace:?}; their faults end at their own deadlines"
            );
        }
        self.targets.shutdown().await;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    fn shutdown_reason(&self) -> String {
        lock(&self.shutdown_reason)
            .clone()
            .unwrap_or_else(|| "chaosbot is shutting down".into())
    }

    async fn worker_loop(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            match self.claim().await {
                Ok(Some(run)) => {
                    let halt = CancellationToken::new();
                    lock(&self.running).insert(run.id.clone(), halt.clone());
                    self.hold(&run.id, run.epoch);
                    self.publish_tail(&run.id, 1).await;
                    let id = run.id.clone();
                    runner::execute(&self, run, halt).await;
                    self.release(&id);
                    lock(&self.running).remove(&id);
                    // A slot is free: another worker may now claim under max_concurrent_runs.
                    self.wake.notify_one();
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.idle_poll) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim runs from the store; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// The next run for this engine: the oldest queued one, or (with `only_own_runs`) the
    /// oldest one submitted here.
    async fn claim(&self) -> Result<Option<RunRecord>, StoreError> {
        let owner = self.instance.to_string();
        let (lease, max) = (self.opts.lease, self.opts.guard_rails.max_concurrent_runs);
        if !self.opts.only_own_runs {
            return self.store.claim_next(&owner, lease, max).await;
        }
        let candidates: Vec<String> = lock(&self.own_queue).clone();
        for id in candidates {
            let claimed = self.store.claim_run(&id, &owner, lease, max).await?;
            let still_queued = match &claimed {
                Some(_) => false,
                None => self
                    .store
                    .get_run(&id)
                    .await?
                    .is_some_and(|r| r.state == RunState::Queued),
            };
            if !still_queued {
                lock(&self.own_queue).retain(|q| q != &id);
            }
            if claimed.is_some() {
                return Ok(claimed);
            }
        }
        Ok(None)
    }

    /// Acts on what other processes changed as soon as the store tells: a queued run or a
    /// freed slot wakes a worker, an abort halts the run here at once.
    async fn wake_loop(self: Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = self.shutdown.cancelled() => return,
            };
            match change {
                Ok(Change::RunQueued(_) | Change::RunDone(_) | Change::Halt) => {
                    self.wake.notify_one();
                }
                Ok(Change::AbortRequested(id)) => {
                    let token = lock(&self.running).get(&id).cloned();
                    if let Some(t) = token {
                        info!(run_id = %id, "abort requested elsewhere; halting");
                        t.cancel();
                    }
                }
                Ok(Change::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.wake.notify_one();
                    self.halt_aborted().await;
                }
                // Journal appends are for the live pages.
                Ok(Change::Entry { .. }) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Halts every run executing here that has an abort request (after missed wake-ups).
    async fn halt_aborted(&self) {
        let running: Vec<(String, CancellationToken)> = lock(&self.running)
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        for (id, token) in running {
            match self.store.pending_abort(&id).await {
                Ok(Some(_)) => token.cancel(),
                Ok(None) => {}
                Err(e) => warn!(run_id = %id, error = %e, "cannot read abort requests"),
            }
        }
    }

    async fn sweep_loop(self: Arc<Self>) {
        // A dead owner's runs are noticed well within one lease of its death: at most a
        // quarter lease after its lease ran out, or at once when its process is known dead.
        let every = (self.opts.lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
            if let Err(e) = recovery::recover_orphans(&self).await {
                warn!(error = %e, "recovery sweep failed");
            }
            if let Err(e) = self.expire_queued().await {
                warn!(error = %e, "cannot close runs queued past guard_rails.max_queue_wait");
            }
        }
    }

    /// Closes as `failed` the runs queued for longer than `guard_rails.max_queue_wait`, saying
    /// what they waited for.
    async fn expire_queued(&self) -> Result<(), StoreError> {
        let limit = self.opts.guard_rails.max_queue_wait;
        let before = crate::run::now_ms() - i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
        for id in self.store.queued_before(before).await? {
            let place = self.store.queue_place(&id).await?;
            let waited_for = if place.holders.is_empty() {
                "a free slot (guard_rails.max_concurrent_runs)".to_string()
            } else {
                place
                    .holders
                    .iter()
                    .map(|h| format!("{} (holds {})", h.run_id, h.target))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let reason = format!(
                "queued for more than {} behind {waited_for}; nothing was started. Start it again later, abort what holds the target, or raise guard_rails.max_queue_wait",
                humantime::format_duration(limit)
            );
            if self.store.fail_queued(&id, &reason).await? {
                info!(run_id = %id, "queued run expired");
                self.publish_tail(&id, 1).await;
            }
        }
        Ok(())
    }

    /// From now on this process writes `run_id`'s journal and verdict under `epoch` only.
    pub(crate) fn hold(&self, run_id: &str, epoch: u64) {
        lock(&self.fences).insert(run_id.to_string(), epoch);
    }

    pub(crate) fn release(&self, run_id: &str) {
        lock(&self.fences).remove(run_id);
    }

    /// The fence of a run this process holds.
    fn fence(&self, run_id: &str) -> Option<Fence> {
        lock(&self.fences).get(run_id).map(|&epoch| Fence {
            owner: self.instance.to_string(),
            epoch,
        })
    }

    /// Appends to the journal and tells live subscribers. For a run this process holds, only
    /// while it still holds it (`LeaseLost` once another process took it over).
    pub(crate) async fn append(&self, run_id: &str, event: Event) -> Result<Entry, StoreError> {
        let entry = match self.fence(run_id) {
            Some(fence) => self.store.append_fenced(run_id, &fence, &event).await?,
            None => self.store.append(run_id, &event).await?,
        };
        let _ = self.events.send(entry.clone());
        Ok(entry)
    }

    pub(crate) async fn transition(&self, run_id: &str, to: RunState) -> Result<Entry, StoreError> {
        let entry = self
            .store
            .transition(run_id, &self.instance.to_string(), to)
            .await?;
        let _ = self.events.send(entry.clone());
        Ok(entry)
    }

    pub(crate) async fn finish(
        &self,
        run_id: &str,
        verdict: Verdict,
        rollback: RollbackOutcome,
        reason: &str,
    ) -> Result<Entry, StoreError> {
        let entry = match self.fence(run_id) {
            Some(fence) => {
                self.store
                    .finish_fenced(run_id, &fence, verdict, rollback, reason)
                    .await?
            }
            None => {
                self.store
                    .finish_run(run_id, verdict, rollback, reason)
                    .await?
            }
        };
        metrics::counter!("chaosbot_runs_total", "verdict" => verdict.as_str(), "rollback" => rollback.as_str())
            .increment(1);
        let _ = self.events.send(entry.clone());
        Ok(entry)
    }

    /// Sends the last `n` journal entries the store wrote on its own (claims, aborts).
    async fn publish_tail(&self, run_id: &str, n: usize) {
        if let Ok(entries) = self.store.journal(run_id, 0).await {
            let skip = entries.len().saturating_sub(n);
            for e in entries.into_iter().skip(skip) {
                let _ = self.events.send(e);
            }
        }
    }
}

/// Short, readable, unguessable enough: `r-` and 10 base-32 characters.
fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut id = String::from("r-");
    for _ in 0..10 {
        let i = rand::random_range(0..ALPHABET.len());
        id.push(char::from(ALPHABET[i]));
    }
    id
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (the maps it
/// guards stay consistent: every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
