//! Putting faults in place and taking them off: each is recorded in the store before it is
//! injected (so a crash leaves something to recover from), carries its own deadline, and is
//! counted in `chaosbot_active_faults` for as long as it may be in place.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::halt::InjectError;
use super::{Shared, append, set_state};
use crate::faults::{self, ActiveFault, FaultFamily, InjectContext};
use crate::run::{Event, RunState, now_ms};
use crate::spec::model::FaultStep;
use crate::store::NewFault;

const ACTIVE_FAULTS: &str = "chaosbot_active_faults";

/// One fault counted in `chaosbot_active_faults` for as long as this value lives.
pub(super) struct Counted;

impl Counted {
    pub(super) fn new() -> Counted {
        metrics::gauge!(ACTIVE_FAULTS).increment(1.0);
        Counted
    }

    /// A fault whose revert failed is still in place until its own deadline removes it.
    fn keep_until(self, deadline: Instant) {
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            drop(self);
        });
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(ACTIVE_FAULTS).decrement(1.0);
    }
}

/// A fault in place, as the runner tracks it.
pub(super) struct Injected {
    pub(super) record_id: i64,
    pub(super) step: String,
    pub(super) target: String,
    pub(super) deadline: Instant,
    pub(super) fault: Held,
    pub(super) counted: Counted,
}

/// Who holds a fault: this process, or an agent.
pub(super) enum Held {
    Local(Box<dyn ActiveFault>),
    Remote(super::remote::RemoteFault),
}

fn family_for<'a>(sh: &'a Shared, step: &FaultStep) -> &'a dyn FaultFamily {
    match &sh.eng.family_override {
        Some(f) => f.as_ref(),
        None => faults::family_for(&step.fault),
    }
}

/// How long the fault may stay: not past its step by more than the grace, nor past the
/// run's guard rail.
pub(super) fn time_to_live(sh: &Shared, step: &FaultStep) -> Duration {
    let opts = &sh.eng.opts;
    let step_deadline = step.duration + opts.deadline_grace;
    let run_left = opts
        .guard_rails
        .max_run_duration
        .saturating_sub(sh.started.elapsed())
        + opts.deadline_grace;
    step_deadline.min(run_left)
}

/// Persists the fault, then injects it with its own deadline, then registers it for revert.
pub(super) async fn inject(sh: &Shared, step: &FaultStep) -> Result<i64, InjectError> {
    if let Some(router) = super::remote::router_for(sh, step) {
        return super::remote::inject(sh, step, &router).await;
    }
    let eng = &sh.eng;
    let family = family_for(sh, step);
    let ttl = time_to_live(sh, step);
    let deadline = Instant::now() + ttl;
    let deadline_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let ctx = InjectContext {
        targets: eng.targets(),
        run_id: &sh.run_id,
        seed: faults::derive_seed(sh.seed, &step.name),
        deadline,
        events: sh.events.clone(),
    };
    // What recovery needs (e.g. the pids about to be signalled) is resolved and persisted
    // before anything is touched.
    let detail = family
        .prepare(step, &ctx)
        .await
        .map_err(InjectError::Prepare)?;
    let record_id = eng
        .store()
        .record_fault(NewFault {
            run_id: sh.run_id.clone(),
            step: step.name.clone(),
            target: step.target.clone(),
            family: family.name().to_string(),
            detail: detail.clone(),
            deadline_ms,
            owner: eng.instance().to_string(),
            epoch: Some(sh.epoch),
        })
        .await
        .map_err(InjectError::Record)?;
    let fault = family
        .inject(step, &ctx, &detail)
        .await
        .map_err(InjectError::Inject)?;
    let counted = Counted::new();
    let summary = fault.summary();
    sh.injected_any
        .store(true, std::sync::atomic::Ordering::SeqCst);
    sh.active.lock().await.push(Injected {
        record_id,
        step: step.name.clone(),
        target: step.target.clone(),
        deadline,
        fault: Held::Local(fault),
        counted,
    });
    info!(step = %step.name, %summary, "fault injected");
    let _ = append(
        sh,
        Event::FaultInjected {
            step: step.name.clone(),
            fault: step.fault.kind_name().to_string(),
            target: step.target.clone(),
            summary,
            deadline_ms,
            agent: None,
        },
    )
    .await;
    Ok(record_id)
}

/// Removes one fault at the end of its step (unless the final revert already took it).
pub(super) async fn revert_one(sh: &Shared, record_id: i64) -> bool {
    let injected = {
        let mut active = sh.active.lock().await;
        match active.iter().position(|i| i.record_id == record_id) {
            Some(pos) => active.remove(pos),
            None => return true,
        }
    };
    revert_injected(sh, injected, true).await
}

/// Removes every fault still in place, newest first. Returns whether all came off.
pub(super) async fn revert_all(sh: &Shared, journal: bool) -> bool {
    if journal {
        let _ = set_state(sh, RunState::Reverting).await;
    }
    let all: Vec<Injected> = sh.active.lock().await.drain(..).rev().collect();
    let mut ok = true;
    for injected in all {
        ok &= revert_injected(sh, injected, journal).await;
    }
    ok
}

async fn revert_injected(sh: &Shared, injected: Injected, journal: bool) -> bool {
    let Injected {
        record_id,
        step,
        target,
        deadline,
        fault,
        counted,
    } = injected;
    let outcome = match &fault {
        Held::Local(fault) => revert_local(fault.as_ref()).await.map(|()| None),
        Held::Remote(remote) => super::remote::revert(sh, remote, &step).await,
    };
    let last_err = match outcome {
        Ok(note) => {
            info!(%step, "fault reverted");
            drop(counted);
            if let Err(e) = sh.eng.store().mark_fault_reverted(record_id).await {
                warn!(error = %e, "fault reverted but not marked in the store");
            }
            if journal {
                if let (Some(text), Held::Remote(r)) = (note, &fault) {
                    let agent = r.agent().to_string();
                    let _ = append(sh, Event::AgentNote { agent, text }).await;
                }
                let _ = append(sh, Event::FaultReverted { step, target }).await;
            }
            return true;
        }
        Err(e) => e,
    };
    error!(%step, error = %last_err, "revert failed");
    sh.revert_failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(|| format!("`{step}`: {last_err}"));
    counted.keep_until(deadline);
    if journal {
        let _ = append(
            sh,
            Event::FaultRevertFailed {
                step,
                target,
                error: last_err,
            },
        )
        .await;
    }
    false
}

/// Retried briefly: a revert is the one thing that must not give up at the first error.
async fn revert_local(fault: &dyn ActiveFault) -> Result<(), String> {
    let mut last_err = String::new();
    for attempt in 0..3u32 {
        match fault.revert().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(last_err)
}
