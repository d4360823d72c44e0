//! Game days end to end: `chaosbot serve`'s composition (HTTP edge, engine, proxy, projector,
//! outbox, game-day driver) against the fake Slack Web API, with a real local service behind
//! the real proxy and a real SQLite file. Also: plan validation, and the game-day store (its
//! lease) on both backends.

use crate::support;

use std::path::Path;
use std::time::Duration;

use chaosbot::config::{AllowRule, Config, Secret};
use chaosbot::gameday::plan::{load_plans, parse_plan};
use chaosbot::run::Verdict;
use chaosbot::store::gamedays::{GamedayProgress, GamedayRecord, GamedayState, NewGameday};
use chaosbot::store::{DynStore, RunFilter};
use support::app::{CHANNEL, TEAM, TestApp};
use support::fake_slack::Call;
use support::*;

const SECRET: &str = "gameday-signing-secret";
const ALICE: &str = "UALICE";
const BOB: &str = "UBOB";

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

const BLIP_API: &str = r#"
name: blip-api
title: The API shrugs off 10 ms of jitter
owner: "@sre"
parameters:
  duration: {type: duration, default: 1s, min: 1s, max: 1m}
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 200ms
method:
  - name: jitter
    target: api
    fault: latency
    latency: 5ms
    jitter: 10ms
    duration: ${duration}
"#;

/// Two short experiments, two seconds of Q&A between them.
const TWO_SHORT: &str = r#"
name: two-short
title: Two short experiments
owner: "@sre"
qa_window: 2s
agenda:
  - experiment: slow-api
    params: {duration: 1s}
    title: Latency first
  - experiment: blip-api
"#;

/// A long first item (to stop it mid-way), then a second that must never run.
const LONG_FIRST: &str = r#"
name: long-first
title: A long experiment first
owner: "@sre"
qa_window: 1s
agenda:
  - experiment: slow-api
    params: {duration: 40s}
  - experiment: blip-api
"#;

/// Four seconds of Q&A: room to restart the server in between.
const RESTARTABLE: &str = r#"
name: restartable
title: Survives a restart
owner: "@sre"
qa_window: 4s
agenda:
  - experiment: slow-api
    params: {duration: 1s}
  - experiment: blip-api
"#;

/// Names an experiment that is not in the catalog.
const BROKEN: &str = r#"
name: broken-day
title: Names an unknown experiment
owner: "@sre"
agenda:
  - experiment: slow-api
  - experiment: slow-apj
"#;

/// Includes an experiment only operators may start.
const PRIVILEGED: &str = r#"
name: privileged-day
title: Includes an experiment ALICE may not start
owner: "@sre"
qa_window: 1s
agenda:
  - experiment: slow-api
  - experiment: locked-api
"#;

async fn rig() -> TestApp {
    let mut app = TestApp::new(SECRET).await;
    app.add_to_catalog("slow-api.yaml", SLOW_API);
    app.add_to_catalog("blip-api.yaml", BLIP_API);
    app.add_to_catalog(
        "locked-api.yaml",
        &BLIP_API.replace("name: blip-api", "name: locked-api"),
    );
    for (file, text) in [
        ("two-short.yaml", TWO_SHORT),
        ("long-first.yaml", LONG_FIRST),
        ("restartable.yaml", RESTARTABLE),
        ("broken-day.yaml", BROKEN),
        ("privileged-day.yaml", PRIVILEGED),
    ] {
        app.add_to_catalog(&format!("gamedays/{file}"), text);
    }
    app.cfg.slack.bot_token = Some(Secret("xoxb-gameday".into()));
    app.cfg.slack.allow = vec![AllowRule {
        experiments: vec!["slow-api".into(), "blip-api".into()],
        users: vec![ALICE.into()],
        channels: vec![CHANNEL.into()],
    }];
    app
}

/// A slash command, answered to its sender only; the answer's text.
async fn slash(rig: &TestApp, addr: std::net::SocketAddr, user: &str, text: &str) -> String {
    let v = rig.slash(addr, user, text).await;
    assert_eq!(v["response_type"], "ephemeral");
    v["text"].as_str().unwrap_or_default().to_string()
}

fn gameday_id_in(text: &str) -> String {
    let at = text.find("`g-").expect("the answer names the game day") + 1;
    text[at..at + 12].to_string()
}

fn posts(calls: &[Call]) -> Vec<(usize, &Call)> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.method == "chat.postMessage" && c.status == 200)
        .collect()
}

/// Index (in the calls) of the first delivered post whose text satisfies `pred`.
fn post_index(calls: &[Call], pred: impl Fn(&str, &Call) -> bool) -> Option<usize> {
    posts(calls)
        .into_iter()
        .find(|(_, c)| pred(c.str("text").unwrap_or_default(), c))
        .map(|(i, _)| i)
}

fn is_closing(gameday: &str) -> impl Fn(&[Call]) -> bool + '_ {
    move |calls| {
        post_index(calls, |t, c| {
            t.starts_with(&format!("Game day {gameday} `"))
                && t.contains("experiment(s) ran")
                && c.body.get("thread_ts").is_none()
        })
        .is_some()
    }
}

