//! Benchmark of three `chaosbot serve` replicas on one Postgres database (prints a table; not a
//! test), with the fake Slack and the local agent the replicas share.
//!
//! `cargo bench --bench replicas` — Postgres at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; a fresh database is made and dropped). Measures:
//! - (a) an abort given to replica A for a run replica B owns, until the agent no longer lists
//!   the fault (`ABORT_TRIALS`, default 30). Target p99 ≤ 100 ms.
//! - (b) the owner killed with `kill -9`, until the new owner's first journal entry, for each
//!   run it owned (`KILLS` kills, default 8, about three runs each; the runs say
//!   `on_owner_loss: continue`, so that entry is the adoption). Target p99 ≤ run lease + 2 s.
//! - (c) 20 concurrent runs while the fake Slack answers 429 to every third call: threads
//!   complete, lines lost, lines duplicated. Target: all complete, 0 and 0. It runs first,
//!   on an empty outbox: behind the Slack backlog (a) and (b) leave (some 2,000 calls, half an
//!   hour at Slack's pace), it would measure that backlog instead.
//!
//! Every wait is bounded; a trial that times out is counted and reported, not waited for.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaosbot::agent::AgentLink;
use chaosbot::agent::client::AgentClient;
use chaosbot::run::now_ms;
use chaosbot::slack::{render, run_parent_key, run_thread_key};
use chaosbot::store::DynStore;
use chaosbot::store::outbox::OutboxState;
use hdrhistogram::Histogram;
use support::app::{TestApp, replies, run_id_in};
use support::fake_slack::Call;

const SECRET: &str = "replicas-bench-secret";
const REPLICAS: usize = 3;
const TARGETS: usize = 20;
/// `EngineOptions::lease`, the run lease of `chaosbot serve`.
const RUN_LEASE: Duration = Duration::from_secs(15);
/// The channel of (c)'s runs.
const RATE_LIMITED_CHANNEL: &str = "CRATE";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn experiment_yaml(i: usize) -> String {
    format!(
        r#"
name: exp-{i}
title: Target {i} with 20 ms of latency
owner: "@sre"
on_owner_loss: continue
parameters:
  duration: {{type: duration, default: 3s, min: 1s, max: 5m}}
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
        "[slack]\nteam_id = \"{}\"\noperators = [\"{}\"]\n[[slack.allow]]\nexperiments = [\"*\"]\n",
        support::app::TEAM,
        support::app::OPERATOR
    ));
    t
}

/// Where a replica's log goes: `REPLICA_LOG=dir` keeps one file per replica (with `RUST_LOG`
/// passed through) for looking into a stall; by default nowhere.
fn replica_log(addr: SocketAddr) -> Stdio {
    let Some(dir) = std::env::var_os("REPLICA_LOG") else {
        return Stdio::null();
    };
    let path = std::path::Path::new(&dir).join(format!("replica-{}.log", addr.port()));
    match std::fs::File::create(&path) {
        Ok(f) => Stdio::from(f),
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            Stdio::null()
        }
    }
}

struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rig {
    app: TestApp,
    config: std::path::PathBuf,
    url: String,
    store: DynStore,
    agent: AgentClient,
    replicas: Vec<Replica>,
    /// Which target each started run holds, so a target is reused only once its run is over.
    busy: HashMap<usize, String>,
}

