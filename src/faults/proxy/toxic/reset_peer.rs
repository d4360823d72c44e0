//! `reset_peer`: `timeout` after the connection first saw the toxic, the socket receiving this
//! direction is closed with SO_LINGER 0 (the peer sees RST); zero resets at once.

use std::time::Duration;

use tokio::time::Instant;

use super::{TimerAction, Toxic};

#[derive(Debug)]
pub(super) struct ResetPeer {
    reset_at: Instant,
}

impl ResetPeer {
    pub fn new(timeout: Duration, since: Instant) -> Self {
        Self {
            reset_at: since + timeout,
        }
    }
}

impl Toxic for ResetPeer {
    fn timer(&self) -> Option<(Instant, TimerAction)> {
        Some((self.reset_at, TimerAction::Reset))
    }
}
