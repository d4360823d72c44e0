//! chaosbot: chaos engineering experiments run from Slack or the terminal.
//!
//! Data flows one way: **edge → app → engine → journal → views**.
//!
//! - [`config`] loads the operator's settings: the declared targets and the guard rails.
//! - [`spec`] turns experiment YAML into a validated [`spec::model::Experiment`].
//! - [`engine`] executes runs: a worker pool claims queued runs from the [`store`], walks the
//!   lifecycle state machine, injects [`faults`] (network toxics through a fault-injecting
//!   TCP proxy; process signals; cpu, memory, disk and io stress; HTTP load), samples
//!   [`probes`], and always reverts.
//! - [`load`] generates open-loop HTTP load for the `load` fault step.
//! - [`run`] holds the types every layer shares: a run's lifecycle state, its source and its
//!   journal, the append-only event list that is the single source of truth.
//! - [`gameday`] runs an agenda of experiments in one channel, one after another, with a Q&A
//!   window after each (a conference track), from plan files in the catalog.
//! - [`report`] renders journals for people (terminal view, final report).
//! - The CLI (`src/main.rs`, [`cli`]) and the Slack edge ([`slack::edge`]) only parse and call
//!   [`app`], the use cases (start, abort, abort all and its halt, resume, schedule, game day)
//!   with the authorization rules and one typed refusal; [`slack::projector`] renders journals
//!   into the channel through the persisted [`slack::outbox`], and [`slack::server`] puts the long-running process together.
//! - [`schedule`] starts experiments at planned times (heads-up, Skip, allowed hours, the halt
//!   `abort all` puts in force), through [`app`] as `/chaos start` does.
//! - [`clock`] and [`suggest`] (the "did you mean" hints) are small helpers any layer may use.

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
