//! The engine end to end: real proxy, real HTTP service, real SQLite store. Each test checks a
//! verdict and, above all, that every fault is gone afterwards and the journal says so.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::{
    ActiveFault, FaultError, FaultFamily, InjectContext, TargetRegistry, network::NetworkFaults,
};
use chaosbot::run::{Entry, Event, SamplePhase};
use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::spec::model::{Experiment, FaultStep, StopCondition, StopRule};
use chaosbot::store::{AbortScope, DynStore, FaultRecord};
use support::*;

struct Rig {
    engine: Arc<Engine>,
    store: DynStore,
    targets: TargetRegistry,
    service: Service,
    listen: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn rig_with(family: Option<Arc<dyn FaultFamily>>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let service = service().await;
    let listen = free_port();
    let cfg = Arc::new(config(listen, service.addr));
    let store = sqlite_store(dir.path()).await;
    let targets = TargetRegistry::new(cfg.clone());
    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.lease = Duration::from_secs(3);
    opts.abort_poll = Duration::from_millis(50);
    let engine = match family {
        Some(f) => Engine::with_family(store.clone(), targets.clone(), opts, f),
        None => Engine::new(store.clone(), targets.clone(), opts),
    };
    engine.start().await.unwrap();
    Rig {
        engine,
        store,
        targets,
        service,
        listen,
        _dir: dir,
    }
}

async fn rig() -> Rig {
    rig_with(None).await
}

fn req() -> SubmitRequest {
    SubmitRequest {
        requested_by: "tester".into(),
        source: "test".into(),
        seed: Some(7),
    }
}

async fn journal(rig: &Rig, id: &str) -> Vec<Entry> {
    rig.store.journal(id, 0).await.unwrap()
}

fn kinds(j: &[Entry]) -> Vec<&'static str> {
    j.iter().map(|e| e.event.kind()).collect()
}

/// The states the journal went through, in order, each step allowed by the lifecycle.
fn states(j: &[Entry]) -> Vec<RunState> {
    let mut out = vec![RunState::Queued];
    for e in j {
        if let Event::StateChanged { from, to } = &e.event {
            assert_eq!(*from, *out.last().unwrap(), "journal skips a state");
            assert!(from.can_go_to(*to), "{from} -> {to} is not allowed");
            out.push(*to);
        }
        // The verdict entry is the move to `done`.
        if let Event::Verdict { .. } = &e.event {
            assert!(out.last().unwrap().can_go_to(RunState::Done));
            out.push(RunState::Done);
        }
    }
    out
}

async fn no_toxics_left(rig: &Rig) {
    let proxy = rig.targets.proxy("api").await.unwrap();
    assert!(
        proxy.toxics().is_empty(),
        "toxics left: {:?}",
        proxy.toxics()
    );
}

async fn wait_until<F: Fn() -> bool>(limit: Duration, f: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

#[tokio::test]
async fn a_tolerated_fault_holds_and_is_reverted_and_verified() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 1000, 100)],
        vec![latency_step("slow", 30, 600)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    let j = journal(&rig, &id).await;
    assert_eq!(
        states(&j),
        vec![
            RunState::Queued,
            RunState::CheckingSteadyState,
            RunState::Injecting,
            RunState::Observing,
            RunState::Reverting,
            RunState::Verifying,
            RunState::Done
        ]
    );
    let k = kinds(&j);
    let injected = k.iter().position(|k| *k == "fault_injected").unwrap();
    let reverted = k.iter().position(|k| *k == "fault_reverted").unwrap();
    assert!(injected < reverted);
    assert_eq!(*k.last().unwrap(), "verdict");
    // Samples taken while the fault was in place saw the 30 ms; samples before it did not.
    let at = |kind: &str| j.iter().find(|e| e.event.kind() == kind).unwrap().at_ms;
    let (from, to) = (at("fault_injected"), at("fault_reverted"));
    let samples: Vec<(i64, SamplePhase, f64)> = j
        .iter()
        .filter_map(|e| match &e.event {
            Event::ProbeSample {
                phase, latency_ms, ..
            } => Some((e.at_ms, *phase, *latency_ms)),
            _ => None,
        })
        .collect();
    // A sample is journaled when it completes; keep those that started after the injection
    // entry and ended well before the revert entry (the revert is journaled after it happens).
    let inside: Vec<f64> = samples
        .iter()
        .filter(|(t, _, l)| *t - (*l as i64) > from + 1 && *t < to - 20)
        .map(|(_, _, l)| *l)
        .collect();
    assert!(inside.len() >= 3, "{samples:?}");
    assert!(inside.iter().all(|l| *l >= 29.0), "{samples:?}");
    let before: Vec<f64> = samples
        .iter()
        .filter(|(_, p, _)| *p == SamplePhase::Before)
        .map(|(_, _, l)| *l)
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|l| *l < 29.0),
        "{samples:?}"
    );
    assert!(rig.store.open_faults(&id).await.unwrap().is_empty());
    no_toxics_left(&rig).await;
}

