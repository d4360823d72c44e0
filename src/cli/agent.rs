//! `chaosbot agent`: the data plane process (one per host), as a service with `--config
//! agent.toml`, or as the local agent a controller starts on demand (`--on-demand --socket`).
//!
//! Exit codes: 0 stopped (SIGTERM/SIGINT, every fault reverted) or idle exit; 64 invalid
//! config or flags; 75 another agent already holds the state dir (the on-demand starters
//! count on it: the agent that is already there serves); 2 any other failure to start.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs};
use crate::agent::config::{AgentConfig, DEFAULT_IDLE_EXIT};
use crate::agent::server::{self, StartError};

/// Another agent holds the state dir (EX_TEMPFAIL: try the one that runs).
pub const EXIT_AGENT_RUNNING: u8 = 75;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chaosbot agent --config /etc/chaosbot/agent.toml\n  \
chaosbot agent --on-demand --socket /tmp/chaosbot-1000/agent.sock --idle-exit 5s"
)]
pub struct AgentArgs {
    /// Run as the local agent a controller starts: no config file, targets declared by the
    /// controllers, state kept next to the socket, exits when idle.
    #[arg(long)]
    pub on_demand: bool,
    /// The local agent's Unix socket (with --on-demand).
    #[arg(long, value_name = "PATH", requires = "on_demand")]
    pub socket: Option<PathBuf>,
    /// With --on-demand: exit after this long with no fault held and no request.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "on_demand")]
    pub idle_exit: Option<Duration>,
}

pub async fn agent(global: &GlobalArgs, args: AgentArgs) -> u8 {
    let cfg = if args.on_demand {
        let Some(socket) = args.socket else {
            eprintln!(
                "error: --on-demand needs --socket PATH (where controllers reach the local agent)"
            );
            return EXIT_INVALID;
        };
        AgentConfig::on_demand(socket, args.idle_exit.unwrap_or(DEFAULT_IDLE_EXIT))
    } else {
        let Some(path) = &global.config else {
            eprintln!(
                "error: `chaosbot agent` needs --config agent.toml (or --on-demand --socket PATH for a local agent)"
            );
            return EXIT_INVALID;
        };
        AgentConfig::load(path)
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    match server::run(cfg).await {
        Ok(()) => 0,
        Err(StartError::Locked(e)) => {
            eprintln!("error: {e}");
            EXIT_AGENT_RUNNING
        }
        Err(StartError::Failed(e)) => {
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}
