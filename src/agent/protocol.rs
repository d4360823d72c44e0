//! The agent API, version 1: JSON over HTTP/1.1, on a Unix socket, loopback, or TLS.
//!
//! Every request but `GET /metrics` carries `Authorization: Bearer <secret>` (a Unix socket
//! may omit it: its file mode is the credential) and `x-chaosbot-protocol: 1`. Requests that
//! act on a fault carry the run, the fault id and the lease epoch, so a stale controller
//! cannot renew or revert a fault another controller now owns.
//!
//! | method and path                 | body → answer                                  |
//! |---------------------------------|------------------------------------------------|
//! | `GET  /v1/hello`                | → [`Hello`]                                     |
//! | `POST /v1/proxies`              | [`ProxiesUp`] → [`ProxiesAnswer`]              |
//! | `POST /v1/faults`               | [`Apply`] → [`Applied`] (201)                   |
//! | `POST /v1/leases`               | [`Renew`] → [`Renewed`]                         |
//! | `POST /v1/faults/{id}/revert`   | [`Revert`] → [`Reverted`]                       |
//! | `GET  /v1/faults`               | → [`FaultList`]                                 |
//! | `GET  /metrics`                 | → Prometheus text                              |
//!
//! Refusals are a non-2xx status with an [`ErrorBody`] whose `code` says which case it is.

use serde::{Deserialize, Serialize};

use crate::config::{DiskTarget, HostTarget, ProcessTarget, ProxyTarget};
use crate::spec::model::FaultStep;

/// The protocol this build speaks; an agent refuses any other with `code = "protocol"`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header naming the protocol version of a request.
pub const PROTOCOL_HEADER: &str = "x-chaosbot-protocol";

/// Lease terms chosen for agents (README, "Leases"): the controller renews every
/// [`RENEW_EVERY_MS`]; a lease not renewed for [`LEASE_TTL_MS`] lapses and the agent reverts.
pub const RENEW_EVERY_MS: u64 = 2_000;
pub const LEASE_TTL_MS: u64 = 10_000;

/// `GET /v1/hello`: who the agent is and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub agent: String,
    /// chaosbot's version (the crate version).
    pub version: String,
    pub protocol: u32,
    /// Started on demand by a controller (exits when idle) rather than run as a service.
    pub on_demand: bool,
    /// Names of the targets the agent's own config declares.
    pub targets: Vec<String>,
    pub faults: Vec<FaultView>,
}

/// A target declaration sent by a controller to the local agent (a Unix socket only: a
/// configured agent decides what may be touched on its host and refuses declarations).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetDecl {
    Proxy(ProxyTarget),
    Process(ProcessTarget),
    Host(HostTarget),
    Disk(DiskTarget),
}

impl TargetDecl {
    pub fn name(&self) -> &str {
        match self {
            TargetDecl::Proxy(t) => &t.name,
            TargetDecl::Process(t) => &t.name,
            TargetDecl::Host(t) => &t.name,
            TargetDecl::Disk(t) => &t.name,
        }
    }
}

/// `POST /v1/proxies`: start (if not yet up) the proxies of these targets and say where they
/// listen and whether their upstreams answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxiesUp {
    pub names: Vec<String>,
    /// Declarations, for the local agent only (see [`TargetDecl`]).
    #[serde(default)]
    pub declare: Vec<TargetDecl>,
    /// Also try a TCP connection to each upstream.
    #[serde(default)]
    pub check_upstreams: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxiesAnswer {
    pub proxies: Vec<ProxyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxyView {
    pub name: String,
    /// Where clients connect (the bound address: a declared port 0 is resolved).
    pub listen: String,
    pub upstream: String,
    /// Why the upstream did not accept a connection, when `check_upstreams` was asked.
    #[serde(default)]
    pub upstream_error: Option<String>,
}

/// `POST /v1/faults`: put one fault in place under a lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Apply {
    pub run_id: String,
    /// The controller's ownership epoch of the run: a higher epoch takes the run's faults over,
    /// a lower one is refused.
    pub epoch: u64,
    /// Chosen by the controller (unique per run and step), so a retried apply is idempotent and
    /// the controller can record the id before anything is touched.
    pub fault_id: String,
    pub step: FaultStep,
    /// Seed for the fault's random decisions.
    pub seed: u64,
    /// Hard deadline, from the agent's receipt of the request: the fault is gone by then.
    pub ttl_ms: u64,
    /// The lease: without a renewal within this long, the agent reverts.
    pub lease_ms: u64,
    /// The target's declaration, for the local agent only.
    #[serde(default)]
    pub declare: Option<TargetDecl>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    pub fault_id: String,
    /// One line for people: "latency 250ms on payments (downstream)".
    pub summary: String,
    /// Unix ms.
    pub deadline_ms: i64,
    pub lease_until_ms: i64,
}

