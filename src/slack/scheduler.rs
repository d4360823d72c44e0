//! The scheduler: a task of `chaosbot serve` that ticks (every second of real time, reading
//! its clock each tick) and, for every schedule:
//!
//! 1. claims each fire that is due (fire time ≤ now, after the last claimed one) — the claim is
//!    a conditional UPDATE, so with several replicas exactly one acts on a fire;
//! 2. for a fire it won: a fire more than `grace` late (the process was down) is marked missed
//!    and noted once; a skipped fire stays skipped; otherwise it checks the allowed hours, the
//!    creator's permission and the targets held by active runs, and starts the run through the
//!    application layer as `/chaos start` does (the store refuses it while a halt is in
//!    force) — or posts a note saying why not;
//! 3. posts the heads-up (with a Skip button) of the next fire once it is within `heads_up`;
//!    the heads-up row is inserted with ON CONFLICT DO NOTHING, so it is posted once too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::app::{App, Refusal};
use crate::clock::DynClock;
use crate::run::{RunSource, RunState, SlackOrigin};
use crate::schedule::when::{When, human};
use crate::schedule::{AllowedWindow, halt_text};
use crate::slack::edge::Asker;
use crate::slack::schedules::{heads_up_blocks, heads_up_key, note, schedule_thread_key};
use crate::spec::model::Experiment;
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::schedules::{Fire, Schedule};
use crate::store::{RunFilter, StoreResult};

/// Due fires one schedule may claim in one tick (a long outage is worked off over ticks).
const MAX_DUE_PER_TICK: usize = 100;
/// How many runs are scanned for targets in use (newest first).
const ACTIVE_SCAN: u32 = 500;
/// At most this many missed fire times are named in one note.
const MISSED_SHOWN: usize = 5;

pub struct Scheduler {
    app: App,
    clock: DynClock,
    owner: String,
    tick: Duration,
}

