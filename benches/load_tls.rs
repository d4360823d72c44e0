//! The load generator over HTTPS against oha, on one local HTTPS server (hyper on tokio-rustls,
//! a certificate from a CA made here, in this process on its own runtime), in the same run:
//!
//! 1. highest sustained requests/s on kept-alive TLS connections, chaosbot (unthrottled) vs
//!    `oha`, same connection count and duration, best of several rounds;
//! 2. a new connection for every request (the server answers `Connection: close`): chaosbot
//!    resumes its TLS sessions, oha runs with `--disable-keepalive`; the server counts full and
//!    resumed handshakes.
//!
//! Scenarios: max req/s kept-alive and with a new connection per request, and a fixed rate
//! against a server that stalls 100 ms every second (corrected p99 vs oha's correction).
//! `cargo bench --bench load_tls` (or `bench/load-compare-tls.sh`). Knobs: `LOAD_BENCH_SECS`
//! (10), `LOAD_BENCH_CONNECTIONS` (50), `LOAD_BENCH_ROUNDS` (3). oha verifies with `--cacert`
//! (falling back to `--insecure` on versions without it); a missing oha is skipped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::load::{self, LoadPlan, LoadTls, Schedule};
use chaosbot::tls::TlsOptions;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

#[derive(Default)]
struct Counts {
    full: AtomicU64,
    resumed: AtomicU64,
}

