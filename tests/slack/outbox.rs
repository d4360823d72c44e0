//! Outbox delivery end to end: real stores (SQLite always, Postgres with TEST_POSTGRES_URL),
//! the HTTP Web API client, and a fake Slack on loopback.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chaosbot::slack::api::{ApiError, HttpSlackApi, SlackApi};
use chaosbot::slack::outbox::{Outbox, OutboxOptions};
use chaosbot::store::DynStore;
use chaosbot::store::outbox::{OutboundAction, OutboundMessage, OutboxState};
use serde_json::json;
use support::fake_slack::{Call, FakeSlack};

const WAIT: Duration = Duration::from_secs(20);

fn opts(owner: &str) -> OutboxOptions {
    OutboxOptions {
        owner: owner.into(),
        poll_interval: Duration::from_millis(50),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        // Pacing has its own test (`three_replicas_pace_posts_per_channel`).
        post_interval: Duration::ZERO,
        ..OutboxOptions::default()
    }
}

fn api(slack: &FakeSlack) -> Arc<dyn SlackApi> {
    Arc::new(HttpSlackApi::new(&slack.url(), "xoxb-test").unwrap())
}

fn start(
    store: &DynStore,
    api: Arc<dyn SlackApi>,
    owner: &str,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let outbox = Outbox::new(store.clone(), api, opts(owner));
    let handle = outbox.start();
    (outbox, handle)
}

async fn stop(outbox: Outbox, handle: tokio::task::JoinHandle<()>) {
    outbox.shutdown();
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("outbox stops in time")
        .unwrap();
}

fn post(
    thread: &str,
    channel: &str,
    key: Option<&str>,
    parent: Option<&str>,
    text: &str,
) -> OutboundMessage {
    OutboundMessage {
        thread_key: thread.into(),
        channel: channel.into(),
        action: OutboundAction::Post {
            key: key.map(Into::into),
            in_thread_of: parent.map(Into::into),
            text: text.into(),
            blocks: None,
        },
    }
}

fn update(thread: &str, channel: &str, key: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        thread_key: thread.into(),
        channel: channel.into(),
        action: OutboundAction::Update {
            key: key.into(),
            text: text.into(),
            blocks: None,
            revision: None,
        },
    }
}

/// Successful calls of `method`.
fn ok_calls(calls: &[Call], method: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.method == method && c.status == 200)
        .cloned()
        .collect()
}

fn texts(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.str("text").unwrap_or("").to_string())
        .collect()
}

async fn sqlite(dir: &tempfile::TempDir) -> DynStore {
    support::sqlite_store(dir.path()).await
}

async fn postgres(url: &str) -> DynStore {
    chaosbot::store::open(url).await.unwrap()
}

