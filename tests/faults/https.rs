//! HTTPS on loopback, for real: a CA made here signs the servers' certificates, a rustls server
//! answers HTTP/1.1, and probes, rollback-style calls and the load attack talk to it through
//! the TLS options an endpoint can set (`ca_file`, `client_cert`/`client_key`, `server_name`,
//! `insecure_skip_verify`), with each bad input refused in its own words.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::load::{self, LoadPlan, LoadTls, Schedule};
use chaosbot::probes::http::HttpClient;
use chaosbot::tls::{self, TlsOptions};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf certificate for `names` signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "chaosbot test");
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Handshakes the server saw, by kind, and requests it answered.
#[derive(Default)]
struct Counts {
    full: AtomicU64,
    resumed: AtomicU64,
    requests: AtomicU64,
}

struct Server {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

struct ServerSpec<'a> {
    cert_pem: &'a str,
    key_pem: &'a str,
    /// Require a client certificate signed by this CA.
    client_ca: Option<&'a Ca>,
    /// Answer `Connection: close` (every request on a new connection).
    close: bool,
}

async fn tls_server(spec: ServerSpec<'_>) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(spec.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(spec.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match spec.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    let close = spec.close;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                match tls.get_ref().1.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => {
                        c.resumed.fetch_add(1, Ordering::SeqCst)
                    }
                    _ => c.full.fetch_add(1, Ordering::SeqCst),
                };
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let c = Arc::clone(&c);
                        async move {
                            c.requests.fetch_add(1, Ordering::SeqCst);
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
    Server { addr, counts }
}

async fn simple_server(cert: &(String, String)) -> Server {
    tls_server(ServerSpec {
        cert_pem: &cert.0,
        key_pem: &cert.1,
        client_ca: None,
        close: false,
    })
    .await
}

async fn get(opts: &TlsOptions, url: &str) -> Result<(u16, String), String> {
    let client = HttpClient::new(opts).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(20), client.request(url, "GET"))
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn a_probe_passes_with_ca_file_and_is_not_trusted_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let url = format!("https://localhost:{}/health", srv.addr.port());
    let with_ca = TlsOptions {
        ca_file: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..TlsOptions::default()
    };
    assert_eq!(get(&with_ca, &url).await, Ok((200, "ok\n".into())));

    let e = get(&TlsOptions::default(), &url).await.unwrap_err();
    assert!(
        e.contains("not trusted") && e.contains("set `ca_file`"),
        "{e}"
    );

    // Only when asked for: any certificate.
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    };
    assert_eq!(get(&insecure, &url).await, Ok((200, "ok\n".into())));
}

#[tokio::test]
async fn connections_are_kept_alive_between_requests() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let url = format!("https://localhost:{}/", srv.addr.port());
    let opts = TlsOptions {
        ca_file: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..TlsOptions::default()
    };
    let client = HttpClient::new(&opts).unwrap();
    for _ in 0..5 {
        assert_eq!(client.request(&url, "GET").await.unwrap().0, 200);
    }
    assert_eq!(srv.counts.requests.load(Ordering::SeqCst), 5);
    let handshakes =
        srv.counts.full.load(Ordering::SeqCst) + srv.counts.resumed.load(Ordering::SeqCst);
    assert_eq!(handshakes, 1, "one connection carries every request");
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_accepts_ours_and_refuses_none() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let client_ca = make_ca("client CA");
    let server_cert = leaf(&ca, &["localhost"], false);
    let srv = tls_server(ServerSpec {
        cert_pem: &server_cert.0,
        key_pem: &server_cert.1,
        client_ca: Some(&client_ca),
        close: false,
    })
    .await;
    let (cert, key) = leaf(&client_ca, &["probe.chaosbot"], false);
    let url = format!("https://localhost:{}/", srv.addr.port());
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let mtls = TlsOptions {
        ca_file: Some(ca_file.clone()),
        client_cert: Some(write(dir.path(), "client.pem", &cert)),
        client_key: Some(write(dir.path(), "client.key", &key)),
        ..TlsOptions::default()
    };
    assert_eq!(get(&mtls, &url).await, Ok((200, "ok\n".into())));

    let without = TlsOptions {
        ca_file: Some(ca_file),
        ..TlsOptions::default()
    };
    let e = get(&without, &url).await.unwrap_err();
    assert!(
        e.contains("requires a client certificate") && e.contains("`client_cert`"),
        "{e}"
    );
}