/// The top-level post that is the run's parent message.
fn run_parent_index(calls: &[Call], run_id: &str) -> Option<usize> {
    posts(calls)
        .into_iter()
        .find(|(_, c)| {
            c.body.get("thread_ts").is_none()
                && !c.str("text").unwrap_or_default().starts_with("Game day")
                && c.body.to_string().contains(run_id)
        })
        .map(|(i, _)| i)
}

async fn gameday(store: &DynStore, id: &str) -> GamedayRecord {
    store.get_gameday(id).await.unwrap().unwrap()
}

/// The game day once its row is closed (the closing post may be delivered a moment before
/// the row records it).
async fn closed_gameday(store: &DynStore, id: &str) -> GamedayRecord {
    for _ in 0..200 {
        let g = gameday(store, id).await;
        if g.closed_ms.is_some() {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("game day {id} was not closed within 10 s");
}

#[tokio::test]
async fn a_game_day_runs_its_agenda_in_order_with_qa_windows() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;

    // The list shows the valid plans and says that one plan file has problems.
    let list = slash(&rig, server.addr, ALICE, "gameday").await;
    assert!(list.contains("game-day plan(s)"), "{list}");

    // Slack fails the opening's first three attempts: the first run still waits for it, so
    // the agenda is announced before the run's own message.
    rig.fake.fail_next(3, Some("chat.postMessage"), 500);
    let answer = slash(&rig, server.addr, ALICE, "gameday two-short").await;
    assert!(answer.contains("is starting"), "{answer}");
    let id = gameday_id_in(&answer);

    let calls = rig
        .fake
        .wait_for(is_closing(&id), Duration::from_secs(90))
        .await;
    let g = closed_gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Done);
    assert!(g.closed_ms.is_some());
    let runs: Vec<String> = g.run_ids.iter().map(|r| r.clone().unwrap()).collect();
    assert_eq!(runs.len(), 2);
    let run1 = store.get_run(&runs[0]).await.unwrap().unwrap();
    let run2 = store.get_run(&runs[1]).await.unwrap().unwrap();
    assert_eq!(
        (run1.experiment.as_str(), run2.experiment.as_str()),
        ("slow-api", "blip-api")
    );
    assert_eq!(run1.verdict, Some(Verdict::Held), "{:?}", run1.reason);
    assert_eq!(run2.verdict, Some(Verdict::Held), "{:?}", run2.reason);
    assert_eq!(run1.params.get("duration").map(String::as_str), Some("1s"));
    assert_eq!(
        run1.requested_by, ALICE,
        "runs are started as the game day's starter"
    );
    // The second run was queued only after the first finished and its Q&A window passed.
    let gap = run2.created_ms - run1.finished_ms.unwrap();
    assert!(
        gap >= 2000,
        "second run queued {gap} ms after the first ended"
    );

    // Opening, first parent, note, second parent, note, closing: in that order.
    let opening = post_index(&calls, |t, c| {
        t.starts_with(&format!("Game day {id} `two-short`"))
            && t.contains("started by")
            && c.body.get("thread_ts").is_none()
    })
    .expect("the opening message");
    let opening_ts = store
        .message_ref(&chaosbot::gameday::opening_key(&id))
        .await
        .unwrap()
        .expect("the opening was delivered")
        .ts;
    let opening_blocks = calls[opening].body["blocks"].to_string();
    assert!(
        opening_blocks.contains("Latency first") && opening_blocks.contains("blip-api"),
        "the opening shows the agenda: {opening_blocks}"
    );
    assert!(opening_blocks.contains(&format!("<@{ALICE}>")));
    let parent1 = run_parent_index(&calls, &runs[0]).expect("first run's parent message");
    let parent2 = run_parent_index(&calls, &runs[1]).expect("second run's parent message");
    let note = |exp: &'static str| {
        let opening_ts = opening_ts.clone();
        move |t: &str, c: &Call| {
            t.contains(&format!("Q&A for `{exp}`"))
                && c.str("thread_ts") == Some(opening_ts.as_str())
        }
    };
    let note1 = post_index(&calls, note("slow-api")).expect("the note after the first run");
    let note2 = post_index(&calls, note("blip-api")).expect("the note after the second run");
    let note1_text = calls[note1].str("text").unwrap();
    assert!(
        note1_text.contains("open for 2s") && note1_text.contains("next: `blip-api`"),
        "{note1_text}"
    );
    let closing = post_index(&calls, |t, c| {
        t.starts_with(&format!("Game day {id} `"))
            && c.body.get("thread_ts").is_none()
            && t.contains("ran")
    })
    .unwrap();
    let order = [opening, parent1, note1, parent2, note2, closing];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "posts out of order: {order:?}"
    );

    // The closing summary: both verdicts and run ids, the totals.
    let text = calls[closing].str("text").unwrap();
    assert!(
        text.contains("finished") && text.contains("2 of 2") && text.contains("2 held"),
        "{text}"
    );
    let blocks = calls[closing].body["blocks"].to_string();
    assert!(
        blocks.contains(&runs[0]) && blocks.contains(&runs[1]),
        "{blocks}"
    );
    assert!(
        blocks.contains("detect") && blocks.contains("Totals"),
        "{blocks}"
    );

    // Each message once.
    let openings: Vec<&str> = posts(&calls)
        .iter()
        .filter(|(_, c)| {
            c.str("text").unwrap_or_default().contains("started by")
                && c.body.get("thread_ts").is_none()
        })
        .map(|(_, c)| c.str("text").unwrap_or_default())
        .collect();
    assert_eq!(openings.len(), 1, "{openings:#?}");
    server.shutdown("test over").await;
}

