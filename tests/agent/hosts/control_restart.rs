//! The control plane restarts mid-run (kill -9 of a `chaosbot run` holding a proxy target, then
//! a new `chaosbot run` that recovers it) while a client sends ~50 req/s through the agent's
//! proxy: the proxy lives in the agent, so not one request fails.

use std::time::{Duration, Instant};

use super::fixture::{SiteOptions, experiment_yaml};
use super::traffic::Traffic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_fails_no_request_through_the_agents_proxy() {
    let site = crate::site_or_skip!(SiteOptions::default());
    let long = site.experiment(
        "remote-latency-long",
        &experiment_yaml(
            "remote-latency-long",
            "  - {name: slow-api, target: api, fault: latency, direction: downstream, latency: 5ms, duration: 2m}\n",
        ),
    );
    let short = site.experiment(
        "remote-latency-short",
        &experiment_yaml(
            "remote-latency-short",
            "  - {name: slow-api, target: api, fault: latency, direction: downstream, latency: 5ms, duration: 2s}\n",
        ),
    );
    let mut first = site.start_run(&long);
    assert_eq!(
        site.wait_faults(1, Duration::from_secs(30)).await,
        1,
        "controller log:\n{}\nagent log:\n{}",
        first.log(),
        site.agent_log()
    );
    let run_id = site.api.faults().await.expect("fault list").faults[0]
        .run_id
        .clone();

    let started = Instant::now();
    let traffic = Traffic::start(site.proxy_url(), 50, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.signal(libc::SIGKILL);
    assert_eq!(first.wait_exit(Duration::from_secs(5)), Ok(None));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The next controller recovers the killed run, then runs its own experiment.
    let mut second = site.start_run(&short);
    let code = second.wait_exit(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failed, errors) = traffic.finish().await;
    let took = started.elapsed();
    eprintln!("control plane restart: {sent} requests in {took:?}, {failed} failed {errors:?}");
    assert_eq!(code, Ok(Some(0)), "the second run holds:\n{}", second.log());
    assert!(
        second.log().contains(&format!("recovered run {run_id}")),
        "the second controller recovered the killed run:\n{}",
        second.log()
    );
    // ~50 req/s for the whole window (at least 2 s of it: kill, restart, a 2 s step).
    assert!(sent >= 100, "only {sent} requests in {took:?}");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(
        site.api
            .faults()
            .await
            .expect("fault list")
            .faults
            .is_empty(),
        "nothing left on the agent"
    );
}
