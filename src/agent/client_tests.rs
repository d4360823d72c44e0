//! The outcome mapping, against a tiny real HTTP server on loopback.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::Secret;

/// Answers every connection with `response` (raw bytes), up to 8 connections.
async fn serve(response: String) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            let _ = s.write_all(response.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    addr
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn client(addr: std::net::SocketAddr) -> AgentClient {
    AgentClient::from_entry(&AgentEntry {
        name: "web-1".into(),
        url: format!("http://{addr}"),
        secret: Some(Secret("s3cret".into())),
        secret_file: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        server_name: None,
    })
    .unwrap()
}

fn hello_body(protocol: u32) -> String {
    serde_json::to_string(&Hello {
        agent: "web-1".into(),
        version: "x".into(),
        protocol,
        on_demand: false,
        targets: vec![],
        faults: vec![],
    })
    .unwrap()
}

#[tokio::test]
async fn a_good_hello_parses() {
    let addr = serve(http("200 OK", &hello_body(PROTOCOL_VERSION))).await;
    let hello = client(addr).hello().await.unwrap();
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
}

#[tokio::test]
async fn garbage_is_garbage() {
    let addr = serve(http("200 OK", "<html>hi</html>")).await;
    let err = client(addr).hello().await.unwrap_err();
    assert!(matches!(err, AgentError::Garbage { .. }), "{err}");
    assert!(err.to_string().contains("web-1"), "{err}");
    // Not HTTP at all.
    let addr = serve("SSH-2.0-OpenSSH_9.6\r\n".into()).await;
    let err = client(addr).hello().await.unwrap_err();
    assert!(matches!(err, AgentError::Garbage { .. }), "{err}");
    // An error status whose body is not an agent error.
    let addr = serve(http("500 Internal Server Error", "oops")).await;
    let err = client(addr).faults().await.unwrap_err();
    assert!(matches!(err, AgentError::Garbage { .. }), "{err}");
}

#[tokio::test]
async fn status_401_is_unauthenticated() {
    let body = r#"{"code":"unauthenticated","message":"wrong secret"}"#;
    let addr = serve(http("401 Unauthorized", body)).await;
    let err = client(addr).hello().await.unwrap_err();
    assert_eq!(
        err,
        AgentError::Unauthenticated {
            agent: "web-1".into(),
            message: "wrong secret".into()
        }
    );
}

#[tokio::test]
async fn another_protocol_is_protocol() {
    let addr = serve(http("200 OK", &hello_body(PROTOCOL_VERSION + 1))).await;
    let err = client(addr).hello().await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Protocol { theirs, .. } if *theirs == (PROTOCOL_VERSION + 1).to_string()),
        "{err}"
    );
    let body = r#"{"code":"protocol","message":"this agent speaks protocol 2"}"#;
    let addr = serve(http("400 Bad Request", body)).await;
    let err = client(addr).faults().await.unwrap_err();
    assert!(matches!(err, AgentError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn refusal_codes_map_to_their_cases() {
    let held = r#"{"code":"held","message":"held","holder":"r-other"}"#;
    let addr = serve(http("409 Conflict", held)).await;
    let req = protocol::Renew {
        run_id: "r-1".into(),
        epoch: 1,
        fault_ids: vec![],
        lease_ms: 1000,
    };
    let err = client(addr).renew(&req).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Held { holder, .. } if holder == "r-other"),
        "{err}"
    );
    let stale = r#"{"code":"stale_epoch","message":"epoch 3 holds it"}"#;
    let addr = serve(http("409 Conflict", stale)).await;
    let err = client(addr).renew(&req).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::StaleEpoch { run_id, .. } if run_id == "r-1"),
        "{err}"
    );
    let other = r#"{"code":"not_found","message":"no such fault"}"#;
    let addr = serve(http("404 Not Found", other)).await;
    let err = client(addr).renew(&req).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Refused { code, .. } if code == "not_found"),
        "{err}"
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable_with_the_address() {
    // Bind then drop: the port is very likely free for the moment of the test.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client(addr).hello().await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_silent_agent_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let conn = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(7)).await;
        drop(conn);
    });
    let started = std::time::Instant::now();
    let err = client(addr).hello().await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(7));
    held.abort();
}

#[test]
fn config_refuses_plain_http_to_another_host() {
    let entry = AgentEntry {
        name: "web-1".into(),
        url: "http://10.1.2.3:7411".into(),
        secret: Some(Secret("x".into())),
        secret_file: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        server_name: None,
    };
    let err = entry.validate().unwrap_err().to_string();
    assert!(err.contains("https://"), "{err}");
    let ftp = AgentEntry {
        url: "ftp://10.1.2.3".into(),
        ..entry.clone()
    };
    assert!(ftp.validate().unwrap_err().to_string().contains("ftp://"));
    let no_secret = AgentEntry {
        url: "https://10.1.2.3:7411".into(),
        secret: None,
        ..entry
    };
    let err = no_secret.validate().unwrap_err().to_string();
    assert!(err.contains("secret_file"), "{err}");
}

#[test]
fn config_lease_defaults_are_the_protocol_terms() {
    assert_eq!(crate::config::DEFAULT_LEASE_TTL_MS, protocol::LEASE_TTL_MS);
    assert_eq!(
        crate::config::DEFAULT_RENEW_EVERY_MS,
        protocol::RENEW_EVERY_MS
    );
}
