//! One behaviour suite for the `Store` contract, run against both backends.
//!
//! Each behaviour is written once as `async fn name(ctx: Ctx)`; `behaviour_tests!` turns it into
//! `sqlite::name` (a fresh file in a temp dir) and `postgres::name` (a fresh database created
//! through `TEST_POSTGRES_URL` and dropped afterwards; skipped with a notice when it is unset).
//!
//! ```text
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test store_behaviour
//! ```

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use chaosbot::report::period::{self, Direction, Window};
use chaosbot::run::{Entry, Event, SamplePhase, now_ms};
use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::store::learning::{Answer, LearningKind, NewQuestion};
use chaosbot::store::outbox::{Delivered, OutboundAction, OutboundMessage, PostSlot};
use chaosbot::store::{self, AbortScope, DynStore, Fence, NewFault, NewRun, RunFilter, StoreError};
use sqlx::Connection;

const LEASE: Duration = Duration::from_secs(60);

struct Ctx {
    store: DynStore,
    /// The URL the store was opened with, to open it again.
    url: String,
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("chaosbot.db").display());
    let store = store::open(&url).await.expect("open sqlite store");
    test(Ctx { store, url }).await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    support::with_postgres(|url| async move {
        let store = store::open(&url).await.expect("open postgres store");
        test(Ctx { store, url }).await;
    })
    .await;
}

macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )*
        }
    };
}

behaviour_tests!(
    create_get_and_list,
    claim_takes_the_oldest_queued_run,
    claim_run_takes_only_the_named_run,
    claim_is_exactly_once_under_concurrent_claimers,
    claim_respects_max_active,
    claim_respects_max_active_under_concurrent_claimers,
    transitions_allowed_refused_and_lease_lost,
    renew_lease_only_for_the_owner,
    finish_closes_the_run_from_any_state,
    journal_is_dense_under_concurrent_appends,
    abort_of_a_queued_run_closes_it_at_once,
    abort_of_a_running_run_leaves_a_pending_request,
    abort_all_cancels_queued_and_signals_running,
    abort_of_unknown_or_done_runs,
    faults_open_until_reverted,
    orphaned_by_lease_expiry,
    orphaned_by_dead_owner_and_active_owners,
    migrations_are_idempotent_on_reopen,
    qa_questions_votes_and_answers,
    qa_votes_converge_when_add_and_removal_race,
    qa_thread_lookup_and_session,
    learnings_in_order,
    runs_between_is_a_half_open_window,
    digest_is_recorded_once_with_its_messages,
    period_summary_of_seeded_runs,
    a_held_target_waits_for_its_holder,
    a_queued_run_fails_only_while_still_queued,
    a_stale_owner_cannot_write_after_adoption,
    adoption_is_won_by_exactly_one_recoverer,
    the_render_cursor_is_compare_and_swap,
    pacing_and_revisions_are_shared_through_the_store,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn new_run(id: &str, experiment: &str) -> (NewRun, Event) {
    let params = BTreeMap::from([("latency_ms".to_string(), "250".to_string())]);
    // u64::MAX exercises the i64 bit-cast of the seed column.
    let seed = u64::MAX - 7;
    let run = NewRun {
        id: id.to_string(),
        experiment: experiment.to_string(),
        title: format!("{experiment} title"),
        spec: serde_json::json!({ "name": experiment, "steps": [{ "fault": "latency" }] }),
        params: params.clone(),
        seed,
        requested_by: "alice".to_string(),
        source: chaosbot::run::RunSource::Terminal,
    };
    let submitted = Event::Submitted {
        experiment: experiment.to_string(),
        title: run.title.clone(),
        requested_by: "alice".to_string(),
        source: chaosbot::run::RunSource::Terminal,
        params,
        seed,
        // Its own target: these runs are independent (a shared target is held by one active
        // run at a time; `a_held_target_waits_for_its_holder` tests that).
        targets: vec![format!("checkout-{id}")],
    };
    (run, submitted)
}

/// Like [`new_run`], touching `targets`.
fn new_run_on(id: &str, targets: &[&str]) -> (NewRun, Event) {
    let (run, mut submitted) = new_run(id, "checkout-latency");
    if let Event::Submitted { targets: t, .. } = &mut submitted {
        *t = targets.iter().map(|s| s.to_string()).collect();
    }
    (run, submitted)
}

async fn create(store: &DynStore, id: &str) {
    let (run, submitted) = new_run(id, "checkout-latency");
    store.create_run(run, submitted).await.expect("create run");
}

async fn claim(store: &DynStore, owner: &str) -> String {
    store
        .claim_next(owner, LEASE, 100)
        .await
        .expect("claim")
        .expect("a queued run to claim")
        .id
}

async fn kinds(store: &DynStore, id: &str) -> Vec<&'static str> {
    store
        .journal(id, 0)
        .await
        .expect("journal")
        .iter()
        .map(|e| e.event.kind())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Behaviours

async fn create_get_and_list(ctx: Ctx) {
    let s = &ctx.store;
    let (run, submitted) = new_run("r1", "checkout-latency");
    let created = s.create_run(run, submitted.clone()).await.expect("create");
    assert_eq!(created.state, RunState::Queued);
    assert_eq!(created.seed, u64::MAX - 7);
    assert!(created.owner.is_none() && created.started_ms.is_none());

    let got = s.get_run("r1").await.expect("get").expect("run exists");
    assert_eq!(got, created);
    assert!(s.get_run("nope").await.expect("get").is_none());

    let journal = s.journal("r1", 0).await.expect("journal");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].seq, 1);
    assert_eq!(journal[0].event, submitted);

    // Same id again is refused, and leaves the first run intact.
    let (again, ev) = new_run("r1", "other");
    assert!(s.create_run(again, ev).await.is_err());

    create(s, "r2").await;
    let (run3, ev3) = new_run("r3", "cpu-hog");
    s.create_run(run3, ev3).await.expect("create r3");

    let ids = |runs: Vec<chaosbot::store::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };
    let all = s.list_runs(RunFilter::default()).await.expect("list");
    assert_eq!(ids(all), ["r3", "r2", "r1"], "newest first");
    let filtered = s
        .list_runs(RunFilter {
            experiment: Some("checkout-latency".into()),
            limit: 0,
        })
        .await
        .expect("list filtered");
    assert_eq!(ids(filtered), ["r2", "r1"]);
    let limited = s
        .list_runs(RunFilter {
            experiment: None,
            limit: 2,
        })
        .await
        .expect("list limited");
    assert_eq!(ids(limited), ["r3", "r2"]);
    s.ping().await.expect("ping");
}

async fn claim_run_takes_only_the_named_run(ctx: Ctx) {
    let s = &ctx.store;
    for id in ["a", "b", "c"] {
        create(s, id).await;
    }
    let run = s
        .claim_run("b", "w1", LEASE, 4)
        .await
        .expect("claim")
        .expect("b is queued");
    assert_eq!(run.id, "b");
    assert_eq!(run.owner.as_deref(), Some("w1"));
    // The claim raised the ownership epoch agents fence by: queued runs hold none.
    assert_eq!(run.epoch, 1);
    let stored = s.get_run("b").await.expect("get").expect("b");
    assert_eq!(stored.epoch, 1);
    assert_eq!(s.get_run("c").await.expect("get").expect("c").epoch, 0);
    // Not queued any more, unknown, or over the limit: nothing is claimed.
    assert!(
        s.claim_run("b", "w2", LEASE, 4)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        s.claim_run("zz", "w2", LEASE, 4)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        s.claim_run("c", "w2", LEASE, 1)
            .await
            .expect("claim")
            .is_none()
    );
    // The older run "a" was left alone.
    let a = s.get_run("a").await.expect("get").expect("a");
    assert_eq!(a.state, RunState::Queued);
    assert_eq!(claim(s, "w3").await, "a");
}

