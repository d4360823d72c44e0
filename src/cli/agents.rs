//! `chaosbot agents`: every configured agent and the local one, whether it answers, and the
//! faults it holds.

use std::sync::Arc;

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, load_config};
use crate::engine::agents::AgentRouter;

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Print JSON (one object per agent) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Exit code: 0 every configured agent answers, 2 one does not, 64 invalid config.
pub async fn agents(global: &GlobalArgs, args: AgentsArgs) -> u8 {
    let cfg = match load_config(global) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    let router = match AgentRouter::from_config(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let status = router.status().await;
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode the status: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        let now = crate::run::now_ms();
        for s in &status {
            for line in s.lines(now) {
                println!("{line}");
            }
        }
    }
    // The local agent not running is its idle state, not a failure.
    let down = status
        .iter()
        .any(|s| !s.reachable && s.name != crate::engine::agents::LOCAL_NAME);
    if down { EXIT_FAILED } else { 0 }
}
