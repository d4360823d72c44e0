//! `agent.toml`: who the agent is, where it listens, its secret, its state directory, TLS, and
//! the targets it owns (the same tables as `chaosbot.toml`).
//!
//! Checked at load: an agent on a TCP address needs a secret, and one on a non-loopback
//! address also needs `[tls]`; it refuses to start otherwise and says which is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, Secret, Targets};

/// Env var holding the secret when neither `secret` nor `secret_file` is set.
pub const SECRET_ENV: &str = "CHAOSBOT_AGENT_SECRET";
/// How long the local agent waits with no fault held and no request before it exits.
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(60);
/// Toxiproxy's own default API address.
pub const DEFAULT_TOXIPROXY_LISTEN: &str = "127.0.0.1:8474";
/// The guard-rail deadline of a toxic made through the Toxiproxy API.
pub const DEFAULT_TOXIC_DEADLINE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read agent config {path}: {source}. Check the path given to --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("agent config: {0}")]
    Invalid(String),
}

/// Where the agent accepts controllers.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn is_unix(&self) -> bool {
        matches!(self, Endpoint::Unix(_))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// `[tls]`: the agent's certificate, and optionally the CA its clients' certificates must
/// chain to (mTLS).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServer {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    name: String,
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    state_dir: PathBuf,
    #[serde(default)]
    tls: Option<TlsServer>,
    #[serde(default)]
    targets: Targets,
    #[serde(default)]
    toxiproxy: Option<ToxiproxyFile>,
}

/// `[toxiproxy]` as written in agent.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToxiproxyFile {
    #[serde(default)]
    enabled: Option<bool>,
    /// An address, or "off".
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    allow_remote: bool,
    #[serde(default)]
    toxic_deadline: Option<String>,
}

/// Toxiproxy's HTTP API on the agent (see [`crate::agent::toxiproxy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ToxiproxySettings {
    /// Where the API listens; `None` is off.
    pub listen: Option<SocketAddr>,
    /// Every toxic made through the API goes away by itself after this long.
    pub toxic_deadline: Duration,
}

impl ToxiproxySettings {
    pub fn off() -> ToxiproxySettings {
        ToxiproxySettings {
            listen: None,
            toxic_deadline: DEFAULT_TOXIC_DEADLINE,
        }
    }

    /// Parses a listen value as the config and the CLI write it: an address, or `off`.
    pub fn parse_listen(text: &str, allow_remote: bool) -> Result<Option<SocketAddr>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let addr: SocketAddr = text.parse().map_err(|e| {
            format!(
                "toxiproxy listen = \"{text}\" is not an address ({e}); write \"127.0.0.1:8474\", or \"off\""
            )
        })?;
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(format!(
                "toxiproxy listen = \"{addr}\" is not a loopback address, and Toxiproxy's API has no authentication: anyone who reaches it can cut this host's traffic. Listen on 127.0.0.1, or set allow_remote = true under [toxiproxy] if the network is trusted"
            ));
        }
        Ok(Some(addr))
    }

    fn from_file(file: Option<ToxiproxyFile>) -> Result<ToxiproxySettings, AgentConfigError> {
        let invalid = AgentConfigError::Invalid;
        let file = file.unwrap_or_default();
        let toxic_deadline = match &file.toxic_deadline {
            None => DEFAULT_TOXIC_DEADLINE,
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                invalid(format!(
                    "[toxiproxy] toxic_deadline = \"{t}\" is not a duration ({e}); write e.g. \"1h\" or \"30m\""
                ))
            })?,
        };
        if toxic_deadline.is_zero() || toxic_deadline > super::core::MAX_TERM {
            return Err(invalid(
                "[toxiproxy] toxic_deadline must be above zero and at most 24h".into(),
            ));
        }
        let listen = if file.enabled == Some(false) {
            None
        } else {
            let text = file.listen.as_deref().unwrap_or(DEFAULT_TOXIPROXY_LISTEN);
            ToxiproxySettings::parse_listen(text, file.allow_remote)
                .map_err(|m| invalid(format!("[toxiproxy] {m}")))?
        };
        Ok(ToxiproxySettings {
            listen,
            toxic_deadline,
        })
    }
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub endpoint: Endpoint,
    /// `None` only on a Unix socket (its file mode is the credential).
    pub secret: Option<Secret>,
    /// The revert journal and the lock live here.
    pub state_dir: PathBuf,
    pub tls: Option<TlsServer>,
    /// The targets the agent owns, as a controller config holds them (the fault families
    /// read them from there).
    pub targets: Config,
    /// Started on demand by a controller: accepts target declarations, exits when idle.
    pub on_demand: bool,
    /// Exit after this long with no fault held and no request (the local agent only).
    pub idle_exit: Option<Duration>,
    /// Toxiproxy's HTTP API: on at 127.0.0.1:8474 unless agent.toml says otherwise; off for
    /// the local agent unless `--toxiproxy` asks for it.
    pub toxiproxy: ToxiproxySettings,
}

