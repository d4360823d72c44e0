//! `bandwidth`: at most `rate_kbps` kilobytes per second (Toxiproxy's KB is 1000 bytes), written
//! in pieces of about 10 ms worth so the rate is smooth. Zero is unlimited.

use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Plan, Toxic};

#[derive(Debug)]
pub(super) struct Bandwidth {
    /// Bytes per second; `None` is unlimited.
    rate: Option<u64>,
    /// Earliest instant the next byte may go out.
    next_send: Option<Instant>,
}

impl Bandwidth {
    pub fn new(rate_kbps: u64) -> Self {
        Self {
            rate: (rate_kbps > 0).then(|| rate_kbps.saturating_mul(1000)),
            next_send: None,
        }
    }
}

/// Largest piece written at once: about 10 ms worth.
fn piece(rate: u64) -> usize {
    (rate / 100).clamp(1, 64 * 1024) as usize
}

impl Toxic for Bandwidth {
    fn plan(&mut self, _chunk: &Chunk, plan: &mut Plan) {
        if let Some(rate) = self.rate {
            plan.at_most(piece(rate));
            if let Some(t) = self.next_send {
                plan.not_before(t);
            }
        }
    }

    /// Books `n` bytes sent at `now` against the rate.
    fn sent(&mut self, n: usize, now: Instant) {
        let Some(rate) = self.rate else { return };
        let start = self.next_send.map_or(now, |t| t.max(now));
        let cost = Duration::from_nanos((n as u128 * 1_000_000_000 / rate as u128) as u64);
        self.next_send = Some(start + cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_books_time() {
        let now = Instant::now();
        let mut bw = Bandwidth::new(100);
        bw.sent(10_000, now);
        assert_eq!(bw.next_send, Some(now + Duration::from_millis(100)));
    }
}
