//! `[agent]` (lease terms, the local agent) and `[[agents]]` (agents on other hosts): where the
//! controller sends the faults of the targets that name an agent.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret};

/// How the controller reaches the targets without an `agent`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LocalAgentMode {
    /// A local agent process, started on demand over a Unix socket (the binary's default).
    #[default]
    Process,
    /// Faults are put in place inside the controller process itself (no agent).
    InProcess,
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// A fault whose lease is not renewed for this long is reverted by its agent.
    #[serde(default = "default_lease_ttl", with = "crate::config::duration_serde")]
    pub lease_ttl: Duration,
    #[serde(
        default = "default_renew_every",
        with = "crate::config::duration_serde"
    )]
    pub renew_every: Duration,
    /// The local agent's socket (env CHAOSBOT_AGENT_SOCKET); default under $XDG_RUNTIME_DIR.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub local: LocalAgentMode,
}

// The agent protocol's lease terms (`agent::protocol::{LEASE_TTL_MS, RENEW_EVERY_MS}`; config
// sits below `agent`, so the numbers are repeated here and a test checks they agree).
pub const DEFAULT_LEASE_TTL_MS: u64 = 10_000;
pub const DEFAULT_RENEW_EVERY_MS: u64 = 2_000;

fn default_lease_ttl() -> Duration {
    Duration::from_millis(DEFAULT_LEASE_TTL_MS)
}
fn default_renew_every() -> Duration {
    Duration::from_millis(DEFAULT_RENEW_EVERY_MS)
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            lease_ttl: default_lease_ttl(),
            renew_every: default_renew_every(),
            socket: None,
            local: LocalAgentMode::default(),
        }
    }
}

/// `[[agents]]`: one `chaosbot agent` on another host (or on this one, as a service).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub name: String,
    /// `https://host:port`, `http://127.x:port` (loopback only) or `unix:///path`.
    pub url: String,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name verified in the agent's certificate when the URL holds an IP address.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Where an agent is reached, as checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    Unix(PathBuf),
    /// Plain HTTP (loopback only) or HTTPS: the URL's base.
    Http {
        base: url::Url,
        tls: bool,
    },
}

impl AgentEntry {
    pub fn tls(&self) -> crate::tls::TlsOptions {
        crate::tls::TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.server_name.clone(),
            insecure_skip_verify: false,
        }
    }

    fn invalid(&self, why: String) -> ConfigError {
        ConfigError::Invalid(format!("agent `{}`: {why}", self.name))
    }

    /// The URL, checked: scheme, loopback for plain HTTP.
    pub fn address(&self) -> Result<AgentAddress, ConfigError> {
        if let Some(path) = self.url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(self.invalid(format!(
                    "url `{}` needs an absolute socket path, like unix:///run/chaosbot/agent.sock",
                    self.url
                )));
            }
            return Ok(AgentAddress::Unix(PathBuf::from(path)));
        }
        let url = url::Url::parse(&self.url).map_err(|e| {
            self.invalid(format!(
                "url `{}` is not a URL ({e}); write it like https://10.0.0.5:7411",
                self.url
            ))
        })?;
        match url.scheme() {
            "https" => Ok(AgentAddress::Http {
                base: url,
                tls: true,
            }),
            "http" => {
                let loopback = match url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    None => false,
                };
                if !loopback {
                    return Err(self.invalid(format!(
                        "url `{}` is plain http:// to another host: the secret and the faults would cross the network in clear. Use https:// (with the agent's [tls]), or unix:// on this host",
                        self.url
                    )));
                }
                Ok(AgentAddress::Http {
                    base: url,
                    tls: false,
                })
            }
            other => Err(self.invalid(format!(
                "url `{}` uses `{other}://`; an agent is reached at https://, http://127.0.0.1 (loopback) or unix:///path",
                self.url
            ))),
        }
    }

    /// The bearer secret: `secret`, else the contents of `secret_file`. A Unix socket may go
    /// without (its file mode is the credential).
    pub fn read_secret(&self) -> Result<Option<String>, ConfigError> {
        if let Some(s) = &self.secret {
            return Ok(Some(s.expose().trim().to_string()));
        }
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.invalid(format!(
                "cannot read secret_file {}: {e}; point it at the file holding the agent's secret",
                path.display()
            ))
        })?;
        let secret = text.trim().to_string();
        if secret.is_empty() {
            return Err(self.invalid(format!(
                "secret_file {} is empty; write the agent's secret in it",
                path.display()
            )));
        }
        Ok(Some(secret))
    }

    /// Everything that can be checked before contacting the agent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Invalid(
                "an [[agents]] entry has an empty name".into(),
            ));
        }
        let address = self.address()?;
        if self.secret.is_some() && self.secret_file.is_some() {
            return Err(self.invalid("set `secret` or `secret_file`, not both".into()));
        }
        let secret = self.read_secret()?;
        match &address {
            AgentAddress::Unix(_) => {}
            AgentAddress::Http { .. } if secret.is_none() => {
                return Err(self.invalid(format!(
                    "no secret for `{}`: set `secret_file` (or `secret`) to the agent's secret",
                    self.url
                )));
            }
            AgentAddress::Http { .. } => {}
        }
        let tls = self.tls();
        match address {
            AgentAddress::Http { tls: true, .. } => {
                crate::tls::check(&tls).map_err(|e| self.invalid(e.to_string()))
            }
            _ if !tls.is_default() => Err(self.invalid(format!(
                "ca_file, client_cert, client_key and server_name apply to https:// agents, and `{}` is not; use https:// or remove them",
                self.url
            ))),
            _ => Ok(()),
        }
    }
}
