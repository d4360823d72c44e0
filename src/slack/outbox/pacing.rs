//! When to try again after a failure: exponential backoff with jitter. (The holds after a 429
//! and the per-channel post pacing live in the store, shared by every replica.)

use std::time::Duration;

/// Backoff before attempt `attempts + 1` after `attempts` failed ones: `base * 2^(attempts-1)`
/// capped at `max`, then jittered down by up to half so replicas and threads do not retry in
/// lockstep.
pub fn backoff(attempts: i64, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let full = base.saturating_mul(2u32.saturating_pow(exp)).min(max);
    let jitter: f64 = rand::random::<f64>() * 0.5;
    full.mul_f64(1.0 - jitter)
}

pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        for (attempts, full) in [(1, 500), (2, 1000), (3, 2000), (10, 30_000), (1000, 30_000)] {
            let d = backoff(attempts, base, max).as_millis() as u64;
            assert!(d <= full && d >= full / 2, "attempt {attempts}: {d}");
        }
    }
}
