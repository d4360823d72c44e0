//! `timeout` (blackhole): data and a half-close are swallowed while it is active; the connection
//! is closed `timeout` after it first saw the toxic (zero: never, until the toxic goes).

use std::time::Duration;

use tokio::time::Instant;

use super::{TimerAction, Toxic};

#[derive(Debug)]
pub(super) struct Timeout {
    /// When the connection is closed; `None` for a zero timeout.
    close_at: Option<Instant>,
}

impl Timeout {
    pub fn new(timeout: Duration, since: Instant) -> Self {
        Self {
            close_at: (!timeout.is_zero()).then(|| since + timeout),
        }
    }
}

impl Toxic for Timeout {
    fn timer(&self) -> Option<(Instant, TimerAction)> {
        self.close_at.map(|t| (t, TimerAction::Close))
    }

    fn swallows(&self) -> bool {
        true
    }
}
