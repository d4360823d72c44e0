//! Who may talk to an agent: the secret, the protocol version, TLS and client certificates,
//! and the refusal to listen off loopback unprotected.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chaosbot::agent::protocol::{CODE_BAD_REQUEST, CODE_PROTOCOL, CODE_UNAUTHENTICATED};
use chaosbot::tls::TlsOptions;

use crate::rig::{SECRET, Site, Via, free_port, leaf, make_ca, raw_request, request, spawn};

#[tokio::test]
async fn missing_or_wrong_secrets_are_refused_and_audited() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let via = agent.via.clone();
    let none = request(&via, "GET", "/v1/faults", None, None, Some("1"))
        .await
        .unwrap();
    assert_eq!(
        (none.status, none.code()),
        (401, CODE_UNAUTHENTICATED),
        "{:?}",
        none.body
    );
    let wrong = request(
        &via,
        "GET",
        "/v1/faults",
        None,
        Some("Bearer nope"),
        Some("1"),
    )
    .await
    .unwrap();
    assert_eq!((wrong.status, wrong.code()), (401, CODE_UNAUTHENTICATED));
    assert!(wrong.message().contains("Bearer"), "{}", wrong.message());
    // The audit lines reach the log (bounded wait: the agent writes them asynchronously).
    let mut log = String::new();
    for _ in 0..50 {
        log = agent.log_text();
        if log.contains("a wrong secret") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        log.contains("chaosbot::audit")
            && log.contains("no Authorization header")
            && log.contains("a wrong secret")
            && log.contains("/v1/faults"),
        "{log}"
    );
    // /metrics on a socket needs no secret.
    let m = request(&via, "GET", "/metrics", None, None, None)
        .await
        .unwrap();
    assert_eq!(m.status, 200);
}

#[tokio::test]
async fn another_protocol_version_and_garbage_bodies_are_refused() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let auth = format!("Bearer {SECRET}");
    let r = request(&agent.via, "GET", "/v1/hello", None, Some(&auth), Some("2"))
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (400, CODE_PROTOCOL), "{:?}", r.body);
    assert!(
        r.message().contains("protocol 1") && r.message().contains('2'),
        "{}",
        r.message()
    );
    let r = request(&agent.via, "GET", "/v1/hello", None, Some(&auth), None)
        .await
        .unwrap();
    assert_eq!(r.code(), CODE_PROTOCOL);
    let r = raw_request(
        &agent.via,
        "POST",
        "/v1/faults",
        Bytes::from_static(b"{not json"),
        Some(&auth),
        Some("1"),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.code()),
        (400, CODE_BAD_REQUEST),
        "{:?}",
        r.body
    );
    // Absurd terms are refused, not overflowed.
    let huge = crate::rig::apply("r-1", 1, "f-1", crate::rig::pause_step(), u64::MAX, 1_000);
    let r = agent.apply(&huge).await;
    assert_eq!(
        (r.status, r.code()),
        (400, CODE_BAD_REQUEST),
        "{:?}",
        r.body
    );
    assert!(r.message().contains("ttl_ms"), "{}", r.message());
    let r = agent.renew("r-1", 1, &["f-1"], 0).await;
    assert_eq!(r.code(), CODE_BAD_REQUEST, "{:?}", r.body);
    assert_eq!(agent.call("GET", "/v1/hello", None).await.status, 200);
}

#[tokio::test]
async fn an_unprotected_public_address_is_refused_at_start_naming_what_is_missing() {
    let site = Site::new().await;
    let d = site.path().display();
    let cfg = site.path().join("public.toml");
    std::fs::write(
        &cfg,
        format!("name = \"web-1\"\nlisten = \"0.0.0.0:0\"\nstate_dir = \"{d}/state\"\n"),
    )
    .unwrap();
    let mut agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        site.path(),
        Via::Tcp(free_port()),
        None,
    );
    let st = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits");
    assert_eq!(st.code(), Some(64));
    let log = agent.log_text();
    assert!(
        log.contains("0.0.0.0:0") && log.contains("a secret") && log.contains("[tls]"),
        "{log}"
    );
    assert!(
        !site.path().join("state").exists(),
        "nothing may be touched before the refusal"
    );
}

#[tokio::test]
async fn tls_with_client_certificates_serves_known_clients_only() {
    let site = Site::new().await;
    let dir = site.path();
    let server_ca = make_ca("agents ca");
    let client_ca = make_ca("clients ca");
    std::fs::write(dir.join("agents-ca.pem"), &server_ca.pem).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), &client_ca.pem).unwrap();
    let (cert, key) = leaf(&server_ca, dir, "agent", &["agent.test"]);
    let (ccert, ckey) = leaf(&client_ca, dir, "controller", &["controller.test"]);
    let addr = free_port();
    let d = dir.display();
    let cfg = dir.join("tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"web-1\"\nlisten = \"{addr}\"\nsecret = \"{SECRET}\"\nstate_dir = \"{d}/state\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{d}/clients-ca.pem\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let opts = |client: bool| TlsOptions {
        ca_file: Some(dir.join("agents-ca.pem")),
        client_cert: client.then(|| ccert.clone()),
        client_key: client.then(|| ckey.clone()),
        server_name: Some("agent.test".into()),
        insecure_skip_verify: false,
    };
    let with_cert: Arc<rustls::ClientConfig> = chaosbot::tls::client_config(&opts(true)).unwrap();
    let without: Arc<rustls::ClientConfig> = chaosbot::tls::client_config(&opts(false)).unwrap();
    let agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        dir,
        Via::Tls {
            addr,
            config: with_cert,
        },
        Some(SECRET),
    );
    agent.ready().await;
    let hello = agent.call("GET", "/v1/hello", None).await;
    assert_eq!(hello.body["agent"], "web-1");
    // Over TLS, /metrics is behind the secret too.
    let m = request(&agent.via, "GET", "/metrics", None, None, None)
        .await
        .unwrap();
    assert_eq!(m.status, 401);
    // A client with no certificate gets nothing.
    let bare = Via::Tls {
        addr,
        config: without,
    };
    let auth = format!("Bearer {SECRET}");
    let r = request(&bare, "GET", "/v1/hello", None, Some(&auth), Some("1")).await;
    assert!(
        r.is_err(),
        "a client without a certificate was served: {r:?}"
    );
    let mut log = String::new();
    for _ in 0..50 {
        log = agent.log_text();
        if log.contains("TLS handshake refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.contains("TLS handshake refused"), "{log}");
}

#[tokio::test]
async fn a_loopback_agent_serves_plain_http_with_the_secret() {
    let site = Site::new().await;
    let addr = free_port();
    let d = site.path().display();
    let cfg = site.path().join("loopback.toml");
    std::fs::write(
        &cfg,
        format!("name = \"lo\"\nlisten = \"{addr}\"\nsecret_file = \"{d}/secret\"\nstate_dir = \"{d}/state\"\n"),
    )
    .unwrap();
    std::fs::write(site.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        site.path(),
        Via::Tcp(addr),
        Some(SECRET),
    );
    agent.ready().await;
    assert_eq!(
        agent.call("GET", "/v1/hello", None).await.body["agent"],
        "lo"
    );
    let none = request(&agent.via, "GET", "/v1/hello", None, None, Some("1"))
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    // Loopback: /metrics without the secret, for a local scraper.
    let m = request(&agent.via, "GET", "/metrics", None, None, None)
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .as_str()
            .unwrap_or("")
            .contains("chaosbot_agent_faults_in_place"),
        "{:?}",
        m.body
    );
}
