//! `chaosbot page-link`: an operator's signed link to the list of recent runs (or to one
//! run's live page), made with the same key `serve` checks links with.

use std::time::Duration;

use clap::Args;

use super::{EXIT_INVALID, GlobalArgs, load_config};
use crate::web::link::{Links, Scope};

/// An operator link lives a day unless said otherwise; at most this long.
const MAX_TTL: Duration = Duration::from_secs(31 * 24 * 3600);

#[derive(Debug, Args)]
pub struct PageLinkArgs {
    /// One run's page instead of the list of recent runs.
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// How long the link works, like 8h or 7d (at most 31 days).
    #[arg(long, default_value = "24h", value_parser = crate::config::duration_serde::parse)]
    pub ttl: Duration,
}

pub fn page_link(global: &GlobalArgs, args: PageLinkArgs) -> u8 {
    let cfg = match load_config(global) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(links) = Links::from_config(&cfg) else {
        eprintln!(
            "error: there is no key to sign page links with: set [server] page_secret (or CHAOSBOT_PAGE_SECRET), or the Slack signing secret `serve` uses (SLACK_SIGNING_SECRET)"
        );
        return EXIT_INVALID;
    };
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        eprintln!("error: --ttl must be above zero and at most 31 days (e.g. 24h or 7d)");
        return EXIT_INVALID;
    }
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(0);
    let exp = crate::run::now_ms().div_euclid(1000) + ttl;
    let link = match &args.run {
        Some(run) => match cfg.server.base_url() {
            Ok(base) => format!(
                "{}/runs/{run}?{}",
                base.unwrap_or_default(),
                links.query(&Scope::Run(run), exp)
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        },
        None => links.runs_url(exp),
    };
    println!("{link}");
    if cfg.server.public_url.is_none() {
        eprintln!(
            "note: [server] public_url is not set, so this is a path: put chaosbot serve's address in front of it"
        );
    }
    0
}
