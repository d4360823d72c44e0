//! What each Toxiproxy route does to the agent's proxies (the toxic routes in [`toxics`]).
//!
//! The proxies are the agent's own ([`crate::faults::TargetRegistry`]): those of agent.toml
//! (and the local agent's declarations) are listed and take toxics here, and those made here
//! become targets like any other. The proxy's toxic set is the truth: toxics a run holds under
//! a lease are listed beside this API's (by their step name) but only the run changes them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::Mutex;
use tracing::warn;

use super::model::{ApiError, ProxyInput, ProxyJson, ToxicJson, attributes_of};
use crate::agent::core::AgentCore;
use crate::config::ProxyTarget;
use crate::faults::proxy::{ProxyError, ProxyHandle, ToxicInfo, ToxicRequest};
use crate::faults::targets::TargetError;
use crate::spec::model::{Direction, ToxicKind};

mod toxics;

/// Where a proxy made without `listen` listens (Toxiproxy binds every interface; the agent
/// keeps such a proxy on loopback).
const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// How long a request waits for a proxy's listener to close or open after `enabled` changes.
const LISTENER_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// Proxies made through this API (only those may be moved or deleted through it).
    made: HashSet<String>,
    /// Seeds of the toxics added through this API, by proxy and toxic id.
    toxics: HashMap<String, HashMap<u64, u64>>,
}

/// Toxiproxy's model over the agent's proxies. One request changes it at a time.
pub struct Toxiproxy {
    core: AgentCore,
    deadline: Duration,
    state: Mutex<State>,
    /// The agent's runtime, where proxies run (the API answers on a thread of its own).
    main: Option<tokio::runtime::Handle>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn target_error(e: TargetError) -> ApiError {
    match e {
        TargetError::Taken(_) => ApiError::new(StatusCode::CONFLICT, "proxy already exists"),
        TargetError::Undeclared(_) => ApiError::proxy_not_found(),
        // A port in use and the like: Toxiproxy answers 500 with the listen error.
        other => internal(other),
    }
}

fn toxic_error(e: ProxyError) -> ApiError {
    match e {
        ProxyError::InvalidToxic { reason } => ApiError::new(StatusCode::BAD_REQUEST, reason),
        ProxyError::NoSuchToxic(_) => ApiError::toxic_not_found(),
        other => internal(other),
    }
}

/// A listen address as Toxiproxy takes it: `host:port` (a name is resolved, the first
/// address wins); empty is [`DEFAULT_LISTEN`].
async fn resolve_listen(text: &str) -> Result<SocketAddr, ApiError> {
    let text = if text.trim().is_empty() {
        DEFAULT_LISTEN
    } else {
        text.trim()
    };
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "listen `{text}` is not a host:port address ({why}); write e.g. 127.0.0.1:26379"
            ),
        )
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(text)
        .await
        .map_err(|e| bad(e.to_string()))?
        .collect();
    // `localhost` is 127.0.0.1 first, as for Toxiproxy's Go resolver.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

fn toxic_json(t: &ToxicInfo) -> ToxicJson {
    ToxicJson {
        name: t.label.clone(),
        kind: t.kind.name().to_string(),
        stream: t.direction.to_string(),
        toxicity: t.toxicity,
        attributes: attributes_of(&t.kind),
    }
}

fn proxy_json(h: &ProxyHandle) -> ProxyJson {
    let toxics = h.toxics();
    ProxyJson {
        name: h.name().to_string(),
        listen: h.listen_addr().to_string(),
        upstream: h.upstream().to_string(),
        enabled: !toxics.iter().any(|t| t.kind == ToxicKind::Down),
        toxics: toxics
            .iter()
            .filter(|t| t.kind != ToxicKind::Down)
            .map(toxic_json)
            .collect(),
    }
}

fn audit_toxic(proxy: &str, what: &str, t: &ToxicRequest, deadline: Duration) {
    warn!(target: "chaosbot::audit", proxy, toxic = %t.label, kind = %t.kind.summary(),
        stream = %t.direction, toxicity = t.toxicity, seed = t.seed,
        deadline_s = deadline.as_secs(), "{what} through the Toxiproxy API");
}

