//! The whole Slack app end to end: `chaosbot serve`'s composition (HTTP edge, engine, proxy,
//! projector, outbox) against a fake Slack Web API on loopback. Requests are signed like
//! Slack's; assertions are on what the fake received: the parent message, the thread replies
//! with the right `thread_ts`, the updates, the final summary, an abort through the button,
//! nothing lost under 429s and 500s, across a kill -9 of the process, and over Socket Mode.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::config::Secret;
use chaosbot::run::{RunState, Verdict};
use chaosbot::slack::render;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::app::{CHANNEL, TEAM, TestApp, replies, run_id_in};
use support::fake_slack::Call;
use support::*;

/// A `chaosbot serve` child, killed when the test ends (a failing test leaves none behind).
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SECRET: &str = "e2e-signing-secret";
const ALICE: &str = "UALICE";

const SLOW_API: &str = r#"
name: slow-api
title: The API stays fast with 30 ms of latency
owner: "@sre"
parameters:
  duration: {type: duration, default: 2s, min: 1s, max: 2m}
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
    latency: 30ms
    duration: ${duration}
"#;

async fn rig() -> TestApp {
    let app = TestApp::new(SECRET).await;
    app.add_to_catalog("slow-api.yaml", SLOW_API);
    app
}

fn is_parent(c: &Call) -> bool {
    c.method == "chat.postMessage" && c.status == 200 && c.body.get("thread_ts").is_none()
}

/// The final summary reply is there (its fallback text is "Run <id> of <experiment>: …").
fn has_summary(calls: &[Call]) -> bool {
    replies(calls, None)
        .iter()
        .any(|c| c.str("text").is_some_and(|t| t.starts_with("Run r-")))
}

/// The run's Q&A board, posted in the thread after the summary, is there.
fn has_board(calls: &[Call]) -> bool {
    replies(calls, None)
        .iter()
        .any(|c| c.str("text").is_some_and(|t| t.starts_with("Q&A on run")))
}

/// What the thread must contain, in order, from the run's journal: one reply per entry that
/// deserves one, then the summary.
async fn expected_thread(rig: &TestApp, run_id: &str) -> Vec<String> {
    let store = rig.store().await;
    let run = store.get_run(run_id).await.unwrap().unwrap();
    let journal = store.journal(run_id, 0).await.unwrap();
    let mut texts: Vec<String> = journal
        .iter()
        .filter_map(render::thread_reply)
        .map(|r| r.text)
        .collect();
    let summary = render::summary(&chaosbot::report::summarize(&run, &journal));
    for _ in summary.pages() {
        texts.push(summary.text.clone());
    }
    if run.finished_ms.is_some() {
        // Then the thread becomes the run's Q&A: its board.
        let board =
            chaosbot::slack::qa::render_board(&store, &run, 10, chaosbot::run::now_ms(), true)
                .await
                .unwrap();
        texts.push(board.text);
    }
    texts
}

/// The run's chart was shared exactly once, in the run's thread after its summary, as a valid
/// PNG of the chart's width; returns its bytes.
fn assert_chart_in_thread(rig: &TestApp, calls: &[Call], run_id: &str, parent_ts: &str) -> Vec<u8> {
    let filename = format!("chaosbot-{run_id}.png");
    let tickets: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "files.getUploadURLExternal" && c.status == 200)
        .filter(|c| c.str("filename") == Some(filename.as_str()))
        .collect();
    let shared: Vec<(usize, &Call)> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.method == "files.completeUploadExternal" && c.status == 200)
        .filter(|(_, c)| {
            c.body["files"][0]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("Run {run_id}")))
        })
        .collect();
    assert_eq!(shared.len(), 1, "the chart is shared once: {shared:?}");
    let (at, done) = shared[0];
    assert_eq!(done.str("channel_id"), Some(CHANNEL));
    assert_eq!(
        done.str("thread_ts"),
        Some(parent_ts),
        "in the run's thread"
    );
    let summary_at = calls
        .iter()
        .position(|c| {
            c.method == "chat.postMessage"
                && c.str("text")
                    .is_some_and(|t| t.starts_with(&format!("Run {run_id}")))
        })
        .expect("the summary was posted");
    assert!(summary_at < at, "the chart comes after the summary");
    let file_id = done.body["files"][0]["id"].as_str().unwrap().to_string();
    let bytes = rig
        .fake
        .uploads()
        .remove(&file_id)
        .expect("the bytes were uploaded");
    let ticket = tickets
        .iter()
        .rev()
        .find(|t| t.str("length") == Some(bytes.len().to_string().as_str()))
        .expect("the ticket asked for the uploaded length");
    assert_eq!(ticket.str("filename"), Some(filename.as_str()));
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes[..]))
        .read_info()
        .expect("a PNG header");
    let mut px = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut px).expect("PNG pixels");
    assert_eq!(info.width, 1200);
    assert!(
        info.height >= 300,
        "a header and a probe panel: {}",
        info.height
    );
    bytes
}

