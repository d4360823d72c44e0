//! A [`Refusal`] of the application layer in Slack's words: the ephemeral texts the edge has
//! always answered with (mentions, channel links, the `/chaos` command to type next).

use super::auth;
use crate::app::{Denial, Refusal, StoreOp};
use crate::config::Config;

/// What a refusal text needs to know about who asked and how.
pub struct Asker<'a> {
    pub cfg: &'a Config,
    pub user: &'a str,
    /// The command as typed (`/chaos`), for the "type this next" hints.
    pub command: &'a str,
}

impl Asker<'_> {
    /// The refusal as Slack text.
    pub fn text(&self, r: &Refusal) -> String {
        let whom = || auth::whom_to_ask(&self.cfg.slack);
        let cmd = self.command;
        match r {
            Refusal::UnknownExperiment(m) => format!("{m} (`list` shows the catalog)"),
            Refusal::NotAllowed(d) => auth::denial_text(&self.cfg.slack, self.user, d),
            Refusal::BadParameters(e) => super::handlers::spec_errors_text(e),
            Refusal::Halted(h) => format!("nothing was started: {}.", self.halt(h)),
            Refusal::TooLong { .. } | Refusal::ShuttingDown => r.to_string(),
            Refusal::TargetHeld(holds) => {
                let list: Vec<String> = holds
                    .iter()
                    .map(|h| format!("`{}` is held by run `{}`", h.target, h.run_id))
                    .collect();
                format!(
                    "{}; nothing was started. `{cmd} summary <run>` shows how it goes; its starter or an operator can `{cmd} abort <run>`.",
                    list.join(", ")
                )
            }
            Refusal::NoSuchRun(id) => {
                format!("no run `{id}`; `status` lists the queued and running runs")
            }
            Refusal::AlreadyFinished { run_id, verdict } => format!(
                "run `{run_id}` has already finished ({}); there is nothing to abort. `summary {run_id}` shows how it went.",
                verdict
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "done".into())
            ),
            Refusal::FinishedBeforeAbort(id) => format!(
                "run `{id}` finished before the abort arrived; `summary {id}` shows how it went."
            ),
            Refusal::BadWhen(e) => e.to_string(),
            Refusal::BadSettings(m) => m.clone(),
            Refusal::NoSuchSchedule(id) => {
                format!("no schedule `{id}`; `{cmd} schedules` lists them with their ids")
            }
            Refusal::UnknownPlan {
                name,
                message,
                problems,
            } => {
                // A plan file with that name that did not validate: say what is wrong with it.
                if problems.is_empty() {
                    format!("{message}. `{cmd} gameday` lists the plans.")
                } else {
                    format!(
                        "game-day plan `{name}` cannot run; nothing was started. Its problems:\n{}",
                        problems.join("\n")
                    )
                }
            }
            Refusal::GamedayNotAllowed { plan, denials } => {
                let mut lines: Vec<String> = Vec::new();
                for d in denials {
                    let line = auth::denial_text(&self.cfg.slack, self.user, d);
                    if !lines.contains(&line) {
                        lines.push(line);
                    }
                }
                format!(
                    "game day `{plan}` was not started: you may not start every experiment on its agenda here, and a game day runs all or none.\n{}",
                    lines.join("\n")
                )
            }
            Refusal::GamedayBusy { id, plan } => format!(
                "game day `{id}` (`{plan}`) is still running in this channel; wait for its closing summary, or stop it with `{cmd} gameday stop {id}`"
            ),
            Refusal::PlanNotRecordable { plan, error } => format!(
                "game-day plan `{plan}` cannot be recorded ({error}); nothing was started. Tell {}.",
                whom()
            ),
            Refusal::NoSuchGameday(id) => {
                format!("no game day `{id}`; `{cmd} gameday` lists those in progress")
            }
            Refusal::GamedayNotRunning { id, state } => {
                format!("game day `{id}` is already {state}; there is nothing to stop")
            }
            Refusal::GamedayEnded(id) => format!(
                "game day `{id}` ended before the stop arrived; its closing summary is in the channel"
            ),
            Refusal::Store { op, source: e } => match op {
                StoreOp::Submit => format!(
                    "the run could not be queued ({e}); nothing was started. Try again, or tell {}.",
                    whom()
                ),
                StoreOp::ReadRun(id) => {
                    format!("cannot read run `{id}` right now ({e}); try again")
                }
                StoreOp::Abort(id) => format!(
                    "the abort of run `{id}` could not be recorded ({e}); try again, or tell {}",
                    whom()
                ),
                StoreOp::AbortAll => format!("the abort could not be recorded ({e}); try again"),
                StoreOp::LiftHalt => {
                    format!("the halt could not be lifted ({e}); it is still in force. Try again.")
                }
                StoreOp::SaveSchedule => format!(
                    "the schedule could not be saved ({e}); nothing was scheduled. Try again."
                ),
                StoreOp::ReadSchedule(id) => {
                    format!("cannot read schedule `{id}` right now ({e}); try again")
                }
                StoreOp::RemoveSchedule(id) => format!(
                    "schedule `{id}` could not be removed ({e}); it is still active. Try again."
                ),
                StoreOp::ReadGamedays => format!(
                    "cannot read the game days right now ({e}); nothing was started. Try again."
                ),
                StoreOp::RecordGameday => format!(
                    "the game day could not be recorded ({e}); nothing was started. Try again, or tell {}.",
                    whom()
                ),
                StoreOp::ReadGameday(id) => {
                    format!("cannot read game day `{id}` right now ({e}); try again")
                }
                StoreOp::StopGameday(id) => {
                    format!("the stop of game day `{id}` could not be recorded ({e}); try again")
                }
                StoreOp::ReadHalt => format!(
                    "cannot check whether a halt is in force ({e}); nothing was started. Try again."
                ),
                StoreOp::ReadHolds => {
                    format!("cannot check which runs hold the targets ({e}); try again")
                }
            },
        }
    }

    /// Who put the halt in force, when and why, and how to lift it.
    pub fn halt(&self, h: &crate::store::schedules::Halt) -> String {
        crate::schedule::halt_text(h, self.cfg.schedules.when_rules().default_tz)
    }

    /// `resume` by someone who is not an operator.
    pub fn not_operator_resume(&self) -> String {
        format!(
            "only operators (who may `abort all`) may lift the halt; ask {}.",
            auth::whom_to_ask(&self.cfg.slack)
        )
    }
}

/// A refusal of `resume`: its own wording for non-operators.
pub fn resume_text(asker: &Asker<'_>, r: &Refusal) -> String {
    match r {
        Refusal::NotAllowed(Denial::NotOperator) => asker.not_operator_resume(),
        r => asker.text(r),
    }
}
