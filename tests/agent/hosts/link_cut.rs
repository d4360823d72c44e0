//! The link to the agent's host is cut (veth down) mid-fault: the agent, no longer renewed,
//! reverts by itself within TTL + 1 s; when the link is back, the controller's journal says the
//! agent was lost and came back, naming the step the agent reverted.

use std::time::{Duration, Instant};

use super::fixture::{AGENT_NAME, SiteOptions, experiment_yaml};

const TTL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_mid_fault_the_agent_reverts_and_the_journal_says_so() {
    let site = crate::site_or_skip!(SiteOptions::default());
    let exp = site.experiment(
        "remote-pause",
        &experiment_yaml(
            "remote-pause",
            "  - {name: freeze-worker, target: worker, fault: pause, duration: 12s}\n",
        ),
    );
    let mut controller = site.start_run(&exp);
    assert_eq!(
        site.wait_faults(1, Duration::from_secs(30)).await,
        1,
        "controller log:\n{}\nagent log:\n{}",
        controller.log(),
        site.agent_log()
    );
    let run_id = site.api.faults().await.expect("fault list").faults[0]
        .run_id
        .clone();
    assert!(site.worker_paused());

    site.host.link_down();
    let cut = Instant::now();
    let mut resumed = None;
    while cut.elapsed() < TTL * 2 {
        if !site.worker_paused() {
            resumed = Some(cut.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("link cut: the worker ran again after {resumed:?}");
    let resumed = resumed.expect("the agent reverted on its own");
    assert!(
        resumed <= TTL + Duration::from_secs(1),
        "reverted {resumed:?} after the cut, later than TTL + 1 s"
    );
    // Let the controller notice the loss (its renewals fail) before the link returns.
    tokio::time::sleep(Duration::from_secs(1)).await;
    site.host.link_up();

    let code = controller.wait_exit(Duration::from_secs(60));
    assert!(code.is_ok(), "the run ends: {code:?}\n{}", controller.log());
    let doc = site.show_json(&run_id);
    let journal = doc["journal"].as_array().cloned().unwrap_or_default();
    let of_type = |t: &str| -> Vec<serde_json::Value> {
        journal
            .iter()
            .filter(|e| e["event"]["type"] == t)
            .map(|e| e["event"].clone())
            .collect()
    };
    let pretty = serde_json::to_string_pretty(&journal).unwrap_or_default();
    let lost = of_type("agent_lost");
    assert!(
        lost.iter().any(|e| e["agent"] == AGENT_NAME),
        "an agent_lost event naming {AGENT_NAME}: {pretty}"
    );
    let back = of_type("agent_back");
    let reverted_step = back.iter().any(|e| {
        e["agent"] == AGENT_NAME
            && e["reverted"].as_array().is_some_and(|r| {
                r.iter().any(|f| {
                    f["step"] == "freeze-worker"
                        && f["reason"].as_str().is_some_and(|w| w.contains("lease"))
                })
            })
    });
    assert!(
        reverted_step,
        "an agent_back event naming the step the agent reverted (lease expired): {pretty}"
    );
    // Lost before back.
    let seq = |t: &str| {
        journal
            .iter()
            .find(|e| e["event"]["type"] == t)
            .and_then(|e| e["seq"].as_i64())
    };
    assert!(seq("agent_lost") < seq("agent_back"), "{pretty}");
}
