//! When to try again: exponential backoff with jitter for failures, and per-method holds after
//! a 429 (Slack's `Retry-After` is per method, so one limited method must not stall the others).

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Per-method "no calls before" instants (unix ms), set from 429 answers.
#[derive(Default)]
pub struct MethodHolds {
    until: Mutex<HashMap<String, i64>>,
}

impl MethodHolds {
    pub fn hold(&self, method: &str, until_ms: i64) {
        // A poisoned lock only means another task panicked mid-insert; the map is still usable.
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(method.to_string()).or_insert(until_ms);
        *slot = (*slot).max(until_ms);
    }

    /// When `method` may be called again, if not yet at `now_ms`.
    pub fn held_until(&self, method: &str, now_ms: i64) -> Option<i64> {
        let map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        map.get(method).copied().filter(|&t| t > now_ms)
    }
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

    #[test]
    fn holds_are_per_method_and_expire() {
        let h = MethodHolds::default();
        h.hold("chat.update", 2000);
        assert_eq!(h.held_until("chat.update", 1000), Some(2000));
        assert_eq!(h.held_until("chat.postMessage", 1000), None);
        assert_eq!(h.held_until("chat.update", 2000), None);
    }
}
