//! Pass/fail criteria on load numbers, in the k6 style: `p99 < 300ms`, `error_rate < 1%`,
//! `rate > 900`. They serve as hypothesis tolerances (judged on the whole attack) and as stop
//! conditions (judged on each one-second window).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::stats::LoadFigures;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
    Avg,
    /// Share of failed requests.
    ErrorRate,
    /// Achieved requests per second.
    Rate,
}

impl Metric {
    /// Every metric name, for hints.
    pub const NAMES: &'static [&'static str] = &[
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "max",
        "avg",
        "error_rate",
        "rate",
    ];

    fn named(s: &str) -> Option<Metric> {
        Some(match s {
            "p50" | "med" => Metric::P50,
            "p90" => Metric::P90,
            "p95" => Metric::P95,
            "p99" => Metric::P99,
            "p99.9" | "p999" => Metric::P999,
            "max" => Metric::Max,
            "avg" => Metric::Avg,
            "error_rate" => Metric::ErrorRate,
            "rate" => Metric::Rate,
            _ => return None,
        })
    }

    fn is_latency(self) -> bool {
        !matches!(self, Metric::ErrorRate | Metric::Rate)
    }
}

/// A parsed threshold; (de)serialized as its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Threshold {
    pub metric: Metric,
    /// Milliseconds for latencies, a share in [0, 1] for `error_rate`, req/s for `rate`.
    pub limit: f64,
    text: String,
}

