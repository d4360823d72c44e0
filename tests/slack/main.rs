//! The Slack side, in one test binary: the edge (signatures, commands, events, buttons), the
//! outbox and Socket Mode against a fake Slack, the digest, schedules, game days, the Q&A
//! thread and `chaosbot serve` end to end.

#[path = "../support/mod.rs"]
mod support;

mod digest;
mod e2e;
mod edge;
mod gameday;
mod outbox;
mod pages;
mod qa;
mod replicas;
mod schedules;
mod socket;
