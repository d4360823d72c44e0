//! `limit_data`: the connection is closed once `bytes` bytes have passed in this direction since
//! it first saw the toxic.

use tokio::time::Instant;

use super::{Chunk, Plan, Toxic};

#[derive(Debug)]
pub(super) struct LimitData {
    bytes: u64,
    /// Bytes passed since activation.
    passed: u64,
}

impl LimitData {
    pub fn new(bytes: u64) -> Self {
        Self { bytes, passed: 0 }
    }
}

impl Toxic for LimitData {
    fn plan(&mut self, _chunk: &Chunk, plan: &mut Plan) {
        let left = self.bytes.saturating_sub(self.passed);
        if left == 0 {
            plan.close = Some("limit_data reached");
        } else {
            plan.at_most(usize::try_from(left).unwrap_or(usize::MAX));
        }
    }

    fn sent(&mut self, n: usize, _now: Instant) {
        self.passed += n as u64;
    }
}
