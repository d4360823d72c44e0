//! The Slack side of schedules: `/chaos schedule`, `schedules`, `unschedule`, `resume`, the
//! halt `abort all` puts in force, and the Skip button of a heads-up.
//!
//! Who may do what:
//! - `schedule`: whoever may `start` the experiment in that channel (checked now, exactly as
//!   `start` would; the run itself is started later in the creator's name).
//! - `unschedule`: the schedule's creator or an operator.
//! - Skip: the schedule's creator, an operator, or anyone who may start that experiment in the
//!   schedule's channel (who could run it may also decline it once).
//! - `resume`: whoever may `abort all` (operators).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::when::{When, human, local_time};
use crate::slack::blocks::{Reply, truncate};
use crate::slack::edge::{SlackApp, SlashCommand, auth};
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::schedules::{NewSchedule, Schedule, SkipOutcome};

/// `action_id` of the Skip button on a heads-up; its `value` is `<schedule id>:<fire ms>`.
pub const SKIP_ACTION_ID: &str = "skip_fire";

/// How many planned fires `schedule` shows.
const SHOW_NEXT: usize = 3;

/// The outbox key of a fire's heads-up message (its notes are replies in its thread).
pub fn heads_up_key(schedule_id: i64, fire_ms: i64) -> String {
    format!("schedule:{schedule_id}:{fire_ms}")
}

/// Messages of one schedule are delivered in order.
pub fn schedule_thread_key(schedule_id: i64) -> String {
    format!("schedule:{schedule_id}")
}

/// A note about a fire: a reply under its heads-up when one was posted, else in the channel.
pub fn note(s: &Schedule, fire_ms: i64, heads_up_posted: bool, text: &str) -> OutboundMessage {
    OutboundMessage {
        thread_key: schedule_thread_key(s.id),
        channel: s.channel.clone(),
        action: OutboundAction::Post {
            key: None,
            in_thread_of: heads_up_posted.then(|| heads_up_key(s.id, fire_ms)),
            text: truncate(text, crate::slack::blocks::MAX_TEXT_CHARS),
            blocks: Some(Value::Array(Reply::simple(text).blocks())),
        },
    }
}

/// The heads-up blocks: what will run when, and (while it can still be skipped) a Skip button.
pub fn heads_up_blocks(text: &str, schedule_id: i64, fire_ms: i64, skippable: bool) -> Value {
    let mut blocks = Reply::simple(text).blocks();
    if skippable {
        blocks.push(json!({
            "type": "actions",
            "block_id": "schedule_fire",
            "elements": [{
                "type": "button",
                "action_id": SKIP_ACTION_ID,
                "text": {"type": "plain_text", "text": "Skip this run"},
                "value": format!("{schedule_id}:{fire_ms}"),
                "confirm": {
                    "title": {"type": "plain_text", "text": "Skip this run?"},
                    "text": {"type": "mrkdwn", "text": "Only this run is skipped; the schedule stays."},
                    "confirm": {"type": "plain_text", "text": "Skip"},
                    "deny": {"type": "plain_text", "text": "Keep it"},
                },
            }],
        }));
    }
    Value::Array(blocks)
}

fn params_text(params: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" with `{}`", p.join(" "))
    }
}

fn parse_id(id: &str) -> Option<i64> {
    id.trim_start_matches('#').parse().ok()
}

