//! Network fault parameters: the Toxiproxy toxic set, with its semantics
//! (<https://github.com/Shopify/toxiproxy#toxics>). The proxy in `crate::faults::proxy`
//! applies them; they live here because they are part of a validated experiment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which way the data flows through the proxy: `upstream` is client → server,
/// `downstream` is server → client (Toxiproxy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upstream,
    #[default]
    Downstream,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        })
    }
}

/// One toxic and its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ToxicKind {
    /// Delays each chunk of data by `latency` ± a uniformly random `jitter`.
    Latency {
        #[serde(with = "crate::spec::duration_serde")]
        latency: Duration,
        #[serde(default, with = "crate::spec::duration_serde")]
        jitter: Duration,
    },
    /// Limits the rate to `rate_kbps` kilobytes per second.
    Bandwidth { rate_kbps: u64 },
    /// Blackhole: data is dropped; the connection is closed after `timeout`
    /// (zero: never closed, data dropped until the toxic is removed).
    Timeout {
        #[serde(with = "crate::spec::duration_serde")]
        timeout: Duration,
    },
    /// Resets the connection (TCP RST) after `timeout` (zero: at once).
    ResetPeer {
        #[serde(with = "crate::spec::duration_serde")]
        timeout: Duration,
    },
    /// The service is down: new connections are refused and open ones closed.
    Down,
    /// Delays the close of the connection by `delay` once the sender has closed.
    SlowClose {
        #[serde(with = "crate::spec::duration_serde")]
        delay: Duration,
    },
    /// Slices data into pieces of about `average_size` bytes (± `size_variation`) with `delay`
    /// between pieces.
    Slicer {
        average_size: usize,
        #[serde(default)]
        size_variation: usize,
        #[serde(default, with = "crate::spec::duration_serde")]
        delay: Duration,
    },
    /// Closes the connection once `bytes` bytes have passed in this direction.
    LimitData { bytes: u64 },
}

impl ToxicKind {
    pub fn name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Down => "down",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
        }
    }

    /// Every toxic name, for "did you mean" hints and help texts.
    pub const NAMES: &'static [&'static str] = &[
        "latency",
        "bandwidth",
        "timeout",
        "reset_peer",
        "down",
        "slow_close",
        "slicer",
        "limit_data",
    ];

    /// One line a person reads in a journal or a Slack thread.
    pub fn summary(&self) -> String {
        use humantime::format_duration as hd;
        match self {
            ToxicKind::Latency { latency, jitter } if jitter.is_zero() => {
                format!("latency {}", hd(*latency))
            }
            ToxicKind::Latency { latency, jitter } => {
                format!("latency {} ± {}", hd(*latency), hd(*jitter))
            }
            ToxicKind::Bandwidth { rate_kbps } => format!("bandwidth {rate_kbps} KB/s"),
            ToxicKind::Timeout { timeout } if timeout.is_zero() => "blackhole (no close)".into(),
            ToxicKind::Timeout { timeout } => format!("blackhole, close after {}", hd(*timeout)),
            ToxicKind::ResetPeer { timeout } => format!("reset peer after {}", hd(*timeout)),
            ToxicKind::Down => "down (refuse connections)".into(),
            ToxicKind::SlowClose { delay } => format!("slow close {}", hd(*delay)),
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => format!(
                "slicer {average_size}±{size_variation} B every {}",
                hd(*delay)
            ),
            ToxicKind::LimitData { bytes } => format!("limit data {bytes} B"),
        }
    }
}
