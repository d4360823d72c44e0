//! Host network fault parameters (`blackhole`, `reject`, `loss`): what the agent's nftables
//! rules match. `crate::faults::hostnet` checks and applies them.

use serde::{Deserialize, Serialize};

/// What matching packets suffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NetAction {
    /// Dropped silently (the peer sees a timeout).
    Blackhole,
    /// Refused: TCP reset, ICMP port unreachable for everything else.
    Reject,
    /// Dropped at random with this probability, in percent (0 < p ≤ 100).
    Loss { percent: f64 },
}

impl NetAction {
    pub const NAMES: &'static [&'static str] = &["blackhole", "reject", "loss"];

    pub fn name(&self) -> &'static str {
        match self {
            NetAction::Blackhole => "blackhole",
            NetAction::Reject => "reject",
            NetAction::Loss { .. } => "loss",
        }
    }
}

/// Which packets: all of them by default; each field narrows the scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetScope {
    /// Peers (the destination of egress, the source of ingress): CIDRs, addresses or host names
    /// (resolved when the fault is injected). Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Destination ports: `5432` or `8000-8099`. Empty: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `tcp`, `udp`, `icmp` or `all` (the default).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `egress` (the default) or `ingress`.
    #[serde(default = "default_direction")]
    pub direction: String,
    /// Only traffic through this interface (it must be allowed by the host's guard rails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

fn default_protocol() -> String {
    "all".into()
}

fn default_direction() -> String {
    "egress".into()
}