/// (CA PEM, server certificate PEM for localhost, its key PEM).
fn pki() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// Starts the HTTPS server on its own runtime (2 worker threads); `close` makes every answer
/// end its connection.
fn start_server(
    cert: &str,
    key: &str,
    close: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let t0 = tokio::time::Instant::now();
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                let close = close.clone();
                let stall = stall.clone();
                let counts = counts.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    match tls.get_ref().1.handshake_kind() {
                        Some(rustls::HandshakeKind::Resumed) => &counts.resumed,
                        _ => &counts.full,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    let svc =
                        hyper::service::service_fn(move |_r: Request<hyper::body::Incoming>| {
                            let close = close.load(Ordering::Relaxed);
                            let stall = stall.load(Ordering::Relaxed);
                            async move {
                                // Frozen for the first 100 ms of every second while set.
                                if stall {
                                    let phase = (t0.elapsed().as_millis() % 1000) as u64;
                                    if phase < 100 {
                                        tokio::time::sleep(Duration::from_millis(100 - phase))
                                            .await;
                                    }
                                }
                                let mut resp = Response::builder();
                                if close {
                                    resp = resp.header("connection", "close");
                                }
                                Ok::<_, Infallible>(
                                    resp.body(Full::new(Bytes::from_static(b"ok\n"))).unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Default)]
struct Row {
    scenario: String,
    tool: String,
    rps: f64,
    p50: f64,
    p99: f64,
    note: String,
}

fn ours(url: &str, tls: &LoadTls, conns: usize, secs: u64) -> load::LoadOutcome {
    ours_at(url, tls, conns, secs, Schedule::Unthrottled)
}

fn ours_at(
    url: &str,
    tls: &LoadTls,
    conns: usize,
    secs: u64,
    schedule: Schedule,
) -> load::LoadOutcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let plan = LoadPlan {
            url: url.to_string(),
            method: "GET".into(),
            headers: vec![],
            body: None,
            schedule,
            connections: conns,
            timeout: Duration::from_secs(10),
            duration: Duration::from_secs(secs),
        };
        let h = load::spawn_with_tls(
            &plan,
            Some(tls),
            std::time::Instant::now() + Duration::from_secs(secs + 60),
            |_, _| {},
        )
        .unwrap();
        h.finish().await.unwrap()
    })
}

fn tool(name: &str) -> Option<String> {
    let home = std::env::var("HOME").unwrap_or_default();
    [
        format!("{home}/.cargo/bin/{name}"),
        format!("/usr/bin/{name}"),
        format!("/usr/local/bin/{name}"),
    ]
    .into_iter()
    .find(|c| std::path::Path::new(c).exists())
}

fn oha(bin: &str, url: &str, ca: &str, conns: u64, secs: u64, keepalive: bool) -> Option<Row> {
    oha_with(bin, url, ca, conns, secs, keepalive, &[])
}

/// oha with `more` arguments (a rate and `--latency-correction` for the fixed-rate case).
fn oha_with(
    bin: &str,
    url: &str,
    ca: &str,
    conns: u64,
    secs: u64,
    keepalive: bool,
    more: &[&str],
) -> Option<Row> {
    let mut base: Vec<String> = vec![
        "-z".into(),
        format!("{secs}s"),
        "-c".into(),
        conns.to_string(),
        "--no-tui".into(),
        "--output-format".into(),
        "json".into(),
    ];
    if !keepalive {
        base.push("--disable-keepalive".into());
    }
    base.extend(more.iter().map(|m| m.to_string()));
    let run = |extra: &[&str]| {
        Command::new(bin)
            .args(&base)
            .args(extra)
            .arg(url)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let (out, note) = match run(&["--cacert", ca]) {
        Some(o) => (o, "verified (--cacert)"),
        None => (run(&["--insecure"])?, "--insecure (no --cacert)"),
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    Some(Row {
        rps: s("/summary/requestsPerSec"),
        p50: s("/latencyPercentiles/p50") * 1000.0,
        p99: s("/latencyPercentiles/p99") * 1000.0,
        note: note.into(),
        ..Row::default()
    })
}

fn main() {
    let secs = env("LOAD_BENCH_SECS", 10);
    let conns = env("LOAD_BENCH_CONNECTIONS", 50);
    let rounds = env("LOAD_BENCH_ROUNDS", 3).max(1);
    let (ca_pem, cert, key) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let ca = ca_file.to_string_lossy().into_owned();
    let close = Arc::new(AtomicBool::new(false));
    let stall = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let addr = start_server(&cert, &key, close.clone(), stall.clone(), counts.clone());
    let url = format!("https://localhost:{}/", addr.port());
    let tls = LoadTls::new(&TlsOptions {
        ca_file: Some(ca_file.clone()),
        ..TlsOptions::default()
    })
    .unwrap();
    let oha_bin = tool("oha");
    if oha_bin.is_none() {
        eprintln!("notice: oha not found (cargo install oha); skipping it");
    }
    let pause = || std::thread::sleep(Duration::from_millis(500));
    let handshakes = || {
        (
            counts.full.swap(0, Ordering::Relaxed),
            counts.resumed.swap(0, Ordering::Relaxed),
        )
    };
    let mut rows: Vec<Row> = Vec::new();

    for (keepalive, label) in [(true, "kept-alive"), (false, "new conn per request")] {
        close.store(!keepalive, Ordering::Relaxed);
        let sc = format!("https max req/s, {label}, c={conns}, {secs}s, best of {rounds}");
        eprintln!("running: {sc}");
        let mut best_ours = Row::default();
        let mut best_oha = Row::default();
        for _ in 0..rounds {
            handshakes();
            let t = Instant::now();
            let o = ours(&url, &tls, conns as usize, secs);
            let (full, resumed) = handshakes();
            if o.total.achieved_rps > best_ours.rps {
                best_ours = Row {
                    scenario: sc.clone(),
                    tool: "chaosbot".into(),
                    rps: o.total.achieved_rps,
                    p50: o.service_time.p50_ms,
                    p99: o.service_time.p99_ms,
                    note: format!(
                        "{} errors, {full} full / {resumed} resumed handshakes, {:.1}s",
                        o.total.errors,
                        t.elapsed().as_secs_f64()
                    ),
                };
            }
            pause();
            if let Some(b) = &oha_bin
                && let Some(r) = oha(b, &url, &ca, conns, secs, keepalive)
            {
                let (full, resumed) = handshakes();
                if r.rps > best_oha.rps {
                    best_oha = Row {
                        scenario: sc.clone(),
                        tool: "oha".into(),
                        note: format!("{}; {full} full / {resumed} resumed handshakes", r.note),
                        ..r
                    };
                }
                pause();
            }
        }
        if best_oha.rps > 0.0 {
            eprintln!(
                "{label}: chaosbot {:.0} = {:.2}x oha ({:.0})",
                best_ours.rps,
                best_ours.rps / best_oha.rps,
                best_oha.rps
            );
        }
        rows.push(best_ours);
        if best_oha.rps > 0.0 {
            rows.push(best_oha);
        }
    }

    // A fixed rate while the server stalls for the first 100 ms of every second: latency from
    // the intended send time (corrected for coordinated omission) against oha's correction.
    close.store(false, Ordering::Relaxed);
    stall.store(true, Ordering::Relaxed);
    let rate = env("LOAD_BENCH_RATE", 1000);
    let stall_conns = env("LOAD_BENCH_STALL_CONNECTIONS", 10);
    let sc = format!("https {rate} req/s, stall 100ms/s, c={stall_conns}, {secs}s");
    eprintln!("running: {sc}");
    let o = ours_at(
        &url,
        &tls,
        stall_conns as usize,
        secs,
        Schedule::Constant { rate: rate as f64 },
    );
    let ours_p99 = o.total.latency.p99_ms;
    rows.push(Row {
        scenario: sc.clone(),
        tool: "chaosbot (corrected)".into(),
        rps: o.total.achieved_rps,
        p50: o.total.latency.p50_ms,
        p99: ours_p99,
        note: format!("{} errors", o.total.errors),
    });
    rows.push(Row {
        scenario: sc.clone(),
        tool: "chaosbot service time".into(),
        rps: o.total.achieved_rps,
        p50: o.service_time.p50_ms,
        p99: o.service_time.p99_ms,
        note: "uncorrected".into(),
    });
    pause();
    if let Some(b) = &oha_bin {
        let q = rate.to_string();
        if let Some(r) = oha_with(
            b,
            &url,
            &ca,
            stall_conns,
            secs,
            true,
            &["-q", &q, "--latency-correction"],
        ) {
            let diff = (ours_p99 - r.p99) / r.p99 * 100.0;
            eprintln!(
                "fixed rate: chaosbot corrected p99 {ours_p99:.1} ms vs oha --latency-correction {:.1} ms ({diff:+.1}%)",
                r.p99
            );
            rows.push(Row {
                scenario: sc.clone(),
                tool: "oha --latency-correction".into(),
                note: format!("{}; chaosbot's p99 is {diff:+.1}% of this", r.note),
                ..r
            });
        }
    }
    stall.store(false, Ordering::Relaxed);

    println!(
        "\n{:<56} {:<10} {:>11} {:>9} {:>9}  note",
        "scenario", "tool", "req/s", "p50 ms", "p99 ms"
    );
    for r in &rows {
        println!(
            "{:<56} {:<10} {:>11.0} {:>9.2} {:>9.2}  {}",
            r.scenario, r.tool, r.rps, r.p50, r.p99, r.note
        );
    }
}
