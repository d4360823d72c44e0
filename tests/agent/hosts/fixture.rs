//! A site: one test host running `chaosbot agent` with TLS and a secret, a service behind the
//! agent's proxy, a process to pause (by pid file), a scratch directory to fill, and the files a
//! controller outside needs (`chaosbot.toml` with `[[agents]]`, experiments, the SQLite store).
//!
//! The agent bench includes this file too (with netns.rs, certs.rs and api.rs beside it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::api::AgentApi;
use super::certs::AgentTls;
use super::netns::{HostChild, TestHost};
use chaosbot::faults::process::process_state;

pub const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");
pub const AGENT_PORT: u16 = 7411;
pub const PROXY_PORT: u16 = 18080;
pub const UPSTREAM_PORT: u16 = 8080;
pub const AGENT_NAME: &str = "web-1";

/// An HTTP/1.1 service answering `ok` to every GET (threads; keep-alive), printing `ready`
/// once it listens.
const UPSTREAM_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// What a site declares besides the defaults.
#[derive(Clone)]
pub struct SiteOptions {
    /// Extra process targets `worker-1` .. `worker-N` (each its own `sleep`).
    pub extra_workers: usize,
    /// The controller's `[agent] lease_ttl` and `renew_every`.
    pub lease_ttl: &'static str,
    pub renew_every: &'static str,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            extra_workers: 0,
            lease_ttl: "3s",
            renew_every: "500ms",
        }
    }
}

pub struct Site {
    pub host: TestHost,
    pub tls: AgentTls,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub scratch: PathBuf,
    pub agent_config: PathBuf,
    pub controller_config: PathBuf,
    pub db_url: String,
    pub worker: HostChild,
    /// `worker-1` .. `worker-N`.
    pub extra: Vec<HostChild>,
    pub upstream: HostChild,
    pub agent: Option<HostChild>,
    pub api: AgentApi,
}

/// The interpreter behind `python3` (pyenv shims cost a start-up each).
fn python() -> String {
    Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Waits (bounded) until `ok` holds; false on timeout.
pub fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok()
}

fn spawn_sleep(host: &TestHost, dir: &Path, name: &str) -> (HostChild, PathBuf) {
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let child = host.spawn(&sleep).expect("spawn sleep in the namespace");
    let pid_file = dir.join(format!("{name}.pid"));
    std::fs::write(&pid_file, format!("{}\n", child.pid())).expect("write pid file");
    (child, pid_file)
}

impl Site {
    /// Builds the host and starts the agent on it; Err: why namespaces cannot be made here.
    pub fn new(opts: SiteOptions) -> Result<Site, String> {
        let host = TestHost::new()?;
        let tls = AgentTls::new(host.ip());
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("agent-state");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        std::fs::create_dir_all(&scratch).expect("scratch dir");

        let (worker, worker_pid) = spawn_sleep(&host, dir.path(), "worker");
        let mut extra = Vec::new();
        let mut process_targets = vec![("worker".to_string(), worker_pid)];
        for k in 1..=opts.extra_workers {
            let name = format!("worker-{k}");
            let (child, pid_file) = spawn_sleep(&host, dir.path(), &name);
            extra.push(child);
            process_targets.push((name, pid_file));
        }

        let mut py = Command::new(python());
        py.args(["-c", UPSTREAM_PY, &UPSTREAM_PORT.to_string()]);
        let upstream = host.spawn(&py).expect("spawn the upstream service");

        let ip = host.ip();
        let mut agent_toml = format!(
            r#"name = "{AGENT_NAME}"
listen = "{ip}:{AGENT_PORT}"
secret_file = "{secret}"
state_dir = "{state}"

[tls]
cert = "{cert}"
key = "{key}"

[[targets.proxy]]
name = "api"
listen = "{ip}:{PROXY_PORT}"
upstream = "127.0.0.1:{UPSTREAM_PORT}"

[[targets.disk]]
name = "scratch"
path = "{scratch}"
"#,
            secret = tls.secret_file.display(),
            state = state_dir.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            scratch = scratch.display(),
        );
        let mut controller_toml = format!(
            r#"catalog = "{catalog}"

[guard_rails]
max_run_duration = "5m"

[agent]
lease_ttl = "{ttl}"
renew_every = "{renew}"
socket = "{socket}"

[[agents]]
name = "{AGENT_NAME}"
url = "https://{ip}:{AGENT_PORT}"
secret_file = "{secret}"
ca_file = "{ca}"

[[targets.proxy]]
name = "api"
agent = "{AGENT_NAME}"
listen = "{ip}:{PROXY_PORT}"
upstream = "127.0.0.1:{UPSTREAM_PORT}"

[[targets.disk]]
name = "scratch"
agent = "{AGENT_NAME}"
path = "{scratch}"

[[targets.http]]
name = "api-http"
url = "http://{ip}:{PROXY_PORT}"
"#,
            catalog = dir.path().display(),
            ttl = opts.lease_ttl,
            renew = opts.renew_every,
            socket = dir.path().join("local").join("agent.sock").display(),
            secret = tls.secret_file.display(),
            ca = tls.ca_file.display(),
            scratch = scratch.display(),
        );
        for (name, pid_file) in &process_targets {
            let pid_file = pid_file.display();
            agent_toml.push_str(&format!(
                "\n[[targets.process]]\nname = \"{name}\"\npid_file = \"{pid_file}\"\n"
            ));
            controller_toml.push_str(&format!(
                "\n[[targets.process]]\nname = \"{name}\"\nagent = \"{AGENT_NAME}\"\npid_file = \"{pid_file}\"\n"
            ));
        }
        let agent_config = dir.path().join("agent.toml");
        std::fs::write(&agent_config, agent_toml).expect("write agent.toml");
        let controller_config = dir.path().join("chaosbot.toml");
        std::fs::write(&controller_config, controller_toml).expect("write chaosbot.toml");
        let db_url = format!("sqlite://{}", dir.path().join("runs.db").display());

        let api = AgentApi::new(
            &format!("https://{ip}:{AGENT_PORT}"),
            &tls.ca_file,
            Some(&tls.secret),
        );
        let site = Site {
            host,
            tls,
            dir,
            state_dir,
            scratch,
            agent_config,
            controller_config,
            db_url,
            worker,
            extra,
            upstream,
            agent: None,
            api,
        };
        let up = wait_until(Duration::from_secs(10), || {
            site.upstream.log().contains("ready")
        });
        assert!(up, "the upstream did not start: {}", site.upstream.log());
        Ok(site)
    }

