//! Schedules end to end: `chaosbot serve` with a manual clock and a fake Slack Web API on
//! loopback. Commands and the Skip button are signed like Slack's; assertions are on what the
//! fake received (heads-ups, notes, the run's parent message) and what the store holds. Plus
//! the fire-once guarantee with several schedulers racing on one SQLite file and on one
//! Postgres database (set TEST_POSTGRES_URL for the Postgres cases).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use chaosbot::clock::{Clock, DynClock, ManualClock};
use chaosbot::config::{AllowRule, Secret};
use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::{RunState, Verdict};
use chaosbot::schedule::ScheduleConfig;
use chaosbot::slack::api::HttpSlackApi;
use chaosbot::slack::edge::{SKIP_ACTION_ID, SlackApp};
use chaosbot::slack::scheduler::Scheduler;
use chaosbot::store::schedules::{NewSchedule, SkipOutcome};
use chaosbot::store::{DynStore, RunFilter};
use support::app::{CHANNEL, TEAM, TestApp};
use support::fake_slack::Call;
use support::slack;
use support::*;

const SECRET: &str = "sched-signing-secret";
const ALICE: &str = "UALICE";
const OPS: &str = "UOPS";
const MALLORY: &str = "UMALLORY";

const SLOW_API: &str = r#"
name: slow-api
title: The API stays fast with 30 ms of latency
owner: "@sre"
parameters:
  duration: {type: duration, default: 1s, min: 1s, max: 2m}
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

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(30);

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

/// Tuesday 2026-11-24 13:00 UTC; allowed hours 09:00-17:00 mon-fri UTC (the defaults). The
/// app's servers run on the returned clock.
async fn rig() -> (TestApp, Arc<ManualClock>) {
    let mut app = TestApp::new(SECRET).await;
    app.add_to_catalog("slow-api.yaml", SLOW_API);
    app.cfg.slack.bot_token = Some(Secret("xoxb-sched".into()));
    app.cfg.slack.operators = vec![OPS.into()];
    app.cfg.slack.allow = vec![AllowRule {
        experiments: vec!["*".into()],
        users: vec![ALICE.into()],
        channels: vec![CHANNEL.into()],
    }];
    app.cfg.schedules = ScheduleConfig::default();
    let clock = ManualClock::new(ms("2026-11-24T13:00:00Z"));
    let server_clock: DynClock = clock.clone();
    app.clock = Some(server_clock);
    (app, clock)
}

/// A slash command; the text of the ephemeral answer.
async fn slash(rig: &TestApp, addr: std::net::SocketAddr, user: &str, text: &str) -> String {
    slack::answer_text(&rig.slash(addr, user, text).await)
}

/// Presses a button as `user` (a `block_actions` payload shaped like Slack's).
async fn press(
    rig: &TestApp,
    addr: std::net::SocketAddr,
    user: &str,
    action_id: &str,
    value: &str,
) {
    let (status, _) = rig.press(addr, user, action_id, value).await;
    assert_eq!(status, 200);
}

fn posts(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.status == 200)
        .collect()
}

/// Heads-ups posted (top-level messages with a Skip button).
fn heads_ups(calls: &[Call]) -> Vec<&Call> {
    posts(calls)
        .into_iter()
        .filter(|c| c.body["blocks"].to_string().contains(SKIP_ACTION_ID))
        .collect()
}

/// The Skip button's value on a heads-up.
fn skip_value(c: &Call) -> String {
    c.body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == SKIP_ACTION_ID)
        .and_then(|e| e["value"].as_str().map(str::to_string))
        .expect("a Skip button")
}

/// Run parent messages (they carry the Abort button).
fn run_parents(calls: &[Call]) -> Vec<&Call> {
    posts(calls)
        .into_iter()
        .filter(|c| c.body.get("thread_ts").is_none())
        .filter(|c| c.body["blocks"].to_string().contains("abort_run"))
        .collect()
}

