//! Renders run journals into the Slack outbox: the parent message, its in-place updates, one
//! thread reply per event that matters, the final summary and a verdict reaction.
//!
//! The journal is the source of truth and the outbox is persisted, so the projector keeps a
//! per-run cursor (advanced in the same transaction as the messages it produced). A restart, a
//! lagging subscriber or a crash between the journal append and the render loses nothing and
//! repeats nothing: the next pass starts from the cursor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{qa, render};
use super::{run_parent_key, run_thread_key};
use crate::config::QaConfig;
use crate::report;
use crate::run::{Entry, Event};
use crate::spec::model::Experiment;
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::{DynStore, RunFilter, RunRecord, StoreError, StoreResult};
use crate::web::link::Links;

/// How often runs are re-checked for journal entries not rendered yet (besides live events).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long delivered event ids are remembered: Slack retries an event for about an hour.
const EVENT_MEMORY_MS: i64 = 24 * 3_600_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Finished runs older than this are not swept any more.
const SWEEP_HORIZON_MS: i64 = 3_600_000;

pub struct Projector {
    store: DynStore,
    /// The Q&A opened in the thread when a run ends.
    qa: QaConfig,
    /// Signs the parent message's link to the run's live page (none without a public URL).
    links: Option<Links>,
    on_enqueue: Box<dyn Fn() + Send + Sync>,
    /// The last parent rendering queued per run, to skip updates that change nothing.
    last_parent: Mutex<HashMap<String, serde_json::Value>>,
    /// Q&A windows that closed up to here have had their boards updated.
    qa_closed_until_ms: Mutex<i64>,
    /// When delivered-event ids were last pruned.
    events_pruned_at: Mutex<Option<std::time::Instant>>,
}

impl Projector {
    /// `on_enqueue` is called after new messages are queued (to wake the outbox).
    pub fn new(
        store: DynStore,
        qa: QaConfig,
        on_enqueue: impl Fn() + Send + Sync + 'static,
    ) -> Arc<Projector> {
        Projector::with_links(store, qa, None, on_enqueue)
    }

    /// Like [`Projector::new`], with the parent message linking to the run's live page.
    pub fn with_links(
        store: DynStore,
        qa: QaConfig,
        links: Option<Links>,
        on_enqueue: impl Fn() + Send + Sync + 'static,
    ) -> Arc<Projector> {
        Arc::new(Projector {
            store,
            qa,
            links,
            on_enqueue: Box::new(on_enqueue),
            last_parent: Mutex::new(HashMap::new()),
            // After a restart, look back one sweep horizon for windows that closed meanwhile.
            qa_closed_until_ms: Mutex::new(crate::run::now_ms() - SWEEP_HORIZON_MS),
            events_pruned_at: Mutex::new(None),
        })
    }

