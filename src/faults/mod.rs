//! Fault families behind one contract ([`FaultFamily`]): inject with a hard deadline the fault
//! enforces by itself, revert on demand (idempotently), and leave a persisted record that a
//! restarted process can use to undo what a dead one injected.

pub mod hostnet;
pub mod load;
pub mod network;
pub mod process;
pub mod proxy;
pub mod resource;
pub mod targets;
pub mod toxiproxy;

use std::time::Instant;

use crate::spec::model::{FaultSpec, FaultStep};
use crate::store::FaultRecord;

pub use targets::TargetRegistry;

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(transparent)]
    Target(#[from] targets::TargetError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Resource(#[from] resource::ResourceError),
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    #[error(transparent)]
    HostNet(#[from] hostnet::HostNetError),
    #[error(transparent)]
    Toxiproxy(#[from] toxiproxy::ToxiproxyError),
    #[error("{0}")]
    Other(String),
}

/// Everything a family needs to inject one step.
pub struct InjectContext<'a> {
    pub targets: &'a TargetRegistry,
    /// The run the fault belongs to (names what a fault leaves on another system, like a
    /// Toxiproxy server's toxic).
    pub run_id: &'a str,
    /// Seed for this step's random decisions (derived from the run's seed and the step name).
    pub seed: u64,
    /// The fault must be gone by this instant even if nobody reverts it.
    pub deadline: Instant,
    /// Where a fault reports what it measures while in place (the load's numbers); the
    /// runner journals these events and judges them against thresholds.
    pub events: tokio::sync::mpsc::UnboundedSender<crate::run::Event>,
}

/// A fault in place; dropping it does not revert it (the deadline does, eventually).
#[async_trait::async_trait]
pub trait ActiveFault: Send + Sync {
    /// Removes the fault. Calling it twice is harmless.
    async fn revert(&self) -> Result<(), FaultError>;
    /// One line for people: "latency 250ms on payments (downstream)".
    fn summary(&self) -> String;
}

/// One family of faults: network, process, resource, load.
#[async_trait::async_trait]
pub trait FaultFamily: Send + Sync {
    /// Name stored with each fault record ("network").
    fn name(&self) -> &'static str;

    /// Resolves what the fault will touch and returns what recovery needs to undo it (pids,
    /// paths...). The engine persists it *before* calling [`FaultFamily::inject`], so a crash
    /// between the two leaves a record to recover from. Errors here mean nothing was touched.
    async fn prepare(
        &self,
        step: &FaultStep,
        ctx: &InjectContext<'_>,
    ) -> Result<serde_json::Value, FaultError>;

    /// Applies the fault to exactly what `prepared` names.
    async fn inject(
        &self,
        step: &FaultStep,
        ctx: &InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn ActiveFault>, FaultError>;

    /// Undoes a fault left by a process that died. Returns what was done, for the journal.
    async fn recover(&self, record: &FaultRecord) -> Result<String, FaultError>;
}

/// The family that handles a step.
pub fn family_for(spec: &FaultSpec) -> &'static dyn FaultFamily {
    match spec {
        FaultSpec::Network { .. } => &network::NetworkFaults,
        FaultSpec::Process { .. } => &process::ProcessFaults,
        FaultSpec::Resource { .. } => &resource::ResourceFaults,
        FaultSpec::Load { .. } => &load::LoadFaults,
        FaultSpec::HostNetwork { .. } => &hostnet::HostNetFaults,
    }
}

/// The family registered under a stored name (for recovery).
pub fn family_named(name: &str) -> Option<&'static dyn FaultFamily> {
    match name {
        "network" => Some(&network::NetworkFaults),
        "process" => Some(&process::ProcessFaults),
        "resource" => Some(&resource::ResourceFaults),
        "load" => Some(&load::LoadFaults),
        hostnet::FAMILY => Some(&hostnet::HostNetFaults),
        _ => None,
    }
}

/// Derives a sub-seed for one labelled decision stream from the run's seed (SplitMix64 over
/// the label's FNV-1a hash), so each step's randomness is independent and replayable.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(42, "a"), derive_seed(42, "a"));
        assert_ne!(derive_seed(42, "a"), derive_seed(42, "b"));
        assert_ne!(derive_seed(42, "a"), derive_seed(43, "a"));
    }
}
