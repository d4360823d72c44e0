//! Operator settings: `chaosbot.toml` (path from `--config` or `CHAOSBOT_CONFIG`) plus
//! environment overrides, validated once at start. The config is where targets are declared:
//! an experiment can only touch what is listed here.
//!
//! One file per section (targets and guard rails, slack and qa, schedules, digest, game day).
//! Config sits at the bottom with `run`: it imports nothing else of the crate, and the
//! modules that act on a section (schedule, gameday, ...) import its type from here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod agents;
mod commands;
mod digest;
mod duration;
mod gameday;
mod headers;
mod schedules;
mod server;
mod slack;
mod targets;

pub use agents::{
    AgentAddress, AgentEntry, AgentSettings, DEFAULT_LEASE_TTL_MS, DEFAULT_RENEW_EVERY_MS,
    LocalAgentMode,
};
pub use commands::{CommandTarget, DEFAULT_COMMAND_TIMEOUT};
pub use digest::{DigestConfig, DigestTime};
pub use duration::{duration_serde, opt_duration_serde};
pub use gameday::{GamedayConfig, MAX_QA_WINDOW};
pub use headers::{HeaderError, HeaderTemplates};
pub use schedules::{AllowedWindow, ScheduleConfig, close_zones, unknown_zone_message, zone};
pub use server::ServerConfig;
pub use slack::{AllowRule, DEFAULT_SLACK_API_URL, QaConfig, Secret, SlackConfig};
pub use targets::{
    DiskTarget, GuardRails, HostNetworkRails, HostTarget, HttpEndpoint, ProcessMatch,
    ProcessTarget, ProxyTarget, Targets, ToxiproxyTarget,
};

/// Default store when neither the config nor `DATABASE_URL` names one: a SQLite file in the
/// working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://chaosbot.db";

/// Bounds of `database_pool`.
pub const MIN_DATABASE_POOL: u32 = 2;
pub const MAX_DATABASE_POOL: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("environment variable {var}=`{value}` is not valid: {why}")]
    Env {
        var: &'static str,
        value: String,
        why: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://PATH` or `postgres://...`; `DATABASE_URL` overrides it.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Most connections this process keeps open to a Postgres store (its wake-up listener
    /// takes one more); `CHAOSBOT_DATABASE_POOL` overrides it. Default 10. Lower it when
    /// many replicas share a server's `max_connections`.
    #[serde(default)]
    pub database_pool: Option<u32>,
    /// Folder of experiment YAML files; `CHAOSBOT_CATALOG` overrides it.
    #[serde(default = "default_catalog")]
    pub catalog: PathBuf,
    #[serde(default)]
    pub guard_rails: GuardRails,
    #[serde(default)]
    pub targets: Targets,
    #[serde(default)]
    pub slack: SlackConfig,
    #[serde(default)]
    pub qa: QaConfig,
    /// Scheduled runs: heads-up time, allowed hours, minimum interval.
    #[serde(default)]
    pub schedules: ScheduleConfig,
    /// The weekly digest (issue 5): off unless a channel is set.
    #[serde(default)]
    pub digest: DigestConfig,
    /// Game days (`/chaos gameday`).
    #[serde(default)]
    pub gameday: GamedayConfig,
    /// Lease terms and the local agent.
    #[serde(default)]
    pub agent: AgentSettings,
    /// Agents on other hosts, named by targets' `agent = "..."`.
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    /// The live run pages `serve` answers at `/runs`: public URL, link key and lifetime.
    #[serde(default)]
    pub server: ServerConfig,
}

fn default_catalog() -> PathBuf {
    PathBuf::from("experiments")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            database_pool: None,
            catalog: default_catalog(),
            guard_rails: GuardRails::default(),
            targets: Targets::default(),
            slack: SlackConfig::default(),
            qa: QaConfig::default(),
            schedules: ScheduleConfig::default(),
            digest: DigestConfig::default(),
            gameday: GamedayConfig::default(),
            agent: AgentSettings::default(),
            agents: Vec::new(),
            server: ServerConfig::default(),
        }
    }
}