    /// Follows live journal entries until `stop`, sweeping for anything missed.
    pub async fn run(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Entry>,
        stop: CancellationToken,
    ) {
        self.sweep().await;
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Render what is already journaled (e.g. verdicts written during shutdown).
                    self.sweep().await;
                    return;
                }
                _ = tick.tick() => self.sweep().await,
                msg = events.recv() => match msg {
                    Ok(entry) => {
                        if let Err(e) = self.project(&entry.run_id).await {
                            warn!(run_id = %entry.run_id, error = %e, "cannot render the run to Slack yet; will retry");
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!(missed = n, "journal subscriber lagged; sweeping");
                        self.sweep().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Updates the boards of Q&A windows that closed since the last look, so they say so.
    async fn close_boards(&self) {
        let mut until = self.qa_closed_until_ms.lock().await;
        let now = crate::run::now_ms();
        let sessions = match self.store.qa_sessions_closed(*until, now).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot list the Q&A windows that closed");
                return;
            }
        };
        let mut out = Vec::new();
        for session in sessions {
            let run = match self.store.get_run(&session.run_id).await {
                Ok(Some(r)) => r,
                _ => continue,
            };
            match qa::board_update(
                &self.store,
                &run,
                &session.channel,
                self.qa.board_top as usize,
                now,
            )
            .await
            {
                Ok(update) => out.push(update),
                Err(e) => warn!(run_id = %run.id, error = %e, "cannot render a closed Q&A board"),
            }
        }
        if !out.is_empty() {
            if let Err(e) = self.store.enqueue(&out, None).await {
                warn!(error = %e, "cannot queue the closed Q&A boards; will retry");
                return;
            }
            (self.on_enqueue)();
        }
        *until = now;
    }

    /// Forgets delivered-event ids older than a day, at most every ten minutes.
    async fn prune_events(&self) {
        let mut at = self.events_pruned_at.lock().await;
        if at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        *at = Some(std::time::Instant::now());
        let before = crate::run::now_ms() - EVENT_MEMORY_MS;
        match self.store.prune_events(before).await {
            Ok(n) if n > 0 => debug!(removed = n, "old Slack event ids pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot prune old Slack event ids; will retry"),
        }
    }

    /// Renders every recent Slack run that has journal entries past its cursor.
    pub async fn sweep(&self) {
        self.close_boards().await;
        self.prune_events().await;
        let runs = match self
            .store
            .list_runs(RunFilter {
                experiment: None,
                limit: 200,
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot list runs to render");
                return;
            }
        };
        let now = crate::run::now_ms();
        for run in runs {
            if run.source.slack().cloned().is_none() {
                continue;
            }
            if run.finished_ms.is_some_and(|f| now - f > SWEEP_HORIZON_MS) {
                continue;
            }
            if let Err(e) = self.project(&run.id).await {
                warn!(run_id = %run.id, error = %e, "cannot render the run to Slack yet; will retry");
            }
        }
    }

    /// Queues the Slack messages for the run's journal entries past the cursor. Returns how
    /// many messages were queued.
    pub async fn project(&self, run_id: &str) -> StoreResult<usize> {
        // The run changed owner between the read and the enqueue: read it again (a few
        // times; after that the next event or sweep does).
        let mut tries = 0;
        loop {
            match self.project_once(run_id).await {
                Err(StoreError::LeaseLost(_)) if tries < 3 => {
                    tries += 1;
                    debug!(
                        run_id,
                        "the run's epoch moved while rendering; rendering again"
                    );
                }
                other => return other,
            }
        }
    }

    async fn project_once(&self, run_id: &str) -> StoreResult<usize> {
        // One projection at a time: the cursor read and the enqueue must not interleave.
        let mut last_parent = self.last_parent.lock().await;
        let is_slack = self
            .store
            .get_run(run_id)
            .await?
            .is_some_and(|r| r.source.slack().cloned().is_some());
        if !is_slack {
            return Ok(0);
        }
        // The journal first, then the run again: the run record is then at least as new as
        // the journal (a verdict entry and the run's verdict are written together), so a
        // rendered verdict entry always comes with the run's verdict.
        let cursor = self.store.render_cursor(run_id).await?;
        // The periodic sweep visits every recent run: most have nothing new, so look past the
        // cursor before reading the whole journal.
        if self.store.journal(run_id, cursor).await?.is_empty() {
            return Ok(0);
        }
        let entries = self.store.journal(run_id, 0).await?;
        let Some(run) = self.store.get_run(run_id).await? else {
            return Ok(0);
        };
        let Some(origin) = run.source.slack().cloned() else {
            return Ok(0);
        };
        let fresh: Vec<&Entry> = entries.iter().filter(|e| e.seq > cursor).collect();
        let Some(last_seq) = fresh.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let method_ms = serde_json::from_value::<Experiment>(run.spec.clone())
            .map(|e| i64::try_from(e.method_duration().as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let summary = report::summarize(&run, &entries);
        // A queued run says what it waits behind (one run per target at a time).
        let queue = if run.state == crate::run::RunState::Queued {
            self.store.queue_place(run_id).await.ok()
        } else {
            None
        };
        let mut parent =
            render::parent_in_queue(&run, &entries, &summary, method_ms, queue.as_ref());
        if let Some(url) = self
            .links
            .as_ref()
            .and_then(|l| l.run_url(&run.id, run.created_ms))
        {
            render::add_page_link(&mut parent, &url);
        }
        let thread = run_thread_key(run_id);
        let parent_key = run_parent_key(run_id);
        let msg = |action| OutboundMessage {
            thread_key: thread.clone(),
            channel: origin.channel.clone(),
            action,
        };

        let mut out = Vec::new();
        if cursor == 0 {
            out.push(msg(OutboundAction::Post {
                key: Some(parent_key.clone()),
                in_thread_of: None,
                text: parent.text.clone(),
                blocks: Some(parent.blocks.clone()),
            }));
        }
        for e in &fresh {
            if let Some(reply) = render::thread_reply(e) {
                out.push(msg(OutboundAction::Post {
                    key: None,
                    in_thread_of: Some(parent_key.clone()),
                    text: reply.text,
                    blocks: Some(reply.blocks),
                }));
            }
        }
        let finished = fresh
            .iter()
            .any(|e| matches!(e.event, Event::Verdict { .. }));
        if finished {
            let reply = render::summary(&summary);
            for page in reply.pages() {
                out.push(msg(OutboundAction::Post {
                    key: None,
                    in_thread_of: Some(parent_key.clone()),
                    text: reply.text.clone(),
                    blocks: Some(page),
                }));
            }
            // The run as a picture, right under its summary.
            if let Some(upload) = chart_upload(&run, &entries, &parent_key).await {
                out.push(msg(upload));
            }
            // The talk is over: the thread becomes its Q&A.
            out.extend(
                qa::open_for_finished_run(
                    &self.store,
                    &run,
                    &entries,
                    &summary,
                    &origin.channel,
                    &self.qa,
                    crate::run::now_ms(),
                )
                .await?,
            );
        }
        let changed = last_parent.get(run_id) != Some(&parent.blocks);
        if cursor > 0 && changed {
            out.push(msg(OutboundAction::Update {
                key: parent_key.clone(),
                text: parent.text.clone(),
                blocks: Some(parent.blocks.clone()),
                revision: None,
            }));
        }
        if finished && let Some(verdict) = &summary.verdict {
            out.push(msg(OutboundAction::Reaction {
                key: parent_key.clone(),
                name: match verdict.as_str() {
                    "held" => "white_check_mark",
                    "deviated" => "warning",
                    "aborted" => "octagonal_sign",
                    _ => "x",
                }
                .into(),
            }));
        }
        // Fenced by the epoch the run was read under: a rendering read before the run was
        // claimed or adopted is refused, and the caller renders it again.
        if !self
            .store
            .enqueue_rendered(&out, run_id, run.epoch, cursor, last_seq)
            .await?
        {
            // Another replica's projector rendered these entries first.
            debug!(run_id, cursor, "already rendered elsewhere");
            last_parent.remove(run_id);
            return Ok(0);
        }
        last_parent.insert(run_id.to_string(), parent.blocks);
        if finished {
            last_parent.remove(run_id);
        }
        drop(last_parent);
        if !out.is_empty() {
            (self.on_enqueue)();
        }
        Ok(out.len())
    }
}

/// The finished run's chart as an upload into its thread; none (logged) when it cannot be
/// drawn: the summary above it says everything the chart would. Drawn off the async workers.
async fn chart_upload(
    run: &RunRecord,
    entries: &[Entry],
    parent_key: &str,
) -> Option<OutboundAction> {
    use base64::Engine as _;
    let (r, e) = (run.clone(), entries.to_vec());
    let drawn = tokio::task::spawn_blocking(move || {
        report::chart::render_png(&report::chart::build(&r, &e, crate::run::now_ms()))
    })
    .await;
    match drawn {
        Ok(Ok(png)) => Some(OutboundAction::Upload {
            in_thread_of: Some(parent_key.to_string()),
            filename: format!("chaosbot-{}.png", run.id),
            title: format!("Run {} · {}", run.id, run.title),
            content_base64: base64::engine::general_purpose::STANDARD.encode(png),
        }),
        Ok(Err(e)) => {
            warn!(run_id = %run.id, error = %e, "cannot draw the run chart; the thread gets the summary only");
            None
        }
        Err(e) => {
            warn!(run_id = %run.id, error = %e, "drawing the run chart panicked; the thread gets the summary only");
            None
        }
    }
}
