//! Why a use case did nothing: one enum for every edge. Each variant carries what an edge
//! needs to say it in its own words (the Slack edge keeps its ephemeral texts, the CLI prints
//! a line and picks an exit code).

use crate::engine::EngineError;
use crate::run::Verdict;
use crate::schedule::WhenError;
use crate::spec::SpecErrors;
use crate::store::StoreError;
use crate::store::gamedays::GamedayState;
use crate::store::schedules::Halt;

use super::policy::Denial;

/// What the store was asked to do when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Queue a run.
    Submit,
    ReadRun(String),
    /// Record the abort of one run.
    Abort(String),
    /// Record `abort all`.
    AbortAll,
    LiftHalt,
    SaveSchedule,
    ReadSchedule(String),
    RemoveSchedule(i64),
    ReadGamedays,
    RecordGameday,
    ReadGameday(String),
    StopGameday(String),
    ReadHalt,
    /// Look up who holds a run's targets.
    ReadHolds,
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such experiment in the catalog (the catalog's words, with a suggestion).
    #[error("{0}")]
    UnknownExperiment(String),
    #[error("{0}")]
    NotAllowed(Denial),
    #[error("{0}")]
    BadParameters(SpecErrors),
    /// `abort all` put a halt in force; nothing starts until it is lifted.
    #[error("a halt is in force (by {}: {}); nothing was started", .0.halted_by, .0.reason)]
    Halted(Box<Halt>),
    #[error(
        "experiment `{name}` may run for up to {wanted}, above the guard rail of {limit}; shorten it or raise guard_rails.max_run_duration"
    )]
    TooLong {
        name: String,
        wanted: String,
        limit: String,
    },
    #[error("the engine is shutting down; no new runs are accepted")]
    ShuttingDown,
    #[error("no run `{0}`")]
    NoSuchRun(String),
    #[error("run `{run_id}` has already finished; there is nothing to abort")]
    AlreadyFinished {
        run_id: String,
        verdict: Option<Verdict>,
    },
    #[error("run `{0}` finished before the abort arrived")]
    FinishedBeforeAbort(String),
    #[error("{0}")]
    BadWhen(WhenError),
    /// The operator's settings do not allow this (e.g. `[schedules]` hours).
    #[error("{0}")]
    BadSettings(String),
    #[error("no schedule `{0}`")]
    NoSuchSchedule(String),
    /// No such game-day plan, or a plan file with that name that did not validate.
    #[error("{message}")]
    UnknownPlan {
        name: String,
        message: String,
        problems: Vec<String>,
    },
    /// The caller may not start every experiment on the plan's agenda (all or none).
    #[error(
        "game day `{plan}` was not started: not every experiment on its agenda may be started here"
    )]
    GamedayNotAllowed { plan: String, denials: Vec<Denial> },
    /// A game day is still running in the channel.
    #[error("game day `{id}` (`{plan}`) is still running in this channel")]
    GamedayBusy { id: String, plan: String },
    #[error("game-day plan `{plan}` cannot be recorded ({error})")]
    PlanNotRecordable { plan: String, error: String },
    #[error("no game day `{0}`")]
    NoSuchGameday(String),
    #[error("game day `{id}` is already {state}; there is nothing to stop")]
    GamedayNotRunning { id: String, state: GamedayState },
    #[error("game day `{0}` ended before the stop arrived")]
    GamedayEnded(String),
    /// A target of the experiment is held by another run (one run per target at a time).
    #[error("{}", held_text(.0))]
    TargetHeld(Vec<crate::store::TargetHold>),
    #[error("the store failed ({source})")]
    Store { op: StoreOp, source: StoreError },
}

fn held_text(holds: &[crate::store::TargetHold]) -> String {
    let list: Vec<String> = holds
        .iter()
        .map(|h| {
            format!(
                "target `{}` is held by run {} (started by {} from {})",
                h.target,
                h.run_id,
                h.requested_by,
                h.source.describe()
            )
        })
        .collect();
    format!("{}; nothing was started", list.join("; "))
}

impl Refusal {
    pub(crate) fn store(op: StoreOp) -> impl FnOnce(StoreError) -> Refusal {
        move |source| match source {
            StoreError::Halted(h) => Refusal::Halted(h),
            source => Refusal::Store { op, source },
        }
    }

    pub(crate) fn engine(op: StoreOp) -> impl FnOnce(EngineError) -> Refusal {
        move |e| match e {
            EngineError::TooLong {
                name,
                wanted,
                limit,
            } => Refusal::TooLong {
                name,
                wanted,
                limit,
            },
            EngineError::ShuttingDown => Refusal::ShuttingDown,
            EngineError::Store(s) => Refusal::store(op)(s),
        }
    }
}