#[tokio::test]
async fn latency_beyond_the_hypothesis_deviates_and_is_reverted() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-fast", rig.listen, 100, 100)],
        vec![latency_step("slow", 250, 800)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Deviated), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    let j = journal(&rig, &id).await;
    assert!(kinds(&j).contains(&"tolerance_exceeded"));
    // After the revert the probes are fast again: the last "after" sample passed.
    let last_after = j
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Event::ProbeSample {
                phase: SamplePhase::After,
                ok,
                latency_ms,
                ..
            } => Some((*ok, *latency_ms)),
            _ => None,
        })
        .unwrap();
    assert!(last_after.0 && last_after.1 < 100.0, "{last_after:?}");
    no_toxics_left(&rig).await;
}

#[tokio::test]
async fn no_fault_is_injected_when_the_steady_state_does_not_hold() {
    let rig = rig().await;
    rig.service.set(ERRORS);
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 1000, 100)],
        vec![latency_step("slow", 100, 500)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Failed));
    assert_eq!(run.rollback, Some(RollbackOutcome::NothingToRevert));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("steady state did not hold"),
        "{:?}",
        run.reason
    );
    let j = journal(&rig, &id).await;
    assert!(!kinds(&j).contains(&"fault_injected"));
    assert!(!states(&j).contains(&RunState::Injecting));
}

#[tokio::test]
async fn an_unreachable_upstream_fails_before_injection() {
    let dir = tempfile::tempdir().unwrap();
    let dead_upstream = free_port(); // nothing listens there
    let listen = free_port();
    let cfg = Arc::new(config(listen, dead_upstream));
    let store = sqlite_store(dir.path()).await;
    let targets = TargetRegistry::new(cfg.clone());
    let engine = Engine::new(
        store.clone(),
        targets,
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    engine.start().await.unwrap();
    let exp = experiment(
        vec![http_probe("api-ok", listen, 1000, 100)],
        vec![latency_step("slow", 100, 500)],
        vec![],
    );
    let id = engine.submit(&exp, req()).await.unwrap();
    let run = engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Failed));
    let reason = run.reason.unwrap();
    assert!(
        reason.contains("unreachable") && reason.contains("nothing was injected"),
        "{reason}"
    );
}

#[tokio::test]
async fn abort_reverts_at_once_and_is_journaled() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 500, 30_000)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let proxy = rig.targets.proxy("api").await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || !proxy.toxics().is_empty()).await);
    let asked = Instant::now();
    let out = rig
        .engine
        .abort(AbortScope::Run(id.clone()), "alice", "enough")
        .await
        .unwrap();
    assert_eq!(out.signalled_running, vec![id.clone()]);
    assert!(
        wait_until(Duration::from_secs(2), || proxy.toxics().is_empty()).await,
        "fault still in place {:?} after abort",
        asked.elapsed()
    );
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert_eq!(run.reason.as_deref(), Some("aborted by alice: enough"));
    let k = kinds(&journal(&rig, &id).await);
    assert!(k.contains(&"abort_requested") && k.contains(&"fault_reverted"));
}

