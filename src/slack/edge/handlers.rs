//! One handler per `/chaos` subcommand. Each answers with an ephemeral [`Reply`]; refusals and
//! errors say what was wrong and what to do, and change nothing.

use std::time::Duration;

use serde_json::Value;
use tracing::{Instrument, info, warn};

use super::commands::{self, AbortTarget, Command};
use super::{SlackApp, SlashCommand, auth, interactions};
use crate::app::{AbortAllOutcome, AbortedOne, Caller, HaltPut};
use crate::report;
use crate::slack::SlackOrigin;
use crate::slack::blocks::Reply;
use crate::spec::{SpecErrors, catalog::Catalog};
use crate::store::{RunFilter, RunRecord};

/// Which input of a start request was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Experiment,
    Params,
}

/// How many runs `status` looks at (newest first); more active runs than this is unheard of.
const STATUS_SCAN: u32 = 500;

impl SlackApp {
    /// Handles a slash command and returns the ephemeral answer (HTTP body or Socket Mode ack
    /// payload). Slow work (opening the start form) is spawned.
    pub async fn handle_command(&self, cmd: SlashCommand) -> Value {
        let span = tracing::info_span!("slack_command", team = %cmd.team_id, user = %cmd.user_id, channel = %cmd.channel_id);
        async move {
            let (reply, outcome, action) = match self.command_inner(&cmd).await {
                Ok((reply, action)) => (reply, "ok".to_string(), action),
                Err((reply, action)) => {
                    let outcome = format!("refused: {}", reply.text);
                    (reply, outcome, action)
                }
            };
            info!(action, outcome = %outcome, "slash command handled");
            self.audit(
                &cmd.team_id,
                &cmd.user_id,
                &cmd.channel_id,
                &format!("command:{action}"),
                &cmd.text,
                &outcome,
            )
            .await;
            reply.ephemeral()
        }
        .instrument(span)
        .await
    }

    /// `Ok((answer, action))` or `Err((refusal, action))`.
    async fn command_inner(
        &self,
        cmd: &SlashCommand,
    ) -> Result<(Reply, &'static str), (Reply, &'static str)> {
        auth::check_team(&self.cfg.slack, &cmd.team_id).map_err(|m| (Reply::error(m), "team"))?;
        let parsed = commands::parse(&cmd.text).map_err(|e| {
            (
                Reply::error(format!("{e}\nType `{} help` for usage.", command_name(cmd))),
                "parse",
            )
        })?;
        match parsed {
            Command::Help => Ok((help(command_name(cmd)), "help")),
            Command::List => Ok((self.list(), "list")),
            Command::Start {
                experiment: Some(name),
                params,
            } => self
                .start(cmd, &name, &params)
                .await
                .map(|r| (r, "start"))
                .map_err(|r| (r, "start")),
            Command::Start {
                experiment: None, ..
            } => self
                .open_start_form(cmd)
                .map(|r| (r, "start_form"))
                .map_err(|r| (r, "start_form")),
            Command::Abort { target, reason } => self
                .abort(cmd, target, reason)
                .await
                .map(|r| (r, "abort"))
                .map_err(|r| (r, "abort")),
            Command::Status => self
                .status(&cmd.team_id, &cmd.user_id)
                .await
                .map(|r| (r, "status"))
                .map_err(|r| (r, "status")),
            Command::Summary { run } => self
                .summary(cmd, &run)
                .await
                .map(|r| (r, "summary"))
                .map_err(|r| (r, "summary")),
            Command::Qa { run } => self
                .qa_board_reply(&cmd.team_id, &cmd.user_id, &run)
                .await
                .map(|r| (r, "qa"))
                .map_err(|r| (r, "qa")),
            Command::Learn { run, kind, text } => {
                let result = match self.visible_run(&run, &cmd.team_id, &cmd.user_id).await {
                    Ok(_) => self.add_learning(&cmd.user_id, &run, kind, &text).await,
                    Err(m) => Err(m),
                };
                result
                    .map(|_| {
                        (
                            Reply::simple(format!(
                                ":memo: Noted on run `{run}` and posted in its thread; it is part of the run's learning record."
                            )),
                            "learn",
                        )
                    })
                    .map_err(|m| (Reply::error(m), "learn"))
            }
            // Schedules and the halt: handlers in `super::schedules`.
            Command::Schedule {
                experiment,
                when,
                params,
            } => self
                .schedule(cmd, &experiment, &when, &params)
                .await
                .map(|r| (r, "schedule"))
                .map_err(|r| (r, "schedule")),
            Command::Schedules => self
                .schedules(cmd)
                .await
                .map(|r| (r, "schedules"))
                .map_err(|r| (r, "schedules")),
            Command::Unschedule { id } => self
                .unschedule(cmd, &id)
                .await
                .map(|r| (r, "unschedule"))
                .map_err(|r| (r, "unschedule")),
            Command::Resume => self
                .resume(cmd)
                .await
                .map(|r| (r, "resume"))
                .map_err(|r| (r, "resume")),
            Command::SummaryPeriod { period } => self
                .summary_period(cmd, period)
                .await
                .map(|r| (r, "summary_period"))
                .map_err(|r| (r, "summary_period")),
            Command::Report { run, as_file } => self
                .report(cmd, &run, as_file)
                .await
                .map(|r| (r, "report"))
                .map_err(|r| (r, "report")),
            Command::Gameday(sub) => self
                .gameday(cmd, sub)
                .await
                .map(|r| (r, "gameday"))
                .map_err(|r| (r, "gameday")),
        }
    }

