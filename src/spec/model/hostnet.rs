//! Host network fault parameters (`blackhole`, `reject`, `loss`, `rate_limit`, `duplicate`,
//! `dns`, `delay`, `reorder`, `corrupt`): what the agent's nftables rules match. `crate::faults::hostnet` checks and applies them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What matching packets suffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NetAction {
    /// Dropped silently (the peer sees a timeout).
    Blackhole,
    /// Refused: TCP reset, ICMP port unreachable for everything else.
    Reject,
    /// Dropped at random with this probability, in percent (0 < p ≤ 100). With a
    /// `correlation` (percent), losses come in bursts (the agent's shaper draws them); without,
    /// each packet is drawn alone (nftables).
    Loss {
        percent: f64,
        #[serde(default, skip_serializing_if = "is_zero")]
        correlation: f64,
    },
    /// At most `rate_kbps` kilobytes (1000 bytes) per second, policed: what is over the rate
    /// is dropped (TCP backs off to about the rate; there is no queue).
    RateLimit { rate_kbps: u64 },
    /// Sent twice with this probability, in percent (0 < p ≤ 100); egress only.
    Duplicate { percent: f64 },
    /// DNS queries (UDP, port 53 unless `ports` says otherwise) for exactly these names are
    /// refused, so the host's resolver fails to resolve them at once; other names resolve.
    DnsFail { names: Vec<String> },
    /// The host's lookups of exactly these names get `answer` (an A or AAAA record) from the
    /// agent instead of the host's resolver; other names resolve as before.
    DnsAnswer { names: Vec<String>, answer: IpAddr },
    /// Held `latency_ms ± jitter_ms` (uniform; each draw correlated with the one before by
    /// `correlation` percent) before it goes on: netem's `delay`, done by the agent's shaper.
    Delay {
        latency_ms: f64,
        #[serde(default)]
        jitter_ms: f64,
        #[serde(default)]
        correlation: f64,
    },
    /// `percent` of packets go at once, the others are held `latency_ms`: they overtake.
    Reorder { percent: f64, latency_ms: f64 },
    /// `percent` of packets get one bit flipped past the IP header (the peer's checksum
    /// drops them).
    Corrupt { percent: f64 },
}

impl NetAction {
    pub const NAMES: &'static [&'static str] = &[
        "blackhole",
        "reject",
        "loss",
        "rate_limit",
        "dns",
        "duplicate",
        "delay",
        "reorder",
        "corrupt",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            NetAction::Blackhole => "blackhole",
            NetAction::Reject => "reject",
            NetAction::Loss { .. } => "loss",
            NetAction::RateLimit { .. } => "rate_limit",
            NetAction::DnsFail { .. } | NetAction::DnsAnswer { .. } => "dns",
            NetAction::Duplicate { .. } => "duplicate",
            NetAction::Delay { .. } => "delay",
            NetAction::Reorder { .. } => "reorder",
            NetAction::Corrupt { .. } => "corrupt",
        }
    }

    /// Whether the agent's shaper (an nfnetlink queue) carries it out, rather than nftables
    /// alone.
    pub fn is_shaped(&self) -> bool {
        match self {
            NetAction::Delay { .. } | NetAction::Reorder { .. } | NetAction::Corrupt { .. } => true,
            NetAction::Loss { correlation, .. } => *correlation > 0.0,
            _ => false,
        }
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A DNS name as queries carry it: labels of 1 to 63 letters, digits, `-` or `_`, at most
/// 253 characters, lowercased, without the trailing dot. Err says what is wrong.
pub fn dns_name(text: &str) -> Result<String, String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "it is {} characters long (at most 253)",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "label `{label}` must be 1 to 63 characters (names are labels joined by dots)"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("`{c}` is not allowed in a name"));
        }
    }
    Ok(name)
}

/// The query name in DNS wire form (length-prefixed labels, then a zero byte).
pub fn dns_wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
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
    /// Acts inside the network namespace of this declared process target (a container or a
    /// pod) instead of on the host's own: only that process's traffic is affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_of: Option<String>,
}

fn default_protocol() -> String {
    "all".into()
}

fn default_direction() -> String {
    "egress".into()
}

/// A CIDR (an address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("prefix `/{p}` is not 0..{max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    fn bits(&self) -> (u128, u32) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether every address of `other` is in this one.
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() || other.prefix < self.prefix {
            return false;
        }
        let ((a, width), (b, _)) = (self.bits(), other.bits());
        let shift = width - u32::from(self.prefix);
        shift == width || (a >> shift) == (b >> shift)
    }

    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `5432` or `8000-8099` as (low, high); `None` when it is neither (ports are 1..65535).
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    (lo <= hi).then_some((lo, hi))
}
