//! An endpoint's `headers` in the operator config: credentials read from the environment
//! when a request is made, sent by probes and by the load generator (the local agent's
//! process), and written nowhere: not in the store, not in the run's JSON.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");
const TOKEN_VAR: &str = "CHAOSBOT_TEST_PRIVATE_TOKEN";
const TOKEN: &str = "pr1vate-tok-77";

/// Counts of requests with the right credentials and without.
#[derive(Default)]
struct Seen {
    authorized: AtomicU64,
    refused: AtomicU64,
}

/// A loopback service answering 200 to `Authorization: Bearer TOKEN`, 401 otherwise.
async fn private_service() -> (std::net::SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let counts = Arc::clone(&counts);
        async move {
            let ok = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == format!("Bearer {TOKEN}"));
            if ok {
                counts.authorized.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            } else {
                counts.refused.fetch_add(1, Ordering::SeqCst);
                StatusCode::UNAUTHORIZED
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn run(dir: &Path, token: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .args(["--config", "chaosbot.toml", "--database-url"])
        .arg(format!("sqlite://{}", dir.join("runs.db").display()))
        .args(["run", "private.yaml", "--json", "run.json"])
        .env_remove("DATABASE_URL")
        .env_remove("CHAOSBOT_CONFIG")
        .env_remove(TOKEN_VAR)
        .env("CHAOSBOT_AGENT_SOCKET", dir.join(".agent/agent.sock"))
        .stdin(Stdio::null());
    if let Some(t) = token {
        c.env(TOKEN_VAR, t);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_headers_carry_credentials_from_the_environment_and_are_stored_nowhere() {
    let (addr, seen) = private_service().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("chaosbot.toml"),
        format!(
            r#"
[[targets.http]]
name = "private"
url = "http://{addr}"
headers = {{ Authorization = "Bearer ${{{TOKEN_VAR}}}" }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("private.yaml"),
        r#"name: private
title: The private API answers its clients
owner: "@sre-test"
hypothesis:
  probes:
    - name: private-ok
      http: {endpoint: private, path: /health, status: 200}
      interval: 250ms
method:
  - name: clients
    target: private
    fault: load
    path: /
    rate: 20
    connections: 2
    thresholds: ["error_rate < 1%"]
    duration: 2s
"#,
    )
    .unwrap();

    let o = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || run(&dir, Some(TOKEN))
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let authorized = seen.authorized.load(Ordering::SeqCst);
    assert!(
        authorized >= 30,
        "probes and load were authorized: {authorized}"
    );
    assert_eq!(seen.refused.load(Ordering::SeqCst), 0);
    for f in ["runs.db", "runs.db-wal", "run.json"] {
        let bytes = std::fs::read(dir.join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{f} holds the token"
        );
    }
    let doc = std::fs::read_to_string(dir.join("run.json")).unwrap();
    assert!(!doc.contains(TOKEN));

    // Without the variable the probe fails before anything is injected, saying what to set.
    let o = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || run(&dir, None)
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(TOKEN_VAR), "{}", text(&o));

    // `validate` says so beforehand, and passes the experiment (the variable is the run's).
    let o = Command::new(BIN)
        .current_dir(dir)
        .args(["--config", "chaosbot.toml", "validate", "private.yaml"])
        .env_remove("CHAOSBOT_CONFIG")
        .env_remove(TOKEN_VAR)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "warning: http target `private` sends headers read from `${{{TOKEN_VAR}}}`"
        )),
        "{err}"
    );
}