#[tokio::test]
async fn an_abort_request_written_by_another_process_is_seen_through_the_store() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 300, 30_000)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let proxy = rig.targets.proxy("api").await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || !proxy.toxics().is_empty()).await);
    // Straight into the store, as `chaosbot abort` from another process does.
    rig.store
        .request_abort(AbortScope::Run(id.clone()), "bob", "from elsewhere")
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(3), || proxy.toxics().is_empty()).await);
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(
        run.reason.as_deref(),
        Some("aborted by bob: from elsewhere")
    );
}

#[tokio::test]
async fn a_stop_condition_halts_and_reverts() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-fast", rig.listen, 100, 50)],
        vec![latency_step("slow", 300, 30_000)],
        vec![StopCondition {
            probe: "api-fast".into(),
            rule: StopRule::ConsecutiveFailures(3),
        }],
    );
    let started = Instant::now();
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "did not halt early"
    );
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .starts_with("stop condition met"),
        "{:?}",
        run.reason
    );
    assert!(kinds(&journal(&rig, &id).await).contains(&"stop_condition_met"));
    no_toxics_left(&rig).await;
}

/// Injects the real toxic, then panics (or fails), to prove the revert does not depend on the
/// step finishing.
struct Misbehaving {
    panic: bool,
}

#[async_trait::async_trait]
impl FaultFamily for Misbehaving {
    fn name(&self) -> &'static str {
        "network"
    }
    async fn prepare(
        &self,
        step: &FaultStep,
        ctx: &InjectContext<'_>,
    ) -> Result<serde_json::Value, FaultError> {
        NetworkFaults.prepare(step, ctx).await
    }
    async fn inject(
        &self,
        step: &FaultStep,
        ctx: &InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn ActiveFault>, FaultError> {
        let fault = NetworkFaults.inject(step, ctx, prepared).await?;
        if step.name == "second" {
            // Let "first" (running in parallel) get its fault in place before misbehaving.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if self.panic {
                panic!("boom inside a step");
            }
            return Err(FaultError::Other("the fault backend refused".into()));
        }
        Ok(fault)
    }
    async fn recover(&self, record: &FaultRecord) -> Result<String, FaultError> {
        NetworkFaults.recover(record).await
    }
}

async fn misbehaving_run(panic: bool) -> (Rig, chaosbot::store::RunRecord) {
    let rig = rig_with(Some(Arc::new(Misbehaving { panic }))).await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 100)],
        vec![chaosbot::spec::model::Step::Parallel(vec![
            latency_step("first", 200, 20_000),
            fault_step(
                "second",
                chaosbot::faults::network::ToxicKind::Bandwidth { rate_kbps: 1 },
                20_000,
            ),
        ])],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let run = rig.engine.wait(&id).await.unwrap();
    (rig, run)
}

#[tokio::test]
async fn a_panic_inside_a_step_still_reverts_everything() {
    let (rig, run) = misbehaving_run(true).await;
    assert_eq!(run.verdict, Some(Verdict::Failed));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("boom inside a step"),
        "{:?}",
        run.reason
    );
    let k = kinds(&journal(&rig, &run.id).await);
    assert!(k.contains(&"step_failed"), "{k:?}");
    // "first" was registered and is reverted; "second"'s toxic, added before the panic,
    // ends by its own deadline at the latest; both are gone from the proxy once verified.
    assert!(k.contains(&"fault_reverted"));
    let proxy = rig.targets.proxy("api").await.unwrap();
    let first_gone = proxy.toxics().iter().all(|t| t.label != "first");
    assert!(first_gone, "{:?}", proxy.toxics());
    // Whatever is left carries its own deadline: step duration plus the grace, no more.
    let limit = Instant::now() + Duration::from_secs(20 + 3);
    assert!(
        proxy.toxics().iter().all(|t| t.deadline <= limit),
        "{:?}",
        proxy.toxics()
    );
}