#[tokio::test]
async fn bad_plans_and_users_not_allowed_are_refused_and_nothing_starts() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;

    let answer = slash(&rig, server.addr, ALICE, "gameday broken-day").await;
    assert!(
        answer.contains("cannot run; nothing was started"),
        "{answer}"
    );
    assert!(
        answer.contains("no experiment `slow-apj`; did you mean `slow-api`?"),
        "{answer}"
    );
    assert!(
        answer.contains("line 7:"),
        "the plan's line is named: {answer}"
    );

    let answer = slash(&rig, server.addr, ALICE, "gameday two-shrot").await;
    assert!(answer.contains("did you mean `two-short`?"), "{answer}");

    // BOB is in no allow rule: refused as a whole.
    let answer = slash(&rig, server.addr, BOB, "gameday two-short").await;
    assert!(answer.contains("was not started"), "{answer}");
    assert!(answer.contains("may not start `slow-api`"), "{answer}");
    // ALICE may start slow-api but not locked-api: the whole game day is refused.
    let answer = slash(&rig, server.addr, ALICE, "gameday privileged-day").await;
    assert!(answer.contains("was not started"), "{answer}");
    assert!(answer.contains("`locked-api`"), "{answer}");
    assert!(!answer.contains("may not start `slow-api`"), "{answer}");

    // Stopping needs an id that exists, and the starter or an operator.
    let answer = slash(&rig, server.addr, ALICE, "gameday stop g-nonexisting").await;
    assert!(answer.contains("no game day `g-nonexisting`"), "{answer}");

    // While a halt (`abort all`) is in force, no game day starts.
    let answer = slash(&rig, server.addr, "UOPS", "abort all incident").await;
    assert!(answer.contains("halt"), "{answer}");
    let answer = slash(&rig, server.addr, ALICE, "gameday two-short").await;
    assert!(
        answer.contains("was not started") && answer.contains("halt is in force"),
        "{answer}"
    );
    slash(&rig, server.addr, "UOPS", "resume").await;

    assert!(store.list_gamedays(10).await.unwrap().is_empty());
    let runs = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(runs.is_empty(), "nothing ran: {runs:?}");
    server.shutdown("test over").await;
}

#[tokio::test]
async fn stopping_mid_way_aborts_the_current_run_and_closes_the_game_day() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;
    let answer = slash(&rig, server.addr, ALICE, "gameday long-first").await;
    let id = gameday_id_in(&answer);

    // Wait until the first run is under way (its parent message is in the channel).
    let mut run1 = None;
    for _ in 0..300 {
        let g = gameday(&store, &id).await;
        if let Some(r) = g.run_ids[0].clone()
            && store
                .get_run(&r)
                .await
                .unwrap()
                .is_some_and(|r| r.started_ms.is_some())
        {
            run1 = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run1 = run1.expect("the first item started within 30 s");

    // Someone else may not stop it.
    let answer = slash(&rig, server.addr, BOB, &format!("gameday stop {id}")).await;
    assert!(answer.contains("only <@UALICE>"), "{answer}");

    let answer = slash(
        &rig,
        server.addr,
        ALICE,
        &format!("gameday stop {id} enough for today"),
    )
    .await;
    assert!(answer.contains("is stopped"), "{answer}");
    assert!(answer.contains(&run1), "{answer}");

    let calls = rig
        .fake
        .wait_for(is_closing(&id), Duration::from_secs(60))
        .await;
    let g = closed_gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Stopped);
    assert_eq!(g.stopped_by.as_deref(), Some(ALICE));
    assert_eq!(g.run_ids[1], None, "the second item never started");
    let run = store.get_run(&run1).await.unwrap().unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert!(
        run.finished_ms.unwrap() - run.started_ms.unwrap() < 30_000,
        "aborted well before its 40 s"
    );
    let all = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);

    let closing = post_index(&calls, |t, c| {
        t.starts_with(&format!("Game day {id} `"))
            && c.body.get("thread_ts").is_none()
            && t.contains("ran")
    })
    .unwrap();
    let text = calls[closing].str("text").unwrap();
    assert!(
        text.contains("stopped by <@UALICE>: enough for today") && text.contains("1 of 2"),
        "{text}"
    );
    assert!(text.contains("1 aborted"), "{text}");
    let blocks = calls[closing].body["blocks"].to_string();
    assert!(blocks.contains("not run"), "{blocks}");

    // Stopping again says it is over.
    let answer = slash(&rig, server.addr, ALICE, &format!("gameday stop {id}")).await;
    assert!(answer.contains("already stopped"), "{answer}");
    server.shutdown("test over").await;
}