impl SlackApp {
    /// `/chaos schedule <experiment> <when> [key=value …]`.
    pub(crate) async fn schedule(
        &self,
        cmd: &SlashCommand,
        experiment: &str,
        when_text: &str,
        params: &[(String, String)],
    ) -> Result<Reply, Reply> {
        // Exactly what `start` checks, now, so a schedule never fails later for bad input.
        let exp = self
            .authorize_and_resolve(&cmd.user_id, &cmd.channel_id, experiment, params)
            .map_err(|(_, m)| Reply::error(m))?;
        let now = self.clock.now_ms();
        let rules = self.cfg.schedules.when_rules();
        let when = When::parse(when_text, &rules, now).map_err(|e| Reply::error(e.to_string()))?;
        let window = self.cfg.schedules.window().map_err(Reply::error)?;
        let new = NewSchedule {
            experiment: exp.name.clone(),
            when_text: when_text.to_string(),
            expr: when.expr.clone(),
            tz: when.tz.name().to_string(),
            params: params.iter().cloned().collect(),
            team: cmd.team_id.clone(),
            channel: cmd.channel_id.clone(),
            created_by: cmd.user_id.clone(),
            created_ms: now,
        };
        let s = self.store.create_schedule(&new).await.map_err(|e| {
            warn!(error = %e, "cannot store a schedule");
            Reply::error(format!(
                "the schedule could not be saved ({e}); nothing was scheduled. Try again."
            ))
        })?;
        info!(schedule_id = s.id, experiment = %s.experiment, expr = %s.expr, tz = %s.tz, "schedule created");
        let mut lines = vec![format!(
            ":calendar: Schedule `{}`: `{}`{} *{}* (`{}` in {}).",
            s.id,
            s.experiment,
            params_text(&s.params),
            s.when_text,
            s.expr,
            s.tz
        )];
        lines.push("Next runs:".into());
        for t in when.next_n(now, SHOW_NEXT) {
            lines.push(format!(
                "• {}{}",
                when.local(t),
                if window.allows(t) {
                    String::new()
                } else {
                    format!(
                        " — outside the allowed hours ({}), so it will be skipped",
                        window.describe()
                    )
                }
            ));
        }
        lines.push(format!(
            "A heads-up with a Skip button is posted here {} before each run. `{} schedules` lists the schedules; `{} unschedule {}` removes this one.",
            human(self.cfg.schedules.heads_up),
            command_name(cmd),
            command_name(cmd),
            s.id
        ));
        Ok(Reply::simple(lines.join("\n")))
    }

    /// `/chaos schedules`: the workspace's schedules.
    pub(crate) async fn schedules(&self, cmd: &SlashCommand) -> Result<Reply, Reply> {
        let all = self.store.list_schedules().await.map_err(|e| {
            Reply::error(format!(
                "cannot read the schedules right now ({e}); try again"
            ))
        })?;
        let mine: Vec<&Schedule> = all.iter().filter(|s| s.team == cmd.team_id).collect();
        if mine.is_empty() {
            return Ok(Reply::simple(format!(
                "No schedules. Create one with `{} schedule <experiment> every tue,thu at 14:00`.",
                command_name(cmd)
            )));
        }
        let now = self.clock.now_ms();
        let mut lines = vec![format!("*{} schedule(s)*", mine.len())];
        for s in &mine {
            let next = When::from_stored(&s.expr, &s.tz)
                .ok()
                .and_then(|w| w.next_after(now).map(|t| w.local(t)))
                .unwrap_or_else(|| "none".into());
            lines.push(format!(
                "• `{}` *{}*{} — {} · next: {} · in <#{}> · by <@{}>",
                s.id,
                s.experiment,
                params_text(&s.params),
                s.when_text,
                next,
                s.channel,
                s.created_by
            ));
        }
        let mut reply = Reply::new(format!("{} schedule(s)", mine.len()));
        reply.push(lines.join("\n"));
        Ok(reply)
    }

