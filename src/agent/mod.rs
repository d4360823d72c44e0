//! The data plane: `chaosbot agent`, one per host, owns everything that touches its host (the
//! fault proxies of its targets, process signals, cpu, memory, disk and io stress). Each fault
//! has a hard deadline and a lease its controller renews; the agent reverts at whichever comes
//! first (deadline, lease expiry, explicit revert, SIGTERM), by itself. What a revert needs is
//! written to a local journal, fsynced, before the fault is applied, and replayed at start.
//!
//! The agent process is [`server::run`] over an [`core::AgentCore`] (the fault table and its
//! rules), configured by [`config::AgentConfig`] and backed by [`journal::Journal`]:
//!
//! - Start: take `state_dir/agent.lock` (a second agent on the dir exits 75), replay the
//!   journal (undo every fault applied and not done, with its family's recovery), empty it,
//!   start every declared proxy (they stay up whatever controllers do), then listen.
//! - Apply: refuse load steps except on an endpoint the agent's own config declares (and only
//!   at its origin; the events the generator sends wait in the fault's buffer, drained by each
//!   renewal and by the revert), a target another run holds
//!   (`held`, naming the run) and a lower epoch than the run's (`stale_epoch`); a higher epoch
//!   takes the run's faults over. Then prepare, journal (fsynced), inject, and hold the fault
//!   until its deadline (`ttl_ms`) or its lease (`lease_ms`, renewed by `POST /v1/leases`)
//!   runs out, whichever comes first, or until its run reverts it.
//! - Reverted faults are remembered for ten minutes: a renewal or revert then answers why
//!   (`deadline`, `lease expired`, `revert requested`, `agent stopping`, `replayed at start`)
//!   and when.
//! - SIGTERM/SIGINT: revert everything, journal it, exit 0. The local agent (`--on-demand`)
//!   also exits 0 after its idle period with no fault held and no request.
//! - Metrics (`GET /metrics`): `chaosbot_agent_faults_in_place`,
//!   `chaosbot_agent_faults_applied_total{family}`, `chaosbot_agent_lease_renewals_total`,
//!   `chaosbot_agent_reverts_total{reason}`, `chaosbot_agent_revert_failures_total`,
//!   `chaosbot_agent_refusals_total{code}`, `chaosbot_agent_journal_replayed_total`.
//!
//! - Toxiproxy's HTTP API ([`toxiproxy`]), on its own listener (`[toxiproxy]` in agent.toml,
//!   127.0.0.1:8474 by default; the local agent with `--toxiproxy`), drives the same proxies.
//!
//! The controller (`serve`, `run`, `demo`) reaches agents through [`AgentLink`]: over HTTP
//! ([`protocol`]) for a separate agent process, local or remote.

mod api;
pub mod client;
pub mod config;
pub mod core;
pub mod journal;
pub mod local;
pub mod protocol;
pub mod server;
pub mod toxiproxy;

use protocol::{Applied, FaultList, Hello, ProxiesAnswer, ProxiesUp, Renewed, Reverted};

/// Why a call to an agent did not do what was asked. Every message names the agent and what
/// to check.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AgentError {
    #[error(
        "agent `{agent}` at {address} is unreachable: {why}. Check that `chaosbot agent` runs there and that the address and network path are right"
    )]
    Unreachable {
        agent: String,
        address: String,
        why: String,
    },
    #[error(
        "agent `{agent}` refused the credentials: {message}. Check that the secret (and client certificate) in this config match the agent's"
    )]
    Unauthenticated { agent: String, message: String },
    #[error(
        "agent `{agent}` speaks protocol {theirs}, this chaosbot speaks {ours}: run the same chaosbot version on both sides"
    )]
    Protocol {
        agent: String,
        theirs: String,
        ours: u32,
    },
    #[error(
        "agent `{agent}` answered something that is not the agent API ({why}). Check that its address points at `chaosbot agent` and not another service"
    )]
    Garbage { agent: String, why: String },
    #[error(
        "agent `{agent}` refuses: target `{target}` is held by run `{holder}`; wait for it or abort it"
    )]
    Held {
        agent: String,
        target: String,
        holder: String,
    },
    #[error(
        "agent `{agent}` refuses a stale lease epoch for run `{run_id}`: another controller now owns the run ({message})"
    )]
    StaleEpoch {
        agent: String,
        run_id: String,
        message: String,
    },
    /// Any other refusal, with the agent's `code` and message.
    #[error("agent `{agent}` refused ({code}): {message}")]
    Refused {
        agent: String,
        code: String,
        message: String,
    },
}

impl AgentError {
    /// The agent could not be reached (as opposed to answering with a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, AgentError::Unreachable { .. })
    }
}

/// One agent as the controller sees it.
#[async_trait::async_trait]
pub trait AgentLink: Send + Sync {
    /// The agent's name in the controller's config (`local` for the local agent).
    fn name(&self) -> &str;
    async fn hello(&self) -> Result<Hello, AgentError>;
    async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, AgentError>;
    async fn apply(&self, req: &protocol::Apply) -> Result<Applied, AgentError>;
    async fn renew(&self, req: &protocol::Renew) -> Result<Renewed, AgentError>;
    async fn revert(&self, fault_id: &str, req: &protocol::Revert) -> Result<Reverted, AgentError>;
    async fn faults(&self) -> Result<FaultList, AgentError>;
}