async fn claim_takes_the_oldest_queued_run(ctx: Ctx) {
    let s = &ctx.store;
    assert!(s.claim_next("w1", LEASE, 4).await.expect("claim").is_none());
    for id in ["a", "b", "c"] {
        create(s, id).await;
    }
    let before = now_ms();
    let run = s
        .claim_next("w1", LEASE, 4)
        .await
        .expect("claim")
        .expect("a run");
    assert_eq!(run.id, "a");
    assert_eq!(run.state, RunState::CheckingSteadyState);
    assert_eq!(run.owner.as_deref(), Some("w1"));
    let lease_until = run.lease_until_ms.expect("lease set");
    assert!(lease_until >= before + 59_000, "lease about a minute ahead");
    assert!(run.started_ms.expect("started") >= before);
    assert_eq!(s.get_run("a").await.expect("get"), Some(run));

    let journal = s.journal("a", 1).await.expect("journal");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].seq, 2);
    assert_eq!(
        journal[0].event,
        Event::StateChanged {
            from: RunState::Queued,
            to: RunState::CheckingSteadyState
        }
    );
    assert_eq!(claim(s, "w2").await, "b");
}

async fn claim_is_exactly_once_under_concurrent_claimers(ctx: Ctx) {
    for i in 0..20 {
        create(&ctx.store, &format!("run-{i:02}")).await;
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = ctx.store.clone();
        workers.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            let mut claimed = Vec::new();
            while let Some(run) = store.claim_next(&owner, LEASE, 100).await.expect("claim") {
                assert_eq!(run.owner.as_deref(), Some(owner.as_str()));
                claimed.push(run.id);
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker task"));
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 20, "every run claimed once: {all:?}");
    assert_eq!(unique.len(), 20);
    for id in &all {
        // One submitted and exactly one state change per run.
        assert_eq!(kinds(&ctx.store, id).await, ["submitted", "state_changed"]);
    }
}

async fn claim_respects_max_active(ctx: Ctx) {
    let s = &ctx.store;
    for id in ["a", "b", "c"] {
        create(s, id).await;
    }
    assert!(s.claim_next("w", LEASE, 0).await.expect("claim").is_none());
    let first = s.claim_next("w", LEASE, 2).await.expect("claim");
    let second = s.claim_next("w", LEASE, 2).await.expect("claim");
    assert!(first.is_some() && second.is_some());
    assert!(
        s.claim_next("w", LEASE, 2).await.expect("claim").is_none(),
        "two active runs fill max_active = 2"
    );
    s.finish_run("a", Verdict::Held, RollbackOutcome::Reverted, "ok")
        .await
        .expect("finish");
    let third = s.claim_next("w", LEASE, 2).await.expect("claim");
    assert_eq!(third.map(|r| r.id).as_deref(), Some("c"));
}

async fn claim_respects_max_active_under_concurrent_claimers(ctx: Ctx) {
    for i in 0..10 {
        create(&ctx.store, &format!("run-{i}")).await;
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = ctx.store.clone();
        workers.push(tokio::spawn(async move {
            store
                .claim_next(&format!("worker-{w}"), LEASE, 3)
                .await
                .expect("claim")
                .is_some()
        }));
    }
    let mut claimed = 0;
    for w in workers {
        claimed += usize::from(w.await.expect("worker task"));
    }
    assert_eq!(claimed, 3);
    assert_eq!(ctx.store.active_owners().await.expect("owners").len(), 3);
}

async fn transitions_allowed_refused_and_lease_lost(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    create(s, "queued").await;
    assert_eq!(claim(s, "w1").await, "r");

    let entry = s
        .transition("r", "w1", RunState::Injecting)
        .await
        .expect("allowed transition");
    assert_eq!(entry.run_id, "r");
    assert_eq!(entry.seq, 3);
    assert_eq!(
        entry.event,
        Event::StateChanged {
            from: RunState::CheckingSteadyState,
            to: RunState::Injecting
        }
    );
    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::Injecting);

    let err = s
        .transition("r", "w2", RunState::Observing)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost(ref id) if id == "r"),
        "{err}"
    );

    let err = s
        .transition("r", "w1", RunState::Verifying)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadTransition {
                from: RunState::Injecting,
                to: RunState::Verifying,
                ..
            }
        ),
        "{err}"
    );
    // Refusals change nothing.
    assert_eq!(s.journal("r", 0).await.expect("journal").len(), 3);
    assert_eq!(
        s.get_run("r").await.expect("get").expect("run").state,
        RunState::Injecting
    );

    let err = s
        .transition("nope", "w1", RunState::Injecting)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
    // Nobody owns a queued run.
    let err = s
        .transition("queued", "w1", RunState::CheckingSteadyState)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");

    for to in [
        RunState::Observing,
        RunState::Reverting,
        RunState::Verifying,
        RunState::Done,
    ] {
        s.transition("r", "w1", to).await.expect("lifecycle step");
    }
    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::Done);
    assert!(run.owner.is_none() && run.lease_until_ms.is_none());
    assert!(run.finished_ms.is_some());
}

async fn renew_lease_only_for_the_owner(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    let run = s
        .claim_next("w1", Duration::from_secs(1), 4)
        .await
        .expect("claim")
        .expect("run");
    let first = run.lease_until_ms.expect("lease");
    s.renew_lease("r", "w1", Duration::from_secs(600))
        .await
        .expect("renew");
    let renewed = s
        .get_run("r")
        .await
        .expect("get")
        .expect("run")
        .lease_until_ms
        .expect("lease");
    assert!(renewed >= first + 590_000, "{renewed} vs {first}");

    let err = s.renew_lease("r", "w2", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    let err = s.renew_lease("nope", "w1", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
    s.finish_run("r", Verdict::Held, RollbackOutcome::Reverted, "done")
        .await
        .expect("finish");
    let err = s.renew_lease("r", "w1", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
}

async fn finish_closes_the_run_from_any_state(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "running").await;
    create(s, "queued").await;
    claim(s, "w1").await;
    s.transition("running", "w1", RunState::Injecting)
        .await
        .expect("inject");

    let before = now_ms();
    let entry = s
        .finish_run(
            "running",
            Verdict::Deviated,
            RollbackOutcome::RevertFailed,
            "p99 over 800 ms",
        )
        .await
        .expect("finish running");
    assert_eq!(entry.seq, 4);
    assert_eq!(
        entry.event,
        Event::Verdict {
            verdict: Verdict::Deviated,
            rollback: RollbackOutcome::RevertFailed,
            reason: "p99 over 800 ms".into()
        }
    );
    let run = s.get_run("running").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Deviated));
    assert_eq!(run.rollback, Some(RollbackOutcome::RevertFailed));
    assert_eq!(run.reason.as_deref(), Some("p99 over 800 ms"));
    assert!(run.finished_ms.expect("finished") >= before);
    assert!(run.owner.is_none() && run.lease_until_ms.is_none());
    // The old owner can no longer move it.
    let err = s
        .transition("running", "w1", RunState::Reverting)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");

    s.finish_run(
        "queued",
        Verdict::Failed,
        RollbackOutcome::NothingToRevert,
        "target gone",
    )
    .await
    .expect("finish queued");
    let run = s.get_run("queued").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Failed));
    assert!(run.started_ms.is_none());
    assert_eq!(kinds(s, "queued").await, ["submitted", "verdict"]);

    let err = s
        .finish_run("nope", Verdict::Held, RollbackOutcome::Reverted, "x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
}