fn delivered_thread(calls: &[Call]) -> Vec<String> {
    replies(calls, None)
        .iter()
        .map(|c| c.str("text").unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_run_started_in_slack_lives_in_its_channel() {
    let rig = rig().await;
    let server = rig.start().await;
    let answer = rig
        .slash(server.addr, ALICE, "start slow-api duration=2s")
        .await;
    assert_eq!(answer["response_type"], "ephemeral");
    let id = run_id_in(&answer.to_string());

    let calls = rig
        .fake
        .wait_for(has_summary, Duration::from_secs(30))
        .await;
    let run = server.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);

    // One parent, in the channel, with the Abort button while running.
    let parents: Vec<&Call> = calls.iter().filter(|c| is_parent(c)).collect();
    assert_eq!(parents.len(), 1);
    let parent = parents[0];
    assert_eq!(parent.str("channel"), Some(CHANNEL));
    assert!(parent.body["blocks"].to_string().contains("abort_run"));
    assert_eq!(
        parent.headers.get("authorization").map(String::as_str),
        Some("Bearer xoxb-test")
    );

    // Every reply is in the parent's thread; updates and the reaction target the parent.
    let calls = rig
        .fake
        .wait_for(
            |c| c.iter().any(|c| c.method == "reactions.add"),
            Duration::from_secs(10),
        )
        .await;
    let updates: Vec<&Call> = calls.iter().filter(|c| c.method == "chat.update").collect();
    assert!(!updates.is_empty());
    let parent_ts = updates[0].str("ts").unwrap().to_string();
    assert!(
        updates
            .iter()
            .all(|u| u.str("ts") == Some(parent_ts.as_str()))
    );
    assert!(
        replies(&calls, None)
            .iter()
            .all(|r| r.str("thread_ts") == Some(parent_ts.as_str()))
    );
    let reaction = calls.iter().find(|c| c.method == "reactions.add").unwrap();
    assert_eq!(reaction.str("timestamp"), Some(parent_ts.as_str()));
    assert_eq!(reaction.str("name"), Some("white_check_mark"));

    // The parent's last state shows the verdict and no longer offers Abort.
    let last = updates.last().unwrap();
    let blocks = last.body["blocks"].to_string();
    assert!(
        blocks.contains("HELD") && !blocks.contains("abort_run"),
        "{blocks}"
    );

    // The thread is the journal, in order, nothing missing, nothing twice.
    assert_eq!(delivered_thread(&calls), expected_thread(&rig, &id).await);

    // The run's chart, uploaded into the thread once, after the summary.
    let calls = rig
        .fake
        .wait_for(
            |c| c.iter().any(|c| c.method == "files.completeUploadExternal"),
            Duration::from_secs(20),
        )
        .await;
    let png = assert_chart_in_thread(&rig, &calls, &id, &parent_ts);
    assert!(
        png.len() > 10_000 && png.len() < 1_000_000,
        "a chart of sensible size: {} bytes",
        png.len()
    );

    // Prometheus numbers: runs by verdict, Slack deliveries, request latencies.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{}/metrics", server.addr).parse().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    for metric in [
        "chaosbot_runs_total{verdict=\"held\"",
        "chaosbot_slack_deliveries_total",
        "chaosbot_active_faults",
    ] {
        assert!(
            text.contains(metric),
            "{metric} missing from /metrics:\n{text}"
        );
    }
    server.shutdown("test over").await;
}

