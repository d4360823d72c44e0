//! Executes one claimed run through its lifecycle, and reverts whatever happens.
//!
//! The method runs in its own task so that a panic inside a step is caught here; the faults it
//! injects are registered in a list this function owns, so the revert does not depend on the
//! method task being alive. Probe samples, abort requests, stop conditions, lease renewal and
//! shutdown are all watched from one loop.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::Engine;
use crate::faults::{self, ActiveFault, FaultFamily, InjectContext};
use crate::load::{LoadFigures, Threshold};
use crate::probes::{self, Sample};
use crate::run::{Event, SamplePhase, now_ms};
use crate::run::{RollbackOutcome, RunState, Verdict};
use crate::spec::model::{Experiment, FaultSpec, FaultStep, Probe, RollbackAction, Step, StopRule};
use crate::store::{NewFault, RunRecord, StoreError};

/// Why the method stopped before its end.
#[derive(Debug, Clone)]
enum Halt {
    Abort { by: String, reason: String },
    StopCondition(String),
    Shutdown(String),
    StepFailed(String),
    LeaseLost,
}

/// A fault in place, as the runner tracks it.
struct Injected {
    record_id: i64,
    step: String,
    target: String,
    fault: Box<dyn ActiveFault>,
}

/// State shared between the runner and its method task.
struct Shared {
    eng: Arc<Engine>,
    run_id: String,
    exp: Experiment,
    seed: u64,
    started: Instant,
    halt: CancellationToken,
    state: Mutex<RunState>,
    active: Mutex<Vec<Injected>>,
    injected_any: std::sync::atomic::AtomicBool,
    /// Faults report measurements here (the load's numbers); the run loop journals them.
    events: mpsc::UnboundedSender<Event>,
}

pub(super) async fn execute(eng: &Arc<Engine>, run: RunRecord, halt: CancellationToken) {
    let span = tracing::info_span!("run", run_id = %run.id, experiment = %run.experiment);
    async move {
        let run_id = run.id.clone();
        match serde_json::from_value::<Experiment>(run.spec.clone()) {
            Err(e) => {
                let reason =
                    format!("the stored experiment cannot be read ({e}); nothing was injected");
                if let Err(e) = eng
                    .finish(
                        &run_id,
                        Verdict::Failed,
                        RollbackOutcome::NothingToRevert,
                        &reason,
                    )
                    .await
                {
                    error!(error = %e, "cannot close the run");
                }
            }
            Ok(exp) => {
                let (events, events_rx) = mpsc::unbounded_channel();
                let shared = Arc::new(Shared {
                    eng: Arc::clone(eng),
                    run_id,
                    exp,
                    seed: run.seed,
                    started: Instant::now(),
                    halt,
                    state: Mutex::new(RunState::CheckingSteadyState),
                    active: Mutex::new(Vec::new()),
                    injected_any: std::sync::atomic::AtomicBool::new(false),
                    events,
                });
                drive(shared, events_rx).await;
            }
        }
    }
    .instrument(span)
    .await
}

async fn drive(sh: Arc<Shared>, events: mpsc::UnboundedReceiver<Event>) {
    let eng = Arc::clone(&sh.eng);
    let outcome = run_to_verdict(&sh, events).await;
    let (verdict, rollback, reason) = match outcome {
        Ok(v) => v,
        Err(Halt::LeaseLost) => {
            // Another process recovered this run and closed it; our faults are still ours to
            // remove, but the journal is no longer ours to write.
            revert_all(&sh, false).await;
            warn!("lease lost: another process took over this run; reverted local faults");
            return;
        }
        Err(h) => (
            Verdict::Failed,
            RollbackOutcome::NothingToRevert,
            describe(&h),
        ),
    };
    info!(%verdict, %rollback, %reason, "run finished");
    if let Err(e) = eng.finish(&sh.run_id, verdict, rollback, &reason).await {
        error!(error = %e, "cannot record the verdict");
    }
}

