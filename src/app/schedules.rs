//! Schedules: make one (checked now exactly as a start would be), remove one.

use tracing::{info, warn};

use super::policy::{self, Caller, Denial};
use super::{App, Refusal, StoreOp};
use crate::run::SlackOrigin;
use crate::schedule::{AllowedWindow, When};
use crate::store::schedules::{NewSchedule, Schedule};

/// A schedule just made, with what an edge shows about it.
#[derive(Debug)]
pub struct Scheduled {
    pub schedule: Schedule,
    pub when: When,
    /// The allowed hours its fires must fall in.
    pub window: AllowedWindow,
}

impl App {
    /// `schedule <experiment> <when> [key=value …]` in `origin`'s channel. The run itself is
    /// started later in the creator's name, and checked again then.
    pub async fn schedule(
        &self,
        origin: &SlackOrigin,
        experiment: &str,
        when_text: &str,
        params: &[(String, String)],
    ) -> Result<Scheduled, Refusal> {
        // Exactly what `start` checks, now, so a schedule never fails later for bad input.
        let exp = self.prepare(&origin.user, &origin.channel, experiment, params)?;
        let now = self.clock.now_ms();
        let rules = self.cfg.schedules.when_rules();
        let when = When::parse(when_text, &rules, now).map_err(Refusal::BadWhen)?;
        let window = self.cfg.schedules.window().map_err(Refusal::BadSettings)?;
        let new = NewSchedule {
            experiment: exp.name.clone(),
            when_text: when_text.to_string(),
            expr: when.expr.clone(),
            tz: when.tz.name().to_string(),
            params: params.iter().cloned().collect(),
            team: origin.team.clone(),
            channel: origin.channel.clone(),
            created_by: origin.user.clone(),
            created_ms: now,
        };
        let schedule = self.store.create_schedule(&new).await.map_err(|e| {
            warn!(error = %e, "cannot store a schedule");
            Refusal::store(StoreOp::SaveSchedule)(e)
        })?;
        info!(schedule_id = schedule.id, experiment = %schedule.experiment, expr = %schedule.expr, tz = %schedule.tz, "schedule created");
        Ok(Scheduled {
            schedule,
            when,
            window,
        })
    }

    /// Removes schedule `id` (`#12` or `12`) of the caller's workspace: its creator or an
    /// operator. The removed schedule.
    pub async fn unschedule(&self, caller: &Caller, id: &str) -> Result<Schedule, Refusal> {
        let no_such = || Refusal::NoSuchSchedule(id.to_string());
        let n: i64 = id.trim_start_matches('#').parse().map_err(|_| no_such())?;
        let team = match caller {
            Caller::Slack(o) => Some(o.team.as_str()),
            Caller::Terminal(_) => None,
        };
        let s = match self.store.get_schedule(n).await {
            Ok(Some(s)) if team.is_none_or(|t| s.team == t) && s.removed_ms.is_none() => s,
            Ok(_) => return Err(no_such()),
            Err(e) => return Err(Refusal::store(StoreOp::ReadSchedule(id.to_string()))(e)),
        };
        if !policy::is_owner_or_operator(&self.cfg.slack, caller, &s.created_by) {
            return Err(Refusal::NotAllowed(Denial::NotCreator {
                schedule_id: s.id,
                created_by: s.created_by,
            }));
        }
        match self
            .store
            .remove_schedule(s.id, caller.user(), self.clock.now_ms())
            .await
        {
            Ok(true) => {
                info!(schedule_id = s.id, by = caller.user(), "schedule removed");
                Ok(s)
            }
            Ok(false) => Err(no_such()),
            Err(e) => Err(Refusal::store(StoreOp::RemoveSchedule(s.id))(e)),
        }
    }
}