#[tokio::test]
async fn the_abort_button_aborts_and_the_thread_says_so() {
    let rig = rig().await;
    let server = rig.start().await;
    let answer = rig
        .slash(server.addr, ALICE, "start slow-api duration=60s")
        .await;
    let id = run_id_in(&answer.to_string());
    rig.fake
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| c.str("text").is_some_and(|t| t.contains("injected")))
            },
            Duration::from_secs(20),
        )
        .await;
    let (status, _) = rig.press(server.addr, ALICE, "abort_run", &id).await;
    assert_eq!(status, 200);
    let run = tokio::time::timeout(Duration::from_secs(20), server.engine.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    let calls = rig
        .fake
        .wait_for(has_summary, Duration::from_secs(20))
        .await;
    let thread = delivered_thread(&calls);
    assert!(
        thread
            .iter()
            .any(|t| t.contains("Abort requested by <@UALICE>")),
        "{thread:#?}"
    );
    let calls = rig
        .fake
        .wait_for(
            |c| c.iter().any(|c| c.method == "reactions.add"),
            Duration::from_secs(10),
        )
        .await;
    let last = calls.iter().rfind(|c| c.method == "chat.update").unwrap();
    assert!(last.body["blocks"].to_string().contains("ABORTED"));
    assert_eq!(delivered_thread(&calls), expected_thread(&rig, &id).await);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn nothing_is_lost_when_slack_answers_429_and_500() {
    let rig = rig().await;
    // Slack misbehaves from the first call on: rate limits, then server errors.
    rig.fake.rate_limit_next(2, Some("chat.postMessage"), 1);
    rig.fake.fail_next(4, None, 500);
    let server = rig.start().await;
    let answer = rig
        .slash(server.addr, ALICE, "start slow-api duration=1s")
        .await;
    let id = run_id_in(&answer.to_string());
    server.engine.wait(&id).await.unwrap();
    let calls = rig.fake.wait_for(has_board, Duration::from_secs(60)).await;
    assert!(calls.iter().any(|c| c.status == 429) && calls.iter().any(|c| c.status == 500));
    assert_eq!(delivered_thread(&calls), expected_thread(&rig, &id).await);
    assert_eq!(calls.iter().filter(|c| is_parent(c)).count(), 1);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn the_chart_upload_is_retried_through_slack_errors_and_shared_once() {
    let rig = rig().await;
    // Each step of the upload flow fails once (5xx, then a 429 on the last).
    rig.fake
        .fail_next(1, Some("files.getUploadURLExternal"), 500);
    rig.fake
        .fail_next(1, Some("files.completeUploadExternal"), 503);
    rig.fake
        .rate_limit_next(1, Some("files.completeUploadExternal"), 1);
    let server = rig.start().await;
    let answer = rig
        .slash(server.addr, ALICE, "start slow-api duration=1s")
        .await;
    let id = run_id_in(&answer.to_string());
    server.engine.wait(&id).await.unwrap();
    let calls = rig
        .fake
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| c.method == "files.completeUploadExternal" && c.status == 200)
            },
            Duration::from_secs(60),
        )
        .await;
    let failed: Vec<u16> = calls
        .iter()
        .filter(|c| c.method.starts_with("files.") && c.status != 200)
        .map(|c| c.status)
        .collect();
    assert_eq!(failed, [500, 503, 429], "every injected failure was met");
    let parent_ts = replies(&calls, None)[0]
        .str("thread_ts")
        .unwrap()
        .to_string();
    // The board comes after the chart in the thread's order; once it is there, nothing of
    // the upload is still pending, so "once" is final.
    let calls = rig.fake.wait_for(has_board, Duration::from_secs(30)).await;
    assert_chart_in_thread(&rig, &calls, &id, &parent_ts);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn a_run_survives_a_kill_9_of_the_process_with_its_thread_whole() {
    let rig = rig().await;
    let config = rig.dir.path().join("chaosbot.toml");
    let p = &rig.cfg.targets.proxy[0];
    std::fs::write(
        &config,
        format!(
            "catalog = \"experiments\"\n[[targets.proxy]]\nname = \"api\"\nlisten = \"{}\"\nupstream = \"{}\"\n[[targets.http]]\nname = \"api-http\"\nurl = \"http://{}\"\n[slack]\nteam_id = \"{TEAM}\"\n[[slack.allow]]\nexperiments = [\"*\"]\n",
            p.listen, p.upstream, p.listen
        ),
    )
    .unwrap();
    let spawn = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_chaosbot"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("DATABASE_URL", rig.cfg.database_url())
            .env("SLACK_SIGNING_SECRET", SECRET)
            .env("SLACK_BOT_TOKEN", "xoxb-e2e")
            .env("SLACK_API_URL", rig.fake.url())
            .env("CHAOSBOT_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "CHAOSBOT_AGENT_SOCKET",
                config.with_file_name("agent/agent.sock"),
            )
            .env_remove("SLACK_APP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Served)
            .unwrap()
    };
    let port = free_port().port();
    let mut first = spawn(port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr).await;
    // Slack hangs for this process's whole life: calls are in flight (claimed) when it dies,
    // and everything else stays in the outbox.
    rig.fake.hang_next(100_000, None, Duration::from_secs(30));
    let answer = rig.slash(addr, ALICE, "start slow-api duration=60s").await;
    let id = run_id_in(&answer.to_string());
    let store = rig.store().await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let j = store.journal(&id, 0).await.unwrap();
        let in_flight = rig
            .fake
            .calls()
            .iter()
            .any(|c| c.method == "chat.postMessage");
        if j.iter().any(|e| e.event.kind() == "fault_injected") && in_flight {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let delivered = rig
        .fake
        .calls()
        .iter()
        .filter(|c| c.status == 200 && c.method != "auth.test")
        .count();
    assert_eq!(delivered, 0, "Slack hung: nothing could be delivered");

    // Slack is back; a new process recovers the run, releases the dead process's claims (no
    // waiting out their 60 s lease) and delivers the whole thread once.
    rig.fake.heal();
    let restarted = Instant::now();
    let mut second = spawn(port);
    wait_listening(addr).await;
    let calls = rig.fake.wait_for(has_board, Duration::from_secs(50)).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(40),
        "{:?}",
        restarted.elapsed()
    );
    let calls: Vec<Call> = calls.into_iter().filter(|c| c.status != 0).collect();
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert!(
        delivered_thread(&calls)
            .iter()
            .any(|t| t.contains("Recovered after a crash"))
    );
    assert_eq!(delivered_thread(&calls), expected_thread(&rig, &id).await);
    // The parent once in the channel: a hung call may have posted it before the kill (its
    // answer never came); the new process then finds it instead of posting it again.
    let parents: Vec<serde_json::Value> = rig
        .fake
        .messages()
        .into_iter()
        .filter(|m| m["thread_ts"].is_null())
        .collect();
    assert_eq!(parents.len(), 1, "{parents:#?}");
    let parent_ts = parents[0]["ts"].as_str().unwrap_or_default().to_string();
    assert!(
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.body.get("thread_ts").is_some())
            .all(|c| c.str("thread_ts") == Some(parent_ts.as_str())),
        "every reply is in that parent's thread"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(second.0.id() as libc::pid_t, libc::SIGTERM) };
    let _ = second.0.wait();
}

