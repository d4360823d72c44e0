//! `[slack]` (credentials, listen address, permissions) and `[qa]` (the speaker Q&A).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// A secret from the config or the environment; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The Slack app: credentials, where to listen, and who may do what.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Verifies that requests come from Slack. Env: SLACK_SIGNING_SECRET.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// `xoxb-…` token for the Web API. Env: SLACK_BOT_TOKEN.
    #[serde(default)]
    pub bot_token: Option<Secret>,
    /// `xapp-…` token; when set, chaosbot connects over Socket Mode (no public URL needed).
    /// Env: SLACK_APP_TOKEN.
    #[serde(default)]
    pub app_token: Option<Secret>,
    /// Base URL of the Web API, ending in `/`. Env: SLACK_API_URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// HTTP listen address of `chaosbot serve`. Env: CHAOSBOT_LISTEN.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The workspace (team id) this bot serves; requests from others are refused.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Slack user IDs who may start any experiment anywhere and abort any run.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Who may start which experiments, and in which channels.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Named in refusals as whom to ask, e.g. "#sre-oncall" or "<@U0123>".
    #[serde(default)]
    pub contact: Option<String>,
    /// One post per channel per this interval, across every replica (Slack allows about one
    /// message per second per channel); `0s` turns pacing off.
    #[serde(
        default = "default_post_interval",
        with = "crate::config::duration_serde"
    )]
    pub post_interval: Duration,
    /// Posts a channel may take at once after a quiet spell.
    #[serde(default = "default_post_burst")]
    pub post_burst: u32,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            signing_secret: None,
            bot_token: None,
            app_token: None,
            api_url: None,
            listen: None,
            team_id: None,
            operators: Vec::new(),
            allow: Vec::new(),
            contact: None,
            post_interval: default_post_interval(),
            post_burst: default_post_burst(),
        }
    }
}

fn default_post_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_post_burst() -> u32 {
    4
}

/// One permission: these users (empty = anyone) may start these experiments (names or `*`
/// globs) in these channels (empty = any channel).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub experiments: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The speaker Q&A in a run's thread.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// How long after a run ends its thread takes questions.
    #[serde(default = "default_qa_window", with = "crate::config::duration_serde")]
    pub window: Duration,
    /// Questions shown on the board (most votes first); `/chaos qa` shows them all.
    #[serde(default = "default_board_top")]
    pub board_top: u32,
}

fn default_qa_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_board_top() -> u32 {
    10
}

impl Default for QaConfig {
    fn default() -> Self {
        QaConfig {
            window: default_qa_window(),
            board_top: default_board_top(),
        }
    }
}

/// Slack's Web API base URL.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";
