//! `[gameday]`: game-day defaults, and the bounds a plan is held to.

use std::time::Duration;

use serde::Deserialize;

/// The longest Q&A window a plan (or `[gameday] qa_window`) may set.
pub const MAX_QA_WINDOW: Duration = Duration::from_secs(2 * 3600);

/// `[gameday]`: defaults for game-day plans that do not set their own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GamedayConfig {
    /// How long each run's Q&A lasts before the next agenda item starts.
    #[serde(
        default = "default_gameday_qa_window",
        with = "crate::config::duration_serde"
    )]
    pub qa_window: Duration,
}

fn default_gameday_qa_window() -> Duration {
    Duration::from_secs(600)
}

impl Default for GamedayConfig {
    fn default() -> Self {
        GamedayConfig {
            qa_window: default_gameday_qa_window(),
        }
    }
}
