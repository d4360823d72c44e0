//! `chaosbot agent`: the data plane process (one per host), as a service with `--config
//! agent.toml`, as the local agent a controller starts on demand (`--on-demand --socket`),
//! or, with neither, as this user's local agent kept running, with Toxiproxy's API on its
//! default address (a stand-in for `toxiproxy-server` with nothing to set up).
//!
//! Exit codes: 0 stopped (SIGTERM/SIGINT, every fault reverted) or idle exit; 64 invalid
//! config or flags; 75 another agent already holds the state dir (the on-demand starters
//! count on it: the agent that is already there serves); 2 any other failure to start.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs};
use crate::agent::config::{
    AgentConfig, DEFAULT_IDLE_EXIT, DEFAULT_TOXIPROXY_LISTEN, ToxiproxySettings,
};
use crate::agent::server::{self, StartError};

/// Another agent holds the state dir (EX_TEMPFAIL: try the one that runs).
pub const EXIT_AGENT_RUNNING: u8 = 75;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chaosbot agent                  # Toxiproxy's API on 127.0.0.1:8474, the local agent's socket\n  \
chaosbot agent --config /etc/chaosbot/agent.toml\n  \
chaosbot agent --on-demand --socket /tmp/chaosbot-1000/agent.sock --idle-exit 5s"
)]
pub struct AgentArgs {
    /// Run as the local agent a controller starts: no config file, targets declared by the
    /// controllers, state kept next to the socket, exits when idle.
    #[arg(long)]
    pub on_demand: bool,
    /// The local agent's Unix socket (with --on-demand; without a config, where controllers
    /// look for the local agent by default).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// With --on-demand: exit after this long with no fault held and no request.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "on_demand")]
    pub idle_exit: Option<Duration>,
    /// Serve Toxiproxy's HTTP API here (e.g. 127.0.0.1:8474), or `off`: with --on-demand off
    /// by default, without a config on 127.0.0.1:8474 by default (a configured agent sets
    /// `[toxiproxy]` in agent.toml).
    #[arg(long, value_name = "ADDR|off")]
    pub toxiproxy: Option<String>,
}

pub async fn agent(global: &GlobalArgs, args: AgentArgs) -> u8 {
    // --toxiproxy as given, else the mode's default.
    let toxiproxy = |default: Option<&str>| match args.toxiproxy.as_deref().or(default) {
        None => Ok(None),
        Some(t) => ToxiproxySettings::parse_listen(t, false).map_err(|m| {
            eprintln!("error: --toxiproxy: {m}");
            EXIT_INVALID
        }),
    };
    let cfg = match (&global.config, args.on_demand) {
        (_, true) => {
            let Some(socket) = args.socket.clone() else {
                eprintln!(
                    "error: --on-demand needs --socket PATH (where controllers reach the local agent)"
                );
                return EXIT_INVALID;
            };
            let listen = match toxiproxy(None) {
                Ok(l) => l,
                Err(code) => return code,
            };
            AgentConfig::on_demand(socket, args.idle_exit.unwrap_or(DEFAULT_IDLE_EXIT)).map(
                |mut c| {
                    c.toxiproxy.listen = listen;
                    c
                },
            )
        }
        (Some(path), false) => {
            if args.socket.is_some() || args.toxiproxy.is_some() {
                eprintln!(
                    "error: with --config, the socket and the Toxiproxy API are set in agent.toml; drop --socket and --toxiproxy"
                );
                return EXIT_INVALID;
            }
            AgentConfig::load(path)
        }
        (None, false) => {
            let listen = match toxiproxy(Some(DEFAULT_TOXIPROXY_LISTEN)) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let socket = crate::agent::local::socket_path(args.socket.as_deref());
            if let Err(e) = crate::agent::local::create_private_dir(&socket) {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
            // Started by hand: say where it can be reached (its log shows only warnings).
            eprintln!(
                "chaosbot agent: the local agent on {}, Toxiproxy's API {}; Ctrl-C stops it (reverting every fault)",
                socket.display(),
                match listen {
                    Some(a) => format!("on http://{a}"),
                    None => "off".into(),
                }
            );
            AgentConfig::standing_local(socket).map(|mut c| {
                c.toxiproxy.listen = listen;
                c
            })
        }
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