impl Scheduler {
    /// `app`: the application layer runs are started through (an `Arc<SlackApp>` converts).
    pub fn new(app: impl Into<App>, clock: DynClock) -> Scheduler {
        static N: AtomicU64 = AtomicU64::new(0);
        let app: App = app.into();
        let owner = format!(
            "{}#sched{}",
            app.engine.instance(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Scheduler {
            app,
            clock,
            owner,
            tick: Duration::from_secs(1),
        }
    }

    /// Real time between ticks (1 s by default).
    pub fn with_tick(mut self, tick: Duration) -> Scheduler {
        self.tick = tick;
        self
    }

    /// Ticks until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let window = match self.app.cfg.schedules.window() {
            Ok(w) => w,
            Err(e) => {
                // Config validation refuses this at start; reaching here means a config built
                // in code. Say so once and do nothing rather than guess hours.
                warn!(error = %e, "the scheduler is off: [schedules] is not valid");
                return;
            }
        };
        info!(owner = %self.owner, "scheduler started");
        loop {
            if let Err(e) = self
                .tick(&window)
                .instrument(tracing::debug_span!("scheduler_tick"))
                .await
            {
                warn!(error = %e, "scheduler tick failed; retrying next tick");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
        info!("scheduler stopped");
    }

    /// One pass over every schedule.
    pub async fn tick(&self, window: &AllowedWindow) -> StoreResult<()> {
        let now = self.clock.now_ms();
        for s in self.app.store.list_schedules().await? {
            let when = match When::from_stored(&s.expr, &s.tz) {
                Ok(w) => w,
                Err(e) => {
                    warn!(schedule_id = s.id, error = %e, "stored schedule cannot be read; skipped");
                    continue;
                }
            };
            if let Err(e) = self.schedule_tick(&s, &when, window, now).await {
                warn!(schedule_id = s.id, error = %e, "schedule tick failed");
            }
        }
        Ok(())
    }

    async fn schedule_tick(
        &self,
        s: &Schedule,
        when: &When,
        window: &AllowedWindow,
        now: i64,
    ) -> StoreResult<()> {
        let store = &self.app.store;
        let grace = i64::try_from(self.app.cfg.schedules.grace.as_millis()).unwrap_or(i64::MAX);
        let mut cursor = s
            .last_claimed_fire_ms
            .unwrap_or(s.created_ms)
            .max(s.created_ms);
        let mut missed: Vec<(i64, bool)> = Vec::new();
        for _ in 0..MAX_DUE_PER_TICK {
            let Some(f) = when.next_after(cursor) else {
                break;
            };
            if f > now {
                break;
            }
            cursor = f;
            let Some(fire) = store.claim_fire(s.id, f, &self.owner, now).await? else {
                debug!(
                    schedule_id = s.id,
                    fire_ms = f,
                    "fire claimed by another scheduler"
                );
                continue;
            };
            if now - f > grace {
                store
                    .finish_fire(s.id, f, None, Some("missed: chaosbot was not running"))
                    .await?;
                missed.push((f, fire.heads_up_ms.is_some()));
                continue;
            }
            self.fire(s, when, window, &fire).await?;
        }
        if !missed.is_empty() {
            self.missed_note(s, when, &missed, now).await?;
        }
        // The heads-up of the next fire.
        let heads_up = i64::try_from(self.app.cfg.schedules.heads_up.as_millis()).unwrap_or(0);
        if heads_up > 0
            && let Some(next) = when.next_after(now.max(cursor))
            && next - now <= heads_up
            && store.claim_heads_up(s.id, next, now).await?
        {
            self.post_heads_up(s, when, window, next).await?;
        }
        Ok(())
    }

    async fn post_heads_up(
        &self,
        s: &Schedule,
        when: &When,
        window: &AllowedWindow,
        fire_ms: i64,
    ) -> StoreResult<()> {
        let mut text = format!(
            ":calendar: Heads-up: `{}`{} starts at {} (schedule `{}`, by <@{}>). Skip this run with the button below.",
            s.experiment,
            params_suffix(s),
            when.local(fire_ms),
            s.id,
            s.created_by
        );
        // Say now what will stop it, so nobody is surprised at the fire time.
        if !window.allows(fire_ms) {
            text.push_str(&format!(
                "\n:warning: That is outside the allowed hours ({}), so it will be skipped.",
                window.describe()
            ));
        }
        if let Some(h) = self.app.store.current_halt().await? {
            text.push_str(&format!(
                "\n:no_entry: It will be skipped unless the halt is lifted first: {}.",
                halt_text(&h, when.tz)
            ));
        }
        let msg = OutboundMessage {
            thread_key: schedule_thread_key(s.id),
            channel: s.channel.clone(),
            action: OutboundAction::Post {
                key: Some(heads_up_key(s.id, fire_ms)),
                in_thread_of: None,
                text: text.clone(),
                blocks: Some(heads_up_blocks(&text, s.id, fire_ms, true)),
            },
        };
        self.app.store.enqueue(&[msg], None).await?;
        info!(schedule_id = s.id, fire_ms, "heads-up queued");
        Ok(())
    }

    /// Acts on a fire this scheduler claimed.
    async fn fire(
        &self,
        s: &Schedule,
        when: &When,
        window: &AllowedWindow,
        fire: &Fire,
    ) -> StoreResult<()> {
        let store = &self.app.store;
        let f = fire.fire_ms;
        let posted = fire.heads_up_ms.is_some();
        if fire.skipped.is_some() {
            // The Skip already posted its note.
            info!(schedule_id = s.id, fire_ms = f, "skipped fire not run");
            return Ok(());
        }
        let planned = when.local(f);
        let skip = |reason: String| async move {
            store.finish_fire(s.id, f, None, Some(&reason)).await?;
            let next = when
                .next_after(f)
                .map(|t| when.local(t))
                .unwrap_or_else(|| "none".into());
            let text = format!(
                ":fast_forward: Skipped the scheduled run of `{}` planned for {planned}: {reason}. Next run: {next}.",
                s.experiment
            );
            info!(schedule_id = s.id, fire_ms = f, reason = %reason, "scheduled run skipped");
            store.enqueue(&[note(s, f, posted, &text)], None).await
        };
        if !window.allows(f) {
            return skip(format!(
                "it is outside the allowed hours ({})",
                window.describe()
            ))
            .await;
        }
        let params: Vec<(String, String)> = s.params.clone().into_iter().collect();
        // The same checks as `/chaos start`, in the creator's name (their access may have
        // changed since the schedule was made).
        let asker = Asker {
            cfg: &self.app.cfg,
            user: &s.created_by,
            command: "/chaos",
        };
        let exp = match self
            .app
            .prepare(&s.created_by, &s.channel, &s.experiment, &params)
        {
            Ok(exp) => exp,
            Err(r) => return skip(format!("it cannot start: {}", asker.text(&r))).await,
        };
        if let Some(held) = self.targets_in_use(&exp).await? {
            return skip(held).await;
        }
        let source = RunSource::Schedule {
            schedule_id: s.id,
            origin: SlackOrigin {
                team: s.team.clone(),
                channel: s.channel.clone(),
                user: s.created_by.clone(),
            },
        };
        match self.app.launch(&exp, &s.created_by, source, None).await {
            Ok(run_id) => {
                store.finish_fire(s.id, f, Some(&run_id), None).await?;
                info!(schedule_id = s.id, fire_ms = f, run_id = %run_id, "scheduled run started");
                if posted {
                    let text = format!(
                        ":arrow_forward: Started run `{run_id}` of `{}` as planned; it appears in this channel. Stop it with `/chaos abort {run_id}`.",
                        s.experiment
                    );
                    store.enqueue(&[note(s, f, true, &text)], None).await?;
                }
                Ok(())
            }
            // The halt `abort all` put in force, checked by the store as it creates the run.
            Err(Refusal::Halted(h)) => skip(halt_text(&h, when.tz)).await,
            Err(r) => skip(format!("it could not start: {}", asker.text(&r))).await,
        }
    }

    /// Another queued or running run that touches one of the experiment's targets, as the
    /// reason to skip.
    async fn targets_in_use(&self, exp: &Experiment) -> StoreResult<Option<String>> {
        let mine = exp.targets();
        if mine.is_empty() {
            return Ok(None);
        }
        let runs = self
            .app
            .store
            .list_runs(RunFilter {
                experiment: None,
                limit: ACTIVE_SCAN,
            })
            .await?;
        for r in runs.iter().filter(|r| r.state != RunState::Done) {
            let Ok(other) = serde_json::from_value::<Experiment>(r.spec.clone()) else {
                continue;
            };
            let shared: Vec<String> = other
                .targets()
                .into_iter()
                .filter(|t| mine.contains(t))
                .collect();
            if !shared.is_empty() {
                return Ok(Some(format!(
                    "run `{}` of `{}` holds target {} ({})",
                    r.id,
                    r.experiment,
                    shared
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.state
                )));
            }
        }
        Ok(None)
    }

    async fn missed_note(
        &self,
        s: &Schedule,
        when: &When,
        missed: &[(i64, bool)],
        now: i64,
    ) -> StoreResult<()> {
        let shown: Vec<String> = missed
            .iter()
            .take(MISSED_SHOWN)
            .map(|(t, _)| when.local(*t))
            .collect();
        let more = missed.len().saturating_sub(MISSED_SHOWN);
        let next = when
            .next_after(now)
            .map(|t| when.local(t))
            .unwrap_or_else(|| "none".into());
        let text = format!(
            ":zzz: Missed {} scheduled run(s) of `{}` (planned for {}{}): chaosbot was not running then, and a run more than {} late is not started. Next run: {next}.",
            missed.len(),
            s.experiment,
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            human(self.app.cfg.schedules.grace)
        );
        warn!(
            schedule_id = s.id,
            missed = missed.len(),
            "scheduled runs missed"
        );
        // Under the last missed fire's heads-up when it had one, else in the channel.
        let Some(&(last, posted)) = missed.last() else {
            return Ok(());
        };
        self.app
            .store
            .enqueue(&[note(s, last, posted, &text)], None)
            .await
    }
}

fn params_suffix(s: &Schedule) -> String {
    if s.params.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" with `{}`", p.join(" "))
    }
}
