//! The engine, in one test binary: runs end to end on SQLite, replicas sharing Postgres, the
//! faults-in-place gauge read from a real `chaosbot serve`'s `/metrics`, and `abort all`
//! racing starts through the application layer on both backends.

#[path = "../support/mod.rs"]
mod support;

mod agent_leases;
mod halt_race;
mod metrics;
mod replicas;
mod runs;
mod toxiproxy_backend;
mod wakeups;
