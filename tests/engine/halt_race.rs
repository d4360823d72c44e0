//! `abort all` racing 50 starts, through the application layer, on SQLite and on Postgres
//! (Postgres when `TEST_POSTGRES_URL` is set; skipped with a notice otherwise).
//!
//! The halt goes in first and the store checks it in the transaction that creates a run, so
//! every start is either refused with the halt, or its run was created before the halt and is
//! aborted by the same `abort all`: nothing is left queued or running with the halt in force.
//!
//! ```text
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test engine halt_race
//! ```

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use chaosbot::app::{App, Caller, Refusal};
use chaosbot::config::{AllowRule, SlackConfig};
use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::{RunState, SlackOrigin, Verdict};
use chaosbot::store::{DynStore, RunFilter};
use support::{config, free_port, sqlite_store, with_postgres};

const STARTS: usize = 50;

const EXPERIMENT: &str = r#"
name: api-latency
title: The API tolerates a little latency
description: Adds latency between clients and the API.
owner: "@tests"
parameters:
  latency: {type: duration, default: 10ms, min: 0ms, max: 500ms}
hypothesis:
  recovery_timeout: 3s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 100ms
      timeout: 2s
method:
  - name: slow-api
    target: api
    fault: latency
    direction: downstream
    latency: ${latency}
    duration: 1s
"#;

/// The application layer on `store`, over an engine that is not started: runs stay queued
/// until `abort all` closes them, so nothing but the race decides their fate.
fn app(store: DynStore, catalog: &std::path::Path) -> App {
    let mut cfg = config(free_port(), free_port());
    cfg.catalog = catalog.to_path_buf();
    cfg.slack = SlackConfig {
        operators: vec!["UOP".into()],
        allow: vec![AllowRule {
            experiments: vec!["api-latency".into()],
            users: vec![],
            channels: vec![],
        }],
        ..SlackConfig::default()
    };
    let cfg = Arc::new(cfg);
    let engine = Engine::new(
        store.clone(),
        TargetRegistry::new(cfg.clone()),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    App::new(engine, store, cfg, chaosbot::clock::system())
}

fn person(user: &str) -> SlackOrigin {
    SlackOrigin {
        team: "T1".into(),
        channel: "C1".into(),
        user: user.into(),
    }
}

async fn race(store: DynStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-latency.yaml"), EXPERIMENT).unwrap();
    let app = app(store.clone(), dir.path());

    // Starts spread over ~100 ms; `abort all` lands among them, so some starts run before the
    // halt, some while it is put in force and the runs are aborted, some after.
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..STARTS {
        let app = app.clone();
        starts.spawn(async move {
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            app.start(&person(&format!("U{i}")), "api-latency", &[])
                .await
                .map(|(id, _)| id)
        });
    }
    let aborter = {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2 * STARTS as u64 / 3)).await;
            app.abort_all(&Caller::Slack(person("UOP")), "race").await
        })
    };

    let mut created = Vec::new();
    let mut refused = 0;
    while let Some(joined) = starts.join_next().await {
        match joined.unwrap() {
            Ok(id) => created.push(id),
            Err(Refusal::Halted(h)) => {
                assert_eq!((h.halted_by.as_str(), h.reason.as_str()), ("UOP", "race"));
                refused += 1;
            }
            Err(other) => panic!("a start failed for another reason: {other:?}"),
        }
    }
    let outcome = aborter.await.unwrap().expect("abort all is recorded");
    eprintln!(
        "{} run(s) created, {refused} start(s) refused by the halt; abort all closed {} queued",
        created.len(),
        outcome.aborted.cancelled_queued.len()
    );
    assert_eq!(created.len() + refused, STARTS);

    // The halt is in force, and no run is left queued or running.
    let halt = store.current_halt().await.unwrap().expect("halt in force");
    assert_eq!(halt.reason, "race");
    let runs = store
        .list_runs(RunFilter {
            experiment: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), created.len(), "only started runs exist");
    for r in &runs {
        assert!(created.contains(&r.id), "run {} was not started here", r.id);
        assert_eq!(
            (r.state, r.verdict),
            (RunState::Done, Some(Verdict::Aborted)),
            "run {} was created before the halt and must be aborted by it",
            r.id
        );
    }
    let mut closed = outcome.aborted.cancelled_queued.clone();
    closed.sort();
    created.sort();
    assert_eq!(closed, created, "abort all closed exactly the runs created");

    // After the race, a start is refused with the halt until it is lifted.
    match app.start(&person("ULATE"), "api-latency", &[]).await {
        Err(Refusal::Halted(_)) => {}
        other => panic!("a start under the halt must be refused: {other:?}"),
    }
    app.resume(&Caller::Slack(person("UOP"))).await.unwrap();
    app.start(&person("ULATE"), "api-latency", &[])
        .await
        .expect("starts work again after resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_all_races_starts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    race(sqlite_store(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_all_races_starts_on_postgres() {
    with_postgres(|url| async move {
        race(chaosbot::store::open(&url).await.unwrap()).await;
    })
    .await;
}