fn texts_containing<'a>(calls: &'a [Call], needle: &str) -> Vec<&'a Call> {
    posts(calls)
        .into_iter()
        .filter(|c| c.str("text").is_some_and(|t| t.contains(needle)))
        .collect()
}

async fn runs(store: &DynStore) -> Vec<chaosbot::store::RunRecord> {
    store
        .list_runs(RunFilter {
            experiment: None,
            limit: 100,
        })
        .await
        .unwrap()
}

/// Waits until every run is done (bounded).
async fn wait_all_done(store: &DynStore) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while runs(store).await.iter().any(|r| r.state != RunState::Done) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs still active after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn heads_up_skip_and_the_next_fire_runs() {
    let (rig, clock) = rig().await;
    let server = rig.start().await;
    let store = server.app.store.clone();

    let t = slash(
        &rig,
        server.addr,
        ALICE,
        "schedule slow-api every day at 14:00 duration=1s",
    )
    .await;
    // The next three fires, in the schedule's zone; Saturday's is outside the allowed days.
    assert!(t.contains("Schedule `1`"), "{t}");
    for day in [
        "Tue 2026-11-24 14:00 UTC",
        "Wed 2026-11-25 14:00 UTC",
        "Thu 2026-11-26 14:00 UTC",
    ] {
        assert!(t.contains(day), "{day} missing: {t}");
    }
    let listed = slash(&rig, server.addr, MALLORY, "schedules").await;
    assert!(
        listed.contains("slow-api")
            && listed.contains("every day at 14:00")
            && listed.contains("next: Tue 2026-11-24 14:00 UTC")
            && listed.contains("<@UALICE>"),
        "{listed}"
    );

    // Nothing before the heads-up time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(heads_ups(&rig.fake.calls()).is_empty());
    clock.set(ms("2026-11-24T13:46:00Z"));
    let calls = rig.fake.wait_for(|c| heads_ups(c).len() == 1, WAIT).await;
    let hu = heads_ups(&calls)[0].clone();
    assert_eq!(hu.str("channel"), Some(CHANNEL));
    assert!(
        hu.str("text").unwrap().contains("Tue 2026-11-24 14:00 UTC"),
        "{:?}",
        hu.body
    );
    let value = skip_value(&hu);
    assert_eq!(value, format!("1:{}", ms("2026-11-24T14:00:00Z")));

    // Someone not allowed to start it may not skip it.
    press(&rig, server.addr, MALLORY, SKIP_ACTION_ID, &value).await;
    rig.fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.postEphemeral"
                        && c.str("user") == Some(MALLORY)
                        && c.body.to_string().contains("may skip its runs")
                })
            },
            WAIT,
        )
        .await;
    // The creator may: the fire is skipped with a note under the heads-up, and the heads-up
    // loses its button.
    press(&rig, server.addr, ALICE, SKIP_ACTION_ID, &value).await;
    let calls = rig
        .fake
        .wait_for(|c| !texts_containing(c, "skipped the run").is_empty(), WAIT)
        .await;
    let note = texts_containing(&calls, "skipped the run")[0];
    assert!(
        note.body.get("thread_ts").is_some(),
        "a reply under the heads-up"
    );
    assert!(
        calls.iter().any(|c| c.method == "chat.update"
            && c.str("text")
                .is_some_and(|t| t.contains("skipped by <@UALICE>"))
            && !c.body["blocks"].to_string().contains(SKIP_ACTION_ID)),
        "the heads-up is updated without its button"
    );

    // The skipped fire does not run.
    clock.set(ms("2026-11-24T14:00:30Z"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(runs(&store).await.is_empty());
    let fire = store
        .get_fire(1, ms("2026-11-24T14:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert!(fire.claimed_ms.is_some() && fire.run_id.is_none());
    // Too late to skip a fire that was claimed.
    press(&rig, server.addr, ALICE, SKIP_ACTION_ID, &value).await;
    rig.fake
        .wait_for(
            |c| {
                c.iter().any(|c| {
                    c.method == "chat.postEphemeral"
                        && c.body.to_string().contains("already skipped")
                })
            },
            WAIT,
        )
        .await;

    // The next day: heads-up, then a real run whose parent message appears in the channel.
    clock.set(ms("2026-11-25T13:50:00Z"));
    rig.fake.wait_for(|c| heads_ups(c).len() == 2, WAIT).await;
    clock.set(ms("2026-11-25T14:00:05Z"));
    let calls = rig.fake.wait_for(|c| run_parents(c).len() == 1, WAIT).await;
    assert_eq!(run_parents(&calls)[0].str("channel"), Some(CHANNEL));
    let all = runs(&store).await;
    assert_eq!(all.len(), 1);
    let run = server.engine.wait(&all[0].id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.requested_by, ALICE);
    assert_eq!(run.params.get("duration").map(String::as_str), Some("1s"));
    let fire = store
        .get_fire(1, ms("2026-11-25T14:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fire.run_id.as_deref(), Some(run.id.as_str()));
    rig.fake
        .wait_for(
            |c| !texts_containing(c, &format!("Started run `{}`", run.id)).is_empty(),
            WAIT,
        )
        .await;

    // Unschedule: not by someone else; by the creator.
    let t = slash(&rig, server.addr, MALLORY, "unschedule 1").await;
    assert!(t.contains("only <@UALICE>"), "{t}");
    let t = slash(&rig, server.addr, ALICE, "unschedule 1").await;
    assert!(t.contains("is removed"), "{t}");
    let t = slash(&rig, server.addr, ALICE, "schedules").await;
    assert!(t.contains("No schedules"), "{t}");
    server.shutdown("test over").await;
}

#[tokio::test]
async fn bad_schedules_are_refused_with_specific_messages() {
    let (rig, _clock) = rig().await;
    let server = rig.start().await;
    let cases = [
        ("schedule slow-api every second", "at most once every 1h"),
        ("schedule slow-api * * * * *", "would fire every 1m"),
        ("schedule slow-api 0 0 30 2 *", "never fires"),
        (
            "schedule slow-api every day at 10:00 in Europe/Berln",
            "did you mean `Europe/Berlin`",
        ),
        ("schedule slow-api whenever", "5 fields"),
        ("schedule nope every day at 10:00", "nope"),
        (
            "schedule slow-api every day at 10:00 duration=1h",
            "duration",
        ),
    ];
    for (text, want) in cases {
        let t = slash(&rig, server.addr, ALICE, text).await;
        assert!(t.contains(want), "{text}: {t}");
    }
    // Someone the allow rules do not cover may not schedule it either.
    let t = slash(
        &rig,
        server.addr,
        MALLORY,
        "schedule slow-api every day at 10:00",
    )
    .await;
    assert!(t.contains("may not start"), "{t}");
    assert!(server.app.store.list_schedules().await.unwrap().is_empty());
    server.shutdown("test over").await;
}

#[tokio::test]
async fn outside_hours_and_a_held_target_skip_with_notes() {
    let (rig, clock) = rig().await;
    let server = rig.start().await;
    let store = server.app.store.clone();

    // 18:00 is outside 09:00-17:00: said when scheduling, in the heads-up, and at the fire.
    let t = slash(
        &rig,
        server.addr,
        ALICE,
        "schedule slow-api every day at 18:00",
    )
    .await;
    assert!(t.contains("outside the allowed hours"), "{t}");
    clock.set(ms("2026-11-24T17:50:00Z"));
    let calls = rig.fake.wait_for(|c| heads_ups(c).len() == 1, WAIT).await;
    assert!(
        heads_ups(&calls)[0]
            .str("text")
            .unwrap()
            .contains("outside the allowed hours")
    );
    clock.set(ms("2026-11-24T18:00:10Z"));
    let calls = rig
        .fake
        .wait_for(
            |c| !texts_containing(c, "Skipped the scheduled run").is_empty(),
            WAIT,
        )
        .await;
    let note = texts_containing(&calls, "Skipped the scheduled run")[0];
    assert!(
        note.str("text")
            .unwrap()
            .contains("outside the allowed hours (09:00-17:00"),
        "{:?}",
        note.body
    );
    assert!(runs(&store).await.is_empty());
    slash(&rig, server.addr, ALICE, "unschedule 1").await;

    // A run started by hand holds `api`; the scheduled one that needs it is skipped.
    clock.set(ms("2026-11-25T10:30:00Z"));
    let t = slash(
        &rig,
        server.addr,
        ALICE,
        "schedule slow-api every weekday at 11:00",
    )
    .await;
    assert!(t.contains("Schedule `2`"), "{t}");
    let t = slash(&rig, server.addr, OPS, "start slow-api duration=60s").await;
    let at = t.find("`r-").unwrap() + 1;
    let busy = t[at..at + t[at..].find('`').unwrap()].to_string();
    clock.set(ms("2026-11-25T11:00:05Z"));
    let calls = rig
        .fake
        .wait_for(|c| !texts_containing(c, "holds target").is_empty(), WAIT)
        .await;
    let note = texts_containing(&calls, "holds target")[0]
        .str("text")
        .unwrap()
        .to_string();
    assert!(note.contains(&busy) && note.contains("`api`"), "{note}");
    assert_eq!(runs(&store).await.len(), 1, "only the run started by hand");
    slash(&rig, server.addr, OPS, &format!("abort {busy}")).await;
    wait_all_done(&store).await;
    server.shutdown("test over").await;
}

#[tokio::test]
async fn a_halt_skips_fires_until_resume() {
    let (rig, clock) = rig().await;
    let server = rig.start().await;
    let store = server.app.store.clone();
    slash(
        &rig,
        server.addr,
        ALICE,
        "schedule slow-api every day at 14:00",
    )
    .await;
    let t = slash(&rig, server.addr, OPS, "abort all freeze for the release").await;
    assert!(t.contains("halt is now in force"), "{t}");
    // /chaos start is refused while the halt is in force, naming who, when, why and how.
    let t = slash(&rig, server.addr, ALICE, "start slow-api").await;
    assert!(
        t.contains("<@UOPS>")
            && t.contains("Tue 2026-11-24 13:00 UTC")
            && t.contains("freeze for the release")
            && t.contains("/chaos resume"),
        "{t}"
    );

    clock.set(ms("2026-11-24T13:50:00Z"));
    let calls = rig.fake.wait_for(|c| heads_ups(c).len() == 1, WAIT).await;
    assert!(heads_ups(&calls)[0].str("text").unwrap().contains("halt"));
    clock.set(ms("2026-11-24T14:00:05Z"));
    let calls = rig
        .fake
        .wait_for(
            |c| !texts_containing(c, "Skipped the scheduled run").is_empty(),
            WAIT,
        )
        .await;
    let note = texts_containing(&calls, "Skipped the scheduled run")[0]
        .str("text")
        .unwrap()
        .to_string();
    assert!(
        note.contains("a halt is in force") && note.contains("<@UOPS>"),
        "{note}"
    );
    assert!(runs(&store).await.is_empty());

    let t = slash(&rig, server.addr, ALICE, "resume").await;
    assert!(t.contains("only operators"), "{t}");
    let t = slash(&rig, server.addr, OPS, "resume").await;
    assert!(t.contains("is lifted"), "{t}");
    clock.set(ms("2026-11-25T13:50:00Z"));
    rig.fake.wait_for(|c| heads_ups(c).len() == 2, WAIT).await;
    clock.set(ms("2026-11-25T14:00:05Z"));
    rig.fake.wait_for(|c| run_parents(c).len() == 1, WAIT).await;
    assert_eq!(runs(&store).await.len(), 1);
    wait_all_done(&store).await;
    server.shutdown("test over").await;
}

#[tokio::test]
async fn schedules_survive_a_restart_and_a_missed_fire_is_noted_once() {
    let (rig, clock) = rig().await;
    let server = rig.start().await;
    slash(
        &rig,
        server.addr,
        ALICE,
        "schedule slow-api every weekday at 14:00",
    )
    .await;
    server.shutdown("restart").await;

    // Down through Tuesday's fire: an hour late is past the 5-minute grace.
    clock.set(ms("2026-11-24T15:00:00Z"));
    let server = rig.start().await;
    let store = server.app.store.clone();
    let t = slash(&rig, server.addr, ALICE, "schedules").await;
    assert!(
        t.contains("every weekday at 14:00") && t.contains("next: Wed 2026-11-25 14:00 UTC"),
        "{t}"
    );
    let calls = rig
        .fake
        .wait_for(
            |c| !texts_containing(c, "Missed 1 scheduled run").is_empty(),
            WAIT,
        )
        .await;
    assert!(
        texts_containing(&calls, "Missed")[0]
            .str("text")
            .unwrap()
            .contains("Tue 2026-11-24 14:00 UTC")
    );
    assert!(runs(&store).await.is_empty());

    // Down again through Wednesday's fire, back 2 minutes late: within the grace, it runs.
    server.shutdown("restart").await;
    clock.set(ms("2026-11-25T14:02:00Z"));
    let server = rig.start().await;
    let store = server.app.store.clone();
    let calls = rig.fake.wait_for(|c| run_parents(c).len() == 1, WAIT).await;
    // The missed note was posted once, whatever the ticks and restarts.
    assert_eq!(texts_containing(&calls, "Missed").len(), 1);
    assert_eq!(runs(&store).await.len(), 1);
    wait_all_done(&store).await;
    server.shutdown("test over").await;
}

/// Several schedulers (each with its own connection pool, as separate replicas have) tick at
/// once over the same due fires: each fire is claimed once, posts one heads-up and starts at
/// most one run.
async fn racing_schedulers(url: String, dir: &std::path::Path) {
    const REPLICAS: usize = 4;
    let service = service().await;
    let catalog = dir.join("experiments");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(catalog.join("slow-api.yaml"), SLOW_API).unwrap();
    let mut cfg = config(free_port(), service.addr);
    cfg.catalog = catalog;
    cfg.slack.operators = vec![ALICE.into()];
    let cfg = Arc::new(cfg);
    let clock = ManualClock::new(ms("2026-11-24T13:00:00Z"));
    let window = cfg.schedules.window().unwrap();
    let mut schedulers = Vec::new();
    let mut first: Option<DynStore> = None;
    for _ in 0..REPLICAS {
        let store = chaosbot::store::open(&url).await.unwrap();
        first.get_or_insert_with(|| store.clone());
        // Engines that are not started: runs stay queued (and so hold their target).
        let engine = Engine::new(
            store.clone(),
            TargetRegistry::new(cfg.clone()),
            EngineOptions::new(cfg.guard_rails.clone()),
        );
        let app = Arc::new(SlackApp {
            engine,
            store,
            cfg: cfg.clone(),
            api: Arc::new(HttpSlackApi::new("http://127.0.0.1:9/", "xoxb-unused").unwrap()),
            bot_user_id: std::sync::OnceLock::new(),
            qa_boards: Default::default(),
            clock: clock.clone(),
        });
        schedulers.push(Arc::new(Scheduler::new(app, clock.clone())));
    }
    let store = first.unwrap();
    let s = store
        .create_schedule(&NewSchedule {
            experiment: "slow-api".into(),
            when_text: "every day at 14:00".into(),
            expr: "0 14 * * *".into(),
            tz: "UTC".into(),
            params: [("duration".to_string(), "1s".to_string())].into(),
            team: TEAM.into(),
            channel: CHANNEL.into(),
            created_by: ALICE.into(),
            created_ms: clock.now_ms(),
        })
        .await
        .unwrap();
    let race = |at: &str| {
        clock.set(ms(at));
        let tasks: Vec<_> = schedulers
            .iter()
            .map(|sch| {
                let (sch, window) = (sch.clone(), window.clone());
                tokio::spawn(async move { sch.tick(&window).await.unwrap() })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Tuesday: heads-up, then the fire starts one run.
    race("2026-11-24T13:50:00Z").await;
    race("2026-11-24T13:50:01Z").await;
    assert_eq!(store.pending_count().await.unwrap(), 1, "one heads-up");
    race("2026-11-24T14:00:01Z").await;
    race("2026-11-24T14:00:02Z").await;
    let all = runs(&store).await;
    assert_eq!(all.len(), 1, "one run for one fire");
    let fire = store
        .get_fire(s.id, ms("2026-11-24T14:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fire.run_id.as_deref(), Some(all[0].id.as_str()));
    // Heads-up and the "started" note.
    assert_eq!(store.pending_count().await.unwrap(), 2);

    // Wednesday: the queued run still holds `api`, so the fire is skipped — once.
    race("2026-11-25T13:50:00Z").await;
    race("2026-11-25T14:00:01Z").await;
    race("2026-11-25T14:00:02Z").await;
    assert_eq!(runs(&store).await.len(), 1);
    let fire = store
        .get_fire(s.id, ms("2026-11-25T14:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        fire.skipped
            .as_deref()
            .is_some_and(|r| r.contains("holds target")),
        "{fire:?}"
    );
    assert_eq!(
        store.pending_count().await.unwrap(),
        4,
        "heads-up and one note"
    );

    // The store primitives under a wider race: 16 claimers, one winner per fire; a Skip racing
    // a claim either lands first (the claim sees it) or reports the claim.
    for k in 0..5i64 {
        let fire_ms = ms("2026-12-01T14:00:00Z") + k * 86_400_000;
        let mut stores: Vec<DynStore> = Vec::new();
        for _ in 0..4 {
            stores.push(chaosbot::store::open(&url).await.unwrap());
        }
        let mut tasks = Vec::new();
        for i in 0..16 {
            let st = stores[i % stores.len()].clone();
            tasks.push(tokio::spawn(async move {
                st.claim_fire(s.id, fire_ms, &format!("owner-{i}"), 0)
                    .await
                    .unwrap()
            }));
        }
        let skipper = stores[0].clone();
        let skip = tokio::spawn(async move {
            skipper
                .skip_fire(s.id, fire_ms, ALICE, "skipped by test")
                .await
                .unwrap()
        });
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(f) = t.await.unwrap() {
                winners.push(f);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins");
        match skip.await.unwrap() {
            SkipOutcome::Skipped => assert!(winners[0].skipped.is_some()),
            SkipOutcome::AlreadyClaimed(_) => assert!(winners[0].skipped.is_none()),
            other => panic!("{other:?}"),
        }
        let heads: Vec<_> = (0..8)
            .map(|i| {
                let st = stores[i % stores.len()].clone();
                tokio::spawn(async move { st.claim_heads_up(s.id, fire_ms + 1, 0).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for h in heads {
            won += usize::from(h.await.unwrap());
        }
        assert_eq!(won, 1, "exactly one heads-up");
    }
}

#[tokio::test]
async fn racing_schedulers_fire_once_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    racing_schedulers(url, dir.path()).await;
}

#[tokio::test]
async fn racing_schedulers_fire_once_on_one_postgres_database() {
    let dir = tempfile::tempdir().unwrap();
    with_postgres(|url| async move { racing_schedulers(url, dir.path()).await }).await;
}

/// Three full servers (three replicas, each with its own pool) on one Postgres database and
/// one clock: every heads-up and every fire of a schedule happens once, and so does the
/// weekly digest. (The halt across replicas: `tests/slack/replicas.rs`, three `serve`
/// processes; game days: `gameday::three_replicas_on_postgres_drive_a_game_day_once_and_hand_it_on`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_on_one_postgres_fire_once_and_post_the_digest_once() {
    with_postgres(|url| async move {
        let (mut rig, clock) = rig().await;
        rig.cfg.database_url = Some(url.clone());
        // The digest is due on Tuesday 24th at 14:30 UTC, on the same clock.
        rig.cfg.digest = chaosbot::config::DigestConfig {
            channel: Some(CHANNEL.into()),
            weekday: "tue".into(),
            at: "14:30".into(),
            timezone: "UTC".into(),
        };
        let mut servers = vec![rig.start().await];
        for _ in 0..2 {
            servers.push(rig.start_replica(&url).await);
        }
        let t = slash(
            &rig,
            servers[0].addr,
            ALICE,
            "schedule slow-api every day at 14:00",
        )
        .await;
        assert!(t.contains("Schedule `1`"), "{t}");
        let t = slash(&rig, servers[2].addr, ALICE, "schedules").await;
        assert!(t.contains("every day at 14:00"), "{t}");

        let store = &servers[0].app.store;
        for (day, n) in [("2026-11-24", 1usize), ("2026-11-25", 2)] {
            clock.set(ms(&format!("{day}T13:50:00Z")));
            rig.fake.wait_for(|c| heads_ups(c).len() == n, WAIT).await;
            clock.set(ms(&format!("{day}T14:00:05Z")));
            rig.fake.wait_for(|c| run_parents(c).len() == n, WAIT).await;
            wait_all_done(store).await;
            if n == 1 {
                clock.set(ms("2026-11-24T14:31:00Z"));
                rig.fake.wait_for(|c| !digests(c).is_empty(), WAIT).await;
            }
        }
        // Several more ticks of all three: nothing is posted or started twice.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = rig.fake.calls();
        assert_eq!(heads_ups(&calls).len(), 2);
        assert_eq!(run_parents(&calls).len(), 2);
        assert_eq!(runs(store).await.len(), 2);
        assert_eq!(digests(&calls).len(), 1, "the digest is posted once");
        for s in servers {
            s.shutdown("test over").await;
        }
    })
    .await;
}

/// The first message of each weekly digest posted.
fn digests(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.status == 200)
        .filter(|c| {
            c.str("text")
                .is_some_and(|t| t.starts_with(":calendar: Weekly chaos digest"))
        })
        .collect()
}

/// The schedule store on one backend: create, list, remove, fires, the halt, and the planned
/// runs `upcoming` reports (a skipped fire left out).
async fn store_round_trip(store: DynStore) {
    let new = |experiment: &str, expr: &str, tz: &str| NewSchedule {
        experiment: experiment.into(),
        when_text: format!("{expr} in {tz}"),
        expr: expr.into(),
        tz: tz.into(),
        params: [("latency".to_string(), "300ms".to_string())].into(),
        team: TEAM.into(),
        channel: CHANNEL.into(),
        created_by: ALICE.into(),
        created_ms: ms("2026-11-24T00:00:00Z"),
    };
    let a = store
        .create_schedule(&new("a", "0 14 * * 2,4", "Europe/Berlin"))
        .await
        .unwrap();
    let b = store
        .create_schedule(&new("b", "30 9 * * *", "UTC"))
        .await
        .unwrap();
    assert_eq!(a.params.get("latency").map(String::as_str), Some("300ms"));
    assert_eq!(
        (a.tz.as_str(), a.last_claimed_fire_ms),
        ("Europe/Berlin", None)
    );
    let listed = store.list_schedules().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        [a.id, b.id]
    );

    // Planned runs over Tue 24th .. Fri 27th: a on Tue and Thu at 13:00 UTC, b daily at 09:30.
    let from = ms("2026-11-24T00:00:00Z");
    let to = ms("2026-11-28T00:00:00Z");
    let plan = chaosbot::schedule::upcoming(&store, from, to)
        .await
        .unwrap();
    let got: Vec<(String, i64)> = plan
        .iter()
        .map(|u| (u.experiment.clone(), u.at_ms))
        .collect();
    let want: Vec<(String, i64)> = [
        ("b", "2026-11-24T09:30:00Z"),
        ("a", "2026-11-24T13:00:00Z"),
        ("b", "2026-11-25T09:30:00Z"),
        ("b", "2026-11-26T09:30:00Z"),
        ("a", "2026-11-26T13:00:00Z"),
        ("b", "2026-11-27T09:30:00Z"),
    ]
    .iter()
    .map(|(e, t)| (e.to_string(), ms(t)))
    .collect();
    assert_eq!(got, want);
    assert!(plan.iter().all(|u| u.channel == CHANNEL));

    // A skipped fire leaves the plan; a second Skip says it was skipped; a claim then sees it.
    let f = ms("2026-11-26T13:00:00Z");
    assert_eq!(
        store
            .skip_fire(a.id, f, ALICE, "skipped by <@UALICE>")
            .await
            .unwrap(),
        SkipOutcome::Skipped
    );
    assert!(matches!(
        store.skip_fire(a.id, f, OPS, "again").await.unwrap(),
        SkipOutcome::AlreadySkipped(_)
    ));
    let plan = chaosbot::schedule::upcoming(&store, from, to)
        .await
        .unwrap();
    assert_eq!(plan.len(), 5);
    assert!(!plan.iter().any(|u| u.at_ms == f));
    let claimed = store.claim_fire(a.id, f, "me", 1).await.unwrap().unwrap();
    assert_eq!(claimed.skipped_by.as_deref(), Some(ALICE));
    assert!(
        store
            .claim_fire(a.id, f, "other", 2)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .get_schedule(a.id)
            .await
            .unwrap()
            .unwrap()
            .last_claimed_fire_ms,
        Some(f)
    );
    // A run recorded on a claimed fire; a Skip after the claim is refused.
    let g = ms("2026-11-24T09:30:00Z");
    assert!(store.claim_heads_up(b.id, g, 5).await.unwrap());
    assert!(!store.claim_heads_up(b.id, g, 6).await.unwrap());
    store.claim_fire(b.id, g, "me", 7).await.unwrap().unwrap();
    store
        .finish_fire(b.id, g, Some("r-123"), None)
        .await
        .unwrap();
    match store.skip_fire(b.id, g, ALICE, "late").await.unwrap() {
        SkipOutcome::AlreadyClaimed(fire) => {
            assert_eq!(fire.run_id.as_deref(), Some("r-123"));
            assert_eq!(fire.heads_up_ms, Some(5));
        }
        other => panic!("{other:?}"),
    }

    // Remove: once.
    assert!(store.remove_schedule(b.id, OPS, 10).await.unwrap());
    assert!(!store.remove_schedule(b.id, OPS, 11).await.unwrap());
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    assert!(
        store
            .get_schedule(b.id)
            .await
            .unwrap()
            .unwrap()
            .removed_ms
            .is_some()
    );

    // The halt: one in force until lifted; a second one keeps the first.
    assert!(
        chaosbot::schedule::halt_in_force(&store)
            .await
            .unwrap()
            .is_none()
    );
    let h = store.set_halt(OPS, "release freeze", 100).await.unwrap();
    assert_eq!(
        (h.halted_by.as_str(), h.reason.as_str(), h.since_ms),
        (OPS, "release freeze", 100)
    );
    let again = store.set_halt(ALICE, "other", 200).await.unwrap();
    assert_eq!(again.id, h.id);
    let now = chaosbot::schedule::halt_in_force(&store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.id, h.id);
    let lifted = store.lift_halt(ALICE, 300).await.unwrap().unwrap();
    assert_eq!(
        (lifted.lifted_by.as_deref(), lifted.lifted_ms),
        (Some(ALICE), Some(300))
    );
    assert!(store.current_halt().await.unwrap().is_none());
    assert!(store.lift_halt(ALICE, 400).await.unwrap().is_none());
    let next = store.set_halt(ALICE, "second", 500).await.unwrap();
    assert_ne!(next.id, h.id);
}

#[tokio::test]
async fn schedule_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    store_round_trip(sqlite_store(dir.path()).await).await;
}

#[tokio::test]
async fn schedule_store_on_postgres() {
    with_postgres(|url| async move {
        store_round_trip(chaosbot::store::open(&url).await.unwrap()).await;
    })
    .await;
}