#[tokio::test]
async fn expired_and_wrong_name_certificates_get_their_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let opts = TlsOptions {
        ca_file: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..TlsOptions::default()
    };

    let expired = simple_server(&leaf(&ca, &["localhost"], true)).await;
    let url = format!("https://localhost:{}/", expired.addr.port());
    let e = get(&opts, &url).await.unwrap_err();
    assert!(e.contains("expired on 2021-01-01"), "{e}");

    let other = simple_server(&leaf(&ca, &["other.test"], false)).await;
    let url = format!("https://localhost:{}/", other.addr.port());
    let e = get(&opts, &url).await.unwrap_err();
    assert!(
        e.contains("is valid for") && e.contains("other.test") && e.contains("not localhost"),
        "{e}"
    );
    assert!(e.contains("set `server_name`"), "{e}");
}

#[tokio::test]
async fn server_name_makes_an_ip_url_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let srv = simple_server(&leaf(&ca, &["svc.test"], false)).await;
    let url = format!("https://{}/", srv.addr);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let plain = TlsOptions {
        ca_file: Some(ca_file.clone()),
        ..TlsOptions::default()
    };
    let e = get(&plain, &url).await.unwrap_err();
    assert!(
        e.contains("not 127.0.0.1") && e.contains("set `server_name`"),
        "{e}"
    );

    let named = TlsOptions {
        ca_file: Some(ca_file),
        server_name: Some("svc.test".into()),
        ..TlsOptions::default()
    };
    assert_eq!(get(&named, &url).await, Ok((200, "ok\n".into())));
}

#[test]
fn bad_files_are_refused_by_the_builder_with_the_key_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TlsOptions {
        ca_file: Some(dir.path().join("nope.pem")),
        ..TlsOptions::default()
    };
    let e = tls::client_config(&missing).unwrap_err().to_string();
    assert!(
        e.contains("`ca_file`") && e.contains("cannot read it"),
        "{e}"
    );

    let not_pem = TlsOptions {
        ca_file: Some(write(dir.path(), "ca.txt", "just some text\n")),
        ..TlsOptions::default()
    };
    let e = tls::client_config(&not_pem).unwrap_err().to_string();
    assert!(
        e.contains("`ca_file`") && e.contains("must be a PEM file"),
        "{e}"
    );

    let ca = make_ca("test CA");
    let (cert, _) = leaf(&ca, &["a.test"], false);
    let (_, other_key) = leaf(&ca, &["b.test"], false);
    let mismatched = TlsOptions {
        client_cert: Some(write(dir.path(), "c.pem", &cert)),
        client_key: Some(write(dir.path(), "c.key", &other_key)),
        ..TlsOptions::default()
    };
    let e = tls::client_config(&mismatched).unwrap_err().to_string();
    assert!(
        e.contains("`client_key`") && e.contains("does not match the certificate in `client_cert`"),
        "{e}"
    );
}

