//! The journal: a run's append-only list of events, the single source of truth that every view
//! (terminal, Slack, summaries, exports) renders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::run::figures::{Latencies, LoadFigures};
use crate::run::source::RunSource;
use crate::run::{RollbackOutcome, RunState, Verdict};

/// When in the run a probe sample was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplePhase {
    /// Steady-state check before anything is injected.
    Before,
    /// While the method runs.
    During,
    /// After revert, verifying the steady state came back.
    After,
}

impl SamplePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplePhase::Before => "before",
            SamplePhase::During => "during",
            SamplePhase::After => "after",
        }
    }
}

/// A fault an agent reverted by itself: which step, why (`lease expired`, `deadline`, ...), when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReverted {
    pub step: String,
    pub reason: String,
    pub at_ms: i64,
}

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Submitted {
        experiment: String,
        title: String,
        requested_by: String,
        /// Where the request came from (stored as "cli", "slack:T:C:U", ...).
        source: RunSource,
        params: BTreeMap<String, String>,
        /// Every random decision in the run derives from this seed.
        seed: u64,
        targets: Vec<String>,
    },
    StateChanged {
        from: RunState,
        to: RunState,
    },
    ProbeSample {
        probe: String,
        phase: SamplePhase,
        ok: bool,
        latency_ms: f64,
        /// "200", "connected", or the reason it failed.
        detail: String,
    },
    FaultInjected {
        step: String,
        fault: String,
        target: String,
        summary: String,
        /// Unix ms at which the fault removes itself, whatever happens to the engine.
        deadline_ms: i64,
        /// The agent that holds the fault (`local` for the local agent); none when the
        /// controller put it in place itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    FaultReverted {
        step: String,
        target: String,
    },
    FaultRevertFailed {
        step: String,
        target: String,
        error: String,
    },
    /// The hypothesis tolerance was exceeded (the run will be `deviated`).
    ToleranceExceeded {
        probe: String,
        detail: String,
    },
    StopConditionMet {
        probe: String,
        condition: String,
        detail: String,
    },
    AbortRequested {
        by: String,
        reason: String,
    },
    StepFailed {
        step: String,
        error: String,
    },
    RollbackAction {
        name: String,
        ok: bool,
        detail: String,
    },
    /// What a probe with an `expect` returned, right after its sample (the judged output).
    ProbeOutput {
        probe: String,
        phase: SamplePhase,
        output: serde_json::Value,
    },
    /// A method action step ran (an http call or a declared command, once). `ok` is false
    /// only when it got no answer (or the command could not start or timed out).
    ActionRan {
        step: String,
        ok: bool,
        detail: String,
        /// What it returned: `{status, headers, body}` or `{status, stdout, stderr}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
    },
    /// Something about how the run was carried out that people should know (e.g. an https
    /// endpoint whose certificate is not checked).
    Warning {
        text: String,
    },
    /// The controller lost contact with an agent that holds faults of this run (the agent
    /// reverts them by itself when their lease lapses).
    AgentLost {
        agent: String,
        error: String,
    },
    /// Contact is back; the faults the agent had reverted by itself meanwhile.
    AgentBack {
        agent: String,
        reverted: Vec<AgentReverted>,
    },
    /// What an agent said or did that people should know: the lease terms of the run, a fault
    /// it had already reverted by itself, what it answered to a recovery.
    AgentNote {
        agent: String,
        text: String,
    },
    /// A restarted process closed a run that a dead process had left in flight.
    Recovered {
        reason: String,
        faults_reverted: u32,
    },
    /// The run's owner was lost and another process adopted the run to carry it on
    /// (`on_owner_loss: continue`): the faults stay, the judge resumes from the journal.
    Adopted {
        /// The owner that stopped.
        previous: String,
        /// The process that carries the run on.
        by: String,
        /// Where the method stands: what is in place and how much of it is left.
        detail: String,
    },
    Verdict {
        verdict: Verdict,
        rollback: RollbackOutcome,
        reason: String,
    },
    /// One second of a load step: rates, latencies (corrected for coordinated omission),
    /// status codes and errors.
    LoadStats {
        step: String,
        /// 1 for the first second of the step.
        second: u64,
        stats: LoadFigures,
    },
    /// A load step's totals, when it ends.
    LoadReport {
        step: String,
        target: String,
        /// How long the load ran.
        duration_ms: u64,
        stats: LoadFigures,
        /// Latency from the actual send (not corrected), for comparison.
        service_time: Latencies,
        /// Ended before its duration (reverted early, aborted, deadline).
        stopped_early: bool,
    },
}

impl Event {
    /// Stable short name of the event kind (the store's `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Submitted { .. } => "submitted",
            Event::StateChanged { .. } => "state_changed",
            Event::ProbeSample { .. } => "probe_sample",
            Event::FaultInjected { .. } => "fault_injected",
            Event::FaultReverted { .. } => "fault_reverted",
            Event::FaultRevertFailed { .. } => "fault_revert_failed",
            Event::ToleranceExceeded { .. } => "tolerance_exceeded",
            Event::StopConditionMet { .. } => "stop_condition_met",
            Event::AbortRequested { .. } => "abort_requested",
            Event::StepFailed { .. } => "step_failed",
            Event::RollbackAction { .. } => "rollback_action",
            Event::ActionRan { .. } => "action_ran",
            Event::ProbeOutput { .. } => "probe_output",
            Event::Warning { .. } => "warning",
            Event::AgentLost { .. } => "agent_lost",
            Event::AgentBack { .. } => "agent_back",
            Event::AgentNote { .. } => "agent_note",
            Event::Recovered { .. } => "recovered",
            Event::Adopted { .. } => "adopted",
            Event::Verdict { .. } => "verdict",
            Event::LoadStats { .. } => "load_stats",
            Event::LoadReport { .. } => "load_report",
        }
    }
}

/// An event as stored: its position in the run's journal and when it was appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub run_id: String,
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    pub event: Event,
}

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
