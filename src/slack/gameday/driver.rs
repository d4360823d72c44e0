//! Drives open game days: starts each agenda item through the application layer (as a start
//! from Slack is; the store refuses it while a halt is in force), waits for its run to finish
//! (polling the store, so a run executed by another replica counts too), waits out the Q&A
//! window, and so on to the closing summary.
//!
//! Every step is written to the game-day row before the next one is taken, and every message
//! has a key whose presence in the outbox is checked before it is queued, so a restart resumes
//! where the game day was and neither re-runs an item nor repeats a message. The row carries a
//! lease: a driver works only on game days it holds, renews the lease on every step, and gives
//! it up on shutdown; another replica takes over once a lease ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::render::{self, ItemOutcome};
use crate::app::App;
use crate::clock::DynClock;
use crate::gameday::plan::Plan;
use crate::run::Event;
use crate::run::{RunSource, SlackOrigin};
use crate::run::{RunState, Verdict};
use crate::slack::blocks::{self, Reply};
use crate::slack::edge::Asker;
use crate::store::gamedays::{GamedayProgress, GamedayRecord, GamedayState};
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::{StoreError, StoreResult};

/// How long the first agenda item waits for the opening message to be delivered.
const OPENING_WAIT: Duration = Duration::from_secs(30);

/// Timing knobs; the defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct GamedayOptions {
    /// How often open game days and the current run are looked at.
    pub poll: Duration,
    /// How long a claim on a game day holds without renewal.
    pub lease: Duration,
    /// How long past its longest planned duration a run may take before the game day gives
    /// up on it (the engine's own deadlines end it long before, normally).
    pub run_grace: Duration,
}

impl Default for GamedayOptions {
    fn default() -> Self {
        GamedayOptions {
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            run_grace: Duration::from_secs(600),
        }
    }
}

/// Who asks, when the driver itself stops a game day.
const CHAOSBOT: &str = "chaosbot";
/// Steps taken without a pause before the driver pauses anyway (a game day needs at most a
/// handful: submit, save, note, close).
const MAX_STEPS_IN_A_ROW: u32 = 20;

pub struct GamedayDriver {
    app: App,
    clock: DynClock,
    opts: GamedayOptions,
    /// This driver's lease owner: unique per driver, so two in one process are two replicas.
    owner: String,
    on_enqueue: Box<dyn Fn() + Send + Sync>,
    /// Game days this driver is working on.
    driving: Mutex<HashSet<String>>,
}

/// What one step of a game day decided.
enum Step {
    /// Look again after a pause of at most this long.
    Wait(Duration),
    /// Look again at once.
    Again,
    /// Nothing more to do here (closed, or the lease is someone else's).
    Leave,
}