#[tokio::test]
async fn a_step_error_fails_the_run_and_reverts() {
    let (rig, run) = misbehaving_run(false).await;
    assert_eq!(run.verdict, Some(Verdict::Failed));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("the fault backend refused")
    );
    let proxy = rig.targets.proxy("api").await.unwrap();
    assert!(proxy.toxics().iter().all(|t| t.label != "first"));
}

#[tokio::test]
async fn queued_runs_are_aborted_without_starting_and_abort_all_halts_everything() {
    let rig = rig().await;
    let long = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 50, 30_000)],
        vec![],
    );
    // All three touch `api`, which one run holds at a time: the others wait in the queue.
    let a = rig.engine.submit(&long, req()).await.unwrap();
    let b = rig.engine.submit(&long, req()).await.unwrap();
    let c = rig.engine.submit(&long, req()).await.unwrap();
    let store = rig.store.clone();
    let mut started = false;
    for _ in 0..200 {
        let j = store.journal(&a, 0).await.unwrap();
        started = j.iter().any(|e| e.event.kind() == "fault_injected");
        if started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [&b, &c] {
        assert_eq!(
            store.get_run(id).await.unwrap().unwrap().state,
            RunState::Queued
        );
    }
    let place = store.queue_place(&c).await.unwrap();
    assert_eq!(place.holders.len(), 1);
    assert_eq!(place.holders[0].run_id, a);
    assert_eq!(place.ahead, 1, "b is ahead of c");

    let out = rig
        .engine
        .abort(AbortScope::All, "oncall", "incident")
        .await
        .unwrap();
    let mut queued = out.cancelled_queued.clone();
    queued.sort();
    let mut expected = vec![b.clone(), c.clone()];
    expected.sort();
    assert_eq!(queued, expected);
    assert_eq!(out.signalled_running, vec![a.clone()]);

    for id in [&b, &c] {
        let r = rig.engine.wait(id).await.unwrap();
        assert_eq!(r.verdict, Some(Verdict::Aborted));
        assert_eq!(r.rollback, Some(RollbackOutcome::NothingToRevert));
        assert!(!kinds(&journal(&rig, id).await).contains(&"state_changed"));
    }
    let r = rig.engine.wait(&a).await.unwrap();
    assert_eq!(r.verdict, Some(Verdict::Aborted));
    assert_eq!(r.rollback, Some(RollbackOutcome::Reverted));
    no_toxics_left(&rig).await;
}

/// One run per target: a second run on a target that a running run holds waits in the queue
/// and starts once the holder is done, so its steady state never sees the other's fault.
#[tokio::test]
async fn runs_on_one_target_take_turns() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 50, 800)],
        vec![],
    );
    let a = rig.engine.submit(&exp, req()).await.unwrap();
    let b = rig.engine.submit(&exp, req()).await.unwrap();
    let ra = rig.engine.wait(&a).await.unwrap();
    let rb = rig.engine.wait(&b).await.unwrap();
    assert_eq!(ra.verdict, Some(Verdict::Held), "{:?}", ra.reason);
    assert_eq!(rb.verdict, Some(Verdict::Held), "{:?}", rb.reason);
    let (a_done, b_started) = (ra.finished_ms.unwrap(), rb.started_ms.unwrap());
    assert!(
        b_started >= a_done,
        "b started at {b_started}, before a finished at {a_done}"
    );
}

#[tokio::test]
async fn graceful_shutdown_reverts_and_journals_before_returning() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 100, 30_000)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let proxy = rig.targets.proxy("api").await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || !proxy.toxics().is_empty()).await);
    rig.engine
        .shutdown("chaosbot received SIGTERM", Duration::from_secs(20))
        .await;
    let run = rig.store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(run.reason.as_deref(), Some("chaosbot received SIGTERM"));
    assert!(proxy.toxics().is_empty());
    assert!(rig.store.open_faults(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn runs_beyond_the_guard_rail_are_refused_at_submission() {
    let rig = rig().await;
    let mut exp: Experiment = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 100, 500_000)],
        vec![],
    );
    exp.name = "too-long".into();
    let err = rig
        .engine
        .submit(&exp, req())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guard rail") && err.contains("max_run_duration"),
        "{err}"
    );
}