fn describe(h: &Halt) -> String {
    match h {
        Halt::Abort { by, reason } if reason.is_empty() => format!("aborted by {by}"),
        Halt::Abort { by, reason } => format!("aborted by {by}: {reason}"),
        Halt::StopCondition(s) => format!("stop condition met: {s}"),
        Halt::Shutdown(s) => s.clone(),
        Halt::StepFailed(s) => format!("a step failed: {s}"),
        Halt::LeaseLost => "the run's lease was lost to another process".into(),
    }
}

/// Walks the lifecycle. `Err` only for a lease lost or a run that could not start.
async fn run_to_verdict(
    sh: &Arc<Shared>,
    mut fault_events: mpsc::UnboundedReceiver<Event>,
) -> Result<(Verdict, RollbackOutcome, String), Halt> {
    let eng = &sh.eng;
    let exp = &sh.exp;

    // Pre-flight: bind the proxies and reach the upstreams before anything is injected.
    // (Process and resource targets are resolved by their family's `prepare`.)
    for target in eng.targets().proxies_for(exp) {
        let ready = async {
            eng.targets().proxy(&target).await?;
            eng.targets().check_upstream(&target).await
        };
        if let Err(e) = ready.await {
            return Ok((
                Verdict::Failed,
                RollbackOutcome::NothingToRevert,
                format!("{e}; nothing was injected"),
            ));
        }
    }

    // Steady state must hold before injection.
    for probe in &exp.hypothesis {
        let s = probes::sample(probe).await;
        journal_sample(sh, probe, SamplePhase::Before, &s).await?;
        if !s.ok {
            return Ok((
                Verdict::Failed,
                RollbackOutcome::NothingToRevert,
                format!(
                    "the steady state did not hold before injection (probe `{}`: {}); nothing was injected",
                    probe.name, s.detail
                ),
            ));
        }
    }
    if let Some(h) = pending_halt(sh).await? {
        return Ok((
            Verdict::Aborted,
            RollbackOutcome::NothingToRevert,
            describe(&h),
        ));
    }

    // The method, watched.
    let (tx, mut rx) = mpsc::channel::<(usize, Sample)>(256);
    let probes_stop = CancellationToken::new();
    for (i, probe) in exp.hypothesis.iter().enumerate() {
        let tx = tx.clone();
        let probe = probe.clone();
        let stop = probes_stop.clone();
        tokio::spawn(
            async move {
                // The steady-state sample was just taken; the next one is an interval later.
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + probe.interval,
                    probe.interval,
                );
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let s = tokio::select! {
                        _ = stop.cancelled() => return,
                        s = probes::sample(&probe) => s,
                    };
                    if tx.send((i, s)).await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
    }
    drop(tx);

    let method_task = {
        let sh = Arc::clone(sh);
        tokio::spawn(
            async move {
                let steps = sh.exp.method.clone();
                run_steps(&sh, &steps).await
            }
            .in_current_span(),
        )
    };
    tokio::pin!(method_task);

    let mut judge = Judge::new(exp);
    let mut halt: Option<Halt> = None;
    let mut abort_poll = tokio::time::interval(eng.opts.abort_poll);
    let mut lease_tick = tokio::time::interval(eng.opts.lease / 3);
    lease_tick.tick().await;
    let mut method_result: Option<Result<(), String>> = None;

    while method_result.is_none() {
        tokio::select! {
            res = &mut method_task => {
                method_result = Some(match res {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => Err(format!("a step panicked: {}", panic_text(e))),
                    Err(e) => Err(format!("the method task ended unexpectedly: {e}")),
                });
            }
            Some((i, s)) = rx.recv() => {
                let probe = &exp.hypothesis[i];
                journal_sample(sh, probe, SamplePhase::During, &s).await?;
                if let Some(detail) = judge.tolerance_breach(i, s.ok) {
                    append(sh, Event::ToleranceExceeded { probe: probe.name.clone(), detail }).await?;
                }
                if halt.is_none()
                    && let Some((condition, detail)) = judge.stop_condition(i, s.ok)
                {
                    append(sh, Event::StopConditionMet {
                        probe: probe.name.clone(),
                        condition: condition.clone(),
                        detail: detail.clone(),
                    }).await?;
                    halt = Some(Halt::StopCondition(format!("probe `{}`: {detail}", probe.name)));
                    sh.halt.cancel();
                }
            }
            Some(ev) = fault_events.recv() => {
                on_fault_event(sh, &mut judge, &mut halt, ev).await?;
            }
            _ = abort_poll.tick(), if halt.is_none() => {
                if let Some(h) = pending_halt(sh).await? {
                    halt = Some(h);
                    sh.halt.cancel();
                }
            }
            _ = sh.halt.cancelled(), if halt.is_none() => {
                // Cancelled from this process (abort fast path or shutdown): find out why.
                halt = Some(pending_halt(sh).await?.unwrap_or_else(|| Halt::Shutdown(eng.shutdown_reason())));
            }
            _ = eng.shutdown.cancelled(), if halt.is_none() => {
                halt = Some(Halt::Shutdown(eng.shutdown_reason()));
                sh.halt.cancel();
            }
            _ = lease_tick.tick() => {
                match eng.store().renew_lease(&sh.run_id, &eng.instance().to_string(), eng.opts.lease).await {
                    Ok(()) => {}
                    Err(StoreError::LeaseLost(_)) => {
                        sh.halt.cancel();
                        probes_stop.cancel();
                        return Err(Halt::LeaseLost);
                    }
                    Err(e) => warn!(error = %e, "cannot renew the run's lease; will retry"),
                }
            }
        }
    }
    probes_stop.cancel();
    // The method may have ended *because* the halt token was cancelled (an abort through the
    // fast path or a shutdown) before the loop saw the token: ask why, so a halted run is
    // never mistaken for a completed one.
    if halt.is_none() && sh.halt.is_cancelled() {
        halt = Some(
            pending_halt(sh)
                .await?
                .unwrap_or_else(|| Halt::Shutdown(eng.shutdown_reason())),
        );
    }
    sh.halt.cancel(); // ends any step still waiting (e.g. after a step error in a parallel group)

    if let Some(Err(e)) = &method_result
        && halt.is_none()
    {
        append(
            sh,
            Event::StepFailed {
                step: current_step_hint(e),
                error: e.clone(),
            },
        )
        .await?;
        halt = Some(Halt::StepFailed(e.clone()));
    }

    // Revert, run the extra rollbacks, and verify.
    let revert_ok = revert_all(sh, true).await;
    // What faults reported up to their revert (a load's final report) is judged too.
    while let Ok(ev) = fault_events.try_recv() {
        on_fault_event(sh, &mut judge, &mut halt, ev).await?;
    }
    run_rollbacks(sh).await?;
    let injected = sh.injected_any.load(std::sync::atomic::Ordering::SeqCst);
    let rollback = if !injected {
        set_state(sh, RunState::Reverting).await?;
        RollbackOutcome::NothingToRevert
    } else {
        set_state(sh, RunState::Verifying).await?;
        match verify(sh).await? {
            Ok(()) if revert_ok => RollbackOutcome::Reverted,
            Ok(()) => RollbackOutcome::RevertFailed,
            Err(why) => {
                warn!(%why, "steady state not restored");
                RollbackOutcome::RevertFailed
            }
        }
    };

    let (verdict, reason) = match &halt {
        Some(h @ Halt::StepFailed(_)) => (Verdict::Failed, describe(h)),
        Some(h) => (Verdict::Aborted, describe(h)),
        None => match judge.final_breaches() {
            breaches if breaches.is_empty() => (
                Verdict::Held,
                "the hypothesis held while the faults were in place".to_string(),
            ),
            breaches => {
                for (probe, detail) in &breaches {
                    if !judge.reported(probe) {
                        append(
                            sh,
                            Event::ToleranceExceeded {
                                probe: probe.clone(),
                                detail: detail.clone(),
                            },
                        )
                        .await?;
                    }
                }
                let text: Vec<String> = breaches
                    .iter()
                    .map(|(p, d)| {
                        if judge.is_load_step(p) {
                            format!("load step `{p}`: {d}")
                        } else {
                            format!("probe `{p}`: {d}")
                        }
                    })
                    .collect();
                (
                    Verdict::Deviated,
                    format!("the hypothesis broke: {}", text.join("; ")),
                )
            }
        },
    };
    let reason = match rollback {
        RollbackOutcome::RevertFailed => format!("{reason}; REVERT FAILED, see the journal"),
        _ => reason,
    };
    Ok((verdict, rollback, reason))
}

/// Journals an event a fault reported, and judges load numbers against the stop conditions
/// (each second) and the step's thresholds (at its end).
async fn on_fault_event(
    sh: &Shared,
    judge: &mut Judge,
    halt: &mut Option<Halt>,
    ev: Event,
) -> Result<(), Halt> {
    match &ev {
        Event::LoadStats { step, stats, .. } => {
            let hit = if halt.is_none() {
                judge.load_stop(step, stats)
            } else {
                None
            };
            let step = step.clone();
            append(sh, ev).await?;
            if let Some((condition, detail)) = hit {
                warn!(%step, %detail, "load stop condition met");
                append(
                    sh,
                    Event::StopConditionMet {
                        probe: step.clone(),
                        condition,
                        detail: detail.clone(),
                    },
                )
                .await?;
                *halt = Some(Halt::StopCondition(format!("load step `{step}`: {detail}")));
                sh.halt.cancel();
            }
        }
        Event::LoadReport { step, stats, .. } => {
            let breaches = judge.load_report(step, stats);
            let step = step.clone();
            append(sh, ev).await?;
            for detail in breaches {
                append(
                    sh,
                    Event::ToleranceExceeded {
                        probe: step.clone(),
                        detail,
                    },
                )
                .await?;
            }
        }
        _ => append(sh, ev).await?,
    }
    Ok(())
}

fn current_step_hint(e: &str) -> String {
    e.split_once(':')
        .and_then(|(head, _)| head.strip_prefix("step `"))
        .and_then(|s| s.strip_suffix('`'))
        .unwrap_or("method")
        .to_string()
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// An abort request in the store (made by anyone, anywhere), or a shutdown in progress.
async fn pending_halt(sh: &Shared) -> Result<Option<Halt>, Halt> {
    match sh.eng.store().pending_abort(&sh.run_id).await {
        Ok(Some(req)) => Ok(Some(Halt::Abort {
            by: req.requested_by,
            reason: req.reason,
        })),
        Ok(None) if sh.eng.is_shutting_down() => Ok(Some(Halt::Shutdown(sh.eng.shutdown_reason()))),
        Ok(None) => Ok(None),
        Err(e) => {
            warn!(error = %e, "cannot read abort requests; will retry");
            Ok(None)
        }
    }
}

async fn append(sh: &Shared, event: Event) -> Result<(), Halt> {
    match sh.eng.append(&sh.run_id, event).await {
        Ok(_) => Ok(()),
        Err(StoreError::LeaseLost(_)) => Err(Halt::LeaseLost),
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
) -> Result<(), Halt> {
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
    .await
}

async fn set_state(sh: &Shared, to: RunState) -> Result<(), Halt> {
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
        Err(StoreError::LeaseLost(_)) => Err(Halt::LeaseLost),
        Err(e) => {
            error!(error = %e, "cannot record a state change");
            *st = to;
            Ok(())
        }
    }
}

fn family_for<'a>(sh: &'a Shared, step: &FaultStep) -> &'a dyn FaultFamily {
    match &sh.eng.family_override {
        Some(f) => f.as_ref(),
        None => faults::family_for(&step.fault),
    }
}