#[tokio::test]
async fn socket_mode_starts_a_run_from_an_envelope() {
    let mut rig = rig().await;
    rig.cfg.slack.app_token = Some(Secret("xapp-e2e".into()));
    let server = rig.start().await;
    assert!(
        rig.fake
            .wait_for_connections(1, Duration::from_secs(10))
            .await
    );
    rig.fake.push(json!({
        "envelope_id": "env-1",
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "x", "team_id": TEAM, "team_domain": "example", "channel_id": CHANNEL,
            "channel_name": "chaos", "user_id": ALICE, "user_name": "alice", "command": "/chaos",
            "text": "start slow-api duration=1s", "api_app_id": "A1",
            "response_url": "https://hooks.slack.com/commands/1/2", "trigger_id": "1.2.3"
        }
    }));
    let ack = rig
        .fake
        .wait_for_ack("env-1", Duration::from_secs(5))
        .await
        .expect("the envelope is acked");
    let id = run_id_in(&ack.to_string());
    let run = server.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held));
    let calls = rig
        .fake
        .wait_for(has_summary, Duration::from_secs(20))
        .await;
    assert_eq!(calls.iter().filter(|c| is_parent(c)).count(), 1);
    server.shutdown("test over").await;
}

#[test]
fn serve_refuses_to_start_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaosbot"))
        .current_dir(dir.path())
        .arg("serve")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("CHAOSBOT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLACK_SIGNING_SECRET"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_chaosbot"))
        .current_dir(dir.path())
        .arg("serve")
        .env("SLACK_SIGNING_SECRET", "s")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("CHAOSBOT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLACK_BOT_TOKEN"));
    assert!(
        !Path::new(&dir.path().join("chaosbot.db")).exists(),
        "nothing started"
    );
}

