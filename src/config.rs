//! Operator settings: `chaosbot.toml` (path from `--config` or `CHAOSBOT_CONFIG`) plus
//! environment overrides, validated once at start. The config is where targets are declared:
//! an experiment can only touch what is listed here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default store when neither the config nor `DATABASE_URL` names one: a SQLite file in the
/// working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://chaosbot.db";

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
    pub schedules: crate::schedule::ScheduleConfig,
    /// The weekly digest (issue 5): off unless a channel is set.
    #[serde(default)]
    pub digest: DigestConfig,
    /// Game days (`/chaos gameday`).
    #[serde(default)]
    pub gameday: GamedayConfig,
}

fn default_catalog() -> PathBuf {
    PathBuf::from("experiments")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            catalog: default_catalog(),
            guard_rails: GuardRails::default(),
            targets: Targets::default(),
            slack: SlackConfig::default(),
            qa: QaConfig::default(),
            schedules: crate::schedule::ScheduleConfig::default(),
            digest: DigestConfig::default(),
            gameday: GamedayConfig::default(),
        }
    }
}

/// `[gameday]`: defaults for game-day plans that do not set their own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GamedayConfig {
    /// How long each run's Q&A lasts before the next agenda item starts.
    #[serde(
        default = "default_gameday_qa_window",
        with = "crate::spec::duration_serde"
    )]
    pub qa_window: Duration,
}

fn default_gameday_qa_window() -> Duration {
    Duration::from_secs(600)
}

impl Default for GamedayConfig {
    fn default() -> Self {
        GamedayConfig {
            qa_window: default_gameday_qa_window(),
        }
    }
}

/// `[digest]`: when and where the weekly digest is posted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Slack channel id (`C…`) to post to; no channel, no digest.
    #[serde(default)]
    pub channel: Option<String>,
    /// Day of the week: `mon` … `sun` (or the full name).
    #[serde(default = "default_digest_weekday")]
    pub weekday: String,
    /// Local time of day, `HH:MM` (24-hour).
    #[serde(default = "default_digest_at")]
    pub at: String,
    /// IANA time zone name, e.g. `Europe/Berlin`; `weekday` and `at` are read in it.
    #[serde(default = "default_digest_timezone")]
    pub timezone: String,
}

fn default_digest_weekday() -> String {
    "mon".into()
}
fn default_digest_at() -> String {
    "09:00".into()
}
fn default_digest_timezone() -> String {
    "UTC".into()
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            channel: None,
            weekday: default_digest_weekday(),
            at: default_digest_at(),
            timezone: default_digest_timezone(),
        }
    }
}

/// A [`DigestConfig`] read and checked: the moment of the week the digest is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestTime {
    pub weekday: chrono::Weekday,
    pub at: chrono::NaiveTime,
    pub timezone: chrono_tz::Tz,
}

impl DigestConfig {
    /// The channel, when the digest is on.
    pub fn enabled_channel(&self) -> Option<&str> {
        self.channel
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }

    /// Reads `weekday`, `at` and `timezone`; the error says which one is wrong and how to write it.
    pub fn time(&self) -> Result<DigestTime, ConfigError> {
        let weekday = self.weekday.trim().parse::<chrono::Weekday>().map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.weekday `{}` is not a day of the week; write mon, tue, wed, thu, fri, sat or sun",
                self.weekday
            ))
        })?;
        let at = chrono::NaiveTime::parse_from_str(self.at.trim(), "%H:%M").map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.at `{}` is not a time of day; write it as HH:MM on a 24-hour clock, e.g. \"09:00\"",
                self.at
            ))
        })?;
        let timezone = self.timezone.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.timezone `{}` is not a time zone; use an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\"",
                self.timezone
            ))
        })?;
        Ok(DigestTime {
            weekday,
            at,
            timezone,
        })
    }
}

/// A secret from the config or the environment; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The Slack app: credentials, where to listen, and who may do what.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Verifies that requests come from Slack. Env: SLACK_SIGNING_SECRET.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// `xoxb-…` token for the Web API. Env: SLACK_BOT_TOKEN.
    #[serde(default)]
    pub bot_token: Option<Secret>,
    /// `xapp-…` token; when set, chaosbot connects over Socket Mode (no public URL needed).
    /// Env: SLACK_APP_TOKEN.
    #[serde(default)]
    pub app_token: Option<Secret>,
    /// Base URL of the Web API, ending in `/`. Env: SLACK_API_URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// HTTP listen address of `chaosbot serve`. Env: CHAOSBOT_LISTEN.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The workspace (team id) this bot serves; requests from others are refused.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Slack user IDs who may start any experiment anywhere and abort any run.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Who may start which experiments, and in which channels.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Named in refusals as whom to ask, e.g. "#sre-oncall" or "<@U0123>".
    #[serde(default)]
    pub contact: Option<String>,
}

