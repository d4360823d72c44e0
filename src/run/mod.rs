//! Shared run types at the bottom of the tree: the lifecycle state and verdicts, the journal's
//! events, the load figures they carry, and where a run came from. Store, engine, views and
//! edges import these; this module imports nothing of the crate above it.

pub mod figures;
pub mod instance;
pub mod journal;
pub mod source;
pub mod state;

pub use figures::{Latencies, LoadFigures};
pub use journal::{AgentReverted, Entry, Event, SamplePhase, now_ms};
pub use source::{RunSource, SlackOrigin};
pub use state::{RollbackOutcome, RunState, Verdict};
