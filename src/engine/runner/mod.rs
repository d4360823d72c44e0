//! Executes one claimed run through its lifecycle, and reverts whatever happens.
//!
//! The run is told as its phases: [`preflight`] (proxies, upstreams, then the steady state),
//! [`watch`] (the method in its own task, so a panic inside a step is caught, with the probes
//! alongside and one loop watching samples, aborts, stop conditions, lease and shutdown), and
//! [`close`] (revert, rollbacks, [`verify`], verdict). The faults the method injects are
//! registered in a list the run owns ([`fault`]), so the revert does not depend on the method
//! task being alive; [`judge`] turns samples into the verdict.

pub(crate) mod adopt;
mod close;
mod fault;
mod halt;
mod judge;
mod method;
mod preflight;
mod remote;
mod verify;
mod watch;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::Engine;
use crate::probes::{self, Sample};
use crate::run::{Event, RollbackOutcome, RunState, SamplePhase, Verdict};
use crate::spec::model::{Experiment, Probe};
use crate::store::{RunRecord, StoreError};
use fault::{Injected, revert_all};
use halt::{Halt, LeaseLost};

/// State shared between the runner and its method task.
struct Shared {
    eng: Arc<Engine>,
    run_id: String,
    exp: Experiment,
    seed: u64,
    /// The run's ownership epoch (raised at each claim): agents fence by it.
    epoch: u64,
    started: Instant,
    halt: CancellationToken,
    state: Mutex<RunState>,
    active: Mutex<Vec<Injected>>,
    injected_any: AtomicBool,
    /// A fault's revert failed at some point (at the end of its step or in the final revert):
    /// the run's rollback is then `revert-failed`, whatever the later reverts did.
    revert_failed: std::sync::Mutex<Option<String>>,
    /// Faults report measurements here (the load's numbers); the run loop journals them.
    events: mpsc::UnboundedSender<Event>,
}

/// How a run ends: what the verdict entry says.
struct Outcome {
    verdict: Verdict,
    rollback: RollbackOutcome,
    reason: String,
}

impl Outcome {
    fn nothing_injected(verdict: Verdict, reason: String) -> Outcome {
        Outcome {
            verdict,
            rollback: RollbackOutcome::NothingToRevert,
            reason,
        }
    }
}

pub(super) async fn execute(eng: &Arc<Engine>, run: RunRecord, halt: CancellationToken) {
    let span = tracing::info_span!("run", run_id = %run.id, experiment = %run.experiment);
    async move {
        let exp = match serde_json::from_value::<Experiment>(run.spec.clone()) {
            Ok(exp) => exp,
            Err(e) => {
                let reason =
                    format!("the stored experiment cannot be read ({e}); nothing was injected");
                let outcome = Outcome::nothing_injected(Verdict::Failed, reason);
                if let Err(e) = finish(eng, &run.id, &outcome).await {
                    error!(error = %e, "cannot close the run");
                }
                return;
            }
        };
        let (events, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            eng: Arc::clone(eng),
            run_id: run.id,
            exp,
            seed: run.seed,
            epoch: run.epoch,
            started: Instant::now(),
            halt,
            state: Mutex::new(RunState::CheckingSteadyState),
            active: Mutex::new(Vec::new()),
            injected_any: AtomicBool::new(false),
            revert_failed: std::sync::Mutex::new(None),
            events,
        });
        drive(shared, events_rx, None).await;
    }
    .instrument(span)
    .await
}

async fn finish(eng: &Engine, run_id: &str, o: &Outcome) -> Result<(), StoreError> {
    eng.finish(run_id, o.verdict, o.rollback, &o.reason)
        .await
        .map(|_| ())
}

/// Where an adopted run resumes: the judge rebuilt from the journal, the halt the lost owner
/// had begun (or an abort since), and what is left of the method.
type Resume = (judge::Judge, Option<Halt>, Vec<method::Plan>);

