//! The method: its steps in order (parallel groups together, a sequence in a group in order), each fault held for its
//! duration and reverted at its end. Runs in its own task; any halt ends the waits early.
//!
//! The steps run as a [`Plan`]: a fresh run's is the method as written; an adopted run's
//! (`on_owner_loss: continue`) skips what the lost owner finished, holds the faults it left in
//! place for what remains of their steps, and runs the rest as written.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::fault::{inject, revert_one};
use super::halt::StepError;
use super::{Shared, append, set_state};
use crate::probes;
use crate::run::{Event, RunState};
use crate::spec::model::{Action, ActionStep, FaultStep, Step};

/// One step of the method as this process carries it out.
// Built once per run, like `Step` (which allows the same for its fault variant).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plan {
    /// Inject, hold for the step's duration, revert.
    Fault(FaultStep),
    /// Wait this long (a `wait` step, or what is left of one).
    Wait(Duration),
    /// A fault already in place (its record): hold it this much longer, then revert it.
    Hold {
        record_id: i64,
        left: Duration,
    },
    Parallel(Vec<Plan>),
    /// Steps in order (a member of a parallel group).
    Sequence(Vec<Plan>),
    /// A one-off action (an http call or a command), run once.
    Action(ActionStep),
    /// A fault (`Fault`, or `Hold` when already in place, or `Done`) held while `during` runs.
    Held {
        fault: Box<Plan>,
        during: Vec<Plan>,
        at_close: bool,
    },
    /// Finished before this process took the run over.
    Done,
}

impl Plan {
    /// The method as written.
    pub(super) fn of(steps: &[Step]) -> Vec<Plan> {
        steps.iter().map(Plan::of_step).collect()
    }

    fn of_step(step: &Step) -> Plan {
        match step {
            Step::Fault(f) => Plan::Fault(f.clone()),
            Step::Wait { duration } => Plan::Wait(*duration),
            Step::Parallel(inner) => Plan::Parallel(Plan::of(inner)),
            Step::Sequence(inner) => Plan::Sequence(Plan::of(inner)),
            Step::Action(a) => Plan::Action(a.clone()),
            Step::Held {
                fault,
                during,
                at_close,
            } => Plan::Held {
                fault: Box::new(Plan::Fault(fault.clone())),
                during: Plan::of(during),
                at_close: *at_close,
            },
        }
    }
}

pub(super) fn run_steps<'a>(
    sh: &'a Arc<Shared>,
    plan: &'a [Plan],
) -> BoxFuture<'a, Result<(), StepError>> {
    Box::pin(async move {
        for step in plan {
            if sh.halt.is_cancelled() {
                return Ok(());
            }
            run_step(sh, step).await?;
        }
        Ok(())
    })
}

fn run_step<'a>(sh: &'a Arc<Shared>, step: &'a Plan) -> BoxFuture<'a, Result<(), StepError>> {
    Box::pin(async move {
        match step {
            Plan::Wait(duration) => {
                set_state(sh, RunState::Observing).await?;
                hold(sh, *duration).await;
                Ok(())
            }
            Plan::Parallel(inner) => {
                futures::future::try_join_all(inner.iter().map(|s| run_step(sh, s))).await?;
                Ok(())
            }
            Plan::Sequence(inner) => run_steps(sh, inner).await,
            Plan::Fault(f) => run_fault(sh, f).await,
            Plan::Held {
                fault,
                during,
                at_close,
            } => run_held(sh, fault, during, *at_close).await,
            Plan::Hold { record_id, left } => {
                set_state(sh, RunState::Observing).await?;
                hold(sh, *left).await;
                if !sh.halt.is_cancelled() {
                    revert_one(sh, *record_id).await;
                }
                Ok(())
            }
            Plan::Done => Ok(()),
            Plan::Action(a) => {
                set_state(sh, RunState::Observing).await?;
                if sh.halt.is_cancelled() {
                    return Ok(());
                }
                let (ok, detail, output) = run_action(a).await;
                let step = a.name.clone();
                let event = Event::ActionRan {
                    step,
                    ok,
                    detail,
                    output,
                };
                append(sh, event).await?;
                Ok(())
            }
        }
    })
}