async fn wait_no_pending(store: &DynStore) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.pending_count().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows still pending: {:#?}",
            store.outbox_rows(None).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- behaviours

async fn order_and_thread_ts(store: DynStore) {
    let slack = FakeSlack::start().await;
    let mut batch = vec![post("run:a", "CA", Some("a:parent"), None, "a0")];
    for i in 1..=5 {
        batch.push(post(
            "run:a",
            "CA",
            None,
            Some("a:parent"),
            &format!("a{i}"),
        ));
    }
    batch.push(post("run:b", "CB", Some("b:parent"), None, "b0"));
    for i in 1..=3 {
        batch.push(post(
            "run:b",
            "CB",
            None,
            Some("b:parent"),
            &format!("b{i}"),
        ));
    }
    store.enqueue(&batch, Some(("a", 7))).await.unwrap();
    assert_eq!(store.render_cursor("a").await.unwrap(), 7);
    let (outbox, handle) = start(&store, api(&slack), "o1");
    outbox.notify();
    let calls = slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() >= 10, WAIT)
        .await;
    stop(outbox, handle).await;
    for (ch, prefix, n) in [("CA", "a", 5), ("CB", "b", 3)] {
        let of: Vec<Call> = ok_calls(&calls, "chat.postMessage")
            .into_iter()
            .filter(|c| c.str("channel") == Some(ch))
            .collect();
        let expected: Vec<String> = (0..=n).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(texts(&of), expected);
        let parent_ts = store
            .message_ref(&format!("{prefix}:parent"))
            .await
            .unwrap()
            .unwrap()
            .ts;
        assert!(of[0].body.get("thread_ts").is_none());
        for reply in &of[1..] {
            assert_eq!(reply.str("thread_ts"), Some(parent_ts.as_str()));
        }
    }
    assert!(calls.iter().all(|c| c.headers.get("authorization").map(String::as_str) == Some("Bearer xoxb-test")));
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

async fn coalesces_updates(store: DynStore) {
    let slack = FakeSlack::start().await;
    let (outbox, handle) = start(&store, api(&slack), "o1");
    store
        .enqueue(
            &[post("run:c", "CC", Some("c:parent"), None, "parent")],
            None,
        )
        .await
        .unwrap();
    outbox.notify();
    slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() == 1, WAIT)
        .await;
    for i in 0..10 {
        store
            .enqueue(&[update("run:c", "CC", "c:parent", &format!("u{i}"))], None)
            .await
            .unwrap();
        outbox.notify();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slack
        .wait_for(
            |c| {
                texts(&ok_calls(c, "chat.update"))
                    .last()
                    .map(String::as_str)
                    == Some("u9")
            },
            WAIT,
        )
        .await;
    wait_no_pending(&store).await;
    // Nothing else may follow within the next window.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop(outbox, handle).await;
    let updates = slack.calls_of("chat.update");
    assert!(updates.len() <= 2, "{} chat.update calls", updates.len());
    let ts = store.message_ref("c:parent").await.unwrap().unwrap().ts;
    assert!(updates.iter().all(|u| u.str("ts") == Some(ts.as_str())));
    if updates.len() == 2 {
        let gap = updates[1].at - updates[0].at;
        assert!(gap >= Duration::from_millis(950), "updates {gap:?} apart");
    }
    let rows = store.outbox_rows(Some("run:c")).await.unwrap();
    assert!(rows.iter().all(|r| r.state == OutboxState::Delivered));
    let superseded = rows
        .iter()
        .filter(|r| r.last_error.as_deref() == Some("superseded by a newer update"))
        .count();
    assert_eq!(superseded, 10 - updates.len());
}

fn update_rev(thread: &str, key: &str, revision: i64, text: &str) -> OutboundMessage {
    OutboundMessage {
        thread_key: thread.into(),
        channel: "CR".into(),
        action: OutboundAction::Update {
            key: key.into(),
            text: text.into(),
            blocks: None,
            revision: Some(revision),
        },
    }
}

/// Updates that carry a revision (a Q&A board several replicas render) are ordered by it, not
/// by when they were queued: replicas render 1, 2, 3 but queue them 3, 1, 2; Slack must end
/// on revision 3, and a revision-2 render queued after 3 is shown must never be sent.
async fn revisions_beat_queue_order(store: DynStore) {
    let slack = FakeSlack::start().await;
    store
        .enqueue(
            &[post("run:r", "CR", Some("r:board"), None, "board r0")],
            None,
        )
        .await
        .unwrap();
    // Queued before any delivery runs, so all three are pending together.
    for (rev, text) in [(3, "board r3"), (1, "board r1"), (2, "board r2")] {
        store
            .enqueue(&[update_rev("run:r", "r:board", rev, text)], None)
            .await
            .unwrap();
    }
    let (outbox, handle) = start(&store, api(&slack), "o1");
    outbox.notify();
    wait_no_pending(&store).await;
    let shown = texts(&ok_calls(&slack.calls(), "chat.update"));
    assert_eq!(shown, vec!["board r3".to_string()], "updates sent");

    // A slow replica's older render arrives after revision 3 is on screen.
    store
        .enqueue(&[update_rev("run:r", "r:board", 2, "board r2 late")], None)
        .await
        .unwrap();
    outbox.notify();
    wait_no_pending(&store).await;
    // Past the update window, so a wrongly sent update would have gone out by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop(outbox, handle).await;
    let shown = texts(&ok_calls(&slack.calls(), "chat.update"));
    assert_eq!(shown, vec!["board r3".to_string()], "updates sent");
    let rows = store.outbox_rows(Some("run:r")).await.unwrap();
    assert!(rows.iter().all(|r| r.state == OutboxState::Delivered));
}

async fn honours_retry_after(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.rate_limit_next(1, Some("chat.postMessage"), 2);
    store
        .enqueue(
            &[
                post("run:r", "CR", None, None, "r0"),
                post("run:r", "CR", None, None, "r1"),
            ],
            None,
        )
        .await
        .unwrap();
    let (outbox, handle) = start(&store, api(&slack), "o1");
    let calls = slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() == 2, WAIT)
        .await;
    stop(outbox, handle).await;
    let posts = slack.calls_of("chat.postMessage");
    assert_eq!(posts[0].status, 429);
    // No call of the method before Retry-After elapsed.
    let gap = posts[1].at - posts[0].at;
    assert!(gap >= Duration::from_millis(1990), "retried after {gap:?}");
    assert_eq!(
        texts(&ok_calls(&calls, "chat.postMessage")),
        vec!["r0", "r1"]
    );
}