fn run_steps<'a>(sh: &'a Arc<Shared>, steps: &'a [Step]) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        for step in steps {
            if sh.halt.is_cancelled() {
                return Ok(());
            }
            run_step(sh, step).await?;
        }
        Ok(())
    })
}

fn run_step<'a>(sh: &'a Arc<Shared>, step: &'a Step) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        match step {
            Step::Wait { duration } => {
                set_state(sh, RunState::Observing)
                    .await
                    .map_err(|h| describe(&h))?;
                hold(sh, *duration).await;
                Ok(())
            }
            Step::Parallel(inner) => {
                futures::future::try_join_all(inner.iter().map(|s| run_step(sh, s))).await?;
                Ok(())
            }
            Step::Fault(f) => {
                set_state(sh, RunState::Injecting)
                    .await
                    .map_err(|h| describe(&h))?;
                if sh.halt.is_cancelled() {
                    return Ok(());
                }
                let record_id = inject(sh, f)
                    .await
                    .map_err(|e| format!("step `{}`: {e}", f.name))?;
                set_state(sh, RunState::Observing)
                    .await
                    .map_err(|h| describe(&h))?;
                hold(sh, f.duration).await;
                if !sh.halt.is_cancelled() {
                    revert_one(sh, record_id).await;
                }
                Ok(())
            }
        }
    })
}