async fn journal_is_dense_under_concurrent_appends(ctx: Ctx) {
    create(&ctx.store, "r").await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let event = Event::ProbeSample {
                    probe: format!("p{t}"),
                    phase: chaosbot::run::SamplePhase::During,
                    ok: true,
                    latency_ms: f64::from(i),
                    detail: "200".into(),
                };
                store.append("r", &event).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("appender task");
    }
    let journal = ctx.store.journal("r", 0).await.expect("journal");
    let seqs: Vec<i64> = journal.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=201).collect::<Vec<_>>(), "dense from 1");
    let tail = ctx.store.journal("r", 195).await.expect("tail");
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [196, 197, 198, 199, 200, 201]
    );
    let err = ctx
        .store
        .append("nope", &journal[1].event)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
}

async fn abort_of_a_queued_run_closes_it_at_once(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    let outcome = s
        .request_abort(AbortScope::Run("r".into()), "bob", "wrong target")
        .await
        .expect("abort");
    assert_eq!(outcome.cancelled_queued, ["r"]);
    assert!(outcome.signalled_running.is_empty());

    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert_eq!(run.rollback, Some(RollbackOutcome::NothingToRevert));
    let reason = run.reason.expect("reason");
    assert!(
        reason.contains("bob") && reason.contains("wrong target"),
        "{reason}"
    );
    assert_eq!(
        kinds(s, "r").await,
        ["submitted", "abort_requested", "verdict"]
    );
    assert!(s.pending_abort("r").await.expect("pending").is_none());
    assert!(s.claim_next("w", LEASE, 4).await.expect("claim").is_none());
}

async fn abort_of_a_running_run_leaves_a_pending_request(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    claim(s, "w1").await;
    assert!(s.pending_abort("r").await.expect("pending").is_none());

    let before = now_ms();
    let outcome = s
        .request_abort(AbortScope::Run("r".into()), "bob", "pager went off")
        .await
        .expect("abort");
    assert!(outcome.cancelled_queued.is_empty());
    assert_eq!(outcome.signalled_running, ["r"]);

    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.state, RunState::CheckingSteadyState, "the worker acts");
    assert_eq!(run.owner.as_deref(), Some("w1"));
    let req = s
        .pending_abort("r")
        .await
        .expect("pending")
        .expect("a request");
    assert_eq!(req.run_id, "r");
    assert_eq!(req.requested_by, "bob");
    assert_eq!(req.reason, "pager went off");
    assert!(req.at_ms >= before);
    let last = s.journal("r", 2).await.expect("journal");
    assert_eq!(
        last.iter().map(|e| &e.event).collect::<Vec<_>>(),
        [&Event::AbortRequested {
            by: "bob".into(),
            reason: "pager went off".into()
        }]
    );

    // A second request is journaled, but the first one stays the pending one.
    s.request_abort(AbortScope::Run("r".into()), "carol", "again")
        .await
        .expect("abort again");
    let req = s
        .pending_abort("r")
        .await
        .expect("pending")
        .expect("a request");
    assert_eq!(req.requested_by, "bob");
}

async fn abort_all_cancels_queued_and_signals_running(ctx: Ctx) {
    let s = &ctx.store;
    for id in ["running", "done", "q1", "q2"] {
        create(s, id).await;
    }
    assert_eq!(claim(s, "w1").await, "running");
    s.finish_run("done", Verdict::Held, RollbackOutcome::Reverted, "ok")
        .await
        .expect("finish");

    let outcome = s
        .request_abort(AbortScope::All, "ops", "incident in progress")
        .await
        .expect("abort all");
    assert_eq!(outcome.cancelled_queued, ["q1", "q2"]);
    assert_eq!(outcome.signalled_running, ["running"]);

    let done = s.get_run("done").await.expect("get").expect("run");
    assert_eq!(done.verdict, Some(Verdict::Held), "done runs are untouched");
    assert_eq!(kinds(s, "done").await, ["submitted", "verdict"]);
    for q in ["q1", "q2"] {
        let run = s.get_run(q).await.expect("get").expect("run");
        assert_eq!(run.verdict, Some(Verdict::Aborted));
    }
    assert!(s.pending_abort("running").await.expect("pending").is_some());
}

async fn abort_of_unknown_or_done_runs(ctx: Ctx) {
    let s = &ctx.store;
    let err = s
        .request_abort(AbortScope::Run("nope".into()), "bob", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NoSuchRun(ref id) if id == "nope"),
        "{err}"
    );

    create(s, "r").await;
    s.finish_run("r", Verdict::Held, RollbackOutcome::Reverted, "ok")
        .await
        .expect("finish");
    let outcome = s
        .request_abort(AbortScope::Run("r".into()), "bob", "late")
        .await
        .expect("abort of a done run");
    assert_eq!(outcome, Default::default());
    assert_eq!(kinds(s, "r").await, ["submitted", "verdict"]);
    assert!(s.pending_abort("r").await.expect("pending").is_none());
    // Nothing to abort at all is fine too.
    let outcome = s
        .request_abort(AbortScope::All, "bob", "x")
        .await
        .expect("abort all");
    assert_eq!(outcome, Default::default());
}

async fn faults_open_until_reverted(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    claim(s, "w1").await;
    let fault = |step: &str| NewFault {
        run_id: "r".into(),
        step: step.into(),
        target: "checkout".into(),
        family: "network".into(),
        detail: serde_json::json!({ "listen": "127.0.0.1:7000", "toxic": step }),
        deadline_ms: now_ms() + 30_000,
        owner: "w1".into(),
        epoch: None,
    };
    let before = now_ms();
    let a = s.record_fault(fault("latency")).await.expect("record a");
    let b = s.record_fault(fault("loss")).await.expect("record b");
    assert_ne!(a, b);

    let open = s.open_faults("r").await.expect("open");
    assert_eq!(open.iter().map(|f| f.id).collect::<Vec<_>>(), [a, b]);
    let first = &open[0];
    assert_eq!(first.step, "latency");
    assert_eq!(first.family, "network");
    assert_eq!(first.owner, "w1");
    assert_eq!(first.detail["toxic"], "latency");
    assert!(first.injected_ms >= before && first.reverted_ms.is_none());

    s.mark_fault_reverted(a).await.expect("revert a");
    s.mark_fault_reverted(a)
        .await
        .expect("reverting twice is fine");
    let open = s.open_faults("r").await.expect("open");
    assert_eq!(open.iter().map(|f| f.id).collect::<Vec<_>>(), [b]);

    let err = s.mark_fault_reverted(b + 1000).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchFault(_)), "{err}");
    let mut orphan = fault("x");
    orphan.run_id = "nope".into();
    let err = s.record_fault(orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
    assert!(s.open_faults("nope").await.expect("open").is_empty());
}

