//! The engine, in one test binary: runs end to end on SQLite, and replicas sharing Postgres.

#[path = "../support/mod.rs"]
mod support;

mod replicas;
mod runs;
