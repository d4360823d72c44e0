//! The method, watched: probes sample alongside it, and one loop judges their samples and
//! the faults' reports, and looks for aborts, shutdown and the loss of the lease, until the
//! method ends (or a halt ends it early).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::halt::{Halt, LeaseLost, StepError};
use super::judge::Judge;
use super::method::{Plan, run_steps};
use super::{Shared, append, journal_sample, pending_halt};
use crate::probes::{self, Sample};
use crate::run::{Event, SamplePhase};
use crate::spec::model::{Probe, Sampling};
use crate::store::StoreError;

/// What the watch knows: the judge's tallies, why the run halted (if it did), and the
/// faults' reports still to come (a load's final report arrives at its revert).
pub(super) struct Watch {
    pub(super) judge: Judge,
    pub(super) halt: Option<Halt>,
    fault_events: mpsc::UnboundedReceiver<Event>,
}

/// Runs the method under watch; returns the watch and how the method ended. `Err` only for
/// a lost lease.
/// A fresh run starts with a new judge, no halt and the method as written; an adopted one
/// with what the journal says.
pub(super) async fn watch(
    sh: &Arc<Shared>,
    fault_events: mpsc::UnboundedReceiver<Event>,
    judge: Judge,
    halt: Option<Halt>,
    plan: Vec<Plan>,
) -> Result<(Watch, Result<(), StepError>), Halt> {
    let mut w = Watch {
        judge,
        halt: None,
        fault_events,
    };
    if let Some(h) = halt {
        w.halt_with(sh, h);
    }
    let probes_stop = CancellationToken::new();
    // Sampled once after the method instead, when the hypothesis says `before_after`.
    let continuous = sh.exp.sampling == Sampling::Continuous;
    let during: &[Probe] = if continuous { &sh.exp.hypothesis } else { &[] };
    let samples = spawn_probes(during, &probes_stop);
    let watched = w.watch_method(sh, samples, plan).await;
    probes_stop.cancel();
    let method = watched?;
    // The method may have ended *because* the halt token was cancelled (an abort through the
    // fast path or a shutdown) before the loop saw the token: ask why, so a halted run is
    // never mistaken for a completed one.
    if w.halt.is_none() && sh.halt.is_cancelled() {
        w.halt = Some(halt_reason(sh).await);
    }
    if !continuous && w.halt.is_none() && method.is_ok() {
        w.after_method(sh).await?;
    }
    sh.halt.cancel(); // ends any step still waiting (e.g. after a step error in a parallel group)
    Ok((w, method))
}