async fn orphaned_by_lease_expiry(ctx: Ctx) {
    let s = &ctx.store;
    for id in ["short", "long", "queued"] {
        create(s, id).await;
    }
    s.claim_next("w1", Duration::from_millis(10), 4)
        .await
        .expect("claim")
        .expect("short");
    s.claim_next("w1", Duration::from_secs(600), 4)
        .await
        .expect("claim")
        .expect("long");

    let now = now_ms();
    assert!(
        s.orphaned_runs(now - 60_000, &[])
            .await
            .expect("orphans")
            .is_empty()
    );
    let orphans = s.orphaned_runs(now + 1_000, &[]).await.expect("orphans");
    assert_eq!(
        orphans.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["short"]
    );
    let orphans = s
        .orphaned_runs(now + 3_600_000, &[])
        .await
        .expect("orphans");
    assert_eq!(orphans.len(), 2, "queued runs are never orphans");

    // Renewing the lease rescues it; finishing takes it out for good.
    s.renew_lease("short", "w1", Duration::from_secs(600))
        .await
        .expect("renew");
    assert!(
        s.orphaned_runs(now + 1_000, &[])
            .await
            .expect("orphans")
            .is_empty()
    );
    s.finish_run(
        "long",
        Verdict::Aborted,
        RollbackOutcome::Reverted,
        "recovered",
    )
    .await
    .expect("finish");
    let orphans = s
        .orphaned_runs(now + 3_600_000, &[])
        .await
        .expect("orphans");
    assert_eq!(
        orphans.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["short"]
    );
}

