//! Three `chaosbot serve` replicas on one Postgres database, with one local agent (the agent
//! is per host) and the fake Slack: 20 runs started through the three of them run at once,
//! spread over them; one replica is killed with `kill -9` mid-run and the others close its
//! runs (`aborted`, "owner lost", faults reverted through the agent); an abort given to one
//! replica halts a run another one owns, and so does a halt (`abort all`); every thread is
//! delivered whole, no reply twice.
//! Needs `TEST_POSTGRES_URL` (skipped with a notice otherwise).

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaosbot::run::{Event, Verdict, now_ms};
use chaosbot::slack::{render, run_parent_key};
use chaosbot::store::DynStore;
use support::app::{OPERATOR, TEAM, TestApp, replies, run_id_in};
use support::fake_slack::Call;
use support::*;

const SECRET: &str = "replicas-signing-secret";
const RUNS: usize = 20;
const REPLICAS: usize = 3;
/// The engine's run lease (`EngineOptions::lease`): a dead owner's runs are taken over
/// within it (at once when its process is known dead on this host).
const RUN_LEASE: Duration = Duration::from_secs(15);

/// One replica test at a time: each starts three `chaosbot serve` processes and a local agent,
/// which side by side on two cores starve each other's start-up. (Connections are kept small
/// too: each replica's pool is 4, `CHAOSBOT_DATABASE_POOL`.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn experiment_yaml(i: usize) -> String {
    format!(
        r#"
name: exp-{i}
title: Target {i} stays fast with 20 ms of latency
owner: "@sre"
parameters:
  duration: {{type: duration, default: 2s, min: 1s, max: 2m}}
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: ok
      http: {{endpoint: h{i}, path: /, status: 200, max_latency: 2s}}
      interval: 500ms
method:
  - name: slow
    target: t{i}
    fault: latency
    latency: 20ms
    duration: ${{duration}}
"#
    )
}

fn config_toml(upstream: SocketAddr, proxies: &[SocketAddr]) -> String {
    let mut t = String::from(
        "catalog = \"experiments\"\n[guard_rails]\nmax_concurrent_runs = 40\nworker_pool_size = 10\n",
    );
    for (i, listen) in proxies.iter().enumerate() {
        t.push_str(&format!(
            "[[targets.proxy]]\nname = \"t{i}\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n\
             [[targets.http]]\nname = \"h{i}\"\nurl = \"http://{listen}\"\n"
        ));
    }
    t.push_str(&format!(
        "[slack]\nteam_id = \"{TEAM}\"\npost_interval = \"20ms\"\noperators = [\"{OPERATOR}\"]\n[[slack.allow]]\nexperiments = [\"*\"]\n"
    ));
    t
}

/// A `chaosbot serve` child, killed when the test ends (passing or not).
struct Replica {
    child: Child,
    addr: SocketAddr,
    /// Its stderr (logs), quoted when it fails to start.
    log: std::path::PathBuf,
}