#[tokio::test]
async fn report_summary_week_and_the_digest_through_the_server() {
    let mut rig = rig().await;
    // The digest's moment passed a minute ago: a server starting now posts this week's digest.
    let due = chrono::Utc::now() - chrono::Duration::minutes(1);
    rig.cfg.digest = chaosbot::config::DigestConfig {
        channel: Some("CDIGEST".into()),
        weekday: chrono::Datelike::weekday(&due).to_string(),
        at: due.format("%H:%M").to_string(),
        timezone: "UTC".into(),
    };
    let server = rig.start().await;
    let calls = rig
        .fake
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| c.method == "chat.postMessage" && c.str("channel") == Some("CDIGEST"))
            },
            Duration::from_secs(30),
        )
        .await;
    let digest = calls
        .iter()
        .find(|c| c.str("channel") == Some("CDIGEST"))
        .unwrap();
    assert!(
        digest.str("text").unwrap().contains("Weekly chaos digest"),
        "{:?}",
        digest.body
    );
    assert!(
        digest.body["blocks"]
            .to_string()
            .contains("Chaos summary of the past week")
    );

    let id = run_id_in(
        &rig.slash(server.addr, ALICE, "start slow-api duration=1s")
            .await
            .to_string(),
    );
    let run = server.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);

    let week = rig
        .slash(server.addr, ALICE, "summary week")
        .await
        .to_string();
    assert!(week.contains("*1 run(s)*: 1 held · 0 deviated"), "{week}");

    // As messages: markdown blocks in the channel.
    let answer = rig.slash(server.addr, ALICE, &format!("report {id}")).await;
    assert!(
        answer.to_string().contains("Posting the learning record"),
        "{answer}"
    );
    let heading = format!("# Learning record: run `{id}`");
    let calls = rig
        .fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.postMessage"
                        && c.body["blocks"][0]["type"] == "markdown"
                        && c.body["blocks"][0]["text"]
                            .as_str()
                            .is_some_and(|t| t.starts_with(&heading))
                })
            },
            Duration::from_secs(30),
        )
        .await;
    let post = calls
        .iter()
        .find(|c| c.body["blocks"][0]["type"] == "markdown")
        .unwrap();
    assert_eq!(post.str("channel"), Some(CHANNEL));

    // As a file: the external upload flow, shared in the channel.
    let answer = rig
        .slash(server.addr, ALICE, &format!("report {id} as file"))
        .await;
    assert!(answer.to_string().contains("Uploading"), "{answer}");
    let is_record = |c: &Call| {
        c.method == "files.completeUploadExternal"
            && c.body["files"][0]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Learning record"))
    };
    let calls = rig
        .fake
        .wait_for(|c| c.iter().any(is_record), Duration::from_secs(30))
        .await;
    let done = calls.iter().find(|c| is_record(c)).unwrap();
    assert_eq!(done.str("channel_id"), Some(CHANNEL));
    let file_id = done.body["files"][0]["id"].as_str().unwrap().to_string();
    let bytes = rig
        .fake
        .uploads()
        .remove(&file_id)
        .expect("the bytes were uploaded");
    let md = String::from_utf8(bytes).unwrap();
    assert!(md.starts_with(&heading), "{md}");
    assert!(md.contains("Verdict: **HELD**"), "{md}");
    let ticket = calls
        .iter()
        .find(|c| {
            c.method == "files.getUploadURLExternal"
                && c.str("filename").is_some_and(|f| f.ends_with(".md"))
        })
        .unwrap();
    assert_eq!(
        ticket.str("filename"),
        Some(format!("chaosbot-{id}.md").as_str())
    );
    assert_eq!(ticket.str("length"), Some(md.len().to_string().as_str()));

    // The digest was posted once.
    let digests = rig
        .fake
        .calls()
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.str("channel") == Some("CDIGEST"))
        .count();
    assert_eq!(digests, 1);
    server.shutdown("test over").await;
}