#[tokio::test]
async fn other_schemes_and_unknown_hosts_are_refused() {
    let e = get(&TlsOptions::default(), "ftp://localhost/x")
        .await
        .unwrap_err();
    assert!(e.contains("scheme `ftp` is not supported"), "{e}");
    let e = get(&TlsOptions::default(), "https://no-such-host.invalid/")
        .await
        .unwrap_err();
    assert!(e.contains("`no-such-host.invalid` does not resolve"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_attack_runs_over_tls_and_resumes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("test CA");
    let cert = leaf(&ca, &["localhost"], false);
    // Every answer closes its connection: each request opens a new one, which resumes.
    let srv = tls_server(ServerSpec {
        cert_pem: &cert.0,
        key_pem: &cert.1,
        client_ca: None,
        close: true,
    })
    .await;
    let opts = TlsOptions {
        ca_file: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..TlsOptions::default()
    };
    let tls = LoadTls::new(&opts).unwrap();
    let plan = LoadPlan {
        url: format!("https://localhost:{}/", srv.addr.port()),
        method: "GET".into(),
        headers: vec![],
        body: None,
        schedule: Schedule::Constant { rate: 100.0 },
        connections: 2,
        timeout: Duration::from_secs(2),
        duration: Duration::from_millis(1500),
    };
    // Without TLS settings an https URL stays refused.
    assert!(load::check(&plan).is_err());
    load::check_with_tls(&plan, Some(&tls)).unwrap();
    let h = load::spawn_with_tls(
        &plan,
        Some(&tls),
        Instant::now() + Duration::from_secs(30),
        |_, _| {},
    )
    .unwrap();
    let out = h.finish().await.unwrap();
    let t = &out.total;
    assert_eq!(t.errors, 0, "{t:?}");
    assert!(t.requests >= 50, "{t:?}");
    assert_eq!(t.status_counts.get("200"), Some(&t.requests));
    let full = srv.counts.full.load(Ordering::SeqCst);
    let resumed = srv.counts.resumed.load(Ordering::SeqCst);
    assert!(
        resumed >= t.requests / 2,
        "{resumed} resumed, {full} full handshakes for {} requests",
        t.requests
    );
    assert!(full <= 8, "{full} full handshakes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_attack_on_an_untrusted_server_counts_tls_failures() {
    let ca = make_ca("test CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let tls = LoadTls::new(&TlsOptions::default()).unwrap();
    let plan = LoadPlan {
        url: format!("https://localhost:{}/", srv.addr.port()),
        method: "GET".into(),
        headers: vec![],
        body: None,
        schedule: Schedule::Constant { rate: 20.0 },
        connections: 1,
        timeout: Duration::from_secs(2),
        duration: Duration::from_millis(500),
    };
    let h = load::spawn_with_tls(
        &plan,
        Some(&tls),
        Instant::now() + Duration::from_secs(30),
        |_, _| {},
    )
    .unwrap();
    let t = h.finish().await.unwrap().total;
    assert!(t.requests > 0 && t.errors == t.requests, "{t:?}");
    assert!(t.error_counts.contains_key("tls failed"), "{t:?}");
}

/// An operator config with one https endpoint `secure` at `addr`, plus `extra` TOML lines on it.
fn https_config(addr: SocketAddr, extra: &str) -> chaosbot::config::Config {
    let cfg = chaosbot::config::Config::from_toml(&format!(
        "[[targets.http]]\nname = \"secure\"\nurl = \"https://localhost:{}\"\n{extra}\n",
        addr.port()
    ))
    .unwrap();
    cfg.validate().unwrap();
    cfg
}

/// A probe, a load step and a rollback, all on the https endpoint `secure`.
const HTTPS_EXPERIMENT: &str = r#"
name: https-all-the-way
title: Probes, load and rollback over TLS
owner: "@sre"
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: secure-ok
      http: {endpoint: secure, path: /, status: 200}
      interval: 200ms
method:
  - name: some-load
    target: secure
    fault: load
    path: /
    rate: 20
    connections: 2
    duration: 1s
rollbacks:
  - name: poke
    http: {endpoint: secure, path: /reset, method: POST, status: 200}
"#;

async fn run_https_experiment(
    cfg: chaosbot::config::Config,
) -> (chaosbot::store::RunRecord, Vec<chaosbot::run::Entry>) {
    let cfg = Arc::new(cfg);
    let exp = chaosbot::spec::parse_experiment(HTTPS_EXPERIMENT, "https.yaml", &cfg, &[])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(dir.path()).await;
    let (engine, _targets) = crate::support::started_engine(cfg, store.clone()).await;
    let id = engine
        .submit(&exp, crate::support::test_request())
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(60), engine.wait(&id))
        .await
        .expect("the run ends")
        .unwrap();
    let journal = store.journal(&id, 0).await.unwrap();
    (run, journal)
}

#[tokio::test]
async fn an_experiment_probes_loads_and_rolls_back_over_https_with_the_endpoints_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("chaosbot test CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let (run, journal) =
        run_https_experiment(https_config(srv.addr, &format!("ca_file = {:?}", ca_file))).await;
    assert_eq!(
        run.verdict,
        Some(chaosbot::run::Verdict::Held),
        "{:?}\n{journal:#?}",
        run.reason
    );
    use chaosbot::run::Event;
    let load_ok = journal.iter().find_map(|e| match &e.event {
        Event::LoadReport { stats, .. } => Some(stats.ok),
        _ => None,
    });
    assert!(load_ok.is_some_and(|n| n > 0), "{journal:#?}");
    assert!(
        journal.iter().any(|e| matches!(
            &e.event,
            Event::RollbackAction { name, ok: true, .. } if name == "poke"
        )),
        "{journal:#?}"
    );
    assert!(
        !journal
            .iter()
            .any(|e| matches!(&e.event, Event::Warning { .. })),
        "a verified endpoint warns of nothing: {journal:#?}"
    );
    assert!(srv.counts.requests.load(Ordering::SeqCst) >= 10);
}

#[tokio::test]
async fn without_the_ca_the_steady_state_fails_saying_why_and_nothing_is_injected() {
    let ca = make_ca("chaosbot test CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let (run, journal) = run_https_experiment(https_config(srv.addr, "")).await;
    assert_eq!(run.verdict, Some(chaosbot::run::Verdict::Failed));
    assert_eq!(
        run.rollback,
        Some(chaosbot::run::RollbackOutcome::NothingToRevert)
    );
    let reason = run.reason.unwrap_or_default();
    assert!(
        reason.contains("not trusted") && reason.contains("ca_file"),
        "{reason}"
    );
    assert!(
        !journal
            .iter()
            .any(|e| matches!(&e.event, chaosbot::run::Event::FaultInjected { .. })),
        "{journal:#?}"
    );
}

#[tokio::test]
async fn an_unverified_endpoint_is_journaled_on_every_run_that_uses_it() {
    let ca = make_ca("some other CA");
    let srv = simple_server(&leaf(&ca, &["localhost"], false)).await;
    let (run, journal) =
        run_https_experiment(https_config(srv.addr, "insecure_skip_verify = true")).await;
    assert_eq!(
        run.verdict,
        Some(chaosbot::run::Verdict::Held),
        "{:?}",
        run.reason
    );
    let warnings: Vec<&str> = journal
        .iter()
        .filter_map(|e| match &e.event {
            chaosbot::run::Event::Warning { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{journal:#?}");
    assert!(
        warnings[0].contains("not checked") && warnings[0].contains("insecure_skip_verify"),
        "{warnings:?}"
    );
}

#[test]
fn the_config_refuses_what_no_run_could_use() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "ca.txt", "hello");
    let cases = [
        (
            "url = \"ftp://files.internal\"".to_string(),
            "speaks http:// and https://",
        ),
        (
            format!("url = \"http://127.0.0.1:1\"\nca_file = {:?}", not_pem),
            "apply to https:// URLs",
        ),
        (
            format!("url = \"https://127.0.0.1:1\"\nca_file = {:?}", not_pem),
            "ca_file",
        ),
        (
            "url = \"https://127.0.0.1:1\"\nca_file = \"/no/such/ca.pem\"".to_string(),
            "cannot read it",
        ),
        ("url = \"https://\"".to_string(), "is not a URL"),
    ];
    for (lines, want) in cases {
        let cfg = chaosbot::config::Config::from_toml(&format!(
            "[[targets.http]]\nname = \"svc\"\n{lines}\n"
        ))
        .unwrap();
        let err = cfg.validate().expect_err(&lines).to_string();
        assert!(
            err.contains("`svc`") && err.contains(want),
            "{lines}: {err}"
        );
    }
}
