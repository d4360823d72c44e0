//! Wake-ups on Postgres: a run queued, or an abort asked, through another store handle (as
//! another replica writes them) reaches the engine at once through LISTEN/NOTIFY, not by
//! polling. The engine's polls are set to 10 s here, so only a wake-up can be this fast.
//! Needs `TEST_POSTGRES_URL` (skipped with a notice otherwise).

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::{RunState, Verdict};
use chaosbot::store::AbortScope;
use support::*;

const SLOW_POLL: Duration = Duration::from_secs(10);
/// Well under the polls and the 2 s sweep behind the wake-ups.
const AT_ONCE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_runs_and_aborts_from_another_replica_wake_the_engine() {
    with_postgres(|url| async move {
        let svc = service().await;
        let listen = free_port();
        let cfg = Arc::new(config(listen, svc.addr));
        let targets = TargetRegistry::new(cfg.clone());
        let mut opts = EngineOptions::new(cfg.guard_rails.clone());
        opts.abort_poll = SLOW_POLL;
        opts.idle_poll = SLOW_POLL;
        let worker = Engine::new(
            chaosbot::store::open(&url).await.unwrap(),
            targets.clone(),
            opts.clone(),
        );
        worker.start().await.unwrap();
        // Give the idle workers time to go to sleep on their (slow) poll.
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The other replica: its own store handle, never started (it executes nothing).
        let other = Engine::new(
            chaosbot::store::open(&url).await.unwrap(),
            TargetRegistry::new(cfg.clone()),
            opts,
        );
        let long = experiment(
            vec![http_probe("api-ok", svc.addr, 2000, 200)],
            vec![latency_step("slow", 50, 60_000)],
            vec![],
        );
        let submitted = Instant::now();
        let id = other.submit(&long, test_request()).await.unwrap();
        let claimed = loop {
            let run = other.store().get_run(&id).await.unwrap().unwrap();
            if run.state != RunState::Queued {
                break submitted.elapsed();
            }
            assert!(submitted.elapsed() < SLOW_POLL, "the run was never claimed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(claimed < AT_ONCE, "claimed after {claimed:?}");

        // Wait for the fault, then abort through the other replica.
        let started = Instant::now();
        while targets.proxy("api").await.unwrap().toxics().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never injected"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = Instant::now();
        other
            .abort(AbortScope::Run(id.clone()), "carol", "from another replica")
            .await
            .unwrap();
        while !targets.proxy("api").await.unwrap().toxics().is_empty() {
            assert!(
                asked.elapsed() < SLOW_POLL,
                "the abort never reached the run"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reverted = asked.elapsed();
        assert!(
            reverted < AT_ONCE,
            "fault gone {reverted:?} after the abort"
        );
        let run = tokio::time::timeout(Duration::from_secs(10), other.wait(&id))
            .await
            .expect("the aborted run finishes")
            .unwrap();
        assert_eq!(run.verdict, Some(Verdict::Aborted), "{:?}", run.reason);
        eprintln!("claimed {claimed:?} after submit; fault gone {reverted:?} after the abort");
        worker.shutdown("test over", Duration::from_secs(10)).await;
    })
    .await;
}
