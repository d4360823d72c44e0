//! The Slack side of schedules: `/chaos schedule`, `schedules`, `unschedule`, `resume`, and
//! the Skip button of a heads-up. `schedule`, `unschedule` and `resume` are use cases of
//! [`crate::app`]; this renders their outcome.
//!
//! Who may do what:
//! - `schedule`: whoever may `start` the experiment in that channel (checked now, exactly as
//!   `start` would; the run itself is started later in the creator's name).
//! - `unschedule`: the schedule's creator or an operator.
//! - Skip: the schedule's creator, an operator, or anyone who may start that experiment in the
//!   schedule's channel (who could run it may also decline it once).
//! - `resume`: whoever may `abort all` (operators).

use tracing::{info, warn};

use super::handlers::{command_name, origin};
use crate::app::{Caller, Scheduled};
use crate::schedule::when::{When, human, local_time};
use crate::slack::blocks::Reply;
use crate::slack::edge::{SlackApp, SlashCommand, auth, resume_text};
use crate::slack::schedules::{
    heads_up_blocks, heads_up_key, note, params_text, schedule_thread_key,
};
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::schedules::{Schedule, SkipOutcome};

/// How many planned fires `schedule` shows.
const SHOW_NEXT: usize = 3;

impl SlackApp {
    /// `/chaos schedule <experiment> <when> [key=value …]`.
    pub(crate) async fn schedule(
        &self,
        cmd: &SlashCommand,
        experiment: &str,
        when_text: &str,
        params: &[(String, String)],
    ) -> Result<Reply, Reply> {
        let asker = self.asker(&cmd.user_id, command_name(cmd));
        let Scheduled {
            schedule: s,
            when,
            window,
        } = self
            .app()
            .schedule(&origin(cmd), experiment, when_text, params)
            .await
            .map_err(|r| Reply::error(asker.text(&r)))?;
        let now = self.clock.now_ms();
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
        let asker = self.asker(&cmd.user_id, command_name(cmd));
        let s = self
            .app()
            .unschedule(&Caller::Slack(origin(cmd)), id)
            .await
            .map_err(|r| Reply::error(asker.text(&r)))?;
        Ok(Reply::simple(format!(
            ":wastebasket: Schedule `{}` (`{}` {}) is removed; it starts nothing more.",
            s.id, s.experiment, s.when_text
        )))
    }

    /// `/chaos resume`: lifts the halt.
    pub(crate) async fn resume(&self, cmd: &SlashCommand) -> Result<Reply, Reply> {
        let asker = self.asker(&cmd.user_id, command_name(cmd));
        match self.app().resume(&Caller::Slack(origin(cmd))).await {
            Ok(Some(h)) => Ok(Reply::simple(format!(
                ":arrow_forward: The halt <@{}> put in force at {} ({}) is lifted: runs and schedules start again.",
                h.halted_by,
                local_time(self.cfg.schedules.when_rules().default_tz, h.since_ms),
                h.reason
            ))),
            Ok(None) => Ok(Reply::simple(
                "No halt is in force; runs and schedules already start as usual.",
            )),
            Err(r) => Err(Reply::error(resume_text(&asker, &r))),
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
                            revision: None,
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
