//! `/runs/<id>/events`: the run's journal entries as server-sent events, as they land.
//!
//! Each event is `event: entry`, `id: <journal seq>`, `data: <the entry as JSON>`; a browser
//! that reconnects sends `Last-Event-ID` and resumes after it (a page starts `after` the last
//! entry it shows). When the run's verdict has been sent the stream says `event: done` and
//! ends; when the link expires it says `event: expired` and ends.
//!
//! New entries are noticed at once by the process's own journal broadcast (the one the thread
//! projector follows) and, on Postgres, by the store's wake-ups (`entry:` notifications from
//! the one listener the store keeps) for entries other replicas append. A slow look at the
//! journal ([`super::Pages::sweep`]) stays behind both: wake-ups are lost while the listener
//! reconnects, and SQLite tells none (another `chaosbot run` on the same file).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, debug, info_span, warn};

use super::link::Scope;
use super::{LinkQuery, Pages, check, now_unix};
use crate::run::{Entry, Event as JournalEvent};
use crate::store::Change;

/// Events buffered per stream before the reader waits for the client.
const BUFFER: usize = 256;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting after the stream drops.
const RETRY: Duration = Duration::from_secs(2);

pub(super) async fn events(
    State(pages): State<Arc<Pages>>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&pages, &Scope::Run(&id), &q) {
        return r.respond(&pages, "events", &id);
    }
    let exp = q
        .exp
        .as_deref()
        .and_then(|e| e.trim().parse::<i64>().ok())
        .unwrap_or(0);
    // Resume after what the browser saw last, or after what the page shows.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume
        .or_else(|| q.after.as_deref().and_then(|a| a.trim().parse().ok()))
        .unwrap_or(0)
        .max(0);
    match pages.store.get_run(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return (axum::http::StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Err(e) => {
            warn!(run_id = %id, error = %e, "cannot read the run for its event stream");
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer; the browser retries\n",
            )
                .into_response();
        }
    }
    let (tx, rx) = mpsc::channel::<Event>(BUFFER);
    // Subscribed before the first read, so nothing appended in between is missed.
    let wake = Wake {
        local: Some((pages.subscribe)()),
        store: pages.store.changes(),
    };
    let span = info_span!("run_page_events", run_id = %id);
    tokio::spawn(follow(pages.clone(), id, after, exp, wake, tx).instrument(span));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn entry_event(e: &Entry) -> Option<Event> {
    match Event::default()
        .event("entry")
        .id(e.seq.to_string())
        .json_data(e)
    {
        Ok(ev) => Some(ev),
        Err(err) => {
            warn!(seq = e.seq, error = %err, "cannot encode a journal entry for the page");
            None
        }
    }
}

/// What tells a stream to read the journal again before its sweep does. Each is `None` when
/// there is none (SQLite tells no changes) or once it closed (shutdown): the sweep still reads.
struct Wake {
    /// Entries this process appends (the engine's journal broadcast).
    local: Option<broadcast::Receiver<Entry>>,
    /// What the database tells about other processes' writes.
    store: Option<broadcast::Receiver<Change>>,
}

/// Sends the journal after `after`, then each new entry, until the verdict, the link's
/// expiry or the client leaving.
async fn follow(
    pages: Arc<Pages>,
    id: String,
    mut after: i64,
    exp: i64,
    mut wake: Wake,
    tx: mpsc::Sender<Event>,
) {
    let _ = tx
        .send(Event::default().retry(RETRY).comment("chaosbot"))
        .await;
    let mut sweep = tokio::time::interval(pages.sweep);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match pages.store.journal(&id, after).await {
            Ok(entries) => {
                for e in &entries {
                    after = e.seq;
                    if let Some(ev) = entry_event(e)
                        && tx.send(ev).await.is_err()
                    {
                        return;
                    }
                    if matches!(e.event, JournalEvent::Verdict { .. }) {
                        let _ = tx
                            .send(Event::default().event("done").data("verdict"))
                            .await;
                        return;
                    }
                }
            }
            // The database may come back; the next wake-up or sweep reads again.
            Err(e) => warn!(error = %e, "cannot read the journal for the page's events"),
        }
        if now_unix() >= exp {
            let _ = tx
                .send(Event::default().event("expired").data("link"))
                .await;
            return;
        }
        // Wait for an entry of this run, a sweep, or the client leaving.
        loop {
            tokio::select! {
                _ = tx.closed() => {
                    debug!("the page left");
                    return;
                }
                _ = sweep.tick() => break,
                got = next(&mut wake.local) => match got {
                    Ok(e) if e.run_id == id && e.seq > after => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => wake.local = None,
                },
                got = next(&mut wake.store) => match got {
                    Ok(Change::Entry { run_id, seq }) if run_id == id && seq > after => break,
                    Ok(Change::RunDone(run_id)) if run_id == id => break,
                    // Told changes may have been lost: look.
                    Ok(Change::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => wake.store = None,
                },
            }
        }
    }
}

/// The next message of `rx`; never, once there is no receiver.
async fn next<T: Clone>(
    rx: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
