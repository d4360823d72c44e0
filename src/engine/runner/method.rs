//! The method: its steps in order (parallel groups together), each fault held for its
//! duration and reverted at its end. Runs in its own task; any halt ends the waits early.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::fault::{inject, revert_one};
use super::halt::StepError;
use super::{Shared, set_state};
use crate::run::RunState;
use crate::spec::model::{FaultStep, Step};

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
        }
    })
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
