//! The engine on Postgres, as several replicas sharing one database: each run is executed by
//! exactly one of them, and an abort asked of one replica halts a run another one executes.
//! Needs `TEST_POSTGRES_URL` (skipped with a notice otherwise); `.ci/run` sets it.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::Event;
use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::store::AbortScope;
use support::*;

fn req() -> SubmitRequest {
    SubmitRequest {
        requested_by: "tester".into(),
        source: "test".into(),
        seed: None,
    }
}

#[tokio::test]
async fn replicas_share_the_queue_and_honour_each_others_aborts() {
    with_postgres(|url| async move {
        let svc = service().await;
        let mut engines = Vec::new();
        let mut proxies = Vec::new();
        // Two replicas, each with its own proxy for the same declared target (as two hosts
        // would have); probes go to each replica's own listen address through its config.
        for _ in 0..2 {
            let listen = free_port();
            let cfg = Arc::new(config(listen, svc.addr));
            let store = chaosbot::store::open(&url).await.unwrap();
            let targets = TargetRegistry::new(cfg.clone());
            let mut opts = EngineOptions::new(cfg.guard_rails.clone());
            opts.guard_rails.max_concurrent_runs = 4;
            opts.abort_poll = Duration::from_millis(50);
            let engine = Engine::new(store, targets.clone(), opts);
            engine.start().await.unwrap();
            engines.push(engine);
            proxies.push((listen, targets));
        }
        // Each replica has its own proxy (its own listen address), so the probes check the
        // service itself: this test is about who executes a run, not what the fault does.
        let listen0 = svc.addr;
        let short = experiment(
            vec![http_probe("api-ok", listen0, 2000, 100)],
            vec![latency_step("slow", 10, 300)],
            vec![],
        );
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(engines[0].submit(&short, req()).await.unwrap());
        }
        for id in &ids {
            let run = tokio::time::timeout(Duration::from_secs(60), engines[1].wait(id))
                .await
                .expect("every run finishes")
                .unwrap();
            assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
            let j = engines[0].store().journal(id, 0).await.unwrap();
            let claims = j
                .iter()
                .filter(|e| {
                    matches!(
                        e.event,
                        Event::StateChanged {
                            from: RunState::Queued,
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(claims, 1, "run {id} claimed {claims} times");
            assert_eq!(j.iter().filter(|e| e.event.kind() == "verdict").count(), 1);
        }

        // A long run; whichever replica runs it, an abort through the *other* store handle
        // (as another replica's Slack handler would write it) halts and reverts it.
        let long = experiment(
            vec![http_probe("api-ok", listen0, 2000, 200)],
            vec![latency_step("slow", 100, 60_000)],
            vec![],
        );
        let id = engines[0].submit(&long, req()).await.unwrap();
        let mut injected = false;
        for _ in 0..200 {
            let j = engines[0].store().journal(&id, 0).await.unwrap();
            if j.iter().any(|e| e.event.kind() == "fault_injected") {
                injected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(injected);
        engines[1]
            .abort(
                AbortScope::Run(id.clone()),
                "carol",
                "from the other replica",
            )
            .await
            .unwrap();
        let run = tokio::time::timeout(Duration::from_secs(20), engines[0].wait(&id))
            .await
            .expect("the aborted run finishes")
            .unwrap();
        assert_eq!(run.verdict, Some(Verdict::Aborted));
        assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
        assert_eq!(
            run.reason.as_deref(),
            Some("aborted by carol: from the other replica")
        );
        for (_, targets) in &proxies {
            assert!(targets.proxy("api").await.unwrap().toxics().is_empty());
        }
        for e in engines {
            e.shutdown("test over", Duration::from_secs(10)).await;
        }
    })
    .await;
}
