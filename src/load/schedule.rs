//! When each request is *meant* to be sent. The generator is open-loop: the i-th request's
//! intended send time depends only on `i` and the schedule, never on how fast earlier requests
//! were answered, so a slow server cannot slow the load down and hide its own latency.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The request rate over the attack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// `rate` requests per second, evenly spaced.
    Constant { rate: f64 },
    /// The rate grows (or shrinks) linearly from `from` to `to` req/s over `over`, then stays
    /// at `to`.
    Ramp {
        from: f64,
        to: f64,
        #[serde(with = "crate::config::duration_serde")]
        over: Duration,
    },
    /// As fast as the connections allow (closed-loop; for benchmarks, never from a YAML file:
    /// an unbounded load is not an experiment).
    Unthrottled,
}

impl Schedule {
    /// Offset from the start at which request `i` (0-based) is meant to go out; `None` when
    /// the schedule sends nothing more (a rate of zero).
    pub fn intended(&self, i: u64) -> Option<Duration> {
        let i = i as f64;
        let secs = match *self {
            Schedule::Unthrottled => 0.0,
            Schedule::Constant { rate } if rate > 0.0 => i / rate,
            Schedule::Constant { .. } => return None,
            Schedule::Ramp { from, to, over } => {
                let t_ramp = over.as_secs_f64();
                // Requests sent during the ramp: N(t) = from·t + a·t²/2 with a = (to-from)/T;
                // the i-th request is due at the t where N(t) = i.
                let a = if t_ramp > 0.0 {
                    (to - from) / t_ramp
                } else {
                    0.0
                };
                let n_ramp = from * t_ramp + a * t_ramp * t_ramp / 2.0;
                if i < n_ramp {
                    if a.abs() < 1e-12 {
                        if from <= 0.0 {
                            return None;
                        }
                        i / from
                    } else {
                        let disc = (from * from + 2.0 * a * i).max(0.0);
                        (disc.sqrt() - from) / a
                    }
                } else if to > 0.0 {
                    t_ramp + (i - n_ramp) / to
                } else {
                    return None;
                }
            }
        };
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(secs))
    }

    /// The intended rate at offset `t` (req/s); 0 for [`Schedule::Unthrottled`].
    pub fn rate_at(&self, t: Duration) -> f64 {
        match *self {
            Schedule::Constant { rate } => rate,
            Schedule::Unthrottled => 0.0,
            Schedule::Ramp { from, to, over } => {
                let f = if over.is_zero() {
                    1.0
                } else {
                    (t.as_secs_f64() / over.as_secs_f64()).min(1.0)
                };
                from + (to - from) * f
            }
        }
    }

    /// How many requests the schedule intends to send in `[0, t)`.
    pub fn planned_by(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        match *self {
            Schedule::Constant { rate } => rate * t,
            Schedule::Unthrottled => 0.0,
            Schedule::Ramp { from, to, over } => {
                let tr = over.as_secs_f64();
                let a = if tr > 0.0 { (to - from) / tr } else { 0.0 };
                let in_ramp = t.min(tr);
                from * in_ramp + a * in_ramp * in_ramp / 2.0 + (t - tr).max(0.0) * to
            }
        }
    }

    /// "200 req/s" or "ramp 10 → 500 req/s".
    pub fn describe(&self) -> String {
        match self {
            Schedule::Constant { rate } => format!("{} req/s", trim(*rate)),
            Schedule::Ramp { from, to, .. } => {
                format!("ramp {} → {} req/s", trim(*from), trim(*to))
            }
            Schedule::Unthrottled => "as fast as possible".into(),
        }
    }
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_spacing() {
        let s = Schedule::Constant { rate: 100.0 };
        assert_eq!(s.intended(0), Some(Duration::ZERO));
        assert_eq!(s.intended(50), Some(Duration::from_millis(500)));
        assert_eq!(Schedule::Constant { rate: 0.0 }.intended(1), None);
    }

    #[test]
    fn ramp_follows_the_integral() {
        let s = Schedule::Ramp {
            from: 0.0,
            to: 100.0,
            over: Duration::from_secs(10),
        };
        // N(t) = 5 t² → 500 requests in the ramp; the 125th is due at t = 5 s.
        let t = s.intended(125).unwrap().as_secs_f64();
        assert!((t - 5.0).abs() < 1e-9, "{t}");
        assert!((s.planned_by(Duration::from_secs(10)) - 500.0).abs() < 1e-9);
        // After the ramp: 100 req/s.
        let t = s.intended(600).unwrap().as_secs_f64();
        assert!((t - 11.0).abs() < 1e-9, "{t}");
        // Times are monotonic.
        let mut last = Duration::ZERO;
        for i in 0..700 {
            let t = s.intended(i).unwrap();
            assert!(t >= last);
            last = t;
        }
        let down = Schedule::Ramp {
            from: 100.0,
            to: 10.0,
            over: Duration::from_secs(2),
        };
        assert!(down.intended(100).is_some());
        assert!((down.rate_at(Duration::from_secs(1)) - 55.0).abs() < 1e-9);
    }
}
