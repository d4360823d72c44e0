//! The Events API: `url_verification`, `app_mention` answered through the outbox, and the
//! thread replies and reactions of the run Q&A (see `qa.rs`).
//! Events are deduplicated by `event_id` in the store (Slack retries, with
//! `X-Slack-Retry-Num`, what it thinks was not acknowledged), and the bot's own messages are
//! ignored. The answer to Slack is always immediate; the work is spawned.

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{Instrument, debug, info, warn};

use super::{SlackApp, auth};
use crate::run::now_ms;
use crate::slack::blocks::Reply;
use crate::store::outbox::{OutboundAction, OutboundMessage};

impl SlackApp {
    /// Handles an Events API body (HTTP) or Socket Mode `events_api` payload. Returns the JSON
    /// to answer with (`{"challenge":..}` for `url_verification`), or `None` for an empty 200.
    pub async fn handle_event(
        self: &Arc<Self>,
        body: Value,
        retry_num: Option<u32>,
    ) -> Option<Value> {
        match body.get("type").and_then(Value::as_str) {
            Some("url_verification") => {
                let challenge = body.get("challenge").cloned().unwrap_or(Value::Null);
                Some(json!({ "challenge": challenge }))
            }
            Some("event_callback") => {
                let app = Arc::clone(self);
                let event_id = body
                    .get("event_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                let span = tracing::info_span!("slack_event", event_id, retry_num);
                tokio::spawn(async move { app.process_event(body).await }.instrument(span));
                None
            }
            other => {
                debug!(kind = ?other, "ignoring an unknown Events API body");
                None
            }
        }
    }

    async fn process_event(&self, body: Value) {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let team = s(&body, "team_id");
        let event_id = s(&body, "event_id");
        let event = body.get("event").cloned().unwrap_or(Value::Null);
        let kind = s(&event, "type");
        if let Err(why) = auth::check_team(&self.cfg.slack, &team) {
            warn!(team, "event from another workspace ignored: {why}");
            return;
        }
        if event_id.is_empty() {
            warn!("event without event_id ignored");
            return;
        }
        // The Q&A handlers are idempotent (a question is its message, a vote one row per
        // person), so they skip the dedup table: a redelivery after a crash mid-way still
        // completes the work.
        match kind.as_str() {
            "message" => return self.qa_message_event(&team, &event).await,
            "reaction_added" => return self.qa_reaction_event(&event, true).await,
            "reaction_removed" => return self.qa_reaction_event(&event, false).await,
            _ => {}
        }
        match self.store.remember_event(&event_id, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                debug!("duplicate event ignored");
                return;
            }
            Err(e) => {
                // Better to risk answering twice than to drop a mention silently.
                warn!(error = %e, "cannot record the event id; handling it anyway");
            }
        }
        let user = s(&event, "user");
        let own = event.get("bot_id").is_some_and(|b| !b.is_null())
            || self.bot_user_id.get().is_some_and(|b| *b == user);
        if own {
            debug!("own message ignored");
            return;
        }
        if kind != "app_mention" {
            debug!(kind, "event type not handled");
            return;
        }
        let channel = s(&event, "channel");
        let text = s(&event, "text");
        let reply = if text.to_lowercase().contains("status") {
            match self.status(&team, &user).await {
                Ok(r) | Err(r) => r,
            }
        } else {
            Reply::simple(format!(
                "Hi <@{user}>! I run chaos experiments. Try `/chaos list` to see them, `/chaos start <experiment>` to run one, `/chaos status` for what is running, or `/chaos help`. Mention me with \"status\" for the runs in flight."
            ))
        };
        let msg = OutboundMessage {
            thread_key: format!("mention:{channel}"),
            channel: channel.clone(),
            action: OutboundAction::Post {
                key: None,
                in_thread_of: None,
                text: crate::slack::blocks::truncate(
                    &reply.text,
                    crate::slack::blocks::MAX_TEXT_CHARS,
                ),
                blocks: Some(Value::Array(reply.blocks())),
            },
        };
        let outcome = match self.store.enqueue(&[msg], None).await {
            Ok(()) => "ok: answer queued".to_string(),
            Err(e) => {
                warn!(error = %e, "cannot queue the answer to a mention");
                format!("error: {e}")
            }
        };
        info!(channel, user, "app_mention handled");
        self.audit(&team, &user, &channel, "event:app_mention", &text, &outcome)
            .await;
    }
}