impl AgentConfig {
    /// Reads and checks `agent.toml`.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks the text of `agent.toml` (`path` names it in messages and anchors
    /// relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let file: AgentFile = toml::from_str(text).map_err(|e| AgentConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = AgentConfigError::Invalid;
        if file.name.trim().is_empty() {
            return Err(invalid(
                "`name` is empty; name the agent as controllers call it, e.g. name = \"web-1\""
                    .into(),
            ));
        }
        let endpoint = match (file.listen, file.socket) {
            (Some(a), None) => Endpoint::Tcp(a),
            (None, Some(p)) => Endpoint::Unix(p),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "both `listen` and `socket` are set; keep one (`listen` for TCP, `socket` for a Unix socket)".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "neither `listen` nor `socket` is set; add listen = \"10.0.0.2:7411\" (TCP) or socket = \"/run/chaosbot/agent.sock\"".into(),
                ));
            }
        };
        let secret = read_secret(file.secret, file.secret_file.as_deref())?;
        if let Endpoint::Tcp(addr) = endpoint {
            check_tcp_security(addr, secret.is_some(), file.tls.is_some())?;
        }
        if file.state_dir.as_os_str().is_empty() {
            return Err(invalid(
                "`state_dir` is empty; name the directory the revert journal lives in, e.g. state_dir = \"/var/lib/chaosbot-agent\"".into(),
            ));
        }
        if let Some(t) = file.targets.toxiproxy.first() {
            return Err(invalid(format!(
                "target `{}` names a Toxiproxy server: the controller adds its toxics through that server, no agent holds them. Declare it in the controller's chaosbot.toml instead",
                t.name
            )));
        }
        let targets = Config {
            targets: file.targets,
            ..Config::default()
        };
        targets
            .validate()
            .map_err(|e| invalid(format!("targets: {e}")))?;
        let toxiproxy = ToxiproxySettings::from_file(file.toxiproxy)?;
        Ok(AgentConfig {
            name: file.name,
            endpoint,
            secret,
            state_dir: file.state_dir,
            tls: file.tls,
            targets,
            on_demand: false,
            idle_exit: None,
            toxiproxy,
        })
    }

    /// The local agent: a Unix socket, its directory as state dir, no targets of its own (the
    /// controllers declare theirs), no secret (the socket's mode is the credential).
    pub fn on_demand(
        socket: PathBuf,
        idle_exit: Duration,
    ) -> Result<AgentConfig, AgentConfigError> {
        let state_dir = socket
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                AgentConfigError::Invalid(format!(
                    "--socket {} has no directory; give a path such as /tmp/chaosbot-1000/agent.sock",
                    socket.display()
                ))
            })?;
        if idle_exit.is_zero() {
            return Err(AgentConfigError::Invalid(
                "--idle-exit must be above zero, e.g. 60s".into(),
            ));
        }
        Ok(AgentConfig {
            name: "local".into(),
            endpoint: Endpoint::Unix(socket),
            secret: None,
            state_dir,
            tls: None,
            targets: Config::default(),
            on_demand: true,
            idle_exit: Some(idle_exit),
            toxiproxy: ToxiproxySettings::off(),
        })
    }

    /// The local agent started by hand (`chaosbot agent` with no config): the on-demand
    /// agent's settings on `socket`, kept running (controllers on this host find it there,
    /// as they would the agent they start).
    pub fn standing_local(socket: PathBuf) -> Result<AgentConfig, AgentConfigError> {
        let mut cfg = AgentConfig::on_demand(socket, DEFAULT_IDLE_EXIT)?;
        cfg.idle_exit = None;
        Ok(cfg)
    }

    /// Names of the targets this config declares.
    pub fn target_names(&self) -> Vec<String> {
        self.targets.target_names().map(str::to_string).collect()
    }
}

/// `secret`, else `secret_file` (trimmed), else the env var; both keys at once is a mistake.
fn read_secret(
    inline: Option<String>,
    file: Option<&Path>,
) -> Result<Option<Secret>, AgentConfigError> {
    let text = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(AgentConfigError::Invalid(
                "both `secret` and `secret_file` are set; keep one".into(),
            ));
        }
        (Some(s), None) => Some(s),
        (None, Some(p)) => Some(std::fs::read_to_string(p).map_err(|e| {
            AgentConfigError::Invalid(format!(
                "cannot read secret_file {}: {e}. Create it (e.g. `openssl rand -hex 32 > {}`) or fix the path",
                p.display(),
                p.display()
            ))
        })?),
        (None, None) => std::env::var(SECRET_ENV).ok(),
    };
    match text.map(|t| t.trim().to_string()) {
        Some(t) if t.is_empty() => Err(AgentConfigError::Invalid(
            "the agent's secret is empty; put a long random string in secret_file (e.g. `openssl rand -hex 32`)".into(),
        )),
        Some(t) => Ok(Some(Secret(t))),
        None => Ok(None),
    }
}

