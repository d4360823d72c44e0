//! The control plane restarts mid-run (kill -9 of a `chaosbot run` holding a proxy target, then
//! a new `chaosbot run` that recovers it) while a client sends ~50 req/s through the agent's
//! proxy: the proxy lives in the agent, so not one request fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::fixture::{SiteOptions, experiment_yaml, fresh_client, timed_get};

/// Sends GETs to `url` at `rate` per second (each on a new connection) until `stop`; counts
/// answers and failures, keeping the first few failure messages.
pub struct Traffic {
    pub sent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(url: String, rate: u32, limit: Duration) -> Traffic {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, e, st) = (sent.clone(), failed.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = fresh_client(Duration::from_secs(2));
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let start = Instant::now();
            let mut inflight = tokio::task::JoinSet::new();
            while !st.load(Ordering::SeqCst) && start.elapsed() < limit {
                tick.tick().await;
                let (client, url, s, f, e) =
                    (client.clone(), url.clone(), s.clone(), f.clone(), e.clone());
                inflight.spawn(async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    if let Err(why) = timed_get(&client, &url).await {
                        f.fetch_add(1, Ordering::SeqCst);
                        let mut e = e.lock().unwrap_or_else(|p| p.into_inner());
                        if e.len() < 5 {
                            e.push(why);
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Traffic {
            sent,
            failed,
            errors,
            stop,
            task,
        }
    }

    /// Stops and waits for the requests in flight: (sent, failed, first errors).
    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

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
