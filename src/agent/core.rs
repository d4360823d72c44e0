//! [`AgentCore`]: the agent's fault table and its rules, without any transport.
//!
//! - A target is held by one run at a time: another run's apply is refused naming the holder.
//! - Each run's faults carry the controller's ownership epoch: a lower epoch is refused, a
//!   higher one takes the run's faults over.
//! - Every fault goes away by itself at its deadline or when its lease lapses, whichever comes
//!   first (a sweeper checks every 100 ms); `shutdown` reverts everything. Each revert is
//!   journaled, logged with the run id and counted.
//! - Reverted faults are remembered (why and when) for [`GONE_MEMORY`], so a controller back
//!   from a partition learns what happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{error, info, warn};

use super::config::AgentConfig;
use super::journal::{ApplyEntry, Entry, Journal};
use super::protocol::{
    self, Applied, FaultList, FaultState, FaultView, Gone, Hello, LeaseState, Renewed, Reverted,
    TargetDecl,
};
use crate::faults::{ActiveFault, InjectContext, TargetRegistry};
use crate::run::Event;
use crate::spec::model::FaultSpec;
use crate::store::FaultRecord;

mod targets;

/// How long a reverted fault (and a run's last epoch) is remembered.
pub const GONE_MEMORY: Duration = Duration::from_secs(600);
/// The longest deadline or lease a request may ask for (no experiment runs that long).
pub const MAX_TERM: Duration = Duration::from_secs(24 * 3600);
/// How often the sweeper looks for deadlines and lapsed leases.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

pub const REASON_DEADLINE: &str = "deadline";
pub const REASON_LEASE: &str = "lease expired";
pub const REASON_REQUESTED: &str = "revert requested";
pub const REASON_STOPPING: &str = "agent stopping";
pub const REASON_REPLAYED: &str = "replayed at start";

pub const METRIC_FAULTS: &str = "chaosbot_agent_faults_in_place";
pub const METRIC_APPLIED: &str = "chaosbot_agent_faults_applied_total";
pub const METRIC_RENEWALS: &str = "chaosbot_agent_lease_renewals_total";
pub const METRIC_REVERTS: &str = "chaosbot_agent_reverts_total";
pub const METRIC_REVERT_FAILURES: &str = "chaosbot_agent_revert_failures_total";
pub const METRIC_REFUSALS: &str = "chaosbot_agent_refusals_total";
pub const METRIC_REPLAYED: &str = "chaosbot_agent_journal_replayed_total";

/// A request the agent does not carry out: one of the protocol's `CODE_*` and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub holder: Option<String>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        let r = Refusal {
            code,
            message: message.into(),
            holder: None,
        };
        metrics::counter!(METRIC_REFUSALS, "code" => code).increment(1);
        r
    }

    pub fn body(&self) -> protocol::ErrorBody {
        protocol::ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            holder: self.holder.clone(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The unix-ms time of a future instant.
fn ms_at(at: Instant) -> i64 {
    let left = at.saturating_duration_since(Instant::now());
    now_ms().saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX))
}

struct Held {
    view: FaultView,
    active: Box<dyn ActiveFault>,
    deadline: Instant,
    lease_until: Instant,
    /// Events the fault sent, not yet handed to the controller.
    reported: UnboundedReceiver<Event>,
}

/// Everything waiting in a fault's event buffer.
fn drain(rx: &mut UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push(ev);
    }
    out
}

struct State {
    faults: HashMap<String, Held>,
    gone: HashMap<String, (Gone, Instant)>,
    /// The highest epoch seen per run, and when it was last used.
    epochs: HashMap<String, (u64, Instant)>,
    /// What controllers declared to the local agent, by target name.
    declared: HashMap<String, TargetDecl>,
    /// Events of reverted faults the controller has not collected yet (a revert or renewal
    /// takes them), forgotten with the fault's `gone` entry.
    leftover: HashMap<String, Vec<Event>>,
    last_request: Instant,
    /// Reverts that failed since start: their journal entries must stay for the next start.
    failed_reverts: usize,
}

