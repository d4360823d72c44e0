//! `chaosbot_active_faults` on `/metrics` of a real `chaosbot serve` process is the number of
//! faults in place: 1 while a run's fault is injected, 0 once it is reverted, never negative.
//!
//! Self-contained: a loopback HTTP responder plays both the service behind the proxy and the
//! Slack Web API (the run is queued straight into the store the process shares, so nothing
//! needs signing), and the process is started from the built binary.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::{Config, GuardRails};
use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::TargetRegistry;
use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::run::RunState;
use chaosbot::spec::model::{Experiment, FaultSpec, FaultStep, Probe, ProbeKind, Step, Tolerance};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GAUGE: &str = "chaosbot_active_faults";

/// Answers every HTTP request with 200 and `{"ok":true}`, one request per connection.
async fn responder() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "{\"ok\":true}";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

use crate::support::free_port;

/// The `chaosbot serve` child, stopped when the test ends (passing or not).
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `/metrics` and returns the gauge's value, `None` while it was never touched.
async fn gauge(addr: SocketAddr) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(GAUGE)?.trim().parse().ok())
}

fn experiment(listen: SocketAddr) -> Experiment {
    Experiment {
        name: "gauge".into(),
        title: "The gauge counts the fault in place".into(),
        description: String::new(),
        owner: "@tests".into(),
        tags: vec![],
        params: Default::default(),
        hypothesis: vec![Probe {
            name: "api-ok".into(),
            kind: ProbeKind::Http {
                url: format!("http://{listen}/"),
                tls: Default::default(),
                method: "GET".into(),
                headers: Default::default(),
                endpoint_headers: Default::default(),
                body: None,
                expect_status: vec![200],
                max_latency: Some(Duration::from_secs(1)),
                body_contains: None,
            },
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            tolerance: Tolerance::default(),
            expect: None,
        }],
        method: vec![Step::Fault(FaultStep {
            name: "slow".into(),
            target: "api".into(),
            duration: Duration::from_secs(3),
            fault: FaultSpec::Network {
                toxic: ToxicKind::Latency {
                    latency: Duration::from_millis(20),
                    jitter: Duration::ZERO,
                },
                direction: Direction::Downstream,
                toxicity: 1.0,
            },
        })],
        stop_conditions: vec![],
        rollbacks: vec![],
        recovery_timeout: Duration::from_secs(3),
        on_owner_loss: Default::default(),
        sampling: Default::default(),
    }
}

#[tokio::test]
async fn the_active_faults_gauge_counts_the_fault_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = responder().await;
    let slack = responder().await;
    let proxy = free_port();
    let listen = free_port();
    let config = dir.path().join("chaosbot.toml");
    std::fs::write(
        &config,
        format!(
            "[[targets.proxy]]\nname = \"api\"\nlisten = \"{proxy}\"\nupstream = \"{upstream}\"\n[slack]\nteam_id = \"T1\"\n"
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", dir.path().join("runs.db").display());
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_chaosbot"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("DATABASE_URL", &db)
            .env("SLACK_SIGNING_SECRET", "metrics-secret")
            .env("SLACK_BOT_TOKEN", "xoxb-metrics")
            .env("SLACK_API_URL", format!("http://{slack}"))
            .env("CHAOSBOT_LISTEN", listen.to_string())
            .env("CHAOSBOT_AGENT_SOCKET", dir.path().join("agent/agent.sock"))
            .env_remove("SLACK_APP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(listen).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chaosbot serve did not listen on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gauge(listen).await.unwrap_or(0.0) == 0.0, "no fault yet");

    // Queue the run in the shared store; the serve process's workers claim it. This engine
    // is never started, so it executes nothing itself.
    let store = chaosbot::store::open(&db).await.unwrap();
    let cfg = Arc::new(Config {
        guard_rails: GuardRails {
            max_run_duration: Duration::from_secs(120),
            max_concurrent_runs: 2,
            worker_pool_size: 2,
            ..GuardRails::default()
        },
        ..Config::default()
    });
    let opts = EngineOptions::new(cfg.guard_rails.clone());
    let submitter = Engine::new(store.clone(), TargetRegistry::new(cfg), opts);
    let req = SubmitRequest {
        requested_by: "tester".into(),
        source: "test".into(),
        seed: Some(1),
    };
    let id = submitter.submit(&experiment(proxy), req).await.unwrap();

    // Sample the gauge all along; judge the samples taken while the journal says the fault
    // was in place (injected, not yet reverted, on both sides of the reading).
    let mut during = Vec::new();
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run did not finish"
        );
        let kinds = |j: &[chaosbot::run::Entry]| -> (bool, bool) {
            let has = |k: &str| j.iter().any(|e| e.event.kind() == k);
            (has("fault_injected"), has("fault_reverted"))
        };
        let before = kinds(&store.journal(&id, 0).await.unwrap());
        let value = gauge(listen).await;
        let after = kinds(&store.journal(&id, 0).await.unwrap());
        seen.push(value);
        if before == (true, false) && after == (true, false) {
            during.push(value);
        }
        let run = store.get_run(&id).await.unwrap().unwrap();
        if run.state == RunState::Done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(
        run.rollback.map(|r| r.as_str()),
        Some("reverted"),
        "{run:?}"
    );
    assert!(
        !during.is_empty(),
        "no reading while the fault was in place"
    );
    assert!(
        during.iter().all(|v| *v == Some(1.0)),
        "while the fault was in place: {during:?}"
    );
    assert_eq!(gauge(listen).await, Some(0.0), "after the revert");
    assert!(
        seen.iter().flatten().all(|v| *v >= 0.0),
        "the gauge went negative: {seen:?}"
    );
}
