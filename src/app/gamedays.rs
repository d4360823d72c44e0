//! Game days: start one (validated, authorized as a whole, recorded; the driver runs it) and
//! stop one (the run in progress is aborted too).

use tracing::{info, warn};

use super::policy::{self, Caller, Denial};
use super::{App, Refusal, StoreOp};
use crate::engine::EngineError;
use crate::gameday::plan::{Plan, load_plans};
use crate::run::{RunState, SlackOrigin};
use crate::store::AbortScope;
use crate::store::gamedays::{GamedayRecord, GamedayState, NewGameday};

/// What stopping a game day did.
#[derive(Debug)]
pub struct GamedayStopped {
    pub gameday: GamedayRecord,
    /// The run in progress and how its abort went (none when no run was active).
    pub run: Option<(String, Result<(), EngineError>)>,
}

impl App {
    /// Starts plan `name` in `origin`'s channel.
    pub async fn gameday_start(
        &self,
        origin: &SlackOrigin,
        name: &str,
    ) -> Result<(GamedayRecord, Plan), Refusal> {
        let plans = load_plans(&self.cfg, &self.catalog());
        let plan = match plans.find(name) {
            Ok(p) => p.clone(),
            Err(message) => {
                return Err(Refusal::UnknownPlan {
                    name: name.to_string(),
                    message,
                    problems: plans.problems_of(name),
                });
            }
        };
        // Authorized like `start`, for every experiment on the agenda; refused as a whole.
        let mut denials: Vec<Denial> = Vec::new();
        for item in &plan.agenda {
            if let Err(d) = policy::may_start(
                &self.cfg.slack,
                &origin.user,
                &origin.channel,
                &item.experiment,
            ) && !denials.contains(&d)
            {
                denials.push(d);
            }
        }
        if !denials.is_empty() {
            return Err(Refusal::GamedayNotAllowed {
                plan: plan.name,
                denials,
            });
        }
        // Creating a game day creates no run (the store's halt check is on runs), and a game
        // day under a halt would stop at its first item: refuse it here.
        match self.store.current_halt().await {
            Ok(None) => {}
            Ok(Some(h)) => return Err(Refusal::Halted(Box::new(h))),
            Err(e) => {
                warn!(error = %e, "cannot read the halt");
                return Err(Refusal::store(StoreOp::ReadHalt)(e));
            }
        }
        // One track per channel: two game days interleaving their runs would be unreadable.
        let open = self.store.open_gamedays().await.map_err(|e| {
            warn!(error = %e, "cannot read the open game days");
            Refusal::store(StoreOp::ReadGamedays)(e)
        })?;
        if let Some(g) = open
            .iter()
            .find(|g| g.channel == origin.channel && g.state == GamedayState::Running)
        {
            return Err(Refusal::GamedayBusy {
                id: g.id.clone(),
                plan: g.plan.clone(),
            });
        }
        let plan_json = serde_json::to_value(&plan).map_err(|e| Refusal::PlanNotRecordable {
            plan: name.to_string(),
            error: e.to_string(),
        })?;
        let new = NewGameday {
            id: crate::gameday::new_gameday_id(),
            plan: plan.name.clone(),
            plan_json,
            team: origin.team.clone(),
            channel: origin.channel.clone(),
            started_by: origin.user.clone(),
            items: plan.agenda.len(),
            created_ms: crate::run::now_ms(),
        };
        let g = self.store.create_gameday(&new).await.map_err(|e| {
            warn!(error = %e, "cannot record a game day");
            Refusal::store(StoreOp::RecordGameday)(e)
        })?;
        info!(gameday = %g.id, plan = %plan.name, "game day started");
        Ok((g, plan))
    }

    /// Stops game day `id` of the caller's workspace: its starter or an operator. The run in
    /// progress is aborted too (the driver waits for its verdict for the summary).
    pub async fn gameday_stop(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<GamedayStopped, Refusal> {
        let team = match caller {
            Caller::Slack(o) => Some(o.team.as_str()),
            Caller::Terminal(_) => None,
        };
        let g = match self.store.get_gameday(id).await {
            Ok(Some(g)) if team.is_none_or(|t| g.team == t) => g,
            Ok(_) => return Err(Refusal::NoSuchGameday(id.to_string())),
            Err(e) => return Err(Refusal::store(StoreOp::ReadGameday(id.to_string()))(e)),
        };
        if g.state != GamedayState::Running {
            return Err(Refusal::GamedayNotRunning {
                id: id.to_string(),
                state: g.state,
            });
        }
        if !policy::is_owner_or_operator(&self.cfg.slack, caller, &g.started_by) {
            return Err(Refusal::NotAllowed(Denial::NotStarter {
                gameday_id: g.id,
                started_by: g.started_by,
            }));
        }
        let user = caller.user();
        let stopped = self
            .store
            .stop_gameday(id, user, reason, crate::run::now_ms())
            .await
            .map_err(Refusal::store(StoreOp::StopGameday(id.to_string())))?;
        let Some(stopped) = stopped.filter(|s| s.stopped_by.as_deref() == Some(user)) else {
            return Err(Refusal::GamedayEnded(id.to_string()));
        };
        let mut run = None;
        if let Some(run_id) = stopped.run_ids.get(stopped.current).cloned().flatten() {
            let active = matches!(
                self.store.get_run(&run_id).await,
                Ok(Some(r)) if r.state != RunState::Done
            );
            if active {
                let aborted = self
                    .engine
                    .abort(
                        AbortScope::Run(run_id.clone()),
                        user,
                        &format!("game day `{id}` stopped: {reason}"),
                    )
                    .await
                    .map(|_| ());
                if let Err(e) = &aborted {
                    warn!(error = %e, %run_id, "cannot abort the game day's run");
                }
                run = Some((run_id, aborted));
            }
        }
        info!(gameday = id, by = %user, "game day stopped");
        Ok(GamedayStopped {
            gameday: stopped,
            run,
        })
    }
}