struct Inner {
    name: String,
    on_demand: bool,
    own_targets: Vec<String>,
    targets: TargetRegistry,
    state: Mutex<State>,
    journal: std::sync::Mutex<Journal>,
}

/// The fault table. Cheap to clone (shared).
#[derive(Clone)]
pub struct AgentCore {
    inner: Arc<Inner>,
}

impl AgentCore {
    /// Replays the journal's unfinished faults (undoing them), empties it, starts every
    /// declared proxy and the sweeper.
    pub async fn start(
        cfg: &AgentConfig,
        mut journal: Journal,
        pending: Vec<ApplyEntry>,
    ) -> anyhow::Result<AgentCore> {
        use anyhow::Context as _;
        let control_port = match &cfg.endpoint {
            super::config::Endpoint::Tcp(addr) => Some(addr.port()),
            super::config::Endpoint::Unix(_) => None,
        };
        crate::faults::hostnet::set_owner(&cfg.name, control_port);
        let mut gone = HashMap::new();
        for p in pending {
            let record = FaultRecord {
                id: 0,
                run_id: p.run_id.clone(),
                step: p.step.clone(),
                target: p.target.clone(),
                family: p.family.clone(),
                detail: p.detail.clone(),
                injected_ms: 0,
                deadline_ms: p.deadline_ms,
                reverted_ms: None,
                owner: cfg.name.clone(),
            };
            match crate::faults::family_named(&p.family) {
                Some(family) => match family.recover(&record).await {
                    Ok(done) => {
                        info!(run_id = %p.run_id, fault_id = %p.fault_id, step = %p.step, target = %p.target, %done, "replayed a fault left by the previous agent")
                    }
                    Err(e) => {
                        error!(run_id = %p.run_id, fault_id = %p.fault_id, target = %p.target, error = %e, "could not undo a fault left by the previous agent; check the target by hand")
                    }
                },
                None => {
                    error!(run_id = %p.run_id, fault_id = %p.fault_id, family = %p.family, "journal names an unknown fault family; check the target by hand")
                }
            }
            metrics::counter!(METRIC_REPLAYED).increment(1);
            metrics::counter!(METRIC_REVERTS, "reason" => REASON_REPLAYED).increment(1);
            gone.insert(
                p.fault_id,
                (
                    Gone {
                        reason: REASON_REPLAYED.into(),
                        at_ms: now_ms(),
                    },
                    Instant::now(),
                ),
            );
        }
        if !gone.is_empty() {
            warn!(
                count = gone.len(),
                "replayed the revert journal: faults of a previous agent were undone"
            );
        }
        // Host network tables a kill -9 left behind, journaled or not (none is in place yet).
        if cfg.targets.targets.host.iter().any(|h| h.network.is_some()) {
            crate::faults::hostnet::sweep_strays().await;
        }
        journal.compact()?;
        let targets = TargetRegistry::new(Arc::new(cfg.targets.clone()));
        targets
            .start_all()
            .await
            .context("cannot start the proxies of the declared targets")?;
        metrics::gauge!(METRIC_FAULTS).set(0.0);
        let core = AgentCore {
            inner: Arc::new(Inner {
                name: cfg.name.clone(),
                on_demand: cfg.on_demand,
                own_targets: cfg.target_names(),
                targets,
                state: Mutex::new(State {
                    faults: HashMap::new(),
                    gone,
                    epochs: HashMap::new(),
                    declared: HashMap::new(),
                    leftover: HashMap::new(),
                    last_request: Instant::now(),
                    failed_reverts: 0,
                }),
                journal: std::sync::Mutex::new(journal),
            }),
        };
        let weak = Arc::downgrade(&core.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                AgentCore { inner }.sweep().await;
            }
        });
        Ok(core)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The targets the agent serves (the Toxiproxy API adds and removes proxies here).
    pub fn targets(&self) -> &TargetRegistry {
        &self.inner.targets
    }

    /// Notes a request (the local agent exits after a quiet spell).
    pub async fn touch(&self) {
        self.inner.state.lock().await.last_request = Instant::now();
    }

    /// How long since the last request, when no fault is held (`None` while one is).
    pub async fn idle_for(&self) -> Option<Duration> {
        let st = self.inner.state.lock().await;
        st.faults.is_empty().then(|| st.last_request.elapsed())
    }

    pub async fn hello(&self) -> Hello {
        Hello {
            agent: self.inner.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: protocol::PROTOCOL_VERSION,
            on_demand: self.inner.on_demand,
            targets: self.inner.own_targets.clone(),
            faults: self.faults().await.faults,
        }
    }

    pub async fn faults(&self) -> FaultList {
        let st = self.inner.state.lock().await;
        let mut faults: Vec<FaultView> = st.faults.values().map(|h| h.view.clone()).collect();
        faults.sort_by_key(|a| a.applied_ms);
        FaultList { faults }
    }

    /// The run's epoch rule: lower is refused, higher takes the run's faults over.
    fn check_epoch(st: &mut State, run_id: &str, epoch: u64) -> Result<(), Refusal> {
        let known = st.epochs.get(run_id).map(|(e, _)| *e).unwrap_or(0);
        if epoch < known {
            return Err(Refusal::new(
                protocol::CODE_STALE_EPOCH,
                format!(
                    "run `{run_id}` is now held under epoch {known} and this request carries {epoch}: another controller took the run over"
                ),
            ));
        }
        if epoch > known {
            for h in st.faults.values_mut().filter(|h| h.view.run_id == run_id) {
                h.view.epoch = epoch;
            }
            if known > 0 {
                info!(
                    run_id,
                    from = known,
                    to = epoch,
                    "a controller took the run over"
                );
            }
        }
        st.epochs
            .insert(run_id.to_string(), (epoch, Instant::now()));
        Ok(())
    }

    pub async fn apply(&self, req: &protocol::Apply) -> Result<Applied, Refusal> {
        let bad = |m: String| Refusal::new(protocol::CODE_BAD_REQUEST, m);
        if let FaultSpec::Load { url, .. } = &req.step.fault {
            self.check_load(&req.step.name, &req.step.target, url)?;
        }
        if req.fault_id.is_empty() || req.run_id.is_empty() {
            return Err(bad("apply needs a run_id and a fault_id".into()));
        }
        term("ttl_ms", req.ttl_ms)?;
        term("lease_ms", req.lease_ms)?;
        let mut st = self.inner.state.lock().await;
        // First, so a stale controller's retry learns it lost the run.
        Self::check_epoch(&mut st, &req.run_id, req.epoch)?;
        if let Some(h) = st.faults.get(&req.fault_id) {
            if h.view.run_id != req.run_id {
                return Err(bad(format!(
                    "fault id `{}` is taken by run `{}`; choose a fault id unique to the run",
                    req.fault_id, h.view.run_id
                )));
            }
            // A retried apply: the same answer, nothing touched again.
            return Ok(Applied {
                fault_id: req.fault_id.clone(),
                summary: h.view.summary.clone(),
                deadline_ms: h.view.deadline_ms,
                lease_until_ms: h.view.lease_until_ms,
            });
        }
        if let Some((g, _)) = st.gone.get(&req.fault_id) {
            return Err(bad(format!(
                "fault `{}` was already applied and then reverted ({}, at {} ms); use a new fault id to apply it again",
                req.fault_id, g.reason, g.at_ms
            )));
        }
        if let Some(decl) = &req.declare {
            if decl.name() != req.step.target {
                return Err(bad(format!(
                    "the declaration names `{}` but step `{}` acts on `{}`",
                    decl.name(),
                    req.step.name,
                    req.step.target
                )));
            }
            self.declare(&mut st, decl)?;
        }
        let target = req.step.target.clone();
        if let Some(h) = st
            .faults
            .values()
            .find(|h| h.view.target == target && h.view.run_id != req.run_id)
        {
            let holder = h.view.run_id.clone();
            let mut r = Refusal::new(
                protocol::CODE_HELD,
                format!(
                    "target `{target}` is held by run `{holder}` (fault `{}`); wait for it to end or abort it",
                    h.view.fault_id
                ),
            );
            r.holder = Some(holder);
            return Err(r);
        }
        if self.inner.targets.config().target_kind(&target).is_none() {
            return Err(Refusal::new(
                protocol::CODE_NOT_FOUND,
                format!(
                    "agent `{}` has no target `{target}`; declare it in the agent's config",
                    self.inner.name
                ),
            ));
        }

        let family = crate::faults::family_for(&req.step.fault);
        // What the fault reports (a load's numbers) waits here for the next renewal.
        let (events, reported) = tokio::sync::mpsc::unbounded_channel();
        let now = Instant::now();
        let deadline = now + Duration::from_millis(req.ttl_ms);
        let ctx = InjectContext {
            targets: &self.inner.targets,
            run_id: &req.run_id,
            seed: req.seed,
            deadline,
            events,
        };
        let fault_err =
            |e: crate::faults::FaultError| Refusal::new(protocol::CODE_FAULT, e.to_string());
        let detail = family.prepare(&req.step, &ctx).await.map_err(fault_err)?;
        let deadline_ms = ms_at(deadline);
        self.journal(&Entry::Apply(ApplyEntry {
            fault_id: req.fault_id.clone(),
            run_id: req.run_id.clone(),
            epoch: req.epoch,
            step: req.step.name.clone(),
            target: target.clone(),
            family: family.name().to_string(),
            detail: detail.clone(),
            deadline_ms,
        }))
        .map_err(|e| Refusal::new(protocol::CODE_FAULT, format!("{e}; nothing was touched")))?;
        let active = match family.inject(&req.step, &ctx, &detail).await {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("inject failed: {e}");
                if let Err(je) = self.journal(&Entry::Done {
                    fault_id: req.fault_id.clone(),
                    reason,
                    at_ms: now_ms(),
                }) {
                    error!(run_id = %req.run_id, error = %je, "cannot journal a failed inject");
                }
                return Err(fault_err(e));
            }
        };
        let lease_until = Instant::now() + Duration::from_millis(req.lease_ms);
        let view = FaultView {
            fault_id: req.fault_id.clone(),
            run_id: req.run_id.clone(),
            epoch: st
                .epochs
                .get(&req.run_id)
                .map(|(e, _)| *e)
                .unwrap_or(req.epoch),
            step: req.step.name.clone(),
            target,
            family: family.name().to_string(),
            summary: active.summary(),
            applied_ms: now_ms(),
            deadline_ms,
            lease_until_ms: ms_at(lease_until),
        };
        info!(run_id = %view.run_id, fault_id = %view.fault_id, summary = %view.summary, ttl_ms = req.ttl_ms, lease_ms = req.lease_ms, "fault in place");
        metrics::counter!(METRIC_APPLIED, "family" => family.name()).increment(1);
        let applied = Applied {
            fault_id: view.fault_id.clone(),
            summary: view.summary.clone(),
            deadline_ms: view.deadline_ms,
            lease_until_ms: view.lease_until_ms,
        };
        st.faults.insert(
            req.fault_id.clone(),
            Held {
                view,
                active,
                deadline,
                lease_until,
                reported,
            },
        );
        metrics::gauge!(METRIC_FAULTS).set(st.faults.len() as f64);
        Ok(applied)
    }

    pub async fn renew(&self, req: &protocol::Renew) -> Result<Renewed, Refusal> {
        term("lease_ms", req.lease_ms)?;
        let mut st = self.inner.state.lock().await;
        Self::check_epoch(&mut st, &req.run_id, req.epoch)?;
        let now = Instant::now();
        // A lease that lapsed before this renewal arrived (the agent was stalled, or the
        // request sat in a buffer) is over: revert now rather than bring the fault back to life.
        let lapsed: Vec<(String, &'static str)> = req
            .fault_ids
            .iter()
            .filter_map(|id| {
                let h = st.faults.get(id).filter(|h| h.view.run_id == req.run_id)?;
                if h.deadline <= now {
                    Some((id.clone(), REASON_DEADLINE))
                } else if h.lease_until <= now {
                    Some((id.clone(), REASON_LEASE))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in lapsed {
            self.revert_locked(&mut st, &id, reason).await;
        }
        let lease_until = now + Duration::from_millis(req.lease_ms);
        let mut faults = Vec::new();
        let mut events = Vec::new();
        for id in &req.fault_ids {
            let state = match st.faults.get_mut(id) {
                Some(h) if h.view.run_id == req.run_id => {
                    h.lease_until = lease_until;
                    h.view.lease_until_ms = ms_at(lease_until);
                    metrics::counter!(METRIC_RENEWALS).increment(1);
                    events = drain(&mut h.reported);
                    FaultState::Held {
                        lease_until_ms: h.view.lease_until_ms,
                    }
                }
                // Another run's fault: this run knows nothing of it.
                Some(_) => FaultState::Unknown,
                None => match st.gone.get(id) {
                    Some((g, _)) => {
                        let state = FaultState::Gone {
                            reason: g.reason.clone(),
                            at_ms: g.at_ms,
                        };
                        events = st.leftover.remove(id).unwrap_or_default();
                        state
                    }
                    None => FaultState::Unknown,
                },
            };
            faults.push(LeaseState {
                fault_id: id.clone(),
                state,
                events: std::mem::take(&mut events),
            });
        }
        Ok(Renewed { faults })
    }

    pub async fn revert(
        &self,
        fault_id: &str,
        req: &protocol::Revert,
    ) -> Result<Reverted, Refusal> {
        let mut st = self.inner.state.lock().await;
        match st.faults.get(fault_id) {
            Some(h) if h.view.run_id != req.run_id => {
                let holder = h.view.run_id.clone();
                let mut r = Refusal::new(
                    protocol::CODE_HELD,
                    format!(
                        "fault `{fault_id}` belongs to run `{holder}`, not `{}`; only its run may revert it",
                        req.run_id
                    ),
                );
                r.holder = Some(holder);
                Err(r)
            }
            Some(_) => {
                Self::check_epoch(&mut st, &req.run_id, req.epoch)?;
                self.revert_locked(&mut st, fault_id, REASON_REQUESTED)
                    .await;
                Ok(Reverted {
                    fault_id: fault_id.to_string(),
                    earlier: None,
                    events: st.leftover.remove(fault_id).unwrap_or_default(),
                })
            }
            None => match st.gone.get(fault_id) {
                Some((g, _)) => Ok(Reverted {
                    fault_id: fault_id.to_string(),
                    earlier: Some(g.clone()),
                    events: st.leftover.remove(fault_id).unwrap_or_default(),
                }),
                None => Err(Refusal::new(
                    protocol::CODE_NOT_FOUND,
                    format!(
                        "agent `{}` has no record of fault `{fault_id}` (never applied here, or reverted more than 10 minutes ago)",
                        self.inner.name
                    ),
                )),
            },
        }
    }

    /// Reverts everything (SIGTERM).
    pub async fn shutdown(&self) {
        let mut st = self.inner.state.lock().await;
        let ids: Vec<String> = st.faults.keys().cloned().collect();
        for id in ids {
            self.revert_locked(&mut st, &id, REASON_STOPPING).await;
        }
        self.inner.targets.shutdown().await;
    }

    /// Reverts what reached its deadline or lost its lease; forgets old gone entries.
    async fn sweep(&self) {
        let mut st = self.inner.state.lock().await;
        let now = Instant::now();
        let due: Vec<(String, &'static str)> = st
            .faults
            .iter()
            .filter_map(|(id, h)| {
                if h.deadline <= now {
                    Some((id.clone(), REASON_DEADLINE))
                } else if h.lease_until <= now {
                    Some((id.clone(), REASON_LEASE))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in due {
            self.revert_locked(&mut st, &id, reason).await;
        }
        st.gone.retain(|_, (_, at)| at.elapsed() < GONE_MEMORY);
        let State { gone, leftover, .. } = &mut *st;
        leftover.retain(|id, _| gone.contains_key(id));
        let State { faults, epochs, .. } = &mut *st;
        epochs.retain(|run, (_, at)| {
            at.elapsed() < GONE_MEMORY || faults.values().any(|h| &h.view.run_id == run)
        });
    }

    async fn revert_locked(&self, st: &mut State, fault_id: &str, reason: &'static str) {
        let Some(mut held) = st.faults.remove(fault_id) else {
            return;
        };
        let v = &held.view;
        let mut reason_text = reason.to_string();
        match held.active.revert().await {
            Ok(()) => {
                info!(run_id = %v.run_id, fault_id = %v.fault_id, target = %v.target, summary = %v.summary, reason, "fault reverted");
                metrics::counter!(METRIC_REVERTS, "reason" => reason).increment(1);
            }
            Err(e) => {
                // The journal keeps the apply open so the next start tries the family's
                // recovery again.
                error!(run_id = %v.run_id, fault_id = %v.fault_id, target = %v.target, reason, error = %e, "revert failed; check the target by hand");
                metrics::counter!(METRIC_REVERT_FAILURES).increment(1);
                st.failed_reverts += 1;
                reason_text = format!("{reason} (revert failed: {e})");
            }
        }
        // After the revert: a load's generator hands in its final report while it stops.
        let left = drain(&mut held.reported);
        if !left.is_empty() {
            st.leftover.insert(fault_id.to_string(), left);
        }
        let at_ms = now_ms();
        if !reason_text.contains("revert failed")
            && let Err(e) = self.journal(&Entry::Done {
                fault_id: fault_id.to_string(),
                reason: reason_text.clone(),
                at_ms,
            })
        {
            error!(run_id = %v.run_id, error = %e, "cannot journal a revert");
        }
        st.gone.insert(
            fault_id.to_string(),
            (
                Gone {
                    reason: reason_text,
                    at_ms,
                },
                Instant::now(),
            ),
        );
        metrics::gauge!(METRIC_FAULTS).set(st.faults.len() as f64);
        if st.faults.is_empty()
            && st.failed_reverts == 0
            && let Err(e) = self.lock_journal().compact()
        {
            warn!(error = %e, "cannot empty the journal (it is replayed harmlessly at start)");
        }
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A poisoned journal lock still guards a whole file handle.
        match self.inner.journal.lock() {
            Ok(j) => j,
            Err(p) => p.into_inner(),
        }
    }

    fn journal(&self, entry: &Entry) -> Result<(), super::journal::JournalError> {
        self.lock_journal().append(entry)
    }
}

/// A requested deadline or lease: above zero and at most [`MAX_TERM`].
fn term(key: &str, ms: u64) -> Result<Duration, Refusal> {
    let d = Duration::from_millis(ms);
    if d.is_zero() || d > MAX_TERM {
        return Err(Refusal::new(
            protocol::CODE_BAD_REQUEST,
            format!("{key} is {ms}; it must be above zero and at most 24 h (86400000)"),
        ));
    }
    Ok(d)
}