async fn hold(sh: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = sh.halt.cancelled() => {}
    }
}

/// Persists the fault, then injects it with its own deadline, then registers it for revert.
async fn inject(sh: &Shared, step: &FaultStep) -> Result<i64, String> {
    let eng = &sh.eng;
    let family = family_for(sh, step);
    // The fault may not outlive its step by more than the grace, nor the run's guard rail.
    let step_deadline = step.duration + eng.opts.deadline_grace;
    let run_left = eng
        .opts
        .guard_rails
        .max_run_duration
        .saturating_sub(sh.started.elapsed())
        + eng.opts.deadline_grace;
    let ttl = step_deadline.min(run_left);
    let deadline = Instant::now() + ttl;
    let deadline_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let ctx = InjectContext {
        targets: eng.targets(),
        seed: faults::derive_seed(sh.seed, &step.name),
        deadline,
        events: sh.events.clone(),
    };
    // What recovery needs (e.g. the pids about to be signalled) is resolved and persisted
    // before anything is touched.
    let detail = family
        .prepare(step, &ctx)
        .await
        .map_err(|e| e.to_string())?;
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
        })
        .await
        .map_err(|e| format!("cannot record the fault before injecting it: {e}"))?;
    let fault = family
        .inject(step, &ctx, &detail)
        .await
        .map_err(|e| e.to_string())?;
    let summary = fault.summary();
    sh.injected_any
        .store(true, std::sync::atomic::Ordering::SeqCst);
    sh.active.lock().await.push(Injected {
        record_id,
        step: step.name.clone(),
        target: step.target.clone(),
        fault,
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
        },
    )
    .await;
    Ok(record_id)
}

