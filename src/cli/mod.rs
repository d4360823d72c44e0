//! The command line: `run`, `validate`, `demo`, `history`, `show`, `abort`, `report`, `serve`,
//! `agent`.
//!
//! Exit codes: 0 held (or success), 1 deviated, 2 aborted or failed (or the tool could not do
//! its job, e.g. the database is unreachable), 64 invalid input (bad file, flag or config).

mod agent;
mod agents;
mod demo;
mod history;
mod import;
mod page_link;
mod report;
mod run;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

pub const EXIT_INVALID: u8 = 64;
pub const EXIT_FAILED: u8 = 2;
/// A fault could not be reverted (whatever the verdict): someone must put it back by hand.
pub const EXIT_REVERT_FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "chaosbot",
    version,
    about = "Chaos experiments you can trust to put things back",
    long_about = "chaosbot runs chaos engineering experiments: it checks the steady state, injects \
real faults (a fault-injecting TCP proxy in front of your services), watches probes the whole \
time, halts on stop conditions, and always reverts — then verifies the revert by probing again.\n\n\
Start with `chaosbot demo` (no setup needed), then write an experiment (see experiments/ and the \
README) and `chaosbot validate` it before you `chaosbot run` it.",
    after_help = "Examples:\n  chaosbot demo\n  chaosbot validate experiments/*.yaml\n  \
chaosbot run experiments/checkout-latency.yaml --set latency=300ms --set duration=45s\n  \
chaosbot history\n  chaosbot show r-abc123defg\n  chaosbot abort all --reason \"incident in progress\"\n  \
SLACK_SIGNING_SECRET=… SLACK_BOT_TOKEN=xoxb-… chaosbot serve --config chaosbot.toml"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Operator config (targets and guard rails). Default: ./chaosbot.toml when present.
    #[arg(long, global = true, env = "CHAOSBOT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where runs and journals are kept: sqlite://PATH (default sqlite://chaosbot.db) or
    /// postgres://USER@HOST/DB.
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Log filter for diagnostics on stderr, e.g. info or chaosbot=debug (also RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Write logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a self-contained demo: a built-in HTTP service, the proxy in front of it, steady
    /// traffic, and an experiment that injects latency and breaks a latency hypothesis.
    Demo(demo::DemoArgs),
    /// Run one experiment in the foreground with a live view and a final report.
    ///
    /// Exit code: 0 held, 1 deviated, 2 aborted or failed, 64 invalid input. Ctrl-C aborts
    /// the run cleanly: faults are removed, the steady state re-checked, the report printed.
    Run(run::RunArgs),
    /// Check experiment files and game-day plans, syntax and meaning, against the config (and
    /// plans against the catalog); print every problem with file, line and column. Exit code 64
    /// when any file has a problem.
    Validate(ValidateArgs),
    /// List past runs, newest first.
    History(history::HistoryArgs),
    /// Show one run: verdict, numbers before/during/after, timeline.
    Show(history::ShowArgs),
    /// Ask a run (or all runs) to abort, wherever it runs. Queued runs close at once;
    /// running ones revert and verify. `abort all` also puts a halt in force: no run starts
    /// (here, from Slack, a schedule or a game day) until `chaosbot resume`.
    Abort(history::AbortArgs),
    /// Lift the halt `abort all` put in force, so runs may start again.
    Resume(history::ResumeArgs),
    /// Run the Slack app: the HTTP server (or Socket Mode), the worker pool, the proxies of
    /// every declared target, and delivery to Slack. Needs SLACK_SIGNING_SECRET and
    /// SLACK_BOT_TOKEN; SLACK_APP_TOKEN switches to Socket Mode.
    Serve(serve::ServeArgs),
    /// Export a run's learning record: definition, parameters and seed, timeline, numbers,
    /// verdict and rollback, the Q&A of its thread and what the team learned.
    ///
    /// `--format md` (the default) is for people; `--format json` is for tools and is stable
    /// (`schema_version` 1, every field described in docs/learning-record.md). Exit code: 0
    /// written, 64 no such run, 2 the database or the output file failed.
    #[command(after_help = "Examples:\n  chaosbot report r-abc123defg\n  \
chaosbot report r-abc123defg --format json --output r-abc123defg.json")]
    Report(report::ReportArgs),
    /// Translate an experiment written for another tool into a chaosbot experiment and the
    /// operator config it needs.
    #[command(
        after_help = "Example:\n  chaosbot import chaostoolkit experiment.json --out imported/\n  \
chaosbot run --config imported/chaosbot.toml imported/<name>.yaml"
    )]
    Import(import::ImportArgs),
    /// Run the agent: one per host, it owns everything that touches the host (fault proxies,
    /// process signals, resource stress), reverts each fault at its deadline or when its
    /// controller stops renewing the lease, and replays its journal at start.
    ///
    /// `--config agent.toml` for a service; `--on-demand --socket PATH` for the local agent a
    /// controller starts; neither: the local agent started by hand, kept running, with
    /// Toxiproxy's API on 127.0.0.1:8474. Exit code: 0 stopped (every fault reverted) or idle,
    /// 64 invalid config, 75 another agent holds the state dir, 2 could not start.
    Agent(agent::AgentArgs),
    /// List every configured agent and the local one: address, reachable or why not, version,
    /// protocol, and the faults in place (run, step, target, lease and deadline left).
    /// Exit code: 0 every configured agent answers, 2 one does not, 64 invalid config.
    Agents(agents::AgentsArgs),
    /// Print a signed link to `serve`'s list of recent runs (`/runs`), or to one run's live
    /// page, for operators. Anyone holding it sees those pages until it expires.
    #[command(
        after_help = "Examples:\n  chaosbot page-link\n  chaosbot page-link r-abc123defg --ttl 2h"
    )]
    PageLink(page_link::PageLinkArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Experiment YAML files, and game-day plans (files with an `agenda`, or in a `gamedays`
    /// folder), which are checked against the catalog the config names.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = cli
        .global
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.global.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn execute(cli: Cli) -> u8 {
    match cli.command {
        Command::Demo(args) => demo::demo(&cli.global, args).await,
        Command::Run(args) => run::run(&cli.global, args).await,
        Command::Validate(args) => validate(&cli.global, args),
        Command::History(args) => history::history(&cli.global, args).await,
        Command::Show(args) => history::show(&cli.global, args).await,
        Command::Abort(args) => history::abort(&cli.global, args).await,
        Command::Resume(args) => history::resume(&cli.global, args).await,
        Command::Serve(args) => serve::serve(&cli.global, args).await,
        Command::Report(args) => report::report(&cli.global, args).await,
        Command::Import(args) => import::import(args),
        Command::Agent(args) => agent::agent(&cli.global, args).await,
        Command::Agents(args) => agents::agents(&cli.global, args).await,
        Command::PageLink(args) => page_link::page_link(&cli.global, args),
    }
}

/// Loads the config, with `--database-url` applied; prints the problem and returns the exit
/// code on failure.
pub(crate) fn load_config(global: &GlobalArgs) -> Result<Config, u8> {
    let mut cfg = Config::load(global.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_INVALID
    })?;
    if let Some(url) = &global.database_url {
        cfg.database_url = Some(url.clone());
    }
    Ok(cfg)
}

pub(crate) async fn open_store(cfg: &Config) -> Result<crate::store::DynStore, u8> {
    crate::store::open_with_pool(cfg.database_url(), cfg.database_pool)
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            EXIT_FAILED
        })
}