    pub(crate) fn catalog(&self) -> Catalog {
        self.app().catalog()
    }

    fn list(&self) -> Reply {
        let catalog = self.catalog();
        if catalog.entries.is_empty() {
            return Reply::simple(format!(
                "The experiment catalog is empty{}. Ask {} to add experiment YAML files to it.",
                problems_note(&catalog),
                auth::whom_to_ask(&self.cfg.slack)
            ));
        }
        let mut reply = Reply::new(format!(
            "{} experiment(s) in the catalog",
            catalog.entries.len()
        ));
        reply.push(format!(
            "*{} experiment(s)* — start one with `start <name> [key=value …]`{}",
            catalog.entries.len(),
            problems_note(&catalog)
        ));
        for entry in &catalog.entries {
            let exp = &entry.experiment;
            let mut s = format!("*`{}`* — {}\n", exp.name, exp.title);
            let targets = exp.targets();
            s.push_str(&format!(
                "targets: {} · runs up to {} with the defaults (guard rail {})",
                if targets.is_empty() {
                    "none".to_string()
                } else {
                    targets.join(", ")
                },
                fmt_duration(exp.method_duration() + exp.recovery_timeout),
                fmt_duration(self.cfg.guard_rails.max_run_duration),
            ));
            for p in &entry.parameters {
                s.push_str(&format!(
                    "\n• `{}` — {}, default `{}`{}",
                    p.name,
                    p.describe(),
                    p.default,
                    if p.description.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", p.description)
                    }
                ));
            }
            reply.push(s);
        }
        reply
    }

    async fn start(
        &self,
        cmd: &SlashCommand,
        name: &str,
        params: &[(String, String)],
    ) -> Result<Reply, Reply> {
        let (id, exp) = self
            .app()
            .start(&origin(cmd), name, params)
            .await
            .map_err(|r| Reply::error(self.asker(&cmd.user_id, command_name(cmd)).text(&r)))?;
        let shown: Vec<String> = exp.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // One run per target: say at once when this one waits behind another.
        let waits = match self.app().queue_place(&id).await {
            Ok(place) => crate::slack::render::queue_line(&place)
                .map(|l| format!(" It is queued {l}."))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(Reply::simple(format!(
            ":test_tube: Run `{id}` of `{}` is queued{}.{waits} It will appear in this channel with its live status and an Abort button. Stop it with `{} abort {id}`.",
            exp.name,
            if shown.is_empty() {
                String::new()
            } else {
                format!(" with {}", shown.join(" "))
            },
            command_name(cmd)
        )))
    }

    fn open_start_form(&self, cmd: &SlashCommand) -> Result<Reply, Reply> {
        let Some(trigger_id) = cmd.trigger_id.clone().filter(|t| !t.is_empty()) else {
            return Err(Reply::error(format!(
                "this request carries no trigger to open a form with; name the experiment instead: `{} start <experiment> [key=value …]`",
                command_name(cmd)
            )));
        };
        let catalog = self.catalog();
        if catalog.entries.is_empty() {
            return Err(Reply::error(format!(
                "the experiment catalog is empty{}; there is nothing to start. Ask {}.",
                problems_note(&catalog),
                auth::whom_to_ask(&self.cfg.slack)
            )));
        }
        let view = interactions::start_modal(&catalog, &cmd.channel_id);
        let api = self.api.clone();
        let (store_channel, user) = (cmd.channel_id.clone(), cmd.user_id.clone());
        let store = self.store.clone();
        // views.open must happen within 3 s of the trigger, and so must our HTTP answer:
        // do both at once.
        tokio::spawn(
            async move {
                let body = serde_json::json!({"trigger_id": trigger_id, "view": view});
                if let Err(e) = api.call("views.open", body).await {
                    warn!(error = %e, "cannot open the start form");
                    let reply = Reply::error(format!(
                        "the start form could not be opened ({e}); use `start <experiment> [key=value …]` instead"
                    ));
                    let msg = crate::store::outbox::OutboundMessage {
                        thread_key: format!("ephemeral:{store_channel}:{user}"),
                        channel: store_channel.clone(),
                        action: crate::store::outbox::OutboundAction::Ephemeral {
                            user: user.clone(),
                            in_thread_of: None,
                            text: reply.text.clone(),
                            blocks: Some(Value::Array(reply.blocks())),
                        },
                    };
                    if let Err(e) = store.enqueue(&[msg], None).await {
                        warn!(error = %e, "cannot queue the form error message");
                    }
                }
            }
            .instrument(tracing::info_span!("views_open")),
        );
        Ok(Reply::simple("Opening the form to start an experiment…"))
    }

    /// A run the caller may see: it exists and was started from the caller's workspace (runs
    /// started elsewhere, e.g. the CLI, are visible to operators only).
    pub(crate) async fn visible_run(
        &self,
        id: &str,
        team: &str,
        user: &str,
    ) -> Result<RunRecord, String> {
        let no_run = || format!("no run `{id}`; `status` lists the queued and running runs");
        let run = match self.store.get_run(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(no_run()),
            Err(e) => {
                warn!(error = %e, run_id = id, "cannot read a run");
                return Err(format!("cannot read run `{id}` right now ({e}); try again"));
            }
        };
        if self.visible(&run, team, user) {
            Ok(run)
        } else {
            Err(no_run())
        }
    }

    fn visible(&self, run: &RunRecord, team: &str, user: &str) -> bool {
        visible_to(&self.cfg.slack, run, team, user)
    }

    /// Aborts one run after authorizing; the text of the outcome either way.
    pub(crate) async fn abort_run(
        &self,
        team: &str,
        user: &str,
        channel: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<String, String> {
        let caller = Caller::Slack(SlackOrigin {
            team: team.to_string(),
            channel: channel.to_string(),
            user: user.to_string(),
        });
        let reason = reason
            .map(str::to_string)
            .unwrap_or_else(|| format!("aborted from Slack by {user}"));
        match self.app().abort(&caller, id, &reason).await {
            Ok(AbortedOne::CancelledQueued) => Ok(format!(
                ":octagonal_sign: Run `{id}` was still queued and is cancelled; nothing was injected."
            )),
            Ok(AbortedOne::Reverting) => Ok(format!(
                ":octagonal_sign: Abort requested for run `{id}`: its faults are being reverted; its thread shows when everything is back."
            )),
            Err(r) => Err(self.asker(user, "/chaos").text(&r)),
        }
    }

    async fn abort(
        &self,
        cmd: &SlashCommand,
        target: AbortTarget,
        reason: Option<String>,
    ) -> Result<Reply, Reply> {
        match target {
            AbortTarget::Run(id) => self
                .abort_run(
                    &cmd.team_id,
                    &cmd.user_id,
                    &cmd.channel_id,
                    &id,
                    reason.as_deref(),
                )
                .await
                .map(Reply::simple)
                .map_err(Reply::error),
            AbortTarget::All => {
                let reason =
                    reason.unwrap_or_else(|| format!("abort all from Slack by {}", cmd.user_id));
                let asker = self.asker(&cmd.user_id, command_name(cmd));
                let AbortAllOutcome { halt, aborted: o } = self
                    .app()
                    .abort_all(&Caller::Slack(origin(cmd)), &reason)
                    .await
                    .map_err(|r| Reply::error(asker.text(&r)))?;
                let halt_note = self.halt_note(&halt);
                let n = o.cancelled_queued.len() + o.signalled_running.len();
                Ok(Reply::simple(format!(
                    "{}\n{halt_note}",
                    if n == 0 {
                        "No run was queued or running; nothing to abort.".to_string()
                    } else {
                        format!(
                            ":octagonal_sign: Aborting {n} run(s): {} queued cancelled, {} running reverting ({}).",
                            o.cancelled_queued.len(),
                            o.signalled_running.len(),
                            o.cancelled_queued
                                .iter()
                                .chain(&o.signalled_running)
                                .map(|id| format!("`{id}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )))
            }
        }
    }

    /// The sentence `abort all` adds about the halt.
    fn halt_note(&self, halt: &HaltPut) -> String {
        match halt {
            HaltPut::New(_) => ":no_entry: A halt is now in force: no run starts (from `start`, the form or a schedule) until an operator types `/chaos resume`.".to_string(),
            HaltPut::Already(h) => format!(
                ":no_entry: A halt was already in force (since {}, by <@{}>); it stays until an operator types `/chaos resume`.",
                crate::schedule::when::local_time(self.cfg.schedules.when_rules().default_tz, h.since_ms),
                h.halted_by
            ),
            HaltPut::Failed(e) => format!(
                ":warning: The halt could not be recorded ({e}): new runs may still start. Type `abort all` again."
            ),
        }
    }

    /// Queued and running runs of the caller's workspace.
    pub(crate) async fn status(&self, team: &str, user: &str) -> Result<Reply, Reply> {
        let runs = self
            .store
            .list_runs(RunFilter {
                experiment: None,
                limit: STATUS_SCAN,
            })
            .await
            .map_err(|e| {
                Reply::error(format!("cannot read the runs right now ({e}); try again"))
            })?;
        let active: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| r.state != crate::run::RunState::Done)
            .filter(|r| self.visible(r, team, user))
            .collect();
        let agents = self.app().agent_lines().await;
        let agents_text = (!agents.is_empty()).then(|| {
            let shown: Vec<String> = agents.iter().map(|l| format!("`{}`", l.trim())).collect();
            format!("*Agents*\n{}", shown.join("\n"))
        });
        if active.is_empty() {
            let mut reply =
                Reply::simple("No run is queued or running. `list` shows what you can start.");
            if let Some(t) = agents_text {
                reply.push(t);
            }
            return Ok(reply);
        }
        let mut reply = Reply::new(format!("{} run(s) queued or running", active.len()));
        let mut lines = vec![format!("*{} run(s) queued or running*", active.len())];
        // Oldest first reads like a queue.
        for r in active.iter().rev() {
            let since = r.started_ms.unwrap_or(r.created_ms);
            lines.push(format!(
                "• `{}` *{}* — {} · by <@{}> · since {}",
                r.id,
                r.experiment,
                r.state,
                r.requested_by,
                slack_date(since)
            ));
        }
        reply.push(lines.join("\n"));
        if let Some(t) = agents_text {
            reply.push(t);
        }
        Ok(reply)
    }

    async fn summary(&self, cmd: &SlashCommand, id: &str) -> Result<Reply, Reply> {
        let run = self
            .visible_run(id, &cmd.team_id, &cmd.user_id)
            .await
            .map_err(Reply::error)?;
        let journal = self.store.journal(&run.id, 0).await.map_err(|e| {
            Reply::error(format!(
                "cannot read the journal of `{id}` ({e}); try again"
            ))
        })?;
        let mut reply = crate::slack::render::summary(&report::summarize(&run, &journal));
        self.add_qa(&mut reply, &run.id).await;
        // A fresh link to the run's page (an older one may have expired).
        if let Some(url) = crate::web::link::Links::from_config(&self.cfg)
            .and_then(|l| l.run_url_from(&run.id, crate::run::now_ms().div_euclid(1000)))
        {
            reply.push(format!(
                ":chart_with_upwards_trend: {} (this link works for {})",
                crate::slack::render::page_link(&url),
                humantime::format_duration(self.cfg.server.link_ttl)
            ));
        }
        Ok(reply)
    }
}

/// Whether `user` of `team` may see `run` (the application layer's rule).
pub(crate) use crate::app::policy::visible_to;

/// The workspace, channel and person of a slash command.
pub(crate) fn origin(cmd: &SlashCommand) -> SlackOrigin {
    SlackOrigin {
        team: cmd.team_id.clone(),
        channel: cmd.channel_id.clone(),
        user: cmd.user_id.clone(),
    }
}

pub(crate) fn command_name(cmd: &SlashCommand) -> &str {
    if cmd.command.trim().is_empty() {
        "/chaos"
    } else {
        cmd.command.trim()
    }
}

fn help(cmd: &str) -> Reply {
    Reply::new(format!("{cmd}: run chaos experiments from the catalog")).section(format!(
        "*{cmd}* runs chaos experiments from the catalog; every fault is reverted when the run ends.\n\
         • `{cmd} list` — the experiments, their targets, limits and parameters\n\
         • `{cmd} start <experiment> [key=value …]` — e.g. `{cmd} start checkout-latency latency=500ms`\n\
         • `{cmd} start` — pick the experiment and parameters in a form\n\
         • `{cmd} status` — queued and running runs\n\
         • `{cmd} abort <run-id> [reason]` — stop a run and revert its faults; `{cmd} abort all [reason]` (operators; also halts every start until `{cmd} resume`)\n\
         • `{cmd} summary <run-id>` — verdict, numbers before/during/after, time to detect and recover, Q&A and learnings\n\
         • `{cmd} summary week` — runs by verdict, what deviated, detect/recover trends, open questions (also `day`, `month`, `14d`)\n\
         • `{cmd} report <run-id> [as file]` — the whole learning record, as messages or a markdown file\n\
         • `{cmd} qa <run-id>` — the run's Q&A board: questions by votes, answers, learnings\n\
         • `{cmd} learn <run-id> <text>` — what we learned (`change: <text>` — what we change); the speaker or operators\n\
         • `{cmd} schedule <experiment> <when> [key=value …]` — e.g. `{cmd} schedule checkout-latency every tue,thu at 14:00 in Europe/Berlin`, or a cron expression (`0 14 * * 2,4`)\n\
         • `{cmd} schedules` — the schedules and their next runs; `{cmd} unschedule <id>` removes one\n\
         • `{cmd} resume` — lift the halt `abort all` put in force (operators)\n\
         • `{cmd} gameday [<plan>]` — list the game-day plans, or run one: its experiments one after another here, a Q&A window after each; `{cmd} gameday stop <id>` ends it\n\
         • `{cmd} help` — this message"
    ))
}

fn problems_note(c: &Catalog) -> String {
    if c.problems.is_empty() {
        String::new()
    } else {
        format!(
            " ({} file(s) did not load; `chaosbot validate` on the server explains why)",
            c.problems.len()
        )
    }
}

/// Spec problems without server paths: the message and its hint.
pub(crate) fn spec_errors_text(e: &SpecErrors) -> String {
    e.problems
        .iter()
        .map(|p| match &p.hint {
            Some(h) => format!("{} ({h})", p.message),
            None => p.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// A timestamp Slack renders in each reader's time zone (UTC as the fallback).
fn slack_date(ms: i64) -> String {
    let secs = ms / 1000;
    let fallback = chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| secs.to_string());
    format!("<!date^{secs}^{{date_short_pretty}} {{time_secs}}|{fallback}>")
}