impl Toxiproxy {
    pub fn new(core: AgentCore, deadline: Duration) -> Toxiproxy {
        Toxiproxy {
            core,
            deadline,
            state: Mutex::new(State::default()),
            main: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Runs `op` on the agent's runtime: what starts or rebuilds a proxy spawns its tasks
    /// there, not on the API's thread.
    pub async fn on_main<T, F>(
        self: &std::sync::Arc<Self>,
        op: impl FnOnce(std::sync::Arc<Self>) -> F,
    ) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = op(self.clone());
        match &self.main {
            Some(m) => m.spawn(fut).await.map_err(internal)?,
            None => fut.await,
        }
    }

    pub fn core(&self) -> &AgentCore {
        &self.core
    }

    /// Whether proxies made here exist (the local agent does not exit while they do).
    pub async fn holds_proxies(&self) -> bool {
        !self.state.lock().await.made.is_empty()
    }

    async fn handle(&self, name: &str) -> Result<ProxyHandle, ApiError> {
        if self.core.targets().config().proxy_target(name).is_none() {
            return Err(ApiError::proxy_not_found());
        }
        if let Some(h) = self.core.targets().running(name).await {
            return Ok(h);
        }
        // A declared proxy not started yet starts on the agent's runtime.
        let (core, name) = (self.core.clone(), name.to_string());
        let start = async move { core.targets().proxy(&name).await.map_err(target_error) };
        match &self.main {
            Some(m) => m.spawn(start).await.map_err(internal)?,
            None => start.await,
        }
    }

    /// A proxy as it is now; a declared one not started yet (the local agent starts its
    /// declarations on first use) is shown as declared, without starting it.
    async fn view(&self, p: &ProxyTarget) -> ProxyJson {
        match self.core.targets().running(&p.name).await {
            Some(h) => proxy_json(&h),
            None => ProxyJson {
                name: p.name.clone(),
                listen: p.listen.to_string(),
                upstream: p.upstream.clone(),
                enabled: true,
                toxics: Vec::new(),
            },
        }
    }

    /// Every proxy of the agent, by name.
    pub async fn index(&self) -> HashMap<String, ProxyJson> {
        let _st = self.state.lock().await;
        let mut out = HashMap::new();
        for p in &self.core.targets().config().targets.proxy {
            out.insert(p.name.clone(), self.view(p).await);
        }
        out
    }

    pub async fn show(&self, name: &str) -> Result<ProxyJson, ApiError> {
        let _st = self.state.lock().await;
        let cfg = self.core.targets().config();
        let p = cfg
            .proxy_target(name)
            .ok_or_else(ApiError::proxy_not_found)?;
        Ok(self.view(p).await)
    }

    pub async fn create(&self, input: ProxyInput) -> Result<ProxyJson, ApiError> {
        let mut st = self.state.lock().await;
        self.create_locked(&mut st, input).await
    }

    async fn create_locked(
        &self,
        st: &mut State,
        input: ProxyInput,
    ) -> Result<ProxyJson, ApiError> {
        let name = input.name.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| ApiError::missing("name"))?;
        let upstream = input.upstream.filter(|u| !u.is_empty());
        let upstream = upstream.ok_or_else(|| ApiError::missing("upstream"))?;
        let listen = resolve_listen(input.listen.as_deref().unwrap_or("")).await?;
        let h = self
            .core
            .targets()
            .add_proxy(ProxyTarget {
                name: name.clone(),
                listen,
                upstream,
                description: "made through the Toxiproxy API".into(),
                agent: None,
            })
            .await
            .map_err(target_error)?;
        st.made.insert(name.clone());
        warn!(target: "chaosbot::audit", proxy = %name, listen = %h.listen_addr(), upstream = %h.upstream(),
            "proxy made through the Toxiproxy API");
        if input.enabled == Some(false) {
            self.set_enabled(st, &h, false).await?;
        }
        Ok(proxy_json(&h))
    }

    pub async fn update(&self, name: &str, input: ProxyInput) -> Result<ProxyJson, ApiError> {
        let mut st = self.state.lock().await;
        let mut h = self.handle(name).await?;
        let listen = match input.listen.as_deref() {
            Some(l) => resolve_listen(l).await?,
            None => h.listen_addr(),
        };
        let upstream = input.upstream.unwrap_or_else(|| h.upstream().to_string());
        if listen != h.listen_addr() || upstream != h.upstream() {
            h = self.rebuild(&mut st, &h, listen, upstream).await?;
        }
        if let Some(enabled) = input.enabled {
            self.set_enabled(&mut st, &h, enabled).await?;
        }
        Ok(proxy_json(&h))
    }

