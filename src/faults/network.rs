//! Network fault vocabulary: the Toxiproxy toxic set, with its semantics
//! (<https://github.com/Shopify/toxiproxy#toxics>). The proxy in [`super::proxy`] applies them.

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

/// The network family: toxics on the built-in proxy of a declared target.
pub struct NetworkFaults;

struct ActiveToxic {
    proxy: super::proxy::ProxyHandle,
    id: u64,
    summary: String,
}

#[async_trait::async_trait]
impl super::ActiveFault for ActiveToxic {
    async fn revert(&self) -> Result<(), super::FaultError> {
        match self.proxy.remove_toxic(self.id) {
            // Already gone (its deadline passed, or reverted before): the goal is met.
            Ok(()) | Err(super::proxy::ProxyError::NoSuchToxic(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

#[async_trait::async_trait]
impl super::FaultFamily for NetworkFaults {
    fn name(&self) -> &'static str {
        "network"
    }

    async fn prepare(
        &self,
        step: &crate::spec::model::FaultStep,
        _ctx: &super::InjectContext<'_>,
    ) -> Result<serde_json::Value, super::FaultError> {
        Ok(serde_json::json!({ "proxy": step.target, "in_process": true }))
    }

    async fn inject(
        &self,
        step: &crate::spec::model::FaultStep,
        ctx: &super::InjectContext<'_>,
        _prepared: &serde_json::Value,
    ) -> Result<Box<dyn super::ActiveFault>, super::FaultError> {
        let crate::spec::model::FaultSpec::Network {
            toxic,
            direction,
            toxicity,
        } = &step.fault
        else {
            return Err(super::FaultError::Other(format!(
                "step `{}` is not a network fault",
                step.name
            )));
        };
        let proxy = ctx.targets.proxy(&step.target).await?;
        let id = proxy.add_toxic(super::proxy::ToxicRequest {
            label: step.name.clone(),
            kind: toxic.clone(),
            direction: *direction,
            toxicity: *toxicity,
            seed: ctx.seed,
            deadline: ctx.deadline,
        })?;
        let summary = if matches!(toxic, ToxicKind::Down) {
            format!("{} on {}", toxic.summary(), step.target)
        } else if *toxicity < 1.0 {
            format!(
                "{} on {} ({direction}, {:.0}% of connections)",
                toxic.summary(),
                step.target,
                toxicity * 100.0
            )
        } else {
            format!("{} on {} ({direction})", toxic.summary(), step.target)
        };
        Ok(Box::new(ActiveToxic { proxy, id, summary }))
    }

    async fn recover(
        &self,
        record: &crate::store::FaultRecord,
    ) -> Result<String, super::FaultError> {
        // The proxy runs inside the chaosbot process: when that process died, its listener,
        // its connections and every toxic on them died too. Nothing is left to undo.
        Ok(format!(
            "toxic on `{}` ended with the process that held it (the proxy is in-process)",
            record.target
        ))
    }
}
