//! `/chaos gameday`: list the plans (and the game days in progress), start one, stop one.
//! Starting and stopping are use cases of [`crate::app`] (starting only validates, authorizes
//! and records the game day; the [`crate::slack::gameday::driver`] posts the opening and runs the
//! agenda); this renders their outcome.

use tracing::warn;

use super::handlers::{command_name, origin};
use crate::app::{Caller, GamedayStopped, Refusal};
use crate::gameday::plan::{Plan, load_plans};
use crate::slack::blocks::Reply;
use crate::slack::edge::commands::GamedayCommand;
use crate::slack::edge::{SlackApp, SlashCommand, auth};
use crate::slack::gameday::render::fmt_duration;
use crate::store::gamedays::GamedayState;

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
        let asker = self.asker(&cmd.user_id, command_name(cmd));
        let (g, plan) = match self.app().gameday_start(&origin(cmd), name).await {
            Ok(started) => started,
            // A halt (`abort all`) stops every start; a game day would stop at its first item.
            Err(Refusal::Halted(h)) => {
                return Err(Reply::error(format!(
                    "game day `{name}` was not started: {}.",
                    asker.halt(&h)
                )));
            }
            Err(r) => return Err(Reply::error(asker.text(&r))),
        };
        Ok(Reply::simple(format!(
            ":calendar: Game day `{}` (`{}`) is starting: {} experiment(s) in this channel, one after another, with {} of Q&A after each. The opening message with the agenda follows. Stop it with `{} gameday stop {}`.",
            g.id,
            plan.name,
            plan.agenda.len(),
            fmt_duration(plan.qa_window),
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
        let asker = self.asker(&cmd.user_id, command_name(cmd));
        let reason = reason.unwrap_or("stopped from Slack");
        let GamedayStopped { run, .. } = self
            .app()
            .gameday_stop(&Caller::Slack(origin(cmd)), id, reason)
            .await
            .map_err(|r| Reply::error(asker.text(&r)))?;
        let aborted = match run {
            None => String::new(),
            Some((run_id, Ok(()))) => format!(" Its run `{run_id}` is being aborted and reverted."),
            Some((run_id, Err(e))) => format!(
                " Its run `{run_id}` could not be aborted ({e}); abort it with `{} abort {run_id}`.",
                command_name(cmd)
            ),
        };
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
        fmt_duration(plan.qa_window),
        fmt_duration(plan.longest_duration())
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
