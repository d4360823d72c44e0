//! The speaker Q&A in a run's thread, end to end: `chaosbot serve` against the fake Slack.
//! A run ends, its thread gets the board; thread replies (signed Events API requests) become
//! questions, :+1: reactions votes, the speaker answers from the board's form, chaosbot answers
//! numeric questions from the journal; edits, deletions, redeliveries, bad votes and people who
//! may not answer are handled; the board is updated in place each time.

use crate::support;

use std::time::Duration;

use chaosbot::slack::server::Server;
use serde_json::{Value, json};
use support::app::{CHANNEL, TEAM, TestApp, replies, run_id_in};
use support::fake_slack::Call;

const SECRET: &str = "qa-signing-secret";
const ALICE: &str = "UALICE"; // starts the run: the speaker
const BOB: &str = "UBOB";
const CAROL: &str = "UCAROL";
const BOT: &str = "U0BOT"; // what the fake's auth.test says the bot is

/// 600 ms of latency against a 300 ms tolerance (wide, so the steady state holds on a loaded
/// machine): the hypothesis breaks, so there is a time to detect to ask about.
const SLOW_API: &str = r#"
name: slow-api
title: The API stays under 300 ms
owner: "@sre"
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-fast
      http: {endpoint: api-http, path: /, status: 200, max_latency: 300ms}
      interval: 100ms
method:
  - name: slow
    target: api
    fault: latency
    latency: 600ms
    duration: 2s
"#;

async fn rig(qa_window: Duration) -> TestApp {
    let mut app = TestApp::new(SECRET).await;
    app.add_to_catalog("slow-api.yaml", SLOW_API);
    app.cfg.qa.window = qa_window;
    app
}

fn reply_in_thread(user: &str, ts: &str, thread_ts: &str, text: &str) -> Value {
    json!({"type": "message", "channel": CHANNEL, "user": user, "text": text, "ts": ts,
           "thread_ts": thread_ts, "channel_type": "channel", "event_ts": ts})
}

/// A reaction event; each gets a later `event_ts`, as Slack's do.
fn reaction(kind: &str, user: &str, ts: &str, name: &str) -> Value {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    json!({"type": kind, "user": user, "reaction": name, "item_user": BOB,
           "item": {"type": "message", "channel": CHANNEL, "ts": ts},
           "event_ts": format!("1700000999.{n:06}")})
}

fn text_of(c: &Call) -> String {
    format!("{} {}", c.str("text").unwrap_or(""), c.body["blocks"])
}

/// The last update of the board message.
fn last_board(calls: &[Call], board_ts: &str) -> Option<String> {
    calls
        .iter()
        .rfind(|c| c.method == "chat.update" && c.str("ts") == Some(board_ts))
        .map(|c| c.body["blocks"].to_string())
}

/// Waits for a reply in the run's thread whose text holds every one of `needles`; its text.
async fn wait_reply(rig: &TestApp, parent: &str, needles: &[&str]) -> String {
    let matches = |p: &Call| {
        let t = text_of(p);
        needles.iter().all(|n| t.contains(n))
    };
    text_of(
        &rig.wait_reply(Some(parent), matches, Duration::from_secs(40))
            .await,
    )
}

async fn wait_board(rig: &TestApp, board_ts: &str, pred: impl Fn(&str) -> bool) -> String {
    let calls = rig
        .fake
        .wait_for(
            |c| last_board(c, board_ts).is_some_and(|b| pred(&b)),
            Duration::from_secs(40),
        )
        .await;
    last_board(&calls, board_ts).unwrap_or_default()
}

