//! Shared helpers for integration tests: a real HTTP service on loopback whose behaviour the
//! test can switch, experiments built in code, and a fresh SQLite store per test.
#![allow(dead_code)]

pub mod app;
pub mod fake_slack;
pub mod journal;
pub mod ports;
pub mod slack;
pub mod stored;
pub mod web;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chaosbot::config::{Config, GuardRails, HttpEndpoint, ProxyTarget};
use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::spec::model::{
    Experiment, FaultSpec, FaultStep, Probe, ProbeKind, Step, StopCondition, Tolerance,
};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use ports::free_port;

/// How the test service answers.
pub const HEALTHY: u8 = 0;
pub const ERRORS: u8 = 1;

/// A loopback HTTP service answering `ok` (or 500 when switched to `ERRORS`).
pub struct Service {
    pub addr: SocketAddr,
    pub mode: Arc<AtomicU8>,
}

impl Service {
    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

pub async fn service() -> Service {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let m = mode.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let m = m.clone();
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                            if m.load(Ordering::SeqCst) == ERRORS {
                                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Service { addr, mode }
}

/// Waits (at most 60 s: a bound for a loaded machine, not a speed claim) until something
/// accepts connections on `addr`, e.g. a `chaosbot serve` the test spawned.
pub async fn wait_listening(addr: SocketAddr) {
    wait_serving(addr, None).await
}

/// Like [`wait_listening`]; when it gives up, the panic quotes the end of `log` (the spawned
/// process's stderr), so a start-up failure says why.
pub async fn wait_serving(addr: SocketAddr, log: Option<&std::path::Path>) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        })
        .unwrap_or_default();
    panic!("chaosbot serve did not listen on {addr} within 60 s; its stderr ends:\n{said}");
}

/// Config declaring one proxied target `api` (listen → upstream) and the endpoint `api-http`
/// that reaches it through the proxy.
pub fn config(listen: SocketAddr, upstream: SocketAddr) -> Config {
    Config {
        guard_rails: GuardRails {
            max_run_duration: Duration::from_secs(120),
            max_concurrent_runs: 2,
            worker_pool_size: 2,
            ..GuardRails::default()
        },
        targets: chaosbot::config::Targets {
            proxy: vec![ProxyTarget {
                name: "api".into(),
                listen,
                upstream: upstream.to_string(),
                description: String::new(),
                agent: None,
            }],
            http: vec![HttpEndpoint {
                name: "api-http".into(),
                url: format!("http://{listen}"),
                ..HttpEndpoint::default()
            }],
            ..Default::default()
        },
        // A server embedded in a test process has no agent binary to start: faults stay
        // in-process (tests that run the binary get a local agent of their own).
        agent: chaosbot::config::AgentSettings {
            local: chaosbot::config::LocalAgentMode::InProcess,
            ..Default::default()
        },
        ..Config::default()
    }
}

pub fn http_probe(name: &str, listen: SocketAddr, max_latency_ms: u64, interval_ms: u64) -> Probe {
    Probe {
        name: name.into(),
        kind: ProbeKind::Http {
            url: format!("http://{listen}/"),
            tls: Default::default(),
            method: "GET".into(),
            headers: Default::default(),
            endpoint_headers: Default::default(),
            body: None,
            expect_status: vec![200],
            max_latency: Some(Duration::from_millis(max_latency_ms)),
            body_contains: Some("ok".into()),
        },
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_secs(2),
        tolerance: Tolerance::default(),
        expect: None,
    }
}

pub fn latency_step(name: &str, latency_ms: u64, duration_ms: u64) -> Step {
    fault_step(
        name,
        ToxicKind::Latency {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::ZERO,
        },
        duration_ms,
    )
}

pub fn fault_step(name: &str, toxic: ToxicKind, duration_ms: u64) -> Step {
    Step::Fault(FaultStep {
        name: name.into(),
        target: "api".into(),
        duration: Duration::from_millis(duration_ms),
        fault: FaultSpec::Network {
            toxic,
            direction: Direction::Downstream,
            toxicity: 1.0,
        },
    })
}

pub fn experiment(probes: Vec<Probe>, method: Vec<Step>, stops: Vec<StopCondition>) -> Experiment {
    Experiment {
        name: "test-exp".into(),
        title: "A test experiment".into(),
        description: String::new(),
        owner: "@tests".into(),
        tags: vec![],
        params: Default::default(),
        hypothesis: probes,
        method,
        stop_conditions: stops,
        rollbacks: vec![],
        recovery_timeout: Duration::from_secs(3),
        on_owner_loss: Default::default(),
        sampling: Default::default(),
    }
}

/// A started engine on `cfg` and `store` that notices abort requests within 50 ms, and its
/// target registry.
pub async fn started_engine(
    cfg: Arc<Config>,
    store: chaosbot::store::DynStore,
) -> (
    Arc<chaosbot::engine::Engine>,
    chaosbot::faults::TargetRegistry,
) {
    let targets = chaosbot::faults::TargetRegistry::new(cfg.clone());
    let mut opts = chaosbot::engine::EngineOptions::new(cfg.guard_rails.clone());
    opts.abort_poll = Duration::from_millis(50);
    let engine = chaosbot::engine::Engine::new(store, targets.clone(), opts);
    engine.start().await.unwrap();
    (engine, targets)
}

/// A submission by "tester" with a fixed seed.
pub fn test_request() -> chaosbot::engine::SubmitRequest {
    chaosbot::engine::SubmitRequest {
        requested_by: "tester".into(),
        source: "test".into(),
        seed: Some(1),
    }
}

pub async fn sqlite_store(dir: &std::path::Path) -> chaosbot::store::DynStore {
    chaosbot::store::open(&format!("sqlite://{}", dir.join("chaosbot.db").display()))
        .await
        .unwrap()
}

/// Runs `test` with the URL of a fresh Postgres database created through `TEST_POSTGRES_URL`,
/// dropped afterwards even if the test panics. Without `TEST_POSTGRES_URL` it prints a notice
/// and returns without running the test.
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    use sqlx::{AssertSqlSafe, Connection};
    let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!("skipping: TEST_POSTGRES_URL not set");
        return;
    };
    let name = unique_db_name();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = with_database(&admin_url, &name);
    let result = std::panic::AssertUnwindSafe(test(url)).catch_unwind().await;
    // FORCE: the store's pool may still hold connections while it shuts down.
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop test database");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

pub fn unique_db_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "chaosbot_t_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The same server URL naming database `db` (keeps credentials and query parameters).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
