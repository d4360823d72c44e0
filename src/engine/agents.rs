//! The agent router: which agent holds each target's faults (a configured `[[agents]]` entry,
//! or the local agent started on demand), and the lease terms the runs use with them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::client::{AgentClient, ClientError};
use crate::agent::local::{LOCAL, LocalAgent};
use crate::agent::protocol::TargetDecl;
use crate::agent::{AgentError, AgentLink};
use crate::config::Config;

/// The local agent's name (re-exported for views that must not import the agent module).
pub const LOCAL_NAME: &str = LOCAL;

pub struct AgentRouter {
    cfg: Arc<Config>,
    local: Arc<dyn AgentLink>,
    /// The local agent's socket without starting it (for status views).
    local_peek: Option<Arc<dyn AgentLink>>,
    configured: HashMap<String, Arc<dyn AgentLink>>,
    /// Where each agent is, for people (socket path or URL).
    addresses: HashMap<String, String>,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
}

impl std::fmt::Debug for AgentRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRouter")
            .field("addresses", &self.addresses)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// The router the binary's `run`, `demo` and `serve` use: agents, unless `[agent] local =
/// "in-process"` keeps every fault inside the controller.
pub fn for_binary(cfg: &Arc<Config>) -> Result<Option<Arc<AgentRouter>>, ClientError> {
    if cfg.agent.local == crate::config::LocalAgentMode::InProcess {
        return Ok(None);
    }
    AgentRouter::from_config(Arc::clone(cfg)).map(|r| Some(Arc::new(r)))
}

impl AgentRouter {
    /// The agents of a (validated) config; the local one is only started when first needed.
    pub fn from_config(cfg: Arc<Config>) -> Result<AgentRouter, ClientError> {
        let socket = crate::agent::local::socket_path(cfg.agent.socket.as_deref());
        let local = LocalAgent::new(socket.clone()).map_err(|e| ClientError::Build {
            agent: LOCAL.into(),
            why: e.to_string(),
        })?;
        let peek: Arc<dyn AgentLink> = Arc::new(AgentClient::unix(LOCAL, socket.clone(), None)?);
        let mut addresses = HashMap::new();
        addresses.insert(LOCAL.to_string(), format!("unix://{}", socket.display()));
        let mut configured: HashMap<String, Arc<dyn AgentLink>> = HashMap::new();
        for entry in &cfg.agents {
            let client = AgentClient::from_entry(entry)?;
            addresses.insert(entry.name.clone(), entry.url.clone());
            configured.insert(entry.name.clone(), Arc::new(client));
        }
        Ok(AgentRouter {
            lease_ttl: cfg.agent.lease_ttl,
            renew_every: cfg.agent.renew_every,
            cfg,
            local: Arc::new(local),
            local_peek: Some(peek),
            configured,
            addresses,
        })
    }

    /// A router over given links (tests, embedding).
    pub fn with_links(
        cfg: Arc<Config>,
        local: Arc<dyn AgentLink>,
        configured: Vec<Arc<dyn AgentLink>>,
    ) -> AgentRouter {
        let mut addresses = HashMap::new();
        addresses.insert(LOCAL.to_string(), LOCAL.to_string());
        AgentRouter {
            lease_ttl: cfg.agent.lease_ttl,
            renew_every: cfg.agent.renew_every,
            configured: configured
                .into_iter()
                .map(|l| (l.name().to_string(), l))
                .collect(),
            cfg,
            local,
            local_peek: None,
            addresses,
        }
    }

