//! `chaosbot run FILE`: one experiment in the foreground.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_REVERT_FAILED, GlobalArgs, load_config, open_store};
use crate::app::{App, Refusal};
use crate::config::Config;
use crate::engine::{Engine, EngineOptions, SubmitRequest};
use crate::faults::TargetRegistry;
use crate::report;
use crate::spec::model::Experiment;
use crate::store::{AbortScope, DynStore, RunRecord};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment YAML file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Override a declared parameter within its bounds, e.g. --set latency=300ms (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Write the run record, its summary and its whole journal as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Replay the random decisions of an earlier run (its seed is in `chaosbot show`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Who is running it, for the journal (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// When another run holds one of the targets, wait up to this long for it (e.g. 5m)
    /// instead of refusing.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> u8 {
    let cfg = match load_config(global) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut overrides = Vec::new();
    for s in &args.set {
        match crate::spec::parse_override(s) {
            Ok(kv) => overrides.push(kv),
            Err(e) => {
                eprintln!("error: --set {s}: {e}");
                return EXIT_INVALID;
            }
        }
    }
    let exp = match crate::spec::load_experiment(&args.file, &cfg, &overrides) {
        Ok(e) => e,
        Err(errors) => {
            eprintln!("{errors}\n\nnothing was run; fix the problems above and try again.");
            return EXIT_INVALID;
        }
    };
    let store = match open_store(&cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let targets = TargetRegistry::new(Arc::new(cfg.clone()));
    let agents = match crate::engine::agents::for_binary(&Arc::new(cfg.clone())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let outcome = run_in_foreground(
        &cfg,
        store,
        targets,
        &exp,
        SubmitRequest {
            requested_by: args.by.unwrap_or_else(current_user),
            source: crate::run::RunSource::Terminal,
            seed: args.seed,
        },
        (args.json.as_deref(), args.wait),
        agents,
    )
    .await;
    match outcome {
        // A fault left in place outranks the verdict: a pipeline must not go on as if all was
        // well while something is still broken.
        Ok(run) if run.rollback == Some(crate::run::RollbackOutcome::RevertFailed) => {
            EXIT_REVERT_FAILED
        }
        Ok(run) => run
            .verdict
            .map(|v| v.exit_code() as u8)
            .unwrap_or(EXIT_FAILED),
        Err(code) => code,
    }
}

pub(crate) fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

/// Submits, shows the live view, handles Ctrl-C and SIGTERM, prints the report.
pub(crate) async fn run_in_foreground(
    cfg: &Config,
    store: DynStore,
    targets: TargetRegistry,
    exp: &Experiment,
    req: SubmitRequest,
    (json, wait): (Option<&std::path::Path>, Option<Duration>),
    agents: Option<Arc<crate::engine::agents::AgentRouter>>,
) -> Result<RunRecord, u8> {
    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.guard_rails.worker_pool_size = 1;
    opts.only_own_runs = true;
    opts.agents = agents;
    let engine = Engine::new(store.clone(), targets, opts);
    match engine.start().await {
        Ok(recovered) => {
            for id in recovered {
                println!(
                    "recovered run {id} left in flight by a process that died (see `chaosbot show {id}`)"
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_FAILED);
        }
    }
    let events = engine.subscribe();
    let app = App::new(
        engine.clone(),
        store.clone(),
        Arc::new(cfg.clone()),
        crate::clock::system(),
    );
    // One run per target: without --wait, a held target is a refusal naming the holder.
    let free = match wait {
        Some(_) => Ok(()),
        None => app.check_targets_free(exp).await,
    };
    let launched = match free {
        Ok(()) => {
            app.launch(exp, &req.requested_by, req.source, req.seed)
                .await
        }
        Err(refusal) => Err(refusal),
    };
    let id = match launched {
        Ok(id) => id,
        Err(refusal) => {
            let code = match &refusal {
                // The halt `abort all` put in force: refused by the store, nothing was created.
                Refusal::Halted(h) => {
                    eprintln!(
                        "a halt is in force (by {}: {}); nothing was run. `chaosbot resume` lifts it.",
                        h.halted_by, h.reason
                    );
                    EXIT_FAILED
                }
                Refusal::TargetHeld(holds) => {
                    eprintln!("{refusal}.");
                    for h in holds {
                        eprintln!(
                            "  wait for it: add `--wait 10m` to this command (the run waits in the queue behind {id})\n  or abort it: chaosbot abort {id} --reason \"...\"  (`chaosbot show {id}` shows how it goes)",
                            id = h.run_id
                        );
                    }
                    EXIT_FAILED
                }
                e => {
                    eprintln!("error: {e}");
                    EXIT_INVALID
                }
            };
            engine
                .shutdown("submission failed", Duration::from_secs(5))
                .await;
            return Err(code);
        }
    };
    println!(
        "run {id}: {} — {} (targets: {})",
        exp.name,
        exp.title,
        exp.targets().join(", ")
    );
    let method_ms = u64::try_from(exp.method_duration().as_millis()).unwrap_or(u64::MAX);
    let view = tokio::spawn(report::live::follow(events, id.clone(), method_ms));
    if let Some(limit) = wait {
        tokio::spawn(wait_in_queue(app.clone(), id.clone(), limit));
    }

    let finished = wait_with_signals(&engine, &id).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), view).await;
    engine
        .shutdown("the run finished", Duration::from_secs(30))
        .await;
    let run = match finished {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_FAILED);
        }
    };
    print_report(&store, &run, json).await?;
    Ok(run)
}

/// `--wait`: says what the run waits behind while it is queued, and closes it as failed if it
/// is still queued after `limit`.
async fn wait_in_queue(app: App, id: String, limit: Duration) {
    let started = tokio::time::Instant::now();
    let mut shown: Vec<String> = Vec::new();
    loop {
        let queued = matches!(
            app.store.get_run(&id).await,
            Ok(Some(r)) if r.state == crate::run::RunState::Queued
        );
        if !queued {
            return;
        }
        if let Ok(place) = app.queue_place(&id).await {
            for h in place.holders {
                let line = format!(
                    "waiting: `{}` is held by run {} (started by {} from {}); {} run(s) ahead in the queue",
                    h.target,
                    h.run_id,
                    h.requested_by,
                    h.source.describe(),
                    place.ahead
                );
                if !shown.contains(&line) {
                    println!("{line}");
                    shown.push(line);
                }
            }
        }
        if started.elapsed() >= limit {
            let reason = format!(
                "waited {} for its targets (--wait) and they were still held; nothing was started",
                humantime::format_duration(limit)
            );
            match app.store.fail_queued(&id, &reason).await {
                Ok(_) => {}
                Err(e) => eprintln!("error: cannot close run {id} after --wait ran out: {e}"),
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_with_signals(engine: &Arc<Engine>, id: &str) -> anyhow::Result<RunRecord> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let wait = engine.wait(id);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            r = &mut wait => return Ok(r?),
            _ = int.recv() => {
                eprintln!("\ninterrupted: aborting run {id}, removing faults and verifying…");
                engine.abort(AbortScope::Run(id.to_string()), &current_user(), "interrupted with Ctrl-C").await?;
            }
            _ = term.recv() => {
                eprintln!("\nSIGTERM: aborting run {id}, removing faults and verifying…");
                engine.abort(AbortScope::Run(id.to_string()), "chaosbot", "chaosbot received SIGTERM").await?;
            }
        }
    }
}

pub(crate) async fn print_report(
    store: &DynStore,
    run: &RunRecord,
    json: Option<&std::path::Path>,
) -> Result<(), u8> {
    let journal = store.journal(&run.id, 0).await.map_err(|e| {
        eprintln!("error: cannot read the journal of {}: {e}", run.id);
        EXIT_FAILED
    })?;
    let summary = report::summarize(run, &journal);
    println!("\n{}", report::render_text(&summary));
    if let Some(path) = json {
        let doc = serde_json::json!({ "run": run, "summary": summary, "journal": journal });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return Err(EXIT_FAILED);
        }
        println!("journal written to {}", path.display());
    }
    Ok(())
}
