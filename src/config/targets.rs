//! `[guard_rails]` and `[targets]`: what experiments may touch, and how hard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardRails {
    /// No experiment may run longer than this (method plus recovery), whatever its parameters.
    #[serde(default = "default_max_run", with = "crate::config::duration_serde")]
    pub max_run_duration: Duration,
    /// Runs in flight at once across all workers and replicas.
    #[serde(default = "default_two")]
    pub max_concurrent_runs: u32,
    /// Worker tasks in this process.
    #[serde(default = "default_two")]
    pub worker_pool_size: u32,
    /// A run still queued after this long (waiting behind the run that holds its target, or
    /// for a free slot) ends `failed` with the reason.
    #[serde(
        default = "default_max_queue_wait",
        with = "crate::config::duration_serde"
    )]
    pub max_queue_wait: Duration,
}

fn default_max_queue_wait() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_run() -> Duration {
    Duration::from_secs(600)
}
fn default_two() -> u32 {
    2
}

impl Default for GuardRails {
    fn default() -> Self {
        GuardRails {
            max_run_duration: default_max_run(),
            max_concurrent_runs: 2,
            worker_pool_size: 2,
            max_queue_wait: default_max_queue_wait(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(try_from = "RawTargets")]
pub struct Targets {
    /// Services reached through the built-in fault proxy.
    pub proxy: Vec<ProxyTarget>,
    /// `[[targets.proxy]]` entries that name an existing Toxiproxy server (`toxiproxy = URL`)
    /// instead of chaosbot's own proxy: their network faults are toxics added through its API.
    pub toxiproxy: Vec<ToxiproxyTarget>,
    /// HTTP endpoints that probes and rollbacks may call.
    pub http: Vec<HttpEndpoint>,
    /// Processes that `kill` and `pause` faults may signal.
    pub process: Vec<ProcessTarget>,
    /// The host chaosbot runs on, with the guard rails of `cpu` and `memory` faults.
    pub host: Vec<HostTarget>,
    /// Directories that `disk` and `io` faults may write into.
    pub disk: Vec<DiskTarget>,
    /// Commands that probes, actions and rollbacks may run.
    #[serde(default)]
    pub command: Vec<super::commands::CommandTarget>,
}

/// A process (or set of processes) on this host, matched by exactly one of `comm`, `pid_file`
/// or `find_command`. Only what the matcher returns is ever signalled.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessTarget {
    pub name: String,
    /// The agent that owns this target (`[[agents]]`); without it, the local agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Exact process name as in /proc/PID/comm (at most 15 bytes): every process with it.
    #[serde(default)]
    pub comm: Option<String>,
    /// A file holding one pid.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// A shell command the operator wrote that prints pids (whitespace separated).
    #[serde(default)]
    pub find_command: Option<String>,
    /// Shell command that starts the process again; run when a `kill` step with
    /// `restart: true` ends, is reverted, or is recovered after a crash.
    #[serde(default)]
    pub restart_command: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// How a [`ProcessTarget`] finds its processes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessMatch {
    Comm(String),
    PidFile(PathBuf),
    FindCommand(String),
}

impl ProcessTarget {
    /// The one matcher this target declares (checked by [`Config::validate`]).
    pub fn matcher(&self) -> Option<ProcessMatch> {
        match (&self.comm, &self.pid_file, &self.find_command) {
            (Some(c), None, None) => Some(ProcessMatch::Comm(c.clone())),
            (None, Some(p), None) => Some(ProcessMatch::PidFile(p.clone())),
            (None, None, Some(f)) => Some(ProcessMatch::FindCommand(f.clone())),
            _ => None,
        }
    }
}

/// The host chaosbot runs on, for `cpu` and `memory` faults.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostTarget {
    pub name: String,
    /// The agent that owns this target (`[[agents]]`); without it, the local agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A memory fault is refused if it would leave less than this available (MemAvailable).
    #[serde(default = "default_min_free_mib")]
    pub min_free_memory_mib: u64,
    /// Largest memory fault, checked when the experiment is validated (no limit when unset).
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Most CPU workers one fault may start (default: the number of CPUs).
    #[serde(default)]
    pub max_cpu_workers: Option<u32>,
    /// Guard rails of host network faults (`blackhole`, `reject`, `loss`, …); without this
    /// section the host refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<HostNetworkRails>,
    #[serde(default)]
    pub description: String,
}

/// `[targets.host.network]`: what host network faults may touch.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostNetworkRails {
    /// Interfaces faults may act on; empty: any. A fault naming none acts on all of these.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// CIDRs a fault's destinations must lie in; empty: any.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Highest `loss` percentage (default 100).
    #[serde(default)]
    pub max_loss_percent: Option<f64>,
    /// Longest `delay` (latency plus jitter) or `reorder` latency, in milliseconds (default
    /// [`DEFAULT_MAX_DELAY_MS`]): every packet held is held in the kernel's queue.
    #[serde(default)]
    pub max_delay_ms: Option<u64>,
    /// Allows a scope that covers every peer and every port (off by default: such a fault
    /// cuts the host off from everything but its agent's control channel).
    #[serde(default)]
    pub allow_everything: bool,
}

/// The longest packet delay a host allows when its guard rails name none.
pub const DEFAULT_MAX_DELAY_MS: u64 = 10_000;

impl HostNetworkRails {
    pub fn max_delay(&self) -> u64 {
        self.max_delay_ms.unwrap_or(DEFAULT_MAX_DELAY_MS)
    }
}

fn default_min_free_mib() -> u64 {
    256
}

impl HostTarget {
    pub fn cpu_worker_limit(&self) -> u32 {
        self.max_cpu_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1)
        })
    }
}

