//! `slicer`: data goes out in slices of about `average_size` bytes (± a uniform draw in
//! `size_variation`), with `delay` between slices.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::{Chunk, Plan, Toxic};

#[derive(Debug)]
pub(super) struct Slicer {
    average: usize,
    variation: usize,
    delay: Duration,
    rng: ChaCha8Rng,
    /// Bytes left in the current slice, and when the next slice may start.
    slice_left: usize,
    next_slice: Option<Instant>,
}

impl Slicer {
    pub fn new(average: usize, variation: usize, delay: Duration, rng: ChaCha8Rng) -> Self {
        Self {
            average,
            variation,
            delay,
            rng,
            slice_left: 0,
            next_slice: None,
        }
    }

    /// Size of the next slice: `average` ± a uniform draw in `variation`, at least 1 byte.
    fn slice_size(&mut self) -> usize {
        if self.variation == 0 {
            return self.average.max(1);
        }
        let v = self.variation.min(self.average.saturating_sub(1)) as i64;
        let off = if v == 0 {
            0
        } else {
            self.rng.random_range(-v..=v)
        };
        (self.average as i64 + off).max(1) as usize
    }
}

impl Toxic for Slicer {
    fn validate(&self) -> Result<(), String> {
        if self.average == 0 {
            return Err("slicer average_size must be at least 1 byte".into());
        }
        Ok(())
    }

    fn plan(&mut self, _chunk: &Chunk, plan: &mut Plan) {
        if let Some(t) = self.next_slice {
            plan.not_before(t);
        }
        if self.slice_left == 0 {
            self.slice_left = self.slice_size();
        }
        plan.at_most(self.slice_left);
    }

    fn sent(&mut self, n: usize, now: Instant) {
        self.slice_left = self.slice_left.saturating_sub(n);
        if self.slice_left == 0 {
            self.next_slice = Some(now + self.delay);
        }
    }
}