#[tokio::test]
async fn a_restarted_server_resumes_the_game_day_with_the_next_item() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;
    let answer = slash(&rig, server.addr, ALICE, "gameday restartable").await;
    let id = gameday_id_in(&answer);

    // The first run is over and its Q&A window has begun: stop the process there.
    rig.fake
        .wait_for(
            |calls| post_index(calls, |t, _| t.contains("Q&A for `slow-api`")).is_some(),
            Duration::from_secs(60),
        )
        .await;
    server.shutdown("restart").await;
    let g = gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Running);
    assert_eq!(g.current, 1);
    assert_eq!(g.run_ids[1], None);
    assert_eq!(g.owner, None, "the lease was handed back on shutdown");
    let first = g.run_ids[0].clone().unwrap();

    let server = rig.start().await;
    let calls = rig
        .fake
        .wait_for(is_closing(&id), Duration::from_secs(90))
        .await;
    let g = closed_gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Done);
    assert_eq!(g.run_ids[0].as_deref(), Some(first.as_str()));
    let second = g.run_ids[1].clone().unwrap();
    let all = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 10,
        })
        .await
        .unwrap();
    let mut experiments: Vec<&str> = all.iter().map(|r| r.experiment.as_str()).collect();
    experiments.sort();
    assert_eq!(experiments, ["blip-api", "slow-api"], "nothing ran twice");
    let run1 = store.get_run(&first).await.unwrap().unwrap();
    let run2 = store.get_run(&second).await.unwrap().unwrap();
    assert!(run2.created_ms - run1.finished_ms.unwrap() >= 4000);

    // The opening and the first note were not repeated by the new process.
    let count = |needle: &str| {
        posts(&calls)
            .iter()
            .filter(|(_, c)| c.str("text").unwrap_or_default().contains(needle))
            .count()
    };
    assert_eq!(count("started by"), 1);
    assert_eq!(count("Q&A for `slow-api`"), 1);
    assert_eq!(count("Q&A for `blip-api`"), 1);
    let closing = post_index(&calls, |t, c| {
        t.starts_with(&format!("Game day {id} `"))
            && c.body.get("thread_ts").is_none()
            && t.contains("ran")
    })
    .unwrap();
    let blocks = calls[closing].body["blocks"].to_string();
    assert!(
        blocks.contains(&first) && blocks.contains(&second),
        "{blocks}"
    );
    server.shutdown("test over").await;
}

// ---------------------------------------------------------------------------------------------
// Plan files

fn plan_rig() -> (tempfile::TempDir, Config, chaosbot::spec::Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().join("experiments");
    std::fs::create_dir_all(&catalog_dir).unwrap();
    std::fs::write(catalog_dir.join("slow-api.yaml"), SLOW_API).unwrap();
    std::fs::write(catalog_dir.join("blip-api.yaml"), BLIP_API).unwrap();
    let mut cfg = config(free_port(), free_port());
    cfg.catalog = catalog_dir.clone();
    let catalog = chaosbot::spec::load_catalog(&catalog_dir, &cfg);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    (dir, cfg, catalog)
}

