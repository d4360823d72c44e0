//! `latency`: each chunk is held until `latency` ± a uniform draw in `jitter` after it was read.
//! Timed from the chunk's arrival, so a stream of chunks is delayed in a pipeline, not
//! cumulatively. Of several latency toxics the largest applies (they do not add up).

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{Chunk, Plan, Toxic};

#[derive(Debug)]
pub(super) struct Latency {
    latency: Duration,
    jitter: Duration,
    rng: ChaCha8Rng,
    /// The draw for the chunk with this sequence number, kept across its re-evaluations.
    drawn: Option<(u64, Duration)>,
}

impl Latency {
    pub fn new(latency: Duration, jitter: Duration, rng: ChaCha8Rng) -> Self {
        Self {
            latency,
            jitter,
            rng,
            drawn: None,
        }
    }

    /// The delay for one chunk: `latency` plus a uniform draw in ±`jitter`, never negative.
    fn draw(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let j = self.jitter.as_nanos().min(i64::MAX as u128) as i64;
        let off = self.rng.random_range(-j..=j);
        let base = self.latency.as_nanos().min(i64::MAX as u128) as i64;
        Duration::from_nanos(base.saturating_add(off).max(0) as u64)
    }
}

impl Toxic for Latency {
    fn plan(&mut self, chunk: &Chunk, plan: &mut Plan) {
        let d = match self.drawn {
            Some((seq, d)) if seq == chunk.seq => d,
            _ => {
                let d = self.draw();
                self.drawn = Some((chunk.seq, d));
                d
            }
        };
        plan.not_before(chunk.read_at + d);
    }
}