async fn revert_one(sh: &Shared, record_id: i64) -> bool {
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
async fn revert_all(sh: &Shared, journal: bool) -> bool {
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
    // Retried briefly: a revert is the one thing that must not give up at the first error.
    let mut last_err = String::new();
    for attempt in 0..3u32 {
        match injected.fault.revert().await {
            Ok(()) => {
                info!(step = %injected.step, "fault reverted");
                metrics::gauge!("chaosbot_active_faults").decrement(1.0);
                if let Err(e) = sh.eng.store().mark_fault_reverted(injected.record_id).await {
                    warn!(error = %e, "fault reverted but not marked in the store");
                }
                if journal {
                    let _ = append(
                        sh,
                        Event::FaultReverted {
                            step: injected.step.clone(),
                            target: injected.target.clone(),
                        },
                    )
                    .await;
                }
                return true;
            }
            Err(e) => {
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
            }
        }
    }
    error!(step = %injected.step, error = %last_err, "revert failed");
    if journal {
        let _ = append(
            sh,
            Event::FaultRevertFailed {
                step: injected.step,
                target: injected.target,
                error: last_err,
            },
        )
        .await;
    }
    false
}

async fn run_rollbacks(sh: &Shared) -> Result<(), Halt> {
    for rb in &sh.exp.rollbacks {
        let (ok, detail) = match &rb.action {
            RollbackAction::Http {
                url,
                method,
                body,
                expect_status,
                timeout,
            } => {
                match tokio::time::timeout(
                    *timeout,
                    probes::http::send(url, method, body.as_deref()),
                )
                .await
                {
                    Ok(Ok((status, _))) if expect_status.contains(&status) => {
                        (true, format!("{method} {url} → {status}"))
                    }
                    Ok(Ok((status, _))) => (
                        false,
                        format!("{method} {url} → {status}, expected {expect_status:?}"),
                    ),
                    Ok(Err(e)) => (false, e),
                    Err(_) => (
                        false,
                        format!(
                            "{method} {url}: no answer within {}",
                            humantime::format_duration(*timeout)
                        ),
                    ),
                }
            }
        };
        append(
            sh,
            Event::RollbackAction {
                name: rb.name.clone(),
                ok,
                detail,
            },
        )
        .await?;
    }
    Ok(())
}

/// Samples every probe until all pass in the same round, within the recovery timeout.
async fn verify(sh: &Shared) -> Result<Result<(), String>, Halt> {
    let exp = &sh.exp;
    let deadline = Instant::now() + exp.recovery_timeout;
    let pause = exp
        .hypothesis
        .iter()
        .map(|p| p.interval)
        .min()
        .unwrap_or(Duration::from_millis(500))
        .min(Duration::from_millis(500));
    loop {
        let mut failing = None;
        for probe in &exp.hypothesis {
            let s = probes::sample(probe).await;
            journal_sample(sh, probe, SamplePhase::After, &s).await?;
            if !s.ok && failing.is_none() {
                failing = Some(format!("probe `{}`: {}", probe.name, s.detail));
            }
        }
        match failing {
            None => return Ok(Ok(())),
            Some(why) if Instant::now() + pause >= deadline => {
                return Ok(Err(format!(
                    "the steady state was not back {} after the faults were removed ({why})",
                    humantime::format_duration(exp.recovery_timeout)
                )));
            }
            Some(_) => tokio::time::sleep(pause).await,
        }
    }
}

/// Judges probe samples taken during the method against the tolerances and stop conditions.
struct Judge {
    names: Vec<String>,
    tolerance: Vec<f64>,
    expected: Vec<u64>,
    total: Vec<u64>,
    failed: Vec<u64>,
    consecutive: Vec<u32>,
    reported: Vec<bool>,
    windows: HashMap<usize, VecDeque<(Instant, bool)>>,
    stops: Vec<(usize, StopRule)>,
    /// Thresholds of each load step, judged on its totals.
    load_thresholds: HashMap<String, Vec<Threshold>>,
    /// (load step, threshold) judged on each of its seconds.
    load_stops: Vec<(String, Threshold)>,
    /// Load steps whose totals breached a threshold, with the detail.
    load_breaches: Vec<(String, String)>,
}

impl Judge {
    fn new(exp: &Experiment) -> Judge {
        let n = exp.hypothesis.len();
        let method = exp.method_duration();
        let index: HashMap<&str, usize> = exp
            .hypothesis
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        Judge {
            names: exp.hypothesis.iter().map(|p| p.name.clone()).collect(),
            tolerance: exp
                .hypothesis
                .iter()
                .map(|p| p.tolerance.max_failure_ratio)
                .collect(),
            expected: exp
                .hypothesis
                .iter()
                .map(|p| {
                    (method.as_secs_f64() / p.interval.as_secs_f64().max(0.001))
                        .ceil()
                        .max(1.0) as u64
                })
                .collect(),
            total: vec![0; n],
            failed: vec![0; n],
            consecutive: vec![0; n],
            reported: vec![false; n],
            windows: HashMap::new(),
            stops: exp
                .stop_conditions
                .iter()
                .filter(|s| !matches!(s.rule, StopRule::LoadThreshold(_)))
                .filter_map(|s| index.get(s.probe.as_str()).map(|i| (*i, s.rule.clone())))
                .collect(),
            load_thresholds: exp
                .fault_steps()
                .iter()
                .filter_map(|f| match &f.fault {
                    FaultSpec::Load { thresholds, .. } => {
                        Some((f.name.clone(), thresholds.clone()))
                    }
                    _ => None,
                })
                .collect(),
            load_stops: exp
                .stop_conditions
                .iter()
                .filter_map(|s| match &s.rule {
                    StopRule::LoadThreshold(t) => Some((s.probe.clone(), t.clone())),
                    _ => None,
                })
                .collect(),
            load_breaches: Vec::new(),
        }
    }

    fn is_load_step(&self, name: &str) -> bool {
        self.load_thresholds.contains_key(name)
    }

    /// A stop condition breached by one second of a load step: (condition, detail).
    fn load_stop(&self, step: &str, second: &LoadFigures) -> Option<(String, String)> {
        self.load_stops
            .iter()
            .filter(|(s, t)| s == step && t.judgeable(second))
            .find_map(|(_, t)| {
                t.check(second)
                    .err()
                    .map(|why| (StopRule::LoadThreshold(t.clone()).to_string(), why))
            })
    }

    /// The thresholds a load step's totals breach (each becomes a tolerance breach).
    fn load_report(&mut self, step: &str, total: &LoadFigures) -> Vec<String> {
        let breaches: Vec<String> = self
            .load_thresholds
            .get(step)
            .into_iter()
            .flatten()
            .filter(|t| t.judgeable(total))
            .filter_map(|t| t.check(total).err())
            .collect();
        for b in &breaches {
            self.load_breaches.push((step.to_string(), b.clone()));
        }
        breaches
    }

    /// Reports (once) when failures already exceed what the tolerance allows for the whole
    /// method, so a live view can say "deviating" before the end.
    fn tolerance_breach(&mut self, i: usize, ok: bool) -> Option<String> {
        self.total[i] += 1;
        if ok {
            return None;
        }
        self.failed[i] += 1;
        let allowed = (self.tolerance[i] * self.expected[i] as f64).floor() as u64;
        if self.failed[i] > allowed && !self.reported[i] {
            self.reported[i] = true;
            return Some(format!(
                "{} failed sample(s) so far; the tolerance allows {:.0}%",
                self.failed[i],
                self.tolerance[i] * 100.0
            ));
        }
        None
    }

    fn stop_condition(&mut self, i: usize, ok: bool) -> Option<(String, String)> {
        self.consecutive[i] = if ok { 0 } else { self.consecutive[i] + 1 };
        let now = Instant::now();
        for (probe, rule) in &self.stops {
            if *probe != i {
                continue;
            }
            match rule {
                StopRule::ConsecutiveFailures(n) if self.consecutive[i] >= *n => {
                    return Some((
                        rule.to_string(),
                        format!("{} consecutive failed samples", self.consecutive[i]),
                    ));
                }
                StopRule::FailureRatio {
                    ratio,
                    window,
                    min_samples,
                } => {
                    let w = self.windows.entry(i).or_default();
                    w.push_back((now, ok));
                    while w
                        .front()
                        .is_some_and(|(t, _)| now.duration_since(*t) > *window)
                    {
                        w.pop_front();
                    }
                    let n = w.len();
                    let bad = w.iter().filter(|(_, ok)| !ok).count();
                    if n >= *min_samples as usize && n > 0 && bad as f64 / n as f64 > *ratio {
                        return Some((
                            rule.to_string(),
                            format!(
                                "{bad} of the last {n} samples failed ({:.0}%)",
                                100.0 * bad as f64 / n as f64
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn final_breaches(&self) -> Vec<(String, String)> {
        let mut out = self.probe_breaches();
        out.extend(self.load_breaches.iter().cloned());
        out
    }

    fn probe_breaches(&self) -> Vec<(String, String)> {
        (0..self.names.len())
            .filter(|&i| self.total[i] > 0)
            .filter_map(|i| {
                let ratio = self.failed[i] as f64 / self.total[i] as f64;
                (ratio > self.tolerance[i]).then(|| {
                    (
                        self.names[i].clone(),
                        format!(
                            "{} of {} samples failed ({:.0}%, tolerance {:.0}%)",
                            self.failed[i],
                            self.total[i],
                            ratio * 100.0,
                            self.tolerance[i] * 100.0
                        ),
                    )
                })
            })
            .collect()
    }

    fn reported(&self, probe: &str) -> bool {
        self.load_breaches.iter().any(|(s, _)| s == probe)
            || self
                .names
                .iter()
                .position(|n| n == probe)
                .is_some_and(|i| self.reported[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{ProbeKind, StopCondition, Tolerance};

    fn exp(tolerance: f64, stops: Vec<StopRule>) -> Experiment {
        Experiment {
            name: "t".into(),
            title: "t".into(),
            description: String::new(),
            owner: "o".into(),
            tags: vec![],
            params: Default::default(),
            hypothesis: vec![Probe {
                name: "p".into(),
                kind: ProbeKind::Tcp {
                    address: "127.0.0.1:1".into(),
                    max_latency: None,
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                tolerance: Tolerance {
                    max_failure_ratio: tolerance,
                },
            }],
            method: vec![Step::Wait {
                duration: Duration::from_secs(10),
            }],
            stop_conditions: stops
                .into_iter()
                .map(|rule| StopCondition {
                    probe: "p".into(),
                    rule,
                })
                .collect(),
            rollbacks: vec![],
            recovery_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn tolerance_is_judged_on_the_whole_method() {
        // 10 expected samples, 20% tolerated: 2 failures are fine, the 3rd is a breach.
        let mut j = Judge::new(&exp(0.2, vec![]));
        assert_eq!(j.tolerance_breach(0, false), None);
        assert_eq!(j.tolerance_breach(0, false), None);
        assert!(j.tolerance_breach(0, false).is_some());
        assert_eq!(j.tolerance_breach(0, false), None, "reported once");
        for _ in 0..7 {
            j.tolerance_breach(0, true);
        }
        // 4 of 11 failed: above 20%.
        let breaches = j.final_breaches();
        assert_eq!(breaches.len(), 1);
        assert!(breaches[0].1.contains("4 of 11"), "{breaches:?}");

        let mut ok = Judge::new(&exp(0.2, vec![]));
        ok.tolerance_breach(0, false);
        for _ in 0..9 {
            ok.tolerance_breach(0, true);
        }
        assert!(ok.final_breaches().is_empty());
    }

    #[test]
    fn consecutive_failures_reset_on_success() {
        let mut j = Judge::new(&exp(1.0, vec![StopRule::ConsecutiveFailures(3)]));
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, true).is_none());
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, false).is_none());
        let (rule, detail) = j.stop_condition(0, false).unwrap();
        assert_eq!(rule, "3 consecutive failures");
        assert!(detail.contains('3'));
    }

    #[test]
    fn failure_ratio_waits_for_min_samples_and_uses_the_window() {
        let rule = StopRule::FailureRatio {
            ratio: 0.5,
            window: Duration::from_secs(60),
            min_samples: 4,
        };
        let mut j = Judge::new(&exp(1.0, vec![rule]));
        // 3 failures of 3: above the ratio, but fewer than min_samples.
        for _ in 0..3 {
            assert!(j.stop_condition(0, false).is_none());
        }
        let (_, detail) = j.stop_condition(0, true).unwrap();
        assert!(detail.contains("3 of the last 4"), "{detail}");

        let short = StopRule::FailureRatio {
            ratio: 0.5,
            window: Duration::from_millis(30),
            min_samples: 2,
        };
        let mut j = Judge::new(&exp(1.0, vec![short]));
        assert!(j.stop_condition(0, false).is_none());
        std::thread::sleep(Duration::from_millis(60));
        // The old failure left the window, so only the passing samples count.
        assert!(j.stop_condition(0, true).is_none());
        assert!(j.stop_condition(0, true).is_none());
    }
}
