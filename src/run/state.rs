//! The run lifecycle as an explicit state machine.
//!
//! ```text
//! queued → checking_steady_state → injecting ⇄ observing → reverting → verifying → done
//!    └──────────────┴──────────────────┴──────────┴─→ reverting (abort, stop, error)
//! queued → done (aborted before it started, or failed to start)
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    CheckingSteadyState,
    Injecting,
    Observing,
    Reverting,
    Verifying,
    Done,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::CheckingSteadyState,
        RunState::Injecting,
        RunState::Observing,
        RunState::Reverting,
        RunState::Verifying,
        RunState::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::CheckingSteadyState => "checking_steady_state",
            RunState::Injecting => "injecting",
            RunState::Observing => "observing",
            RunState::Reverting => "reverting",
            RunState::Verifying => "verifying",
            RunState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A run in this state is owned by a live worker (and must be recovered if that worker dies).
    pub fn is_active(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Done)
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_go_to(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Queued, CheckingSteadyState)
                | (Queued, Done)
                | (CheckingSteadyState, Injecting)
                | (CheckingSteadyState, Reverting)
                | (CheckingSteadyState, Done)
                | (Injecting, Observing)
                | (Injecting, Reverting)
                | (Observing, Injecting)
                | (Observing, Reverting)
                | (Reverting, Verifying)
                | (Reverting, Done)
                | (Verifying, Done)
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of the hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The hypothesis held throughout.
    Held,
    /// The hypothesis broke while the faults were in place.
    Deviated,
    /// Halted by a person, a stop condition, a shutdown or crash recovery.
    Aborted,
    /// The run itself could not execute (steady state missing before injection, a step error).
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Deviated => "deviated",
            Verdict::Aborted => "aborted",
            Verdict::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Verdict> {
        [
            Verdict::Held,
            Verdict::Deviated,
            Verdict::Aborted,
            Verdict::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
    /// CLI exit code: 0 held, 1 deviated, 2 aborted or failed.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Held => 0,
            Verdict::Deviated => 1,
            Verdict::Aborted | Verdict::Failed => 2,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the system was put back, verified by re-running the hypothesis probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackOutcome {
    /// Every fault removed and the probes show the steady state again.
    Reverted,
    /// A fault could not be removed, or the steady state did not come back.
    RevertFailed,
    /// Nothing was injected, so there was nothing to put back.
    NothingToRevert,
}

impl RollbackOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackOutcome::Reverted => "reverted",
            RollbackOutcome::RevertFailed => "revert-failed",
            RollbackOutcome::NothingToRevert => "nothing-to-revert",
        }
    }
    pub fn parse(s: &str) -> Option<RollbackOutcome> {
        [
            RollbackOutcome::Reverted,
            RollbackOutcome::RevertFailed,
            RollbackOutcome::NothingToRevert,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for RollbackOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_happy_path_is_allowed() {
        use RunState::*;
        let path = [
            Queued,
            CheckingSteadyState,
            Injecting,
            Observing,
            Injecting,
            Observing,
            Reverting,
            Verifying,
            Done,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
        }
    }

    #[test]
    fn no_injection_without_steady_state_check_and_no_leaving_done() {
        use RunState::*;
        assert!(!Queued.can_go_to(Injecting));
        assert!(!Queued.can_go_to(Observing));
        for s in RunState::ALL {
            assert!(!Done.can_go_to(s), "done -> {s}");
        }
        // Once reverting starts, the run never injects again.
        assert!(!Reverting.can_go_to(Injecting));
        assert!(!Verifying.can_go_to(Injecting));
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        for v in ["held", "deviated", "aborted", "failed"] {
            assert_eq!(Verdict::parse(v).map(|v| v.as_str()), Some(v));
        }
    }
}