/// `POST /v1/leases`: renew the leases of a run's faults on this agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Renew {
    pub run_id: String,
    pub epoch: u64,
    pub fault_ids: Vec<String>,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Renewed {
    pub faults: Vec<LeaseState>,
}

/// One fault's answer to a renewal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseState {
    pub fault_id: String,
    #[serde(flatten)]
    pub state: FaultState,
    /// What the fault reported since the previous renewal (a load step's `LoadStats`), in
    /// order; each renewal drains them, so the controller receives every event once.
    #[serde(default)]
    pub events: Vec<crate::run::Event>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FaultState {
    /// In place; the lease now runs to `lease_until_ms`.
    Held { lease_until_ms: i64 },
    /// Already reverted by the agent: why (`deadline`, `lease expired`, `revert requested`,
    /// `agent stopping`, `replayed at start`) and when (unix ms).
    Gone { reason: String, at_ms: i64 },
    /// The agent has no record of it.
    Unknown,
}

/// `POST /v1/faults/{id}/revert`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revert {
    pub run_id: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reverted {
    pub fault_id: String,
    /// When the agent had already reverted it by itself: why and when. `None`: this request
    /// reverted it.
    #[serde(default)]
    pub earlier: Option<Gone>,
    /// What the fault reported after the last renewal, up to its revert (a load step's
    /// final `LoadReport` arrives while the revert stops the generator).
    #[serde(default)]
    pub events: Vec<crate::run::Event>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gone {
    pub reason: String,
    pub at_ms: i64,
}

/// `GET /v1/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultList {
    pub faults: Vec<FaultView>,
}

/// A fault in place on an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultView {
    pub fault_id: String,
    pub run_id: String,
    pub epoch: u64,
    pub step: String,
    pub target: String,
    /// Fault family: "network", "process", "resource", "load".
    pub family: String,
    pub summary: String,
    pub applied_ms: i64,
    pub deadline_ms: i64,
    pub lease_until_ms: i64,
}

/// The body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// One of the `code_*` constants below.
    pub code: String,
    /// What was wrong and what to do, for people.
    pub message: String,
    /// For `held`: the run that holds the target.
    #[serde(default)]
    pub holder: Option<String>,
}

/// 401: no or wrong credentials.
pub const CODE_UNAUTHENTICATED: &str = "unauthenticated";
/// 400: another protocol version.
pub const CODE_PROTOCOL: &str = "protocol";
/// 400: a body that does not parse, or a request that makes no sense.
pub const CODE_BAD_REQUEST: &str = "bad_request";
/// 409: the target is held by another run's lease.
pub const CODE_HELD: &str = "held";
/// 409: the request's epoch is older than the one the fault is held under.
pub const CODE_STALE_EPOCH: &str = "stale_epoch";
/// 403: a declaration sent to an agent that decides its own targets.
pub const CODE_FORBIDDEN: &str = "forbidden";
/// 404: no such target or fault on this agent.
pub const CODE_NOT_FOUND: &str = "not_found";
/// 422: the fault could not be put in place (nothing was left touched).
pub const CODE_FAULT: &str = "fault";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_events_parse_as_before() {
        // What an agent of the first protocol-1 builds sends.
        let lease: LeaseState =
            serde_json::from_str(r#"{"fault_id":"r/s","state":"held","lease_until_ms":5}"#)
                .unwrap();
        assert!(lease.events.is_empty());
        assert_eq!(lease.state, FaultState::Held { lease_until_ms: 5 });
        let reverted: Reverted = serde_json::from_str(r#"{"fault_id":"r/s"}"#).unwrap();
        assert!(reverted.events.is_empty() && reverted.earlier.is_none());
    }
}
