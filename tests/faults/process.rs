//! Process faults against real processes: `sleep` children the tests spawn, matched through
//! pid files the tests write, a real engine and a real SQLite store, and the real binary for
//! the crash-then-restart path.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::Config;
use chaosbot::engine::Engine;
use chaosbot::faults::process::{ProcessAction, ProcessFaults, Signal, process_state};
use chaosbot::faults::{FaultFamily, InjectContext, TargetRegistry};
use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::spec::model::{FaultSpec, FaultStep, Step};
use chaosbot::store::{DynStore, RunFilter};
use support::*;

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");

pub(super) fn sleeper() -> Child {
    Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

pub(super) fn pid_of(c: &Child) -> i32 {
    i32::try_from(c.id()).unwrap()
}

/// Kills and reaps a child at the end of a test (SIGKILL works on stopped processes too).
pub(super) fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn kill_pid(pid: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits (bounded) until the process is in `want` (`T` stopped, `S` sleeping...).
pub(super) fn wait_state(pid: i32, want: char, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if process_state(pid) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    process_state(pid) == Some(want)
}

struct Rig {
    engine: Arc<Engine>,
    store: DynStore,
    targets: TargetRegistry,
    dir: tempfile::TempDir,
}

/// An engine whose config declares process targets: `worker` (pid file `worker.pid` in the
/// test's directory, restart command writing `restarted` and starting a new sleeper), `init`
/// (a pid file naming pid 1), `me` (a pid file naming the test process) and `ghost` (a name no
/// process has).
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let cfg = Config::from_toml(&format!(
        r#"
[guard_rails]
max_run_duration = "2m"

[[targets.process]]
name = "worker"
pid_file = "{d}/worker.pid"
restart_command = "echo restarted > {d}/restarted; sleep 60 >/dev/null 2>&1 & echo $! > {d}/worker.pid"

[[targets.process]]
name = "broken"
pid_file = "{d}/broken.pid"
restart_command = "echo starting the worker; echo no such file: worker.conf >&2; exit 3"

[[targets.process]]
name = "init"
pid_file = "{d}/init.pid"

[[targets.process]]
name = "me"
pid_file = "{d}/me.pid"

[[targets.process]]
name = "ghost"
comm = "no-such-proc-x"
"#
    ))
    .unwrap();
    cfg.validate().unwrap();
    std::fs::write(dir.path().join("init.pid"), "1\n").unwrap();
    std::fs::write(
        dir.path().join("me.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let cfg = Arc::new(cfg);
    let store = sqlite_store(dir.path()).await;
    let (engine, targets) = started_engine(cfg.clone(), store.clone()).await;
    Rig {
        engine,
        store,
        targets,
        dir,
    }
}

pub(super) fn write_pid(dir: &Path, pid: i32) {
    std::fs::write(dir.join("worker.pid"), format!("{pid}\n")).unwrap();
}

fn process_step(name: &str, target: &str, action: ProcessAction, ms: u64) -> Step {
    Step::Fault(FaultStep {
        name: name.into(),
        target: target.into(),
        duration: Duration::from_millis(ms),
        fault: FaultSpec::Process { action },
    })
}

#[tokio::test]
async fn pause_stops_the_process_during_the_step_and_resumes_it_after() {
    let rig = rig().await;
    let child = sleeper();
    let pid = pid_of(&child);
    write_pid(rig.dir.path(), pid);
    let exp = experiment(
        vec![],
        vec![process_step("freeze", "worker", ProcessAction::Pause, 1500)],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let stopped = tokio::task::spawn_blocking(move || wait_state(pid, 'T', Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(stopped, "the process never showed state T");
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert!(
        matches!(process_state(pid), Some('S' | 'R')),
        "resumed after the step"
    );
    assert!(rig.store.open_faults(&id).await.unwrap().is_empty());
    let j = rig.store.journal(&id, 0).await.unwrap();
    let injected = j
        .iter()
        .find_map(|e| match &e.event {
            chaosbot::run::Event::FaultInjected { summary, .. } => Some(summary.clone()),
            _ => None,
        })
        .unwrap();
    assert!(injected.contains(&pid.to_string()), "{injected}");
    reap(child);
}

#[tokio::test]
async fn the_deadline_resumes_a_paused_process_without_any_revert() {
    let rig = rig().await;
    let child = sleeper();
    let pid = pid_of(&child);
    write_pid(rig.dir.path(), pid);
    let step = FaultStep {
        name: "freeze".into(),
        target: "worker".into(),
        duration: Duration::from_secs(30),
        fault: FaultSpec::Process {
            action: ProcessAction::Pause,
        },
    };
    let ctx = InjectContext {
        targets: &rig.targets,
        run_id: "r-test",
        seed: 1,
        deadline: Instant::now() + Duration::from_millis(300),
        events: tokio::sync::mpsc::unbounded_channel().0,
    };
    let prepared = ProcessFaults.prepare(&step, &ctx).await.unwrap();
    let fault = ProcessFaults.inject(&step, &ctx, &prepared).await.unwrap();
    assert_eq!(process_state(pid), Some('T'));
    // The engine side is gone (nobody will call revert): the family's own thread resumes it.
    drop(fault);
    let resumed = tokio::task::spawn_blocking(move || wait_state(pid, 'S', Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(resumed, "still {:?} after the deadline", process_state(pid));
    reap(child);
}

#[tokio::test]
async fn kill_with_restart_signals_then_runs_the_restart_command() {
    let rig = rig().await;
    let mut child = sleeper();
    let pid = pid_of(&child);
    write_pid(rig.dir.path(), pid);
    let exp = experiment(
        vec![],
        vec![process_step(
            "crash-worker",
            "worker",
            ProcessAction::Kill {
                signal: Signal::Kill,
                restart: true,
            },
            500,
        )],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let marker = std::fs::read_to_string(rig.dir.path().join("restarted")).unwrap();
    assert_eq!(marker.trim(), "restarted");
    let new_pid: i32 = std::fs::read_to_string(rig.dir.path().join("worker.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, pid);
    assert!(
        process_state(new_pid).is_some(),
        "the restarted process runs"
    );
    kill_pid(new_pid);
}

/// A restart command that fails is a failed revert: journaled with its exit status, how long it
/// took and its last output, and the run's rollback says so (never "reverted").
#[tokio::test]
async fn a_failing_restart_command_is_a_failed_revert_with_its_reason() {
    let rig = rig().await;
    let mut child = sleeper();
    std::fs::write(
        rig.dir.path().join("broken.pid"),
        format!("{}\n", pid_of(&child)),
    )
    .unwrap();
    let exp = experiment(
        vec![],
        vec![process_step(
            "crash-worker",
            "broken",
            ProcessAction::Kill {
                signal: Signal::Term,
                restart: true,
            },
            300,
        )],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    let _ = child.wait();
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::RevertFailed),
        "{:?}",
        run.reason
    );
    let journal = rig.store.journal(&id, 0).await.unwrap();
    let failed: Vec<String> = journal
        .iter()
        .filter_map(|e| match &e.event {
            chaosbot::run::Event::FaultRevertFailed { step, error, .. }
                if step == "crash-worker" =>
            {
                Some(error.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{journal:#?}");
    let why = &failed[0];
    assert!(why.contains("exited with status 3"), "{why}");
    assert!(why.contains(" after "), "{why}");
    assert!(
        why.contains("starting the worker | no such file: worker.conf"),
        "{why}"
    );
    let reason = run.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("REVERT FAILED for `crash-worker`") && reason.contains("status 3"),
        "the verdict quotes why: {reason}"
    );
    assert!(
        !journal.iter().any(|e| matches!(
            &e.event,
            chaosbot::run::Event::FaultReverted { step, .. } if step == "crash-worker"
        )),
        "a failed restart must not be journaled as reverted: {journal:#?}"
    );
}

#[tokio::test]
async fn a_term_without_restart_ends_the_process() {
    let rig = rig().await;
    let mut child = sleeper();
    write_pid(rig.dir.path(), pid_of(&child));
    let exp = experiment(
        vec![],
        vec![process_step(
            "stop-worker",
            "worker",
            ProcessAction::Kill {
                signal: Signal::Term,
                restart: false,
            },
            200,
        )],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert!(!rig.dir.path().join("restarted").exists());
}

async fn failed_reason(rig: &Rig, target: &str) -> String {
    let exp = experiment(
        vec![],
        vec![process_step("freeze", target, ProcessAction::Pause, 500)],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Failed), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::NothingToRevert));
    run.reason.unwrap()
}

#[tokio::test]
async fn never_signals_init_itself_or_a_process_that_is_gone() {
    let rig = rig().await;
    let r = failed_reason(&rig, "init").await;
    assert!(r.contains("matches no running process"), "{r}");
    assert!(process_state(1).is_some());
    let r = failed_reason(&rig, "me").await;
    assert!(r.contains("matches no running process"), "{r}");
    let r = failed_reason(&rig, "ghost").await;
    assert!(r.contains("no process named `no-such-proc-x`"), "{r}");

    // A pid file left behind by a process that exited.
    let mut child = sleeper();
    let pid = pid_of(&child);
    child.kill().unwrap();
    child.wait().unwrap();
    write_pid(rig.dir.path(), pid);
    let r = failed_reason(&rig, "worker").await;
    assert!(r.contains("matches no running process"), "{r}");
}

#[tokio::test]
async fn a_process_replaced_between_prepare_and_inject_is_not_signalled() {
    let rig = rig().await;
    let mut child = sleeper();
    let pid = pid_of(&child);
    write_pid(rig.dir.path(), pid);
    let step = FaultStep {
        name: "freeze".into(),
        target: "worker".into(),
        duration: Duration::from_secs(5),
        fault: FaultSpec::Process {
            action: ProcessAction::Pause,
        },
    };
    let ctx = InjectContext {
        targets: &rig.targets,
        run_id: "r-test",
        seed: 1,
        deadline: Instant::now() + Duration::from_secs(5),
        events: tokio::sync::mpsc::unbounded_channel().0,
    };
    let mut prepared = ProcessFaults.prepare(&step, &ctx).await.unwrap();
    // Same pid, another start time: what a recycled pid looks like.
    prepared["pids"][0]["start_ticks"] = serde_json::json!(1);
    let err = ProcessFaults
        .inject(&step, &ctx, &prepared)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is gone"), "{err}");
    // Untouched: running or sleeping, never stopped (it may still be starting up).
    let state = process_state(pid);
    assert!(matches!(state, Some('S' | 'R')), "{state:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_process_that_exits_while_paused_ends_the_run_cleanly() {
    let rig = rig().await;
    let mut child = sleeper();
    let pid = pid_of(&child);
    write_pid(rig.dir.path(), pid);
    let exp = experiment(
        vec![],
        vec![process_step("freeze", "worker", ProcessAction::Pause, 1500)],
        vec![],
    );
    let id = rig.engine.submit(&exp, test_request()).await.unwrap();
    let stopped = tokio::task::spawn_blocking(move || wait_state(pid, 'T', Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(stopped);
    child.kill().unwrap();
    child.wait().unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert!(rig.store.open_faults(&id).await.unwrap().is_empty());
}

pub(super) fn write_cli_setup(
    dir: &Path,
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
) -> PathBuf {
    let d = dir.display();
    let config = dir.join("chaosbot.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[guard_rails]
max_run_duration = "5m"

[[targets.proxy]]
name = "api"
listen = "{listen}"
upstream = "{upstream}"

[[targets.http]]
name = "api-http"
url = "http://{listen}"

[[targets.process]]
name = "worker"
pid_file = "{d}/worker.pid"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pause.yaml"),
        r#"
name: pause-worker
title: The API does not need the worker
owner: "@tests"
parameters:
  duration: {type: duration, default: 2m}
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /}
      interval: 500ms
method:
  - name: freeze-worker
    target: worker
    fault: pause
    duration: ${duration}
"#,
    )
    .unwrap();
    config
}

#[tokio::test]
async fn kill_9_while_paused_then_restart_resumes_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let listen = free_port();
    let config = write_cli_setup(dir.path(), listen, svc.addr);
    let db_url = format!("sqlite://{}", dir.path().join("runs.db").display());
    let child = sleeper();
    let pid = pid_of(&child);
    write_pid(dir.path(), pid);
    let cmd = |duration: &str| {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&config)
            .arg("--database-url")
            .arg(&db_url)
            .arg("run")
            .arg(dir.path().join("pause.yaml"))
            .arg("--set")
            .arg(format!("duration={duration}"))
            .env_remove("DATABASE_URL")
            .env_remove("CHAOSBOT_CONFIG")
            .env("CHAOSBOT_AGENT_SOCKET", dir.path().join("agent/agent.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut bot = cmd("2m").spawn().unwrap();
    let stopped =
        tokio::task::spawn_blocking(move || wait_state(pid, 'T', Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(stopped, "the worker was never paused");
    let store = chaosbot::store::open(&db_url).await.unwrap();
    let run_id = store.list_runs(RunFilter::default()).await.unwrap()[0]
        .id
        .clone();
    // The fault record (with the pid) is in the store before the signal was sent.
    let open = store.open_faults(&run_id).await.unwrap();
    // The local agent holds it (its own journal has the pid); the store names agent and id.
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].family, "agent");
    assert_eq!(open[0].detail["family"], "process");
    assert_eq!(
        open[0].detail["fault_id"],
        serde_json::json!(format!("{run_id}/freeze-worker"))
    );

    bot.kill().unwrap(); // SIGKILL: no revert, no deadline thread left.
    bot.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(process_state(pid), Some('T'), "nobody resumed it yet");

    // The next start-up recovers the dead run first (resuming the worker), then runs its own.
    let mut next = cmd("1s");
    let out = tokio::task::spawn_blocking(move || next.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("recovered run {run_id}")), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(matches!(process_state(pid), Some('S' | 'R')), "resumed");
    let run = store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        run.reason
    );
    assert!(store.open_faults(&run_id).await.unwrap().is_empty());
    reap(child);
}