/// Starts a run as Alice and waits for its board; returns (run id, parent ts, board ts).
async fn finished_run_with_board(rig: &TestApp, server: &Server) -> (String, String, String) {
    let answer = rig.slash(server.addr, ALICE, "start slow-api").await;
    let id = run_id_in(&answer.to_string());
    let calls = rig
        .fake
        .wait_for(
            |c| c.iter().any(|c| c.method == "reactions.add"),
            Duration::from_secs(40),
        )
        .await;
    let parent_ts = calls
        .iter()
        .find(|c| c.method == "reactions.add")
        .and_then(|c| c.str("timestamp"))
        .unwrap()
        .to_string();
    // The board is a reply in the thread; its ts is what the fake answered, which the outbox
    // stored: read it back through the store.
    let store = rig.store().await;
    let board = store
        .message_ref(&chaosbot::slack::qa::board_key(&id))
        .await
        .unwrap()
        .expect("the board was posted");
    let board_post = replies(&calls, Some(&parent_ts))
        .into_iter()
        .find(|c| c.str("text").is_some_and(|t| t.starts_with("Q&A on run")))
        .expect("the board is a reply in the run's thread");
    assert!(
        text_of(board_post).contains("Reply in this thread"),
        "the board says how to take part"
    );
    assert!(
        text_of(board_post).contains("qa_learn"),
        "the board offers to add a learning"
    );
    (id, parent_ts, board.ts)
}

