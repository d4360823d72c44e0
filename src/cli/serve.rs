//! `chaosbot serve`: the Slack app, until SIGINT or SIGTERM.

use clap::Args;
use std::net::SocketAddr;

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, load_config, open_store};
use crate::slack::server::{Server, check_settings};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen for Slack (and /healthz, /metrics). Default: CHAOSBOT_LISTEN, then
    /// [slack] listen, then 0.0.0.0:3000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

pub async fn serve(global: &GlobalArgs, args: ServeArgs) -> u8 {
    let cfg = match load_config(global) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = check_settings(&cfg) {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let listen = args
        .listen
        .or(cfg.slack.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3000)));
    // SQLite is one process's database: a second `serve` on the same file would run the same
    // runs twice. Held until this function returns.
    let _sqlite_lock = match crate::store::sqlite::ServeLock::take(cfg.database_url()) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let store = match open_store(&cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e}. Is another process using the port? Set CHAOSBOT_LISTEN or --listen"
            );
            return EXIT_FAILED;
        }
    };
    let server = match Server::start(cfg, store, listener).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    println!("chaosbot serve: listening on {}", server.addr);
    let reason = wait_for_signal().await;
    println!("{reason}: halting runs (they revert and verify), delivering what is queued…");
    server.shutdown(&reason).await;
    0
}

async fn wait_for_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "chaosbot received SIGTERM".to_string(),
            _ = int.recv() => "chaosbot received SIGINT".to_string(),
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "chaosbot received SIGINT".to_string()
        }
    }
}