/// The config and the store, or the exit code after printing why not.
pub(crate) async fn config_and_store(
    global: &GlobalArgs,
) -> Result<(Config, crate::store::DynStore), u8> {
    let cfg = load_config(global)?;
    let store = open_store(&cfg).await?;
    Ok((cfg, store))
}

fn validate(global: &GlobalArgs, args: ValidateArgs) -> u8 {
    let cfg = match load_config(global) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for h in cfg.insecure_endpoints() {
        eprintln!(
            "warning: http target `{}` ({}) sets insecure_skip_verify = true: its certificate is not checked, and every run that calls it says so in its journal; prefer `ca_file`",
            h.name, h.url
        );
    }
    for h in &cfg.targets.http {
        let unset: Vec<String> = h
            .headers
            .variables()
            .into_iter()
            .filter(|v| std::env::var_os(v).is_none())
            .collect();
        if !unset.is_empty() {
            eprintln!(
                "warning: http target `{}` sends headers read from {}, not set here: a run from this environment would fail every request to it; set {} where chaosbot runs",
                h.name,
                unset
                    .iter()
                    .map(|v| format!("`${{{v}}}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if unset.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let mut bad = 0;
    // Game-day plans are checked against the catalog, loaded once when the first plan shows up.
    let mut catalog: Option<crate::spec::Catalog> = None;
    for file in &args.files {
        if crate::gameday::plan::is_plan_file(file) {
            let catalog =
                catalog.get_or_insert_with(|| crate::spec::load_catalog(&cfg.catalog, &cfg));
            match crate::gameday::plan::load_plan(file, &cfg, catalog) {
                Ok(plan) => println!(
                    "{}: ok — game-day plan `{}`: {} experiment(s), up to {} in all",
                    file.display(),
                    plan.name,
                    plan.agenda.len(),
                    humantime::format_duration(plan.longest_duration())
                ),
                Err(errors) => {
                    bad += 1;
                    println!("{errors}");
                }
            }
            continue;
        }
        match crate::spec::load_experiment(file, &cfg, &[]) {
            Ok(exp) => println!(
                "{}: ok — `{}` touches {} for at most {}",
                file.display(),
                exp.name,
                if exp.targets().is_empty() {
                    "no targets".to_string()
                } else {
                    exp.targets().join(", ")
                },
                humantime::format_duration(exp.method_duration() + exp.recovery_timeout)
            ),
            Err(errors) => {
                bad += 1;
                println!("{errors}");
            }
        }
    }
    if bad > 0 {
        println!(
            "\n{bad} of {} file(s) have problems; nothing was run.",
            args.files.len()
        );
        EXIT_INVALID
    } else {
        0
    }
}
