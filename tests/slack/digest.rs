//! The weekly digest with a clock the test moves: posted once when its time passes, not again
//! within the week, once when two replicas (two tasks, two store handles) race for it; then
//! delivered through the real outbox to a fake Slack. Also the file upload flow of
//! `/chaos report <run> as file` against the fake Slack.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::clock::{Clock, DynClock, ManualClock};
use chaosbot::config::{Config, DigestConfig};
use chaosbot::run::{Event, now_ms};
use chaosbot::run::{RollbackOutcome, Verdict};
use chaosbot::slack::api::{HttpSlackApi, SlackApi, upload_file};
use chaosbot::slack::digest::{DigestTask, latest_due};
use chaosbot::slack::outbox::{Outbox, OutboxOptions};
use chaosbot::store::learning::NewQuestion;
use chaosbot::store::{self, DynStore, NewRun};
use chrono::{Datelike, Timelike};
use support::fake_slack::FakeSlack;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "CDIGEST";
const MINUTE: i64 = 60_000;
const WAIT: Duration = Duration::from_secs(20);

/// A digest due about an hour from now (UTC), so runs created now fall in its week.
fn due_in_an_hour() -> (DigestConfig, i64) {
    let due = chrono::Utc::now() + chrono::Duration::hours(1);
    let due = due
        .with_second(0)
        .and_then(|d| d.with_nanosecond(0))
        .unwrap();
    let cfg = DigestConfig {
        channel: Some(CHANNEL.into()),
        weekday: due.weekday().to_string(),
        at: due.format("%H:%M").to_string(),
        timezone: "UTC".into(),
    };
    (cfg, due.timestamp_millis())
}

fn task(store: &DynStore, clock: &Arc<ManualClock>, cfg: &DigestConfig, name: &str) -> DigestTask {
    let clock: DynClock = clock.clone();
    DigestTask {
        store: store.clone(),
        clock,
        channel: cfg.enabled_channel().unwrap().to_string(),
        time: cfg.time().unwrap(),
        poll: Duration::from_millis(20),
        instance: name.into(),
        notify: Arc::new(|| {}),
    }
}

async fn seed(store: &DynStore, id: &str, verdict: Verdict, rollback: RollbackOutcome) {
    let run = NewRun {
        id: id.into(),
        experiment: format!("exp-{id}"),
        title: format!("Title of {id}"),
        spec: serde_json::json!({"name": format!("exp-{id}")}),
        params: Default::default(),
        seed: 1,
        requested_by: "U1".into(),
        source: "slack:T1:CCHAOS:U1".into(),
    };
    let submitted = Event::Submitted {
        experiment: run.experiment.clone(),
        title: run.title.clone(),
        requested_by: "U1".into(),
        source: run.source.clone(),
        params: Default::default(),
        seed: 1,
        targets: vec![],
    };
    store.create_run(run, submitted).await.unwrap();
    store
        .finish_run(id, verdict, rollback, "seeded")
        .await
        .unwrap();
}

