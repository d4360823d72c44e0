//! `slow_close`: once the sender has closed, the close is passed on `delay` later (the largest
//! delay wins when several apply).

use std::time::Duration;

use super::Toxic;

#[derive(Debug)]
pub(super) struct SlowClose {
    delay: Duration,
}

impl SlowClose {
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Toxic for SlowClose {
    fn close_delay(&self) -> Option<Duration> {
        Some(self.delay)
    }
}