impl Replica {
    async fn wait_listening(&self) {
        wait_serving(self.addr, Some(&self.log)).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chaosbot serve` on `addr` with the rig's config, database and local agent.
fn spawn_replica(rig: &TestApp, config: &std::path::Path, url: &str, addr: SocketAddr) -> Replica {
    let socket = rig.dir.path().join("agent/agent.sock");
    let log = rig.dir.path().join(format!("serve-{}.log", addr.port()));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    Replica {
        child: Command::new(env!("CARGO_BIN_EXE_chaosbot"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .current_dir(rig.dir.path())
            .env("DATABASE_URL", url)
            .env("SLACK_SIGNING_SECRET", SECRET)
            .env("SLACK_BOT_TOKEN", "xoxb-replicas")
            .env("SLACK_API_URL", rig.fake.url())
            .env("CHAOSBOT_LISTEN", addr.to_string())
            .env("CHAOSBOT_AGENT_SOCKET", &socket)
            // Three replicas and the test's own pools stay well inside the server's
            // `max_connections` (100), even beside another test's.
            .env("CHAOSBOT_DATABASE_POOL", "4")
            .env("RUST_LOG", "chaosbot=info")
            .env_remove("SLACK_APP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
        addr,
        log,
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The thread the journal says the run should have: its replies, then the summary.
async fn expected_replies(store: &DynStore, id: &str) -> Vec<String> {
    let run = store.get_run(id).await.unwrap().unwrap();
    let journal = store.journal(id, 0).await.unwrap();
    let mut texts: Vec<String> = journal
        .iter()
        .filter_map(render::thread_reply)
        .map(|r| r.text)
        .collect();
    let summary = render::summary(&chaosbot::report::summarize(&run, &journal));
    for _ in summary.pages() {
        texts.push(summary.text.clone());
    }
    texts
}

/// The replies delivered in the run's thread, up to and with its summary.
fn delivered_replies(calls: &[Call], ts: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in replies(calls, Some(ts)) {
        let t = c.str("text").unwrap_or_default().to_string();
        if t.starts_with("Q&A on run") {
            continue;
        }
        out.push(t);
    }
    out
}

/// `lines` with immediate repeats dropped.
fn collapse(mut lines: Vec<String>) -> Vec<String> {
    lines.dedup();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_runs_survive_a_kill_9_and_honour_each_others_aborts_and_halts() {
    let _one = ONE_AT_A_TIME.lock().await;
    with_postgres(|url| async move {
        let mut rig = TestApp::new(SECRET).await;
        rig.cfg.database_url = Some(url.clone());
        for i in 0..RUNS {
            rig.add_to_catalog(&format!("exp-{i}.yaml"), &experiment_yaml(i));
        }
        let proxies: Vec<SocketAddr> = (0..RUNS).map(|_| free_port()).collect();
        let config = rig.dir.path().join("chaosbot.toml");
        std::fs::write(&config, config_toml(rig.service.addr, &proxies)).unwrap();
        let spawn = |addr: SocketAddr| spawn_replica(&rig, &config, &url, addr);
        let mut replicas: Vec<Replica> = (0..REPLICAS).map(|_| spawn(free_port())).collect();
        for r in &replicas {
            r.wait_listening().await;
        }
        let store = rig.store().await;

        // 20 runs, started through the three replicas in turn.
        let mut ids = Vec::new();
        for i in 0..RUNS {
            let addr = replicas[i % REPLICAS].addr;
            let answer = rig
                .slash(addr, &format!("U{i}"), &format!("start exp-{i} duration=12s"))
                .await;
            ids.push(run_id_in(&answer.to_string()));
        }
        // All in flight at once, each fault in place.
        let owners: HashMap<String, String> = until(Duration::from_secs(20), "20 faults", || {
            let (store, ids) = (&store, &ids);
            async move {
                let mut owners = HashMap::new();
                for id in ids {
                    let j = store.journal(id, 0).await.unwrap();
                    if !j.iter().any(|e| e.event.kind() == "fault_injected") {
                        return None;
                    }
                    let run = store.get_run(id).await.unwrap().unwrap();
                    owners.insert(id.clone(), run.owner?);
                }
                Some(owners)
            }
        })
        .await;
        let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, owner) in &owners {
            by_owner.entry(owner.as_str()).or_default().push(id.as_str());
        }
        assert!(by_owner.len() >= 2, "runs spread over replicas: {by_owner:?}");
        let pid_of = |owner: &str| -> u32 { owner.split('/').nth(1).unwrap().parse().unwrap() };

        // kill -9 the replica that owns the most runs.
        let (victim_owner, victim_runs) = by_owner
            .iter()
            .max_by_key(|(_, runs)| runs.len())
            .map(|(o, r)| (o.to_string(), r.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
            .unwrap();
        let victim = replicas
            .iter()
            .position(|r| r.child.id() == pid_of(&victim_owner))
            .expect("the owner is one of the replicas");
        let mut dead = replicas.remove(victim);
        let killed_ms = now_ms();
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();

        // Aborts given to one live replica (A) for the runs the other live one (B) owns.
        let owns = |r: &Replica| owners.values().any(|o| pid_of(o) == r.child.id());
        let b = replicas
            .iter()
            .position(owns)
            .expect("a live replica owns runs");
        let (a, b) = (&replicas[1 - b], &replicas[b]);
        let aborted: Vec<String> = owners
            .iter()
            .filter(|(_, o)| pid_of(o) == b.child.id())
            .map(|(id, _)| id.clone())
            .collect();
        let mut abort_to_revert_ms = Vec::new();
        for id in &aborted {
            let starter = format!("U{}", ids.iter().position(|x| x == id).unwrap());
            let asked_ms = now_ms();
            let (status, body) = rig.press(a.addr, &starter, "abort_run", id).await;
            assert_eq!(status, 200, "{body}");
            let reverted_at = until(Duration::from_secs(10), "the abort's revert", || {
                let store = &store;
                async move {
                    store
                        .journal(id, 0)
                        .await
                        .unwrap()
                        .iter()
                        .find(|e| e.event.kind() == "fault_reverted")
                        .map(|e| e.at_ms)
                }
            })
            .await;
            abort_to_revert_ms.push(reverted_at - asked_ms);
        }

        // The dead replica's runs: taken over, reverted through the agent, closed.
        let mut takeover_ms = Vec::new();
        for id in &victim_runs {
            let run = until(RUN_LEASE + Duration::from_secs(10), "the takeover", || {
                let store = &store;
                async move {
                    let run = store.get_run(id).await.unwrap().unwrap();
                    run.finished_ms.map(|_| run)
                }
            })
            .await;
            assert_eq!(run.verdict, Some(Verdict::Aborted), "{:?}", run.reason);
            let reason = run.reason.clone().unwrap_or_default();
            assert!(reason.starts_with("owner lost"), "{reason}");
            let j = store.journal(id, 0).await.unwrap();
            let first_new = j
                .iter()
                .find(|e| e.at_ms >= killed_ms)
                .expect("the new owner journals");
            takeover_ms.push(first_new.at_ms - killed_ms);
            assert!(
                j.iter().any(|e| matches!(e.event, Event::Recovered { faults_reverted: 1, .. })),
                "the fault was reverted on recovery: {j:#?}"
            );
        }

        // The runs still going are A's: a halt (`abort all`) given to B reaches them, and a
        // start asked of A is refused while it holds.
        let still: Vec<String> = {
            let mut v = Vec::new();
            for id in &ids {
                if store.get_run(id).await.unwrap().unwrap().finished_ms.is_none() {
                    v.push(id.clone());
                }
            }
            v
        };
        let halted_ms = now_ms();
        let answer = rig.slash(b.addr, OPERATOR, "abort all release freeze").await;
        assert!(answer.to_string().contains("halt"), "{answer}");
        let mut halt_to_close_ms = Vec::new();
        for id in &still {
            let run = until(Duration::from_secs(10), "the halt to close the run", || {
                let store = &store;
                async move {
                    let run = store.get_run(id).await.unwrap().unwrap();
                    run.finished_ms.map(|_| run)
                }
            })
            .await;
            assert_eq!(run.verdict, Some(Verdict::Aborted), "{:?}", run.reason);
            halt_to_close_ms.push(run.finished_ms.unwrap_or_default() - halted_ms);
        }
        let refused = rig.slash(a.addr, "U0", "start exp-0 duration=2s").await;
        assert!(
            !refused.to_string().contains("r-"),
            "a start during the halt: {refused}"
        );

        // Everything ends; each thread is whole, once.
        for id in &ids {
            until(Duration::from_secs(40), "every run to finish", || {
                let store = &store;
                async move { store.get_run(id).await.unwrap().unwrap().finished_ms }
            })
            .await;
        }
        let mut threads = HashMap::new();
        for id in &ids {
            let expected = expected_replies(&store, id).await;
            let parent = until(Duration::from_secs(20), "the parent message", || {
                let store = &store;
                async move { store.message_ref(&run_parent_key(id)).await.unwrap() }
            })
            .await;
            let calls = rig
                .fake
                .wait_for(
                    |c| delivered_replies(c, &parent.ts).len() >= expected.len(),
                    Duration::from_secs(30),
                )
                .await;
            threads.insert(id.clone(), (parent.ts.clone(), expected));
            let _ = calls;
        }
        // A moment for any duplicate to show up, then compare every thread.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls = rig.fake.calls();
        for (id, (ts, expected)) in &threads {
            assert_eq!(
                &delivered_replies(&calls, ts),
                expected,
                "the thread of {id} is whole, once"
            );
            let parents: Vec<String> = calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.status == 200)
                .filter(|c| c.body.get("thread_ts").is_none())
                .filter(|c| c.body.to_string().contains(id.as_str()))
                .map(|c| c.str("text").unwrap_or_default().to_string())
                .collect();
            assert_eq!(parents.len(), 1, "one parent message for {id}: {parents:#?}");
        }
        for id in &aborted {
            let run = store.get_run(id).await.unwrap().unwrap();
            assert_eq!(run.verdict, Some(Verdict::Aborted), "{:?}", run.reason);
            let reason = run.reason.unwrap_or_default();
            assert!(reason.starts_with("aborted by"), "{reason}");
        }
        for id in &ids {
            assert!(
                store.open_faults(id).await.unwrap().is_empty(),
                "run {id} left a fault open"
            );
        }
        // The issue's bounds: takeover within the lease + 2 s. The abort's bound (100 ms p99) is
        // measured, not asserted, on a shared machine; far below the 2 s sweep, it shows the
        // wake-up carried it.
        let limit = (RUN_LEASE + Duration::from_secs(2)).as_millis() as i64;
        assert!(takeover_ms.iter().all(|t| *t <= limit), "{takeover_ms:?}");
        assert!(!abort_to_revert_ms.is_empty());
        assert!(
            abort_to_revert_ms.iter().all(|t| *t < 1000),
            "{abort_to_revert_ms:?}"
        );
        eprintln!(
            "runs per owner: {:?}; killed {} runs; takeover (kill to the new owner's first journal entry) ms: {takeover_ms:?}; abort on A to revert on B ms: {abort_to_revert_ms:?}; halt on B to A's runs closed ms: {halt_to_close_ms:?}",
            by_owner.values().map(Vec::len).collect::<Vec<_>>(),
            victim_runs.len()
        );
        for r in &replicas {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    })
    .await;
}

/// A replica that stops (SIGSTOP) loses its run's lease; another replica takes the run over
/// under a raised epoch, reverts its fault through the agent and closes it "owner lost". When
/// the stopped replica comes back (SIGCONT) it cannot write: the journal ends at the new
/// owner's verdict, and the thread is whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lost_its_lease_and_comes_back_cannot_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    with_postgres(|url| async move {
        let mut rig = TestApp::new(SECRET).await;
        rig.cfg.database_url = Some(url.clone());
        rig.add_to_catalog("exp-0.yaml", &experiment_yaml(0));
        let proxies = vec![free_port()];
        let config = rig.dir.path().join("chaosbot.toml");
        std::fs::write(&config, config_toml(rig.service.addr, &proxies)).unwrap();
        let spawn = |addr: SocketAddr| spawn_replica(&rig, &config, &url, addr);
        let replicas: Vec<Replica> = (0..2).map(|_| spawn(free_port())).collect();
        for r in &replicas {
            r.wait_listening().await;
        }
        let store = rig.store().await;
        let answer = rig
            .slash(replicas[0].addr, "U0", "start exp-0 duration=60s")
            .await;
        let id = run_id_in(&answer.to_string());
        let claimed = until(Duration::from_secs(20), "the fault", || {
            let (store, id) = (&store, &id);
            async move {
                let j = store.journal(id, 0).await.unwrap();
                j.iter()
                    .any(|e| e.event.kind() == "fault_injected")
                    .then_some(())?;
                store.get_run(id).await.unwrap()
            }
        })
        .await;
        let owner_pid: u32 = claimed
            .owner
            .as_deref()
            .and_then(|o| o.split('/').nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap();
        let stopped = replicas
            .iter()
            .find(|r| r.child.id() == owner_pid)
            .expect("a replica owns the run");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(stopped.child.id() as libc::pid_t, libc::SIGSTOP) };
        let stopped_at = Instant::now();

        let run = until(RUN_LEASE + Duration::from_secs(10), "the takeover", || {
            let (store, id) = (&store, &id);
            async move {
                let run = store.get_run(id).await.unwrap().unwrap();
                run.finished_ms.map(|_| run)
            }
        })
        .await;
        let took = stopped_at.elapsed();
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("owner lost"), "{reason}");
        assert_eq!(
            run.epoch,
            claimed.epoch + 1,
            "the takeover raised the epoch"
        );
        assert!(store.open_faults(&id).await.unwrap().is_empty());
        let closed = store.journal(&id, 0).await.unwrap();

        // It comes back: its lease renewal and journal writes are refused; it reverts what
        // it holds (the agent has it under the newer epoch already) and stays up.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(stopped.child.id() as libc::pid_t, libc::SIGCONT) };
        tokio::time::sleep(RUN_LEASE / 3 + Duration::from_secs(2)).await;
        let after = store.journal(&id, 0).await.unwrap();
        assert_eq!(
            after.len(),
            closed.len(),
            "the old owner wrote after losing the run: {:#?}",
            &after[closed.len()..]
        );
        assert_eq!(after.last().map(|e| e.event.kind()), Some("verdict"));
        stopped.wait_listening().await;

        let expected = expected_replies(&store, &id).await;
        let parent = until(Duration::from_secs(20), "the parent message", || {
            let (store, id) = (&store, &id);
            async move { store.message_ref(&run_parent_key(id)).await.unwrap() }
        })
        .await;
        // A thread head the stopped replica had claimed waits for it (or for the outbox claim
        // lease, 60 s) before the thread goes on.
        let whole = |c: &[Call]| collapse(delivered_replies(c, &parent.ts)).len() >= expected.len();
        rig.fake.wait_for(whole, Duration::from_secs(70)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A post the stopped replica had sent when it stopped may be sent once more: its
        // answer timer ran out during the pause (the outbox delivers at least once). Nothing
        // else may repeat, and nothing may be missing or out of order.
        assert_eq!(
            collapse(delivered_replies(&rig.fake.calls(), &parent.ts)),
            expected
        );
        eprintln!("stopped owner's run closed by the other replica after {took:?}");
        for r in &replicas {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    })
    .await;
}

/// One request through a proxy: how long until the whole answer was read.
async fn timed_get(addr: SocketAddr) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.unwrap();
    assert!(
        body.starts_with(b"HTTP/1."),
        "{}",
        String::from_utf8_lossy(&body)
    );
    start.elapsed()
}

const FAULT_LATENCY: Duration = Duration::from_secs(1);
const FAULT_STEP: Duration = Duration::from_secs(12);

/// Every probe sample fails while the 1 s latency is in place (the probe allows 200 ms), so
/// the verdict counts them: the judge's tallies show whose samples it had.
fn continue_yaml() -> String {
    format!(
        r#"
name: exp-continue
title: The service stays fast with a second of latency, whoever runs the experiment
owner: "@sre"
on_owner_loss: continue
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: fast
      http: {{endpoint: h0, path: /, status: 200, max_latency: 200ms}}
      interval: 500ms
      timeout: 3s
method:
  - name: slow
    target: t0
    fault: latency
    latency: {}ms
    duration: {}s
"#,
        FAULT_LATENCY.as_millis(),
        FAULT_STEP.as_secs()
    )
}

/// `on_owner_loss: continue`: the run's owner is killed with `kill -9` mid-fault; another
/// replica adopts the run under a raised epoch, takes the agent's lease over (the old epoch
/// is refused from then on), keeps the fault in place to the end of its step (traffic through
/// the proxy stays slow after the kill), keeps probing, reverts, and closes the run with the
/// verdict judged on the samples of both owners. The thread says so, whole and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_continue_a_killed_owners_run_is_carried_on_to_its_verdict() {
    use chaosbot::agent::AgentLink;
    use chaosbot::agent::client::AgentClient;
    use chaosbot::agent::protocol::Renew;
    use chaosbot::run::{RollbackOutcome, SamplePhase};
    let _one = ONE_AT_A_TIME.lock().await;
    with_postgres(|url| async move {
        let mut rig = TestApp::new(SECRET).await;
        rig.cfg.database_url = Some(url.clone());
        rig.add_to_catalog("exp-continue.yaml", &continue_yaml());
        let proxy = free_port();
        let config = rig.dir.path().join("chaosbot.toml");
        std::fs::write(&config, config_toml(rig.service.addr, &[proxy])).unwrap();
        let spawn = |addr: SocketAddr| spawn_replica(&rig, &config, &url, addr);
        let mut replicas: Vec<Replica> = (0..REPLICAS).map(|_| spawn(free_port())).collect();
        for r in &replicas {
            r.wait_listening().await;
        }
        let store = rig.store().await;
        let answer = rig
            .slash(replicas[0].addr, "U0", "start exp-continue")
            .await;
        let id = run_id_in(&answer.to_string());

        // The fault in place and two samples judged by the first owner.
        let claimed = until(Duration::from_secs(30), "the fault and two samples", || {
            let (store, id) = (&store, &id);
            async move {
                let j = store.journal(id, 0).await.unwrap();
                let during = j
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.event,
                            Event::ProbeSample {
                                phase: SamplePhase::During,
                                ..
                            }
                        )
                    })
                    .count();
                (during >= 2).then_some(())?;
                store.get_run(id).await.unwrap()
            }
        })
        .await;
        let old_owner = claimed.owner.clone().unwrap();
        let owner_pid: u32 = old_owner.split('/').nth(1).unwrap().parse().unwrap();
        let victim = replicas
            .iter()
            .position(|r| r.child.id() == owner_pid)
            .expect("a replica owns the run");
        let mut dead = replicas.remove(victim);
        let killed_ms = now_ms();
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();

        // The service is still behind the fault: nobody renews its lease until the takeover.
        let slow = timed_get(proxy).await;
        assert!(
            slow >= FAULT_LATENCY,
            "the fault held after the kill: {slow:?}"
        );

        // Adopted by another replica, under a raised epoch; the old epoch is refused.
        let adopted = until(RUN_LEASE + Duration::from_secs(10), "the adoption", || {
            let (store, id) = (&store, &id);
            async move {
                store
                    .journal(id, 0)
                    .await
                    .unwrap()
                    .into_iter()
                    .find_map(|e| match e.event {
                        Event::Adopted {
                            previous,
                            by,
                            detail,
                        } => Some((e.at_ms, previous, by, detail)),
                        _ => None,
                    })
            }
        })
        .await;
        let (adopted_ms, previous, by, detail) = adopted;
        assert_eq!(previous, old_owner);
        assert_ne!(by, old_owner);
        assert!(detail.starts_with("`slow` stays in place for"), "{detail}");
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            run.epoch,
            claimed.epoch + 1,
            "the adoption raised the epoch"
        );
        assert_eq!(run.owner.as_deref(), Some(by.as_str()));
        let agent =
            AgentClient::unix("local", rig.dir.path().join("agent/agent.sock"), None).unwrap();
        let stale = agent
            .renew(&Renew {
                run_id: id.clone(),
                epoch: claimed.epoch,
                fault_ids: vec![format!("{id}/slow")],
                lease_ms: 10_000,
            })
            .await;
        assert!(
            matches!(stale, Err(chaosbot::agent::AgentError::StaleEpoch { .. })),
            "the old owner's epoch: {stale:?}"
        );
        let slow = timed_get(proxy).await;
        assert!(
            slow >= FAULT_LATENCY,
            "the fault held after the adoption: {slow:?}"
        );

        // The run ends with its verdict, judged on every sample of the method.
        let run = until(FAULT_STEP + Duration::from_secs(30), "the verdict", || {
            let (store, id) = (&store, &id);
            async move {
                let run = store.get_run(id).await.unwrap().unwrap();
                run.finished_ms.map(|_| run)
            }
        })
        .await;
        let j = store.journal(&id, 0).await.unwrap();
        let during: Vec<(i64, bool)> = j
            .iter()
            .filter_map(|e| match e.event {
                Event::ProbeSample {
                    phase: SamplePhase::During,
                    ok,
                    ..
                } => Some((e.at_ms, ok)),
                _ => None,
            })
            .collect();
        assert!(
            during.iter().any(|(t, _)| *t < killed_ms),
            "samples of the first owner"
        );
        assert!(
            during.iter().any(|(t, _)| *t > adopted_ms),
            "samples of the second owner"
        );
        assert_eq!(run.verdict, Some(Verdict::Deviated), "{:?}", run.reason);
        assert_eq!(
            run.rollback,
            Some(RollbackOutcome::Reverted),
            "{:?}",
            run.reason
        );
        let reason = run.reason.clone().unwrap_or_default();
        let n = during.len();
        let failed = during.iter().filter(|(_, ok)| !ok).count();
        assert!(failed * 2 > n, "most samples were slow: {failed} of {n}");
        assert!(
            reason.contains(&format!("probe `fast`: {failed} of {n} samples failed")),
            "judged on the {n} samples of both owners: {reason}"
        );
        assert!(
            !j.iter().any(|e| matches!(e.event, Event::Recovered { .. })),
            "carried on, not recovered: {j:#?}"
        );
        // Held to the end of its step, then reverted once, by the new owner.
        let at = |kind: &str| -> Vec<i64> {
            j.iter()
                .filter(|e| e.event.kind() == kind)
                .map(|e| e.at_ms)
                .collect()
        };
        let (injected, reverted) = (at("fault_injected"), at("fault_reverted"));
        assert_eq!((injected.len(), reverted.len()), (1, 1), "{j:#?}");
        let held = reverted[0] - injected[0];
        assert!(
            held >= FAULT_STEP.as_millis() as i64 - 500,
            "held {held} ms"
        );
        assert!(store.open_faults(&id).await.unwrap().is_empty());
        assert!(timed_get(proxy).await < FAULT_LATENCY, "the fault is gone");

        // The thread: every line once, the adoption among them.
        let expected = expected_replies(&store, &id).await;
        assert!(
            expected
                .iter()
                .any(|t| t.contains("adopted the run and continues")),
            "{expected:#?}"
        );
        let parent = until(Duration::from_secs(20), "the parent message", || {
            let (store, id) = (&store, &id);
            async move { store.message_ref(&run_parent_key(id)).await.unwrap() }
        })
        .await;
        rig.fake
            .wait_for(
                |c| delivered_replies(c, &parent.ts).len() >= expected.len(),
                Duration::from_secs(30),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(delivered_replies(&rig.fake.calls(), &parent.ts), expected);
        eprintln!(
            "continued: kill to adoption {} ms, {n} samples judged, fault held {held} ms",
            adopted_ms - killed_ms
        );
        for r in &replicas {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    })
    .await;
}
