//! The real `chaosbot agent` binary in a tempdir, and a small protocol client over a Unix
//! socket, loopback TCP or TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::agent::protocol::{self, Apply, PROTOCOL_HEADER, Renew, Revert};
use chaosbot::faults::process::process_state;
use chaosbot::spec::model::{
    DiskAmount, FaultSpec, FaultStep, ProcessAction, ResourceKind, ToxicKind,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");
pub const SECRET: &str = "s3cret-for-tests";

/// How the test reaches an agent.
#[derive(Clone)]
pub enum Via {
    Unix(PathBuf),
    Tcp(SocketAddr),
    Tls {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
}

/// One agent process; killed (SIGKILL) when dropped if still running.
pub struct Agent {
    pub child: Child,
    pub via: Via,
    pub log: PathBuf,
    pub secret: Option<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's directory: the agent's config, state dir, socket, a `sleep 600` pause target, a
/// disk target, and a proxy in front of a loopback echo server.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub sleeper: Child,
    pub proxy: SocketAddr,
    pub echo: SocketAddr,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

impl Site {
    pub async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("sleeper.pid"), sleeper.id().to_string()).unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let echo = echo_server().await;
        Site {
            dir,
            sleeper,
            proxy: free_port(),
            echo,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("agent.sock")
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.sleeper.id()).unwrap()
    }

    /// The targets every configured test agent owns.
    pub fn targets(&self) -> String {
        let d = self.path().display();
        format!(
            r#"
[[targets.process]]
name = "sleeper"
pid_file = "{d}/sleeper.pid"

[[targets.disk]]
name = "scratch"
path = "{d}/scratch"

[[targets.proxy]]
name = "api"
listen = "{}"
upstream = "{}"

[[targets.http]]
name = "api-http"
url = "http://{}"
"#,
            self.proxy, self.echo, self.proxy
        )
    }

    /// agent.toml on the Unix socket with the test secret.
    pub fn socket_config(&self) -> PathBuf {
        let d = self.path().display();
        let text = format!(
            "name = \"web-1\"\nsocket = \"{d}/agent.sock\"\nsecret = \"{SECRET}\"\nstate_dir = \"{d}/state\"\n{}\n[toxiproxy]\nlisten = \"off\"\n",
            self.targets()
        );
        let path = self.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the configured agent on the socket and waits until it answers.
    pub async fn agent(&self) -> Agent {
        let cfg = self.socket_config();
        let agent = spawn(
            &["agent", "--config", cfg.to_str().unwrap()],
            self.path(),
            Via::Unix(self.socket()),
            Some(SECRET),
        );
        agent.ready().await;
        agent
    }

    /// Names of the files in the disk target's directory.
    pub fn scratch_files(&self) -> Vec<String> {
        std::fs::read_dir(self.path().join("scratch"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The echo server's round trip through the proxy.
    pub async fn proxy_round_trip(&self) -> Duration {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = Instant::now();
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(self.proxy),
        )
        .await
        .unwrap()
        .unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");
        started.elapsed()
    }
}

/// Spawns `chaosbot ARGS` with its stderr in `dir/agent-N.log`.
pub fn spawn(args: &[&str], dir: &Path, via: Via, secret: Option<&str>) -> Agent {
    let log = unique(dir, "agent", "log");
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("CHAOSBOT_CONFIG")
        .env_remove("CHAOSBOT_AGENT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent {
        child,
        via,
        log,
        secret: secret.map(str::to_string),
    }
}

fn unique(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    (0..1000)
        .map(|n| dir.join(format!("{stem}-{n}.{ext}")))
        .find(|p| !p.exists())
        .unwrap()
}

pub use crate::ports::free_port;

/// A loopback TCP echo server.
pub async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// One answer: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

impl Agent {
    /// Waits (bounded) until the agent answers `hello`, or fails the test with its log.
    pub async fn ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(a) = self.try_call("GET", "/v1/hello", None).await
                && a.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agent did not answer within 15s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log_text()))
    }

    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let auth = self.secret.as_ref().map(|s| format!("Bearer {s}"));
        request(
            &self.via,
            method,
            path,
            body,
            auth.as_deref(),
            Some(&protocol::PROTOCOL_VERSION.to_string()),
        )
        .await
    }

    pub async fn apply(&self, req: &Apply) -> Answer {
        self.call(
            "POST",
            "/v1/faults",
            Some(serde_json::to_value(req).unwrap()),
        )
        .await
    }

    pub async fn renew(&self, run_id: &str, epoch: u64, ids: &[&str], lease_ms: u64) -> Answer {
        let req = Renew {
            run_id: run_id.into(),
            epoch,
            fault_ids: ids.iter().map(|s| s.to_string()).collect(),
            lease_ms,
        };
        self.call(
            "POST",
            "/v1/leases",
            Some(serde_json::to_value(req).unwrap()),
        )
        .await
    }

    pub async fn revert(&self, run_id: &str, epoch: u64, id: &str) -> Answer {
        let req = Revert {
            run_id: run_id.into(),
            epoch,
        };
        self.call(
            "POST",
            &format!("/v1/faults/{id}/revert"),
            Some(serde_json::to_value(req).unwrap()),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        self.call("GET", "/metrics", None)
            .await
            .body
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` to the agent process (SIGSTOP/SIGCONT stall and resume it).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the agent this test started.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), sig) };
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.try_wait().ok().flatten()
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn request(
    via: &Via,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<&str>,
    protocol: Option<&str>,
) -> Result<Answer, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw_request(via, method, path, Bytes::from(body), auth, protocol).await
}

pub async fn raw_request(
    via: &Via,
    method: &str,
    path: &str,
    body: Bytes,
    auth: Option<&str>,
    protocol: Option<&str>,
) -> Result<Answer, String> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "agent")
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(p) = protocol {
        req = req.header(PROTOCOL_HEADER, p);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let fut = async {
        match via {
            Via::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| e.to_string())?;
                send(s, req).await
            }
            Via::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| e.to_string())?;
                send(s, req).await
            }
            Via::Tls { addr, config } => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let name = rustls::pki_types::ServerName::try_from("agent.test").unwrap();
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(tls, req).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "no answer within 10s".to_string())?
}

async fn send<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer { status, body })
}

/// A fault request with the usual fields.
pub fn apply(
    run: &str,
    epoch: u64,
    id: &str,
    step: FaultStep,
    ttl_ms: u64,
    lease_ms: u64,
) -> Apply {
    Apply {
        run_id: run.into(),
        epoch,
        fault_id: id.into(),
        step,
        seed: 7,
        ttl_ms,
        lease_ms,
        declare: None,
    }
}

pub fn pause_step() -> FaultStep {
    FaultStep {
        name: "pause-sleeper".into(),
        target: "sleeper".into(),
        duration: Duration::from_secs(30),
        fault: FaultSpec::Process {
            action: ProcessAction::Pause,
        },
    }
}

pub fn fill_step() -> FaultStep {
    FaultStep {
        name: "fill-scratch".into(),
        target: "scratch".into(),
        duration: Duration::from_secs(30),
        fault: FaultSpec::Resource {
            stress: ResourceKind::Disk {
                amount: DiskAmount::Mib(1),
            },
        },
    }
}

pub fn latency_step(ms: u64) -> FaultStep {
    FaultStep {
        name: "slow-api".into(),
        target: "api".into(),
        duration: Duration::from_secs(30),
        fault: FaultSpec::Network {
            toxic: ToxicKind::Latency {
                latency: Duration::from_millis(ms),
                jitter: Duration::ZERO,
            },
            direction: chaosbot::spec::model::Direction::Downstream,
            toxicity: 1.0,
        },
    }
}

/// Waits (bounded) until the process's state is `want` (`Some('T')`) or is not `T` (`None`).
pub async fn wait_paused(pid: i32, paused: bool, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let st = process_state(pid);
        if (st == Some('T')) == paused {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A metric's value in Prometheus text (the first series whose name and labels start so).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A test CA (rcgen) and its PEM.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A certificate for `names` signed by `ca`, written as `dir/<stem>.pem` and `<stem>-key.pem`.
pub fn leaf(
    ca: &Ca,
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}
