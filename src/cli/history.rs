//! `chaosbot history` and `show` read runs from the store; `abort` and `resume` steer them
//! through the application layer.

use clap::Args;

use std::sync::Arc;

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, config_and_store};
use crate::app::{AbortAllOutcome, AbortedOne, App, Caller, HaltPut, Refusal};
use crate::engine::{Engine, EngineOptions};
use crate::faults::TargetRegistry;
use crate::report;
use crate::store::RunFilter;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only runs of this experiment.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run id (from `chaosbot history`).
    pub run: String,
    /// Print the run, its summary and its journal as JSON instead.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// A run id, or `all` for every queued and running run.
    pub run: String,
    /// Why, for the journal.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who is asking (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

pub async fn history(global: &GlobalArgs, args: HistoryArgs) -> u8 {
    let (_, store) = match config_and_store(global).await {
        Ok(both) => both,
        Err(code) => return code,
    };
    let runs = match store
        .list_runs(RunFilter {
            experiment: args.experiment,
            limit: args.limit,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if runs.is_empty() {
        println!("no runs yet — try `chaosbot demo`");
        return 0;
    }
    println!(
        "{:<13} {:<24} {:<10} {:<18} {:<19} {:>8}  by",
        "RUN", "EXPERIMENT", "VERDICT", "ROLLBACK", "STARTED", "SECONDS"
    );
    for r in runs {
        let secs = r
            .finished_ms
            .map(|f| format!("{:.1}", (f - r.created_ms) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:<24} {:<10} {:<18} {:<19} {:>8}  {}",
            r.id,
            r.experiment,
            r.verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| r.state.to_string()),
            r.rollback
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            fmt_time(r.created_ms),
            secs,
            r.requested_by
        );
    }
    0
}

pub async fn show(global: &GlobalArgs, args: ShowArgs) -> u8 {
    let (cfg, store) = match config_and_store(global).await {
        Ok(both) => both,
        Err(code) => return code,
    };
    let run = match store.get_run(&args.run).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!(
                "error: no run `{}` in {}; `chaosbot history` lists the runs",
                args.run,
                cfg.database_url()
            );
            return EXIT_INVALID;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let journal = match store.journal(&run.id, 0).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let summary = report::summarize(&run, &journal);
    if args.json {
        let doc = serde_json::json!({ "run": run, "summary": summary, "journal": journal });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{}", report::render_text(&summary));
    }
    0
}

pub async fn abort(global: &GlobalArgs, args: AbortArgs) -> u8 {
    let app = match terminal_app(global).await {
        Ok(app) => app,
        Err(code) => return code,
    };
    let by = Caller::Terminal(args.by.unwrap_or_else(super::run::current_user));
    if args.run == "all" {
        // The big red button halts starts too, as it does from Slack: nothing new begins
        // until someone lifts the halt on purpose.
        let reason = if args.reason.is_empty() {
            "abort all from the command line"
        } else {
            args.reason.as_str()
        };
        return match app.abort_all(&by, reason).await {
            Ok(AbortAllOutcome { halt, aborted }) => {
                match halt {
                    HaltPut::New(h) | HaltPut::Already(h) => println!(
                        "halt in force since {} (by {}: {}): no run starts — `chaosbot run`, Slack, schedules, game days — until `chaosbot resume` or `/chaos resume`",
                        fmt_time(h.since_ms),
                        h.halted_by,
                        h.reason
                    ),
                    HaltPut::Failed(e) => eprintln!(
                        "error: cannot put the halt in force ({e}); runs are aborted anyway"
                    ),
                }
                for id in &aborted.cancelled_queued {
                    println!("{id}: was queued; closed as aborted");
                }
                for id in &aborted.signalled_running {
                    println!("{id}: abort requested; its worker is reverting it");
                }
                if aborted.cancelled_queued.is_empty() && aborted.signalled_running.is_empty() {
                    println!("nothing to abort: no matching run is queued or running");
                }
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        };
    }
    let id = &args.run;
    match app.abort(&by, id, &args.reason).await {
        Ok(AbortedOne::CancelledQueued) => {
            println!("{id}: was queued; closed as aborted");
            0
        }
        Ok(AbortedOne::Reverting) => {
            println!("{id}: abort requested; its worker is reverting it");
            0
        }
        Err(Refusal::AlreadyFinished { .. } | Refusal::FinishedBeforeAbort(_)) => {
            println!("nothing to abort: no matching run is queued or running");
            0
        }
        Err(Refusal::NoSuchRun(id)) => {
            eprintln!("error: no run `{id}`; `chaosbot history` lists the runs");
            EXIT_INVALID
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// The application layer for one command: an engine that is not started, so it only records
/// aborts and halts in the store; the process that executes the runs acts on them.
async fn terminal_app(global: &GlobalArgs) -> Result<App, u8> {
    let (cfg, store) = config_and_store(global).await?;
    let cfg = Arc::new(cfg);
    let engine = Engine::new(
        store.clone(),
        TargetRegistry::new(cfg.clone()),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    Ok(App::new(engine, store, cfg, crate::clock::system()))
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Who lifts the halt (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

/// Lifts the halt `abort all` put in force.
pub async fn resume(global: &GlobalArgs, args: ResumeArgs) -> u8 {
    let app = match terminal_app(global).await {
        Ok(app) => app,
        Err(code) => return code,
    };
    let by = Caller::Terminal(args.by.unwrap_or_else(super::run::current_user));
    match app.resume(&by).await {
        Ok(Some(h)) => {
            println!(
                "halt lifted (it was in force since {}, by {}: {}); runs may start again",
                fmt_time(h.since_ms),
                h.halted_by,
                h.reason
            );
            0
        }
        Ok(None) => {
            println!("no halt is in force; nothing to lift");
            0
        }
        Err(Refusal::Store { source: e, .. }) => {
            eprintln!("error: cannot lift the halt ({e}); try again");
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}
