//! The Slack edge: verification, routes, the `/chaos` command, events, interactions,
//! authorization and the audit log. It only parses and calls the application layer
//! ([`crate::app`]), which authorizes and submits; it never waits for
//! a run and never posts a run's live message (the views render those from the journal).
//!
//! Handling is transport-agnostic: the HTTP routes ([`http::router`]) and Socket Mode both call
//! [`SlackApp::handle_command`], [`SlackApp::handle_event`] and
//! [`SlackApp::handle_interaction`], and send back the JSON they return.

pub mod auth;
pub mod commands;
mod events;
mod gamedays;
mod handlers;
pub mod http;
mod interactions;
mod qa;
mod refusals;
mod reports;
mod schedules;
pub mod verify;

use std::sync::Arc;

use serde::Deserialize;
use tracing::warn;

use crate::app::App;
use crate::config::Config;
use crate::engine::Engine;
use crate::run::now_ms;
use crate::slack::api::SlackApi;
use crate::slack::blocks;
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::{AuditEntry, DynStore};

pub use crate::slack::schedules::SKIP_ACTION_ID;
pub use interactions::{ABORT_ACTION_ID, START_MODAL_CALLBACK_ID};
pub use refusals::Asker;
pub(crate) use refusals::resume_text;

/// Everything the edge needs. Cheap to share (`Arc<SlackApp>`).
pub struct SlackApp {
    pub engine: Arc<Engine>,
    pub store: DynStore,
    pub cfg: Arc<Config>,
    pub api: Arc<dyn SlackApi>,
    /// The bot's own user id (from `auth.test`), so its own messages are ignored.
    pub bot_user_id: std::sync::OnceLock<String>,
    /// Orders the Q&A board updates of each run (see [`crate::slack::qa::BoardUpdates`]).
    pub qa_boards: crate::slack::qa::BoardUpdates,
    /// Where "now" comes from for planned times (schedules); a manual clock in tests.
    pub clock: crate::clock::DynClock,
}

/// The scheduler and the game-day driver of `serve` share the edge's engine, store and clock.
impl From<Arc<SlackApp>> for App {
    fn from(s: Arc<SlackApp>) -> App {
        s.app()
    }
}

/// A slash command as Slack sends it: a form body over HTTP, the same fields as JSON over
/// Socket Mode.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SlashCommand {
    pub team_id: String,
    pub channel_id: String,
    pub user_id: String,
    /// The command as typed (`/chaos`); the grammar does not depend on it.
    pub command: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub channel_name: Option<String>,
    #[serde(default)]
    pub team_domain: Option<String>,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub trigger_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "could not read the slash command ({0}); Slack sends team_id, channel_id, user_id and command"
)]
pub struct SlashCommandError(String);

impl SlashCommand {
    /// From the raw `application/x-www-form-urlencoded` body (HTTP).
    pub fn from_form(body: &[u8]) -> Result<SlashCommand, SlashCommandError> {
        serde_urlencoded::from_bytes(body).map_err(|e| SlashCommandError(e.to_string()))
    }

    /// From a Socket Mode `slash_commands` payload.
    pub fn from_json(payload: serde_json::Value) -> Result<SlashCommand, SlashCommandError> {
        serde_json::from_value(payload).map_err(|e| SlashCommandError(e.to_string()))
    }
}

impl SlackApp {
    /// The application layer over the same engine, store, config and clock.
    pub fn app(&self) -> App {
        App::new(
            self.engine.clone(),
            self.store.clone(),
            self.cfg.clone(),
            self.clock.clone(),
        )
    }

    /// How refusals are worded for `user`, who typed `command`.
    pub(crate) fn asker<'a>(&'a self, user: &'a str, command: &'a str) -> Asker<'a> {
        Asker {
            cfg: &self.cfg,
            user,
            command,
        }
    }

    /// Writes an audit row; a failure is logged, never shown to the user (the action itself
    /// already happened or was refused).
    pub(crate) async fn audit(
        &self,
        team: &str,
        user: &str,
        channel: &str,
        action: &str,
        detail: &str,
        outcome: &str,
    ) {
        let entry = AuditEntry {
            at_ms: now_ms(),
            team: team.to_string(),
            user: user.to_string(),
            channel: channel.to_string(),
            action: action.to_string(),
            detail: blocks::truncate(detail, 500),
            outcome: blocks::truncate(outcome, 500),
        };
        if let Err(e) = self.store.audit(&entry).await {
            warn!(error = %e, action, "cannot write the Slack audit row");
        }
    }

    /// Queues an ephemeral message to `user` in `channel` through the outbox.
    pub(crate) async fn tell(&self, channel: &str, user: &str, reply: &blocks::Reply) {
        let msg = OutboundMessage {
            thread_key: format!("ephemeral:{channel}:{user}"),
            channel: channel.to_string(),
            action: OutboundAction::Ephemeral {
                user: user.to_string(),
                in_thread_of: None,
                text: blocks::truncate(&reply.text, blocks::MAX_TEXT_CHARS),
                blocks: Some(serde_json::Value::Array(reply.blocks())),
            },
        };
        if let Err(e) = self.store.enqueue(&[msg], None).await {
            warn!(error = %e, channel, user, "cannot queue an ephemeral message");
        }
    }
}
