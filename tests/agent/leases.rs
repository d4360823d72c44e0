//! Leases, deadlines, epochs and holders.

use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_HELD, CODE_STALE_EPOCH};

use crate::rig::{Site, apply, fill_step, latency_step, metric, pause_step, wait_paused};

#[tokio::test]
async fn a_lapsed_lease_resumes_the_paused_process_and_renewals_keep_it() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let pid = site.pid();

    let a = agent
        .apply(&apply("r-1", 1, "f-1", pause_step(), 30_000, 1_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(wait_paused(pid, true, Duration::from_secs(2)).await);
    // Renewed twice past its first lease: still paused.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = agent.renew("r-1", 1, &["f-1"], 1_000).await;
        assert_eq!(r.body["faults"][0]["state"], "held", "{:?}", r.body);
    }
    assert!(wait_paused(pid, true, Duration::ZERO).await);
    let text = agent.metrics().await;
    assert!(
        metric(&text, "chaosbot_agent_lease_renewals_total").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "chaosbot_agent_faults_in_place "),
        Some(1.0),
        "{text}"
    );

    // The controller goes quiet: the lease lapses and the agent resumes it within TTL + 1 s.
    let quiet = Instant::now();
    assert!(
        wait_paused(pid, false, Duration::from_millis(2_000)).await,
        "still paused {:?} after the last renewal",
        quiet.elapsed()
    );
    let r = agent.renew("r-1", 1, &["f-1", "f-unknown"], 1_000).await;
    assert_eq!(r.body["faults"][0]["state"], "gone", "{:?}", r.body);
    assert_eq!(r.body["faults"][0]["reason"], "lease expired");
    assert_eq!(r.body["faults"][1]["state"], "unknown");
    let text = agent.metrics().await;
    assert_eq!(
        metric(
            &text,
            "chaosbot_agent_reverts_total{reason=\"lease expired\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "chaosbot_agent_faults_in_place "),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_renewal_that_arrives_after_the_lease_lapsed_does_not_revive_the_fault() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let pid = site.pid();
    // A renewal sent just after the lease lapsed, before the agent's sweep came round (it
    // sweeps every 100 ms): the fault is over, not renewed. Five tries, so a sweep that
    // happened to come first every time cannot hide a revived lease.
    for n in 0..5 {
        let id = format!("f-{n}");
        let a = agent
            .apply(&apply("r-1", 1, &id, pause_step(), 30_000, 400))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        let applied = Instant::now();
        assert!(wait_paused(pid, true, Duration::from_secs(2)).await);
        tokio::time::sleep(Duration::from_millis(420).saturating_sub(applied.elapsed())).await;
        let r = agent.renew("r-1", 1, &[&id], 30_000).await;
        assert_eq!(
            r.body["faults"][0]["state"], "gone",
            "try {n}: {:?}",
            r.body
        );
        assert_eq!(r.body["faults"][0]["reason"], "lease expired");
        assert!(
            wait_paused(pid, false, Duration::from_secs(1)).await,
            "try {n}: the paused process must run again"
        );
    }
}

#[tokio::test]
async fn the_deadline_reverts_even_while_the_lease_is_renewed() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let a = agent
        .apply(&apply("r-1", 1, "f-fill", fill_step(), 1_000, 30_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(site.scratch_files().len(), 1, "one fill file");
    // Renewed all along, it still goes at its deadline (TTL + 1 s at most).
    let start = Instant::now();
    let mut r = agent.renew("r-1", 1, &["f-fill"], 30_000).await;
    while r.body["faults"][0]["state"] == "held" && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = agent.renew("r-1", 1, &["f-fill"], 30_000).await;
    }
    assert!(
        site.scratch_files().is_empty(),
        "fill file left after the deadline"
    );
    assert_eq!(r.body["faults"][0]["state"], "gone", "{:?}", r.body);
    assert_eq!(r.body["faults"][0]["reason"], "deadline");
}

#[tokio::test]
async fn explicit_revert_is_idempotent_and_says_when_it_was_already_gone() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let pid = site.pid();
    let req = apply("r-1", 1, "f-1", pause_step(), 30_000, 30_000);
    let first = agent.apply(&req).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    // A retried apply answers the same and touches nothing again.
    let again = agent.apply(&req).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert!(wait_paused(pid, true, Duration::from_secs(2)).await);

    let r = agent.revert("r-1", 1, "f-1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["earlier"].is_null(), "{:?}", r.body);
    assert!(wait_paused(pid, false, Duration::from_secs(1)).await);
    let r = agent.revert("r-1", 1, "f-1").await;
    assert_eq!(
        r.body["earlier"]["reason"], "revert requested",
        "{:?}",
        r.body
    );
    let faults = agent.call("GET", "/v1/faults", None).await;
    assert_eq!(faults.body["faults"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_stale_epoch_cannot_renew_or_revert_and_a_higher_one_takes_over() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let pid = site.pid();
    let a = agent
        .apply(&apply("r-1", 2, "f-1", pause_step(), 30_000, 30_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);

    let r = agent.renew("r-1", 1, &["f-1"], 30_000).await;
    assert_eq!(
        (r.status, r.code()),
        (409, CODE_STALE_EPOCH),
        "{:?}",
        r.body
    );
    let r = agent.revert("r-1", 1, "f-1").await;
    assert_eq!(
        (r.status, r.code()),
        (409, CODE_STALE_EPOCH),
        "{:?}",
        r.body
    );
    assert!(
        wait_paused(pid, true, Duration::ZERO).await,
        "a stale revert must not revert"
    );

    // A new owner (epoch 3) takes the fault over; the old one (2) is now stale.
    let r = agent.renew("r-1", 3, &["f-1"], 30_000).await;
    assert_eq!(r.body["faults"][0]["state"], "held", "{:?}", r.body);
    let list = agent.call("GET", "/v1/faults", None).await;
    assert_eq!(list.body["faults"][0]["epoch"], 3);
    let r = agent.revert("r-1", 2, "f-1").await;
    assert_eq!(r.code(), CODE_STALE_EPOCH, "{:?}", r.body);
    // Nor may the old owner apply again, even retrying the same fault id.
    let r = agent
        .apply(&apply("r-1", 2, "f-1", pause_step(), 30_000, 30_000))
        .await;
    assert_eq!(r.code(), CODE_STALE_EPOCH, "{:?}", r.body);
    let r = agent.revert("r-1", 3, "f-1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(wait_paused(pid, false, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn another_runs_apply_on_a_held_target_is_refused_naming_the_holder() {
    let site = Site::new().await;
    let agent = site.agent().await;
    let a = agent
        .apply(&apply("r-owner", 1, "f-1", pause_step(), 30_000, 30_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let b = agent
        .apply(&apply("r-other", 1, "f-2", pause_step(), 30_000, 30_000))
        .await;
    assert_eq!((b.status, b.code()), (409, CODE_HELD), "{:?}", b.body);
    assert_eq!(b.body["holder"], "r-owner");
    assert!(b.message().contains("r-owner"), "{}", b.message());
    // Nor may it revert the holder's fault.
    let r = agent.revert("r-other", 5, "f-1").await;
    assert_eq!(r.code(), CODE_HELD, "{:?}", r.body);
    let text = agent.metrics().await;
    assert!(
        metric(&text, "chaosbot_agent_refusals_total{code=\"held\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_proxy_is_up_from_the_start_and_carries_the_toxic_until_reverted() {
    let site = Site::new().await;
    let agent = site.agent().await;
    // Listening before any controller asked.
    let base = site.proxy_round_trip().await;
    assert!(base < Duration::from_millis(250), "{base:?}");
    let a = agent
        .apply(&apply("r-1", 1, "f-net", latency_step(300), 30_000, 30_000))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(
        a.body["summary"].as_str().unwrap_or("").contains("api"),
        "{:?}",
        a.body
    );
    let slow = site.proxy_round_trip().await;
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    agent.revert("r-1", 1, "f-net").await;
    let fast = site.proxy_round_trip().await;
    assert!(fast < Duration::from_millis(250), "{fast:?}");

    let load = chaosbot::spec::model::FaultStep {
        fault: chaosbot::spec::model::FaultSpec::Load {
            url: format!("http://{}/", site.proxy),
            tls: Box::default(),
            method: "GET".into(),
            headers: Default::default(),
            endpoint_headers: Default::default(),
            body: None,
            schedule: chaosbot::load::Schedule::Constant { rate: 1.0 },
            connections: 1,
            timeout: Duration::from_secs(1),
            thresholds: vec![],
        },
        ..latency_step(1)
    };
    let r = agent
        .apply(&apply("r-1", 1, "f-load", load, 1_000, 1_000))
        .await;
    assert_eq!(r.code(), CODE_BAD_REQUEST, "{:?}", r.body);
    assert!(
        r.message().contains("load steps run on the controller"),
        "{}",
        r.message()
    );
    // On an endpoint the agent declares, load goes only where the agent's config says.
    let elsewhere = chaosbot::spec::model::FaultStep {
        target: "api-http".into(),
        fault: chaosbot::spec::model::FaultSpec::Load {
            url: format!("http://{}/", site.echo),
            tls: Box::default(),
            method: "GET".into(),
            headers: Default::default(),
            endpoint_headers: Default::default(),
            body: None,
            schedule: chaosbot::load::Schedule::Constant { rate: 1.0 },
            connections: 1,
            timeout: Duration::from_secs(1),
            thresholds: vec![],
        },
        ..latency_step(1)
    };
    let r = agent
        .apply(&apply("r-1", 1, "f-load-2", elsewhere, 1_000, 1_000))
        .await;
    assert_eq!(r.code(), CODE_FORBIDDEN, "{:?}", r.body);
    assert!(
        r.message().contains("outside endpoint `api-http`"),
        "{}",
        r.message()
    );
}