/// One task per probe, sampling at its interval until `stop`.
fn spawn_probes(hypothesis: &[Probe], stop: &CancellationToken) -> mpsc::Receiver<(usize, Sample)> {
    let (tx, rx) = mpsc::channel::<(usize, Sample)>(256);
    for (i, probe) in hypothesis.iter().enumerate() {
        let tx = tx.clone();
        let probe = probe.clone();
        let stop = stop.clone();
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
    rx
}

/// Why the halt token was cancelled: an abort request, or else the shutdown.
async fn halt_reason(sh: &Shared) -> Halt {
    pending_halt(sh)
        .await
        .unwrap_or_else(|| Halt::Shutdown(sh.eng.shutdown_reason()))
}

impl Watch {
    /// The loop: until the method task ends, or the lease is lost (`Err`).
    async fn watch_method(
        &mut self,
        sh: &Arc<Shared>,
        mut samples: mpsc::Receiver<(usize, Sample)>,
        plan: Vec<Plan>,
    ) -> Result<Result<(), StepError>, Halt> {
        let eng = &sh.eng;
        let method_task = {
            let sh = Arc::clone(sh);
            tokio::spawn(async move { run_steps(&sh, &plan).await }.in_current_span())
        };
        tokio::pin!(method_task);
        let mut abort_poll = tokio::time::interval(eng.abort_poll);
        let mut lease_tick = tokio::time::interval(eng.opts.lease / 3);
        lease_tick.tick().await;
        loop {
            tokio::select! {
                res = &mut method_task => {
                    return Ok(res.unwrap_or_else(|e| Err(StepError::from_join(e))));
                }
                Some((i, s)) = samples.recv() => self.on_sample(sh, i, &s).await?,
                Some(ev) = self.fault_events.recv() => self.on_fault_event(sh, ev).await?,
                _ = abort_poll.tick(), if self.halt.is_none() => {
                    if let Some(h) = pending_halt(sh).await {
                        self.halt_with(sh, h);
                    }
                }
                _ = sh.halt.cancelled(), if self.halt.is_none() => {
                    // Cancelled from this process (abort fast path or shutdown): find out why.
                    self.halt = Some(halt_reason(sh).await);
                }
                _ = eng.shutdown.cancelled(), if self.halt.is_none() => {
                    self.halt_with(sh, Halt::Shutdown(eng.shutdown_reason()));
                }
                _ = lease_tick.tick() => renew_lease(sh).await?,
            }
        }
    }

    /// `before_after` sampling: one round right after the method, in order, stopping at the
    /// first failure (as Chaos Toolkit checks its hypothesis after the method).
    async fn after_method(&mut self, sh: &Shared) -> Result<(), LeaseLost> {
        for (i, probe) in sh.exp.hypothesis.iter().enumerate() {
            let s = probes::sample(probe).await;
            self.on_sample(sh, i, &s).await?;
            if !s.ok {
                break;
            }
        }
        Ok(())
    }

    fn halt_with(&mut self, sh: &Shared, h: Halt) {
        self.halt = Some(h);
        sh.halt.cancel();
    }

    /// Journals a probe sample taken during the method and judges it.
    async fn on_sample(&mut self, sh: &Shared, i: usize, s: &Sample) -> Result<(), LeaseLost> {
        let probe = &sh.exp.hypothesis[i];
        journal_sample(sh, probe, SamplePhase::During, s).await?;
        if let Some(detail) = self.judge.tolerance_breach(i, s.ok) {
            let probe = probe.name.clone();
            append(sh, Event::ToleranceExceeded { probe, detail }).await?;
        }
        if self.halt.is_some() {
            return Ok(());
        }
        if let Some((condition, detail)) = self.judge.stop_condition(i, s.ok) {
            append(
                sh,
                Event::StopConditionMet {
                    probe: probe.name.clone(),
                    condition: condition.clone(),
                    detail: detail.clone(),
                },
            )
            .await?;
            let why = format!("probe `{}`: {detail}", probe.name);
            self.halt_with(sh, Halt::StopCondition(why));
        }
        Ok(())
    }

    /// Journals what faults reported after the method ended (up to their revert).
    pub(super) async fn drain_fault_events(&mut self, sh: &Shared) -> Result<(), LeaseLost> {
        while let Ok(ev) = self.fault_events.try_recv() {
            self.on_fault_event(sh, ev).await?;
        }
        Ok(())
    }

    /// Journals an event a fault reported, and judges load numbers against the stop
    /// conditions (each second) and the step's thresholds (at its end).
    async fn on_fault_event(&mut self, sh: &Shared, ev: Event) -> Result<(), LeaseLost> {
        match &ev {
            Event::LoadStats { step, stats, .. } => {
                let hit = match self.halt {
                    None => self.judge.load_stop(step, stats),
                    Some(_) => None,
                };
                let step = step.clone();
                append(sh, ev).await?;
                if let Some((condition, detail)) = hit {
                    self.on_load_stop(sh, step, condition, detail).await?;
                }
            }
            Event::LoadReport { step, stats, .. } => {
                let breaches = self.judge.load_report(step, stats);
                let step = step.clone();
                append(sh, ev).await?;
                for detail in breaches {
                    let probe = step.clone();
                    append(sh, Event::ToleranceExceeded { probe, detail }).await?;
                }
            }
            _ => append(sh, ev).await?,
        }
        Ok(())
    }

    async fn on_load_stop(
        &mut self,
        sh: &Shared,
        step: String,
        condition: String,
        detail: String,
    ) -> Result<(), LeaseLost> {
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
        self.halt_with(
            sh,
            Halt::StopCondition(format!("load step `{step}`: {detail}")),
        );
        Ok(())
    }
}

/// Keeps the run ours; a lease lost to another process stops the watch.
async fn renew_lease(sh: &Shared) -> Result<(), Halt> {
    let eng = &sh.eng;
    let owner = eng.instance().to_string();
    match eng
        .store()
        .renew_lease(&sh.run_id, &owner, eng.opts.lease)
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::LeaseLost(_)) => {
            sh.halt.cancel();
            Err(Halt::LeaseLost)
        }
        Err(e) => {
            warn!(error = %e, "cannot renew the run's lease; will retry");
            Ok(())
        }
    }
}