/// A 429 on a post holds posts to that channel only: another channel's thread goes on at
/// once, while the first one waits out its Retry-After.
async fn a_posts_429_holds_only_its_channel(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.rate_limit_next(1, Some("chat.postMessage"), 3);
    store
        .enqueue(&[post("run:busy", "CBUSY", None, None, "b0")], None)
        .await
        .unwrap();
    let (outbox, handle) = start(&store, api(&slack), "o1");
    slack.wait_for(|c| !c.is_empty(), WAIT).await;
    store
        .enqueue(
            &[
                post("run:quiet", "CQUIET", None, None, "q0"),
                post("run:busy", "CBUSY", None, None, "b1"),
            ],
            None,
        )
        .await
        .unwrap();
    outbox.notify();
    let calls = slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() == 3, WAIT)
        .await;
    stop(outbox, handle).await;
    let posts = slack.calls_of("chat.postMessage");
    assert_eq!(
        (posts[0].status, posts[0].str("channel")),
        (429, Some("CBUSY"))
    );
    let quiet = posts
        .iter()
        .find(|c| c.str("channel") == Some("CQUIET"))
        .unwrap();
    let waited = quiet.at - posts[0].at;
    assert!(
        waited < Duration::from_millis(1500),
        "the other channel's post went after {waited:?}, not after the busy one's Retry-After"
    );
    let busy: Vec<&Call> = posts
        .iter()
        .filter(|c| c.str("channel") == Some("CBUSY") && c.status == 200)
        .collect();
    assert!(
        busy[0].at - posts[0].at >= Duration::from_millis(2990),
        "the busy channel waited out its Retry-After: {:?}",
        busy[0].at - posts[0].at
    );
    assert_eq!(
        texts(&ok_calls(&calls, "chat.postMessage")),
        vec!["q0", "b0", "b1"]
    );
}

async fn retries_5xx_and_hangs(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.fail_next(3, Some("chat.postMessage"), 500);
    slack.fail_next(1, Some("chat.postMessage"), 503);
    slack.hang_next(1, Some("chat.postMessage"), Duration::from_secs(3));
    let api: Arc<dyn SlackApi> = Arc::new(
        HttpSlackApi::new(&slack.url(), "xoxb-test")
            .unwrap()
            .with_timeout(Duration::from_millis(300)),
    );
    let batch: Vec<_> = (0..4)
        .map(|i| post("run:s", "CS", None, None, &format!("s{i}")))
        .collect();
    store.enqueue(&batch, None).await.unwrap();
    let (outbox, handle) = start(&store, api, "o1");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    // The hung call posted s0 (its answer came too late): found, not posted again.
    let seen: Vec<String> = slack
        .messages()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(seen, vec!["s0", "s1", "s2", "s3"], "each once, in order");
    let rows = store.outbox_rows(Some("run:s")).await.unwrap();
    assert!(
        rows[0].attempts >= 6,
        "first row took {} attempts",
        rows[0].attempts
    );
}