/// One permission: these users (empty = anyone) may start these experiments (names or `*`
/// globs) in these channels (empty = any channel).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub experiments: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The speaker Q&A in a run's thread.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// How long after a run ends its thread takes questions.
    #[serde(default = "default_qa_window", with = "crate::spec::duration_serde")]
    pub window: Duration,
    /// Questions shown on the board (most votes first); `/chaos qa` shows them all.
    #[serde(default = "default_board_top")]
    pub board_top: u32,
}

fn default_qa_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_board_top() -> u32 {
    10
}

impl Default for QaConfig {
    fn default() -> Self {
        QaConfig {
            window: default_qa_window(),
            board_top: default_board_top(),
        }
    }
}

/// Slack's Web API base URL.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardRails {
    /// No experiment may run longer than this (method plus recovery), whatever its parameters.
    #[serde(default = "default_max_run", with = "crate::spec::duration_serde")]
    pub max_run_duration: Duration,
    /// Runs in flight at once across all workers and replicas.
    #[serde(default = "default_two")]
    pub max_concurrent_runs: u32,
    /// Worker tasks in this process.
    #[serde(default = "default_two")]
    pub worker_pool_size: u32,
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
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Services reached through the built-in fault proxy.
    #[serde(default)]
    pub proxy: Vec<ProxyTarget>,
    /// HTTP endpoints that probes and rollbacks may call.
    #[serde(default)]
    pub http: Vec<HttpEndpoint>,
    /// Processes that `kill` and `pause` faults may signal.
    #[serde(default)]
    pub process: Vec<ProcessTarget>,
    /// The host chaosbot runs on, with the guard rails of `cpu` and `memory` faults.
    #[serde(default)]
    pub host: Vec<HostTarget>,
    /// Directories that `disk` and `io` faults may write into.
    #[serde(default)]
    pub disk: Vec<DiskTarget>,
}

/// A process (or set of processes) on this host, matched by exactly one of `comm`, `pid_file`
/// or `find_command`. Only what the matcher returns is ever signalled.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessTarget {
    pub name: String,
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostTarget {
    pub name: String,
    /// A memory fault is refused if it would leave less than this available (MemAvailable).
    #[serde(default = "default_min_free_mib")]
    pub min_free_memory_mib: u64,
    /// Largest memory fault, checked when the experiment is validated (no limit when unset).
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Most CPU workers one fault may start (default: the number of CPUs).
    #[serde(default)]
    pub max_cpu_workers: Option<u32>,
    #[serde(default)]
    pub description: String,
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskTarget {
    pub name: String,
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

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyTarget {
    pub name: String,
    /// Where chaosbot listens; clients of the service connect here.
    pub listen: SocketAddr,
    /// host:port of the real service.
    pub upstream: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpoint {
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:18080`; probes add their path.
    pub url: String,
    #[serde(default)]
    pub description: String,
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
        Ok(())
    }

    /// Checks what the types cannot: unique names, positive limits, parseable URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.schedules.window().map_err(ConfigError::Invalid)?;
        self.digest.time()?;
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
        if self.gameday.qa_window > crate::gameday::plan::MAX_QA_WINDOW {
            return Err(ConfigError::Invalid(format!(
                "gameday.qa_window is {}; keep it at most {} (a Q&A longer than that loses the room)",
                humantime::format_duration(self.gameday.qa_window),
                humantime::format_duration(crate::gameday::plan::MAX_QA_WINDOW)
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

    pub fn target_names(&self) -> impl Iterator<Item = &str> {
        self.targets
            .proxy
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.targets.http.iter().map(|h| h.name.as_str()))
            .chain(self.targets.process.iter().map(|p| p.name.as_str()))
            .chain(self.targets.host.iter().map(|h| h.name.as_str()))
            .chain(self.targets.disk.iter().map(|d| d.name.as_str()))
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
        if self.proxy_target(name).is_some() {
            Some("proxy")
        } else if self.http_endpoint(name).is_some() {
            Some("http")
        } else if self.process_target(name).is_some() {
            Some("process")
        } else if self.host_target(name).is_some() {
            Some("host")
        } else if self.disk_target(name).is_some() {
            Some("disk")
        } else {
            None
        }
    }

    pub fn proxy_target(&self, name: &str) -> Option<&ProxyTarget> {
        self.targets.proxy.iter().find(|p| p.name == name)
    }

    pub fn http_endpoint(&self, name: &str) -> Option<&HttpEndpoint> {
        self.targets.http.iter().find(|h| h.name == name)
    }

    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