fn problems(text: &str) -> Vec<String> {
    let (_dir, cfg, catalog) = plan_rig();
    match parse_plan(text, "plan.yaml", &cfg, &catalog) {
        Ok(p) => panic!("expected problems, got {p:?}"),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_valid_plan_resolves_every_item_with_its_params() {
    let (_dir, cfg, catalog) = plan_rig();
    let plan = parse_plan(TWO_SHORT, "two-short.yaml", &cfg, &catalog).unwrap();
    assert_eq!(plan.name, "two-short");
    assert_eq!(plan.qa_window, Duration::from_secs(2));
    assert_eq!(plan.pause_between, Duration::ZERO);
    assert_eq!(plan.agenda.len(), 2);
    assert_eq!(plan.agenda[0].title, "Latency first");
    assert_eq!(
        plan.agenda[1].title, "The API shrugs off 10 ms of jitter",
        "the experiment's title when the item sets none"
    );
    assert_eq!(
        plan.agenda[0].resolved.method_duration(),
        Duration::from_secs(1)
    );
    // Without qa_window the config's default applies.
    let text = TWO_SHORT.replace("qa_window: 2s\n", "");
    let plan = parse_plan(&text, "p.yaml", &cfg, &catalog).unwrap();
    assert_eq!(plan.qa_window, cfg.gameday.qa_window);
    assert_eq!(plan.qa_window, Duration::from_secs(600));
}

#[test]
fn unknown_keys_and_experiments_are_named_with_the_close_ones() {
    let p = problems(
        "name: p\ntitel: T\nowner: o\nagenda:\n  - experimnt: slow-api\n  - experiment: slow-apj\n",
    );
    let all = p.join("\n");
    assert!(all.contains("plan.yaml:2:1: unknown key `titel`"), "{all}");
    assert!(all.contains("did you mean `title`?"), "{all}");
    assert!(
        all.contains("plan.yaml:5:5: unknown key `experimnt` in `agenda[0]`"),
        "{all}"
    );
    assert!(all.contains("did you mean `experiment`?"), "{all}");
    assert!(
        all.contains(
            "plan.yaml:6:17: agenda item 2: no experiment `slow-apj`; did you mean `slow-api`?"
        ),
        "{all}"
    );
}

#[test]
fn bad_params_are_found_by_resolving_each_item() {
    let p = problems(
        "name: p\ntitle: T\nowner: o\nagenda:\n  - experiment: slow-api\n    params: {duration: 5m, colour: red}\n",
    );
    let all = p.join("\n");
    assert!(
        all.contains("agenda item 1 (`slow-api`)") && all.contains("above the maximum 2m"),
        "{all}"
    );
    assert!(all.contains("no parameter `colour`"), "{all}");
    assert!(p.iter().all(|l| l.starts_with("plan.yaml:6:")), "{all}");
}

#[test]
fn empty_agendas_missing_keys_and_durations_out_of_bounds_are_refused() {
    let all = problems("name: p\ntitle: T\nowner: o\nagenda: []\n").join("\n");
    assert!(all.contains("plan.yaml:4:9: the agenda is empty"), "{all}");

    let all = problems("title: T\n").join("\n");
    assert!(all.contains("missing `name`"), "{all}");
    assert!(all.contains("missing `owner`"), "{all}");
    assert!(all.contains("missing `agenda`"), "{all}");

    let all = problems(
        "name: p\ntitle: T\nowner: o\nqa_window: 3h\npause_between: -1s\nagenda:\n  - experiment: slow-api\n",
    )
    .join("\n");
    assert!(
        all.contains("plan.yaml:4:12: `qa_window` is 3h, above the limit of 2h"),
        "{all}"
    );
    assert!(
        all.contains("plan.yaml:5:16: `pause_between`") && all.contains("negative"),
        "{all}"
    );

    let all = problems("name: Game Day\ntitle: T\nowner: o\nagenda:\n  - experiment: slow-api\n")
        .join("\n");
    assert!(all.contains("not a slug"), "{all}");

    let many: String = (0..21).map(|_| "  - experiment: slow-api\n").collect();
    let all = problems(&format!("name: p\ntitle: T\nowner: o\nagenda:\n{many}")).join("\n");
    assert!(all.contains("at most 20"), "{all}");

    let all = problems("").join("\n");
    assert!(all.contains("the plan file is empty"), "{all}");
}

#[test]
fn the_catalog_does_not_take_plans_for_experiments_and_plans_load_beside_it() {
    let (dir, cfg, _) = plan_rig();
    let plans_dir = chaosbot::gameday::plan::plans_dir(&cfg.catalog);
    std::fs::create_dir_all(&plans_dir).unwrap();
    std::fs::write(plans_dir.join("two-short.yaml"), TWO_SHORT).unwrap();
    std::fs::write(plans_dir.join("broken.yaml"), BROKEN).unwrap();
    let catalog = chaosbot::spec::load_catalog(&cfg.catalog, &cfg);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    assert_eq!(catalog.entries.len(), 2);
    let plans = load_plans(&cfg, &catalog);
    assert_eq!(plans.plans.len(), 1);
    assert!(plans.find("two-short").is_ok());
    let broken = plans.problems_of("broken-day");
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("slow-apj"), "{broken:?}");
    assert!(
        !broken[0].contains(&dir.path().display().to_string()),
        "no server paths in Slack"
    );
    let err = plans.find("nope").unwrap_err();
    assert!(err.contains("the plans are: two-short"), "{err}");
}

#[test]
fn the_example_plans_validate_against_the_example_config_and_catalog() {
    let cfg = Config::from_file(Path::new("chaosbot.example.toml")).unwrap();
    let catalog = chaosbot::spec::load_catalog(Path::new("experiments"), &cfg);
    let mut cfg = cfg;
    cfg.catalog = "experiments".into();
    let plans = load_plans(&cfg, &catalog);
    assert!(plans.problems.is_empty(), "{:#?}", plans.problems);
    assert!(!plans.plans.is_empty());
    for (_, plan) in &plans.plans {
        for item in &plan.agenda {
            assert!(catalog.find(&item.experiment).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store: one replica drives a game day at a time, on both backends

async fn lease_behaviour(store: DynStore) {
    let g = store
        .create_gameday(&NewGameday {
            id: "g-test".into(),
            plan: "two-short".into(),
            plan_json: serde_json::json!({"name": "two-short"}),
            team: TEAM.into(),
            channel: CHANNEL.into(),
            started_by: ALICE.into(),
            items: 2,
            created_ms: 1_000,
        })
        .await
        .unwrap();
    assert_eq!(g.state, GamedayState::Running);
    assert_eq!(g.run_ids, vec![None, None]);
    assert_eq!(g.plan_json["name"], "two-short");
    assert_eq!(store.open_gamedays().await.unwrap().len(), 1);

    // A claims; B cannot while A's lease holds; A renews.
    assert!(
        store
            .claim_gameday("g-test", "A", 2_000, 32_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_gameday("g-test", "B", 3_000, 33_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_gameday("g-test", "A", 4_000, 34_000)
            .await
            .unwrap()
    );
    let progress = GamedayProgress {
        current: 1,
        run_ids: vec![Some("r-1".into()), None],
        wait_until_ms: Some(9_000),
    };
    assert!(
        store
            .save_gameday_progress("g-test", "A", &progress, 5_000, 35_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_gameday_progress("g-test", "B", &progress, 5_000, 35_000)
            .await
            .unwrap()
    );
    let g = store.get_gameday("g-test").await.unwrap().unwrap();
    assert_eq!((g.current, g.wait_until_ms), (1, Some(9_000)));
    assert_eq!(g.run_ids, progress.run_ids);

    // Concurrent claims after the lease ended: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_gameday("g-test", &format!("R{i}"), 40_000, 70_000)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one replica takes over");
    assert!(
        !store
            .save_gameday_progress("g-test", "A", &progress, 41_000, 71_000)
            .await
            .unwrap(),
        "A lost the lease"
    );
    let holder = store
        .get_gameday("g-test")
        .await
        .unwrap()
        .unwrap()
        .owner
        .unwrap();

    // Released: anyone may claim at once.
    store.release_gameday("g-test", &holder).await.unwrap();
    assert!(
        store
            .claim_gameday("g-test", "C", 42_000, 72_000)
            .await
            .unwrap()
    );

    // A stop ends progress; closing needs a game day that is not running; closed leaves the
    // open list.
    assert!(!store.close_gameday("g-test", "C", 43_000).await.unwrap());
    let stopped = store
        .stop_gameday("g-test", ALICE, "enough", 44_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.state, GamedayState::Stopped);
    assert_eq!(stopped.reason.as_deref(), Some("enough"));
    assert!(
        !store
            .save_gameday_progress("g-test", "C", &progress, 45_000, 75_000)
            .await
            .unwrap()
    );
    assert!(!store.finish_gameday("g-test", "C", 45_000).await.unwrap());
    let again = store
        .stop_gameday("g-test", BOB, "again", 46_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.stopped_by.as_deref(),
        Some(ALICE),
        "the first stop stands"
    );
    assert!(store.close_gameday("g-test", "C", 47_000).await.unwrap());
    assert!(store.open_gamedays().await.unwrap().is_empty());
    assert!(
        !store
            .claim_gameday("g-test", "D", 99_000, 129_000)
            .await
            .unwrap()
    );
    assert_eq!(store.list_gamedays(5).await.unwrap().len(), 1);
    assert!(
        store
            .stop_gameday("g-none", ALICE, "x", 1)
            .await
            .unwrap()
            .is_none()
    );

    // A post counts as queued from its enqueue on, whatever becomes of it.
    let key = chaosbot::gameday::opening_key("g-test");
    assert!(!store.post_queued(&key).await.unwrap());
    let msg = chaosbot::store::outbox::OutboundMessage {
        thread_key: chaosbot::gameday::thread_key("g-test"),
        channel: CHANNEL.into(),
        action: chaosbot::store::outbox::OutboundAction::Post {
            key: Some(key.clone()),
            in_thread_of: None,
            text: "opening".into(),
            blocks: None,
        },
    };
    store.enqueue(&[msg], None).await.unwrap();
    assert!(store.post_queued(&key).await.unwrap());
    assert!(!store.post_queued("gameday:g-test:closing").await.unwrap());
}

#[tokio::test]
async fn the_gameday_lease_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    lease_behaviour(sqlite_store(dir.path()).await).await;
}

#[tokio::test]
async fn the_gameday_lease_on_postgres() {
    with_postgres(|url| async move {
        lease_behaviour(chaosbot::store::open(&url).await.unwrap()).await;
    })
    .await;
}

#[test]
fn chaosbot_validate_checks_plans_against_the_catalog() {
    let bin = env!("CARGO_BIN_EXE_chaosbot");
    let ok = std::process::Command::new(bin)
        .args([
            "--config",
            "chaosbot.example.toml",
            "validate",
            "experiments/gamedays/api-resilience-day.yaml",
            "experiments/api-latency.yaml",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("ok — game-day plan `api-resilience-day`: 3 experiment(s)"),
        "{out}"
    );
    assert!(out.contains("ok — `api-latency`"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("day.yaml");
    std::fs::write(
        &bad,
        "name: day\ntitle: T\nowner: o\nagenda:\n  - experiment: api-latensy\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["--config", "chaosbot.example.toml", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains(
            ":5:17: agenda item 1: no experiment `api-latensy`; did you mean `api-latency`?"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_person_aborting_a_run_stops_the_game_day() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;
    let id = gameday_id_in(&slash(&rig, server.addr, ALICE, "gameday long-first").await);
    let mut run1 = None;
    for _ in 0..300 {
        if let Some(r) = gameday(&store, &id).await.run_ids[0].clone() {
            run1 = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run1 = run1.expect("the first item was submitted within 30 s");
    let answer = slash(
        &rig,
        server.addr,
        ALICE,
        &format!("abort {run1} the API is paging"),
    )
    .await;
    assert!(
        answer.contains("Abort") || answer.contains("cancelled"),
        "{answer}"
    );

    let calls = rig
        .fake
        .wait_for(is_closing(&id), Duration::from_secs(60))
        .await;
    let g = closed_gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Stopped);
    assert_eq!(g.stopped_by.as_deref(), Some(ALICE));
    assert_eq!(g.run_ids[1], None);
    let reason = g.reason.unwrap();
    assert!(
        reason.contains(&run1) && reason.contains("the API is paging"),
        "{reason}"
    );
    let closing = post_index(&calls, |t, c| {
        t.starts_with(&format!("Game day {id} `"))
            && t.contains("experiment(s) ran")
            && c.body.get("thread_ts").is_none()
    })
    .unwrap();
    assert!(
        calls[closing]
            .str("text")
            .unwrap()
            .contains("was aborted by <@UALICE>"),
        "{:?}",
        calls[closing].str("text")
    );
    server.shutdown("test over").await;
}

#[tokio::test]
async fn with_two_drivers_on_one_store_exactly_one_drives() {
    let rig = rig().await;
    let server = rig.start().await;
    let store = rig.store().await;
    // A second, eager driver (another replica's) on the same store.
    let stop = tokio_util::sync::CancellationToken::new();
    let other = chaosbot::slack::gameday::GamedayDriver::new(
        server.app.clone(),
        chaosbot::clock::system(),
        chaosbot::slack::gameday::GamedayOptions {
            poll: Duration::from_millis(50),
            ..Default::default()
        },
        || {},
    );
    let other_task = tokio::spawn(other.clone().run(stop.clone()));
    let id = gameday_id_in(&slash(&rig, server.addr, ALICE, "gameday two-short").await);
    let calls = rig
        .fake
        .wait_for(is_closing(&id), Duration::from_secs(90))
        .await;
    let g = closed_gameday(&store, &id).await;
    assert_eq!(g.state, GamedayState::Done);
    let all = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "each item ran once");
    let count = |needle: &str| {
        posts(&calls)
            .iter()
            .filter(|(_, c)| c.str("text").unwrap_or_default().contains(needle))
            .count()
    };
    assert_eq!(count("started by"), 1);
    assert_eq!(count("Q&A for `slow-api`"), 1);
    assert_eq!(count("Q&A for `blip-api`"), 1);
    assert_eq!(count("experiment(s) ran"), 1);
    stop.cancel();
    other_task.await.unwrap();
    server.shutdown("test over").await;
}

/// A game-day driver on a clock that only the test moves, with its own engine and an outbox
/// delivering to the rig's fake Slack, driving game day `id` of `plan_text` (created here).
struct ClockedDriver {
    store: DynStore,
    engine: std::sync::Arc<chaosbot::engine::Engine>,
    clock: std::sync::Arc<chaosbot::clock::ManualClock>,
    outbox: chaosbot::slack::outbox::Outbox,
    delivering: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ClockedDriver {
    async fn start(rig: &TestApp, id: &str, plan_text: &str) -> ClockedDriver {
        use std::sync::Arc;
        let store = rig.store().await;
        let cfg = Arc::new(rig.cfg.clone());
        let (engine, targets) = started_engine(cfg.clone(), store.clone()).await;
        targets.start_all().await.unwrap();
        let clock = chaosbot::clock::ManualClock::new(chaosbot::run::now_ms());
        let api = Arc::new(
            chaosbot::slack::api::HttpSlackApi::new(&rig.fake.url(), "xoxb-clock").unwrap(),
        );
        let outbox = chaosbot::slack::outbox::Outbox::new(
            store.clone(),
            api.clone(),
            chaosbot::slack::outbox::OutboxOptions {
                owner: format!("clock-test-{id}"),
                poll_interval: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let delivering = outbox.start();
        let app = Arc::new(chaosbot::slack::edge::SlackApp {
            engine: engine.clone(),
            store: store.clone(),
            cfg: cfg.clone(),
            api,
            bot_user_id: std::sync::OnceLock::new(),
            qa_boards: Default::default(),
            clock: clock.clone(),
        });
        let driver = chaosbot::slack::gameday::GamedayDriver::new(
            app,
            clock.clone(),
            chaosbot::slack::gameday::GamedayOptions {
                poll: Duration::from_millis(50),
                ..Default::default()
            },
            || {},
        );
        let catalog = chaosbot::spec::load_catalog(&cfg.catalog, &cfg);
        let plan = parse_plan(plan_text, "two-short.yaml", &cfg, &catalog).unwrap();
        store
            .create_gameday(&NewGameday {
                id: id.into(),
                plan: plan.name.clone(),
                plan_json: serde_json::to_value(&plan).unwrap(),
                team: TEAM.into(),
                channel: CHANNEL.into(),
                started_by: ALICE.into(),
                items: plan.agenda.len(),
                created_ms: chaosbot::run::now_ms(),
            })
            .await
            .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(driver.run(stop.clone()));
        ClockedDriver {
            store,
            engine,
            clock,
            outbox,
            delivering,
            stop,
            task,
        }
    }

    async fn finish(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.outbox.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.delivering).await;
        self.engine
            .shutdown("test over", Duration::from_secs(10))
            .await;
    }
}

#[tokio::test]
async fn the_qa_window_is_timed_on_the_drivers_clock() {
    use chaosbot::clock::Clock;
    let rig = rig().await;
    // Ten minutes of Q&A, on a clock that only the test moves.
    let text = TWO_SHORT.replace("qa_window: 2s", "qa_window: 10m");
    let d = ClockedDriver::start(&rig, "g-clock", &text).await;
    let (store, clock) = (d.store.clone(), d.clock.clone());

    // The first item runs and ends; the game day then waits out the window.
    let mut waiting = None;
    for _ in 0..600 {
        let g = gameday(&store, "g-clock").await;
        if g.current == 1 {
            waiting = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = waiting.expect("the first item finished within 30 s");
    assert_eq!(
        waiting.wait_until_ms,
        Some(clock.now_ms() + 600_000),
        "the window ends ten minutes after the driver saw the run end, on its clock"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let g = gameday(&store, "g-clock").await;
    assert_eq!(
        g.run_ids[1], None,
        "nothing starts while the clock stands still"
    );
    assert!(store.post_queued("gameday:g-clock:note:0").await.unwrap());

    // Ten minutes later (on the clock), the second item starts and the game day closes.
    clock.advance_ms(600_000);
    let g = closed_gameday_within(&store, "g-clock", Duration::from_secs(60)).await;
    assert_eq!(g.state, GamedayState::Done);
    assert!(g.run_ids.iter().all(Option::is_some));
    d.finish().await;
}

/// While Slack fails every post, the first item waits for the opening, but not for ever:
/// 30 s on the driver's clock, then the game day goes on without it.
#[tokio::test]
async fn a_slack_outage_holds_the_first_item_back_30_s_at_most() {
    let rig = rig().await;
    rig.fake.fail_next(100_000, Some("chat.postMessage"), 500);
    let d = ClockedDriver::start(&rig, "g-outage", TWO_SHORT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let g = gameday(&d.store, "g-outage").await;
    assert_eq!(g.run_ids[0], None, "the first item waits for the opening");
    assert!(
        d.store
            .post_queued("gameday:g-outage:opening")
            .await
            .unwrap(),
        "the opening is queued"
    );
    assert!(
        d.store
            .message_ref("gameday:g-outage:opening")
            .await
            .unwrap()
            .is_none(),
        "and not delivered"
    );
    d.clock.advance_ms(29_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gameday(&d.store, "g-outage").await.run_ids[0], None);
    d.clock.advance_ms(1_500);
    let mut started = None;
    for _ in 0..100 {
        if let Some(id) = gameday(&d.store, "g-outage").await.run_ids[0].clone() {
            started = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = started.expect("the first item starts 30 s into the outage");
    assert!(d.store.get_run(&run).await.unwrap().is_some());
    d.finish().await;
}

async fn closed_gameday_within(store: &DynStore, id: &str, limit: Duration) -> GamedayRecord {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let g = gameday(store, id).await;
        if g.closed_ms.is_some() {
            return g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "game day {id} not closed within {limit:?}: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three full servers (three replicas, each with its own pool and game-day driver) on one
/// Postgres database: a game day started through one of them is driven by exactly one; when
/// the server driving it stops mid-way, another replica carries it on with the next item.
/// Every item runs once and every game-day post is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_postgres_drive_a_game_day_once_and_hand_it_on() {
    with_postgres(|url| async move {
        let mut rig = rig().await;
        rig.cfg.database_url = Some(url.clone());
        let mut servers = vec![rig.start().await];
        for _ in 0..2 {
            servers.push(rig.start_replica(&url).await);
        }
        let store = servers[0].app.store.clone();
        let id = gameday_id_in(&slash(&rig, servers[1].addr, ALICE, "gameday restartable").await);

        // The first run is over and its Q&A window (4 s) has begun: stop whichever replica
        // drives the game day there.
        rig.fake
            .wait_for(
                |calls| post_index(calls, |t, _| t.contains("Q&A for `slow-api`")).is_some(),
                Duration::from_secs(60),
            )
            .await;
        let g = gameday(&store, &id).await;
        let driver = g
            .owner
            .clone()
            .expect("a replica holds the game day's lease");
        let at = servers
            .iter()
            .position(|s| driver.starts_with(&s.app.engine.instance().to_string()))
            .unwrap_or_else(|| panic!("no replica owns the lease `{driver}`"));
        let first = g.run_ids[0].clone().unwrap();
        servers.remove(at).shutdown("replica stopped").await;

        rig.fake
            .wait_for(is_closing(&id), Duration::from_secs(90))
            .await;
        let g = closed_gameday(&store, &id).await;
        let all = store
            .list_runs(RunFilter {
                experiment: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(g.state, GamedayState::Done, "{all:?}");
        assert_eq!(g.run_ids[0].as_deref(), Some(first.as_str()));
        let mut experiments: Vec<&str> = all.iter().map(|r| r.experiment.as_str()).collect();
        experiments.sort();
        assert_eq!(experiments, ["blip-api", "slow-api"], "each item ran once");
        let second = g.run_ids[1].clone().unwrap();
        let run2 = store.get_run(&second).await.unwrap().unwrap();
        assert_eq!(run2.verdict, Some(Verdict::Held), "{:?}", run2.reason);
        // A few more polls of the two left: nothing is posted twice.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let calls = rig.fake.calls();
        let count = |needle: &str| {
            posts(&calls)
                .iter()
                .filter(|(_, c)| c.str("text").unwrap_or_default().contains(needle))
                .count()
        };
        assert_eq!(count("started by"), 1);
        assert_eq!(count("Q&A for `slow-api`"), 1);
        assert_eq!(count("Q&A for `blip-api`"), 1);
        assert_eq!(count("experiment(s) ran"), 1);
        for s in servers {
            s.shutdown("test over").await;
        }
    })
    .await;
}
