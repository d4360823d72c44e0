//! The targets the agent serves: its proxies, and what controllers declare to the local agent.

use std::sync::Arc;

use super::{AgentCore, Refusal, State};
use crate::agent::protocol::{self, ProxiesAnswer, ProxiesUp, ProxyView, TargetDecl};
use crate::config::Config;

impl AgentCore {
    pub async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, Refusal> {
        {
            let mut st = self.inner.state.lock().await;
            for d in &req.declare {
                self.declare(&mut st, d)?;
            }
        }
        let cfg = self.inner.targets.config();
        let mut proxies = Vec::new();
        for name in &req.names {
            if cfg.proxy_target(name).is_none() {
                return Err(Refusal::new(
                    protocol::CODE_NOT_FOUND,
                    format!(
                        "agent `{}` has no proxy target `{name}`; declare it under [[targets.proxy]] in the agent's config",
                        self.inner.name
                    ),
                ));
            }
            let handle = self
                .inner
                .targets
                .proxy(name)
                .await
                .map_err(|e| Refusal::new(protocol::CODE_FAULT, e.to_string()))?;
            let upstream_error = if req.check_upstreams {
                self.inner
                    .targets
                    .check_upstream(name)
                    .await
                    .err()
                    .map(|e| e.to_string())
            } else {
                None
            };
            proxies.push(ProxyView {
                name: name.clone(),
                listen: handle.listen_addr().to_string(),
                upstream: handle.upstream().to_string(),
                upstream_error,
            });
        }
        Ok(ProxiesAnswer { proxies })
    }

    /// Adds a controller's target declaration (the local agent only). The same definition
    /// again is shared; another definition under a taken name is refused.
    pub(super) fn declare(&self, st: &mut State, decl: &TargetDecl) -> Result<(), Refusal> {
        if !self.inner.on_demand {
            return Err(Refusal::new(
                protocol::CODE_FORBIDDEN,
                format!(
                    "agent `{}` decides its own targets (its agent.toml); remove the declaration from the request and declare `{}` there",
                    self.inner.name,
                    decl.name()
                ),
            ));
        }
        let name = decl.name();
        if let Some(existing) = st.declared.get(name) {
            if existing == decl {
                return Ok(());
            }
            let show = |d: &TargetDecl| serde_json::to_string(d).unwrap_or_default();
            return Err(Refusal::new(
                protocol::CODE_BAD_REQUEST,
                format!(
                    "target `{name}` is already declared to the local agent as {} and this request declares it as {}; give one of them another name, or make the definitions the same",
                    show(existing),
                    show(decl)
                ),
            ));
        }
        let mut alone = Config::default();
        push_decl(&mut alone, decl.clone());
        alone.validate().map_err(|e| {
            Refusal::new(protocol::CODE_BAD_REQUEST, format!("declared target: {e}"))
        })?;
        let mut cfg = (*self.inner.targets.config()).clone();
        push_decl(&mut cfg, decl.clone());
        self.inner.targets.set_config(Arc::new(cfg));
        st.declared.insert(name.to_string(), decl.clone());
        Ok(())
    }
}

fn push_decl(cfg: &mut Config, decl: TargetDecl) {
    match decl {
        TargetDecl::Proxy(t) => cfg.targets.proxy.push(t),
        TargetDecl::Process(t) => cfg.targets.process.push(t),
        TargetDecl::Host(t) => cfg.targets.host.push(t),
        TargetDecl::Disk(t) => cfg.targets.disk.push(t),
    }
}

impl AgentCore {
    /// A load step is generated here only at an endpoint this agent's own config declares
    /// (`[[targets.http]]` in agent.toml), and only at that endpoint's origin: the agent, not
    /// the controller, decides where its host sends traffic.
    pub(super) fn check_load(&self, step: &str, target: &str, url: &str) -> Result<(), Refusal> {
        let cfg = self.inner.targets.config();
        let Some(endpoint) = cfg.http_endpoint(target) else {
            return Err(Refusal::new(
                protocol::CODE_BAD_REQUEST,
                format!(
                    "step `{step}` is a load step on `{target}`, which is not a [[targets.http]] endpoint of agent `{}`: load steps run on the controller unless their endpoint names an agent whose agent.toml declares it",
                    self.inner.name
                ),
            ));
        };
        let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
        match (origin(url), origin(&endpoint.url)) {
            (Some(a), Some(b)) if a == b => Ok(()),
            _ => Err(Refusal::new(
                protocol::CODE_FORBIDDEN,
                format!(
                    "load step `{step}` targets {url}, outside endpoint `{target}` ({}) as agent `{}` declares it; make the endpoint's url agree in chaosbot.toml and agent.toml",
                    endpoint.url, self.inner.name
                ),
            )),
        }
    }
}
