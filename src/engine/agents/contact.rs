//! When this process last heard from each agent: every answer counts (a refusal too), only
//! silence and answers that are not the agent API do not. `chaosbot agents` and `/chaos status`
//! show it beside an agent that is unreachable now.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::agent::protocol::{
    Applied, Apply, FaultList, Hello, ProxiesAnswer, ProxiesUp, Renew, Renewed, Revert, Reverted,
};
use crate::agent::{AgentError, AgentLink};
use crate::run::now_ms;

/// An [`AgentLink`] that remembers its last contact.
pub struct Tracked {
    inner: Arc<dyn AgentLink>,
    /// Unix ms of the last answer; 0 for never.
    last_ms: AtomicI64,
}

impl Tracked {
    pub fn new(inner: Arc<dyn AgentLink>) -> Arc<Tracked> {
        Arc::new(Tracked {
            inner,
            last_ms: AtomicI64::new(0),
        })
    }

    /// Unix ms of the last answer this process got, if any.
    pub fn last_contact_ms(&self) -> Option<i64> {
        Some(self.last_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    fn saw<T>(&self, r: Result<T, AgentError>) -> Result<T, AgentError> {
        let answered = match &r {
            Ok(_) => true,
            Err(e) => !matches!(
                e,
                AgentError::Unreachable { .. } | AgentError::Garbage { .. }
            ),
        };
        if answered {
            self.last_ms.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

#[async_trait::async_trait]
impl AgentLink for Tracked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn hello(&self) -> Result<Hello, AgentError> {
        self.saw(self.inner.hello().await)
    }
    async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, AgentError> {
        self.saw(self.inner.proxies_up(req).await)
    }
    async fn apply(&self, req: &Apply) -> Result<Applied, AgentError> {
        self.saw(self.inner.apply(req).await)
    }
    async fn renew(&self, req: &Renew) -> Result<Renewed, AgentError> {
        self.saw(self.inner.renew(req).await)
    }
    async fn revert(&self, fault_id: &str, req: &Revert) -> Result<Reverted, AgentError> {
        self.saw(self.inner.revert(fault_id, req).await)
    }
    async fn faults(&self) -> Result<FaultList, AgentError> {
        self.saw(self.inner.faults().await)
    }
}
