//! The shipped example experiments: they validate against the example config, and run to the
//! verdict each one promises against a real local service behind the real proxy.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chaosbot::config::Config;
use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::{RollbackOutcome, Verdict};
use support::*;

#[test]
fn every_example_validates_against_the_example_config() {
    let cfg = Config::from_file(Path::new("chaosbot.example.toml")).unwrap();
    cfg.validate().unwrap();
    let catalog = chaosbot::spec::load_catalog(Path::new("experiments"), &cfg);
    // Every one, the demo's too: the README tells a new user to copy this config and run
    // `chaosbot validate experiments/*.yaml`.
    let problems: Vec<String> = catalog.problems.iter().map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(catalog.entries.len() >= 4);
}

async fn run_example(file: &str, overrides: &[(&str, &str)]) -> chaosbot::store::RunRecord {
    let dir = tempfile::tempdir().unwrap();
    let svc = service().await;
    let listen = free_port();
    let cfg = config(listen, svc.addr);
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let exp = chaosbot::spec::load_experiment(Path::new(file), &cfg, &overrides)
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = Arc::new(cfg);
    let store = sqlite_store(dir.path()).await;
    let targets = TargetRegistry::new(cfg.clone());
    let engine = Engine::new(
        store,
        targets.clone(),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    engine.start().await.unwrap();
    let id = engine
        .submit(
            &exp,
            SubmitRequest {
                requested_by: "tests".into(),
                source: "test".into(),
                seed: Some(1),
            },
        )
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(60), engine.wait(&id))
        .await
        .expect("the run finishes")
        .unwrap();
    let proxy = targets.proxy("api").await.unwrap();
    assert!(
        proxy.toxics().is_empty(),
        "{file}: toxics left {:?}",
        proxy.toxics()
    );
    engine.shutdown("test over", Duration::from_secs(5)).await;
    run
}

#[tokio::test]
async fn api_latency_holds() {
    let run = run_example("experiments/api-latency.yaml", &[("duration", "2s")]).await;
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
}

#[tokio::test]
async fn api_blackhole_is_halted_by_its_stop_condition() {
    let run = run_example("experiments/api-blackhole.yaml", &[("duration", "30s")]).await;
    assert_eq!(run.verdict, Some(Verdict::Aborted), "{:?}", run.reason);
    assert!(run.reason.as_deref().unwrap().contains("stop condition"));
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
}

#[tokio::test]
async fn api_outage_deviates_and_recovers() {
    let run = run_example("experiments/api-outage.yaml", &[("duration", "2s")]).await;
    assert_eq!(run.verdict, Some(Verdict::Deviated), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
}

#[tokio::test]
async fn api_degraded_network_holds() {
    let run = run_example(
        "experiments/api-degraded-network.yaml",
        &[("duration", "2s")],
    )
    .await;
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
}

/// The README's second step, as a new user types it after copying the example config.
#[test]
fn the_readme_validate_command_passes_on_the_examples() {
    let mut files: Vec<String> = Vec::new();
    for dir in ["experiments", "experiments/gamedays"] {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| p.display().to_string())
            .collect();
        found.sort();
        files.extend(found);
    }
    let db = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaosbot"))
        .arg("--config")
        .arg("chaosbot.example.toml")
        .arg("--database-url")
        .arg(format!("sqlite://{}/v.db", db.path().display()))
        .arg("validate")
        .args(&files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(": ok").count(), files.len(), "{text}");
}