    /// Starts `chaosbot agent --config agent.toml` inside the namespace and waits (bounded)
    /// until it answers `hello` over TLS.
    pub async fn start_agent(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--config")
            .arg(&self.agent_config)
            .env("RUST_LOG", "chaosbot=debug,info")
            .env_remove("CHAOSBOT_AGENT_SECRET");
        let child = self.host.spawn(&cmd).expect("spawn chaosbot agent");
        self.agent = Some(child);
        let start = Instant::now();
        loop {
            match self.api.hello().await {
                Ok(_) => return,
                Err(e) if start.elapsed() > Duration::from_secs(15) => panic!(
                    "the agent did not answer hello within 15s ({e:?}); its log:\n{}",
                    self.agent_log()
                ),
                Err(_) => {}
            }
            if let Some(a) = self.agent.as_mut()
                && !a.running()
            {
                panic!("the agent exited at start; its log:\n{}", self.agent_log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(HostChild::log).unwrap_or_default()
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().map(HostChild::pid).unwrap_or(0)
    }

    pub fn worker_paused(&self) -> bool {
        process_state(self.worker.pid() as i32) == Some('T')
    }

    /// Files in the scratch directory (a disk fault's fill file lives there).
    pub fn scratch_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.scratch)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// The proxy's address as clients (outside the host) reach it.
    pub fn proxy_url(&self) -> String {
        format!("http://{}:{PROXY_PORT}/", self.host.ip())
    }

    /// A `chaosbot` command for the controller side (root namespace), on this site's config
    /// and store.
    pub fn chaosbot(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.controller_config)
            .arg("--database-url")
            .arg(&self.db_url)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("CHAOSBOT_CONFIG")
            .env_remove("CHAOSBOT_AGENT_SOCKET")
            .env("RUST_LOG", "chaosbot=debug,info");
        c
    }

    /// Writes an experiment into the catalog; its path.
    pub fn experiment(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write experiment");
        path
    }

    /// Starts `chaosbot run EXPERIMENT` on the controller side.
    pub fn start_run(&self, experiment: &Path) -> HostChild {
        let cmd = self.chaosbot(&["run", &experiment.display().to_string()]);
        self.host.spawn_outside(&cmd).expect("spawn chaosbot run")
    }

    /// `chaosbot show RUN --json`, parsed.
    pub fn show_json(&self, run_id: &str) -> serde_json::Value {
        let out = self
            .chaosbot(&["show", run_id, "--json"])
            .output()
            .expect("run chaosbot show");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "chaosbot show --json printed no JSON ({e}): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits (bounded) until the agent holds `n` faults; their count.
    pub async fn wait_faults(&self, n: usize, limit: Duration) -> usize {
        let start = Instant::now();
        let mut held = 0;
        while start.elapsed() < limit {
            if let Ok(list) = self.api.faults().await {
                held = list.faults.len();
                if held >= n {
                    return held;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held
    }
}

/// One GET with its own connection: Ok(elapsed) for a 200, Err otherwise.
pub async fn timed_get(client: &reqwest::Client, url: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    if status.is_success() && body == "ok\n" {
        Ok(start.elapsed())
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// A plain HTTP client that opens a new connection per request (no pool), so every request
/// goes through the proxy's accept path.
pub fn fresh_client(timeout: Duration) -> reqwest::Client {
    // The crate's reqwest has no TLS provider of its own: hand it ours even for plain http.
    let tls = chaosbot::tls::client_config(&chaosbot::tls::TlsOptions::default())
        .expect("default TLS config");
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

/// An experiment on this site's targets: `steps` is the YAML of the method's items (indented
/// by two spaces), probing the API through the agent's proxy.
pub fn experiment_yaml(name: &str, steps: &str) -> String {
    format!(
        r#"name: {name}
title: Faults on a host reached through its agent
owner: "@agent-tests"
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-up
      http: {{endpoint: api-http, path: /, status: 200}}
      interval: 500ms
      timeout: 5s
method:
{steps}"#
    )
}