#[tokio::test]
async fn the_whole_qa_cycle_in_a_run_thread() {
    let rig = rig(Duration::from_secs(3600)).await;
    let server = rig.start().await;
    let (id, parent, board_ts) = finished_run_with_board(&rig, &server).await;
    let store = rig.store().await;

    // 1. A question the journal answers: chaosbot answers at once, quoting the journal.
    rig.event(
        server.addr,
        "Ev-q1",
        reply_in_thread(
            BOB,
            "1800000000.000001",
            &parent,
            "How long did it take to detect? And the p99 during the fault?",
        ),
    )
    .await;
    let auto_text = wait_reply(&rig, &parent, &["Answered from the run's journal"]).await;
    let run = store.get_run(&id).await.unwrap().unwrap();
    let journal = store.journal(&id, 0).await.unwrap();
    let summary = chaosbot::report::summarize(&run, &journal);
    let ttd = summary
        .time_to_detect_ms
        .expect("the fault broke the hypothesis");
    assert!(auto_text.contains("time to detect"), "{auto_text}");
    assert!(
        auto_text.contains(&format!("{ttd} ms"))
            || auto_text.contains(&format!("{:.1} s", ttd as f64 / 1000.0)),
        "the journal's number: {ttd} ms in {auto_text}"
    );
    assert!(
        auto_text.contains(&format!("p99 {:.1} ms", summary.probes[0].during.p99_ms)),
        "{auto_text}"
    );
    assert!(
        auto_text.contains("journal #"),
        "quotes the journal entries: {auto_text}"
    );
    let q1 = store
        .question_by_ts(CHANNEL, "1800000000.000001")
        .await
        .unwrap()
        .unwrap();
    assert!(
        q1.answer
            .as_ref()
            .is_some_and(|a| a.auto && a.by == "chaosbot")
    );
    wait_board(&rig, &board_ts, |b| b.contains("answered from the journal")).await;

    // 2. A question for the speaker, and one who-started question.
    rig.event(
        server.addr,
        "Ev-q2",
        reply_in_thread(
            CAROL,
            "1800000000.000002",
            &parent,
            "Should the client retry on timeouts instead?",
        ),
    )
    .await;
    rig.event(
        server.addr,
        "Ev-q3",
        reply_in_thread(CAROL, "1800000000.000003", &parent, "Who started this run?"),
    )
    .await;
    wait_reply(&rig, &parent, &["started by <@UALICE>"]).await;
    wait_board(&rig, &board_ts, |b| {
        b.contains("waiting for the speaker") && b.contains("retry on timeouts")
    })
    .await;

    // 3. Votes: two people, a repeat, the bot's own, a removal, a non-vote emoji.
    let q2 = "1800000000.000002";
    rig.event(
        server.addr,
        "Ev-v1",
        reaction("reaction_added", BOB, q2, "+1"),
    )
    .await;
    let alice_vote = reaction("reaction_added", ALICE, q2, "+1::skin-tone-3");
    rig.event(server.addr, "Ev-v2", alice_vote.clone()).await;
    rig.event(server.addr, "Ev-v2", alice_vote).await; // redelivered
    rig.event(
        server.addr,
        "Ev-v3",
        reaction("reaction_added", "UDAVE", q2, "+1"),
    )
    .await;
    rig.event(
        server.addr,
        "Ev-v4",
        reaction("reaction_added", BOT, q2, "+1"),
    )
    .await;
    rig.event(
        server.addr,
        "Ev-v5",
        reaction("reaction_added", "UERIN", q2, "eyes"),
    )
    .await;
    // Dave's removal is processed while his add may still be in flight (handlers run
    // concurrently, as Slack's deliveries can arrive out of order): the later event wins.
    rig.event(
        server.addr,
        "Ev-v6",
        reaction("reaction_removed", "UDAVE", q2, "+1"),
    )
    .await;
    let board = wait_board(&rig, &board_ts, |b| b.contains("*2* :+1:")).await;
    // Ranked by votes: the voted question comes first.
    let first_q = board.find("retry on timeouts").unwrap();
    let other_q = board.find("How long did it take").unwrap();
    assert!(first_q < other_q, "most votes first: {board}");
    // Give stragglers time, then check the store agrees: 2 votes, not 3 or 4.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store
            .question_by_ts(CHANNEL, q2)
            .await
            .unwrap()
            .unwrap()
            .votes,
        2
    );

    // 4. Someone who is not the speaker presses Answer: told why not, no form.
    let q2_id = store.question_by_ts(CHANNEL, q2).await.unwrap().unwrap().id;
    let (status, _) = rig
        .press(server.addr, BOB, "qa_answer", &q2_id.to_string())
        .await;
    assert_eq!(status, 200);
    let calls = rig
        .fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.postEphemeral"
                        && c.str("user") == Some(BOB)
                        && text_of(c).contains("only <@UALICE>")
                })
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(!calls.iter().any(|c| c.method == "views.open"));

    // 5. The speaker presses Answer: the form opens; submitting it posts the answer.
    rig.press(server.addr, ALICE, "qa_answer", &q2_id.to_string())
        .await;
    let calls = rig
        .fake
        .wait_for(
            |c| c.iter().any(|c| c.method == "views.open"),
            Duration::from_secs(30),
        )
        .await;
    let view = calls
        .iter()
        .find(|c| c.method == "views.open")
        .unwrap()
        .body["view"]
        .clone();
    assert_eq!(view["callback_id"], "qa_answer");
    assert!(
        view.to_string().contains("retry on timeouts"),
        "the form shows the question"
    );
    let submission = |user: &str, text: &str| {
        json!({
            "type": "view_submission",
            "user": {"id": user, "team_id": TEAM},
            "team": {"id": TEAM},
            "view": {
                "callback_id": view["callback_id"],
                "private_metadata": view["private_metadata"],
                "state": {"values": {"answer": {"answer": {"type": "plain_text_input", "value": text}}}},
            },
        })
    };
    // Someone else submitting (a forged or stale form) is refused next to the field.
    let (status, body) = rig
        .interaction(server.addr, &submission(BOB, "I think so"))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("response_action") && body.contains("only <@UALICE>"),
        "{body}"
    );
    // An empty answer too.
    let (_, body) = rig
        .interaction(server.addr, &submission(ALICE, "   "))
        .await;
    assert!(body.contains("write the answer"), "{body}");
    let (status, body) = rig
        .interaction(
            server.addr,
            &submission(ALICE, "Yes: one retry with jitter, we will add it."),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!body.contains("errors"), "{body}");
    wait_reply(
        &rig,
        &parent,
        &["<@UALICE> answers", "one retry with jitter"],
    )
    .await;
    wait_board(&rig, &board_ts, |b| b.contains("answered by <@UALICE>")).await;
    let answered = store.question(q2_id).await.unwrap().unwrap();
    assert_eq!(answered.answer.as_ref().map(|a| a.by.as_str()), Some(ALICE));

    // 6. Edits follow the question; deletion takes it off the board.
    rig.event(
        server.addr,
        "Ev-e1",
        json!({"type": "message", "subtype": "message_changed", "channel": CHANNEL, "ts": "1800000000.000100",
               "message": {"type": "message", "user": CAROL, "text": "Who started this run, and from where?", "ts": "1800000000.000003", "thread_ts": parent}}),
    )
    .await;
    wait_board(&rig, &board_ts, |b| {
        b.contains("and from where?") && b.contains("(edited)")
    })
    .await;
    rig.event(
        server.addr,
        "Ev-d1",
        json!({"type": "message", "subtype": "message_deleted", "channel": CHANNEL, "ts": "1800000000.000101",
               "deleted_ts": "1800000000.000003", "previous_message": {"user": CAROL, "ts": "1800000000.000003"}}),
    )
    .await;
    wait_board(&rig, &board_ts, |b| !b.contains("and from where?")).await;

    // 7. The bot's own replies and replies in threads that are not runs are not questions.
    rig.event(
        server.addr,
        "Ev-own",
        json!({"type": "message", "channel": CHANNEL, "user": BOT, "bot_id": "B0BOT", "text": "Answered", "ts": "1800000000.000200", "thread_ts": parent}),
    )
    .await;
    rig.event(
        server.addr,
        "Ev-other",
        reply_in_thread(
            BOB,
            "1800000000.000201",
            "1799999999.000001",
            "what was the p99?",
        ),
    )
    .await;

    // 8. A redelivered question is not asked or answered twice.
    let auto_posts = |c: &[Call]| {
        replies(c, Some(&parent))
            .iter()
            .filter(|p| text_of(p).contains("How long did it take to detect"))
            .count()
    };
    let before = auto_posts(&rig.fake.calls());
    rig.event(
        server.addr,
        "Ev-q1-retry",
        reply_in_thread(
            BOB,
            "1800000000.000001",
            &parent,
            "How long did it take to detect? And the p99 during the fault?",
        ),
    )
    .await;

    // 9. `/chaos learn` and `/chaos qa`.
    let answer = rig
        .slash(
            server.addr,
            BOB,
            &format!("learn {id} retries hide short faults"),
        )
        .await;
    assert!(answer.to_string().contains("only <@UALICE>"), "{answer}");
    let answer = rig
        .slash(
            server.addr,
            ALICE,
            &format!("learn {id} change: alert on p99 above 40 ms"),
        )
        .await;
    assert!(answer.to_string().contains("Noted"), "{answer}");
    wait_board(&rig, &board_ts, |b| {
        b.contains("What we change") && b.contains("alert on p99 above 40 ms")
    })
    .await;
    let board = rig.slash(server.addr, CAROL, &format!("qa {id}")).await;
    let shown = board.to_string();
    assert_eq!(board["response_type"], "ephemeral");
    assert!(
        shown.contains("retry on timeouts") && shown.contains("alert on p99"),
        "{shown}"
    );
    let unknown = rig.slash(server.addr, CAROL, "qa r-nope").await;
    assert!(unknown.to_string().contains("no run `r-nope`"), "{unknown}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = rig.fake.calls();
    assert_eq!(
        auto_posts(&calls),
        before,
        "no second answer to a redelivered question"
    );
    assert!(
        store
            .question_by_ts(CHANNEL, "1800000000.000200")
            .await
            .unwrap()
            .is_none(),
        "own message"
    );
    assert!(
        store
            .question_by_ts(CHANNEL, "1800000000.000201")
            .await
            .unwrap()
            .is_none(),
        "other thread"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.str("thread_ts") == Some("1799999999.000001")),
        "nothing said in a thread that is not a run's"
    );
    let questions = store.questions(&id).await.unwrap();
    assert_eq!(questions.len(), 2, "{questions:#?}");
    let learnings = store.learnings(&id).await.unwrap();
    assert_eq!(learnings.len(), 1);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn questions_after_the_window_are_turned_away_kindly() {
    let rig = rig(Duration::from_secs(2)).await;
    let server = rig.start().await;
    let (id, parent, board_ts) = finished_run_with_board(&rig, &server).await;
    // When the window closes, the board says so by itself.
    wait_board(&rig, &board_ts, |b| b.contains("closed")).await;
    rig.event(
        server.addr,
        "Ev-late",
        reply_in_thread(BOB, "1800000000.000009", &parent, "what was the p99?"),
    )
    .await;
    rig.fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.postEphemeral"
                        && c.str("user") == Some(BOB)
                        && text_of(c).contains("closed")
                })
            },
            Duration::from_secs(30),
        )
        .await;
    let store = rig.store().await;
    assert!(
        store
            .question_by_ts(CHANNEL, "1800000000.000009")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.questions(&id).await.unwrap().is_empty());
    server.shutdown("test over").await;
}