    /// Moves a proxy made here to another listen address or upstream, keeping its toxics
    /// (Toxiproxy restarts the proxy the same way).
    async fn rebuild(
        &self,
        st: &mut State,
        old: &ProxyHandle,
        listen: SocketAddr,
        upstream: String,
    ) -> Result<ProxyHandle, ApiError> {
        let name = old.name().to_string();
        may_replace(st, old, "change its listen or upstream")?;
        let seeds = st.toxics.remove(&name).unwrap_or_default();
        let kept: Vec<(ToxicInfo, u64)> = old
            .toxics()
            .into_iter()
            .filter_map(|t| seeds.get(&t.id).map(|s| (t, *s)))
            .collect();
        self.core.targets().remove_proxy(&name).await;
        let target = ProxyTarget {
            name: name.clone(),
            listen,
            upstream,
            description: "made through the Toxiproxy API".into(),
            agent: None,
        };
        let h = match self.core.targets().add_proxy(target).await {
            Ok(h) => h,
            Err(e) => {
                // The old proxy is gone with its port: say so rather than pretend it stayed.
                st.made.remove(&name);
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}; proxy `{name}` was stopped and is now deleted, create it again"),
                ));
            }
        };
        warn!(target: "chaosbot::audit", proxy = %name, listen = %h.listen_addr(), upstream = %h.upstream(),
            "proxy moved through the Toxiproxy API");
        let ids = st.toxics.entry(name).or_default();
        for (t, seed) in kept {
            let id = h
                .add_toxic(ToxicRequest {
                    label: t.label,
                    kind: t.kind,
                    direction: t.direction,
                    toxicity: t.toxicity,
                    seed,
                    deadline: t.deadline,
                })
                .map_err(toxic_error)?;
            ids.insert(id, seed);
        }
        Ok(h)
    }

    /// `enabled: false` is chaosbot's `down` toxic (with the guard-rail deadline); `true`
    /// removes the downs made here (a run's `down` stays until the run ends).
    async fn set_enabled(
        &self,
        st: &mut State,
        h: &ProxyHandle,
        enabled: bool,
    ) -> Result<(), ApiError> {
        self.toggle(st, h, enabled)?;
        // Toxiproxy answers once the listener is stopped or started again: so does this.
        let down = h.toxics().iter().any(|t| t.kind == ToxicKind::Down);
        if !h.wait_listening(!down, LISTENER_PATIENCE).await {
            warn!(proxy = %h.name(), enabled = !down, "the proxy's listener did not follow within 2s");
        }
        Ok(())
    }

    fn toggle(&self, st: &mut State, h: &ProxyHandle, enabled: bool) -> Result<(), ApiError> {
        let ids = st.toxics.entry(h.name().to_string()).or_default();
        let downs: Vec<ToxicInfo> = h
            .toxics()
            .into_iter()
            .filter(|t| t.kind == ToxicKind::Down)
            .collect();
        if enabled {
            for t in &downs {
                if ids.remove(&t.id).is_none() {
                    continue;
                }
                match h.remove_toxic(t.id) {
                    Ok(()) | Err(ProxyError::NoSuchToxic(_)) => {}
                    Err(e) => return Err(toxic_error(e)),
                }
                warn!(target: "chaosbot::audit", proxy = %h.name(), "proxy enabled through the Toxiproxy API");
            }
            return Ok(());
        }
        if !downs.is_empty() {
            return Ok(());
        }
        let req = ToxicRequest {
            label: "down".into(),
            kind: ToxicKind::Down,
            direction: Direction::Downstream,
            toxicity: 1.0,
            seed: 0,
            deadline: Instant::now() + self.deadline,
        };
        audit_toxic(h.name(), "proxy disabled (down)", &req, self.deadline);
        let id = h.add_toxic(req).map_err(toxic_error)?;
        ids.insert(id, 0);
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        let h = self.handle(name).await?;
        may_replace(&st, &h, "remove it")?;
        self.core.targets().remove_proxy(name).await;
        st.made.remove(name);
        st.toxics.remove(name);
        warn!(target: "chaosbot::audit", proxy = %name, "proxy deleted through the Toxiproxy API");
        Ok(())
    }

    /// `/populate`: creates each proxy, replaces a made-here one whose listen or upstream
    /// differs, keeps one that is the same. On an error, answers the proxies done before it.
    pub async fn populate(&self, inputs: Vec<ProxyInput>) -> (Vec<ProxyJson>, Option<ApiError>) {
        for (i, p) in inputs.iter().enumerate() {
            if p.name.as_deref().unwrap_or("").is_empty() {
                return (
                    Vec::new(),
                    Some(ApiError::missing(&format!("name at proxy {}", i + 1))),
                );
            }
            if p.upstream.as_deref().unwrap_or("").is_empty() {
                let field = format!("upstream at proxy {}", i + 1);
                return (Vec::new(), Some(ApiError::missing(&field)));
            }
        }
        let mut st = self.state.lock().await;
        let mut done = Vec::new();
        for p in inputs {
            match self.populate_one(&mut st, p).await {
                Ok(j) => done.push(j),
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }

    async fn populate_one(&self, st: &mut State, p: ProxyInput) -> Result<ProxyJson, ApiError> {
        let name = p.name.clone().unwrap_or_default();
        if self.core.targets().config().proxy_target(&name).is_none() {
            return self.create_locked(st, p).await;
        }
        let h = self.handle(&name).await?;
        let listen = resolve_listen(p.listen.as_deref().unwrap_or("")).await?;
        let upstream = p.upstream.clone().unwrap_or_default();
        if listen == h.listen_addr() && upstream == h.upstream() {
            return Ok(proxy_json(&h));
        }
        may_replace(st, &h, "change its listen or upstream")?;
        self.core.targets().remove_proxy(&name).await;
        st.made.remove(&name);
        st.toxics.remove(&name);
        self.create_locked(st, p).await
    }
}

/// Only a proxy made here, and carrying no run's toxic, may be moved or deleted here.
fn may_replace(st: &State, h: &ProxyHandle, what: &str) -> Result<(), ApiError> {
    let name = h.name();
    if !st.made.contains(name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "proxy `{name}` is declared in the agent's config; {what} there, not through the Toxiproxy API"
            ),
        ));
    }
    let ours = st.toxics.get(name);
    if let Some(t) = h
        .toxics()
        .into_iter()
        .find(|t| !ours.is_some_and(|ids| ids.contains_key(&t.id)))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "proxy `{name}` carries toxic `{}` of a chaosbot run; wait for the run to end (or abort it), then {what}",
                t.label
            ),
        ));
    }
    Ok(())
}