/// One run per target from Slack: a second `start` on the target a running run holds is
/// queued behind it (its answer and its parent message say so, with its position) and starts
/// once the holder ends.
#[tokio::test]
async fn a_second_start_on_a_held_target_waits_in_the_queue_behind_it() {
    let rig = rig().await;
    let server = rig.start().await;
    let first = run_id_in(
        &rig.slash(server.addr, ALICE, "start slow-api duration=2s")
            .await
            .to_string(),
    );
    // The first run holds `api` once a worker claims it.
    let store = rig.store().await;
    for _ in 0..100 {
        if store
            .get_run(&first)
            .await
            .unwrap()
            .is_some_and(|r| r.state != RunState::Queued)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = rig
        .slash(server.addr, ALICE, "start slow-api duration=1s")
        .await
        .to_string();
    let second = run_id_in(&answer);
    assert_ne!(first, second);
    assert!(
        answer.contains(&format!("queued behind `{first}` (holds `api`)"))
            && answer.contains("position 1"),
        "{answer}"
    );
    let calls = rig
        .fake
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| is_parent(c) && c.body["blocks"].to_string().contains(&second))
            },
            Duration::from_secs(20),
        )
        .await;
    let parent = calls
        .iter()
        .find(|c| is_parent(c) && c.body["blocks"].to_string().contains(&second))
        .map(|c| c.body["blocks"].to_string())
        .unwrap_or_default();
    assert!(
        parent.contains(&format!("Queued behind `{first}` (holds `api`)")),
        "{parent}"
    );
    let a = server.engine.wait(&first).await.unwrap();
    let b = server.engine.wait(&second).await.unwrap();
    assert_eq!(a.verdict, Some(Verdict::Held), "{:?}", a.reason);
    assert_eq!(b.verdict, Some(Verdict::Held), "{:?}", b.reason);
    assert!(b.started_ms.unwrap() >= a.finished_ms.unwrap());
}

#[tokio::test]
async fn serve_keeps_its_proxies_up_on_an_idle_local_agent() {
    let rig = rig().await;
    let config = rig.dir.path().join("chaosbot.toml");
    let p = &rig.cfg.targets.proxy[0];
    std::fs::write(
        &config,
        format!(
            "catalog = \"experiments\"\n[agent]\nlease_ttl = \"1s\"\nrenew_every = \"300ms\"\n[[targets.proxy]]\nname = \"api\"\nlisten = \"{}\"\nupstream = \"{}\"\n[slack]\nteam_id = \"{TEAM}\"\n",
            p.listen, p.upstream
        ),
    )
    .unwrap();
    let port = free_port().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_chaosbot"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("DATABASE_URL", rig.cfg.database_url())
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("SLACK_BOT_TOKEN", "xoxb-e2e")
        .env("SLACK_API_URL", rig.fake.url())
        .env("CHAOSBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "CHAOSBOT_AGENT_SOCKET",
            config.with_file_name("agent/agent.sock"),
        )
        // An agent that would leave after 2 s without a request.
        .env("CHAOSBOT_AGENT_IDLE_EXIT", "2s")
        .env_remove("SLACK_APP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Served)
        .unwrap();
    wait_listening(format!("127.0.0.1:{port}").parse().unwrap()).await;
    // No run, no fault: only the server relies on the proxy. Well past the agent's idle
    // time, the proxy still carries traffic.
    let listen = p.listen;
    for answered in 0..10 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(listen),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        assert!(
            ok,
            "the proxy at {listen} stopped accepting after {answered} checks"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
    let _ = server.0.wait();
}
