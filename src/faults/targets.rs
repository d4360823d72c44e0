//! The live side of the declared targets: the proxies running in this process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::config::Config;
use crate::faults::proxy::{Proxy, ProxyError, ProxyHandle, ProxySettings};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}` is not declared in the config; add it under [[targets.proxy]]")]
    Undeclared(String),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("a target named `{0}` already exists; choose another name")]
    Taken(String),
    #[error(
        "upstream {upstream} of target `{target}` is unreachable: {why}. Start the service or fix `upstream` in the config"
    )]
    Unreachable {
        target: String,
        upstream: String,
        why: String,
    },
}

/// Proxies by target name, started on first use (or all at once for a long-running server).
#[derive(Clone)]
pub struct TargetRegistry {
    // Behind a lock so the local agent can add the targets controllers declare to it.
    cfg: Arc<std::sync::RwLock<Arc<Config>>>,
    proxies: Arc<Mutex<HashMap<String, ProxyHandle>>>,
}

/// How long a proxy's listen port may stay taken before binding fails (see [`TargetRegistry::proxy`]).
const BIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl TargetRegistry {
    pub fn new(cfg: Arc<Config>) -> Self {
        TargetRegistry {
            cfg: Arc::new(std::sync::RwLock::new(cfg)),
            proxies: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The running proxy for a declared target, started (bound) now if it is not running yet.
    pub async fn proxy(&self, name: &str) -> Result<ProxyHandle, TargetError> {
        let mut proxies = self.proxies.lock().await;
        if let Some(h) = proxies.get(name) {
            return Ok(h.clone());
        }
        let cfg = self.config();
        let declared = cfg
            .proxy_target(name)
            .ok_or_else(|| TargetError::Undeclared(name.to_string()))?;
        let settings = ProxySettings {
            name: declared.name.clone(),
            listen: declared.listen,
            upstream: declared.upstream.clone(),
        };
        // The run that held the target before may be in another process that is still
        // letting go of the port (it closes its proxies as it exits): give it a moment.
        let deadline = std::time::Instant::now() + BIND_PATIENCE;
        let handle = loop {
            match Proxy::start(settings.clone()).await {
                Err(crate::faults::proxy::ProxyError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        proxies.insert(name.to_string(), handle.clone());
        Ok(handle)
    }

    /// The proxy of a target if it is running (nothing is started).
    pub async fn running(&self, name: &str) -> Option<ProxyHandle> {
        self.proxies.lock().await.get(name).cloned()
    }

    /// Adds a proxy started elsewhere (the demo binds port 0 and declares what it got).
    pub async fn adopt(&self, handle: ProxyHandle) {
        self.proxies
            .lock()
            .await
            .insert(handle.name().to_string(), handle);
    }

    /// Starts every declared proxy (a server keeps them all up so traffic always flows).
    pub async fn start_all(&self) -> Result<(), TargetError> {
        for p in &self.config().targets.proxy {
            self.proxy(&p.name).await?;
        }
        Ok(())
    }

    /// Checks that the target's upstream accepts connections, before anything is injected.
    pub async fn check_upstream(&self, name: &str) -> Result<(), TargetError> {
        let cfg = self.config();
        let declared = cfg
            .proxy_target(name)
            .ok_or_else(|| TargetError::Undeclared(name.to_string()))?;
        let upstream = {
            let proxies = self.proxies.lock().await;
            proxies
                .get(name)
                .map(|h| h.upstream().to_string())
                .unwrap_or_else(|| declared.upstream.clone())
        };
        let why = match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(upstream.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 3s".to_string(),
        };
        Err(TargetError::Unreachable {
            target: name.to_string(),
            upstream,
            why,
        })
    }

    /// Declares a proxy target and starts it now (Toxiproxy's API makes proxies at run time).
    /// A taken name is [`TargetError::Taken`]; a port in use fails at once.
    pub async fn add_proxy(
        &self,
        target: crate::config::ProxyTarget,
    ) -> Result<ProxyHandle, TargetError> {
        let mut proxies = self.proxies.lock().await;
        let cfg = self.config();
        if cfg.target_kind(&target.name).is_some() || proxies.contains_key(&target.name) {
            return Err(TargetError::Taken(target.name));
        }
        let handle = Proxy::start(ProxySettings {
            name: target.name.clone(),
            listen: target.listen,
            upstream: target.upstream.clone(),
        })
        .await?;
        let mut next = (*cfg).clone();
        // The declaration records the bound port, so a restart of the proxy keeps it.
        next.targets.proxy.push(crate::config::ProxyTarget {
            listen: handle.listen_addr(),
            ..target
        });
        self.set_config(Arc::new(next));
        proxies.insert(handle.name().to_string(), handle.clone());
        Ok(handle)
    }

    /// Stops a proxy and forgets its declaration (the inverse of [`Self::add_proxy`]).
    pub async fn remove_proxy(&self, name: &str) {
        let handle = self.proxies.lock().await.remove(name);
        let cfg = self.config();
        let mut next = (*cfg).clone();
        next.targets.proxy.retain(|p| p.name != name);
        self.set_config(Arc::new(next));
        if let Some(h) = handle {
            h.remove_all_toxics();
            h.shutdown().await;
        }
    }

    /// Removes every toxic and stops every proxy.
    pub async fn shutdown(&self) {
        let proxies: Vec<ProxyHandle> = self.proxies.lock().await.drain().map(|(_, h)| h).collect();
        for p in proxies {
            p.remove_all_toxics();
            p.shutdown().await;
        }
    }

    /// The declared proxies a run of `exp` needs up: those its network faults act through, and
    /// those its probes reach the service through (a process or resource experiment still
    /// probes the service via its proxy), and those its load steps send requests through.
    pub fn proxies_for(&self, exp: &crate::spec::model::Experiment) -> Vec<String> {
        use crate::spec::model::ProbeKind;
        let cfg = self.config();
        // A Toxiproxy server's proxies are its own: nothing to bring up here.
        let mut names: Vec<String> = exp
            .proxy_targets()
            .into_iter()
            .filter(|n| cfg.toxiproxy_target(n).is_none())
            .collect();
        let url_hits = |url: &str, listen: &str| {
            url.split_once("://")
                .map(|(_, rest)| rest.split(['/', '?', '#']).next() == Some(listen))
                .unwrap_or(false)
        };
        for p in &cfg.targets.proxy {
            let listen = p.listen.to_string();
            let probed = exp.hypothesis.iter().any(|probe| match &probe.kind {
                ProbeKind::Http { url, .. } => url_hits(url, &listen),
                ProbeKind::Tcp { address, .. } => *address == listen,
                ProbeKind::Command { .. } => false,
            });
            // A load step may send its requests through a proxy too (an endpoint at its listen).
            let loaded = exp.fault_steps().iter().any(|f| match &f.fault {
                crate::spec::model::FaultSpec::Load { url, .. } => url_hits(url, &listen),
                _ => false,
            });
            if (probed || loaded) && !names.contains(&p.name) {
                names.push(p.name.clone());
            }
        }
        names
    }

    /// The targets as declared now (a snapshot: the local agent may add declarations later).
    pub fn config(&self) -> Arc<Config> {
        // A poisoned lock still holds a whole config (writers only swap the Arc).
        match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the declared targets (the local agent adds what controllers declare). Proxies
    /// already running stay as they are.
    pub fn set_config(&self, cfg: Arc<Config>) {
        match self.cfg.write() {
            Ok(mut c) => *c = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
    }
}
