//! Counting what the generator saw: latency histograms (from the intended send time, and the
//! plain service time for comparison), status codes and errors, per second and in total.

pub use crate::run::figures::{Latencies, LoadFigures};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram holds, in microseconds (an hour; anything above is clamped).
const MAX_US: u64 = 3_600_000_000;

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Nothing listens on the port (ECONNREFUSED).
    ConnectRefused,
    /// Any other failure to open the connection (unreachable, DNS, connect timeout...).
    ConnectFailed,
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// The peer closed the connection before the response was complete.
    ClosedEarly,
    /// No complete answer within the request timeout.
    Timeout,
    /// The peer answered something that is not HTTP/1.x (garbage, a bad header...).
    BadResponse,
    /// The TLS handshake failed (certificate refused, no common protocol, not TLS...).
    TlsFailed,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectFailed,
        ErrorKind::Reset,
        ErrorKind::ClosedEarly,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::TlsFailed,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect refused",
            ErrorKind::ConnectFailed => "connect failed",
            ErrorKind::Reset => "connection reset",
            ErrorKind::ClosedEarly => "closed early",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad response",
            ErrorKind::TlsFailed => "tls failed",
            ErrorKind::Other => "other error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts; a failure here would be a
    // programming error caught by every test.
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!())
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(MAX_US)
        .clamp(1, MAX_US)
}

/// One window of counts. Each connection worker owns one (behind an uncontended mutex) so
/// recording never waits on the other workers; the reporter merges them once a second.
pub struct Window {
    corrected: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    bad_status: u64,
    /// Index = status code (100..=999; anything else is folded into 0).
    statuses: Vec<u64>,
    errors: [u64; ErrorKind::ALL.len()],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            corrected: histogram(),
            service: histogram(),
            ok: 0,
            bad_status: 0,
            statuses: vec![0; 1000],
            errors: [0; ErrorKind::ALL.len()],
        }
    }
}

impl Window {
    pub fn answer(&mut self, status: u16, corrected: Duration, service: Duration) {
        self.corrected.saturating_record(us(corrected));
        self.service.saturating_record(us(service));
        let slot = if (100..1000).contains(&status) {
            status as usize
        } else {
            0
        };
        self.statuses[slot] += 1;
        if status < 400 {
            self.ok += 1;
        } else {
            self.bad_status += 1;
        }
    }

    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind.index()] += 1;
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.bad_status + self.errors.iter().sum::<u64>()
    }

    /// Adds `other` into this window.
    pub fn merge(&mut self, other: &Window) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.service.add(&other.service);
        self.ok += other.ok;
        self.bad_status += other.bad_status;
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
    }

    pub fn reset(&mut self) {
        self.corrected.reset();
        self.service.reset();
        self.ok = 0;
        self.bad_status = 0;
        self.statuses.iter_mut().for_each(|s| *s = 0);
        self.errors = [0; ErrorKind::ALL.len()];
    }

    /// The service time (from the actual send), for comparison with the corrected numbers.
    pub fn service_latencies(&self) -> Latencies {
        Latencies::of(&self.service)
    }

    pub fn corrected_histogram(&self) -> &Histogram<u64> {
        &self.corrected
    }

    pub fn service_histogram(&self) -> &Histogram<u64> {
        &self.service
    }

    pub fn figures(&self, elapsed: Duration, target_rps: f64) -> LoadFigures {
        let requests = self.requests();
        let secs = elapsed.as_secs_f64();
        LoadFigures {
            target_rps,
            achieved_rps: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            requests,
            ok: self.ok,
            errors: requests - self.ok,
            latency: Latencies::of(&self.corrected),
            status_counts: self
                .statuses
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| {
                    let key = if code == 0 {
                        "other".to_string()
                    } else {
                        code.to_string()
                    };
                    (key, *n)
                })
                .collect(),
            error_counts: ErrorKind::ALL
                .iter()
                .filter(|k| self.errors[k.index()] > 0)
                .map(|k| (k.as_str().to_string(), self.errors[k.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_count_answers_and_errors() {
        let mut w = Window::default();
        for _ in 0..98 {
            w.answer(200, Duration::from_millis(10), Duration::from_millis(2));
        }
        w.answer(503, Duration::from_millis(10), Duration::from_millis(2));
        w.error(ErrorKind::ConnectRefused);
        let f = w.figures(Duration::from_secs(1), 100.0);
        assert_eq!(f.requests, 100);
        assert_eq!(f.ok, 98);
        assert_eq!(f.errors, 2);
        assert!((f.error_rate() - 0.02).abs() < 1e-9);
        assert_eq!(f.status_counts["200"], 98);
        assert_eq!(f.status_counts["503"], 1);
        assert_eq!(f.error_counts["connect refused"], 1);
        assert!((f.latency.p50_ms - 10.0).abs() < 0.1, "{:?}", f.latency);
        assert!((w.service_latencies().p50_ms - 2.0).abs() < 0.1);
        let mut total = Window::default();
        total.merge(&w);
        total.merge(&w);
        assert_eq!(total.requests(), 200);
        w.reset();
        assert_eq!(w.requests(), 0);
    }
}
