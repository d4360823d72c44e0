//! Abort latency through the whole engine: from `Engine::abort` (the abort request) to the
//! fault being gone, i.e. a fresh request through the proxy answering fast again. Measured on
//! an idle link and on a link saturated by a bulk download through the same proxy.
//!
//! `cargo bench --bench abort` (optionally `ABORT_ITERATIONS=200`). Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaosbot::config::{Config, GuardRails, HttpEndpoint, ProxyTarget, Targets};
use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::TargetRegistry;
use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::spec::model::{Experiment, FaultSpec, FaultStep, Probe, ProbeKind, Step, Tolerance};
use chaosbot::store::AbortScope;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers `GET /bulk` with an endless body and anything else with a tiny `ok`.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 1024];
                let n = match s.read(&mut buf).await {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if buf[..n].starts_with(b"GET /bulk") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                    let chunk = vec![b'x'; 64 * 1024];
                    // Bounded: 64 GiB at most; in practice the client stops much earlier.
                    for _ in 0..1_000_000 {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        .await;
                }
            });
        }
    });
    addr
}

/// One fresh request through the proxy; returns its round trip.
async fn fresh_request(proxy: SocketAddr) -> Duration {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect(proxy).await else {
        return Duration::MAX;
    };
    let _ = s.set_nodelay(true);
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    t.elapsed()
}

/// Reads a bulk download through the proxy until `stop`; returns bytes read.
async fn saturate(proxy: SocketAddr, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) {
    let Ok(mut s) = TcpStream::connect(proxy).await else {
        return;
    };
    let _ = s.write_all(b"GET /bulk HTTP/1.1\r\n\r\n").await;
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(600) {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

fn experiment(listen: SocketAddr) -> Experiment {
    Experiment {
        name: "abort-bench".into(),
        title: "abort latency".into(),
        description: String::new(),
        owner: "bench".into(),
        tags: vec![],
        params: Default::default(),
        hypothesis: vec![Probe {
            name: "port".into(),
            kind: ProbeKind::Tcp {
                address: listen.to_string(),
                max_latency: None,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            tolerance: Tolerance::default(),
            expect: None,
        }],
        method: vec![Step::Fault(FaultStep {
            name: "slow".into(),
            target: "api".into(),
            duration: Duration::from_secs(60),
            fault: FaultSpec::Network {
                toxic: ToxicKind::Latency {
                    latency: Duration::from_secs(2),
                    jitter: Duration::ZERO,
                },
                direction: Direction::Downstream,
                toxicity: 1.0,
            },
        })],
        stop_conditions: vec![],
        rollbacks: vec![],
        recovery_timeout: Duration::from_secs(5),
        on_owner_loss: Default::default(),
        sampling: Default::default(),
    }
}

async fn measure(saturated: bool, iterations: usize) -> (Histogram<u64>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = Arc::new(Config {
        guard_rails: GuardRails {
            max_run_duration: Duration::from_secs(300),
            max_concurrent_runs: 1,
            worker_pool_size: 1,
            ..GuardRails::default()
        },
        targets: Targets {
            proxy: vec![ProxyTarget {
                name: "api".into(),
                listen,
                upstream: up.to_string(),
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
        ..Config::default()
    });
    let store = chaosbot::store::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
        .await
        .unwrap();
    let targets = TargetRegistry::new(cfg.clone());
    let proxy = targets.proxy("api").await.unwrap();
    let engine = Engine::new(store, targets, EngineOptions::new(cfg.guard_rails.clone()));
    engine.start().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    if saturated {
        for _ in 0..2 {
            tokio::spawn(saturate(listen, stop.clone(), bytes.clone()));
        }
    }
    let started = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let exp = experiment(listen);
    for _ in 0..iterations {
        let id = engine
            .submit(
                &exp,
                SubmitRequest {
                    requested_by: "bench".into(),
                    source: "bench".into(),
                    seed: Some(1),
                },
            )
            .await
            .unwrap();
        let t = Instant::now();
        while proxy.toxics().is_empty() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let the fault be in place for a moment, as in a real run.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asked = Instant::now();
        engine
            .abort(AbortScope::Run(id.clone()), "bench", "measuring")
            .await
            .unwrap();
        let rtt = fresh_request(listen).await;
        let gone = asked.elapsed();
        assert!(
            rtt < Duration::from_secs(1),
            "fault still in place after abort: {rtt:?}"
        );
        hist.record(gone.as_micros() as u64).unwrap();
        engine.wait(&id).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let gbps = bytes.load(Ordering::Relaxed) as f64 / secs / 1e9;
    engine.shutdown("bench over", Duration::from_secs(10)).await;
    (hist, gbps)
}

fn main() {
    let iterations: usize = std::env::var("ABORT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("abort latency: Engine::abort → fresh request through the proxy answered");
    println!("(fault: 2 s latency toxic; {iterations} aborts per row; target p99 < 50 ms)\n");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "link", "p50 ms", "p99 ms", "max ms", "GB/s"
    );
    for saturated in [false, true] {
        let (h, gbps) = rt.block_on(measure(saturated, iterations));
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            if saturated {
                "saturated (2 bulk streams)"
            } else {
                "idle"
            },
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            if saturated {
                format!("{gbps:.2}")
            } else {
                "-".into()
            }
        );
    }
}
