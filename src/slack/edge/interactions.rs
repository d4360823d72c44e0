//! Interactivity: the Abort button (`block_actions`, `action_id` [`ABORT_ACTION_ID`], value =
//! run id) and the start form (a modal with callback id [`START_MODAL_CALLBACK_ID`]).

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{Instrument, debug, info, warn};

use super::handlers::Field;
use super::{SlackApp, auth, commands};
use crate::app::Refusal;
use crate::slack::blocks::{Reply, truncate};
use crate::spec::catalog::Catalog;

/// `action_id` of the Abort button on a run's message; its `value` is the run id.
pub const ABORT_ACTION_ID: &str = "abort_run";
/// `callback_id` of the start form.
pub const START_MODAL_CALLBACK_ID: &str = "chaos_start";

const EXPERIMENT_BLOCK: &str = "experiment";
const PARAMS_BLOCK: &str = "params";

/// The start form: an experiment picker and a `key=value` lines input. `channel` (where the
/// command was typed) travels in `private_metadata`.
pub fn start_modal(catalog: &Catalog, channel: &str) -> Value {
    // Slack: at most 100 options, option text ≤ 75 chars, value ≤ 150 chars.
    let options: Vec<Value> = catalog
        .entries
        .iter()
        .filter(|e| e.experiment.name.chars().count() <= 150)
        .take(100)
        .map(|e| {
            json!({
                "text": {"type": "plain_text", "text": truncate(&format!("{} — {}", e.experiment.name, e.experiment.title), 75)},
                "value": e.experiment.name,
            })
        })
        .collect();
    let mut help = String::from("*Parameters* (defaults apply to what you leave out):");
    for e in &catalog.entries {
        let ps: Vec<String> = e
            .parameters
            .iter()
            .map(|p| format!("`{}` ({}, default `{}`)", p.name, p.describe(), p.default))
            .collect();
        help.push_str(&format!(
            "\n• `{}`: {}",
            e.experiment.name,
            if ps.is_empty() {
                "none".to_string()
            } else {
                ps.join(", ")
            }
        ));
    }
    json!({
        "type": "modal",
        "callback_id": START_MODAL_CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Start an experiment"},
        "submit": {"type": "plain_text", "text": "Start"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json!({"channel": channel}).to_string(),
        "blocks": [
            {
                "type": "input",
                "block_id": EXPERIMENT_BLOCK,
                "label": {"type": "plain_text", "text": "Experiment"},
                "element": {
                    "type": "static_select",
                    "action_id": EXPERIMENT_BLOCK,
                    "placeholder": {"type": "plain_text", "text": "Choose an experiment"},
                    "options": options,
                },
            },
            {
                "type": "input",
                "block_id": PARAMS_BLOCK,
                "optional": true,
                "label": {"type": "plain_text", "text": "Parameters"},
                "hint": {"type": "plain_text", "text": "One key=value per line, e.g. latency=500ms"},
                "element": {"type": "plain_text_input", "action_id": PARAMS_BLOCK, "multiline": true},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&help, 3000)}},
        ],
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

impl SlackApp {
    /// Handles an interaction payload (the form field `payload` over HTTP, the Socket Mode
    /// `interactive` payload). Returns the JSON to answer with; `Value::Null` means an empty
    /// 200 (for a modal: close it).
    pub async fn handle_interaction(self: &Arc<Self>, payload: Value) -> Value {
        let team = str_at(&payload, &["team", "id"])
            .or_else(|| str_at(&payload, &["user", "team_id"]))
            .unwrap_or("")
            .to_string();
        let user = str_at(&payload, &["user", "id"]).unwrap_or("").to_string();
        let span = tracing::info_span!("slack_interaction", team, user);
        match payload.get("type").and_then(Value::as_str) {
            Some("block_actions") => {
                let app = Arc::clone(self);
                tokio::spawn(
                    async move { app.block_actions(payload, team, user).await }.instrument(span),
                );
                Value::Null
            }
            Some("view_submission") => {
                self.view_submission(&payload, &team, &user)
                    .instrument(span)
                    .await
            }
            other => {
                debug!(kind = ?other, "interaction type not handled");
                Value::Null
            }
        }
    }

    async fn block_actions(&self, payload: Value, team: String, user: String) {
        let channel = str_at(&payload, &["channel", "id"])
            .or_else(|| str_at(&payload, &["container", "channel_id"]))
            .unwrap_or("")
            .to_string();
        let Some(actions) = payload.get("actions").and_then(Value::as_array) else {
            return;
        };
        for action in actions {
            let action_id = str_at(action, &["action_id"]).unwrap_or("");
            if super::qa::is_qa_action(action_id) {
                self.qa_action(&payload, action, &team, &user, &channel)
                    .await;
                continue;
            }
            // The Skip button of a schedule's heads-up (`super::schedules`).
            if action_id == crate::slack::schedules::SKIP_ACTION_ID {
                let value = str_at(action, &["value"]).unwrap_or("").to_string();
                self.skip_button(&team, &user, &channel, &value).await;
                continue;
            }
            if action_id != ABORT_ACTION_ID {
                debug!(action = ?action.get("action_id"), "action not handled");
                continue;
            }
            let run_id = str_at(action, &["value"]).unwrap_or("").to_string();
            let result = match auth::check_team(&self.cfg.slack, &team) {
                Err(m) => Err(m),
                Ok(()) if run_id.is_empty() => {
                    Err("the Abort button carries no run id; use `/chaos abort <run-id>`".into())
                }
                Ok(()) => self.abort_run(&team, &user, &channel, &run_id, None).await,
            };
            let (reply, outcome) = match result {
                Ok(m) => (Reply::simple(m), "ok".to_string()),
                Err(m) => {
                    let o = format!("refused: {m}");
                    (Reply::error(m), o)
                }
            };
            info!(run_id, outcome, "abort button handled");
            if !channel.is_empty() {
                self.tell(&channel, &user, &reply).await;
            }
            self.audit(
                &team,
                &user,
                &channel,
                "button:abort_run",
                &run_id,
                &outcome,
            )
            .await;
        }
    }

    /// The board's Answer and "Add a learning" buttons.
    async fn qa_action(
        &self,
        payload: &Value,
        action: &Value,
        team: &str,
        user: &str,
        channel: &str,
    ) {
        let action_id = str_at(action, &["action_id"]).unwrap_or("");
        let value = str_at(action, &["value"]).unwrap_or("");
        let trigger = str_at(payload, &["trigger_id"]);
        let result = match auth::check_team(&self.cfg.slack, team) {
            Err(m) => Err(m),
            Ok(()) if action_id == crate::slack::qa::ANSWER_ACTION_ID => {
                self.qa_answer_button(user, channel, value, trigger).await
            }
            Ok(()) => self.qa_learn_button(user, channel, value, trigger).await,
        };
        let outcome = match result {
            Ok(m) => format!("ok: {m}"),
            Err(m) => {
                if !channel.is_empty() {
                    self.tell(channel, user, &Reply::error(&m)).await;
                }
                format!("refused: {m}")
            }
        };
        info!(action_id, value, outcome, "Q&A button handled");
        self.audit(
            team,
            user,
            channel,
            &format!("button:{action_id}"),
            value,
            &outcome,
        )
        .await;
    }

    async fn view_submission(&self, payload: &Value, team: &str, user: &str) -> Value {
        let view = payload.get("view").cloned().unwrap_or(Value::Null);
        if super::qa::is_qa_view(str_at(&view, &["callback_id"]).unwrap_or("")) {
            return self.qa_view_submission(&view, team, user).await;
        }
        if str_at(&view, &["callback_id"]) != Some(START_MODAL_CALLBACK_ID) {
            debug!("view submission of another view ignored");
            return Value::Null;
        }
        let channel = str_at(&view, &["private_metadata"])
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|m| m.get("channel").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let values = view
            .pointer("/state/values")
            .cloned()
            .unwrap_or(Value::Null);
        let experiment = str_at(
            &values,
            &[
                EXPERIMENT_BLOCK,
                EXPERIMENT_BLOCK,
                "selected_option",
                "value",
            ],
        )
        .unwrap_or("")
        .to_string();
        let params_text = str_at(&values, &[PARAMS_BLOCK, PARAMS_BLOCK, "value"])
            .unwrap_or("")
            .to_string();
        let detail = format!("{experiment} {}", params_text.replace('\n', " "));
        let result = self
            .start_from_form(team, user, &channel, &experiment, &params_text)
            .await;
        match result {
            Ok(id) => {
                self.audit(
                    team,
                    user,
                    &channel,
                    "modal:start",
                    &detail,
                    &format!("ok: {id}"),
                )
                .await;
                if !channel.is_empty() {
                    let reply = Reply::simple(format!(
                        ":test_tube: Run `{id}` of `{experiment}` is queued. It will appear in this channel with its live status and an Abort button."
                    ));
                    self.tell(&channel, user, &reply).await;
                }
                Value::Null
            }
            Err((field, msg)) => {
                self.audit(
                    team,
                    user,
                    &channel,
                    "modal:start",
                    &detail,
                    &format!("refused: {msg}"),
                )
                .await;
                let block = match field {
                    Field::Experiment => EXPERIMENT_BLOCK,
                    Field::Params => PARAMS_BLOCK,
                };
                json!({
                    "response_action": "errors",
                    "errors": { block: truncate(&msg, 1000) },
                })
            }
        }
    }

    async fn start_from_form(
        &self,
        team: &str,
        user: &str,
        channel: &str,
        experiment: &str,
        params_text: &str,
    ) -> Result<String, (Field, String)> {
        auth::check_team(&self.cfg.slack, team).map_err(|m| (Field::Experiment, m))?;
        if experiment.is_empty() {
            return Err((Field::Experiment, "choose an experiment".into()));
        }
        if channel.is_empty() {
            return Err((
                Field::Experiment,
                "this form lost track of its channel; close it and type `/chaos start` again"
                    .into(),
            ));
        }
        if params_text.chars().count() > commands::MAX_TEXT_CHARS {
            return Err((
                Field::Params,
                format!(
                    "the parameters are longer than {} characters; shorten them",
                    commands::MAX_TEXT_CHARS
                ),
            ));
        }
        let params = commands::parse_params(params_text.split_whitespace())
            .map_err(|e| (Field::Params, e.to_string()))?;
        let origin = crate::slack::SlackOrigin {
            team: team.to_string(),
            channel: channel.to_string(),
            user: user.to_string(),
        };
        match self.app().start(&origin, experiment, &params).await {
            Ok((id, _)) => Ok(id),
            Err(r) => {
                let field = match r {
                    Refusal::BadParameters(_) => Field::Params,
                    _ => Field::Experiment,
                };
                let m = self.asker(user, "/chaos").text(&r);
                if !matches!(
                    r,
                    Refusal::UnknownExperiment(_)
                        | Refusal::NotAllowed(_)
                        | Refusal::BadParameters(_)
                ) {
                    warn!(error = %m, "submission from the start form failed");
                }
                Err((field, m))
            }
        }
    }
}
