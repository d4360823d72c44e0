//! HTTPS probe cost: p50 and p99 of one probe request (`probes::http::HttpClient`) on a
//! kept-alive connection, plain HTTP vs HTTPS, and HTTPS on a fresh connection for every
//! probe (what the handshake costs), against local hyper servers on their own runtime.
//!
//! `cargo bench --bench probe_tls`. Knob: `PROBE_BENCH_N` (2000 probes per case).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::probes::http::HttpClient;
use chaosbot::tls::TlsOptions;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

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

/// Starts a plain and an HTTPS server on one runtime of their own: (plain, https) addresses.
fn start_servers(cert: &str, key: &str) -> (SocketAddr, SocketAddr) {
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
            let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((plain.local_addr().unwrap(), tls.local_addr().unwrap()))
                .unwrap();
            let svc = || {
                hyper::service::service_fn(|_r: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                })
            };
            tokio::spawn(async move {
                while let Ok((s, _)) = plain.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc())
                            .await;
                    });
                }
            });
            while let Ok((s, _)) = tls.accept().await {
                // As production TLS servers do: without it, the session ticket and the answer
                // are two small writes, and Nagle holds the second for the client's delayed ACK.
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(s) = acceptor.accept(s).await {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc())
                            .await;
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn measure(client: &HttpClient, url: &str, n: usize) -> (f64, f64) {
    // Warm-up: the kept-alive cases measure requests on an open connection.
    client.request(url, "GET").await.unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = client.request(url, "GET").await.unwrap();
        times.push(t.elapsed());
        assert_eq!(status, 200);
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    let n = std::env::var("PROBE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000usize);
    let (ca_pem, cert, key) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (plain, tls) = start_servers(&cert, &key);
    let opts = TlsOptions {
        ca_file: Some(ca_file),
        ..TlsOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let plain_url = format!("http://{plain}/health");
        let tls_url = format!("https://localhost:{}/health", tls.port());
        let kept = HttpClient::new(&opts).unwrap();
        let fresh = HttpClient::fresh_connections(&opts).unwrap();
        vec![
            ("http, kept-alive", measure(&kept, &plain_url, n).await),
            ("https, kept-alive", measure(&kept, &tls_url, n).await),
            (
                "https, fresh connection",
                measure(&fresh, &tls_url, n).await,
            ),
        ]
    });
    println!("\n{:<26} {:>10} {:>10}", "probe", "p50 µs", "p99 µs");
    for (name, (p50, p99)) in rows {
        println!("{name:<26} {p50:>10.0} {p99:>10.0}");
    }
}
