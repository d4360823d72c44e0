//! Outbox delivery: every write to Slack is an outbox row first (see
//! [`crate::store::outbox`]); this delivers the rows.
//!
//! - One row in flight per `thread_key`, in enqueue order: only a thread's oldest pending row
//!   (its head) can be claimed, and a claim is a lease in the store, so replicas never send the
//!   same row and never reorder a thread. Different threads proceed concurrently (bounded).
//! - Network errors and 5xx are retried with jittered exponential backoff, forever: an outage
//!   delays a thread, it never loses a line of it. A 429 holds that method (for
//!   `chat.postMessage`, limited per channel by Slack: that method in that channel) until its
//!   `Retry-After` has passed, for every replica (the hold is a row in the store, timed on the
//!   database's clock). Posts are paced per channel, across replicas, at
//!   [`OutboxOptions::post_interval`]. `ok: false` fails the row (and, when it was a keyed post, the rows
//!   that refer to that key fail as they come up), so a thread never blocks forever.
//! - Pending updates of one message coalesce into one `chat.update` carrying the newest content,
//!   at most one per message per [`OutboxOptions::update_interval`].
//! - After a restart, a new `Outbox` delivers what is still pending; claims of a dead process
//!   lapse with their lease.

mod deliver;
mod pacing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::run::instance::InstanceId;
use crate::run::now_ms;
use crate::slack::api::SlackApi;
use crate::store::OutboxDelivery;

pub use pacing::backoff;

/// Metric names and helpers.
pub mod metric {
    pub const DELIVERIES: &str = "chaosbot_slack_deliveries_total";
    pub const RETRIES: &str = "chaosbot_slack_retries_total";
    pub const PENDING: &str = "chaosbot_slack_outbox_pending";

    /// `outcome`: `ok`, `refused`, `failed_dependency`.
    pub fn delivered(method: &'static str, outcome: &'static str) {
        metrics::counter!(DELIVERIES, "method" => method, "outcome" => outcome).increment(1);
    }

    /// `reason`: `network`, `server`, `rate_limited`.
    pub fn retried(reason: &'static str) {
        metrics::counter!(RETRIES, "reason" => reason).increment(1);
    }
}

#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// This instance's claim owner; unique per process by default.
    pub owner: String,
    /// Threads delivered concurrently.
    pub max_in_flight: usize,
    /// How long a claim holds; must exceed `call_timeout` (a row is never reclaimed mid-call).
    pub lease: Duration,
    /// Look for due rows at least this often (rows queued by another replica, retries due).
    pub poll_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// At most one `chat.update` per message per this interval.
    pub update_interval: Duration,
    /// One `chat.postMessage` per channel per this interval (Slack's limit is about one a
    /// second), shared by every replica through the store; zero turns pacing off.
    pub post_interval: Duration,
    /// Posts a channel may take at once after a quiet spell.
    pub post_burst: u32,
    /// Upper bound on one call, whatever the [`SlackApi`] does.
    pub call_timeout: Duration,
    /// On shutdown, how long in-flight calls may finish before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            owner: default_owner(),
            max_in_flight: 8,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            update_interval: Duration::from_secs(1),
            post_interval: Duration::from_secs(1),
            post_burst: 4,
            call_timeout: Duration::from_secs(12),
            shutdown_grace: Duration::from_secs(12),
        }
    }
}

fn default_owner() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "outbox:{}:{}",
        InstanceId::current(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The process behind an outbox claim owner (`outbox:<instance>:<n>`), if it names one.
fn owner_instance(owner: &str) -> Option<InstanceId> {
    let rest = owner.strip_prefix("outbox:")?;
    let (instance, _) = rest.rsplit_once(':')?;
    InstanceId::parse(instance)
}

/// Releases the claims of outbox instances whose process is gone (killed mid-call), so their
/// threads go on now instead of after the lease.
async fn release_dead_claims(store: &dyn OutboxDelivery) {
    let me = InstanceId::current();
    let Ok(owners) = store.claim_owners().await else {
        return;
    };
    for owner in owners {
        if owner_instance(&owner).is_some_and(|o| me.is_dead_owner(&o)) {
            match store.release_claims(&owner).await {
                Ok(n) => {
                    tracing::warn!(%owner, rows = n, "released the outbox claims of a process that died")
                }
                Err(e) => {
                    tracing::warn!(%owner, error = %e, "cannot release a dead process's claims yet")
                }
            }
        }
    }
}

pub(crate) struct Shared {
    store: Arc<dyn OutboxDelivery>,
    api: Arc<dyn SlackApi>,
    opts: OutboxOptions,
    wake: Notify,
}

/// The delivery side of the outbox. Cheap to clone; all clones share one delivery loop.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Outbox {
    pub fn new(
        store: Arc<dyn OutboxDelivery>,
        api: Arc<dyn SlackApi>,
        opts: OutboxOptions,
    ) -> Self {
        Outbox {
            shared: Arc::new(Shared {
                store,
                api,
                opts,
                wake: Notify::new(),
            }),
            cancel: CancellationToken::new(),
        }
    }

    /// Tells the loop that rows were queued (it also polls, so this only saves latency).
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// Cancelling it stops the loop: in-flight calls get `shutdown_grace` to finish, then the
    /// instance's claims are released so a successor starts at once.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the loop (same as cancelling [`Outbox::shutdown_token`]).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Spawns the delivery loop.
    pub fn start(&self) -> JoinHandle<()> {
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        tokio::spawn(run(shared, cancel))
    }
}

async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let owner = shared.opts.owner.clone();
    tracing::info!(%owner, "outbox delivery started");
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut store_failures = 0i64;
    let mut last_dead_check: Option<std::time::Instant> = None;
    while !cancel.is_cancelled() {
        if last_dead_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            release_dead_claims(shared.store.as_ref()).await;
            last_dead_check = Some(std::time::Instant::now());
        }
        let free = shared.opts.max_in_flight.saturating_sub(in_flight.len());
        let mut pause = shared.opts.poll_interval;
        if free > 0 {
            let now = now_ms();
            let until = now + pacing::millis(shared.opts.lease);
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            match shared.store.claim_heads(&owner, now, until, limit).await {
                Ok(rows) => {
                    store_failures = 0;
                    for row in rows {
                        in_flight.spawn(deliver::deliver(shared.clone(), row));
                    }
                }
                Err(e) => {
                    store_failures += 1;
                    pause = backoff(
                        store_failures,
                        shared.opts.poll_interval,
                        Duration::from_secs(10),
                    );
                    tracing::error!(error = %e, "outbox cannot claim rows; retrying");
                }
            }
            if let Ok(n) = shared.store.pending_count().await {
                metrics::gauge!(metric::PENDING).set(n as f64);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = shared.wake.notified() => {}
            // A finished delivery may have unblocked its thread's next row: claim again now.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    // Let calls already sent finish and record their outcome, so a successor does not resend.
    let grace = tokio::time::sleep(shared.opts.shutdown_grace);
    tokio::pin!(grace);
    while !in_flight.is_empty() {
        tokio::select! {
            _ = &mut grace => {
                tracing::warn!(left = in_flight.len(), "outbox shutdown: dropping calls still in flight");
                in_flight.shutdown().await;
                break;
            }
            _ = in_flight.join_next() => {}
        }
    }
    match shared.store.release_claims(&owner).await {
        Ok(n) => tracing::info!(%owner, released = n, "outbox delivery stopped"),
        Err(e) => {
            tracing::warn!(%owner, error = %e, "outbox stopped; its claims lapse with their lease")
        }
    }
}