#[tokio::test]
async fn the_seed_is_recorded_and_a_fresh_one_is_drawn_when_not_given() {
    let rig = rig().await;
    let exp = experiment(
        vec![http_probe("api-ok", rig.listen, 2000, 200)],
        vec![latency_step("slow", 10, 300)],
        vec![],
    );
    let id = rig.engine.submit(&exp, req()).await.unwrap();
    let r = rig.engine.wait(&id).await.unwrap();
    assert_eq!(r.seed, 7);
    let j = journal(&rig, &id).await;
    assert!(matches!(j[0].event, Event::Submitted { seed: 7, .. }));
    let mut other = req();
    other.seed = None;
    let id2 = rig.engine.submit(&exp, other).await.unwrap();
    let r2 = rig.engine.wait(&id2).await.unwrap();
    assert_ne!(r2.seed, 7);
}

#[tokio::test]
async fn a_foreground_engine_executes_only_its_own_runs() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let listen = free_port();
    let cfg = Arc::new(config(listen, svc.addr));
    let store = sqlite_store(dir.path()).await;
    let exp = experiment(
        vec![http_probe("api-ok", listen, 2000, 100)],
        vec![latency_step("slow", 10, 200)],
        vec![],
    );
    // Another process's engine queued a run and is not running workers (e.g. it is busy).
    let other = Engine::new(
        store.clone(),
        TargetRegistry::new(cfg.clone()),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    let theirs = other.submit(&exp, req()).await.unwrap();

    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.only_own_runs = true;
    let mine_engine = Engine::new(store.clone(), TargetRegistry::new(cfg.clone()), opts);
    mine_engine.start().await.unwrap();
    let mine = mine_engine.submit(&exp, req()).await.unwrap();
    let run = mine_engine.wait(&mine).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    let left = store.get_run(&theirs).await.unwrap().unwrap();
    assert_eq!(left.state, RunState::Queued, "someone else's run was taken");
}

/// A run queued behind a holder for longer than `guard_rails.max_queue_wait` ends `failed`,
/// saying what it waited for; the holder goes on.
#[tokio::test]
async fn a_run_queued_past_max_queue_wait_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let service = service().await;
    let listen = free_port();
    let mut cfg = config(listen, service.addr);
    cfg.guard_rails.max_queue_wait = Duration::from_secs(1);
    let cfg = Arc::new(cfg);
    let store = sqlite_store(dir.path()).await;
    let targets = TargetRegistry::new(cfg.clone());
    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.lease = Duration::from_secs(1);
    let engine = Engine::new(store.clone(), targets.clone(), opts);
    engine.start().await.unwrap();
    let long = experiment(
        vec![http_probe("api-ok", listen, 2000, 200)],
        vec![latency_step("slow", 20, 30_000)],
        vec![],
    );
    let a = engine.submit(&long, req()).await.unwrap();
    let b = engine.submit(&long, req()).await.unwrap();
    let rb = tokio::time::timeout(Duration::from_secs(20), engine.wait(&b))
        .await
        .expect("the queued run is closed within the sweep")
        .unwrap();
    assert_eq!(rb.verdict, Some(Verdict::Failed));
    assert_eq!(rb.rollback, Some(RollbackOutcome::NothingToRevert));
    let reason = rb.reason.unwrap_or_default();
    assert!(
        reason.contains("queued for more than 1s")
            && reason.contains(&format!("{a} (holds api)"))
            && reason.contains("max_queue_wait"),
        "{reason}"
    );
    let ra = store.get_run(&a).await.unwrap().unwrap();
    assert!(ra.state.is_active(), "the holder goes on: {:?}", ra.state);
    engine
        .abort(AbortScope::Run(a.clone()), "tester", "done")
        .await
        .unwrap();
    engine.wait(&a).await.unwrap();
}
