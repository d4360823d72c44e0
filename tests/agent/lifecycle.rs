//! The agent's life: crash and replay, SIGTERM, the local agent's declarations, idle exit and
//! its one-per-state-dir lock.

use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{CODE_BAD_REQUEST, CODE_FORBIDDEN, ProxiesUp, TargetDecl};
use chaosbot::config::ProxyTarget;

use crate::rig::{Site, Via, apply, echo_server, fill_step, pause_step, spawn, wait_paused};

#[tokio::test]
async fn after_kill_9_the_restarted_agent_replays_the_journal() {
    let site = Site::new().await;
    let pid = site.pid();
    let mut agent = site.agent().await;
    let a = agent
        .apply(&apply("r-1", 1, "f-pause", pause_step(), 60_000, 60_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let a = agent
        .apply(&apply("r-1", 1, "f-fill", fill_step(), 60_000, 60_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(wait_paused(pid, true, Duration::from_secs(2)).await);
    assert_eq!(site.scratch_files().len(), 1);

    agent.child.kill().unwrap();
    agent
        .wait_exit(Duration::from_secs(5))
        .expect("killed agent exits");
    // Nobody reverted: the damage is still there.
    assert!(wait_paused(pid, true, Duration::ZERO).await);
    assert_eq!(site.scratch_files().len(), 1);
    let journal = std::fs::read_to_string(site.path().join("state/journal.jsonl")).unwrap();
    assert_eq!(journal.matches("\"op\":\"apply\"").count(), 2, "{journal}");

    let again = site.agent().await;
    assert!(
        wait_paused(pid, false, Duration::from_secs(1)).await,
        "paused process not resumed"
    );
    assert!(
        site.scratch_files().is_empty(),
        "fill file left: {:?}",
        site.scratch_files()
    );
    let r = again.renew("r-1", 1, &["f-pause", "f-fill"], 10_000).await;
    for f in r.body["faults"].as_array().unwrap() {
        assert_eq!(f["state"], "gone", "{:?}", r.body);
        assert_eq!(f["reason"], "replayed at start");
    }
    let journal = std::fs::read_to_string(site.path().join("state/journal.jsonl")).unwrap();
    assert!(journal.is_empty(), "journal not compacted: {journal}");
    let text = again.metrics().await;
    assert_eq!(
        crate::rig::metric(&text, "chaosbot_agent_journal_replayed_total"),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_reverts_everything_and_exits_0() {
    let site = Site::new().await;
    let pid = site.pid();
    let mut agent = site.agent().await;
    agent
        .apply(&apply("r-1", 1, "f-pause", pause_step(), 60_000, 60_000))
        .await;
    agent
        .apply(&apply("r-2", 1, "f-fill", fill_step(), 60_000, 60_000))
        .await;
    assert!(wait_paused(pid, true, Duration::from_secs(2)).await);
    agent.sigterm();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
    assert!(wait_paused(pid, false, Duration::ZERO).await);
    assert!(site.scratch_files().is_empty());
    assert!(!site.socket().exists(), "socket left behind");
    let log = agent.log_text();
    assert!(log.contains("agent stopping"), "{log}");
    assert!(
        log.contains("r-2"),
        "revert logged without its run id: {log}"
    );
}

#[tokio::test]
async fn the_local_agent_shares_declarations_refuses_conflicts_and_exits_when_idle() {
    let site = Site::new().await;
    let sock = site.path().join("local/agent.sock");
    let args = [
        "agent",
        "--on-demand",
        "--socket",
        sock.to_str().unwrap(),
        "--idle-exit",
        "1s",
    ];
    let mut local = spawn(&args, site.path(), Via::Unix(sock.clone()), None);
    local.ready().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mode = std::fs::metadata(sock.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);

    // A second local agent on the same directory exits at once, saying why.
    let mut second = spawn(&args, site.path(), Via::Unix(sock.clone()), None);
    let st = second
        .wait_exit(Duration::from_secs(10))
        .expect("second agent exits");
    assert_eq!(st.code(), Some(75), "{}", second.log_text());
    assert!(
        second
            .log_text()
            .contains("another chaosbot agent already uses state dir"),
        "{}",
        second.log_text()
    );

    let upstream = echo_server().await;
    let decl = |upstream: std::net::SocketAddr| {
        TargetDecl::Proxy(ProxyTarget {
            name: "api".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.to_string(),
            description: String::new(),
            agent: None,
        })
    };
    let up = |d: TargetDecl| ProxiesUp {
        names: vec!["api".into()],
        declare: vec![d],
        check_upstreams: true,
    };
    let first = local
        .call(
            "POST",
            "/v1/proxies",
            Some(serde_json::to_value(up(decl(upstream))).unwrap()),
        )
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let listen = first.body["proxies"][0]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!listen.ends_with(":0"), "port 0 not resolved: {listen}");
    assert!(
        first.body["proxies"][0]["upstream_error"].is_null(),
        "{:?}",
        first.body
    );
    // The same declaration again: the same proxy.
    let same = local
        .call(
            "POST",
            "/v1/proxies",
            Some(serde_json::to_value(up(decl(upstream))).unwrap()),
        )
        .await;
    assert_eq!(same.body["proxies"][0]["listen"], listen.as_str());
    // Another definition under the same name: refused, naming both.
    let other = echo_server().await;
    let clash = local
        .call(
            "POST",
            "/v1/proxies",
            Some(serde_json::to_value(up(decl(other))).unwrap()),
        )
        .await;
    assert_eq!(
        (clash.status, clash.code()),
        (400, CODE_BAD_REQUEST),
        "{:?}",
        clash.body
    );
    assert!(
        clash.message().contains(&upstream.to_string())
            && clash.message().contains(&other.to_string()),
        "{}",
        clash.message()
    );

    // Quiet for the idle period: the agent removes its socket and exits 0.
    let quiet = Instant::now();
    let st = local
        .wait_exit(Duration::from_secs(5))
        .expect("idle agent exits");
    assert_eq!(st.code(), Some(0), "{}", local.log_text());
    assert!(
        quiet.elapsed() >= Duration::from_millis(500),
        "exited before the idle period"
    );
    assert!(!sock.exists());
}

#[tokio::test]
async fn a_configured_agent_refuses_declarations() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let req = ProxiesUp {
        names: vec![],
        declare: vec![TargetDecl::Proxy(ProxyTarget {
            name: "extra".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: "127.0.0.1:1".into(),
            description: String::new(),
            agent: None,
        })],
        check_upstreams: false,
    };
    let r = agent
        .call(
            "POST",
            "/v1/proxies",
            Some(serde_json::to_value(req).unwrap()),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, CODE_FORBIDDEN), "{:?}", r.body);
    let hello = agent.call("GET", "/v1/hello", None).await;
    assert_eq!(hello.body["agent"], "web-1");
    assert_eq!(hello.body["on_demand"], false);
    // sleeper, scratch, api and api-http (rig.rs `Site::targets`).
    assert_eq!(hello.body["targets"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn the_local_agent_applies_faults_on_targets_declared_with_the_apply() {
    let site = Site::new().await;
    let pid = site.pid();
    let sock = site.path().join("local/agent.sock");
    let args = ["agent", "--on-demand", "--socket", sock.to_str().unwrap()];
    let local = spawn(&args, site.path(), Via::Unix(sock.clone()), None);
    local.ready().await;
    let target = chaosbot::config::ProcessTarget {
        name: "sleeper".into(),
        comm: None,
        pid_file: Some(site.path().join("sleeper.pid")),
        find_command: None,
        restart_command: None,
        description: String::new(),
        agent: None,
    };
    let mut req = apply("r-1", 1, "f-1", pause_step(), 30_000, 30_000);
    req.declare = Some(TargetDecl::Process(target));
    let a = local.apply(&req).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(wait_paused(pid, true, Duration::from_secs(2)).await);
    // Held: the local agent does not exit while it holds a fault, whatever the idle period.
    let hello = local.call("GET", "/v1/hello", None).await;
    assert_eq!(hello.body["on_demand"], true);
    assert_eq!(hello.body["faults"][0]["target"], "sleeper");
    let r = local.revert("r-1", 1, "f-1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(wait_paused(pid, false, Duration::from_secs(1)).await);
}
