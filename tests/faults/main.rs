//! Fault families and the load attack, in one test binary: the proxy's toxics, process
//! faults, the load generator, and HTTPS for probes and the load attack (real TLS on loopback). Resource faults keep their own binary
//! (`tests/resource_faults.rs`): they measure this process's CPU time and resident memory,
//! which other tests running beside them in one process would skew.

#[path = "../support/mod.rs"]
mod support;

mod agent_load;
mod agent_mode;
mod https;
mod load;
mod process;
mod proxy;