impl Config {
    /// Reads the file (if any), applies environment overrides and validates.
    ///
    /// With no path and no `CHAOSBOT_CONFIG`, a `chaosbot.toml` in the working directory is used
    /// when present; otherwise the built-in defaults (no targets).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os("CHAOSBOT_CONFIG").map(PathBuf::from);
        let chosen = path.map(Path::to_path_buf).or(env_path).or_else(|| {
            let p = PathBuf::from("chaosbot.toml");
            p.exists().then_some(p)
        });
        let mut cfg = match chosen {
            Some(p) => Config::from_file(&p)?,
            None => Config::default(),
        };
        cfg.apply_env()?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        // A relative catalog is relative to the config file, so `--config` works from anywhere.
        if cfg.catalog.is_relative()
            && let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            cfg.catalog = dir.join(&cfg.catalog);
        }
        Ok(cfg)
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.trim().is_empty()
        {
            self.database_url = Some(url);
        }
        for (var, slot) in [
            ("SLACK_SIGNING_SECRET", &mut self.slack.signing_secret),
            ("SLACK_BOT_TOKEN", &mut self.slack.bot_token),
            ("SLACK_APP_TOKEN", &mut self.slack.app_token),
        ] {
            if let Ok(v) = std::env::var(var)
                && !v.trim().is_empty()
            {
                *slot = Some(Secret(v.trim().to_string()));
            }
        }
        if let Ok(v) = std::env::var("CHAOSBOT_PAGE_SECRET")
            && !v.trim().is_empty()
        {
            self.server.page_secret = Some(Secret(v.trim().to_string()));
        }
        if let Ok(v) = std::env::var("CHAOSBOT_PUBLIC_URL")
            && !v.trim().is_empty()
        {
            self.server.public_url = Some(v.trim().to_string());
        }
        if let Ok(v) = std::env::var("SLACK_API_URL")
            && !v.trim().is_empty()
        {
            self.slack.api_url = Some(v.trim().to_string());
        }
        if let Ok(v) = std::env::var("CHAOSBOT_LISTEN") {
            self.slack.listen = Some(v.trim().parse().map_err(|_| ConfigError::Env {
                var: "CHAOSBOT_LISTEN",
                value: v.clone(),
                why: "expected host:port, like 0.0.0.0:3000".into(),
            })?);
        }
        if let Some(p) = std::env::var_os("CHAOSBOT_AGENT_SOCKET")
            && !p.is_empty()
        {
            self.agent.socket = Some(PathBuf::from(p));
        }
        if let Some(dir) = std::env::var_os("CHAOSBOT_CATALOG") {
            self.catalog = PathBuf::from(dir);
        }
        if let Ok(v) = std::env::var("CHAOSBOT_MAX_RUN_DURATION") {
            self.guard_rails.max_run_duration =
                humantime::parse_duration(&v).map_err(|e| ConfigError::Env {
                    var: "CHAOSBOT_MAX_RUN_DURATION",
                    value: v.clone(),
                    why: format!("{e} (write it like 10m or 90s)"),
                })?;
        }
        for (var, slot) in [
            (
                "CHAOSBOT_MAX_CONCURRENT_RUNS",
                &mut self.guard_rails.max_concurrent_runs,
            ),
            ("CHAOSBOT_WORKERS", &mut self.guard_rails.worker_pool_size),
        ] {
            if let Ok(v) = std::env::var(var) {
                *slot = v.trim().parse().map_err(|_| ConfigError::Env {
                    var,
                    value: v.clone(),
                    why: "expected a whole number such as 2".into(),
                })?;
            }
        }
        if let Ok(v) = std::env::var("CHAOSBOT_DATABASE_POOL") {
            self.database_pool = Some(v.trim().parse().map_err(|_| ConfigError::Env {
                var: "CHAOSBOT_DATABASE_POOL",
                value: v.clone(),
                why: "expected a whole number of connections such as 10".into(),
            })?);
        }
        Ok(())
    }

    /// Checks what the types cannot: unique names, positive limits, parseable URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(n) = self.database_pool
            && !(MIN_DATABASE_POOL..=MAX_DATABASE_POOL).contains(&n)
        {
            return Err(ConfigError::Invalid(format!(
                "database_pool is {n}: it must be between {MIN_DATABASE_POOL} (runs and Slack delivery each need one) and {MAX_DATABASE_POOL}"
            )));
        }
        self.schedules.window().map_err(ConfigError::Invalid)?;
        self.digest.time()?;
        self.server.validate().map_err(ConfigError::Invalid)?;
        let g = &self.guard_rails;
        if g.max_run_duration.is_zero() {
            return Err(ConfigError::Invalid(
                "guard_rails.max_run_duration must be above zero (e.g. \"10m\")".into(),
            ));
        }
        if g.max_concurrent_runs == 0 || g.worker_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "guard_rails.max_concurrent_runs and worker_pool_size must be at least 1".into(),
            ));
        }
        if self.qa.window.is_zero() || self.qa.board_top == 0 || self.qa.board_top > 40 {
            return Err(ConfigError::Invalid(
                "qa.window must be above zero (e.g. \"72h\") and qa.board_top between 1 and 40 (Slack shows at most 50 blocks per message)".into(),
            ));
        }
        if self.gameday.qa_window > MAX_QA_WINDOW {
            return Err(ConfigError::Invalid(format!(
                "gameday.qa_window is {}; keep it at most {} (a Q&A longer than that loses the room)",
                humantime::format_duration(self.gameday.qa_window),
                humantime::format_duration(MAX_QA_WINDOW)
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for name in self.target_names() {
            if name.is_empty() {
                return Err(ConfigError::Invalid("a target has an empty name".into()));
            }
            if !seen.insert(name) {
                return Err(ConfigError::Invalid(format!(
                    "target name `{name}` is declared twice; every target needs its own name"
                )));
            }
        }
        for h in &self.targets.http {
            validate_endpoint(h)?;
        }
        let mut listens = std::collections::HashSet::new();
        for p in &self.targets.proxy {
            if !p.upstream.contains(':') {
                return Err(ConfigError::Invalid(format!(
                    "target `{}`: upstream `{}` needs a port, like 127.0.0.1:8080",
                    p.name, p.upstream
                )));
            }
            if !listens.insert(p.listen) {
                return Err(ConfigError::Invalid(format!(
                    "target `{}`: listen address {} is used by another target",
                    p.name, p.listen
                )));
            }
        }
        for t in &self.targets.toxiproxy {
            validate_toxiproxy(t)?;
        }
        for p in &self.targets.process {
            if p.matcher().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "process target `{}` needs exactly one of `comm`, `pid_file` or `find_command`",
                    p.name
                )));
            }
            if p.comm
                .as_ref()
                .is_some_and(|c| c.is_empty() || c.len() > 15)
            {
                return Err(ConfigError::Invalid(format!(
                    "process target `{}`: `comm` must be 1 to 15 bytes, the name the kernel keeps in /proc/PID/comm",
                    p.name
                )));
            }
        }
        for d in &self.targets.disk {
            if !(d.max_fill_percent > 0.0 && d.max_fill_percent <= 100.0) {
                return Err(ConfigError::Invalid(format!(
                    "disk target `{}`: max_fill_percent must be above 0 and at most 100",
                    d.name
                )));
            }
            if d.path.as_os_str().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "disk target `{}`: path is empty; name the directory faults may write into",
                    d.name
                )));
            }
        }
        for c in &self.targets.command {
            c.check().map_err(ConfigError::Invalid)?;
        }
        self.validate_agents()?;
        for h in &self.targets.http {
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "http target `{}`: url `{}` must start with http:// or https://",
                    h.name, h.url
                )));
            }
        }
        Ok(())
    }

    /// `[agent]` and `[[agents]]`, and every target's `agent` naming a declared one.
    fn validate_agents(&self) -> Result<(), ConfigError> {
        let a = &self.agent;
        if a.renew_every.is_zero() || a.lease_ttl <= a.renew_every {
            return Err(ConfigError::Invalid(format!(
                "agent.lease_ttl ({}) must be longer than agent.renew_every ({}), which must be above zero: a lease has to survive a missed renewal (e.g. 10s and 2s)",
                humantime::format_duration(a.lease_ttl),
                humantime::format_duration(a.renew_every)
            )));
        }
        let mut names = std::collections::HashSet::new();
        for entry in &self.agents {
            entry.validate()?;
            if entry.name == "local" || !names.insert(entry.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "agent name `{}` is declared twice (or is `local`, the name of the local agent); give every [[agents]] entry its own name",
                    entry.name
                )));
            }
        }
        let named = self
            .targets
            .proxy
            .iter()
            .map(|t| (&t.name, &t.agent))
            .chain(self.targets.process.iter().map(|t| (&t.name, &t.agent)))
            .chain(self.targets.host.iter().map(|t| (&t.name, &t.agent)))
            .chain(self.targets.disk.iter().map(|t| (&t.name, &t.agent)))
            .chain(self.targets.http.iter().map(|t| (&t.name, &t.agent)));
        for (target, agent) in named {
            let Some(agent) = agent else { continue };
            if !names.contains(agent.as_str()) {
                let hint = match crate::suggest::closest(agent, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "declare it under [[agents]] with its url and secret".to_string(),
                };
                return Err(ConfigError::Invalid(format!(
                    "target `{target}` names agent `{agent}`, which is not declared; {hint}"
                )));
            }
        }
        Ok(())
    }

    /// The configured agent that owns a target, if any (`None`: the local agent).
    pub fn agent_of(&self, target: &str) -> Option<&AgentEntry> {
        let name = self
            .proxy_target(target)
            .and_then(|t| t.agent.as_ref())
            .or_else(|| self.process_target(target).and_then(|t| t.agent.as_ref()))
            .or_else(|| self.host_target(target).and_then(|t| t.agent.as_ref()))
            .or_else(|| self.disk_target(target).and_then(|t| t.agent.as_ref()))
            .or_else(|| self.http_endpoint(target).and_then(|t| t.agent.as_ref()))?;
        self.agents.iter().find(|a| &a.name == name)
    }

    pub fn target_names(&self) -> impl Iterator<Item = &str> {
        self.targets
            .proxy
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.targets.toxiproxy.iter().map(|t| t.name.as_str()))
            .chain(self.targets.http.iter().map(|h| h.name.as_str()))
            .chain(self.targets.process.iter().map(|p| p.name.as_str()))
            .chain(self.targets.host.iter().map(|h| h.name.as_str()))
            .chain(self.targets.disk.iter().map(|d| d.name.as_str()))
            .chain(self.targets.command.iter().map(|c| c.name.as_str()))
    }

    pub fn command_target(&self, name: &str) -> Option<&CommandTarget> {
        self.targets.command.iter().find(|c| c.name == name)
    }

    pub fn process_target(&self, name: &str) -> Option<&ProcessTarget> {
        self.targets.process.iter().find(|p| p.name == name)
    }

    pub fn host_target(&self, name: &str) -> Option<&HostTarget> {
        self.targets.host.iter().find(|h| h.name == name)
    }

    pub fn disk_target(&self, name: &str) -> Option<&DiskTarget> {
        self.targets.disk.iter().find(|d| d.name == name)
    }

    /// What kind of target a declared name is ("proxy", "http", "process", "host", "disk").
    pub fn target_kind(&self, name: &str) -> Option<&'static str> {
        if self.proxy_target(name).is_some() || self.toxiproxy_target(name).is_some() {
            Some("proxy")
        } else if self.http_endpoint(name).is_some() {
            Some("http")
        } else if self.process_target(name).is_some() {
            Some("process")
        } else if self.host_target(name).is_some() {
            Some("host")
        } else if self.disk_target(name).is_some() {
            Some("disk")
        } else if self.command_target(name).is_some() {
            Some("command")
        } else {
            None
        }
    }

    pub fn proxy_target(&self, name: &str) -> Option<&ProxyTarget> {
        self.targets.proxy.iter().find(|p| p.name == name)
    }

    /// A proxy target served by a Toxiproxy server (`toxiproxy = URL`).
    pub fn toxiproxy_target(&self, name: &str) -> Option<&ToxiproxyTarget> {
        self.targets.toxiproxy.iter().find(|t| t.name == name)
    }

    /// The HTTP endpoints that accept any certificate (`insecure_skip_verify = true`), for the
    /// warning `validate` prints.
    pub fn insecure_endpoints(&self) -> impl Iterator<Item = &HttpEndpoint> {
        self.targets.http.iter().filter(|h| h.insecure_skip_verify)
    }

    pub fn http_endpoint(&self, name: &str) -> Option<&HttpEndpoint> {
        self.targets.http.iter().find(|h| h.name == name)
    }

    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

