//! Wake-ups from Postgres (`LISTEN chaosbot`): what other replicas changed, told at once so
//! a replica need not poll for it (runs, aborts, halts for the engine; journal appends for
//! the live run pages). Best effort: notifications sent while the listener is
//! reconnecting are lost, which it reports as [`Change::Missed`]; consumers keep a slower
//! sweep behind it.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The channel the migration's triggers notify on.
pub(super) const CHANNEL: &str = "chaosbot";

/// How long to wait before connecting the listener again after an error.
const RETRY: Duration = Duration::from_secs(1);

/// A change another process made, as the database told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A run was queued.
    RunQueued(String),
    /// An abort was requested for a running run.
    AbortRequested(String),
    /// A run was closed (a slot, and its targets, are free).
    RunDone(String),
    /// A halt was set or lifted.
    Halt,
    /// An entry was appended to a run's journal (for live pages of runs executed elsewhere).
    Entry { run_id: String, seq: i64 },
    /// The listener (re)connected: changes told before it did may be lost; look again.
    Missed,
}

fn parse(payload: &str) -> Option<Change> {
    match payload.split_once(':') {
        Some(("run", id)) => Some(Change::RunQueued(id.to_string())),
        Some(("abort", id)) => Some(Change::AbortRequested(id.to_string())),
        Some(("done", id)) => Some(Change::RunDone(id.to_string())),
        Some(("entry", rest)) => {
            let (seq, id) = rest.split_once(':')?;
            Some(Change::Entry {
                run_id: id.to_string(),
                seq: seq.parse().ok()?,
            })
        }
        None if payload == "halt" => Some(Change::Halt),
        _ => None,
    }
}

/// Listens until `stop` (or the pool closes), reconnecting after errors.
pub(super) async fn listen(pool: PgPool, tx: broadcast::Sender<Change>, stop: CancellationToken) {
    loop {
        match listen_once(&pool, &tx, &stop).await {
            Ok(()) => return,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                warn!(error = %e, "the Postgres wake-up listener failed; reconnecting (replicas sweep meanwhile)")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// `Ok` when stopped; `Err` to reconnect.
async fn listen_once(
    pool: &PgPool,
    tx: &broadcast::Sender<Change>,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    debug!("listening for wake-ups");
    // Whatever was told before this point is not ours to hear: look again.
    let _ = tx.send(Change::Missed);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.try_recv() => n?,
        };
        match next {
            Some(n) => match parse(n.payload()) {
                Some(change) => {
                    let _ = tx.send(change);
                }
                None => debug!(payload = n.payload(), "ignoring an unknown wake-up"),
            },
            // The connection dropped; the next `try_recv` reconnects and listens again.
            None => {
                warn!("the Postgres wake-up listener lost its connection; reconnecting");
                let _ = tx.send(Change::Missed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(parse("run:r-1"), Some(Change::RunQueued("r-1".into())));
        assert_eq!(
            parse("abort:r-2"),
            Some(Change::AbortRequested("r-2".into()))
        );
        assert_eq!(parse("done:r-3"), Some(Change::RunDone("r-3".into())));
        assert_eq!(parse("halt"), Some(Change::Halt));
        assert_eq!(
            parse("entry:42:r-4"),
            Some(Change::Entry {
                run_id: "r-4".into(),
                seq: 42
            })
        );
        assert_eq!(parse("entry:x:r-4"), None);
        assert_eq!(parse("other"), None);
    }
}
