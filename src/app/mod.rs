//! The application layer: the use cases every edge shares, transport-neutral (no Slack markup,
//! no Slack API, no clap). The Slack edge, the CLI, the scheduler and the game-day driver call
//! these; they alone submit runs to the [`Engine`].
//!
//! - [`App::start`] finds, authorizes and resolves an experiment, then [`App::launch`]es it;
//!   the guard rails are the engine's, the halt is checked by the store in the transaction
//!   that creates the run ([`crate::store::StoreError::Halted`]).
//! - [`App::abort`], [`App::abort_all`] (the halt first, then the aborts) and
//!   [`App::resume`].
//! - [`App::schedule`], [`App::unschedule`], [`App::gameday_start`], [`App::gameday_stop`].
//!
//! Every refusal is a [`Refusal`]; each edge words it its own way.

mod gamedays;
pub mod policy;
mod refusal;
mod runs;
mod schedules;

use std::sync::Arc;

use crate::clock::DynClock;
use crate::config::Config;
use crate::engine::Engine;
use crate::spec::{catalog::Catalog, load_catalog};
use crate::store::DynStore;

pub use gamedays::GamedayStopped;
pub use policy::{Caller, Denial};
pub use refusal::{Refusal, StoreOp};
pub use runs::{AbortAllOutcome, AbortedOne, HaltPut};
pub use schedules::Scheduled;

/// What the use cases run on. Cheap to clone (all shared handles).
#[derive(Clone)]
pub struct App {
    pub engine: Arc<Engine>,
    pub store: DynStore,
    pub cfg: Arc<Config>,
    /// Where "now" comes from for halts, schedules and game days; a manual clock in tests.
    pub clock: DynClock,
}

impl App {
    pub fn new(engine: Arc<Engine>, store: DynStore, cfg: Arc<Config>, clock: DynClock) -> App {
        App {
            engine,
            store,
            cfg,
            clock,
        }
    }

    /// The agents and the faults they hold, one line each (for `/chaos status`); empty when
    /// faults stay in this process.
    pub async fn agent_lines(&self) -> Vec<String> {
        let Some(router) = self.engine.agents() else {
            return Vec::new();
        };
        let now = crate::run::now_ms();
        router
            .status()
            .await
            .iter()
            .flat_map(|s| s.lines(now))
            .collect()
    }

    /// The experiment catalog as it is on disk now (edits show without a restart).
    pub fn catalog(&self) -> Catalog {
        load_catalog(&self.cfg.catalog, &self.cfg)
    }
}
