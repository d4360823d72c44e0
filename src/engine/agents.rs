//! The agent router: which agent holds each target's faults (a configured `[[agents]]` entry,
//! or the local agent started on demand), and the lease terms the runs use with them.

mod contact;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contact::Tracked;

use crate::agent::client::{AgentClient, ClientError};
use crate::agent::local::{LOCAL, LocalAgent};
use crate::agent::protocol::TargetDecl;
use crate::agent::{AgentError, AgentLink};
use crate::config::Config;
use crate::spec::model::OnOwnerLoss;

/// The local agent's name (re-exported for views that must not import the agent module).
pub const LOCAL_NAME: &str = LOCAL;

pub struct AgentRouter {
    cfg: Arc<Config>,
    local: Arc<dyn AgentLink>,
    /// Every agent's last contact, by name (the links above are these, wrapped).
    contacts: HashMap<String, Arc<Tracked>>,
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

/// How long a run's agent faults must outlast their owner's last renewal so that another
/// replica, on another host, can adopt them (`on_owner_loss: continue`): the run lease runs
/// out, the sweep notices (at most 2 s), the adopter takes the leases over; this is the margin
/// beyond the run lease.
pub const ADOPTION_MARGIN: Duration = Duration::from_secs(10);

/// The router the binary's `run`, `demo` and `serve` use: agents, unless `[agent] local =
/// "in-process"` keeps every fault inside the controller.
pub fn for_binary(cfg: &Arc<Config>) -> Result<Option<Arc<AgentRouter>>, ClientError> {
    if cfg.agent.local == crate::config::LocalAgentMode::InProcess {
        return Ok(None);
    }
    AgentRouter::from_config(Arc::clone(cfg)).map(|r| Some(Arc::new(r)))
}

impl AgentRouter {
    /// The lease asked for a run's faults. With `on_owner_loss: continue` it outlasts the run
    /// lease by [`ADOPTION_MARGIN`], so a replica on another host that adopts the run finds
    /// the faults still in place (with `revert`, the agents' own `lease_ttl`: the sooner a
    /// fault goes by itself, the better).
    pub fn fault_lease(&self, on_owner_loss: OnOwnerLoss, run_lease: Duration) -> Duration {
        match on_owner_loss {
            OnOwnerLoss::Revert => self.lease_ttl,
            OnOwnerLoss::Continue => self.lease_ttl.max(run_lease + ADOPTION_MARGIN),
        }
    }

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
        Ok(AgentRouter::tracked(
            cfg,
            Arc::new(local),
            Some(peek),
            configured,
            addresses,
        ))
    }

    /// A router over given links (tests, embedding).
    pub fn with_links(
        cfg: Arc<Config>,
        local: Arc<dyn AgentLink>,
        configured: Vec<Arc<dyn AgentLink>>,
    ) -> AgentRouter {
        let mut addresses = HashMap::new();
        addresses.insert(LOCAL.to_string(), LOCAL.to_string());
        let configured = configured
            .into_iter()
            .map(|l| (l.name().to_string(), l))
            .collect();
        AgentRouter::tracked(cfg, local, None, configured, addresses)
    }

    /// Wraps every link so the router knows when it last heard from each agent.
    fn tracked(
        cfg: Arc<Config>,
        local: Arc<dyn AgentLink>,
        local_peek: Option<Arc<dyn AgentLink>>,
        configured: HashMap<String, Arc<dyn AgentLink>>,
        addresses: HashMap<String, String>,
    ) -> AgentRouter {
        let mut contacts = HashMap::new();
        let mut track = |link: Arc<dyn AgentLink>| -> Arc<dyn AgentLink> {
            let t = Tracked::new(link);
            contacts.insert(t.name().to_string(), Arc::clone(&t));
            t
        };
        let local = track(local);
        let configured = configured
            .into_iter()
            .map(|(name, link)| (name, track(link)))
            .collect();
        AgentRouter {
            lease_ttl: cfg.agent.lease_ttl,
            renew_every: cfg.agent.renew_every,
            cfg,
            local,
            contacts,
            local_peek,
            configured,
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

impl AgentRouter {
    /// How often a controller re-asserts the proxies it relies on: well inside the local
    /// agent's one-minute idle exit, so the data path stays up for as long as a controller
    /// uses it (and comes back, re-declared, if the local agent was restarted).
    pub fn keep_up_every(&self) -> Duration {
        (self.renew_every * 5).min(Duration::from_secs(15))
    }

    /// Brings `names` up on their agents every [`AgentRouter::keep_up_every`] until `stop`.
    /// Failures are logged and retried at the next tick: the run or the server that needs the
    /// proxies reports its own errors.
    pub async fn keep_proxies_up(
        self: Arc<Self>,
        names: Vec<String>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if names.is_empty() {
            return;
        }
        let every = self.keep_up_every();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.proxies_up(&names, false).await {
                tracing::warn!(error = %e, "cannot keep the proxies up on their agents; retrying");
            }
        }
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
    /// Unix ms of the last answer this process had from it (now, when reachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<i64>,
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
                last_contact_ms: None,
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
            st.last_contact_ms = match st.reachable {
                true => Some(crate::run::now_ms()),
                false => self
                    .contacts
                    .get(&st.name)
                    .and_then(|c| c.last_contact_ms()),
            };
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
            (None, Some(e)) => format!(
                "{}  {}  unreachable: {e} (last contact: {})",
                self.name,
                self.address,
                match self.last_contact_ms {
                    Some(at) => format!(
                        "{} ago",
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from(now_ms - at).unwrap_or(0) / 1000
                        ))
                    ),
                    None => "none since this process started".into(),
                }
            ),
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