async fn orphaned_by_dead_owner_and_active_owners(ctx: Ctx) {
    let s = &ctx.store;
    for id in ["a", "b", "c"] {
        create(s, id).await;
    }
    assert!(s.active_owners().await.expect("owners").is_empty());
    assert_eq!(claim(s, "w2").await, "a");
    assert_eq!(claim(s, "w1").await, "b");
    assert_eq!(s.active_owners().await.expect("owners"), ["w1", "w2"]);

    let now = now_ms();
    assert!(s.orphaned_runs(now, &[]).await.expect("orphans").is_empty());
    let orphans = s
        .orphaned_runs(now, &["w1".to_string(), "ghost".to_string()])
        .await
        .expect("orphans");
    assert_eq!(
        orphans.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(orphans[0].owner.as_deref(), Some("w1"));

    s.finish_run("b", Verdict::Aborted, RollbackOutcome::Reverted, "w1 died")
        .await
        .expect("finish");
    assert_eq!(s.active_owners().await.expect("owners"), ["w2"]);
    assert!(
        s.orphaned_runs(now, &["w1".to_string()])
            .await
            .expect("orphans")
            .is_empty()
    );
}

async fn migrations_are_idempotent_on_reopen(ctx: Ctx) {
    create(&ctx.store, "r").await;
    let again = store::open(&ctx.url).await.expect("reopen");
    let third = store::open(&ctx.url).await.expect("reopen twice");
    assert_eq!(again.backend(), ctx.store.backend());
    let run = third
        .get_run("r")
        .await
        .expect("get")
        .expect("run survives");
    assert_eq!(run.state, RunState::Queued);
    create(&again, "r2").await;
    assert_eq!(
        ctx.store
            .list_runs(RunFilter::default())
            .await
            .expect("list")
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Backend-specific: opening

#[tokio::test]
async fn sqlite_file_is_created_on_first_use_in_wal_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fresh.db");
    assert!(!path.exists());
    let url = format!("sqlite://{}", path.display());
    let store = store::open(&url).await.expect("open");
    assert_eq!(store.backend(), "sqlite");
    assert!(path.exists(), "database file created");

    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' \
         AND name <> 'sqlite_sequence' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    // Other features add tables of their own (Slack edge, outbox); these must be there.
    for t in [
        "abort_requests",
        "faults",
        "journal",
        "runs",
        "slack_audit",
        "slack_events",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "table {t} missing: {tables:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = store::open("sqlite::memory:").await.expect("open memory");
    create(&store, "r").await;
    assert_eq!(claim(&store, "w").await, "r");
    store
        .transition("r", "w", RunState::Injecting)
        .await
        .expect("transition");
    assert_eq!(store.journal("r", 0).await.expect("journal").len(), 3);
}

#[tokio::test]
async fn bad_urls_are_explained() {
    for url in ["", "mysql://root@localhost/chaos", "chaosbot.db"] {
        let err = store::open(url).await.err().expect("refused");
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{url}: {err}");
        assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    }

    let url = "sqlite:///nonexistent-chaosbot-dir/sub/chaosbot.db";
    let err = store::open(url).await.err().expect("refused");
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(url) && msg.contains("directory exists"),
        "{msg}"
    );

    // Nothing listens on port 1: refused quickly, with the password masked.
    let url = "postgres://bot:s3cret@127.0.0.1:1/chaos";
    let started = Instant::now();
    let err = store::open(url).await.err().expect("refused");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("s3cret"),
        "{msg}"
    );
    assert!(msg.contains("server is running"), "{msg}");
}

/// Two processes (here: four pools) opening the same fresh file at once must all succeed;
/// sqlx takes no migration lock on SQLite, so the store retries the loser's migration.
#[tokio::test]
async fn sqlite_concurrent_first_opens_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("race.db").display());
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { chaosbot::store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The learning loop: Q&A and learnings

fn question(run: &str, ts: &str, by: &str, text: &str, at: i64) -> NewQuestion {
    NewQuestion {
        run_id: run.into(),
        channel: "C1".into(),
        ts: ts.into(),
        asked_by: by.into(),
        text: text.into(),
        asked_ms: at,
    }
}

async fn qa_questions_votes_and_answers(ctx: Ctx) {
    let s = &ctx.store;
    let (q1, fresh) = s
        .add_question(&question("r1", "1.1", "U1", "why 503?", 1_000))
        .await
        .unwrap();
    assert!(fresh);
    // A redelivered event finds the same question.
    let (again, fresh) = s
        .add_question(&question("r1", "1.1", "U1", "why 503?", 1_000))
        .await
        .unwrap();
    assert!(!fresh);
    assert_eq!(again.id, q1.id);
    let (q2, _) = s
        .add_question(&question("r1", "1.2", "U2", "who started it?", 2_000))
        .await
        .unwrap();
    s.add_question(&question("r2", "1.3", "U2", "other run", 3_000))
        .await
        .unwrap();

    // Oldest first while votes are equal; most votes first after.
    let ids: Vec<i64> = s
        .questions("r1")
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(ids, vec![q1.id, q2.id]);
    assert!(s.add_vote(q2.id, "U3", 10).await.unwrap());
    assert!(
        !s.add_vote(q2.id, "U3", 11).await.unwrap(),
        "one vote per person"
    );
    assert!(s.add_vote(q2.id, "U4", 12).await.unwrap());
    assert!(s.add_vote(q1.id, "U4", 12).await.unwrap());
    let board = s.questions("r1").await.unwrap();
    assert_eq!(
        board.iter().map(|q| (q.id, q.votes)).collect::<Vec<_>>(),
        vec![(q2.id, 2), (q1.id, 1)]
    );
    assert!(s.remove_vote(q2.id, "U3", 13).await.unwrap());
    assert!(!s.remove_vote(q2.id, "U3", 14).await.unwrap());
    // Out of order: a removal (at 30) seen before its add (at 20) wins; a later add counts.
    assert!(!s.remove_vote(q1.id, "U5", 30).await.unwrap());
    assert!(
        !s.add_vote(q1.id, "U5", 20).await.unwrap(),
        "older than the removal"
    );
    assert_eq!(s.question(q1.id).await.unwrap().unwrap().votes, 1);
    assert!(s.add_vote(q1.id, "U5", 40).await.unwrap());
    assert_eq!(s.question(q1.id).await.unwrap().unwrap().votes, 2);
    assert!(
        !s.remove_vote(q1.id, "U5", 35).await.unwrap(),
        "older than the add"
    );
    assert!(s.remove_vote(q1.id, "U5", 50).await.unwrap());
    assert_eq!(s.question(q2.id).await.unwrap().unwrap().votes, 1);

    // Edits change the text; deletion takes the question off the board.
    let edited = s
        .edit_question("C1", "1.1", "why 503 and not 504?", 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.text, "why 503 and not 504?");
    assert_eq!(edited.edited_ms, Some(5_000));
    assert!(
        s.edit_question("C1", "9.9", "x", 1)
            .await
            .unwrap()
            .is_none()
    );

    // Answers are stored and replace earlier ones.
    let answer = Answer {
        text: "the proxy refused".into(),
        by: "U9".into(),
        at_ms: 6_000,
        auto: false,
    };
    let answered = s.answer_question(q1.id, &answer).await.unwrap().unwrap();
    assert_eq!(answered.answer, Some(answer));
    assert!(
        s.answer_question(99_999, &answered.answer.clone().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let unanswered: Vec<i64> = s
        .unanswered_questions(0)
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(unanswered.len(), 2);
    assert!(!unanswered.contains(&q1.id));
    assert_eq!(s.unanswered_questions(2_500).await.unwrap().len(), 1);

    let removed = s
        .remove_question("C1", "1.2", 7_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.deleted_ms, Some(7_000));
    let ids: Vec<i64> = s
        .questions("r1")
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(ids, vec![q1.id]);
    assert!(
        s.question_by_ts("C1", "1.2").await.unwrap().is_some(),
        "the row stays"
    );
}

/// A reaction added and removed moments apart may be handled at the same time, in either
/// order: the later event must win every time.
async fn qa_votes_converge_when_add_and_removal_race(ctx: Ctx) {
    let s = &ctx.store;
    let mut wrong = Vec::new();
    for i in 0..60i64 {
        let (q, _) = s
            .add_question(&question("race", &format!("9.{i}"), "U1", "q", 1))
            .await
            .unwrap();
        // Even: added then removed (ends uncounted); odd: removed then added again (counted).
        let (first, second) = if i % 2 == 0 {
            (true, false)
        } else {
            (false, true)
        };
        let (a, b) = (s.clone(), s.clone());
        let apply = |store: DynStore, add: bool, at: i64| async move {
            if add {
                store.add_vote(q.id, "UD", at).await
            } else {
                store.remove_vote(q.id, "UD", at).await
            }
        };
        let (x, y) = tokio::join!(
            tokio::spawn(apply(a, first, 100)),
            tokio::spawn(apply(b, second, 200))
        );
        x.unwrap().unwrap();
        y.unwrap().unwrap();
        let votes = s.question(q.id).await.unwrap().unwrap().votes;
        if votes != i64::from(second) {
            wrong.push((i, votes));
        }
    }
    assert!(
        wrong.is_empty(),
        "(iteration, votes) that ended wrong: {wrong:?}"
    );
}

async fn qa_thread_lookup_and_session(ctx: Ctx) {
    let s = &ctx.store;
    assert!(s.run_for_thread("C1", "111.222").await.unwrap().is_none());
    let post = |key: &str| OutboundMessage {
        thread_key: "run:r7".into(),
        channel: "C1".into(),
        action: OutboundAction::Post {
            key: Some(key.into()),
            in_thread_of: None,
            text: "t".into(),
            blocks: None,
        },
    };
    s.enqueue(&[post("run:r7:parent")], None).await.unwrap();
    let rows = s
        .claim_heads("me", now_ms(), now_ms() + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let done = s
        .mark_delivered(Delivered {
            claimed_id: rows[0].id,
            owner: "me",
            now_ms: now_ms(),
            sent_id: rows[0].id,
            superseded: vec![],
            posted: Some(("run:r7:parent", "C1", "111.222")),
            updated_key: None,
            revision: None,
        })
        .await
        .unwrap();
    assert!(done);
    assert_eq!(
        s.run_for_thread("C1", "111.222").await.unwrap().as_deref(),
        Some("r7")
    );
    assert!(s.run_for_thread("C2", "111.222").await.unwrap().is_none());

    assert!(s.qa_session("r7").await.unwrap().is_none());
    assert!(s.open_qa("r7", "C1", 1_000, 5_000).await.unwrap());
    assert!(
        !s.open_qa("r7", "C1", 2_000, 9_000).await.unwrap(),
        "opened once"
    );
    let session = s.qa_session("r7").await.unwrap().unwrap();
    assert_eq!((session.opened_ms, session.closes_ms), (1_000, 5_000));
    assert!(session.is_open(4_999));
    assert!(!session.is_open(5_000));
    let closed = |a, b| {
        let s = s.clone();
        async move {
            s.qa_sessions_closed(a, b)
                .await
                .unwrap()
                .into_iter()
                .map(|q| q.run_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(closed(4_000, 5_000).await, vec!["r7".to_string()]);
    assert!(
        closed(5_000, 9_000).await.is_empty(),
        "reported once per window"
    );
    assert!(closed(0, 4_999).await.is_empty());
}

async fn learnings_in_order(ctx: Ctx) {
    let s = &ctx.store;
    s.add_learning(
        "r1",
        LearningKind::Learned,
        "retries hide the fault",
        "U1",
        2,
    )
    .await
    .unwrap();
    s.add_learning("r1", LearningKind::Change, "alert on p99", "U1", 3)
        .await
        .unwrap();
    s.add_learning("r2", LearningKind::Change, "other", "U1", 1)
        .await
        .unwrap();
    let l = s.learnings("r1").await.unwrap();
    assert_eq!(
        l.iter()
            .map(|l| (l.kind, l.text.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (LearningKind::Learned, "retries hide the fault"),
            (LearningKind::Change, "alert on p99")
        ]
    );
}

async fn runs_between_is_a_half_open_window(ctx: Ctx) {
    let s = &ctx.store;
    let mut created = Vec::new();
    for id in ["w1", "w2", "w3"] {
        create(s, id).await;
        created.push(s.get_run(id).await.unwrap().unwrap().created_ms);
        // Distinct creation times, so the window edges are unambiguous.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |runs: Vec<chaosbot::store::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(
        ids(s.runs_between(created[0], created[2]).await.unwrap()),
        ["w1", "w2"],
        "from is inclusive, to exclusive, oldest first"
    );
    assert_eq!(
        ids(s
            .runs_between(created[0] + 1, created[2] + 1)
            .await
            .unwrap()),
        ["w2", "w3"]
    );
    assert!(s.runs_between(0, created[0]).await.unwrap().is_empty());
    let all = s.runs_between(0, i64::MAX).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].seed, u64::MAX - 7, "rows decode fully");
}

async fn digest_is_recorded_once_with_its_messages(ctx: Ctx) {
    let s = &ctx.store;
    let msg = |i: usize| OutboundMessage {
        thread_key: "digest:1000".into(),
        channel: "CDIGEST".into(),
        action: OutboundAction::Post {
            key: Some(format!("digest:1000:{i}")),
            in_thread_of: None,
            text: "weekly".into(),
            blocks: None,
        },
    };
    assert!(s.digest(1_000).await.unwrap().is_none());
    // Racing writers (two replicas): exactly one records it, and only its messages are queued.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        let m = vec![msg(0), msg(1)];
        tasks.push(tokio::spawn(async move {
            s.enqueue_digest(1_000, 2_000, &format!("replica-{w}"), &m)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "one writer records the week");
    assert_eq!(s.pending_count().await.unwrap(), 2, "one digest's messages");
    let rec = s.digest(1_000).await.unwrap().unwrap();
    assert_eq!((rec.period_start_ms, rec.period_end_ms), (1_000, 2_000));
    assert_eq!(rec.channel, "CDIGEST");
    assert!(rec.queued_by.starts_with("replica-"));
    // Later attempts (a restart) change nothing; another week is its own row.
    assert!(
        !s.enqueue_digest(1_000, 2_000, "again", &[msg(0)])
            .await
            .unwrap()
    );
    assert_eq!(s.pending_count().await.unwrap(), 2);
    assert!(
        s.enqueue_digest(2_000, 3_000, "next", &[msg(2)])
            .await
            .unwrap()
    );
    assert_eq!(s.pending_count().await.unwrap(), 3);
}

/// What a seeded run looks like in its journal.
struct Seed {
    id: &'static str,
    verdict: Verdict,
    rollback: RollbackOutcome,
    /// Milliseconds from the fault injected to the first failing sample.
    detect_after: Option<u64>,
    /// Milliseconds from the fault reverted to the passing sample.
    recover_after: Option<u64>,
}

async fn seed_run(s: &DynStore, seed: &Seed) {
    let (run, submitted) = new_run(seed.id, &format!("exp-{}", seed.id));
    s.create_run(run, submitted).await.unwrap();
    let sample = |phase, ok| Event::ProbeSample {
        probe: "api".into(),
        phase,
        ok,
        latency_ms: 5.0,
        detail: "200".into(),
    };
    if seed.detect_after.is_some() || seed.recover_after.is_some() {
        s.append(
            seed.id,
            &Event::FaultInjected {
                step: "slow".into(),
                fault: "latency".into(),
                target: "api".into(),
                summary: "+250ms".into(),
                deadline_ms: now_ms() + 60_000,
                agent: None,
            },
        )
        .await
        .unwrap();
        if let Some(ms) = seed.detect_after {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            s.append(seed.id, &sample(SamplePhase::During, false))
                .await
                .unwrap();
        }
        s.append(
            seed.id,
            &Event::FaultReverted {
                step: "slow".into(),
                target: "api".into(),
            },
        )
        .await
        .unwrap();
        if let Some(ms) = seed.recover_after {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            s.append(seed.id, &sample(SamplePhase::After, true))
                .await
                .unwrap();
        }
    }
    s.finish_run(seed.id, seed.verdict, seed.rollback, "seeded")
        .await
        .unwrap();
}

/// Time from the first `a` entry to the first `b` entry after it, read from the journal itself.
fn gap(entries: &[Entry], a: &str, b: &str) -> Option<i64> {
    let i = entries.iter().position(|e| e.event.kind() == a)?;
    let later = entries[i..].iter().find(|e| e.event.kind() == b)?;
    Some(later.at_ms - entries[i].at_ms)
}

async fn period_summary_of_seeded_runs(ctx: Ctx) {
    let s = &ctx.store;
    let ok = RollbackOutcome::Reverted;
    // The previous period: one deviated run with slow detection and quick recovery.
    let previous = [Seed {
        id: "p1",
        verdict: Verdict::Deviated,
        rollback: ok,
        detect_after: Some(120),
        recover_after: Some(10),
    }];
    let first_ms = now_ms();
    for seed in &previous {
        seed_run(s, seed).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let split = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let current = [
        Seed {
            id: "c-held",
            verdict: Verdict::Held,
            rollback: ok,
            detect_after: None,
            recover_after: None,
        },
        Seed {
            id: "c-dev1",
            verdict: Verdict::Deviated,
            rollback: ok,
            detect_after: Some(20),
            recover_after: Some(60),
        },
        Seed {
            id: "c-dev2",
            verdict: Verdict::Deviated,
            rollback: RollbackOutcome::RevertFailed,
            detect_after: Some(40),
            recover_after: None,
        },
        Seed {
            id: "c-abort",
            verdict: Verdict::Aborted,
            rollback: ok,
            detect_after: None,
            recover_after: Some(30),
        },
        Seed {
            id: "c-fail",
            verdict: Verdict::Failed,
            rollback: RollbackOutcome::NothingToRevert,
            detect_after: None,
            recover_after: None,
        },
    ];
    for seed in &current {
        seed_run(s, seed).await;
    }
    let open_q = s
        .add_question(&question("c-dev1", "9.1", "U5", "why 60 ms?", now_ms()))
        .await
        .unwrap()
        .0;
    let answered = s
        .add_question(&question("c-dev1", "9.2", "U6", "which probe?", now_ms()))
        .await
        .unwrap()
        .0;
    s.answer_question(
        answered.id,
        &Answer {
            text: "api".into(),
            by: "chaosbot".into(),
            at_ms: now_ms(),
            auto: true,
        },
    )
    .await
    .unwrap();
    let end = now_ms() + 1;
    // Long enough that the previous window reaches back over the first run.
    let len = (end - split).max(split - first_ms + 1);
    let window = Window {
        from_ms: split,
        to_ms: split + len,
    };
    let summary = period::load(
        s,
        window,
        window.from_ms,
        Window {
            from_ms: end,
            to_ms: end + 7 * period::DAY_MS,
        },
    )
    .await
    .unwrap();

    let c = &summary.counts;
    assert_eq!(
        (
            c.total,
            c.held,
            c.deviated,
            c.aborted,
            c.failed,
            c.unfinished
        ),
        (5, 1, 2, 1, 1, 0)
    );
    assert_eq!(c.revert_failed, 1);
    assert_eq!(
        (
            summary.previous_counts.total,
            summary.previous_counts.deviated
        ),
        (1, 1)
    );
    let deviated: Vec<&str> = summary.deviated.iter().map(|d| d.run_id.as_str()).collect();
    assert_eq!(deviated, ["c-dev1", "c-dev2"]);

    // The means, from the journals' own timestamps.
    let journal = |id: &'static str| async move { s.journal(id, 0).await.unwrap() };
    let d1 = gap(&journal("c-dev1").await, "fault_injected", "probe_sample").unwrap();
    let d2 = gap(&journal("c-dev2").await, "fault_injected", "probe_sample").unwrap();
    let dp = gap(&journal("p1").await, "fault_injected", "probe_sample").unwrap();
    assert!(
        d1 >= 20 && d2 >= 40 && dp >= 120,
        "the sleeps are in the journal"
    );
    let r1 = gap(&journal("c-dev1").await, "fault_reverted", "probe_sample").unwrap();
    let ra = gap(&journal("c-abort").await, "fault_reverted", "probe_sample").unwrap();
    let rp = gap(&journal("p1").await, "fault_reverted", "probe_sample").unwrap();
    assert!(r1 >= 60 && ra >= 30, "recover gaps {r1} {ra}");
    let t = &summary.time_to_detect;
    assert_eq!(t.runs, 2);
    assert_eq!(t.mean_ms, Some((d1 + d2) as f64 / 2.0));
    assert_eq!(t.previous_mean_ms, Some(dp as f64));
    let expected = |now: f64, before: f64| {
        if (now - before).abs() < 0.5 {
            Direction::Same
        } else if now < before {
            Direction::Faster
        } else {
            Direction::Slower
        }
    };
    assert_eq!(t.direction, expected((d1 + d2) as f64 / 2.0, dp as f64));
    let t = &summary.time_to_recover;
    assert_eq!(t.runs, 2);
    assert_eq!(t.mean_ms, Some((r1 + ra) as f64 / 2.0));
    assert_eq!(t.previous_mean_ms, Some(rp as f64));
    assert_eq!(t.direction, expected((r1 + ra) as f64 / 2.0, rp as f64));

    let open: Vec<(i64, &str)> = summary
        .unanswered
        .iter()
        .map(|q| (q.question_id, q.run_id.as_str()))
        .collect();
    assert_eq!(
        open,
        [(open_q.id, "c-dev1")],
        "answered questions are not open"
    );
    // Nothing is scheduled in this store.
    assert!(summary.upcoming.is_empty());
}

/// A target is held by one active run at a time: a queued run on it is not claimed (by
/// `claim_next` nor `claim_run`) until the holder is done, while a run on another target
/// is; the holder and the queue position are reported.
async fn a_held_target_waits_for_its_holder(ctx: Ctx) {
    let s = &ctx.store;
    for (id, targets) in [
        ("r-hold", &["svc", "db"][..]),
        ("r-wait1", &["svc"][..]),
        ("r-wait2", &["db", "cache"][..]),
        ("r-free", &["other"][..]),
    ] {
        let (run, submitted) = new_run_on(id, targets);
        s.create_run(run, submitted).await.unwrap();
    }
    let lease = Duration::from_secs(30);
    assert_eq!(claim(s, "w1").await, "r-hold");
    // The oldest queued runs wait behind the holder; the free one goes first.
    assert_eq!(claim(s, "w1").await, "r-free");
    assert!(s.claim_next("w1", lease, 10).await.unwrap().is_none());
    assert!(
        s.claim_run("r-wait1", "w1", lease, 10)
            .await
            .unwrap()
            .is_none()
    );

    let holders = s
        .target_holders(&["svc".to_string(), "nothing".to_string()])
        .await
        .unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(
        (holders[0].target.as_str(), holders[0].run_id.as_str()),
        ("svc", "r-hold")
    );
    assert_eq!(holders[0].requested_by, "alice");
    let place = s.queue_place("r-wait2").await.unwrap();
    assert_eq!(place.holders.len(), 1, "{place:?}");
    assert_eq!(place.holders[0].target, "db");
    assert_eq!(place.ahead, 0, "r-wait1 shares no target with r-wait2");
    let (run, submitted) = new_run_on("r-wait3", &["svc"]);
    s.create_run(run, submitted).await.unwrap();
    assert_eq!(s.queue_place("r-wait3").await.unwrap().ahead, 1);

    s.finish_run("r-hold", Verdict::Held, RollbackOutcome::Reverted, "done")
        .await
        .unwrap();
    // Both wait in the order they came, each on its own targets.
    assert_eq!(claim(s, "w1").await, "r-wait1");
    assert_eq!(claim(s, "w1").await, "r-wait2");
    assert!(
        s.claim_next("w1", lease, 10).await.unwrap().is_none(),
        "r-wait3 waits for r-wait1"
    );
}

/// `fail_queued` closes a run only while it is queued, with the reason in its verdict.
async fn a_queued_run_fails_only_while_still_queued(ctx: Ctx) {
    let s = &ctx.store;
    let (run, submitted) = new_run_on("r-q1", &["svc"]);
    s.create_run(run, submitted).await.unwrap();
    let (run, submitted) = new_run_on("r-q2", &["other"]);
    s.create_run(run, submitted).await.unwrap();
    let later = chaosbot::run::now_ms() + 1;
    assert_eq!(
        s.queued_before(later).await.unwrap(),
        vec!["r-q1".to_string(), "r-q2".to_string()]
    );
    assert_eq!(claim(s, "w1").await, "r-q1");
    assert!(!s.fail_queued("r-q1", "too late").await.unwrap(), "it runs");
    assert!(s.fail_queued("r-q2", "queued for 30m").await.unwrap());
    let r = s.get_run("r-q2").await.unwrap().unwrap();
    assert_eq!(r.state, RunState::Done);
    assert_eq!(r.verdict, Some(Verdict::Failed));
    assert_eq!(r.reason.as_deref(), Some("queued for 30m"));
    assert_eq!(kinds(s, "r-q2").await.last(), Some(&"verdict"));
    assert!(!s.fail_queued("r-q2", "again").await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Fencing by epoch (several replicas on one database)

fn sample_event() -> Event {
    Event::ProbeSample {
        probe: "health".into(),
        phase: SamplePhase::During,
        ok: true,
        latency_ms: 3.0,
        detail: "200".into(),
    }
}

async fn a_stale_owner_cannot_write_after_adoption(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    let claimed = s
        .claim_next("w1", Duration::from_millis(50), 4)
        .await
        .expect("claim")
        .expect("r");
    let old = Fence {
        owner: "w1".into(),
        epoch: claimed.epoch,
    };
    // While it holds the run, the owner's fenced writes go through.
    s.append_fenced("r", &old, &sample_event())
        .await
        .expect("the owner appends");
    let fault = |owner: &str, epoch: u64| NewFault {
        run_id: "r".into(),
        step: "latency".into(),
        target: "checkout".into(),
        family: "agent".into(),
        detail: serde_json::json!({ "agent": "local" }),
        deadline_ms: now_ms() + 30_000,
        owner: owner.into(),
        epoch: Some(epoch),
    };
    s.record_fault(fault("w1", claimed.epoch))
        .await
        .expect("the owner records a fault");
    // A lower (or any other) epoch is refused even for the same owner name.
    let lower = Fence {
        owner: "w1".into(),
        epoch: claimed.epoch - 1,
    };
    assert!(matches!(
        s.append_fenced("r", &lower, &sample_event()).await,
        Err(StoreError::LeaseLost(_))
    ));

    // The lease runs out on the store's clock; another replica adopts the run.
    let deadline = Instant::now() + Duration::from_secs(5);
    let adopted = loop {
        let now = s.clock_ms().await.expect("clock");
        if !s.orphaned_runs(now, &[]).await.expect("orphans").is_empty() {
            break s
                .adopt_orphan("r", "w2", LEASE, claimed.epoch)
                .await
                .expect("adopt")
                .expect("an orphan to adopt");
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(adopted.epoch, claimed.epoch + 1);
    assert_eq!(adopted.owner.as_deref(), Some("w2"));

    let before = s.journal("r", 0).await.expect("journal").len();
    // The old owner comes back: none of its writes land.
    assert!(matches!(
        s.append_fenced("r", &old, &sample_event()).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        s.record_fault(fault("w1", claimed.epoch)).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        s.finish_fenced("r", &old, Verdict::Held, RollbackOutcome::Reverted, "late")
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        s.renew_lease("r", "w1", LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(s.journal("r", 0).await.expect("journal").len(), before);
    assert_eq!(s.open_faults("r").await.expect("faults").len(), 1);

    // The new owner writes and closes it; after that no fence holds it.
    let new = Fence {
        owner: "w2".into(),
        epoch: adopted.epoch,
    };
    s.append_fenced("r", &new, &sample_event())
        .await
        .expect("the new owner appends");
    s.finish_fenced(
        "r",
        &new,
        Verdict::Aborted,
        RollbackOutcome::Reverted,
        "owner lost",
    )
    .await
    .expect("the new owner closes it");
    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.verdict, Some(Verdict::Aborted));
    assert!(matches!(
        s.append_fenced("r", &new, &sample_event()).await,
        Err(StoreError::LeaseLost(_))
    ));
}

async fn adoption_is_won_by_exactly_one_recoverer(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    let claimed = s
        .claim_next("dead", LEASE, 4)
        .await
        .expect("claim")
        .expect("r");
    let mut tasks = Vec::new();
    for n in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.adopt_orphan("r", &format!("w{n}"), LEASE, claimed.epoch)
                .await
                .expect("adopt")
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(r) = t.await.expect("task") {
            winners.push(r);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one recoverer adopts the run");
    assert_eq!(winners[0].epoch, claimed.epoch + 1);
    let run = s.get_run("r").await.expect("get").expect("run");
    assert_eq!(run.owner, winners[0].owner);
    assert_eq!(run.epoch, claimed.epoch + 1);
}

async fn the_render_cursor_is_compare_and_swap(ctx: Ctx) {
    let s = &ctx.store;
    create(s, "r").await;
    let post = |text: &str| OutboundMessage {
        thread_key: "run:r".into(),
        channel: "C1".into(),
        action: OutboundAction::Post {
            key: None,
            in_thread_of: None,
            text: text.into(),
            blocks: None,
        },
    };
    let queued = |s: &DynStore| {
        let s = s.clone();
        async move { s.outbox_rows(Some("run:r")).await.expect("rows").len() }
    };
    // Six projectors render the first entries at once: exactly one queues them.
    let mut tasks = Vec::new();
    for n in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue_rendered(&[post(&format!("first from {n}"))], "r", 0, 0, 3)
                .await
                .expect("enqueue")
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 1);
    assert_eq!(queued(s).await, 1);
    assert_eq!(s.render_cursor("r").await.expect("cursor"), 3);
    // A projector that read the cursor before it moved queues nothing.
    assert!(
        !s.enqueue_rendered(&[post("stale")], "r", 0, 0, 5)
            .await
            .expect("enqueue")
    );
    assert!(
        !s.enqueue_rendered(&[post("stale")], "r", 0, 2, 5)
            .await
            .expect("enqueue")
    );
    assert_eq!(queued(s).await, 1);
    assert!(
        s.enqueue_rendered(&[post("next")], "r", 0, 3, 5)
            .await
            .expect("enqueue")
    );
    assert_eq!(queued(s).await, 2);
    assert_eq!(s.render_cursor("r").await.expect("cursor"), 5);

    // The fence: once the run is claimed (epoch 1) and adopted (epoch 2), a rendering read
    // under an older epoch is refused, queuing nothing and leaving the cursor; the new
    // owner's lands, and its rows carry its epoch.
    let claimed = s
        .claim_next("old", LEASE, 4)
        .await
        .expect("claim")
        .expect("r");
    let adopted = s
        .adopt_orphan("r", "new", LEASE, claimed.epoch)
        .await
        .expect("adopt")
        .expect("adopted");
    assert_eq!(adopted.epoch, claimed.epoch + 1);
    assert!(matches!(
        s.enqueue_rendered(&[post("from the old owner")], "r", claimed.epoch, 5, 7)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(queued(s).await, 2);
    assert_eq!(s.render_cursor("r").await.expect("cursor"), 5);
    assert!(
        s.enqueue_rendered(&[post("from the new owner")], "r", adopted.epoch, 5, 7)
            .await
            .expect("enqueue")
    );
    let rows = s.outbox_rows(Some("run:r")).await.expect("rows");
    let texts: Vec<_> = rows
        .iter()
        .map(|r| match &r.action {
            OutboundAction::Post { text, .. } => text.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(texts[2], "from the new owner");
    assert_eq!(rows.len(), 3);
    assert_eq!(s.render_cursor("r").await.expect("cursor"), 7);
}

async fn pacing_and_revisions_are_shared_through_the_store(ctx: Ctx) {
    let s = &ctx.store;
    // A 429 hold: seen by every caller of the store, per method, the longer one kept.
    assert_eq!(s.method_held_for("chat.update").await.expect("held"), None);
    s.hold_method("chat.update", 60_000).await.expect("hold");
    s.hold_method("chat.update", 1_000).await.expect("hold");
    let left = s.method_held_for("chat.update").await.expect("held");
    assert!(
        left.is_some_and(|ms| ms > 50_000 && ms <= 60_000),
        "{left:?}"
    );
    assert_eq!(
        s.method_held_for("chat.postMessage").await.expect("held"),
        None
    );
    // Post slots: a burst of 2 at once, then one per interval, reserved in the order asked
    // for up to the longest wait allowed; other channels are not affected.
    let (second, minute) = (1_000, 60_000);
    let now_slot = PostSlot::Reserved { in_ms: 0 };
    assert_eq!(
        s.take_post_slot("C1", second, 2, 0).await.expect("slot"),
        now_slot
    );
    assert_eq!(
        s.take_post_slot("C1", second, 2, 0).await.expect("slot"),
        now_slot
    );
    match s
        .take_post_slot("C1", second, 2, 5 * second)
        .await
        .expect("slot")
    {
        PostSlot::Reserved { in_ms } => assert!(in_ms > 500 && in_ms <= second, "{in_ms}"),
        other => panic!("{other:?}"),
    }
    match s
        .take_post_slot("C1", second, 2, 5 * second)
        .await
        .expect("slot")
    {
        PostSlot::Reserved { in_ms } => {
            assert!(in_ms > 1500 && in_ms <= 2 * second, "{in_ms}")
        }
        other => panic!("{other:?}"),
    }
    // The next slot is 3 s away: with at most 1 s of wait it is not reserved.
    match s
        .take_post_slot("C1", second, 2, second)
        .await
        .expect("slot")
    {
        PostSlot::Busy { retry_in_ms } => {
            assert!(
                retry_in_ms > 1500 && retry_in_ms <= 2 * second,
                "{retry_in_ms}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.take_post_slot("C2", minute, 2, 0).await.expect("slot"),
        now_slot
    );
    assert_eq!(
        s.take_post_slot("C1", 0, 2, 0).await.expect("slot"),
        now_slot
    );
    // Revisions: one counter per message, for every replica at once.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.next_revision("run:r:qa").await.expect("revision")
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.expect("task"));
    }
    revs.sort();
    assert_eq!(revs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(s.next_revision("other").await.expect("revision"), 1);
}
