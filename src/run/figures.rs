//! The numbers a load step reports (per second and in total), as the journal stores them.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub avg_ms: f64,
}

impl Latencies {
    pub fn of(h: &Histogram<u64>) -> Latencies {
        if h.is_empty() {
            return Latencies::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latencies {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            avg_ms: h.mean() / 1000.0,
        }
    }
}

/// What a load window (one second, or the whole attack) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadFigures {
    /// The rate the schedule asked for over the window (0: unthrottled).
    pub target_rps: f64,
    /// Requests finished (answered or failed) per second.
    pub achieved_rps: f64,
    /// Requests finished in the window.
    pub requests: u64,
    /// Answered with a status below 400.
    pub ok: u64,
    /// Failed: no answer (see `error_counts`) or a status of 400 or more.
    pub errors: u64,
    /// Latency from each request's *intended* send time (corrected for coordinated omission),
    /// over the answered requests.
    pub latency: Latencies,
    /// Answers by status code ("200": 1234).
    pub status_counts: BTreeMap<String, u64>,
    /// Requests without an answer, by cause ("connect refused": 12).
    pub error_counts: BTreeMap<String, u64>,
}

impl LoadFigures {
    /// Share of failed requests (0 when nothing finished).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// "412 req/s (target 400) · p99 12.3 ms · 0.5% errors".
    pub fn line(&self) -> String {
        let target = if self.target_rps > 0.0 {
            format!(" (target {:.0})", self.target_rps)
        } else {
            String::new()
        };
        format!(
            "{:.0} req/s{target} · p99 {:.1} ms · {:.1}% errors",
            self.achieved_rps,
            self.latency.p99_ms,
            self.error_rate() * 100.0
        )
    }
}