/// A Toxiproxy server's URL: http(s), a host, nothing after the port (its routes start at
/// the root), and a proxy name that fits in a URL path segment.
fn validate_toxiproxy(t: &ToxiproxyTarget) -> Result<(), ConfigError> {
    let invalid = |why: String| ConfigError::Invalid(format!("proxy target `{}`: {why}", t.name));
    let url = url::Url::parse(&t.url).map_err(|e| {
        invalid(format!(
            "toxiproxy `{}` is not a URL ({e}); write the server's API address, like http://127.0.0.1:8474",
            t.url
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(format!(
            "toxiproxy `{}` must be an http:// or https:// address of the server's API, like http://127.0.0.1:8474",
            t.url
        )));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(invalid(format!(
            "toxiproxy `{}` has a path; Toxiproxy's API starts at the root, so write only scheme, host and port",
            t.url
        )));
    }
    if t.proxy.trim().is_empty() {
        return Err(invalid(
            "`proxy` is empty; name the proxy as the Toxiproxy server lists it (GET /proxies)"
                .into(),
        ));
    }
    Ok(())
}

/// An HTTP endpoint's URL and TLS settings: everything that can be known before a run (a host
/// that does not resolve is found by `chaosbot validate` and by the run's first probe).
fn validate_endpoint(h: &HttpEndpoint) -> Result<(), ConfigError> {
    let invalid = |why: String| ConfigError::Invalid(format!("http target `{}`: {why}", h.name));
    let url = url::Url::parse(&h.url).map_err(|e| {
        invalid(format!(
            "url `{}` is not a URL ({e}); write it like https://api.internal:8443",
            h.url
        ))
    })?;
    match url.scheme() {
        // (A URL of these schemes always has a host: the parser refuses one without.)
        "http" | "https" => {}
        other => {
            return Err(invalid(format!(
                "url `{}` uses `{other}://`; chaosbot speaks http:// and https://",
                h.url
            )));
        }
    }
    if url.scheme() == "http" && h.sets_tls() {
        return Err(invalid(format!(
            "TLS settings (ca_file, client_cert, client_key, server_name, insecure_skip_verify) apply to https:// URLs, and `{}` is http://; use https:// or remove them",
            h.url
        )));
    }
    h.headers.check().map_err(|e| {
        invalid(format!(
            "headers: {e} (values read the environment as `${{VAR}}`, like \"Bearer ${{API_TOKEN}}\")"
        ))
    })?;
    crate::tls::check(&h.tls()).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_proxy_target_may_name_a_toxiproxy_server_instead_of_listen_and_upstream() {
        let cfg = Config::from_toml(
            "[[targets.proxy]]\nname = \"shop\"\ntoxiproxy = \"http://127.0.0.1:8474\"\n[[targets.proxy]]\nname = \"cart\"\ntoxiproxy = \"http://toxi.internal:8474/\"\nproxy = \"cart-redis\"\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert!(cfg.targets.proxy.is_empty());
        let shop = cfg.toxiproxy_target("shop").unwrap();
        assert_eq!(
            (shop.url.as_str(), shop.proxy.as_str()),
            ("http://127.0.0.1:8474", "shop")
        );
        assert_eq!(cfg.toxiproxy_target("cart").unwrap().proxy, "cart-redis");
        assert_eq!(cfg.target_kind("cart"), Some("proxy"));
        assert!(cfg.proxy_target("cart").is_none() && cfg.agent_of("cart").is_none());

        let bad = |text: &str| match Config::from_toml(text) {
            Ok(c) => c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            Err(e) => e,
        };
        let head = "[[agents]]\nname = \"web-1\"\nurl = \"unix:///tmp/a.sock\"\n[[targets.proxy]]\nname = \"shop\"\n";
        for (text, says) in [
            (
                format!("{head}toxiproxy = \"http://127.0.0.1:8474\"\nagent = \"web-1\"\n"),
                "`toxiproxy` and `agent` exclude each other",
            ),
            (
                format!("{head}toxiproxy = \"http://127.0.0.1:8474\"\nlisten = \"127.0.0.1:1\"\n"),
                "`listen` and `upstream` are chaosbot's own proxy",
            ),
            (
                format!(
                    "{head}proxy = \"shop\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n"
                ),
                "add `toxiproxy = \"http://HOST:8474\"`",
            ),
            (
                format!("{head}listen = \"127.0.0.1:1\"\n"),
                "needs `listen` and `upstream` (chaosbot's proxy), or `toxiproxy",
            ),
            (
                format!("{head}toxiproxy = \"tcp://127.0.0.1:8474\"\n"),
                "must be an http:// or https:// address",
            ),
            (
                format!("{head}toxiproxy = \"http://127.0.0.1:8474/api\"\n"),
                "has a path",
            ),
        ] {
            let e = bad(&text);
            assert!(e.contains(says), "{text}\n=> {e}");
        }
    }

    #[test]
    fn the_database_pool_is_bounded() {
        let cfg = Config::from_toml("database_pool = 4\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.database_pool, Some(4));
        for n in [0, 1, 201] {
            let cfg = Config::from_toml(&format!("database_pool = {n}\n")).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(
                e.contains(&format!("database_pool is {n}")) && e.contains("between 2"),
                "{e}"
            );
        }
    }

    #[test]
    fn parses_targets_and_guard_rails() {
        let cfg = Config::from_toml(
            r#"
            catalog = "exp"
            [guard_rails]
            max_run_duration = "5m"
            worker_pool_size = 3
            [[targets.proxy]]
            name = "payments"
            listen = "127.0.0.1:18080"
            upstream = "127.0.0.1:8080"
            [[targets.http]]
            name = "shop"
            url = "http://127.0.0.1:18080"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.guard_rails.max_run_duration, Duration::from_secs(300));
        assert_eq!(cfg.guard_rails.worker_pool_size, 3);
        assert_eq!(cfg.guard_rails.max_concurrent_runs, 2);
        assert_eq!(
            cfg.proxy_target("payments").unwrap().upstream,
            "127.0.0.1:8080"
        );
        assert!(cfg.http_endpoint("shop").is_some());
    }

    #[test]
    fn an_http_endpoint_may_name_the_agent_that_generates_its_load() {
        let text = r#"
            [[agents]]
            name = "web-1"
            url = "unix:///run/chaosbot/agent.sock"
            [[targets.http]]
            name = "api-http"
            url = "http://10.200.1.2:18080"
            agent = "web-2"
            "#;
        let cfg = Config::from_toml(text).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("target `api-http` names agent `web-2`")
                && err.contains("did you mean `web-1`"),
            "{err}"
        );
        let fixed = Config::from_toml(&text.replace("web-2", "web-1")).unwrap();
        fixed.validate().unwrap();
        assert_eq!(
            fixed.agent_of("api-http").map(|a| a.name.as_str()),
            Some("web-1")
        );
    }

    #[test]
    fn a_target_naming_an_unknown_agent_is_refused_with_a_suggestion() {
        let cfg = Config::from_toml(
            r#"
            [agent]
            lease_ttl = "4s"
            renew_every = "1s"
            [[agents]]
            name = "web-1"
            url = "unix:///run/chaosbot/agent.sock"
            [[targets.process]]
            name = "worker"
            agent = "web1"
            comm = "worker"
            "#,
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("`web1`") && err.contains("did you mean `web-1`"),
            "{err}"
        );
        let mut fixed = cfg.clone();
        fixed.targets.process[0].agent = Some("web-1".into());
        fixed.validate().unwrap();
        assert_eq!(
            fixed.agent_of("worker").map(|a| a.name.as_str()),
            Some("web-1")
        );
        assert_eq!(fixed.agent.lease_ttl, Duration::from_secs(4));
        // A lease that cannot survive one missed renewal is refused.
        fixed.agent.renew_every = Duration::from_secs(4);
        let err = fixed.validate().unwrap_err().to_string();
        assert!(err.contains("lease_ttl"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys_and_duplicates() {
        let err = Config::from_toml("[guard_rails]\nmax_run_duraton = \"5m\"\n").unwrap_err();
        assert!(err.contains("max_run_duraton"), "{err}");
        let cfg = Config::from_toml(
            r#"
            [[targets.proxy]]
            name = "a"
            listen = "127.0.0.1:1"
            upstream = "127.0.0.1:2"
            [[targets.http]]
            name = "a"
            url = "http://x"
            "#,
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("declared twice"), "{err}");
    }
}
