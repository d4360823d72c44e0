//! `/chaos gameday`: list the plans (and the game days in progress), start one, stop one.
//! Starting only validates, authorizes and records the game day; the [`super::driver`] posts
//! the opening and runs the agenda.

use tracing::{info, warn};

use super::plan::{Plan, load_plans};
use crate::run::RunState;
use crate::slack::blocks::Reply;
use crate::slack::edge::commands::GamedayCommand;
use crate::slack::edge::{SlackApp, SlashCommand, auth};
use crate::store::gamedays::{GamedayState, NewGameday};

/// How many game days the list looks at (newest first).
const LIST_SCAN: u32 = 50;

impl SlackApp {
    /// Handles `gameday …`; `Err` is a refusal that changed nothing.
    pub(crate) async fn gameday(
        &self,
        cmd: &SlashCommand,
        sub: GamedayCommand,
    ) -> Result<Reply, Reply> {
        match sub {
            GamedayCommand::List => self.list_gamedays(cmd).await,
            GamedayCommand::Start { plan } => self.start_gameday(cmd, &plan).await,
            GamedayCommand::Stop { id, reason } => {
                self.stop_gameday(cmd, &id, reason.as_deref()).await
            }
        }
    }

    async fn list_gamedays(&self, cmd: &SlashCommand) -> Result<Reply, Reply> {
        let name = command_name(cmd);
        let catalog = self.catalog();
        let plans = load_plans(&self.cfg, &catalog);
        let mut reply = Reply::new(format!("{} game-day plan(s)", plans.plans.len()));
        if plans.plans.is_empty() {
            reply.push(format!(
                "There are no game-day plans yet{}. A plan is a YAML file in the catalog's `gamedays` folder listing experiments to run one after another (see docs/gamedays.md); ask {} to add one.",
                broken_note(plans.problems.len()),
                auth::whom_to_ask(&self.cfg.slack)
            ));
        } else {
            reply.push(format!(
                "*{} game-day plan(s)* — start one with `{name} gameday <plan>`{}",
                plans.plans.len(),
                broken_note(plans.problems.len())
            ));
            for (_, plan) in &plans.plans {
                reply.push(describe_plan(plan));
            }
        }
        let running: Vec<String> = match self.store.list_gamedays(LIST_SCAN).await {
            Ok(all) => all
                .into_iter()
                .filter(|g| g.state == GamedayState::Running && g.team == cmd.team_id)
                .map(|g| {
                    format!(
                        "• `{}` — `{}` in <#{}>, item {} of {}, started by <@{}>",
                        g.id,
                        g.plan,
                        g.channel,
                        (g.current + 1).min(g.run_ids.len()),
                        g.run_ids.len(),
                        g.started_by
                    )
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot list game days");
                vec![format!(
                    "_(the running game days cannot be read right now: {e})_"
                )]
            }
        };
        if !running.is_empty() {
            reply.push(format!(
                "*In progress* (stop with `{name} gameday stop <id>`)\n{}",
                running.join("\n")
            ));
        }
        Ok(reply)
    }

    async fn start_gameday(&self, cmd: &SlashCommand, name: &str) -> Result<Reply, Reply> {
        let catalog = self.catalog();
        let plans = load_plans(&self.cfg, &catalog);
        let plan = match plans.find(name) {
            Ok(p) => p.clone(),
            Err(m) => {
                // A plan file with that name that did not validate: say what is wrong with it.
                let problems = plans.problems_of(name);
                return Err(Reply::error(if problems.is_empty() {
                    format!("{m}. `{} gameday` lists the plans.", command_name(cmd))
                } else {
                    format!(
                        "game-day plan `{name}` cannot run; nothing was started. Its problems:\n{}",
                        problems.join("\n")
                    )
                }));
            }
        };
        // Authorized like `start`, for every experiment on the agenda; refused as a whole.
        let mut refusals: Vec<String> = Vec::new();
        for item in &plan.agenda {
            if let Err(m) = auth::may_start(
                &self.cfg.slack,
                &cmd.user_id,
                &cmd.channel_id,
                &item.experiment,
            ) && !refusals.contains(&m)
            {
                refusals.push(m);
            }
        }
        if !refusals.is_empty() {
            return Err(Reply::error(format!(
                "game day `{}` was not started: you may not start every experiment on its agenda here, and a game day runs all or none.\n{}",
                plan.name,
                refusals.join("\n")
            )));
        }
        // A halt (`abort all`) stops every start; a game day would stop at its first item.
        match self.store.current_halt().await {
            Ok(None) => {}
            Ok(Some(h)) => {
                return Err(Reply::error(format!(
                    "game day `{}` was not started: {}.",
                    plan.name,
                    crate::schedule::halt_text(&h, self.cfg.schedules.when_rules().default_tz)
                )));
            }
            Err(e) => {
                warn!(error = %e, "cannot read the halt");
                return Err(Reply::error(format!(
                    "cannot check whether a halt is in force ({e}); nothing was started. Try again."
                )));
            }
        }
        // One track per channel: two game days interleaving their runs would be unreadable.
        match self.store.open_gamedays().await {
            Ok(open) => {
                if let Some(g) = open
                    .iter()
                    .find(|g| g.channel == cmd.channel_id && g.state == GamedayState::Running)
                {
                    return Err(Reply::error(format!(
                        "game day `{}` (`{}`) is still running in this channel; wait for its closing summary, or stop it with `{} gameday stop {}`",
                        g.id,
                        g.plan,
                        command_name(cmd),
                        g.id
                    )));
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the open game days");
                return Err(Reply::error(format!(
                    "cannot read the game days right now ({e}); nothing was started. Try again."
                )));
            }
        }
        let plan_json = serde_json::to_value(&plan).map_err(|e| {
            Reply::error(format!(
                "game-day plan `{name}` cannot be recorded ({e}); nothing was started. Tell {}.",
                auth::whom_to_ask(&self.cfg.slack)
            ))
        })?;
        let new = NewGameday {
            id: super::new_gameday_id(),
            plan: plan.name.clone(),
            plan_json,
            team: cmd.team_id.clone(),
            channel: cmd.channel_id.clone(),
            started_by: cmd.user_id.clone(),
            items: plan.agenda.len(),
            created_ms: crate::run::now_ms(),
        };
        let g = self.store.create_gameday(&new).await.map_err(|e| {
            warn!(error = %e, "cannot record a game day");
            Reply::error(format!(
                "the game day could not be recorded ({e}); nothing was started. Try again, or tell {}.",
                auth::whom_to_ask(&self.cfg.slack)
            ))
        })?;
        info!(gameday = %g.id, plan = %plan.name, "game day started from Slack");
        Ok(Reply::simple(format!(
            ":calendar: Game day `{}` (`{}`) is starting: {} experiment(s) in this channel, one after another, with {} of Q&A after each. The opening message with the agenda follows. Stop it with `{} gameday stop {}`.",
            g.id,
            plan.name,
            plan.agenda.len(),
            super::render::fmt_duration(plan.qa_window),
            command_name(cmd),
            g.id
        )))
    }

    async fn stop_gameday(
        &self,
        cmd: &SlashCommand,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Reply, Reply> {
        let no_such = || {
            Reply::error(format!(
                "no game day `{id}`; `{} gameday` lists those in progress",
                command_name(cmd)
            ))
        };
        let g = match self.store.get_gameday(id).await {
            Ok(Some(g)) if g.team == cmd.team_id => g,
            Ok(_) => return Err(no_such()),
            Err(e) => {
                return Err(Reply::error(format!(
                    "cannot read game day `{id}` right now ({e}); try again"
                )));
            }
        };
        if g.state != GamedayState::Running {
            return Err(Reply::error(format!(
                "game day `{id}` is already {}; there is nothing to stop",
                g.state
            )));
        }
        if !auth::is_operator(&self.cfg.slack, &cmd.user_id) && cmd.user_id != g.started_by {
            return Err(Reply::error(format!(
                "only <@{}>, who started game day `{id}`, or an operator may stop it. Ask them, or {}.",
                g.started_by,
                auth::whom_to_ask(&self.cfg.slack)
            )));
        }
        let reason = reason
            .map(str::to_string)
            .unwrap_or_else(|| "stopped from Slack".to_string());
        let stopped = self
            .store
            .stop_gameday(id, &cmd.user_id, &reason, crate::run::now_ms())
            .await
            .map_err(|e| {
                Reply::error(format!(
                    "the stop of game day `{id}` could not be recorded ({e}); try again"
                ))
            })?;
        let Some(stopped) = stopped.filter(|s| s.stopped_by.as_deref() == Some(&cmd.user_id))
        else {
            return Err(Reply::error(format!(
                "game day `{id}` ended before the stop arrived; its closing summary is in the channel"
            )));
        };
        // The run in progress goes too (the driver waits for its verdict for the summary).
        let mut aborted = String::new();
        if let Some(run_id) = stopped.run_ids.get(stopped.current).cloned().flatten() {
            let active = matches!(
                self.store.get_run(&run_id).await,
                Ok(Some(r)) if r.state != RunState::Done
            );
            if active {
                match self
                    .engine
                    .abort(
                        crate::store::AbortScope::Run(run_id.clone()),
                        &cmd.user_id,
                        &format!("game day `{id}` stopped: {reason}"),
                    )
                    .await
                {
                    Ok(_) => {
                        aborted = format!(" Its run `{run_id}` is being aborted and reverted.")
                    }
                    Err(e) => {
                        warn!(error = %e, %run_id, "cannot abort the game day's run");
                        aborted = format!(
                            " Its run `{run_id}` could not be aborted ({e}); abort it with `{} abort {run_id}`.",
                            command_name(cmd)
                        );
                    }
                }
            }
        }
        info!(gameday = id, by = %cmd.user_id, "game day stopped from Slack");
        Ok(Reply::simple(format!(
            ":octagonal_sign: Game day `{id}` is stopped; no further experiment will start.{aborted} The closing summary follows in the channel."
        )))
    }
}

fn describe_plan(plan: &Plan) -> String {
    let mut s = format!(
        "*`{}`* — {} (owner {})\n{} experiment(s), {} of Q&A after each, up to {} in all:",
        plan.name,
        plan.title,
        plan.owner,
        plan.agenda.len(),
        super::render::fmt_duration(plan.qa_window),
        super::render::fmt_duration(plan.longest_duration())
    );
    for (i, item) in plan.agenda.iter().enumerate() {
        let params: Vec<String> = item
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!(
            "\n{}. `{}`{} — {}",
            i + 1,
            item.experiment,
            if params.is_empty() {
                String::new()
            } else {
                format!(" {}", params.join(" "))
            },
            item.title
        ));
    }
    s
}

fn broken_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} problem(s) in plan files; `chaosbot validate` on the server explains them)")
    }
}

fn command_name(cmd: &SlashCommand) -> &str {
    if cmd.command.trim().is_empty() {
        "/chaos"
    } else {
        cmd.command.trim()
    }
}