async fn drive(sh: Arc<Shared>, events: mpsc::UnboundedReceiver<Event>, resume: Option<Resume>) {
    // Renews the leases of the run's faults on their agents until the run is closed.
    let keeper_stop = CancellationToken::new();
    let keeper = sh.eng.agents().is_some().then(|| {
        let (sh, stop) = (Arc::clone(&sh), keeper_stop.clone());
        tokio::spawn(remote::keep_leases(sh, stop).in_current_span())
    });
    let outcome = match resume {
        None => run_to_verdict(&sh, events).await,
        Some((judge, halt, plan)) => resume_to_verdict(&sh, events, judge, halt, plan).await,
    };
    keeper_stop.cancel();
    if let Some(k) = keeper {
        let _ = k.await;
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(Halt::LeaseLost) => {
            // Another process recovered this run and closed it; our faults are still ours to
            // remove, but the journal is no longer ours to write.
            revert_all(&sh, false).await;
            warn!("lease lost: another process took over this run; reverted local faults");
            return;
        }
        Err(h) => Outcome::nothing_injected(Verdict::Failed, h.to_string()),
    };
    let Outcome {
        verdict,
        rollback,
        reason,
    } = &outcome;
    info!(%verdict, %rollback, %reason, "run finished");
    if let Err(e) = finish(&sh.eng, &sh.run_id, &outcome).await {
        error!(error = %e, "cannot record the verdict");
    }
}

/// Walks the lifecycle, phase by phase. `Err` only for a lease lost.
async fn run_to_verdict(
    sh: &Arc<Shared>,
    fault_events: mpsc::UnboundedReceiver<Event>,
) -> Result<Outcome, Halt> {
    if let Some(o) = preflight::preflight(sh).await {
        return Ok(o);
    }
    if let Some(o) = preflight::steady_state(sh).await? {
        return Ok(o);
    }
    if let Some(h) = pending_halt(sh).await {
        return Ok(Outcome::nothing_injected(Verdict::Aborted, h.to_string()));
    }
    let plan = method::Plan::of(&sh.exp.method);
    let judge = judge::Judge::new(&sh.exp);
    let (watched, method) = watch::watch(sh, fault_events, judge, None, plan).await?;
    close::close(sh, watched, method).await
}

/// An adopted run: the rest of its method under watch, then the close.
async fn resume_to_verdict(
    sh: &Arc<Shared>,
    fault_events: mpsc::UnboundedReceiver<Event>,
    judge: judge::Judge,
    halt: Option<Halt>,
    plan: Vec<method::Plan>,
) -> Result<Outcome, Halt> {
    let (watched, method) = watch::watch(sh, fault_events, judge, halt, plan).await?;
    close::close(sh, watched, method).await
}

/// An abort request in the store (made by anyone, anywhere), or a shutdown in progress.
async fn pending_halt(sh: &Shared) -> Option<Halt> {
    match sh.eng.store().pending_abort(&sh.run_id).await {
        Ok(Some(req)) => Some(Halt::Abort {
            by: req.requested_by,
            reason: req.reason,
        }),
        Ok(None) if sh.eng.is_shutting_down() => Some(Halt::Shutdown(sh.eng.shutdown_reason())),
        Ok(None) => None,
        Err(e) => {
            warn!(error = %e, "cannot read abort requests; will retry");
            None
        }
    }
}

async fn append(sh: &Shared, event: Event) -> Result<(), LeaseLost> {
    match sh.eng.append(&sh.run_id, event).await {
        Ok(_) => Ok(()),
        Err(StoreError::LeaseLost(_)) => Err(LeaseLost),
        Err(e) => {
            // The journal is the record: losing an entry is bad, stopping the revert is worse.
            error!(error = %e, "cannot append to the journal");
            Ok(())
        }
    }
}

async fn journal_sample(
    sh: &Shared,
    probe: &Probe,
    phase: SamplePhase,
    s: &Sample,
) -> Result<(), LeaseLost> {
    append(
        sh,
        Event::ProbeSample {
            probe: probe.name.clone(),
            phase,
            ok: s.ok,
            latency_ms: probes::ms(s.latency),
            detail: s.detail.clone(),
        },
    )
    .await?;
    if let Some(output) = &s.output {
        let probe = probe.name.clone();
        let output = output.clone();
        append(
            sh,
            Event::ProbeOutput {
                probe,
                phase,
                output,
            },
        )
        .await?;
    }
    Ok(())
}

async fn set_state(sh: &Shared, to: RunState) -> Result<(), LeaseLost> {
    let mut st = sh.state.lock().await;
    if *st == to {
        return Ok(());
    }
    if !st.can_go_to(to) {
        // Reverting → Reverting etc. are no-ops; anything else is a bug worth a log line.
        warn!(from = %*st, %to, "skipping a transition the lifecycle does not allow");
        return Ok(());
    }
    match sh.eng.transition(&sh.run_id, to).await {
        Ok(_) => {
            *st = to;
            Ok(())
        }
        Err(StoreError::LeaseLost(_)) => Err(LeaseLost),
        Err(e) => {
            error!(error = %e, "cannot record a state change");
            *st = to;
            Ok(())
        }
    }
}