/// A threshold that does not parse: what was wrong, and how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ThresholdError {
    pub message: String,
    pub hint: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> ThresholdError {
    ThresholdError {
        message: message.into(),
        hint: hint.into(),
    }
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, ThresholdError> {
        let t = text.trim();
        let (name, op, value) = match (t.find('<'), t.find('>')) {
            (Some(i), None) => (&t[..i], '<', &t[i + 1..]),
            (None, Some(i)) => (&t[..i], '>', &t[i + 1..]),
            _ => {
                return Err(err(
                    format!("threshold `{t}` has no single `<` or `>`"),
                    "write it like `p99 < 300ms`, `error_rate < 1%` or `rate > 900`",
                ));
            }
        };
        // `<=` reads the same as `<`: the numbers are continuous.
        let value = value.strip_prefix('=').unwrap_or(value).trim();
        let name = name.trim();
        let Some(metric) = Metric::named(name) else {
            let hint = match crate::suggest::closest(name, Metric::NAMES.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("thresholds measure {}", Metric::NAMES.join(", ")),
            };
            return Err(err(format!("`{name}` is not a load metric"), hint));
        };
        let limit = match metric {
            m if m.is_latency() => {
                if op != '<' {
                    return Err(err(
                        format!("`{t}`: a latency threshold is an upper bound"),
                        format!("write it like `{name} < 300ms`"),
                    ));
                }
                let d = crate::config::duration_serde::parse(value).map_err(|why| {
                    err(
                        format!("`{t}`: {why}"),
                        format!("write the limit as a duration, like `{name} < 300ms`"),
                    )
                })?;
                d.as_secs_f64() * 1000.0
            }
            Metric::ErrorRate => {
                if op != '<' {
                    return Err(err(
                        format!("`{t}`: an error_rate threshold is an upper bound"),
                        "write it like `error_rate < 1%`",
                    ));
                }
                let pct = value
                    .strip_suffix('%')
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        err(
                            format!("`{t}`: `{value}` is not a percentage between 0% and 100%"),
                            "write it like `error_rate < 1%`",
                        )
                    })?;
                pct / 100.0
            }
            _ => {
                if op != '>' {
                    return Err(err(
                        format!("`{t}`: a rate threshold is a lower bound"),
                        "write it like `rate > 900` (requests per second achieved)",
                    ));
                }
                value
                    .trim_end_matches("/s")
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        err(
                            format!("`{t}`: `{value}` is not a number of requests per second"),
                            "write it like `rate > 900`",
                        )
                    })?
            }
        };
        Ok(Threshold {
            metric,
            limit,
            text: t.to_string(),
        })
    }

    /// `Err(detail)` when the figures breach the threshold.
    pub fn check(&self, f: &LoadFigures) -> Result<(), String> {
        let answered: u64 = f.status_counts.values().sum();
        if self.metric.is_latency() && answered == 0 && f.requests > 0 {
            return Err(format!(
                "none of {} requests was answered, so `{}` cannot hold",
                f.requests, self.text
            ));
        }
        let l = &f.latency;
        let (value, ok) = match self.metric {
            Metric::P50 => (l.p50_ms, l.p50_ms < self.limit),
            Metric::P90 => (l.p90_ms, l.p90_ms < self.limit),
            Metric::P95 => (l.p95_ms, l.p95_ms < self.limit),
            Metric::P99 => (l.p99_ms, l.p99_ms < self.limit),
            Metric::P999 => (l.p999_ms, l.p999_ms < self.limit),
            Metric::Max => (l.max_ms, l.max_ms < self.limit),
            Metric::Avg => (l.avg_ms, l.avg_ms < self.limit),
            Metric::ErrorRate => (f.error_rate(), f.error_rate() < self.limit),
            Metric::Rate => (f.achieved_rps, f.achieved_rps > self.limit),
        };
        if ok {
            return Ok(());
        }
        let name = self.text.split(['<', '>']).next().unwrap_or("").trim();
        Err(match self.metric {
            Metric::ErrorRate => format!(
                "error_rate was {:.2}% ({} of {} requests failed), threshold `{}`",
                value * 100.0,
                f.errors,
                f.requests,
                self.text
            ),
            Metric::Rate => format!("achieved {value:.1} req/s, threshold `{}`", self.text),
            _ => format!("{name} was {value:.1} ms, threshold `{}`", self.text),
        })
    }

    /// Whether the figures hold enough data to judge: a window without requests says nothing
    /// about latencies or error rates (zero throughput does breach `rate > N`).
    pub fn judgeable(&self, f: &LoadFigures) -> bool {
        match self.metric {
            Metric::Rate => true,
            _ => f.requests > 0,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Threshold {
    type Error = ThresholdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Threshold::parse(&s)
    }
}

impl From<Threshold> for String {
    fn from(t: Threshold) -> String {
        t.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::Latencies;

    fn figures(p99: f64, requests: u64, errors: u64, rps: f64) -> LoadFigures {
        LoadFigures {
            achieved_rps: rps,
            requests,
            ok: requests - errors,
            errors,
            latency: Latencies {
                p99_ms: p99,
                ..Latencies::default()
            },
            status_counts: [("200".to_string(), requests)].into(),
            ..LoadFigures::default()
        }
    }

    #[test]
    fn grammar() {
        let t = Threshold::parse("p99 < 300ms").unwrap();
        assert_eq!(t.metric, Metric::P99);
        assert!((t.limit - 300.0).abs() < 1e-9);
        assert!(t.check(&figures(299.0, 10, 0, 1.0)).is_ok());
        let why = t.check(&figures(412.0, 10, 0, 1.0)).unwrap_err();
        assert!(why.contains("p99 was 412.0 ms"), "{why}");

        let e = Threshold::parse("error_rate<1%").unwrap();
        assert!((e.limit - 0.01).abs() < 1e-12);
        assert!(e.check(&figures(1.0, 1000, 9, 1.0)).is_ok());
        assert!(e.check(&figures(1.0, 1000, 10, 1.0)).is_err());

        let r = Threshold::parse("rate > 900").unwrap();
        assert!(r.check(&figures(1.0, 1, 0, 950.0)).is_ok());
        assert!(r.check(&figures(1.0, 1, 0, 850.0)).is_err());
        assert_eq!(
            Threshold::parse("p99.9 <= 1s").unwrap().metric,
            Metric::P999
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"p99 < 300ms\"");
        assert_eq!(serde_json::from_str::<Threshold>(&json).unwrap(), t);
    }

    #[test]
    fn mistakes_get_hints() {
        let e = Threshold::parse("p98 < 300ms").unwrap_err();
        assert!(e.hint.starts_with("did you mean `p9"), "{e:?}");
        let e = Threshold::parse("eror_rate < 1%").unwrap_err();
        assert_eq!(e.hint, "did you mean `error_rate`?");
        assert!(Threshold::parse("error_rate < 1").is_err());
        assert!(Threshold::parse("p99 > 300ms").is_err());
        assert!(Threshold::parse("rate < 10").is_err());
        assert!(
            Threshold::parse("p99 < fast")
                .unwrap_err()
                .message
                .contains("p99")
        );
        assert!(Threshold::parse("p99 300ms").is_err());
    }

    #[test]
    fn latency_without_answers_breaches() {
        let t = Threshold::parse("p99 < 300ms").unwrap();
        let f = LoadFigures {
            requests: 5,
            errors: 5,
            ..LoadFigures::default()
        };
        assert!(t.judgeable(&f));
        assert!(t.check(&f).unwrap_err().contains("none of 5 requests"));
        assert!(!t.judgeable(&LoadFigures::default()));
    }
}
