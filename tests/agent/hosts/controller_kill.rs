//! kill -9 of the controller mid-run: the agent on the other host reverts every fault by itself
//! when the lease lapses (TTL 3 s) — the paused process runs again, the fill file is gone, the
//! proxy answers fast again — within TTL + 1 s of the kill, with nothing restarted.

use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{FaultState, Renew};

use super::fixture::{SiteOptions, experiment_yaml, fresh_client, timed_get};

const LATENCY: Duration = Duration::from_millis(1500);
/// A request faster than this went through no latency toxic.
const FAST: Duration = Duration::from_millis(400);
const TTL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_run_the_agent_reverts_everything_within_the_lease() {
    let mut site = crate::site_or_skip!(SiteOptions::default());
    let exp = site.experiment(
        "remote-all",
        &experiment_yaml(
            "remote-all",
            r#"  - parallel:
      - {name: freeze-worker, target: worker, fault: pause, duration: 2m}
      - {name: fill-scratch, target: scratch, fault: disk, mib: 8, duration: 2m}
      - {name: slow-api, target: api, fault: latency, direction: downstream, latency: 1500ms, duration: 2m}
"#,
        ),
    );
    let mut controller = site.start_run(&exp);
    let held = site.wait_faults(3, Duration::from_secs(30)).await;
    assert_eq!(
        held,
        3,
        "the agent holds the run's three faults; controller log:\n{}\nagent log:\n{}",
        controller.log(),
        site.agent_log()
    );
    let faults = site.api.faults().await.expect("fault list").faults;

    // Every effect is in place before the kill.
    assert!(site.worker_paused(), "the worker is stopped");
    assert_eq!(site.scratch_files().len(), 1, "one fill file");
    let client = fresh_client(Duration::from_secs(5));
    let slow = timed_get(&client, &site.proxy_url())
        .await
        .expect("a request through the proxy");
    assert!(slow >= LATENCY - Duration::from_millis(100), "{slow:?}");
    let agent_pid = site.agent_pid();

    controller.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert_eq!(controller.wait_exit(Duration::from_secs(5)), Ok(None));

    // The latency check waits on requests: its own task, so it delays no other check.
    let url = site.proxy_url();
    let latency_gone = tokio::spawn(async move {
        let quick = fresh_client(FAST);
        while killed.elapsed() < TTL * 2 {
            if let Ok(took) = timed_get(&quick, &url).await
                && took < FAST
            {
                return Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    let (mut resumed, mut emptied) = (None, None);
    while killed.elapsed() < TTL * 2 && (resumed.is_none() || emptied.is_none()) {
        if resumed.is_none() && !site.worker_paused() {
            resumed = Some(killed.elapsed());
        }
        if emptied.is_none() && site.scratch_files().is_empty() {
            emptied = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fast = latency_gone.await.expect("latency check task");
    eprintln!("after the kill: resumed {resumed:?}, fill gone {emptied:?}, latency gone {fast:?}");
    let bound = TTL + Duration::from_secs(1);
    for (what, at) in [
        ("the paused worker runs again", resumed),
        ("the fill file is gone", emptied),
        ("the proxy answers without latency", fast),
    ] {
        let at = at.unwrap_or_else(|| panic!("{what}: not within {:?}", TTL * 2));
        assert!(at <= bound, "{what} after {at:?}, later than TTL + 1 s");
    }
    // The lease lapsed while nothing else ran: the same agent process did it, no restart.
    assert_eq!(site.agent_pid(), agent_pid);
    assert!(
        site.agent.as_mut().is_some_and(|a| a.running()),
        "the agent still runs"
    );
    assert!(
        site.api
            .faults()
            .await
            .expect("fault list")
            .faults
            .is_empty(),
        "the agent holds nothing"
    );
    // The agent says why: the lease expired (asked under the run's own epoch).
    let first = &faults[0];
    let answer = site
        .api
        .renew(&Renew {
            run_id: first.run_id.clone(),
            epoch: first.epoch,
            fault_ids: faults.iter().map(|f| f.fault_id.clone()).collect(),
            lease_ms: 3_000,
        })
        .await
        .expect("renew answers");
    for f in answer.faults {
        match f.state {
            FaultState::Gone { reason, .. } => {
                assert!(reason.contains("lease"), "{}: {reason}", f.fault_id)
            }
            other => panic!("{} is {other:?}, not gone", f.fault_id),
        }
    }
}
