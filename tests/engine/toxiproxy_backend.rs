//! A proxy target on an existing Toxiproxy server (`toxiproxy = URL`): the run's toxics go
//! through the server's HTTP API, carry chaosbot's names, come off at the end of the step, on
//! abort, at their deadline and by crash recovery, and a toxic the team added by hand on the
//! same proxy stays.
//!
//! No Toxiproxy server can be installed here (no package of it, no Go toolchain), so the
//! server is `chaosbot agent`'s own Toxiproxy API (it follows Toxiproxy's `api.go`: routes,
//! shapes, status codes), started by the test as a separate process. chaosbot's client sees
//! only the HTTP API, as it would with Toxiproxy.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::{Config, ToxiproxyTarget};
use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::run::{Event, RollbackOutcome, Verdict};
use chaosbot::spec::model::{FaultSpec, FaultStep, Step};
use chaosbot::store::{AbortScope, RunFilter};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");

/// The Toxiproxy server of a test: a `chaosbot agent` serving the Toxiproxy API on `api`.
struct Server {
    child: Child,
    api: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let api = free_port();
        let d = dir.display();
        let cfg = dir.join("toxiproxy-server.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"toxi\"\nsocket = \"{d}/toxi.sock\"\nsecret = \"s3cret-s3cret\"\nstate_dir = \"{d}/toxi-state\"\n[toxiproxy]\nlisten = \"{api}\"\n"
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config", cfg.to_str().unwrap()])
            .env_remove("CHAOSBOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("toxiproxy-server.log")).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, api };
        let started = Instant::now();
        while http(api, "GET", "/version", None).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the Toxiproxy API did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.api, method, path, body).await.unwrap()
    }

    /// Makes proxy `shop` in front of `upstream` with the team's own toxic on it; returns
    /// where it listens.
    async fn shop(&self, upstream: SocketAddr) -> SocketAddr {
        let body =
            json!({"name": "shop", "listen": "127.0.0.1:0", "upstream": upstream.to_string()});
        let (status, made) = self.call("POST", "/proxies", Some(body)).await;
        assert_eq!(status, 201, "{made}");
        let hand = json!({"name": "team-probe", "type": "latency", "stream": "upstream",
                          "attributes": {"latency": 1}});
        let (status, t) = self.call("POST", "/proxies/shop/toxics", Some(hand)).await;
        assert_eq!(status, 200, "{t}");
        made["listen"].as_str().unwrap().parse().unwrap()
    }

    async fn proxy(&self) -> Value {
        let (status, p) = self.call("GET", "/proxies/shop", None).await;
        assert_eq!(status, 200, "{p}");
        p
    }

