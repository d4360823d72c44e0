//! How long the Q&A board takes to show a vote, under load: 100 votes (:+1: reactions from 100
//! people) arrive within one second, as signed Events API requests to `chaosbot serve`; the
//! board lives in the fake Slack. For every vote, the time from sending it to the first
//! `chat.update` of the board that counts it. The outbox sends at most about one update per
//! second per message (Slack's own limit for `chat.update`), coalescing what piled up, so that
//! interval bounds the latency from below.
//!
//! `cargo bench --bench qa_votes` (optionally `QA_VOTES=200 QA_VOTE_WINDOW_MS=1000`). Loopback only.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use chaosbot::config::AllowRule;
use chaosbot::slack::server::Server;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use support::fake_slack::{Call, FakeSlack};
use support::slack;

const SECRET: &str = "bench-secret";
const TEAM: &str = "T1";
const CHANNEL: &str = "CCHAOS";

const EXPERIMENT: &str = r#"
name: quick
title: A short latency fault
owner: "@sre"
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 200ms
method:
  - name: slow
    target: api
    fault: latency
    latency: 10ms
    duration: 500ms
"#;

async fn event(addr: std::net::SocketAddr, id: &str, event: Value) {
    slack::event(SECRET, addr, TEAM, id, event).await
}

/// Votes the board shows on its first question (`*N* :+1:`).
fn votes_shown(c: &Call) -> Option<u64> {
    let blocks = c.body["blocks"].to_string();
    let at = blocks.find(" :+1: ·")?;
    let head = blocks[..at].strip_suffix('*')?;
    let open = head.rfind('*')?;
    head[open + 1..].parse().ok()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let votes = env_u64("QA_VOTES", 100);
    let window_ms = env_u64("QA_VOTE_WINDOW_MS", 1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = FakeSlack::start().await;
    let service = support::service().await;
    let catalog = dir.path().join("experiments");
    std::fs::create_dir_all(&catalog).expect("catalog dir");
    std::fs::write(catalog.join("quick.yaml"), EXPERIMENT).expect("experiment");
    let mut cfg = support::config(support::free_port(), service.addr);
    cfg.catalog = catalog;
    cfg.database_url = Some(format!("sqlite://{}", dir.path().join("runs.db").display()));
    cfg.slack = slack::settings(
        SECRET,
        fake.url(),
        TEAM,
        &[],
        vec![AllowRule {
            experiments: vec!["*".into()],
            users: vec![],
            channels: vec![CHANNEL.into()],
        }],
    );
    let store = chaosbot::store::open(cfg.database_url())
        .await
        .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start(cfg.clone(), store.clone(), listener)
        .await
        .expect("server");
    let addr = server.addr;

    // A finished run with its board.
    let answer = slack::slash(SECRET, addr, (TEAM, CHANNEL), "UALICE", "start quick")
        .await
        .to_string();
    let Some(at) = answer.find("r-") else {
        panic!("the start command was refused: {answer}");
    };
    let run_id = answer[at..at + 12].to_string();
    let board_key = chaosbot::slack::qa::board_key(&run_id);
    let parent_key = chaosbot::slack::run_parent_key(&run_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (parent_ts, board_ts) = loop {
        let parent = store.message_ref(&parent_key).await.expect("store");
        let board = store.message_ref(&board_key).await.expect("store");
        if let (Some(p), Some(b)) = (parent, board) {
            break (p.ts, b.ts);
        }
        assert!(Instant::now() < deadline, "the run's board never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let question_ts = "1800000000.000001";
    event(
        addr,
        "Ev-q",
        json!({"type": "message", "channel": CHANNEL, "user": "UBOB", "ts": question_ts,
               "thread_ts": parent_ts, "text": "Should we shorten the client timeout?"}),
    )
    .await;
    // Let the question reach the board before voting starts.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let start = Instant::now();
    let mut sent = Vec::with_capacity(votes as usize);
    for i in 0..votes {
        let due = start + Duration::from_millis(i * window_ms / votes.max(1));
        tokio::time::sleep_until(due.into()).await;
        let t = Instant::now();
        event(
            addr,
            &format!("Ev-v{i}"),
            json!({"type": "reaction_added", "user": format!("UVOTER{i:04}"), "reaction": "+1",
                   "item": {"type": "message", "channel": CHANNEL, "ts": question_ts}}),
        )
        .await;
        sent.push(t);
    }
    let spread = start.elapsed();

    // Wait for the board to show every vote (bounded).
    let calls = fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.update"
                        && c.str("ts") == Some(board_ts.as_str())
                        && votes_shown(c) == Some(votes)
                })
            },
            Duration::from_secs(30),
        )
        .await;
    let updates: Vec<(Instant, u64)> = calls
        .iter()
        .filter(|c| c.method == "chat.update" && c.str("ts") == Some(board_ts.as_str()))
        .filter_map(|c| votes_shown(c).map(|n| (c.at, n)))
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut missing = 0;
    for (i, t) in sent.iter().enumerate() {
        // Vote i is the (i+1)-th; the first update at or after it that counts i+1 shows it.
        match updates
            .iter()
            .find(|(at, n)| *at >= *t && *n > i as u64)
            .map(|(at, _)| at.duration_since(*t))
        {
            Some(d) => {
                let _ = hist.record(d.as_micros().max(1) as u64);
            }
            None => missing += 1,
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "Q&A board: {votes} votes sent in {:.0} ms ({:.0} votes/s); the board was updated {} times",
        spread.as_secs_f64() * 1000.0,
        votes as f64 / spread.as_secs_f64(),
        updates.len()
    );
    println!(
        "vote → board shows it: p50 {:.0} ms · p90 {:.0} ms · p99 {:.0} ms · max {:.0} ms{}",
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.90)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
        if missing > 0 {
            format!(" · {missing} votes never shown")
        } else {
            String::new()
        }
    );
    if let (Some(last_sent), Some((last_update, _))) =
        (sent.last(), updates.iter().find(|(_, n)| *n == votes))
    {
        println!(
            "last vote → final board: {:.0} ms (the outbox sends at most ~1 chat.update/s per message)",
            last_update
                .saturating_duration_since(*last_sent)
                .as_secs_f64()
                * 1000.0
        );
    }
    let stored = store
        .question_by_ts(CHANNEL, question_ts)
        .await
        .ok()
        .flatten()
        .map(|q| q.votes)
        .unwrap_or(0);
    println!("votes stored: {stored} of {votes}");
    server.shutdown("bench over").await;
}
