//! Fault families behind one contract: inject with a hard deadline the fault enforces by
//! itself, revert on demand, and leave a persisted record that a restarted process can use to
//! revert what a dead one injected.

pub mod network;
pub mod proxy;