/// How often each text was posted, as Slack shows the channel.
fn posted_counts(slack: &FakeSlack) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in slack.messages() {
        *counts
            .entry(m["text"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// How many times the outbox looked a post up in Slack.
fn lookups_made(slack: &FakeSlack) -> usize {
    slack
        .calls()
        .iter()
        .filter(|c| c.method.starts_with("conversations."))
        .count()
}

/// A post whose answer never comes (the call times out, or its process dies mid-call) is in
/// the channel already: the next attempt finds it by its metadata and does not post it again,
/// for a top-level post and for a reply in its thread, whoever makes that attempt.
async fn a_post_whose_answer_is_lost_is_not_sent_again(store: DynStore) {
    let slack = FakeSlack::start().await;
    let short: Arc<dyn SlackApi> = Arc::new(
        HttpSlackApi::new(&slack.url(), "xoxb-test")
            .unwrap()
            .with_timeout(Duration::from_millis(300)),
    );
    // The parent's answer and its first reply's answer come after the client gave up.
    slack.hang_next(2, Some("chat.postMessage"), Duration::from_secs(1));
    store
        .enqueue(
            &[
                post("run:l", "CL", Some("l:parent"), None, "l-parent"),
                post("run:l", "CL", None, Some("l:parent"), "l-reply"),
            ],
            None,
        )
        .await
        .unwrap();
    let (outbox, handle) = start(&store, short, "lost-answer");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let counts = posted_counts(&slack);
    assert_eq!(counts.get("l-parent"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("l-reply"), Some(&1), "{counts:?}");
    let parent = store.message_ref("l:parent").await.unwrap().unwrap();
    let messages = slack.messages();
    assert_eq!(
        messages[0]["ts"].as_str(),
        Some(parent.ts.as_str()),
        "the ts found is the one Slack gave"
    );
    assert_eq!(
        messages[1]["thread_ts"].as_str(),
        Some(parent.ts.as_str()),
        "the reply is in its thread"
    );
    let lookups = lookups_made(&slack);
    assert!(
        lookups >= 2,
        "each unanswered post was looked up: {lookups}"
    );

    // The process dies mid-call (its calls dropped, as by kill -9): another delivers the row
    // and finds it posted.
    slack.hang_next(1, Some("chat.postMessage"), Duration::from_secs(3));
    store
        .enqueue(&[post("run:k", "CL", None, None, "k-top")], None)
        .await
        .unwrap();
    let dying = Outbox::new(
        store.clone(),
        api(&slack),
        OutboxOptions {
            shutdown_grace: Duration::from_millis(50),
            ..opts("dies-mid-call")
        },
    );
    let dying_handle = dying.start();
    slack
        .wait_for(
            |c| c.iter().any(|c| c.body.to_string().contains("k-top")),
            WAIT,
        )
        .await;
    stop(dying, dying_handle).await;
    let (outbox, handle) = start(&store, api(&slack), "successor");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let counts = posted_counts(&slack);
    assert_eq!(counts.get("k-top"), Some(&1), "{counts:?}");
    // Posts that got their answer are not looked up.
    let lookups_after = lookups_made(&slack);
    assert_eq!(
        lookups_after,
        lookups + 1,
        "one lookup for the dropped call"
    );
}

fn upload(thread: &str, channel: &str, parent: Option<&str>, filename: &str) -> OutboundMessage {
    use base64::Engine as _;
    OutboundMessage {
        thread_key: thread.into(),
        channel: channel.into(),
        action: OutboundAction::Upload {
            in_thread_of: parent.map(Into::into),
            filename: filename.into(),
            title: format!("chart {filename}"),
            content_base64: base64::engine::general_purpose::STANDARD.encode(b"\x89PNG fake chart"),
        },
    }
}

/// How many messages in Slack share a file named `filename` (the fake keeps the title).
fn shared_counts(slack: &FakeSlack) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in slack.messages() {
        for f in m["files"].as_array().into_iter().flatten() {
            *counts
                .entry(f["title"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// An upload whose sharing call got no answer (or whose process died mid-call) is in Slack
/// already: the next attempt finds the message carrying its file and does not share the
/// chart a second time, in a thread and at the top of a channel.
async fn an_upload_whose_answer_is_lost_is_not_shared_again(store: DynStore) {
    let slack = FakeSlack::start().await;
    let short: Arc<dyn SlackApi> = Arc::new(
        HttpSlackApi::new(&slack.url(), "xoxb-test")
            .unwrap()
            .with_timeout(Duration::from_millis(300)),
    );
    // Both sharing calls are carried out, and answered after the client gave up.
    slack.hang_next(
        2,
        Some("files.completeUploadExternal"),
        Duration::from_secs(1),
    );
    store
        .enqueue(
            &[
                post("run:u", "CU", Some("u:parent"), None, "u-parent"),
                upload("run:u", "CU", Some("u:parent"), "u-thread.png"),
            ],
            None,
        )
        .await
        .unwrap();
    store
        .enqueue(&[upload("digest:u", "CU", None, "u-top.png")], None)
        .await
        .unwrap();
    let (outbox, handle) = start(&store, short, "lost-upload");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let counts = shared_counts(&slack);
    assert_eq!(counts.get("chart u-thread.png"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("chart u-top.png"), Some(&1), "{counts:?}");
    let parent = store.message_ref("u:parent").await.unwrap().unwrap();
    let in_thread = slack
        .messages()
        .into_iter()
        .find(|m| m["files"][0]["title"] == "chart u-thread.png")
        .unwrap();
    assert_eq!(in_thread["thread_ts"].as_str(), Some(parent.ts.as_str()));
    for row in store.outbox_rows(None).await.unwrap() {
        assert_eq!(row.state, OutboxState::Delivered, "{row:?}");
    }
    assert!(
        lookups_made(&slack) >= 2,
        "each unanswered upload was looked up"
    );

    // The upload's answer never came because its sender died; a successor finds it shared.
    slack.hang_next(
        1,
        Some("files.completeUploadExternal"),
        Duration::from_secs(3),
    );
    store
        .enqueue(&[upload("digest:k", "CU", None, "k-top.png")], None)
        .await
        .unwrap();
    let dying = Outbox::new(
        store.clone(),
        api(&slack),
        OutboxOptions {
            shutdown_grace: Duration::from_millis(50),
            ..opts("dies-mid-upload")
        },
    );
    let dying_handle = dying.start();
    slack
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| c.method == "files.completeUploadExternal" && c.status == 0)
            },
            WAIT,
        )
        .await;
    stop(dying, dying_handle).await;
    let (outbox, handle) = start(&store, api(&slack), "upload-successor");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let counts = shared_counts(&slack);
    assert_eq!(counts.get("chart k-top.png"), Some(&1), "{counts:?}");
}

/// A bot token Slack does not take (revoked, expired, mistyped) fails no message: the rows
/// wait, and once Slack takes the calls again (the token fixed, the process restarted) the
/// thread is delivered whole, in order, each line once.
async fn a_refused_token_holds_the_rows_until_slack_takes_them(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.refuse_next(6, None, "invalid_auth");
    let batch = vec![
        post("run:a", "CA", Some("a:parent"), None, "a-parent"),
        post("run:a", "CA", None, Some("a:parent"), "a1"),
        post("run:a", "CA", None, Some("a:parent"), "a2"),
        post("run:b", "CB", None, None, "b-top"),
    ];
    store.enqueue(&batch, None).await.unwrap();
    let (outbox, handle) = start(&store, api(&slack), "token");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    // Six refused calls, then one per line.
    assert_eq!(slack.calls_of("chat.postMessage").len(), 6 + 4);
    let counts = posted_counts(&slack);
    for text in ["a-parent", "a1", "a2", "b-top"] {
        assert_eq!(counts.get(text), Some(&1), "{text}: {counts:?}");
    }
    let order: Vec<String> = slack
        .messages()
        .iter()
        .filter(|m| m["channel"] == "CA")
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, vec!["a-parent", "a1", "a2"]);
    for row in store.outbox_rows(None).await.unwrap() {
        assert_eq!(row.state, OutboxState::Delivered, "{row:?}");
    }
}

/// Slack's transient errors (`internal_error`, `service_unavailable`, ...) answered with
/// HTTP 200 are tried again, not taken as a refusal of the message: each line once.
async fn slacks_transient_errors_are_tried_again(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.refuse_next(1, Some("chat.postMessage"), "internal_error");
    slack.refuse_next(1, Some("chat.postMessage"), "service_unavailable");
    store
        .enqueue(
            &[
                post("run:t", "CT", Some("t:parent"), None, "t-parent"),
                post("run:t", "CT", None, Some("t:parent"), "t1"),
            ],
            None,
        )
        .await
        .unwrap();
    let (outbox, handle) = start(&store, api(&slack), "transient");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let counts = posted_counts(&slack);
    assert_eq!(counts.get("t-parent"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("t1"), Some(&1), "{counts:?}");
    for row in store.outbox_rows(None).await.unwrap() {
        assert_eq!(row.state, OutboxState::Delivered, "{row:?}");
    }
}

async fn survives_restart(store: DynStore, reopen: impl AsyncFnOnce() -> DynStore) {
    let slack = FakeSlack::start().await;
    slack.fail_next(10_000, None, 500);
    let batch: Vec<_> = (0..5)
        .map(|i| post("run:t", "CT", None, None, &format!("t{i}")))
        .collect();
    store.enqueue(&batch, Some(("t", 3))).await.unwrap();
    let (outbox, handle) = start(&store, api(&slack), "first");
    slack.wait_for(|c| !c.is_empty(), WAIT).await;
    stop(outbox, handle).await;
    drop(store);
    slack.heal();
    let store = reopen().await;
    assert_eq!(store.render_cursor("t").await.unwrap(), 3);
    let (outbox, handle) = start(&store, api(&slack), "second");
    let calls = slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() >= 5, WAIT)
        .await;
    wait_no_pending(&store).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(outbox, handle).await;
    assert_eq!(
        texts(&ok_calls(&calls, "chat.postMessage")),
        vec!["t0", "t1", "t2", "t3", "t4"]
    );
    assert_eq!(ok_calls(&slack.calls(), "chat.postMessage").len(), 5);
}

async fn refused_fails_row_and_dependents(store: DynStore) {
    let slack = FakeSlack::start().await;
    slack.refuse_channel("CGONE", "channel_not_found");
    let gone = vec![
        post("run:x", "CGONE", Some("x:parent"), None, "x0"),
        post("run:x", "CGONE", None, Some("x:parent"), "x1"),
        update("run:x", "CGONE", "x:parent", "x2"),
        OutboundMessage {
            thread_key: "run:x".into(),
            channel: "CGONE".into(),
            action: OutboundAction::Reaction {
                key: "x:parent".into(),
                name: "boom".into(),
            },
        },
        // Same thread, no dependency on the failed post: still delivered.
        post("run:x", "COK", None, None, "x-after"),
    ];
    let ok: Vec<_> = (0..3)
        .map(|i| post("run:y", "COK", None, None, &format!("y{i}")))
        .collect();
    store.enqueue(&gone, None).await.unwrap();
    store.enqueue(&ok, None).await.unwrap();
    let (outbox, handle) = start(&store, api(&slack), "o1");
    wait_no_pending(&store).await;
    stop(outbox, handle).await;
    let rows = store.outbox_rows(Some("run:x")).await.unwrap();
    let states: Vec<_> = rows.iter().map(|r| r.state).collect();
    use OutboxState::*;
    assert_eq!(states, vec![Failed, Failed, Failed, Failed, Delivered]);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("channel_not_found")
    );
    for r in &rows[1..4] {
        assert!(
            r.last_error.as_deref().unwrap().contains("x:parent"),
            "{:?}",
            r.last_error
        );
    }
    let posted = texts(&ok_calls(&slack.calls(), "chat.postMessage"));
    assert!(posted.contains(&"x-after".to_string()));
    assert_eq!(posted.iter().filter(|t| t.starts_with('y')).count(), 3);
    // Dependents were failed without calling Slack.
    assert_eq!(slack.calls_of("chat.update").len(), 0);
    assert_eq!(slack.calls_of("reactions.add").len(), 0);
}

async fn two_replicas_never_double_send(store: DynStore, second: DynStore) {
    let slack = FakeSlack::start().await;
    let mut batch = vec![];
    for t in 0..12 {
        for i in 0..3 {
            batch.push(post(
                &format!("run:{t}"),
                &format!("C{t}"),
                None,
                None,
                &format!("{t}-{i}"),
            ));
        }
    }
    store.enqueue(&batch, None).await.unwrap();
    let (o1, h1) = start(&store, api(&slack), "replica-1");
    let (o2, h2) = start(&second, api(&slack), "replica-2");
    let calls = slack
        .wait_for(|c| ok_calls(c, "chat.postMessage").len() >= 36, WAIT)
        .await;
    wait_no_pending(&store).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(o1, h1).await;
    stop(o2, h2).await;
    let all = ok_calls(&slack.calls(), "chat.postMessage");
    assert_eq!(all.len(), 36, "a row was delivered twice");
    let mut per_channel: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in ok_calls(&calls, "chat.postMessage") {
        per_channel
            .entry(c.str("channel").unwrap().into())
            .or_default()
            .push(c.str("text").unwrap().into());
    }
    for t in 0..12 {
        let expected: Vec<String> = (0..3).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(per_channel[&format!("C{t}")], expected);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in &all {
        *counts.entry(c.str("text").unwrap().into()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1));
}

async fn cursor_never_moves_back(store: DynStore) {
    store.enqueue(&[], Some(("run-1", 5))).await.unwrap();
    store
        .enqueue(
            &[post("run:1", "C1", None, None, "late")],
            Some(("run-1", 3)),
        )
        .await
        .unwrap();
    assert_eq!(store.render_cursor("run-1").await.unwrap(), 5);
    assert_eq!(store.render_cursor("other").await.unwrap(), 0);
    assert_eq!(store.pending_count().await.unwrap(), 1);
}

// ---------------------------------------------------------------- SQLite

#[tokio::test]
async fn sqlite_order_and_thread_ts() {
    let dir = tempfile::tempdir().unwrap();
    order_and_thread_ts(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_coalesces_updates() {
    let dir = tempfile::tempdir().unwrap();
    coalesces_updates(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_revisions_beat_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    revisions_beat_queue_order(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_honours_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    honours_retry_after(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_a_posts_429_holds_only_its_channel() {
    let dir = tempfile::tempdir().unwrap();
    a_posts_429_holds_only_its_channel(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_retries_5xx_and_hangs() {
    let dir = tempfile::tempdir().unwrap();
    retries_5xx_and_hangs(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_a_post_whose_answer_is_lost_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    a_post_whose_answer_is_lost_is_not_sent_again(sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_a_post_whose_answer_is_lost_is_not_sent_again() {
    support::with_postgres(|url| async move {
        a_post_whose_answer_is_lost_is_not_sent_again(postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn sqlite_an_upload_whose_answer_is_lost_is_not_shared_again() {
    let dir = tempfile::tempdir().unwrap();
    an_upload_whose_answer_is_lost_is_not_shared_again(sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_an_upload_whose_answer_is_lost_is_not_shared_again() {
    support::with_postgres(|url| async move {
        an_upload_whose_answer_is_lost_is_not_shared_again(postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn sqlite_a_refused_token_holds_the_rows_until_slack_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    a_refused_token_holds_the_rows_until_slack_takes_them(sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_a_refused_token_holds_the_rows_until_slack_takes_them() {
    support::with_postgres(|url| async move {
        a_refused_token_holds_the_rows_until_slack_takes_them(postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn sqlite_slacks_transient_errors_are_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    slacks_transient_errors_are_tried_again(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    survives_restart(store, async || sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_refused_fails_row_and_dependents() {
    let dir = tempfile::tempdir().unwrap();
    refused_fails_row_and_dependents(sqlite(&dir).await).await;
}

#[tokio::test]
async fn sqlite_two_replicas_never_double_send() {
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite(&dir).await;
    let b = sqlite(&dir).await;
    two_replicas_never_double_send(a, b).await;
}

#[tokio::test]
async fn sqlite_cursor_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    cursor_never_moves_back(sqlite(&dir).await).await;
}

// ---------------------------------------------------------------- Postgres

#[tokio::test]
async fn postgres_order_and_thread_ts() {
    support::with_postgres(|url| async move { order_and_thread_ts(postgres(&url).await).await })
        .await;
}

#[tokio::test]
async fn postgres_coalesces_updates() {
    support::with_postgres(|url| async move { coalesces_updates(postgres(&url).await).await })
        .await;
}

#[tokio::test]
async fn postgres_revisions_beat_queue_order() {
    support::with_postgres(
        |url| async move { revisions_beat_queue_order(postgres(&url).await).await },
    )
    .await;
}

#[tokio::test]
async fn postgres_honours_retry_after() {
    support::with_postgres(|url| async move { honours_retry_after(postgres(&url).await).await })
        .await;
}

#[tokio::test]
async fn postgres_a_posts_429_holds_only_its_channel() {
    support::with_postgres(|url| async move {
        a_posts_429_holds_only_its_channel(postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn postgres_retries_5xx_and_hangs() {
    support::with_postgres(|url| async move { retries_5xx_and_hangs(postgres(&url).await).await })
        .await;
}

#[tokio::test]
async fn postgres_survives_restart() {
    support::with_postgres(|url| async move {
        let store = postgres(&url).await;
        survives_restart(store, async || postgres(&url).await).await;
    })
    .await;
}

#[tokio::test]
async fn postgres_refused_fails_row_and_dependents() {
    support::with_postgres(|url| async move {
        refused_fails_row_and_dependents(postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn postgres_two_replicas_never_double_send() {
    support::with_postgres(|url| async move {
        two_replicas_never_double_send(postgres(&url).await, postgres(&url).await).await
    })
    .await;
}

#[tokio::test]
async fn postgres_cursor_never_moves_back() {
    support::with_postgres(
        |url| async move { cursor_never_moves_back(postgres(&url).await).await },
    )
    .await;
}

// ---------------------------------------------------------------- three replicas

/// Three delivery replicas, each with its own pool on one Postgres database.
async fn three_replicas(
    url: &str,
    slack: &FakeSlack,
    tune: impl Fn(&mut OutboxOptions),
) -> Vec<(Outbox, tokio::task::JoinHandle<()>)> {
    let mut out = Vec::new();
    for n in 0..3 {
        let store = postgres(url).await;
        let mut o = opts(&format!("replica-{n}"));
        tune(&mut o);
        let outbox = Outbox::new(store, api(slack), o);
        let handle = outbox.start();
        out.push((outbox, handle));
    }
    out
}

/// Threads `run:0..threads` in channel `channel_of(t)`: a parent and `replies` replies each.
fn threads(
    threads: usize,
    replies: usize,
    channel_of: impl Fn(usize) -> String,
) -> Vec<OutboundMessage> {
    let mut batch = Vec::new();
    for t in 0..threads {
        let (thread, parent) = (format!("run:{t}"), format!("{t}:parent"));
        batch.push(post(
            &thread,
            &channel_of(t),
            Some(&parent),
            None,
            &format!("{t}-p"),
        ));
        for i in 0..replies {
            batch.push(post(
                &thread,
                &channel_of(t),
                None,
                Some(&parent),
                &format!("{t}-{i}"),
            ));
        }
    }
    batch
}

/// Each thread's posts delivered once each, in order.
fn assert_threads_whole(calls: &[Call], threads: usize, replies: usize) {
    let ok = ok_calls(calls, "chat.postMessage");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in &ok {
        *counts.entry(c.str("text").unwrap().into()).or_default() += 1;
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "a line posted twice: {counts:?}"
    );
    for t in 0..threads {
        let got: Vec<String> = texts(&ok)
            .into_iter()
            .filter(|x| x.starts_with(&format!("{t}-")))
            .collect();
        let want: Vec<String> = std::iter::once(format!("{t}-p"))
            .chain((0..replies).map(|i| format!("{t}-{i}")))
            .collect();
        assert_eq!(got, want, "thread {t}");
    }
}

/// Every tenth call answers 429 (Retry-After: 2 s). A hold one replica saw holds the method
/// for all three: no call of a held method arrives while its Retry-After runs (beyond the
/// calls already on their way when the 429 was answered), and every line arrives once. (429s
/// this rare leave other threads with rows ready while a hold runs, so a replica that ignored
/// the hold would call in it; with a 429 every few calls each thread waits on its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_429_holds_the_method_or_channel_for_every_replica() {
    support::with_postgres(|url| async move {
        let slack = FakeSlack::start().await;
        slack.rate_limit_every(Some(10), 2);
        let (n_threads, n_replies) = (6, 12);
        let mut batch = threads(n_threads, n_replies, |t| format!("C{t}"));
        for t in 0..n_threads {
            batch.push(update(
                &format!("run:{t}"),
                &format!("C{t}"),
                &format!("{t}:parent"),
                "u",
            ));
        }
        postgres(&url).await.enqueue(&batch, None).await.unwrap();
        let replicas = three_replicas(&url, &slack, |_| {}).await;
        let want = n_threads * (n_replies + 1);
        slack
            .wait_for(
                |c| {
                    ok_calls(c, "chat.postMessage").len() >= want
                        && ok_calls(c, "chat.update").len() >= n_threads
                },
                Duration::from_secs(60),
            )
            .await;
        wait_no_pending(&postgres(&url).await).await;
        for (o, h) in replicas {
            stop(o, h).await;
        }
        let calls = slack.calls();
        assert_threads_whole(&calls, n_threads, n_replies);
        assert_eq!(ok_calls(&calls, "chat.update").len(), n_threads);
        let limited: Vec<&Call> = calls.iter().filter(|c| c.status == 429).collect();
        assert!(
            limited.len() >= 3,
            "the fake answered 429s: {}",
            limited.len()
        );
        // After a 429 of a method (and 150 ms for calls already sent to arrive; unheld, the
        // replicas make a call every few ms here), no call of that method reaches Slack
        // before its Retry-After has passed, from any replica; for chat.postMessage, which
        // Slack limits per channel, no post to that channel.
        let same_hold = |a: &Call, b: &Call| {
            a.method == b.method
                && (a.method != "chat.postMessage" || a.str("channel") == b.str("channel"))
        };
        for l in &limited {
            let early: Vec<_> = calls
                .iter()
                .filter(|c| same_hold(c, l) && c.at > l.at)
                .filter(|c| {
                    let after = c.at - l.at;
                    after > Duration::from_millis(150) && after < Duration::from_millis(1950)
                })
                .map(|c| (c.at - l.at, c.str("text").map(str::to_string)))
                .collect();
            assert!(
                early.is_empty(),
                "{} called while held: {early:?}",
                l.method
            );
        }
    })
    .await;
}

/// Three replicas deliver 4 threads in one channel: posts are paced for the channel as a
/// whole (a burst of 2, then one per 250 ms), not per replica, and every line arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_three_replicas_pace_posts_per_channel() {
    support::with_postgres(|url| async move {
        let slack = FakeSlack::start().await;
        let (n_threads, n_replies) = (4, 2);
        let interval = Duration::from_millis(250);
        let batch = threads(n_threads, n_replies, |_| "CSHARED".to_string());
        postgres(&url).await.enqueue(&batch, None).await.unwrap();
        let replicas = three_replicas(&url, &slack, |o| {
            o.post_interval = interval;
            o.post_burst = 2;
        })
        .await;
        let want = n_threads * (n_replies + 1);
        slack
            .wait_for(|c| ok_calls(c, "chat.postMessage").len() >= want, WAIT)
            .await;
        wait_no_pending(&postgres(&url).await).await;
        for (o, h) in replicas {
            stop(o, h).await;
        }
        let calls = slack.calls();
        assert_threads_whole(&calls, n_threads, n_replies);
        // 12 posts, 2 at once, then one per interval: at least 10 intervals from the first to
        // the last (less one interval for the first call's own way to Slack).
        let posts = slack.calls_of("chat.postMessage");
        let span = posts[posts.len() - 1].at - posts[0].at;
        let floor = interval * (u32::try_from(want).unwrap() - 2 - 1);
        assert!(
            span >= floor,
            "12 posts in one channel took {span:?}, pacing wants {floor:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------- the HTTP client

#[tokio::test]
async fn http_api_maps_slack_answers() {
    let slack = FakeSlack::start().await;
    let api = HttpSlackApi::new(&slack.url(), "xoxb-test")
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let ok = api.call("auth.test", json!({})).await.unwrap();
    assert_eq!(ok["team_id"], "T0FAKE");
    slack.rate_limit_next(1, None, 7);
    assert_eq!(
        api.call("chat.postMessage", json!({"channel": "C", "text": "x"}))
            .await,
        Err(ApiError::RateLimited {
            retry_after: Duration::from_secs(7)
        })
    );
    slack.fail_next(1, None, 502);
    assert_eq!(
        api.call("chat.update", json!({})).await,
        Err(ApiError::Server(502))
    );
    slack.refuse_next(1, None, "channel_not_found");
    assert_eq!(
        api.call("chat.postMessage", json!({})).await,
        Err(ApiError::Refused("channel_not_found".into()))
    );
    slack.refuse_next(1, None, "ratelimited");
    assert!(matches!(
        api.call("chat.postMessage", json!({})).await,
        Err(ApiError::RateLimited { .. })
    ));
    slack.hang_next(1, None, Duration::from_secs(2));
    assert!(matches!(
        api.call("views.open", json!({})).await,
        Err(ApiError::Network(_))
    ));
    let posted = api
        .call("chat.postMessage", json!({"channel": "C9", "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(posted["channel"], "C9");
    let ts = posted["ts"].as_str().unwrap();
    let secs: u64 = ts.split('.').next().unwrap().parse().unwrap();
    assert!(
        secs.abs_diff(chaosbot::run::now_ms() as u64 / 1000) < 60,
        "a ts is the time of posting: {ts}"
    );
    let last = slack.calls_of("chat.postMessage").pop().unwrap();
    assert_eq!(last.headers["authorization"], "Bearer xoxb-test");
    assert_eq!(last.body, json!({"channel": "C9", "text": "hi"}));
    // Nothing listening: a network error, not a panic.
    let port = support::free_port();
    let dead = HttpSlackApi::new(&format!("http://{port}/api/"), "t").unwrap();
    assert!(matches!(
        dead.call("auth.test", json!({})).await,
        Err(ApiError::Network(_))
    ));
}
