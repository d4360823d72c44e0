//! The command line and the files it reads, in one test binary: the `chaosbot` binary as an
//! operator uses it, the shipped examples, the experiment spec's checks and the Slack app
//! manifest against Slack's schema (`.ci/run` runs that one first: `manifest::`), and the
//! layering of the source tree (imports point down the flow).

#[path = "../support/mod.rs"]
mod support;

mod chaostoolkit;
mod chart;
mod commands;
mod endpoint_headers;
mod examples;
mod layering;
mod manifest;
mod serve_lock;
mod spec;