/// A directory that `disk` (fill) and `io` (write load) faults may write into.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskTarget {
    pub name: String,
    /// The agent that owns this target (`[[agents]]`); without it, the local agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub path: PathBuf,
    /// A disk fault is refused if the filesystem would be fuller than this (percent used).
    #[serde(default = "default_max_fill")]
    pub max_fill_percent: f64,
    /// Highest write rate an `io` fault may ask for.
    #[serde(default = "default_max_io")]
    pub max_io_mib_per_s: u64,
    #[serde(default)]
    pub description: String,
}

fn default_max_fill() -> f64 {
    90.0
}
fn default_max_io() -> u64 {
    100
}

/// How `[targets]` is written: a `[[targets.proxy]]` entry is chaosbot's own proxy (`listen`,
/// `upstream`) or a proxy on a Toxiproxy server (`toxiproxy`, `proxy`), told apart here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    #[serde(default)]
    proxy: Vec<RawProxy>,
    #[serde(default)]
    http: Vec<HttpEndpoint>,
    #[serde(default)]
    process: Vec<ProcessTarget>,
    #[serde(default)]
    host: Vec<HostTarget>,
    #[serde(default)]
    disk: Vec<DiskTarget>,
    #[serde(default)]
    command: Vec<super::commands::CommandTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    name: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    toxiproxy: Option<String>,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    description: String,
}

impl TryFrom<RawTargets> for Targets {
    type Error = String;

    fn try_from(raw: RawTargets) -> Result<Targets, String> {
        let mut proxy = Vec::new();
        let mut toxiproxy = Vec::new();
        for p in raw.proxy {
            let name = p.name;
            match p.toxiproxy {
                Some(url) => {
                    if p.agent.is_some() {
                        return Err(format!(
                            "proxy target `{name}`: `toxiproxy` and `agent` exclude each other: the Toxiproxy server at {url} holds this target's toxics, no agent does. Remove one of them"
                        ));
                    }
                    if p.listen.is_some() || p.upstream.is_some() {
                        return Err(format!(
                            "proxy target `{name}`: `listen` and `upstream` are chaosbot's own proxy; a target on a Toxiproxy server takes both from the server's proxy. Remove them, and name that proxy with `proxy = \"...\"`"
                        ));
                    }
                    toxiproxy.push(ToxiproxyTarget {
                        proxy: p.proxy.unwrap_or_else(|| name.clone()),
                        name,
                        url,
                        description: p.description,
                    });
                }
                None => {
                    if let Some(other) = p.proxy {
                        return Err(format!(
                            "proxy target `{name}`: `proxy = \"{other}\"` names a proxy on a Toxiproxy server; add `toxiproxy = \"http://HOST:8474\"` (its API), or remove `proxy`"
                        ));
                    }
                    let (Some(listen), Some(upstream)) = (p.listen, p.upstream) else {
                        return Err(format!(
                            "proxy target `{name}` needs `listen` and `upstream` (chaosbot's proxy), or `toxiproxy = \"http://HOST:8474\"` and `proxy = \"NAME\"` (a proxy on a Toxiproxy server)"
                        ));
                    };
                    proxy.push(ProxyTarget {
                        name,
                        agent: p.agent,
                        listen,
                        upstream,
                        description: p.description,
                    });
                }
            }
        }
        Ok(Targets {
            proxy,
            toxiproxy,
            http: raw.http,
            process: raw.process,
            host: raw.host,
            disk: raw.disk,
            command: raw.command,
        })
    }
}

/// A proxy on an existing Toxiproxy server (`toxiproxy = URL`, `proxy = NAME` in a
/// `[[targets.proxy]]` entry). The server owns the proxy; chaosbot only adds and removes the
/// toxics it names itself. A Toxiproxy server has no lease: a toxic stays until chaosbot
/// removes it (at its deadline, on revert, or by crash recovery) or a person does.
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
pub struct ToxiproxyTarget {
    pub name: String,
    /// The server's API, like `http://127.0.0.1:8474`.
    pub url: String,
    /// The proxy's name on that server (default: the target's name).
    pub proxy: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyTarget {
    pub name: String,
    /// The agent that owns this target (`[[agents]]`); without it, the local agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Where chaosbot listens; clients of the service connect here.
    pub listen: SocketAddr,
    /// host:port of the real service.
    pub upstream: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpoint {
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:18080` or `https://api.internal`; probes add their path.
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// PEM file of the CA(s) that sign the endpoint's certificate (https only); when set, the
    /// only roots trusted. Without it, the platform's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM chain) for endpoints that require one (mTLS), with `client_key`.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// The name to verify (and send as SNI) when the URL holds an IP address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accepts any certificate. Only when written explicitly; `validate` warns and every run
    /// that uses the endpoint journals it.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The `[[agents]]` entry that generates this endpoint's load steps (from its host);
    /// probes still run from the controller. Without it, load runs in the controller.
    #[serde(default)]
    pub agent: Option<String>,
    /// Headers sent with every request to the endpoint (probes, actions, rollbacks, load),
    /// for credentials kept out of experiments: `${VAR}` in a value is read from the
    /// environment when the request is made, so only the template is ever stored or shown.
    #[serde(default)]
    pub headers: super::HeaderTemplates,
}

impl HttpEndpoint {
    /// The endpoint's TLS settings, as the HTTP clients take them.
    pub fn tls(&self) -> crate::tls::TlsOptions {
        crate::tls::TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.server_name.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }

    /// Whether the endpoint sets any TLS key (only meaningful for an https:// URL).
    pub fn sets_tls(&self) -> bool {
        !self.tls().is_default()
    }
}
