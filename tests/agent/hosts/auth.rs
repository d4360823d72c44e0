//! Over the netns link with TLS: calls without credentials or with a wrong secret are refused
//! (401) and touch nothing; a stale lease epoch can neither renew nor revert a fault held under
//! a newer one; an agent on a non-loopback address will not start without TLS and a secret.

use std::process::Command;
use std::time::Duration;

use chaosbot::agent::protocol::{Apply, FaultState, Renew, Revert};
use chaosbot::spec::model::{FaultSpec, FaultStep, ProcessAction};

use super::fixture::{BIN, Site, SiteOptions};

fn pause_worker(run_id: &str, epoch: u64, fault_id: &str) -> Apply {
    Apply {
        run_id: run_id.to_string(),
        epoch,
        fault_id: fault_id.to_string(),
        step: FaultStep {
            name: "freeze-worker".into(),
            target: "worker".into(),
            duration: Duration::from_secs(30),
            fault: FaultSpec::Process {
                action: ProcessAction::Pause,
            },
        },
        seed: 7,
        ttl_ms: 30_000,
        lease_ms: 10_000,
        declare: None,
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_and_touch_nothing() {
    let site: Site = crate::site_or_skip!(SiteOptions::default());
    let anonymous = site.api.with_secret(None);
    let wrong = site.api.with_secret(Some("not-the-secret"));
    for (who, api) in [("no credentials", &anonymous), ("a wrong secret", &wrong)] {
        let hello = api.hello().await.expect_err("hello refused");
        assert_eq!(hello.status, 401, "{who}: {hello:?}");
        assert_eq!(hello.code(), "unauthenticated", "{who}: {hello:?}");
        let apply = api
            .apply(&pause_worker("r-intruder", 1, "f-intruder"))
            .await
            .expect_err("apply refused");
        assert_eq!(apply.status, 401, "{who}: {apply:?}");
        let list = api.faults().await.expect_err("fault list refused");
        assert_eq!(list.status, 401, "{who}: {list:?}");
    }
    assert!(!site.worker_paused(), "a refused apply paused nothing");
    assert!(
        site.api
            .faults()
            .await
            .expect("fault list")
            .faults
            .is_empty()
    );
}

#[tokio::test]
async fn a_stale_epoch_can_neither_renew_nor_revert() {
    let site: Site = crate::site_or_skip!(SiteOptions::default());
    let run = "r-epochs";
    site.api
        .apply(&pause_worker(run, 2, "f-epochs"))
        .await
        .expect("apply under epoch 2");
    assert!(site.worker_paused());

    let renew = |epoch| Renew {
        run_id: run.into(),
        epoch,
        fault_ids: vec!["f-epochs".into()],
        lease_ms: 10_000,
    };
    let stale = site.api.renew(&renew(1)).await.expect_err("stale renew");
    assert_eq!(
        (stale.status, stale.code()),
        (409, "stale_epoch"),
        "{stale:?}"
    );
    let stale = site
        .api
        .revert(
            "f-epochs",
            &Revert {
                run_id: run.into(),
                epoch: 1,
            },
        )
        .await
        .expect_err("stale revert");
    assert_eq!(
        (stale.status, stale.code()),
        (409, "stale_epoch"),
        "{stale:?}"
    );
    assert!(site.worker_paused(), "a stale revert reverted nothing");

    let held = site
        .api
        .renew(&renew(2))
        .await
        .expect("renew under epoch 2");
    assert!(
        matches!(held.faults[..], [ref f] if matches!(f.state, FaultState::Held { .. })),
        "{held:?}"
    );
    let reverted = site
        .api
        .revert(
            "f-epochs",
            &Revert {
                run_id: run.into(),
                epoch: 2,
            },
        )
        .await
        .expect("revert under epoch 2");
    assert_eq!(reverted.earlier, None, "this request reverted it");
    assert!(!site.worker_paused(), "the worker runs again");
}

#[tokio::test]
async fn a_non_loopback_agent_refuses_to_start_without_tls_or_secret() {
    let site = match Site::new(SiteOptions::default()) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let full = std::fs::read_to_string(&site.agent_config).expect("agent.toml");
    let tls_block = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        site.tls.cert.display(),
        site.tls.key.display()
    );
    let secret_line = format!("secret_file = \"{}\"\n", site.tls.secret_file.display());
    assert!(full.contains(&tls_block) && full.contains(&secret_line));
    for (missing, text) in [
        ("tls", full.replace(&tls_block, "")),
        ("secret", full.replace(&secret_line, "")),
    ] {
        let path = site.dir.path().join(format!("agent-no-{missing}.toml"));
        std::fs::write(&path, text).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--config")
            .arg(&path)
            .env_remove("CHAOSBOT_AGENT_SECRET");
        let mut agent = site.host.spawn(&cmd).expect("spawn agent");
        let code = agent.wait_exit(Duration::from_secs(10));
        assert!(
            matches!(code, Ok(Some(c)) if c != 0),
            "without {missing}: {code:?}\n{}",
            agent.log()
        );
        assert!(
            agent.log().to_lowercase().contains(missing),
            "the refusal names what is missing ({missing}):\n{}",
            agent.log()
        );
    }
}
