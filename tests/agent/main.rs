//! The agent process, for real: the `chaosbot agent` binary on a tempdir state dir, spoken to
//! over its protocol, holding faults on real processes (a `sleep 600` child paused and
//! resumed), a real directory (fill files) and a real proxy in front of a loopback echo server.
//! In `hosts`, agents on their own network namespaces, driven by a controller outside.

mod client;
mod hosts;
mod leases;
mod lifecycle;
#[path = "../support/ports.rs"]
mod ports;
mod rig;
mod security;
mod toxi_clients;
mod toxiproxy;