impl Rig {
    fn spawn(&self) -> Replica {
        let addr = support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_chaosbot"))
            .args([
                "--config",
                self.config.to_str().unwrap_or_default(),
                "serve",
            ])
            .current_dir(self.app.dir.path())
            .env("DATABASE_URL", &self.url)
            .env("SLACK_SIGNING_SECRET", SECRET)
            .env("SLACK_BOT_TOKEN", "xoxb-bench")
            .env("SLACK_API_URL", self.app.fake.url())
            .env("CHAOSBOT_LISTEN", addr.to_string())
            .env(
                "CHAOSBOT_AGENT_SOCKET",
                self.app.dir.path().join("agent/agent.sock"),
            )
            .env_remove("SLACK_APP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(replica_log(addr))
            .spawn()
            .expect("spawn chaosbot serve");
        Replica { child, addr }
    }

    async fn add_replica(&mut self) {
        let r = self.spawn();
        support::wait_listening(r.addr).await;
        self.replicas.push(r);
    }

    /// Starts a run on a free target through replica `via`; its id and target.
    async fn start(&mut self, via: usize, duration: &str) -> Option<(String, usize)> {
        self.start_in(support::app::CHANNEL, via, duration).await
    }

    /// [`Self::start`] from channel `channel`.
    async fn start_in(
        &mut self,
        channel: &str,
        via: usize,
        duration: &str,
    ) -> Option<(String, usize)> {
        self.settle_targets().await;
        let target = (0..TARGETS).find(|t| !self.busy.contains_key(t))?;
        let addr = self.replicas[via % self.replicas.len()].addr;
        let answer = support::slack::slash(
            self.app.secret,
            addr,
            (support::app::TEAM, channel),
            &format!("U{target}"),
            &format!("start exp-{target} duration={duration}"),
        )
        .await;
        let id = run_id_in(&answer.to_string());
        self.busy.insert(target, id.clone());
        Some((id, target))
    }

    /// Frees the targets whose runs are over.
    async fn settle_targets(&mut self) {
        let mut free = Vec::new();
        for (t, id) in &self.busy {
            if let Ok(Some(r)) = self.store.get_run(id).await
                && r.finished_ms.is_some()
            {
                free.push(*t);
            }
        }
        for t in free {
            self.busy.remove(&t);
        }
    }

    async fn owner_pid(&self, id: &str) -> Option<u32> {
        let run = self.store.get_run(id).await.ok()??;
        run.owner?.split('/').nth(1)?.parse().ok()
    }

    async fn injected(&self, id: &str) -> bool {
        self.store
            .journal(id, 0)
            .await
            .map(|j| j.iter().any(|e| e.event.kind() == "fault_injected"))
            .unwrap_or(false)
    }

    async fn agent_holds(&self, fault_id: &str) -> Option<bool> {
        let list = self.agent.faults().await.ok()?;
        Some(list.faults.iter().any(|f| f.fault_id == fault_id))
    }

    async fn wait_done(&self, ids: &[String], limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let mut left = 0;
            for id in ids {
                if !matches!(self.store.get_run(id).await, Ok(Some(r)) if r.finished_ms.is_some()) {
                    left += 1;
                }
            }
            if left == 0 || start.elapsed() > limit {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `check` every `every` until it answers `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

fn row(name: &str, h: &Histogram<u64>, target: &str, timeouts: usize) {
    if h.is_empty() {
        println!("{name:<46} no samples ({timeouts} timed out)");
        return;
    }
    println!(
        "{name:<46} n={:<4} p50={:>7.1} ms  p99={:>7.1} ms  max={:>7.1} ms   target {target}{}",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        if timeouts > 0 {
            format!("  ({timeouts} timed out)")
        } else {
            String::new()
        }
    );
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Where an abort's time went, from the journal: the request written (by A), the owner (B)
/// reverting, the agent's answer journalled (ms after the press).
#[derive(Default)]
struct AbortParts {
    requested: Vec<i64>,
    reverting: Vec<i64>,
    reverted: Vec<i64>,
}

impl AbortParts {
    async fn add(&mut self, store: &DynStore, id: &str, pressed_ms: i64) {
        let Ok(j) = store.journal(id, 0).await else {
            return;
        };
        let at = |pred: &dyn Fn(&chaosbot::run::Event) -> bool| {
            j.iter()
                .find(|e| pred(&e.event))
                .map(|e| e.at_ms - pressed_ms)
        };
        use chaosbot::run::{Event, RunState};
        if let Some(t) = at(&|e| matches!(e, Event::AbortRequested { .. })) {
            self.requested.push(t);
        }
        if let Some(t) = at(&|e| {
            matches!(
                e,
                Event::StateChanged {
                    to: RunState::Reverting,
                    ..
                }
            )
        }) {
            self.reverting.push(t);
        }
        if let Some(t) = at(&|e| matches!(e, Event::FaultReverted { .. })) {
            self.reverted.push(t);
        }
    }

    fn print(&self) {
        let p50 = |v: &[i64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(-1)
        };
        println!(
            "    journal, p50 ms after the press: abort requested {}, owner reverting {}, agent's revert journalled {}",
            p50(&self.requested),
            p50(&self.reverting),
            p50(&self.reverted)
        );
    }
}

/// (a) abort through A for runs B owns: abort → the agent no longer lists the fault.
async fn abort_elsewhere(rig: &mut Rig, trials: usize) -> (Histogram<u64>, usize, AbortParts) {
    let mut parts = AbortParts::default();
    let mut pressed = Vec::new();
    let mut h = hist();
    let mut timeouts = 0;
    let mut done = 0;
    while done < trials {
        let batch = (trials - done).min(10);
        let mut ids = Vec::new();
        for k in 0..batch {
            if let Some((id, _)) = rig.start(k, "2m").await {
                ids.push(id);
            }
        }
        for id in &ids {
            let ok = until(
                Duration::from_secs(30),
                Duration::from_millis(50),
                || async { rig.injected(id).await.then_some(()) },
            )
            .await;
            if ok.is_none() {
                timeouts += 1;
            }
        }
        for (k, id) in ids.iter().enumerate() {
            let Some(owner) = rig.owner_pid(id).await else {
                continue;
            };
            let Some(a) = rig.replicas.iter().find(|r| r.child.id() != owner) else {
                continue;
            };
            let fault_id = format!("{id}/slow");
            if rig.agent_holds(&fault_id).await != Some(true) {
                continue;
            }
            let started = Instant::now();
            let pressed_ms = now_ms();
            let target = rig.busy.iter().find(|(_, r)| *r == id).map(|(t, _)| *t);
            let user = format!("U{}", target.unwrap_or(k));
            let (status, _) = rig.app.press(a.addr, &user, "abort_run", id).await;
            if status != 200 {
                timeouts += 1;
                continue;
            }
            let gone = until(
                Duration::from_secs(10),
                Duration::from_millis(2),
                || async {
                    (rig.agent_holds(&fault_id).await == Some(false)).then(|| started.elapsed())
                },
            )
            .await;
            match gone {
                Some(d) => h.record(d.as_micros() as u64).unwrap_or_default(),
                None => timeouts += 1,
            }
            pressed.push((id.clone(), pressed_ms));
            done += 1;
        }
        rig.wait_done(&ids, Duration::from_secs(30)).await;
        for (id, at) in pressed.drain(..) {
            parts.add(&rig.store, &id, at).await;
        }
    }
    (h, timeouts, parts)
}

/// (b) the owner killed: kill -9 → the new owner's first journal entry, per run it owned.
async fn owner_killed(rig: &mut Rig, kills: usize) -> (Histogram<u64>, usize) {
    let mut h = hist();
    let mut timeouts = 0;
    for _ in 0..kills {
        let mut ids = Vec::new();
        for k in 0..9 {
            if let Some((id, _)) = rig.start(k, "1m").await {
                ids.push(id);
            }
        }
        for id in &ids {
            let _ = until(
                Duration::from_secs(30),
                Duration::from_millis(50),
                || async { rig.injected(id).await.then_some(()) },
            )
            .await;
        }
        let mut owned: HashMap<u32, Vec<String>> = HashMap::new();
        for id in &ids {
            if let Some(pid) = rig.owner_pid(id).await {
                owned.entry(pid).or_default().push(id.clone());
            }
        }
        let Some((&victim, runs)) = owned.iter().max_by_key(|(_, r)| r.len()) else {
            continue;
        };
        let runs = runs.clone();
        let Some(pos) = rig.replicas.iter().position(|r| r.child.id() == victim) else {
            continue;
        };
        let mut dead = rig.replicas.remove(pos);
        let last_seq: HashMap<String, i64> = {
            let mut m = HashMap::new();
            for id in &runs {
                let seq = rig
                    .store
                    .journal(id, 0)
                    .await
                    .ok()
                    .and_then(|j| j.last().map(|e| e.seq))
                    .unwrap_or(0);
                m.insert(id.clone(), seq);
            }
            m
        };
        let killed_ms = now_ms();
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        for id in &runs {
            let store = &rig.store;
            let after = last_seq.get(id).copied().unwrap_or(0);
            let first = until(
                RUN_LEASE + Duration::from_secs(10),
                Duration::from_millis(20),
                || async move {
                    // The first entry another process wrote after the kill.
                    store
                        .journal(id, after)
                        .await
                        .ok()?
                        .into_iter()
                        .find(|e| e.at_ms >= killed_ms)
                        .map(|e| e.at_ms)
                },
            )
            .await;
            match first {
                Some(at) => h
                    .record(u64::try_from(at - killed_ms).unwrap_or(0).max(1) * 1000)
                    .unwrap_or_default(),
                None => timeouts += 1,
            }
        }
        // The adopted runs are carried on; abort them all so the next round has targets.
        if let Some(live) = rig.replicas.first() {
            for id in &ids {
                let target = rig.busy.iter().find(|(_, r)| *r == id).map(|(t, _)| *t);
                let user = format!("U{}", target.unwrap_or(0));
                let _ = rig.app.press(live.addr, &user, "abort_run", id).await;
            }
        }
        rig.add_replica().await;
        rig.wait_done(&ids, Duration::from_secs(40)).await;
    }
    (h, timeouts)
}

/// The thread the journal says the run should have: its replies, then the summary.
async fn expected_replies(store: &DynStore, id: &str) -> Option<Vec<String>> {
    let run = store.get_run(id).await.ok()??;
    let journal = store.journal(id, 0).await.ok()?;
    let mut texts: Vec<String> = journal
        .iter()
        .filter_map(render::thread_reply)
        .map(|r| r.text)
        .collect();
    let summary = render::summary(&chaosbot::report::summarize(&run, &journal));
    for _ in summary.pages() {
        texts.push(summary.text.clone());
    }
    Some(texts)
}

fn delivered(calls: &[Call], ts: &str) -> Vec<String> {
    replies(calls, Some(ts))
        .into_iter()
        .map(|c| c.str("text").unwrap_or_default().to_string())
        .filter(|t| !t.starts_with("Q&A on run"))
        .collect()
}

/// (c) 20 runs at once while every third Slack call is answered 429.
async fn rate_limited(rig: &mut Rig) -> (usize, usize, usize, usize, Duration) {
    // Its own channel: (a) and (b) post in the default one.
    rig.app.fake.rate_limit_every(Some(3), 1);
    let started = Instant::now();
    let mut ids = Vec::new();
    for k in 0..TARGETS {
        if let Some((id, _)) = rig.start_in(RATE_LIMITED_CHANNEL, k, "3s").await {
            ids.push(id);
        }
    }
    rig.wait_done(&ids, Duration::from_secs(120)).await;
    // Delivered means the outbox holds nothing pending for these threads. (At about one
    // post a second per channel, with a second's hold after every 429, 20 threads take
    // minutes: a check of Slack's calls before then counts late lines as lost.)
    // And every run's journal rendered (its cursor at its last entry), so nothing is yet to
    // be queued.
    let _ = until(
        Duration::from_secs(900),
        Duration::from_millis(500),
        || async {
            for id in &ids {
                let last = rig.store.journal(id, 0).await.ok()?.last()?.seq;
                if rig.store.render_cursor(id).await.ok()? < last {
                    return None;
                }
                let rows = rig
                    .store
                    .outbox_rows(Some(&run_thread_key(id)))
                    .await
                    .ok()?;
                if rows.iter().any(|r| matches!(r.state, OutboxState::Pending)) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let mut threads = Vec::new();
    let mut names = Vec::new();
    for id in &ids {
        names.push(id.clone());
        let parent = rig
            .store
            .message_ref(&run_parent_key(id))
            .await
            .ok()
            .flatten();
        let expected = expected_replies(&rig.store, id).await.unwrap_or_default();
        threads.push((parent.map(|p| p.ts), expected));
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.app.fake.rate_limit_every(None, 1);
    let calls = rig.app.fake.calls();
    let (mut whole, mut lost, mut dup) = (0, 0, 0);
    for ((ts, expected), id) in threads.iter().zip(&names) {
        let got = ts
            .as_ref()
            .map(|ts| delivered(&calls, ts))
            .unwrap_or_default();
        let mut left: Vec<&String> = got.iter().collect();
        let mut missing = 0;
        for line in expected {
            match left.iter().position(|g| *g == line) {
                Some(p) => {
                    left.remove(p);
                }
                None => missing += 1,
            }
        }
        lost += missing;
        dup += left.len();
        if missing > 0 || !left.is_empty() {
            // Which thread and how: the number alone does not say where to look.
            println!(
                "    run {id}: parent {}, {missing} of {} lines missing, {} extra",
                ts.as_deref().unwrap_or("never posted"),
                expected.len(),
                left.len()
            );
            let rows = rig
                .store
                .outbox_rows(Some(&run_thread_key(id)))
                .await
                .unwrap_or_default();
            let mut states: HashMap<String, usize> = HashMap::new();
            for r in &rows {
                *states.entry(format!("{:?}", r.state)).or_default() += 1;
            }
            println!("      outbox rows of the thread: {} {states:?}", rows.len());
            for r in rows
                .iter()
                .filter(|r| !matches!(r.state, OutboxState::Delivered))
            {
                println!(
                    "      row {} {:?} attempts {} next in {} ms, last error {:?}",
                    r.id,
                    r.state,
                    r.attempts,
                    r.next_attempt_ms - now_ms(),
                    r.last_error
                );
            }
        }
        if missing == 0 && left.is_empty() && got == *expected {
            whole += 1;
        }
    }
    (whole, threads.len(), lost, dup, took)
}

fn main() {
    if std::env::var_os("TEST_POSTGRES_URL").is_none() {
        // SAFETY: set before the runtime starts any thread.
        unsafe {
            std::env::set_var(
                "TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(support::with_postgres(|url| async move {
        let mut app = TestApp::new(SECRET).await;
        app.cfg.database_url = Some(url.clone());
        for i in 0..TARGETS {
            app.add_to_catalog(&format!("exp-{i}.yaml"), &experiment_yaml(i));
        }
        let proxies: Vec<SocketAddr> = (0..TARGETS).map(|_| support::free_port()).collect();
        let config = app.dir.path().join("chaosbot.toml");
        std::fs::write(&config, config_toml(app.service.addr, &proxies)).expect("write config");
        let store = app.store().await;
        let agent = AgentClient::unix("local", app.dir.path().join("agent/agent.sock"), None)
            .expect("agent client");
        let mut rig = Rig {
            app,
            config,
            url,
            store,
            agent,
            replicas: Vec::new(),
            busy: HashMap::new(),
        };
        for _ in 0..REPLICAS {
            rig.add_replica().await;
        }
        println!("three `chaosbot serve` replicas on one Postgres database, one local agent, the fake Slack");
        // (c) first: it measures Slack delivery, and the ~2,000 calls (a) and (b) queue take
        // half an hour at Slack's pace of a post a second per channel, 429s aside; (a) and
        // (b) measure the journal and the agent, which (c)'s drained outbox does not slow.
        let (whole, n, lost, dup, took) = rate_limited(&mut rig).await;
        println!(
            "(c) 20 runs, every 3rd Slack call 429: {whole}/{n} threads whole, {lost} lines lost, {dup} duplicated ({:.1} s to deliver)   target {n}/{n}, 0, 0",
            took.as_secs_f64()
        );
        let (a, a_to, parts) = abort_elsewhere(&mut rig, env_usize("ABORT_TRIALS", 30)).await;
        row("(a) abort on A, run owned by B → fault gone", &a, "p99 ≤ 100 ms", a_to);
        parts.print();
        let (b, b_to) = owner_killed(&mut rig, env_usize("KILLS", 8)).await;
        row(
            "(b) owner kill -9 → new owner's first entry",
            &b,
            &format!("p99 ≤ {} s (lease + 2 s)", (RUN_LEASE + Duration::from_secs(2)).as_secs()),
            b_to,
        );
        for r in &rig.replicas {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }));
}
