//! The `chaosbot` binary as an operator uses it: exit codes, messages, Ctrl-C and SIGTERM,
//! and a kill -9 followed by a restart that recovers the run.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::store::{DynStore, RunFilter};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    db_url: String,
    listen: std::net::SocketAddr,
    _service: Service,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let service = service().await;
    let listen = free_port();
    let config = dir.path().join("chaosbot.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[guard_rails]
max_run_duration = "5m"

[[targets.proxy]]
name = "api"
listen = "{listen}"
upstream = "{}"

[[targets.http]]
name = "api-http"
url = "http://{listen}"
"#,
            service.addr
        ),
    )
    .unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("runs.db").display());
    Setup {
        dir,
        config,
        db_url,
        listen,
        _service: service,
    }
}

fn cmd(s: &Setup, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(&s.config)
        .arg("--database-url")
        .arg(&s.db_url)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CHAOSBOT_CONFIG")
        // Each test its own local agent.
        .env(
            "CHAOSBOT_AGENT_SOCKET",
            s.dir.path().join("agent/agent.sock"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn store(s: &Setup) -> DynStore {
    chaosbot::store::open(&s.db_url).await.unwrap()
}

/// Waits (bounded) until the latest run has a fault injected; returns its id.
async fn wait_for_injection(s: &Setup) -> String {
    let store = store(s).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(run) = store.list_runs(RunFilter::default()).await.unwrap().first()
            && let Ok(j) = store.journal(&run.id, 0).await
            && j.iter().any(|e| e.event.kind() == "fault_injected")
        {
            return run.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no fault was injected within 20s");
}

async fn wait_exit(mut child: Child) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut out);
                }
                return (status.code(), out);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("chaosbot did not exit within 30s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn run_exit_codes_follow_the_verdict() {
    let s = setup().await;
    let held = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    assert_eq!(held.status.code(), Some(0), "{}", text(&held));
    assert!(text(&held).contains("Verdict: HELD"), "{}", text(&held));

    let json = s.dir.path().join("journal.json");
    let deviated = output(cmd(
        &s,
        &[
            "run",
            &example("api-outage.yaml"),
            "--set",
            "duration=1s",
            "--json",
            json.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(deviated.status.code(), Some(1), "{}", text(&deviated));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["run"]["verdict"], "deviated");
    assert!(doc["journal"].as_array().unwrap().len() > 5);

    let hist = output(cmd(&s, &["history"])).await;
    assert_eq!(hist.status.code(), Some(0));
    let h = text(&hist);
    assert!(
        h.contains("api-latency") && h.contains("api-outage") && h.contains("deviated"),
        "{h}"
    );
    let id = doc["run"]["id"].as_str().unwrap();
    let show = output(cmd(&s, &["show", id])).await;
    assert!(text(&show).contains("Verdict: DEVIATED"), "{}", text(&show));
    let missing = output(cmd(&s, &["show", "r-nope"])).await;
    assert_eq!(missing.status.code(), Some(64));
    assert!(text(&missing).contains("no run `r-nope`"));
}

#[tokio::test]
async fn invalid_input_exits_64_and_runs_nothing() {
    let s = setup().await;
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\ntitle: t\nowner: me\nhypothesis:\n  probes:\n    - name: p\n      tcp: {target: api}\nmethod:\n  - name: s\n    target: paymnts\n    fault: latency\n    latency: 10ms\n    durration: 5s\n",
    )
    .unwrap();
    let v = output(cmd(&s, &["validate", bad.to_str().unwrap()])).await;
    assert_eq!(v.status.code(), Some(64));
    let t = text(&v);
    assert!(t.contains("bad.yaml:10:13") && t.contains("paymnts"), "{t}");
    assert!(t.contains("did you mean `duration`"), "{t}");

    let r = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "latency=5m"],
    ))
    .await;
    assert_eq!(r.status.code(), Some(64), "{}", text(&r));
    assert!(text(&r).contains("latency"), "{}", text(&r));
    let store = store(&s).await;
    assert!(
        store
            .list_runs(RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    let db = output({
        let mut c = cmd(&s, &["history"]);
        c.arg("--database-url").arg("mysql://nowhere/x");
        c
    })
    .await;
    assert_ne!(db.status.code(), Some(0));
    assert!(text(&db).contains("DATABASE_URL"), "{}", text(&db));
}

#[tokio::test]
async fn a_port_in_use_fails_the_run_before_anything_is_injected() {
    let s = setup().await;
    let _squatter = std::net::TcpListener::bind(s.listen).unwrap();
    let r = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("cannot listen on"), "{}", text(&r));
    let store = store(&s).await;
    let run = store
        .list_runs(RunFilter::default())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(run.verdict, Some(Verdict::Failed));
    let j = store.journal(&run.id, 0).await.unwrap();
    assert!(j.iter().all(|e| e.event.kind() != "fault_injected"));
}

async fn interrupt_test(sig: i32, expect_reason: &str) {
    let s = setup().await;
    let child = cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=2m"],
    )
    .spawn()
    .unwrap();
    let id = wait_for_injection(&s).await;
    signal(&child, sig);
    let (code, out) = wait_exit(child).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("Verdict: ABORTED"), "{out}");
    let store = store(&s).await;
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert!(
        run.reason.as_deref().unwrap().contains(expect_reason),
        "{:?}",
        run.reason
    );
    assert!(store.open_faults(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn ctrl_c_aborts_cleanly_and_prints_the_report() {
    interrupt_test(libc::SIGINT, "Ctrl-C").await;
}

#[tokio::test]
async fn sigterm_reverts_and_journals_before_exit() {
    interrupt_test(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test]
async fn kill_9_then_restart_recovers_the_run() {
    let s = setup().await;
    let child = cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=2m"],
    )
    .spawn()
    .unwrap();
    let id = wait_for_injection(&s).await;
    signal(&child, libc::SIGKILL);
    let (code, _) = wait_exit(child).await;
    assert_eq!(code, None, "killed by a signal");
    let store = store(&s).await;
    let left = store.get_run(&id).await.unwrap().unwrap();
    assert!(left.state.is_active(), "{:?}", left.state);
    assert_eq!(store.open_faults(&id).await.unwrap().len(), 1);

    // The next start-up recovers it before doing anything else.
    let next = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    assert_eq!(next.status.code(), Some(0), "{}", text(&next));
    assert!(
        text(&next).contains(&format!("recovered run {id}")),
        "{}",
        text(&next)
    );
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        run.reason
    );
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("stopped while the run was"),
        "{:?}",
        run.reason
    );
    let j = store.journal(&id, 0).await.unwrap();
    assert!(j.iter().any(|e| e.event.kind() == "recovered"));
    assert!(store.open_faults(&id).await.unwrap().is_empty());
}

