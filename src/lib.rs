//! chaosbot: chaos engineering experiments run from Slack or the terminal.
//!
//! Data flows one way: **edge → app → engine → faults → journal → views**, and imports point
//! the same way (checked by `tests/cli/layering.rs`):
//!
//! - Edges: the CLI (`src/main.rs`, [`cli`]), [`slack`] (signed requests, commands, the
//!   Q&A, the scheduler and game-day driver, the persisted [`slack::outbox`], the thread
//!   [`slack::projector`]) and [`web`] (the live run pages behind signed links) only parse,
//!   authorize and render; they call [`app`].
//! - [`app`]: the use cases (start, abort, abort all and its halt, resume, schedule, game day)
//!   with the authorization rules and one typed refusal; the only caller of the engine's submit.
//! - [`engine`] executes runs: a worker pool claims queued runs from the [`store`], walks the
//!   lifecycle, injects [`faults`] (toxics through the fault-injecting TCP proxy; process
//!   signals; cpu, memory, disk and io stress; HTTP load from [`load`]), samples [`probes`],
//!   and always reverts.
//! - Views: [`report`] (summaries, periods, the learning record), rendered for Slack in
//!   [`slack`] and for the terminal in [`cli`].
//! - The domain below: [`schedule`] (when planned runs fire), [`gameday`] (plans), [`spec`]
//!   (experiment YAML into a validated [`spec::model::Experiment`]), [`store`] (narrow traits,
//!   one SQL body each over SQLite and Postgres), [`config`] (the operator's settings).
//! - [`run`] at the bottom: run state and verdicts, the journal's events (the single source of
//!   truth), the typed run source, the process identity.
//! - [`clock`], [`suggest`] ("did you mean") and [`tls`] are small helpers any layer may use.

pub mod agent;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod faults;
pub mod gameday;
pub mod load;
pub mod probes;
pub mod report;
pub mod run;
pub mod schedule;
pub mod slack;
pub mod spec;
pub mod store;
pub mod suggest;
pub mod tls;
pub mod web;
