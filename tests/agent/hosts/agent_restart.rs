//! kill -9 of the agent mid-fault leaves the faults in place (nothing else can revert them);
//! started again on the same state directory, the agent replays its revert journal before it
//! answers: the paused process runs again and the fill file is gone.

use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{FaultState, Renew};

use super::fixture::{SiteOptions, experiment_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_fault_replays_its_journal_at_start() {
    let mut site = crate::site_or_skip!(SiteOptions::default());
    let exp = site.experiment(
        "remote-pause-fill",
        &experiment_yaml(
            "remote-pause-fill",
            r#"  - parallel:
      - {name: freeze-worker, target: worker, fault: pause, duration: 2m}
      - {name: fill-scratch, target: scratch, fault: disk, mib: 8, duration: 2m}
"#,
        ),
    );
    let controller = site.start_run(&exp);
    assert_eq!(
        site.wait_faults(2, Duration::from_secs(30)).await,
        2,
        "controller log:\n{}\nagent log:\n{}",
        controller.log(),
        site.agent_log()
    );
    let faults = site.api.faults().await.expect("fault list").faults;
    assert!(site.worker_paused());
    assert_eq!(site.scratch_files().len(), 1);

    let mut agent = site.agent.take().expect("the agent runs");
    let first_log = agent.log();
    agent.kill9();
    // Dead agent: the faults stay (this is what the journal is for).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(site.worker_paused(), "still paused with the agent dead");
    assert_eq!(
        site.scratch_files().len(),
        1,
        "the fill file is still there"
    );

    let restarted = Instant::now();
    site.start_agent().await;
    let answered = restarted.elapsed();
    // The replay happens before the agent serves: by the first answer nothing is left.
    let mut clean = None;
    while restarted.elapsed() < Duration::from_secs(5) {
        if !site.worker_paused() && site.scratch_files().is_empty() {
            clean = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("agent restarted: answered after {answered:?}, nothing left after {clean:?}");
    assert!(
        clean.is_some(),
        "after the restart: paused {}, files {:?}\nfirst agent log:\n{first_log}\nsecond agent log:\n{}",
        site.worker_paused(),
        site.scratch_files(),
        site.agent_log()
    );
    let now_held = site.api.faults().await.expect("fault list").faults;
    assert!(now_held.is_empty(), "nothing held: {now_held:?}");
    // A controller renewing the old leases learns they are gone, not held.
    let answer = site
        .api
        .renew(&Renew {
            run_id: faults[0].run_id.clone(),
            epoch: faults[0].epoch,
            fault_ids: faults.iter().map(|f| f.fault_id.clone()).collect(),
            lease_ms: 3_000,
        })
        .await
        .expect("renew answers");
    for f in &answer.faults {
        assert!(
            !matches!(f.state, FaultState::Held { .. }),
            "{} still held after the replay: {:?}",
            f.fault_id,
            f.state
        );
    }
    drop(controller);
}