    /// `/chaos unschedule <id>`: the creator or an operator.
    pub(crate) async fn unschedule(&self, cmd: &SlashCommand, id: &str) -> Result<Reply, Reply> {
        let no_such = || {
            Reply::error(format!(
                "no schedule `{id}`; `{} schedules` lists them with their ids",
                command_name(cmd)
            ))
        };
        let n = parse_id(id).ok_or_else(no_such)?;
        let s = match self.store.get_schedule(n).await {
            Ok(Some(s)) if s.team == cmd.team_id && s.removed_ms.is_none() => s,
            Ok(_) => return Err(no_such()),
            Err(e) => {
                return Err(Reply::error(format!(
                    "cannot read schedule `{id}` right now ({e}); try again"
                )));
            }
        };
        if s.created_by != cmd.user_id && !auth::is_operator(&self.cfg.slack, &cmd.user_id) {
            return Err(Reply::error(format!(
                "only <@{}>, who created schedule `{}`, or an operator may remove it. Ask them, or {}.",
                s.created_by,
                s.id,
                auth::whom_to_ask(&self.cfg.slack)
            )));
        }
        match self
            .store
            .remove_schedule(s.id, &cmd.user_id, self.clock.now_ms())
            .await
        {
            Ok(true) => Ok(Reply::simple(format!(
                ":wastebasket: Schedule `{}` (`{}` {}) is removed; it starts nothing more.",
                s.id, s.experiment, s.when_text
            ))),
            Ok(false) => Err(no_such()),
            Err(e) => Err(Reply::error(format!(
                "schedule `{}` could not be removed ({e}); it is still active. Try again.",
                s.id
            ))),
        }
    }

    /// Puts the halt in force (for `abort all`); the sentence to add to the answer.
    pub(crate) async fn put_halt(&self, user: &str, reason: &str) -> String {
        match self.store.set_halt(user, reason, self.clock.now_ms()).await {
            Ok(h) if h.halted_by == user && h.reason == reason => {
                info!(user, reason, "halt in force");
                ":no_entry: A halt is now in force: no run starts (from `start`, the form or a schedule) until an operator types `/chaos resume`.".to_string()
            }
            Ok(h) => format!(
                ":no_entry: A halt was already in force (since {}, by <@{}>); it stays until an operator types `/chaos resume`.",
                local_time(self.cfg.schedules.when_rules().default_tz, h.since_ms),
                h.halted_by
            ),
            Err(e) => {
                warn!(error = %e, "cannot record the halt");
                format!(
                    ":warning: The halt could not be recorded ({e}): new runs may still start. Type `abort all` again."
                )
            }
        }
    }

    /// `/chaos resume`: lifts the halt.
    pub(crate) async fn resume(&self, cmd: &SlashCommand) -> Result<Reply, Reply> {
        auth::may_abort_all(&self.cfg.slack, &cmd.user_id).map_err(|_| {
            Reply::error(format!(
                "only operators (who may `abort all`) may lift the halt; ask {}.",
                auth::whom_to_ask(&self.cfg.slack)
            ))
        })?;
        match self
            .store
            .lift_halt(&cmd.user_id, self.clock.now_ms())
            .await
        {
            Ok(Some(h)) => {
                info!(user = %cmd.user_id, "halt lifted");
                Ok(Reply::simple(format!(
                    ":arrow_forward: The halt <@{}> put in force at {} ({}) is lifted: runs and schedules start again.",
                    h.halted_by,
                    local_time(self.cfg.schedules.when_rules().default_tz, h.since_ms),
                    h.reason
                )))
            }
            Ok(None) => Ok(Reply::simple(
                "No halt is in force; runs and schedules already start as usual.",
            )),
            Err(e) => Err(Reply::error(format!(
                "the halt could not be lifted ({e}); it is still in force. Try again."
            ))),
        }
    }

    /// The Skip button of a heads-up.
    pub(crate) async fn skip_button(&self, team: &str, user: &str, channel: &str, value: &str) {
        let result = self.skip_fire(team, user, value).await;
        let (reply, outcome) = match result {
            Ok(m) => (Reply::simple(m), "ok".to_string()),
            Err(m) => {
                let o = format!("refused: {m}");
                (Reply::error(m), o)
            }
        };
        info!(value, outcome, "skip button handled");
        if !channel.is_empty() {
            self.tell(channel, user, &reply).await;
        }
        self.audit(team, user, channel, "button:skip_fire", value, &outcome)
            .await;
    }