#[tokio::test]
async fn a_question_redelivered_after_a_restart_is_taken_and_answered() {
    let rig = rig(Duration::from_secs(3600)).await;
    let server = rig.start().await;
    let (id, parent, board_ts) = finished_run_with_board(&rig, &server).await;
    // chaosbot goes down; Slack's delivery of the question fails, so Slack redelivers it to
    // the process that comes back (same store).
    server.shutdown("restart").await;
    let server = rig.start().await;
    rig.event(
        server.addr,
        "Ev-during-downtime",
        reply_in_thread(
            BOB,
            "1800000000.000042",
            &parent,
            "When did the fault start?",
        ),
    )
    .await;
    let answer = wait_reply(&rig, &parent, &["fault `slow` on `api` started at"]).await;
    let store = rig.store().await;
    let injected = store
        .journal(&id, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event.kind() == "fault_injected")
        .unwrap();
    assert!(
        answer.contains(&format!("journal #{}", injected.seq)),
        "quotes the entry: {answer}"
    );
    // The board, posted by the first process, is updated by the second.
    wait_board(&rig, &board_ts, |b| b.contains("When did the fault start?")).await;
    server.shutdown("test over").await;
}

/// Three replicas on one Postgres database: a question, then twelve votes sent at once, four
/// to each replica. Each replica renders and queues the board as its votes land; the board
/// Slack ends up showing has every vote (no older render overwrote a newer one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_spread_over_three_replicas_all_show_on_the_board() {
    support::with_postgres(|url| async move {
        let mut rig = rig(Duration::from_secs(3600)).await;
        rig.cfg.database_url = Some(url.clone());
        let mut servers = vec![rig.start().await];
        for _ in 0..2 {
            servers.push(rig.start_replica(&url).await);
        }
        let (_id, parent, board_ts) = finished_run_with_board(&rig, &servers[0]).await;
        let q = "1800000000.000002";
        rig.event(
            servers[1].addr,
            "Ev-q",
            reply_in_thread(
                CAROL,
                q,
                &parent,
                "Should the client retry on timeouts instead?",
            ),
        )
        .await;
        wait_board(&rig, &board_ts, |b| b.contains("retry on timeouts")).await;

        let votes = (0..12).map(|i| {
            let (rig, addr) = (&rig, servers[i % 3].addr);
            async move {
                let user = format!("UVOTER{i:02}");
                rig.event(
                    addr,
                    &format!("Ev-v{i}"),
                    reaction("reaction_added", &user, q, "+1"),
                )
                .await
            }
        });
        futures::future::join_all(votes).await;
        wait_board(&rig, &board_ts, |b| b.contains("*12* :+1:")).await;
        // Every replica's last refresh delivered (or superseded): the board still shows all.
        let store = servers[0].app.store.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.pending_count().await.unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "outbox rows still pending"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let last = last_board(&rig.fake.calls(), &board_ts).unwrap_or_default();
        assert!(last.contains("*12* :+1:"), "the last board shown: {last}");
        for s in servers {
            s.shutdown("test over").await;
        }
    })
    .await;
}
