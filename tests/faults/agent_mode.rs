//! `chaosbot run` through its local agent, as the binary runs by default: a real agent
//! process started on demand, real signals, real sockets.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaosbot::faults::process::process_state;

use super::process::{BIN, pid_of, reap, sleeper, wait_state, write_cli_setup, write_pid};
use crate::support::*;

fn run_cmd(dir: &Path, config: &Path, file: &str, duration: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(config)
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("runs.db").display()))
        .arg("run")
        .arg(dir.join(file))
        .arg("--set")
        .arg(format!("duration={duration}"))
        .env_remove("DATABASE_URL")
        .env_remove("CHAOSBOT_CONFIG")
        .env("CHAOSBOT_AGENT_SOCKET", dir.join("agent/agent.sock"))
        .env("CHAOSBOT_AGENT_IDLE_EXIT", "3s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

fn answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

#[tokio::test]
async fn kill_9_of_the_run_mid_pause_the_agent_resumes_within_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let config = write_cli_setup(dir.path(), free_port(), svc.addr);
    append(
        &config,
        "\n[agent]\nlease_ttl = \"2s\"\nrenew_every = \"500ms\"\n",
    );
    let child = sleeper();
    let pid = pid_of(&child);
    write_pid(dir.path(), pid);
    let mut bot = run_cmd(dir.path(), &config, "pause.yaml", "2m")
        .spawn()
        .unwrap();
    let stopped =
        tokio::task::spawn_blocking(move || wait_state(pid, 'T', Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(stopped, "the worker was never paused");
    // Held past a few renewals: the lease keeper keeps it in place.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        process_state(pid),
        Some('T'),
        "renewed leases keep the fault"
    );

    bot.kill().unwrap(); // SIGKILL: the controller reverts nothing.
    bot.wait().unwrap();
    let killed = Instant::now();
    let resumed = tokio::task::spawn_blocking(move || {
        let limit = Duration::from_secs(3); // lease TTL + 1 s
        while killed.elapsed() < limit {
            if matches!(process_state(pid), Some('S' | 'R')) {
                return Some(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
    .await
    .unwrap();
    assert!(
        resumed.is_some(),
        "the agent did not resume the worker within lease + 1s"
    );
    // Nothing restarted it: the same process runs again.
    assert!(matches!(process_state(pid), Some('S' | 'R')));

    // The agent outlived the command, then leaves by itself when idle (3 s here).
    let socket = dir.path().join("agent/agent.sock");
    assert!(
        answers(&socket),
        "the local agent should still run after the command died"
    );
    let gone = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if !answers(&socket) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .await
    .unwrap();
    assert!(gone, "the idle local agent did not exit by itself");
    reap(child);
}

#[tokio::test]
async fn an_unreachable_agent_fails_the_run_before_anything_is_injected() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let config = write_cli_setup(dir.path(), free_port(), svc.addr);
    // The worker belongs to an agent nobody runs (a port nothing listens on).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "name = \"worker\"\n",
        "name = \"worker\"\nagent = \"web-1\"\n",
    );
    let dead = free_port();
    std::fs::write(
        &config,
        format!("{text}\n[[agents]]\nname = \"web-1\"\nurl = \"http://{dead}\"\nsecret = \"s\"\n"),
    )
    .unwrap();
    let child = sleeper();
    let pid = pid_of(&child);
    write_pid(dir.path(), pid);
    let mut cmd = run_cmd(dir.path(), &config, "pause.yaml", "5s");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("agent `web-1`"), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("nothing was injected"), "{text}");
    assert!(
        matches!(process_state(pid), Some('S' | 'R')),
        "never paused"
    );
    reap(child);
}

#[tokio::test]
async fn chaosbot_agents_lists_the_local_agent_and_says_why_one_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let config = write_cli_setup(dir.path(), free_port(), svc.addr);
    let dead = free_port();
    append(
        &config,
        &format!("\n[[agents]]\nname = \"web-1\"\nurl = \"http://{dead}\"\nsecret = \"s\"\n"),
    );
    let list = |json: bool| {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&config).arg("agents");
        if json {
            c.arg("--json");
        }
        c.env("CHAOSBOT_AGENT_SOCKET", dir.path().join("agent/agent.sock"))
            .env_remove("CHAOSBOT_CONFIG")
            .stdin(Stdio::null());
        c
    };
    let mut text_cmd = list(false);
    let out = tokio::task::spawn_blocking(move || text_cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("local") && text.contains("not running"),
        "{text}"
    );
    assert!(
        text.contains("web-1") && text.contains("unreachable"),
        "{text}"
    );
    assert!(text.contains(&dead.to_string()), "{text}");
    // Listing does not start the local agent.
    assert!(!answers(&dir.path().join("agent/agent.sock")));

    let mut json_cmd = list(true);
    let out = tokio::task::spawn_blocking(move || json_cmd.output().unwrap())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "web-1"]);
    assert_eq!(v[1]["reachable"], serde_json::json!(false));
}