    async fn skip_fire(&self, team: &str, user: &str, value: &str) -> Result<String, String> {
        auth::check_team(&self.cfg.slack, team)?;
        let bad = || {
            format!(
                "this Skip button carries no schedule (`{value}`); use `/chaos unschedule <id>` to stop a schedule"
            )
        };
        let (sid, fire_ms) = value.split_once(':').ok_or_else(bad)?;
        let (sid, fire_ms): (i64, i64) = (
            sid.parse().map_err(|_| bad())?,
            fire_ms.parse().map_err(|_| bad())?,
        );
        let s = match self.store.get_schedule(sid).await {
            Ok(Some(s)) if s.team == team => s,
            Ok(_) => {
                return Err(format!(
                    "schedule `{sid}` no longer exists; nothing to skip"
                ));
            }
            Err(e) => return Err(format!("cannot read schedule `{sid}` ({e}); try again")),
        };
        if s.created_by != user
            && !auth::is_operator(&self.cfg.slack, user)
            && auth::may_start(&self.cfg.slack, user, &s.channel, &s.experiment).is_err()
        {
            return Err(format!(
                "only <@{}>, who created schedule `{}`, an operator, or someone allowed to start `{}` here may skip its runs. Ask them, or {}.",
                s.created_by,
                s.id,
                s.experiment,
                auth::whom_to_ask(&self.cfg.slack)
            ));
        }
        let tz = When::from_stored(&s.expr, &s.tz)
            .map(|w| w.tz)
            .unwrap_or(chrono_tz::Tz::UTC);
        let planned = local_time(tz, fire_ms);
        let reason = format!("skipped by <@{user}>");
        match self.store.skip_fire(sid, fire_ms, user, &reason).await {
            Ok(SkipOutcome::Skipped) => {
                info!(schedule_id = sid, fire_ms, user, "scheduled run skipped");
                let next = When::from_stored(&s.expr, &s.tz)
                    .ok()
                    .and_then(|w| w.next_after(fire_ms).map(|t| w.local(t)))
                    .unwrap_or_else(|| "none".into());
                let text = format!(
                    ":fast_forward: <@{user}> skipped the run of `{}` planned for {planned}. The schedule stays; its next run is {next}.",
                    s.experiment
                );
                let heads_up = format!(
                    ":calendar: ~`{}`{} at {planned}~ — skipped by <@{user}>.",
                    s.experiment,
                    params_text(&s.params)
                );
                let msgs = [
                    OutboundMessage {
                        thread_key: schedule_thread_key(s.id),
                        channel: s.channel.clone(),
                        action: OutboundAction::Update {
                            key: heads_up_key(s.id, fire_ms),
                            text: heads_up.clone(),
                            blocks: Some(heads_up_blocks(&heads_up, s.id, fire_ms, false)),
                        },
                    },
                    note(&s, fire_ms, true, &text),
                ];
                if let Err(e) = self.store.enqueue(&msgs, None).await {
                    warn!(error = %e, "cannot queue the skip note");
                }
                Ok(format!(
                    "Skipped the run of `{}` planned for {planned}.",
                    s.experiment
                ))
            }
            Ok(SkipOutcome::AlreadySkipped(f)) => Err(format!(
                "the run of `{}` planned for {planned} was already skipped ({}).",
                s.experiment,
                f.skipped.unwrap_or_default()
            )),
            Ok(SkipOutcome::AlreadyClaimed(f)) => Err(match f.run_id {
                Some(id) => format!(
                    "too late to skip: the run planned for {planned} already started as `{id}`; stop it with `/chaos abort {id}`."
                ),
                None => format!(
                    "too late to skip: the run planned for {planned} is already being started; `/chaos status` shows it, `/chaos abort <run-id>` stops it."
                ),
            }),
            Err(e) => Err(format!("the skip could not be recorded ({e}); try again")),
        }
    }
}

fn command_name(cmd: &SlashCommand) -> &str {
    if cmd.command.trim().is_empty() {
        "/chaos"
    } else {
        cmd.command.trim()
    }
}