/// Runs an action once: whether it got an answer, what happened, and its output.
async fn run_action(a: &ActionStep) -> (bool, String, Option<serde_json::Value>) {
    match &a.action {
        Action::Http(h) => {
            let client = match probes::http::HttpClient::fresh_connections(&h.tls) {
                Ok(c) => c,
                Err(e) => return (false, format!("{} {}: {e}", h.method, h.url), None),
            };
            let headers = match h.endpoint_headers.over(&h.headers) {
                Ok(headers) => headers,
                Err(e) => return (false, format!("{} {}: {e}", h.method, h.url), None),
            };
            let call = client.exchange(&h.url, &h.method, &headers, h.body.as_deref());
            match tokio::time::timeout(a.timeout, call).await {
                Ok(Ok(answer)) => (
                    true,
                    format!("{} {} → {}", h.method, h.url, answer.status),
                    Some(probes::http_output(&answer)),
                ),
                Ok(Err(e)) => (false, e, None),
                Err(_) => (
                    false,
                    format!(
                        "{} {}: no answer within {}",
                        h.method,
                        h.url,
                        humantime::format_duration(a.timeout)
                    ),
                    None,
                ),
            }
        }
        Action::Command(c) => match probes::command::run(c, a.timeout).await {
            Ok(out) => (
                true,
                format!("`{}` exited {}", c.display(), out.status),
                Some(out.to_json()),
            ),
            Err(e) => (false, e, None),
        },
    }
}

/// Injects, holds for the step's duration, reverts (unless a halt leaves it to the end).
async fn run_fault(sh: &Arc<Shared>, f: &FaultStep) -> Result<(), StepError> {
    set_state(sh, RunState::Injecting).await?;
    if sh.halt.is_cancelled() {
        return Ok(());
    }
    let record_id = inject(sh, f).await.map_err(|cause| StepError::Fault {
        step: f.name.clone(),
        target: f.target.clone(),
        cause: Box::new(cause),
    })?;
    set_state(sh, RunState::Observing).await?;
    hold(sh, f.duration).await;
    if !sh.halt.is_cancelled() {
        revert_one(sh, record_id).await;
    }
    Ok(())
}

/// Injects (unless in place or done already), runs `during`, reverts when it ends or at the
/// step's duration, whichever comes first; `at_close` leaves the first case to the close.
async fn run_held(
    sh: &Arc<Shared>,
    fault: &Plan,
    during: &[Plan],
    at_close: bool,
) -> Result<(), StepError> {
    let held = match fault {
        Plan::Fault(f) => {
            set_state(sh, RunState::Injecting).await?;
            if sh.halt.is_cancelled() {
                return Ok(());
            }
            let record_id = inject(sh, f).await.map_err(|cause| StepError::Fault {
                step: f.name.clone(),
                target: f.target.clone(),
                cause: Box::new(cause),
            })?;
            Some((record_id, f.duration))
        }
        Plan::Hold { record_id, left } => Some((*record_id, *left)),
        _ => None,
    };
    set_state(sh, RunState::Observing).await?;
    let mut inner = run_steps(sh, during);
    let Some((record_id, bound)) = held else {
        return inner.await;
    };
    let first = tokio::select! {
        r = &mut inner => Some(r),
        _ = tokio::time::sleep(bound) => None,
    };
    match first {
        Some(r) => {
            if !at_close && !sh.halt.is_cancelled() {
                revert_one(sh, record_id).await;
            }
            r
        }
        // The fault's duration is its guard rail: it comes off, the steps go on.
        None => {
            if !sh.halt.is_cancelled() {
                revert_one(sh, record_id).await;
            }
            inner.await
        }
    }
}

async fn hold(sh: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = sh.halt.cancelled() => {}
    }
}
