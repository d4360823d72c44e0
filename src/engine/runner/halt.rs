//! Why a run stops early, and what a failed step carries: typed, so the journal's step name
//! comes from the error itself rather than from parsing its message.

use std::fmt;

use crate::faults::FaultError;
use crate::store::StoreError;

/// The journal is no longer ours to write: another process took the run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseLost;

/// Why the method stopped before its end.
#[derive(Debug)]
pub(super) enum Halt {
    Abort { by: String, reason: String },
    StopCondition(String),
    Shutdown(String),
    StepFailed(StepError),
    LeaseLost,
}

impl From<LeaseLost> for Halt {
    fn from(_: LeaseLost) -> Halt {
        Halt::LeaseLost
    }
}

/// The reason a halted run's verdict gives.
impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Halt::Abort { by, reason } if reason.is_empty() => write!(f, "aborted by {by}"),
            Halt::Abort { by, reason } => write!(f, "aborted by {by}: {reason}"),
            Halt::StopCondition(s) => write!(f, "stop condition met: {s}"),
            Halt::Shutdown(s) => f.write_str(s),
            Halt::StepFailed(e) => write!(f, "a step failed: {e}"),
            Halt::LeaseLost => f.write_str("the run's lease was lost to another process"),
        }
    }
}

/// A step of the method that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// A fault step failed before its fault was in place.
    #[error("step `{step}`: {cause}")]
    Fault {
        step: String,
        target: String,
        /// Boxed: the fault and store errors are large, and the method's `Ok` is empty.
        cause: Box<InjectError>,
    },
    /// The lifecycle could not move on: the run was taken over mid-step.
    #[error("the run's lease was lost to another process")]
    LeaseLost,
    #[error("a step panicked: {0}")]
    Panicked(String),
    #[error("the method task ended unexpectedly: {0}")]
    TaskEnded(String),
}

impl StepError {
    /// The step the journal names: the fault step's own, or the method as a whole.
    pub(super) fn step(&self) -> &str {
        match self {
            StepError::Fault { step, .. } => step,
            _ => "method",
        }
    }

    /// The target of the fault step that failed.
    pub(super) fn target(&self) -> Option<&str> {
        match self {
            StepError::Fault { target, .. } => Some(target),
            _ => None,
        }
    }

    /// What the method task's end says when it did not return (a panic or a cancel).
    pub(super) fn from_join(e: tokio::task::JoinError) -> StepError {
        if !e.is_panic() {
            return StepError::TaskEnded(e.to_string());
        }
        let p = e.into_panic();
        let text = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        StepError::Panicked(text)
    }
}

impl From<LeaseLost> for StepError {
    fn from(_: LeaseLost) -> StepError {
        StepError::LeaseLost
    }
}

/// Where injecting one fault went wrong.
#[derive(Debug, thiserror::Error)]
pub(super) enum InjectError {
    /// Resolving what the fault touches; nothing was touched.
    #[error("{0}")]
    Prepare(FaultError),
    /// Recording the fault; without the record it is not injected.
    #[error("cannot record the fault before injecting it: {0}")]
    Record(StoreError),
    #[error("{0}")]
    Inject(FaultError),
    /// The agent that holds the target refused or could not be reached.
    #[error("{0}")]
    Agent(crate::agent::AgentError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_names_itself_and_keeps_the_message() {
        let e = StepError::Fault {
            step: "slow: db".into(),
            target: "db".into(),
            cause: Box::new(InjectError::Inject(FaultError::Other(
                "no such proxy".into(),
            ))),
        };
        assert_eq!(e.step(), "slow: db");
        assert_eq!(e.to_string(), "step `slow: db`: no such proxy");
        assert_eq!(
            Halt::StepFailed(e).to_string(),
            "a step failed: step `slow: db`: no such proxy"
        );
        assert_eq!(StepError::Panicked("boom".into()).step(), "method");
        assert_eq!(
            StepError::from(LeaseLost).to_string(),
            Halt::LeaseLost.to_string()
        );
    }
}
