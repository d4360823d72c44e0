//! The engine, in one test binary: runs end to end on SQLite, replicas sharing Postgres, and
//! the faults-in-place gauge read from a real `chaosbot serve`'s `/metrics`.

#[path = "../support/mod.rs"]
mod support;

mod metrics;
mod replicas;
mod runs;
