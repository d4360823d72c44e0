//! Starting and stopping runs: start, abort one, abort all (with the halt), resume.

use tracing::{info, warn};

use super::policy::{self, Caller};
use super::{App, Refusal, StoreOp};
use crate::engine::SubmitRequest;
use crate::run::{RunSource, RunState, SlackOrigin};
use crate::spec::model::Experiment;
use crate::store::schedules::Halt;
use crate::store::{AbortOutcome, AbortScope, StoreError};

/// What the abort of one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortedOne {
    /// It was still queued and is closed; nothing was injected.
    CancelledQueued,
    /// It is running and now reverting.
    Reverting,
}

/// What putting the halt in force did.
#[derive(Debug)]
pub enum HaltPut {
    /// This call put it in force.
    New(Halt),
    /// One was already in force; it stays.
    Already(Halt),
    /// It could not be recorded (the runs are aborted anyway).
    Failed(StoreError),
}

#[derive(Debug)]
pub struct AbortAllOutcome {
    pub halt: HaltPut,
    pub aborted: AbortOutcome,
}

impl App {
    /// Finds `name` in the catalog, checks that `user` may start it in `channel`, and resolves
    /// its parameters: exactly what a start checks, so a schedule can check it ahead of time.
    pub fn prepare(
        &self,
        user: &str,
        channel: &str,
        name: &str,
        params: &[(String, String)],
    ) -> Result<Experiment, Refusal> {
        let catalog = self.catalog();
        catalog.find(name).map_err(Refusal::UnknownExperiment)?;
        policy::may_start(&self.cfg.slack, user, channel, name).map_err(Refusal::NotAllowed)?;
        catalog
            .resolve(name, &self.cfg, params)
            .map_err(Refusal::BadParameters)
    }

    /// `start <experiment> [key=value …]` by a person: prepare, then launch from their channel.
    pub async fn start(
        &self,
        origin: &SlackOrigin,
        name: &str,
        params: &[(String, String)],
    ) -> Result<(String, Experiment), Refusal> {
        let exp = self.prepare(&origin.user, &origin.channel, name, params)?;
        let id = self
            .launch(&exp, &origin.user, RunSource::Slack(origin.clone()), None)
            .await?;
        Ok((id, exp))
    }

    /// Refuses when another run holds one of the experiment's targets (for callers that do
    /// not want to wait in the queue behind it, like `chaosbot run` without `--wait`).
    pub async fn check_targets_free(&self, exp: &Experiment) -> Result<(), Refusal> {
        let holds = self
            .store
            .target_holders(&exp.targets())
            .await
            .map_err(Refusal::store(StoreOp::ReadHolds))?;
        if holds.is_empty() {
            Ok(())
        } else {
            Err(Refusal::TargetHeld(holds))
        }
    }

    /// Where a queued run stands: what holds its targets and how many runs are ahead of it.
    pub async fn queue_place(&self, run_id: &str) -> Result<crate::store::QueuePlace, Refusal> {
        self.store
            .queue_place(run_id)
            .await
            .map_err(Refusal::store(StoreOp::ReadHolds))
    }

    /// Queues a resolved experiment (the guard rails are checked by the engine, the halt by
    /// the store as it creates the run). The only place runs are submitted.
    pub async fn launch(
        &self,
        exp: &Experiment,
        requested_by: &str,
        source: RunSource,
        seed: Option<u64>,
    ) -> Result<String, Refusal> {
        let from = source.describe();
        let req = SubmitRequest {
            requested_by: requested_by.to_string(),
            source,
            seed,
        };
        match self.engine.submit(exp, req).await {
            Ok(id) => {
                info!(run_id = %id, experiment = %exp.name, from = %from, "run submitted");
                Ok(id)
            }
            Err(e) => {
                let refusal = Refusal::engine(StoreOp::Submit)(e);
                if matches!(refusal, Refusal::Store { .. }) {
                    warn!(error = %refusal, "cannot submit a run");
                }
                Err(refusal)
            }
        }
    }

    /// Aborts one run the caller may see and may abort.
    pub async fn abort(
        &self,
        caller: &Caller,
        run_id: &str,
        reason: &str,
    ) -> Result<AbortedOne, Refusal> {
        let run = self
            .store
            .get_run(run_id)
            .await
            .map_err(|e| {
                warn!(error = %e, run_id, "cannot read a run");
                Refusal::store(StoreOp::ReadRun(run_id.to_string()))(e)
            })?
            .filter(|r| policy::visible(&self.cfg.slack, caller, r))
            .ok_or_else(|| Refusal::NoSuchRun(run_id.to_string()))?;
        policy::may_abort(&self.cfg.slack, caller, &run).map_err(Refusal::NotAllowed)?;
        if run.state == RunState::Done {
            return Err(Refusal::AlreadyFinished {
                run_id: run.id,
                verdict: run.verdict,
            });
        }
        let o = self
            .engine
            .abort(AbortScope::Run(run.id.clone()), caller.user(), reason)
            .await
            .map_err(|e| {
                warn!(error = %e, run_id, "abort failed");
                Refusal::engine(StoreOp::Abort(run.id.clone()))(e)
            })?;
        if !o.cancelled_queued.is_empty() {
            Ok(AbortedOne::CancelledQueued)
        } else if !o.signalled_running.is_empty() {
            Ok(AbortedOne::Reverting)
        } else {
            Err(Refusal::FinishedBeforeAbort(run.id))
        }
    }

    /// `abort all`: puts the halt in force *first*, so nothing new starts while the runs are
    /// aborted (a start racing it is refused by the store, or created before the halt and
    /// aborted here), then aborts every queued and running run.
    pub async fn abort_all(
        &self,
        caller: &Caller,
        reason: &str,
    ) -> Result<AbortAllOutcome, Refusal> {
        policy::may_abort_all(&self.cfg.slack, caller).map_err(Refusal::NotAllowed)?;
        let user = caller.user();
        let halt = match self.store.set_halt(user, reason, self.clock.now_ms()).await {
            Ok(h) if h.halted_by == user && h.reason == reason => {
                info!(user, reason, "halt in force");
                HaltPut::New(h)
            }
            Ok(h) => HaltPut::Already(h),
            Err(e) => {
                warn!(error = %e, "cannot record the halt");
                HaltPut::Failed(e)
            }
        };
        let aborted = self
            .engine
            .abort(AbortScope::All, user, reason)
            .await
            .map_err(Refusal::engine(StoreOp::AbortAll))?;
        Ok(AbortAllOutcome { halt, aborted })
    }

    /// Lifts the halt; the halt that was in force, if any.
    pub async fn resume(&self, caller: &Caller) -> Result<Option<Halt>, Refusal> {
        policy::may_abort_all(&self.cfg.slack, caller).map_err(Refusal::NotAllowed)?;
        let lifted = self
            .store
            .lift_halt(caller.user(), self.clock.now_ms())
            .await
            .map_err(Refusal::store(StoreOp::LiftHalt))?;
        if lifted.is_some() {
            info!(user = caller.user(), "halt lifted");
        }
        Ok(lifted)
    }
}