impl GamedayDriver {
    /// `app`: the application layer items are started through (an `Arc<SlackApp>` converts).
    /// `on_enqueue` is called after messages are queued (to wake the outbox).
    pub fn new(
        app: impl Into<App>,
        clock: DynClock,
        opts: GamedayOptions,
        on_enqueue: impl Fn() + Send + Sync + 'static,
    ) -> Arc<GamedayDriver> {
        let app: App = app.into();
        let owner = format!(
            "{}/gameday-{:08x}",
            app.engine.instance(),
            rand::random::<u32>()
        );
        Arc::new(GamedayDriver {
            app,
            clock,
            opts,
            owner,
            on_enqueue: Box::new(on_enqueue),
            driving: Mutex::new(HashSet::new()),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Looks for open game days every poll and drives those it can claim, until `stop`; then
    /// lets the game days go (their leases released) for the next process.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        loop {
            self.adopt(&mut tasks, &stop).await;
            // Reap finished tasks without waiting.
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.opts.poll) => {}
            }
        }
        // Each task notices `stop` within one poll and releases its lease.
        let grace = self.opts.poll * 4 + Duration::from_secs(5);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            warn!("some game-day tasks did not stop in time; their leases end on their own");
            tasks.abort_all();
        }
    }

    /// Claims every open game day nobody else holds and starts a task for each.
    async fn adopt(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: &CancellationToken) {
        let open = match self.app.store.open_gamedays().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot list open game days; will retry");
                return;
            }
        };
        for g in open {
            if lock(&self.driving).contains(&g.id) {
                continue;
            }
            let now = self.clock.now_ms();
            match self
                .app
                .store
                .claim_gameday(&g.id, &self.owner, now, now + ms(self.opts.lease))
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(gameday = %g.id, error = %e, "cannot claim a game day; will retry");
                    continue;
                }
            }
            info!(gameday = %g.id, owner = %self.owner, "driving game day");
            lock(&self.driving).insert(g.id.clone());
            let me = self.clone();
            let stop = stop.clone();
            let span = tracing::info_span!("gameday", id = %g.id);
            tasks.spawn(
                async move {
                    me.drive(&g.id, &stop).await;
                    lock(&me.driving).remove(&g.id);
                }
                .instrument(span),
            );
        }
    }

    /// Drives one game day until it is closed, the lease is lost, or `stop`.
    async fn drive(&self, id: &str, stop: &CancellationToken) {
        let mut in_a_row = 0;
        loop {
            if stop.is_cancelled() {
                if let Err(e) = self.app.store.release_gameday(id, &self.owner).await {
                    warn!(error = %e, "cannot release the game day's lease; it ends on its own");
                }
                return;
            }
            let pause = match self.step(id).await {
                Ok(Step::Leave) => return,
                // Steps taken back to back are bounded; a game day never needs many in a row.
                Ok(Step::Again) if in_a_row < MAX_STEPS_IN_A_ROW => {
                    in_a_row += 1;
                    continue;
                }
                Ok(Step::Again) => {
                    warn!("many game-day steps in a row; pausing");
                    self.opts.poll
                }
                Ok(Step::Wait(d)) => d,
                Err(e) => {
                    warn!(error = %e, "game-day step failed; will retry");
                    self.opts.poll
                }
            };
            in_a_row = 0;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(pause.min(self.opts.poll)) => {}
            }
        }
    }

    /// Looks at the game day once and takes the next step it needs.
    async fn step(&self, id: &str) -> StoreResult<Step> {
        let store = &self.app.store;
        let Some(g) = store.get_gameday(id).await? else {
            return Ok(Step::Leave);
        };
        let now = self.clock.now_ms();
        // Renew when half the lease is spent (not on every poll: that would be a write each).
        let fresh = g.owner.as_deref() == Some(self.owner.as_str())
            && g.lease_until_ms
                .is_some_and(|u| u - now > ms(self.opts.lease) / 2);
        if g.closed_ms.is_some()
            || (!fresh
                && !store
                    .claim_gameday(id, &self.owner, now, now + ms(self.opts.lease))
                    .await?)
        {
            info!(
                gameday = id,
                "the game day is closed or driven elsewhere; leaving it"
            );
            return Ok(Step::Leave);
        }
        let plan: Plan = serde_json::from_value(g.plan_json.clone())
            .map_err(|e| StoreError::Corrupt(format!("game day `{id}` plan: {e}")))?;
        self.post_once(
            &g,
            &render::opening(&g, &plan),
            crate::gameday::opening_key(id),
            None,
        )
        .await?;

        if g.state != GamedayState::Running {
            return self.close(&g, &plan).await;
        }
        let i = g.current;
        let Some(item) = plan.agenda.get(i) else {
            store.finish_gameday(id, &self.owner, now).await?;
            return Ok(Step::Again);
        };
        let Some(run_id) = g.run_ids.get(i).cloned().flatten() else {
            // Not submitted yet: wait out the previous item's window, then start it.
            if let Some(until) = g.wait_until_ms.filter(|u| *u > now) {
                return Ok(Step::Wait(Duration::from_millis((until - now) as u64)));
            }
            if self.app.engine.is_shutting_down() {
                return Ok(Step::Wait(self.opts.poll));
            }
            // The agenda is announced before the first run's own message: the outbox delivers
            // different threads independently, so the first item waits for the opening to be
            // in the channel (a Slack outage holds the game day back by OPENING_WAIT at most).
            if i == 0
                && now - g.created_ms < ms(OPENING_WAIT)
                && store
                    .message_ref(&crate::gameday::opening_key(id))
                    .await?
                    .is_none()
            {
                return Ok(Step::Wait(self.opts.poll));
            }
            let source = RunSource::Gameday {
                gameday_id: g.id.clone(),
                origin: SlackOrigin {
                    team: g.team.clone(),
                    channel: g.channel.clone(),
                    user: g.started_by.clone(),
                },
            };
            let run_id = match self
                .app
                .launch(&item.resolved, &g.started_by, source, None)
                .await
            {
                Ok(run_id) => run_id,
                Err(_) if self.app.engine.is_shutting_down() => {
                    return Ok(Step::Wait(self.opts.poll));
                }
                Err(r) => {
                    let m = Asker {
                        cfg: &self.app.cfg,
                        user: &g.started_by,
                        command: "/chaos",
                    }
                    .text(&r);
                    let reason = format!(
                        "agenda item {} (`{}`) could not start: {m}",
                        i + 1,
                        item.experiment
                    );
                    warn!(gameday = id, %reason, "stopping the game day");
                    store.stop_gameday(id, CHAOSBOT, &reason, now).await?;
                    return Ok(Step::Again);
                }
            };
            info!(gameday = id, item = i + 1, %run_id, "agenda item submitted");
            let mut run_ids = g.run_ids.clone();
            run_ids.resize(plan.agenda.len(), None);
            run_ids[i] = Some(run_id.clone());
            let progress = GamedayProgress {
                current: i,
                run_ids,
                wait_until_ms: None,
            };
            let saved = store
                .save_gameday_progress(id, &self.owner, &progress, now, now + ms(self.opts.lease))
                .await?;
            if !saved {
                // Stopped (or taken over) while the run was being queued: it must not run
                // unaccounted for.
                self.abort_run(&run_id, "the game day was stopped as this run was queued")
                    .await;
            }
            return Ok(Step::Again);
        };

        let Some(run) = store.get_run(&run_id).await? else {
            let reason = format!("run `{run_id}` of agenda item {} vanished", i + 1);
            store.stop_gameday(id, CHAOSBOT, &reason, now).await?;
            return Ok(Step::Again);
        };
        if run.state != RunState::Done {
            let longest = item.resolved.method_duration()
                + item.resolved.recovery_timeout
                + self.opts.run_grace;
            if now - run.created_ms > ms(longest) {
                let reason = format!(
                    "run `{run_id}` of agenda item {} did not finish within {}",
                    i + 1,
                    render::fmt_duration(longest)
                );
                self.abort_run(&run_id, &reason).await;
                store.stop_gameday(id, CHAOSBOT, &reason, now).await?;
                return Ok(Step::Again);
            }
            return Ok(Step::Wait(self.opts.poll));
        }
        // The run is over: a person's abort or a run that could not execute ends the game day.
        match run.verdict {
            Some(Verdict::Aborted) => {
                // A person's abort is journaled (queued or running alike); a stop condition's
                // or a shutdown's is not.
                let journal = store.journal(&run_id, 0).await?;
                let asked = journal.iter().find_map(|e| match &e.event {
                    Event::AbortRequested { by, reason } if by != CHAOSBOT => {
                        Some((by.clone(), reason.clone()))
                    }
                    _ => None,
                });
                if let Some((by, why)) = asked {
                    let reason = format!(
                        "run `{run_id}` (`{}`) was aborted by <@{by}>: {why}",
                        item.experiment
                    );
                    store.stop_gameday(id, &by, &reason, now).await?;
                    return Ok(Step::Again);
                }
            }
            Some(Verdict::Failed) => {
                let reason = format!(
                    "run `{run_id}` (`{}`) could not execute: {}",
                    item.experiment,
                    run.reason.as_deref().unwrap_or("no reason recorded")
                );
                store.stop_gameday(id, CHAOSBOT, &reason, now).await?;
                return Ok(Step::Again);
            }
            _ => {}
        }
        self.post_once(
            &g,
            &render::note(&plan, i, &run_id),
            crate::gameday::note_key(id, i),
            Some(crate::gameday::opening_key(id)),
        )
        .await?;
        let last = i + 1 >= plan.agenda.len();
        // The window runs from when this driver saw the run end (its own clock; at most one
        // poll after the verdict).
        let progress = GamedayProgress {
            current: i + 1,
            run_ids: g.run_ids.clone(),
            wait_until_ms: (!last).then(|| now + ms(plan.qa_window) + ms(plan.pause_between)),
        };
        store
            .save_gameday_progress(id, &self.owner, &progress, now, now + ms(self.opts.lease))
            .await?;
        Ok(Step::Again)
    }

    /// Posts the closing summary once the current run (if any) is over, and closes the row.
    async fn close(&self, g: &GamedayRecord, plan: &Plan) -> StoreResult<Step> {
        let store = &self.app.store;
        let now = self.clock.now_ms();
        let mut items = Vec::new();
        for (i, item) in plan.agenda.iter().enumerate() {
            let run = match g.run_ids.get(i).cloned().flatten() {
                Some(run_id) => store.get_run(&run_id).await?,
                None => None,
            };
            if let Some(r) = &run
                && r.state != RunState::Done
            {
                // A stop aborts the current run; its verdict belongs in the summary. Wait
                // for it, but not for ever.
                let waited = now - g.finished_ms.unwrap_or(now);
                if waited < ms(self.opts.run_grace) {
                    return Ok(Step::Wait(self.opts.poll));
                }
            }
            let run = match run {
                Some(r) => {
                    let journal = store.journal(&r.id, 0).await?;
                    Some(crate::report::summarize(&r, &journal))
                }
                None => None,
            };
            items.push(ItemOutcome {
                title: item.title.clone(),
                experiment: item.experiment.clone(),
                run,
            });
        }
        let reply = render::closing(g, plan, &items, now);
        self.post_once(g, &reply, crate::gameday::closing_key(&g.id), None)
            .await?;
        store.close_gameday(&g.id, &self.owner, now).await?;
        info!(gameday = %g.id, state = %g.state, "game day closed");
        Ok(Step::Leave)
    }

    /// Queues a post named `key` unless a post with that key was ever queued (so a restart,
    /// or a step taken again, never posts it twice).
    async fn post_once(
        &self,
        g: &GamedayRecord,
        reply: &Reply,
        key: String,
        in_thread_of: Option<String>,
    ) -> StoreResult<()> {
        let store = &self.app.store;
        if store.post_queued(&key).await? {
            return Ok(());
        }
        let msg = OutboundMessage {
            thread_key: crate::gameday::thread_key(&g.id),
            channel: g.channel.clone(),
            action: OutboundAction::Post {
                key: Some(key),
                in_thread_of,
                text: blocks::truncate(&reply.text, blocks::MAX_TEXT_CHARS),
                blocks: Some(Value::Array(reply.blocks())),
            },
        };
        store.enqueue(&[msg], None).await?;
        (self.on_enqueue)();
        Ok(())
    }

    async fn abort_run(&self, run_id: &str, reason: &str) {
        if let Err(e) = self
            .app
            .engine
            .abort(
                crate::store::AbortScope::Run(run_id.to_string()),
                CHAOSBOT,
                reason,
            )
            .await
        {
            warn!(%run_id, error = %e, "cannot abort the game day's run");
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
