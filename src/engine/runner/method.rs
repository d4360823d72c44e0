//! The method: its steps in order (parallel groups together), each fault held for its
//! duration and reverted at its end. Runs in its own task; any halt ends the waits early.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::fault::{inject, revert_one};
use super::halt::StepError;
use super::{Shared, append, set_state};
use crate::probes;
use crate::run::{Event, RunState};
use crate::spec::model::{Action, ActionStep, FaultStep, Step};

pub(super) fn run_steps<'a>(
    sh: &'a Arc<Shared>,
    steps: &'a [Step],
) -> BoxFuture<'a, Result<(), StepError>> {
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

fn run_step<'a>(sh: &'a Arc<Shared>, step: &'a Step) -> BoxFuture<'a, Result<(), StepError>> {
    Box::pin(async move {
        match step {
            Step::Wait { duration } => {
                set_state(sh, RunState::Observing).await?;
                hold(sh, *duration).await;
                Ok(())
            }
            Step::Parallel(inner) => {
                futures::future::try_join_all(inner.iter().map(|s| run_step(sh, s))).await?;
                Ok(())
            }
            Step::Fault(f) => run_fault(sh, f).await,
            Step::Action(a) => {
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
            let call = client.exchange(&h.url, &h.method, &h.headers, h.body.as_deref());
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

async fn hold(sh: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = sh.halt.cancelled() => {}
    }
}
