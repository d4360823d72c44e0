//! The Slack edge: a team runs and watches experiments from a channel.
//!
//! - [`edge`]: request verification, the HTTP routes, the `/chaos` command grammar, events and
//!   interactions, authorization and the audit log. It only parses, authorizes and submits.
//! - [`api`]: the Slack Web API client.
//! - [`outbox`]: persisted, ordered, retried, coalesced delivery of every write to Slack.
//! - [`socket`]: Socket Mode, the WebSocket alternative to the HTTP routes.
//! - [`projector`] and [`render`]: a run's journal rendered into the channel (parent message,
//!   thread, summary), through the outbox.
//!
//! Nothing here injects faults; nothing in the engine knows about Slack. A run started from
//! Slack carries its origin in `RunRecord::source` (see [`SlackOrigin`]), which is how the
//! views find the channel to render into.

pub mod api;
pub mod blocks;
pub mod digest;
pub mod edge;
pub mod gameday;
pub mod outbox;
pub mod projector;
pub mod qa;
pub mod render;
pub mod scheduler;
pub mod schedules;
pub mod server;
pub mod socket;

pub use crate::run::SlackOrigin;

/// The outbox thread key of a run: its parent message and thread replies share it.
pub fn run_thread_key(run_id: &str) -> String {
    format!("run:{run_id}")
}

/// The outbox message key of a run's parent message.
pub fn run_parent_key(run_id: &str) -> String {
    format!("run:{run_id}:parent")
}
