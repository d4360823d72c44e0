//! The built-in fault-injecting TCP proxy: one listener per declared proxied target, forwarding
//! to its upstream, with toxics that can be added and removed while connections stay open.
//!
//! API CONTRACT (implemented by the proxy work; the engine depends only on this surface).

use std::net::SocketAddr;
use std::time::Instant;

use crate::faults::network::{Direction, ToxicKind};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "cannot listen on {addr} for target `{target}`: {source}. Is another process using the port? Pick a free port in the config or stop that process"
    )]
    Bind {
        target: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no toxic with id {0} on this proxy (it may have expired or been removed already)")]
    NoSuchToxic(u64),
    #[error("the proxy for `{0}` has shut down")]
    ShutDown(String),
}

/// What the operator declared for a proxied target.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub name: String,
    pub listen: SocketAddr,
    /// host:port of the real service.
    pub upstream: String,
}

/// A toxic to add, with the hard deadline it enforces on itself.
#[derive(Debug, Clone)]
pub struct ToxicRequest {
    /// Label shown in logs (the step name).
    pub label: String,
    pub kind: ToxicKind,
    pub direction: Direction,
    /// Probability in [0, 1] that a connection is affected; decided once per connection.
    pub toxicity: f64,
    /// Seed for every random decision of this toxic (toxicity draws, jitter, slice sizes).
    pub seed: u64,
    /// The proxy removes the toxic by itself at this instant, whoever else is alive.
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub struct ToxicInfo {
    pub id: u64,
    pub label: String,
    pub kind: ToxicKind,
    pub direction: Direction,
    pub toxicity: f64,
    pub deadline: Instant,
}

// TEMPORARY STAND-IN until the proxy implementation lands (replaced on merge).
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    pub open_connections: usize,
}
pub struct Proxy;
impl Proxy {
    pub async fn start(settings: ProxySettings) -> Result<ProxyHandle, ProxyError> {
        Ok(ProxyHandle {
            name: settings.name,
            upstream: settings.upstream,
            listen: settings.listen,
        })
    }
}
#[derive(Clone)]
pub struct ProxyHandle {
    name: String,
    upstream: String,
    listen: SocketAddr,
}
impl ProxyHandle {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }
    pub fn upstream(&self) -> &str {
        &self.upstream
    }
    pub fn add_toxic(&self, _req: ToxicRequest) -> Result<u64, ProxyError> {
        Ok(1)
    }
    pub fn remove_toxic(&self, _id: u64) -> Result<(), ProxyError> {
        Ok(())
    }
    pub fn remove_all_toxics(&self) {}
    pub fn toxics(&self) -> Vec<ToxicInfo> {
        Vec::new()
    }
    pub fn stats(&self) -> ProxyStats {
        ProxyStats::default()
    }
    pub async fn shutdown(&self) {}
}