    /// The agent that holds `target`'s faults.
    pub fn for_target(&self, target: &str) -> Arc<dyn AgentLink> {
        match self.cfg.agent_of(target) {
            Some(entry) => self
                .configured
                .get(&entry.name)
                .cloned()
                .unwrap_or_else(|| Arc::clone(&self.local)),
            None => Arc::clone(&self.local),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<dyn AgentLink>> {
        if name == LOCAL {
            return Some(Arc::clone(&self.local));
        }
        self.configured.get(name).cloned()
    }

    /// Every agent: the local one first, then the configured ones by name.
    pub fn all(&self) -> Vec<Arc<dyn AgentLink>> {
        let mut names: Vec<&String> = self.configured.keys().collect();
        names.sort();
        std::iter::once(Arc::clone(&self.local))
            .chain(
                names
                    .into_iter()
                    .filter_map(|n| self.configured.get(n).cloned()),
            )
            .collect()
    }

    pub fn address(&self, agent: &str) -> &str {
        self.addresses.get(agent).map(String::as_str).unwrap_or("?")
    }

    /// The declaration the local agent needs for `target` (configured agents decide their own).
    pub fn declaration(&self, target: &str) -> Option<TargetDecl> {
        if self.cfg.agent_of(target).is_some() {
            return None;
        }
        let cfg = &self.cfg;
        cfg.proxy_target(target)
            .map(|t| TargetDecl::Proxy(t.clone()))
            .or_else(|| {
                cfg.process_target(target)
                    .map(|t| TargetDecl::Process(t.clone()))
            })
            .or_else(|| cfg.host_target(target).map(|t| TargetDecl::Host(t.clone())))
            .or_else(|| cfg.disk_target(target).map(|t| TargetDecl::Disk(t.clone())))
    }

    /// Brings the proxies `names` up on their agents (grouped per agent), checking upstreams
    /// when asked. Returns each proxy's view, or the first agent's refusal.
    pub async fn proxies_up(
        &self,
        names: &[String],
        check_upstreams: bool,
    ) -> Result<Vec<crate::agent::protocol::ProxyView>, AgentError> {
        let mut groups: Vec<(Arc<dyn AgentLink>, Vec<String>)> = Vec::new();
        for name in names {
            let link = self.for_target(name);
            match groups.iter_mut().find(|(l, _)| l.name() == link.name()) {
                Some((_, g)) => g.push(name.clone()),
                None => groups.push((link, vec![name.clone()])),
            }
        }
        let mut views = Vec::new();
        for (link, names) in groups {
            let declare = names.iter().filter_map(|n| self.declaration(n)).collect();
            let answer = link
                .proxies_up(&crate::agent::protocol::ProxiesUp {
                    names,
                    declare,
                    check_upstreams,
                })
                .await?;
            views.extend(answer.proxies);
        }
        Ok(views)
    }
}

/// One agent as `chaosbot agents` and `/chaos status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub address: String,
    pub reachable: bool,
    /// Why not, when not reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    pub faults: Vec<crate::agent::protocol::FaultView>,
}

impl AgentRouter {
    /// Every agent's status. The local agent is asked without being started: "not running"
    /// is its normal idle state.
    pub async fn status(&self) -> Vec<AgentStatus> {
        let mut out = Vec::new();
        for link in self.all() {
            let name = link.name().to_string();
            let asked = if name == LOCAL {
                self.local_peek.clone().unwrap_or_else(|| Arc::clone(&link))
            } else {
                link
            };
            let mut st = AgentStatus {
                address: self.address(&name).to_string(),
                name,
                reachable: false,
                error: None,
                version: None,
                protocol: None,
                faults: Vec::new(),
            };
            match asked.hello().await {
                Ok(h) => {
                    st.reachable = true;
                    st.version = Some(h.version);
                    st.protocol = Some(h.protocol);
                    st.faults = h.faults;
                }
                Err(e) if st.name == LOCAL && e.is_unreachable() => {
                    st.error = Some("not running (started on demand by the next run)".into());
                }
                Err(e) => st.error = Some(e.to_string()),
            }
            out.push(st);
        }
        out
    }
}

impl AgentStatus {
    /// Lines for people: the agent, then one per fault in place.
    pub fn lines(&self, now_ms: i64) -> Vec<String> {
        let head = match (&self.version, &self.error) {
            (Some(v), _) => format!(
                "{}  {}  reachable  chaosbot {v}, protocol {}  {} fault(s)",
                self.name,
                self.address,
                self.protocol.unwrap_or_default(),
                self.faults.len()
            ),
            (None, Some(e)) => format!("{}  {}  unreachable: {e}", self.name, self.address),
            (None, None) => format!("{}  {}", self.name, self.address),
        };
        let left = |until: i64| {
            let ms = u64::try_from(until - now_ms).unwrap_or(0);
            humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
        };
        std::iter::once(head)
            .chain(self.faults.iter().map(|f| {
                format!(
                    "    run {} step `{}` on `{}`: {}; lease {} left, deadline {} left",
                    f.run_id,
                    f.step,
                    f.target,
                    f.summary,
                    left(f.lease_until_ms),
                    left(f.deadline_ms)
                )
            }))
            .collect()
    }
}