    async fn toxic_names(&self) -> Vec<String> {
        let p = self.proxy().await;
        let mut names: Vec<String> = p["toxics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// Waits (bounded) until the proxy looks as `f` wants.
    async fn until(&self, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let p = self.proxy().await;
            if f(&p) || started.elapsed() > limit {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`: status and JSON body (Null when empty).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer within 10s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    ))
}

/// A GET through the proxy to the service: how long it took, or why it failed.
async fn through(listen: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let (status, _) = http(listen, "GET", "/", None).await?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(started.elapsed())
}

fn toxiproxy_config(server: &Server, listen: SocketAddr) -> Config {
    // The support config's endpoint points at its proxy's listen: use the Toxiproxy one.
    let mut cfg = config(free_port(), listen);
    cfg.targets.proxy.clear();
    cfg.targets.toxiproxy.push(ToxiproxyTarget {
        name: "api".into(),
        url: server.url(),
        proxy: "shop".into(),
        description: String::new(),
    });
    cfg.targets.http[0].url = format!("http://{listen}");
    cfg
}

fn down_step(name: &str, duration_ms: u64) -> Step {
    Step::Fault(FaultStep {
        name: name.into(),
        target: "api".into(),
        duration: Duration::from_millis(duration_ms),
        fault: FaultSpec::Network {
            toxic: ToxicKind::Down,
            direction: Direction::Downstream,
            toxicity: 1.0,
        },
    })
}

#[tokio::test]
async fn toxics_go_through_the_toxiproxy_api_with_traffic_checked_and_only_chaosbots_come_off() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let server = Server::start(dir.path()).await;
    let listen = server.shop(svc.addr).await;
    assert!(through(listen).await.unwrap() < Duration::from_millis(250));

    let cfg = Arc::new(toxiproxy_config(&server, listen));
    let store = sqlite_store(dir.path()).await;
    let (engine, _targets) = started_engine(cfg, store.clone()).await;
    let mut probe = http_probe("api-ok", listen, 3000, 200);
    // The `down` step breaks the probe on purpose; what is checked here is the traffic.
    probe.tolerance.max_failure_ratio = 1.0;
    let exp = experiment(
        vec![probe],
        vec![latency_step("slow", 400, 2500), down_step("cut", 2000)],
        vec![],
    );
    let id = engine.submit(&exp, test_request()).await.unwrap();
    let ours = format!("chaosbot-{id}-slow");

    // Step 1: chaosbot's latency toxic sits beside the team's, and traffic is slow.
    let p = server
        .until(Duration::from_secs(15), |p| {
            p["toxics"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let toxic = p["toxics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == ours.as_str())
        .unwrap_or_else(|| panic!("no toxic `{ours}` in {p}"));
    assert_eq!(toxic["type"], "latency");
    assert_eq!(toxic["stream"], "downstream");
    assert_eq!(toxic["attributes"]["latency"], 400);
    let rt = through(listen).await.unwrap();
    assert!(rt >= Duration::from_millis(400), "round trip {rt:?}");

    // Step 2: `down` is the proxy disabled; the latency toxic is gone, the team's is not.
    let p = server
        .until(Duration::from_secs(15), |p| p["enabled"] == false)
        .await;
    assert_eq!(p["enabled"], false, "{p}");
    assert_eq!(server.toxic_names().await, vec!["team-probe".to_string()]);
    assert!(
        through(listen).await.is_err(),
        "traffic passed a disabled proxy"
    );

    let run = engine.wait(&id).await.unwrap();
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        run.reason
    );
    // After: enabled again, only the team's toxic, traffic fast.
    let p = server.proxy().await;
    assert_eq!(p["enabled"], true, "{p}");
    assert_eq!(server.toxic_names().await, vec!["team-probe".to_string()]);
    assert!(through(listen).await.unwrap() < Duration::from_millis(250));

    // The journal says the faults went through Toxiproxy at that URL.
    let j = store.journal(&id, 0).await.unwrap();
    let summaries: Vec<&String> = j
        .iter()
        .filter_map(|e| match &e.event {
            Event::FaultInjected { summary, .. } => Some(summary),
            _ => None,
        })
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    let at = format!("through Toxiproxy at {}", server.url());
    assert!(summaries.iter().all(|s| s.contains(&at)), "{summaries:?}");
    assert!(summaries[0].contains(&ours), "{summaries:?}");
    assert!(
        j.iter().any(|e| matches!(&e.event, Event::Warning { text }
            if text.contains("no dead-man's switch") && text.contains(&server.url()))),
        "the journal does not say what a Toxiproxy server cannot promise"
    );
    assert!(store.open_faults(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_abort_takes_the_toxic_off_and_the_deadline_does_without_a_revert() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let server = Server::start(dir.path()).await;
    let listen = server.shop(svc.addr).await;
    let cfg = Arc::new(toxiproxy_config(&server, listen));
    let store = sqlite_store(dir.path()).await;
    let (engine, _targets) = started_engine(cfg.clone(), store.clone()).await;
    let exp = experiment(
        vec![http_probe("api-ok", listen, 3000, 200)],
        vec![latency_step("slow", 300, 60_000)],
        vec![],
    );
    let id = engine.submit(&exp, test_request()).await.unwrap();
    server
        .until(Duration::from_secs(15), |p| {
            p["toxics"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    assert_eq!(server.toxic_names().await.len(), 2);
    engine
        .abort(AbortScope::Run(id.clone()), "alice", "enough")
        .await
        .unwrap();
    let run = engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        run.reason
    );
    assert_eq!(server.toxic_names().await, vec!["team-probe".to_string()]);
    assert!(through(listen).await.unwrap() < Duration::from_millis(250));

    // A fault nobody reverts comes off at its deadline while this process lives.
    let target = &cfg.targets.toxiproxy[0];
    let kind = ToxicKind::Latency {
        latency: Duration::from_millis(300),
        jitter: Duration::ZERO,
    };
    let placed = chaosbot::faults::toxiproxy::Placed::new(target, "r-deadline", "slow", &kind);
    let fault = chaosbot::faults::toxiproxy::inject(
        target,
        placed,
        &kind,
        Direction::Downstream,
        1.0,
        Instant::now() + Duration::from_millis(600),
    )
    .await
    .unwrap();
    assert_eq!(
        server.toxic_names().await,
        vec![
            "chaosbot-r-deadline-slow".to_string(),
            "team-probe".to_string()
        ]
    );
    let p = server
        .until(Duration::from_secs(10), |p| {
            p["toxics"].as_array().is_some_and(|t| t.len() == 1)
        })
        .await;
    assert_eq!(p["toxics"][0]["name"], "team-probe", "{p}");
    drop(fault);
}

#[tokio::test]
async fn a_toxic_left_by_a_killed_controller_stays_until_recovery_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let server = Server::start(dir.path()).await;
    let listen = server.shop(svc.addr).await;
    let d = dir.path().display();
    let cfg_path = dir.path().join("chaosbot.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[agent]\nsocket = \"{d}/local-agent.sock\"\n\n[[targets.proxy]]\nname = \"api\"\ntoxiproxy = \"{}\"\nproxy = \"shop\"\n\n[[targets.http]]\nname = \"api-http\"\nurl = \"http://{listen}\"\n",
            server.url()
        ),
    )
    .unwrap();
    let exp_path = dir.path().join("slow.yaml");
    std::fs::write(
        &exp_path,
        "name: toxi-slow\ntitle: The shop answers within 3 s with 300 ms more latency\nowner: \"@tests\"\nhypothesis:\n  probes:\n    - name: shop-ok\n      http: {endpoint: api-http, path: /, status: 200, max_latency: 3s}\n      interval: 250ms\nmethod:\n  - name: slow\n    target: api\n    fault: latency\n    latency: 300ms\n    duration: 60s\n",
    )
    .unwrap();
    let db = format!("sqlite://{d}/chaosbot.db");
    // The binary in its default mode (agents): a Toxiproxy target needs no agent.
    let mut run = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .args(["--database-url", &db, "run"])
        .arg(&exp_path)
        .env_remove("CHAOSBOT_CONFIG")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let p = server
        .until(Duration::from_secs(30), |p| {
            p["toxics"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let ours = p["toxics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .find(|n| n.starts_with("chaosbot-"))
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
            panic!("no chaosbot toxic in {p}; run log:\n{log}")
        })
        .to_string();
    run.kill().unwrap();
    run.wait().unwrap();
    // No dead-man's switch on a Toxiproxy server: the toxic outlives the controller.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.toxic_names().await.contains(&ours));
    assert!(through(listen).await.unwrap() >= Duration::from_millis(300));

    // The next chaosbot on that store recovers the run: the toxic comes off, the team's stays.
    let cfg = Arc::new(Config::from_file(&cfg_path).unwrap());
    let store = chaosbot::store::open(&db).await.unwrap();
    let (_engine, _targets) = started_engine(cfg, store.clone()).await;
    assert_eq!(server.toxic_names().await, vec!["team-probe".to_string()]);
    assert!(through(listen).await.unwrap() < Duration::from_millis(250));
    let runs = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].verdict, Some(Verdict::Aborted));
    assert_eq!(
        runs[0].rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        runs[0].reason
    );
    assert!(ours.contains(&runs[0].id), "{ours}");
}

#[tokio::test]
async fn an_unreachable_server_or_a_missing_proxy_fails_the_run_before_injection() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let server = Server::start(dir.path()).await;
    let listen = server.shop(svc.addr).await;
    let exp = experiment(
        vec![http_probe("api-ok", listen, 3000, 200)],
        vec![latency_step("slow", 300, 1000)],
        vec![],
    );
    let nobody = free_port();
    let cases = [
        (
            format!("http://{nobody}"),
            "shop",
            "cannot reach the Toxiproxy server at",
        ),
        (server.url(), "nope", "has no proxy `nope`; create it there"),
    ];
    for (url, proxy, says) in cases {
        let mut cfg = toxiproxy_config(&server, listen);
        cfg.targets.toxiproxy[0].url = url.clone();
        cfg.targets.toxiproxy[0].proxy = proxy.into();
        let sub = dir.path().join(proxy);
        std::fs::create_dir_all(&sub).unwrap();
        let store = sqlite_store(&sub).await;
        let (engine, _t) = started_engine(Arc::new(cfg), store).await;
        let id = engine.submit(&exp, test_request()).await.unwrap();
        let run = engine.wait(&id).await.unwrap();
        assert_eq!(run.verdict, Some(Verdict::Failed));
        let reason = run.reason.unwrap_or_default();
        assert!(
            reason.contains(says)
                && reason.contains(&url)
                && reason.contains("nothing was injected"),
            "{reason}"
        );
    }
    assert_eq!(server.toxic_names().await, vec!["team-probe".to_string()]);
}
