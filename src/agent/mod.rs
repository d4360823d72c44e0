//! The data plane: `chaosbot agent`, one per host, owns everything that touches its host (the
//! fault proxies of its targets, process signals, cpu, memory, disk and io stress). Each fault
//! has a hard deadline and a lease its controller renews; the agent reverts at whichever comes
//! first (deadline, lease expiry, explicit revert, SIGTERM), by itself. What a revert needs is
//! written to a local journal, fsynced, before the fault is applied, and replayed at start.
//!
//! The agent process is [`server::run`] over an [`core::AgentCore`] (the fault table and its
//! rules), configured by [`config::AgentConfig`] and backed by [`journal::Journal`].
//!
//! The controller (`serve`, `run`, `demo`) reaches agents through [`AgentLink`]: over HTTP
//! ([`protocol`]) for a separate agent process, local or remote.

pub mod client;
pub mod config;
pub mod core;
pub mod journal;
pub mod local;
pub mod protocol;
pub mod server;

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