async fn digest_once(url: String) {
    let store_a = store::open(&url).await.unwrap();
    // A second handle on the same database: another replica.
    let store_b = store::open(&url).await.unwrap();
    seed(
        &store_a,
        "r-held000001",
        Verdict::Held,
        RollbackOutcome::Reverted,
    )
    .await;
    seed(
        &store_a,
        "r-deviated01",
        Verdict::Deviated,
        RollbackOutcome::Reverted,
    )
    .await;
    seed(
        &store_a,
        "r-failed0001",
        Verdict::Failed,
        RollbackOutcome::RevertFailed,
    )
    .await;
    store_a
        .add_question(&NewQuestion {
            run_id: "r-deviated01".into(),
            channel: "CCHAOS".into(),
            ts: "1.1".into(),
            asked_by: "UQ".into(),
            text: "what broke first?".into(),
            asked_ms: now_ms(),
        })
        .await
        .unwrap();

    let (cfg, due) = due_in_an_hour();
    let clock = ManualClock::new(now_ms());
    let a = task(&store_a, &clock, &cfg, "replica-a");
    let b = task(&store_b, &clock, &cfg, "replica-b");

    // Before its time: last week's digest is long past its catch-up window; nothing is posted.
    assert_eq!(a.tick().await.unwrap(), None);
    assert_eq!(store_a.pending_count().await.unwrap(), 0);

    // Past its time: both replicas run their loops; exactly one posts it.
    clock.set(due + MINUTE);
    let week = latest_due(&cfg.time().unwrap(), clock.now_ms()).unwrap();
    assert_eq!(week.due_ms, due);
    let stop = CancellationToken::new();
    let ha = tokio::spawn(a.run(stop.clone()));
    let hb = tokio::spawn(b.run(stop.clone()));
    let start = Instant::now();
    let record = loop {
        if let Some(r) = store_a.digest(week.start_ms).await.unwrap() {
            break r;
        }
        assert!(start.elapsed() < WAIT, "no digest within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(record.channel, CHANNEL);
    assert_eq!(record.period_end_ms, due);
    let queued = store_a.pending_count().await.unwrap();
    assert!(queued >= 1);
    // Let both loops tick many more times within the same week: nothing more is queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.set(due + 2 * 24 * 60 * MINUTE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store_a.pending_count().await.unwrap(),
        queued,
        "once a week"
    );
    stop.cancel();
    for h in [ha, hb] {
        tokio::time::timeout(WAIT, h).await.unwrap().unwrap();
    }

    // A restarted task in the same week posts nothing either.
    let again = task(&store_b, &clock, &cfg, "restarted");
    assert_eq!(again.tick().await.unwrap(), None);

    // Delivered through the real outbox to Slack: what the digest says.
    let slack = FakeSlack::start().await;
    let api: Arc<dyn SlackApi> = Arc::new(HttpSlackApi::new(&slack.url(), "xoxb-test").unwrap());
    let outbox = Outbox::new(
        store_a.clone(),
        api,
        OutboxOptions {
            owner: "digest-test".into(),
            poll_interval: Duration::from_millis(50),
            ..OutboxOptions::default()
        },
    );
    let handle = outbox.start();
    // The digest's pages, then the week's chart in its thread.
    let pages = queued as usize - 1;
    let calls = slack
        .wait_for(
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.method == "chat.postMessage" && c.status == 200)
                    .count()
                    >= pages
                    && calls
                        .iter()
                        .any(|c| c.method == "files.completeUploadExternal" && c.status == 200)
            },
            WAIT,
        )
        .await;
    outbox.shutdown();
    let _ = tokio::time::timeout(WAIT, handle).await;
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    assert_eq!(posts.len(), pages);
    let shared: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "files.completeUploadExternal" && c.status == 200)
        .collect();
    assert_eq!(shared.len(), 1, "the week's chart is shared once");
    assert_eq!(shared[0].str("channel_id"), Some(CHANNEL));
    assert!(
        shared[0].str("thread_ts").is_some(),
        "in the digest's thread"
    );
    let file_id = shared[0].body["files"][0]["id"].as_str().unwrap();
    let png = slack.uploads().remove(file_id).expect("the chart's bytes");
    assert!(
        png.len() > 5_000 && png.len() < 1_000_000,
        "{} bytes",
        png.len()
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(&png[..]))
        .read_info()
        .expect("a PNG");
    let mut px = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut px).expect("PNG pixels");
    assert_eq!((info.width, info.height), (1200, 420));
    // Today's bar holds the three seeded runs: held (green), deviated (red), failed (brown).
    let has =
        |want: (u8, u8, u8)| px.chunks(3).filter(|p| (p[0], p[1], p[2]) == want).count() > 500;
    assert!(has((44, 160, 44)) && has((214, 39, 40)) && has((140, 86, 75)));
    assert_eq!(posts[0].str("channel"), Some(CHANNEL));
    assert!(
        posts[0]
            .str("text")
            .unwrap()
            .starts_with(":calendar: Weekly chaos digest"),
        "{:?}",
        posts[0].body
    );
    let text: String = posts
        .iter()
        .flat_map(|p| p.body["blocks"].as_array().cloned().unwrap_or_default())
        .map(|b| b["text"]["text"].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "*Chaos summary of the past week*",
        "*3 run(s)*: 1 held · 1 deviated · 0 aborted · 1 failed",
        "*1 run(s) could not revert*",
        "• `r-deviated01` *exp-r-deviated01*",
        "*Open questions (1)*",
        "on `r-deviated01`: “what broke first?” — <@UQ>",
        "*Next scheduled runs:*",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    // Next week's digest is its own.
    clock.set(due + 7 * 24 * 60 * MINUTE + MINUTE);
    let next = task(&store_b, &clock, &cfg, "replica-b");
    let posted = next.tick().await.unwrap().expect("next week's digest");
    assert_eq!(posted.start_ms, due);
    assert_eq!(next.tick().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digest_is_posted_once_per_week_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    digest_once(format!(
        "sqlite://{}",
        dir.path().join("chaosbot.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digest_is_posted_once_per_week_on_postgres() {
    support::with_postgres(digest_once).await;
}

#[test]
fn digest_settings_are_checked() {
    let cfg = Config::from_toml("[digest]\nchannel = \"C1\"\n").unwrap();
    cfg.validate().unwrap();
    let t = cfg.digest.time().unwrap();
    assert_eq!(t.weekday, chrono::Weekday::Mon, "monday by default");
    assert_eq!(t.at.format("%H:%M").to_string(), "09:00");
    assert_eq!(
        Config::default().digest.enabled_channel(),
        None,
        "off by default"
    );
    for (toml, expect) in [
        ("timezone = \"Mars/Olympus\"", "not a time zone"),
        ("weekday = \"someday\"", "not a day of the week"),
        ("at = \"9am\"", "HH:MM"),
    ] {
        let cfg = Config::from_toml(&format!("[digest]\nchannel = \"C1\"\n{toml}\n")).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(expect), "{toml}: {err}");
    }
}

#[tokio::test]
async fn report_file_goes_through_the_external_upload_flow() {
    let slack = FakeSlack::start().await;
    let api = HttpSlackApi::new(&slack.url(), "xoxb-test").unwrap();
    let body = "# Learning record\n\nsome text\n".repeat(50);
    let file_id = upload_file(
        &api,
        "CREPORT",
        "chaosbot-r-1.md",
        "Record",
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        slack.uploads().get(&file_id).map(Vec::as_slice),
        Some(body.as_bytes())
    );
    let ticket = &slack.calls_of("files.getUploadURLExternal")[0];
    assert_eq!(ticket.str("filename"), Some("chaosbot-r-1.md"));
    assert_eq!(ticket.str("length"), Some(body.len().to_string().as_str()));
    assert_eq!(
        ticket.headers.get("authorization").map(String::as_str),
        Some("Bearer xoxb-test")
    );
    let done = &slack.calls_of("files.completeUploadExternal")[0];
    assert_eq!(done.str("channel_id"), Some("CREPORT"));
    assert_eq!(done.body["files"][0]["id"], file_id.as_str());
    assert_eq!(done.body["files"][0]["title"], "Record");

    // Slack refusing the ticket stops the flow with Slack's reason.
    slack.refuse_next(1, Some("files.getUploadURLExternal"), "not_authed");
    let err = upload_file(&api, "CREPORT", "x.md", "x", b"x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not_authed"), "{err}");
    assert_eq!(slack.uploads().len(), 1, "nothing uploaded");
}
