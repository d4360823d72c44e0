//! SQLite is one process's database: a second `chaosbot serve` on the same file says so, names
//! the file, points to Postgres for replicas, and exits; once the first is gone (even by
//! `kill -9`), a new one starts.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");

use crate::support::free_port;

fn serve(dir: &Path, db: &str, listen: SocketAddr) -> Command {
    let mut c = Command::new(BIN);
    c.arg("serve")
        .current_dir(dir)
        .env("DATABASE_URL", db)
        .env("SLACK_SIGNING_SECRET", "lock-secret")
        .env("SLACK_BOT_TOKEN", "xoxb-lock")
        // Nothing listens there: the outbox only retries.
        .env("SLACK_API_URL", format!("http://{}", free_port()))
        .env("CHAOSBOT_LISTEN", listen.to_string())
        .env("CHAOSBOT_AGENT_SOCKET", dir.join("agent/agent.sock"))
        .env_remove("SLACK_APP_TOKEN")
        .stdin(Stdio::null());
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("chaosbot serve exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chaosbot serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_to_end(mut c: Command) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the second chaosbot serve did not exit by itself");
        }
    }
}

#[test]
fn a_second_serve_on_one_sqlite_file_says_so_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.db");
    let db = format!("sqlite://{}", file.display());
    let first_addr = free_port();
    let mut first = Killed(
        serve(dir.path(), &db, first_addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(first_addr, &mut first.0);

    let out = run_to_end(serve(dir.path(), &db, free_port()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second serve must fail: {stderr}"
    );
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("Postgres"), "points to Postgres: {stderr}");
    assert!(stderr.contains("another `chaosbot serve`"), "{stderr}");

    // A first serve killed outright leaves no stale lock behind.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let again_addr = free_port();
    let mut again = Killed(
        serve(dir.path(), &db, again_addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(again_addr, &mut again.0);
}