/// kill -9 of `chaosbot run` at moments spread over a run's life (start-up, steady state,
/// the fault in place, its revert, the verification after), each moved by a seeded random
/// jitter, the last one near the revert (`CHAOSBOT_TEST_SEED` to replay one): every time, the next start recovers what was
/// left, so no run stays open, no fault stays recorded as in place, and the next run's steady
/// state is met (its objective is 200 ms: the 300 ms of latency, if left, would break it).
#[tokio::test]
async fn kill_9_at_any_moment_then_the_next_start_leaves_nothing_open() {
    use rand::{RngExt, SeedableRng};
    let seed: u64 = std::env::var("CHAOSBOT_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| chaosbot::run::now_ms() as u64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let s = setup().await;
    let store = store(&s).await;
    let strict = s.dir.path().join("api-latency-strict.yaml");
    let example_text = std::fs::read_to_string(example("api-latency.yaml")).unwrap();
    assert!(example_text.contains("max_latency: 500ms"));
    std::fs::write(
        &strict,
        example_text.replace("max_latency: 500ms", "max_latency: 200ms"),
    )
    .unwrap();
    let mut moments = Vec::new();
    // The run takes about 2.2 s: start-up and steady state to ~0.1 s, the fault to ~2.1 s,
    // then the revert and the verification (a few ms each).
    for base_ms in [0u64, 300, 600, 900, 1_200, 1_500, 1_800, 2_050] {
        let at = Duration::from_millis(base_ms + rng.random_range(0..300));
        let started_ms = chaosbot::run::now_ms();
        let child = cmd(
            &s,
            &[
                "run",
                &example("api-latency.yaml"),
                "--set",
                "duration=2s",
                "--set",
                "latency=300ms",
            ],
        )
        .spawn()
        .unwrap();
        tokio::time::sleep(at).await;
        signal(&child, libc::SIGKILL);
        let (code, out) = wait_exit(child).await;
        let killed = store.list_runs(RunFilter::default()).await.unwrap();
        let open: Vec<String> = killed
            .iter()
            .filter(|r| r.state.is_active())
            .map(|r| r.id.clone())
            .collect();
        // Where the kill landed: the killed run's last journal entry (none: before it began).
        let landed = match killed.first().filter(|r| r.created_ms > started_ms) {
            Some(r) => store
                .journal(&r.id, 0)
                .await
                .unwrap()
                .last()
                .map(|e| e.event.kind().to_string())
                .unwrap_or_default(),
            None => "before the run".into(),
        };
        moments.push((at, landed));

        let next = output(cmd(
            &s,
            &[
                "run",
                strict.to_str().unwrap(),
                "--set",
                "duration=1s",
                "--set",
                "latency=0ms",
            ],
        ))
        .await;
        let t = text(&next);
        let context = format!("seed {seed}, killed at {at:?} (exit {code:?}): {out}\n---\n{t}");
        assert_eq!(next.status.code(), Some(0), "the next run holds: {context}");
        for id in &open {
            assert!(t.contains(&format!("recovered run {id}")), "{context}");
        }
        for run in store.list_runs(RunFilter::default()).await.unwrap() {
            assert_eq!(run.state, RunState::Done, "{} is closed: {context}", run.id);
            assert!(
                store.open_faults(&run.id).await.unwrap().is_empty(),
                "{} has no fault in place: {context}",
                run.id
            );
            assert_ne!(
                run.rollback,
                Some(RollbackOutcome::RevertFailed),
                "{}: {:?}: {context}",
                run.id,
                run.reason
            );
        }
    }
    eprintln!("seed {seed}: killed at {moments:?}");
}

#[tokio::test]
async fn demo_runs_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = output({
        let mut c = Command::new(BIN);
        c.current_dir(dir.path())
            .args(["demo", "--set", "duration=2s"])
            .env("CHAOSBOT_AGENT_SOCKET", dir.path().join("agent/agent.sock"))
            .env_remove("DATABASE_URL")
            .env_remove("CHAOSBOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    })
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("Verdict: DEVIATED") && t.contains("Rollback: reverted"),
        "{t}"
    );
    assert!(
        dir.path().join("chaosbot.db").exists(),
        "the default SQLite store is created"
    );
}

#[tokio::test]
async fn report_exports_the_learning_record_as_markdown_and_json() {
    use chaosbot::store::learning::{Answer, LearningKind, NewQuestion};
    let s = setup().await;
    let json_out = s.dir.path().join("journal.json");
    let ran = output(cmd(
        &s,
        &[
            "run",
            &example("api-outage.yaml"),
            "--set",
            "duration=1s",
            "--json",
            json_out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let id = doc["run"]["id"].as_str().unwrap().to_string();

    // The thread's Q&A and the team's notes, as the Slack side stores them.
    let st = store(&s).await;
    let ask = |ts: &str, by: &str, text: &str, at: i64| NewQuestion {
        run_id: id.clone(),
        channel: "C1".into(),
        ts: ts.into(),
        asked_by: by.into(),
        text: text.into(),
        asked_ms: at,
    };
    let (q_auto, _) = st
        .add_question(&ask("1.1", "UASK1", "how long did detection take?", 1_000))
        .await
        .unwrap();
    let (q_person, _) = st
        .add_question(&ask("1.2", "UASK2", "why no retry?", 2_000))
        .await
        .unwrap();
    let (q_open, _) = st
        .add_question(&ask("1.3", "UASK3", "is prod the same?", 3_000))
        .await
        .unwrap();
    for voter in ["U1", "U2", "U3"] {
        st.add_vote(q_person.id, voter, 4_000).await.unwrap();
    }
    st.add_vote(q_open.id, "U1", 4_000).await.unwrap();
    st.answer_question(
        q_auto.id,
        &Answer {
            text: "detection took 0.4 s (journal)".into(),
            by: "chaosbot".into(),
            at_ms: 5_000,
            auto: true,
        },
    )
    .await
    .unwrap();
    st.answer_question(
        q_person.id,
        &Answer {
            text: "the client has no retry budget".into(),
            by: "USPEAKER".into(),
            at_ms: 6_000,
            auto: false,
        },
    )
    .await
    .unwrap();
    st.add_learning(
        &id,
        LearningKind::Learned,
        "outages surface in 1 s",
        "USPEAKER",
        7_000,
    )
    .await
    .unwrap();
    st.add_learning(
        &id,
        LearningKind::Change,
        "add a retry budget",
        "USPEAKER",
        8_000,
    )
    .await
    .unwrap();
    let run = st.get_run(&id).await.unwrap().unwrap();
    let journal = st.journal(&id, 0).await.unwrap();
    let summary = chaosbot::report::summarize(&run, &journal);

    // JSON to a file.
    let rec_path = s.dir.path().join("record.json");
    let out = output(cmd(
        &s,
        &[
            "report",
            &id,
            "--format",
            "json",
            "--output",
            rec_path.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec_path).unwrap()).unwrap();
    assert_eq!(rec["schema_version"], 1);
    assert_eq!(rec["run"]["id"], id.as_str());
    assert_eq!(rec["run"]["experiment"], "api-outage");
    assert_eq!(rec["run"]["state"], "done");
    assert_eq!(rec["run"]["created_ms"], run.created_ms);
    assert_eq!(rec["definition"], run.spec, "the resolved experiment");
    assert_eq!(rec["definition"]["name"], "api-outage");
    assert_eq!(rec["parameters"]["duration"], "1s");
    assert_eq!(rec["seed"], run.seed);
    assert_eq!(rec["outcome"]["verdict"], "deviated");
    assert_eq!(rec["outcome"]["rollback"], "reverted");
    assert_eq!(
        rec["numbers"]["time_to_detect_ms"],
        serde_json::json!(summary.time_to_detect_ms)
    );
    assert!(summary.time_to_detect_ms.is_some(), "an outage is detected");
    assert_eq!(
        rec["numbers"]["time_to_recover_ms"],
        serde_json::json!(summary.time_to_recover_ms)
    );
    let probes = rec["numbers"]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), summary.probes.len());
    assert!(probes[0]["during"]["failed"].as_u64().unwrap() > 0);
    assert_eq!(
        probes[0]["before"]["samples"].as_u64().unwrap(),
        summary.probes[0].before.samples
    );
    let timeline = rec["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), summary.timeline.len());
    assert_eq!(timeline[0]["at_ms"], journal[0].at_ms);
    assert!(
        timeline
            .iter()
            .any(|t| t["text"].as_str().unwrap().starts_with("verdict: deviated"))
    );
    let qs = rec["questions"].as_array().unwrap();
    let order: Vec<i64> = qs.iter().map(|q| q["id"].as_i64().unwrap()).collect();
    assert_eq!(
        order,
        [q_person.id, q_open.id, q_auto.id],
        "most votes first, then oldest"
    );
    assert_eq!(qs[0]["votes"], 3);
    assert_eq!(qs[0]["asked_by"], "UASK2");
    assert_eq!(qs[0]["asked_ms"], 2_000);
    assert_eq!(qs[0]["answer"]["by"], "USPEAKER");
    assert_eq!(qs[0]["answer"]["auto"], false);
    assert_eq!(qs[0]["answer"]["at_ms"], 6_000);
    assert!(qs[1]["answer"].is_null());
    assert_eq!(qs[2]["answer"]["auto"], true);
    let notes: Vec<(&str, &str)> = rec["learnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        notes,
        [
            ("learned", "outages surface in 1 s"),
            ("change", "add a retry budget")
        ]
    );

    // Markdown on stdout (the default).
    let md = output(cmd(&s, &["report", &id])).await;
    assert_eq!(md.status.code(), Some(0), "{}", text(&md));
    let md = String::from_utf8_lossy(&md.stdout).to_string();
    for needle in [
        format!("# Learning record: run `{id}`"),
        "Verdict: **DEVIATED**".to_string(),
        format!("Seed: `{}`", run.seed),
        "`duration` = `1s`".to_string(),
        "## Timeline".to_string(),
        "why no retry? — asked by UASK2".to_string(),
        "the client has no retry budget — USPEAKER".to_string(),
        "(answered automatically from the journal)".to_string(),
        "_not answered yet_".to_string(),
        "## What we learned\n\n- outages surface in 1 s".to_string(),
        "## What we change\n\n- add a retry budget".to_string(),
        "\"name\": \"api-outage\"".to_string(),
    ] {
        assert!(md.contains(&needle), "missing {needle:?} in:\n{md}");
    }

    // Markdown into a folder: `<run>.md` with the chart beside it, linked relatively.
    let folder = s.dir.path().join("records");
    std::fs::create_dir(&folder).unwrap();
    let out = output(cmd(
        &s,
        &[
            "report",
            &id,
            "--format",
            "md",
            "--output",
            folder.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let md = std::fs::read_to_string(folder.join(format!("{id}.md"))).unwrap();
    let link = format!("![Run chart of `{id}`]({id}.svg)");
    assert!(md.contains(&link), "{md}");
    assert!(md.starts_with(&format!("# Learning record: run `{id}`")));
    let svg = std::fs::read_to_string(folder.join(format!("{id}.svg"))).unwrap();
    assert!(svg.starts_with("<svg"));
    for needle in [
        "probe api-ok",
        "probe api-port",
        "api-down (down)",
        "DEVIATED",
    ] {
        assert!(svg.contains(needle), "the chart lacks {needle:?}");
    }
    // A folder path that does not exist yet (trailing slash) is made.
    let fresh = format!("{}/", s.dir.path().join("new-folder").display());
    let out = output(cmd(&s, &["report", &id, "--output", &fresh])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(s.dir.path().join(format!("new-folder/{id}.svg")).is_file());
    assert!(s.dir.path().join(format!("new-folder/{id}.md")).is_file());

    // A run that does not exist: exit 64 and a pointer to `history`.
    let missing = output(cmd(&s, &["report", "r-nope", "--format", "json"])).await;
    assert_eq!(missing.status.code(), Some(64));
    assert!(text(&missing).contains("no run `r-nope`"));
    // An output file that cannot be written: exit 2 and what to check.
    let bad = output(cmd(
        &s,
        &["report", &id, "--output", "/nonexistent-dir/record.md"],
    ))
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("folder exists"), "{}", text(&bad));
}

#[tokio::test]
async fn abort_all_halts_runs_until_resume() {
    let s = setup().await;
    let halted = output(cmd(
        &s,
        &["abort", "all", "--reason", "incident", "--by", "ops"],
    ))
    .await;
    assert!(halted.status.success(), "{}", text(&halted));
    assert!(text(&halted).contains("halt in force"), "{}", text(&halted));

    // While the halt holds, nothing runs: no run is created, exit code 2.
    let refused = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("a halt is in force (by ops: incident)"),
        "{}",
        text(&refused)
    );
    assert!(
        store(&s)
            .await
            .list_runs(RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // The same halt holds for Slack and schedules: it is one row in the store.
    let halt = store(&s).await.current_halt().await.unwrap().unwrap();
    assert_eq!(
        (halt.halted_by.as_str(), halt.reason.as_str()),
        ("ops", "incident")
    );

    let resumed = output(cmd(&s, &["resume", "--by", "ops"])).await;
    assert!(text(&resumed).contains("halt lifted"), "{}", text(&resumed));
    let again = output(cmd(&s, &["resume"])).await;
    assert!(
        text(&again).contains("no halt is in force"),
        "{}",
        text(&again)
    );
    let ran = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    assert!(
        ran.status.code() == Some(0),
        "runs again after resume: {}",
        text(&ran)
    );
}

/// One run per target from two terminals: a second `chaosbot run` on a target that a running
/// run holds is refused (exit 2) naming the holder and how to wait or abort; with `--wait` it
/// waits in the queue (saying behind what) and runs once the holder is done.
#[tokio::test]
async fn a_held_target_refuses_a_second_run_or_makes_it_wait() {
    let s = setup().await;
    let first = cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=3s"],
    )
    .spawn()
    .unwrap();
    let holder = wait_for_injection(&s).await;

    let refused = output(cmd(
        &s,
        &["run", &example("api-latency.yaml"), "--set", "duration=1s"],
    ))
    .await;
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("target `api` is held by run {holder}")),
        "{out}"
    );
    assert!(out.contains("--wait"), "{out}");
    assert!(out.contains(&format!("chaosbot abort {holder}")), "{out}");
    assert!(!out.contains("address already in use"), "{out}");

    let waiting = cmd(
        &s,
        &[
            "run",
            &example("api-latency.yaml"),
            "--set",
            "duration=1s",
            "--wait",
            "1m",
        ],
    )
    .spawn()
    .unwrap();
    let (first_code, first_out) = wait_exit(first).await;
    assert_eq!(first_code, Some(0), "{first_out}");
    let (code, out) = wait_exit(waiting).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("waiting: `api` is held by run {holder}")),
        "{out}"
    );
    let store = store(&s).await;
    let runs = store.list_runs(RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 2, "the refused run created nothing: {runs:#?}");
    let (later, first) = (&runs[0], &runs[1]);
    assert_eq!(first.id, holder);
    assert!(
        later.started_ms.unwrap() >= first.finished_ms.unwrap(),
        "the waiting run started only once the holder was done"
    );
}

/// `chaosbot page-link` prints an operator link that the server's key accepts for the list
/// (and only for it), or one run's link; without a key it says which settings give one.
#[test]
fn page_link_prints_a_link_the_server_accepts() {
    use chaosbot::web::link::{Links, Scope};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chaosbot.toml");
    std::fs::write(
        &config,
        "[server]\npublic_url = \"https://chaos.example.com/\"\npage_secret = \"0123456789abcdef-page\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("SLACK_SIGNING_SECRET")
            .env_remove("CHAOSBOT_PAGE_SECRET")
            .env_remove("CHAOSBOT_PUBLIC_URL")
            .output()
            .unwrap()
    };
    let cfg = chaosbot::config::Config::from_file(&config).unwrap();
    let links = Links::from_config(&cfg).unwrap();
    let query = |url: &str, key: &str| -> String {
        let at = url.find(&format!("{key}=")).unwrap() + key.len() + 1;
        url[at..].split('&').next().unwrap().to_string()
    };

    let out = run(&["page-link", "--ttl", "2h"]);
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        url.starts_with("https://chaos.example.com/runs?exp="),
        "{url}"
    );
    let (exp, sig) = (query(&url, "exp"), query(&url, "sig"));
    let now = chaosbot::run::now_ms() / 1000;
    let e: i64 = exp.parse().unwrap();
    assert!((e - now - 7200).abs() < 60, "two hours from now: {e}");
    assert_eq!(
        links.verify(&Scope::Runs, Some(&exp), Some(&sig), now),
        Ok(())
    );
    assert!(
        links
            .verify(&Scope::Run("r-x"), Some(&exp), Some(&sig), now)
            .is_err()
    );

    let out = run(&["page-link", "r-abc123defg"]);
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.starts_with("https://chaos.example.com/runs/r-abc123defg?exp="));
    let (exp, sig) = (query(&url, "exp"), query(&url, "sig"));
    assert_eq!(
        links.verify(&Scope::Run("r-abc123defg"), Some(&exp), Some(&sig), now),
        Ok(())
    );

    let out = run(&["page-link", "--ttl", "90d"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 31 days"));

    std::fs::write(&config, "").unwrap();
    let out = run(&["page-link"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("page_secret"));
}