/// A TCP agent needs a secret; off loopback it also needs TLS, since the secret and the
/// requests would otherwise cross the network in clear.
fn check_tcp_security(
    addr: SocketAddr,
    has_secret: bool,
    has_tls: bool,
) -> Result<(), AgentConfigError> {
    let loopback = addr.ip().is_loopback();
    let mut missing = Vec::new();
    if !has_secret {
        missing.push(format!(
            "a secret (add secret_file = \"/etc/chaosbot/agent.secret\", or secret = \"...\", or set {SECRET_ENV})"
        ));
    }
    if !loopback && !has_tls {
        missing.push(
            "TLS (add a [tls] table with cert = \"/etc/chaosbot/agent.pem\" and key = \"/etc/chaosbot/agent-key.pem\")"
                .to_string(),
        );
    }
    if missing.is_empty() {
        return Ok(());
    }
    let place = if loopback {
        "a TCP address"
    } else {
        "a non-loopback address"
    };
    Err(AgentConfigError::Invalid(format!(
        "refusing to listen on {addr}, {place}, without {}. Or listen on a Unix socket (socket = \"/run/chaosbot/agent.sock\")",
        missing.join(" and without ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxiproxy_defaults_off_and_remote() {
        let base = "name = \"a\"\nsocket = \"/tmp/x/a.sock\"\nstate_dir = \"/tmp/x\"\n";
        let on = load(base).ok().map(|c| c.toxiproxy);
        assert_eq!(
            on.as_ref().and_then(|t| t.listen).map(|a| a.to_string()),
            Some(DEFAULT_TOXIPROXY_LISTEN.to_string())
        );
        assert_eq!(on.map(|t| t.toxic_deadline), Some(DEFAULT_TOXIC_DEADLINE));
        for off in ["listen = \"off\"", "enabled = false"] {
            let c = load(&format!("{base}[toxiproxy]\n{off}\n"));
            assert_eq!(c.ok().map(|c| c.toxiproxy.listen), Some(None), "{off}");
        }
        let remote = load(&format!("{base}[toxiproxy]\nlisten = \"0.0.0.0:8474\"\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(remote.contains("allow_remote"), "{remote}");
        let allowed = load(&format!(
            "{base}[toxiproxy]\nlisten = \"0.0.0.0:8474\"\nallow_remote = true\ntoxic_deadline = \"5m\"\n"
        ))
        .ok()
        .map(|c| c.toxiproxy);
        assert_eq!(
            allowed.map(|t| (t.listen.map(|a| a.port()), t.toxic_deadline)),
            Some((Some(8474), Duration::from_secs(300)))
        );
    }

    fn load(text: &str) -> Result<AgentConfig, AgentConfigError> {
        AgentConfig::from_toml(text, Path::new("agent.toml"))
    }

    #[test]
    fn public_address_without_secret_and_tls_names_both() {
        let err = load("name = \"a\"\nlisten = \"0.0.0.0:7411\"\nstate_dir = \"/tmp/x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a secret") && err.contains("TLS"), "{err}");
    }

    #[test]
    fn loopback_needs_a_secret_only() {
        let err = load("name = \"a\"\nlisten = \"127.0.0.1:7411\"\nstate_dir = \"/tmp/x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a secret") && !err.contains("TLS"), "{err}");
        let ok = load(
            "name = \"a\"\nlisten = \"127.0.0.1:7411\"\nsecret = \" s3cret \\n\"\nstate_dir = \"/tmp/x\"\n",
        );
        assert_eq!(
            ok.ok().and_then(|c| c.secret).map(|s| s.0),
            Some("s3cret".to_string())
        );
    }

    #[test]
    fn socket_needs_no_secret_and_targets_are_validated() {
        let ok = load("name = \"a\"\nsocket = \"/tmp/x/a.sock\"\nstate_dir = \"/tmp/x\"\n");
        assert!(ok.is_ok());
        let bad = load(
            "name = \"a\"\nsocket = \"/tmp/x/a.sock\"\nstate_dir = \"/tmp/x\"\n[[targets.process]]\nname = \"p\"\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(bad.contains("exactly one of"), "{bad}");
        let toxi = load(
            "name = \"a\"\nsocket = \"/tmp/x/a.sock\"\nstate_dir = \"/tmp/x\"\n[[targets.proxy]]\nname = \"shop\"\ntoxiproxy = \"http://127.0.0.1:8474\"\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            toxi.contains("target `shop` names a Toxiproxy server")
                && toxi.contains("chaosbot.toml"),
            "{toxi}"
        );
    }

    #[test]
    fn http_endpoints_are_declared_for_the_load_the_agent_generates() {
        let cfg = load(
            "name = \"a\"\nsocket = \"/tmp/x/a.sock\"\nstate_dir = \"/tmp/x\"\n[[targets.http]]\nname = \"api-http\"\nurl = \"http://127.0.0.1:18080\"\n",
        );
        assert_eq!(
            cfg.ok().map(|c| c.targets.target_kind("api-http")),
            Some(Some("http"))
        );
    }
}
