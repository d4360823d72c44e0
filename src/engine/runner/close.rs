//! Closing a run that injected (or tried to): a failed step journalled, every fault removed,
//! the rollbacks run, the steady state verified, and the verdict judged.

use std::sync::Arc;

use tracing::warn;

use super::fault::revert_all;
use super::halt::{Halt, StepError};
use super::verify::rollback_outcome;
use super::watch::Watch;
use super::{Outcome, Shared, append};
use crate::run::{Event, RollbackOutcome};

pub(super) async fn close(
    sh: &Arc<Shared>,
    mut w: Watch,
    method: Result<(), StepError>,
) -> Result<Outcome, Halt> {
    if let Err(e) = method
        && w.halt.is_none()
    {
        warn!(step = e.step(), step_target = e.target().unwrap_or_default(), error = %e, "a step failed");
        let event = Event::StepFailed {
            step: e.step().to_string(),
            error: e.to_string(),
        };
        append(sh, event).await?;
        w.halt = Some(Halt::StepFailed(e));
    }

    let revert_ok = revert_all(sh, true).await;
    let revert_failure = sh
        .revert_failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let revert_ok = revert_ok && revert_failure.is_none();
    // What faults reported up to their revert (a load's final report) is judged too.
    w.drain_fault_events(sh).await?;
    let rollback = rollback_outcome(sh, revert_ok).await?;

    let judged = w.judge.judgement(w.halt.as_ref());
    for (probe, detail) in judged.unreported {
        append(sh, Event::ToleranceExceeded { probe, detail }).await?;
    }
    let reason = match rollback {
        RollbackOutcome::RevertFailed => match revert_failure {
            Some(why) => format!("{}; REVERT FAILED for {why}", judged.reason),
            None => format!("{}; REVERT FAILED, see the journal", judged.reason),
        },
        _ => judged.reason,
    };
    Ok(Outcome {
        verdict: judged.verdict,
        rollback,
        reason,
    })
}
