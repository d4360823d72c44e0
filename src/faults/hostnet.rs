//! Host network faults (`blackhole`, `reject`, `loss`, `rate_limit`, `duplicate`, `dns`,
//! `delay`, `reorder`, `corrupt`) on a declared host's own traffic, with nftables. Each fault is one table of its own, `inet chaosbot_<agent>_<fault>`, written as a
//! script and applied atomically with `nft -f -` (all of it or nothing), and deleted on revert.
//! Nothing else is touched: no flush, no other table, so a team's own rules stay as they are.
//!
//! - The agent's control connection (its TCP listen port, both ways) is accepted ahead of every
//!   drop, so a fault never cuts the agent off from its controller.
//! - Scope: peers (CIDRs, addresses, host names resolved at prepare), destination ports,
//!   protocol, direction (egress: `output` hook, peer = destination; ingress: `input` hook, peer
//!   = source), interface. A scope covering every peer and port is refused unless the host's
//!   guard rails allow it.
//! - `loss` is `numgen random mod 10000 < p·100` then drop: independent per packet. With a
//!   `correlation` it is shaped instead (below), in bursts.
//! - `delay`, `reorder`, `corrupt` and correlated `loss` are shaped: the table (`ip` and `ip6`
//!   ones of the fault's name, as nf_tables takes x_tables targets there only) sends matching
//!   packets to chain `shape`, whose one rule, `NFQUEUE --queue-bypass`, the agent's
//!   [`shaper`] adds once it serves that queue (see there for why that is safe).
//! - `namespace_of: <process target>` acts inside that process's network namespace instead
//!   (a container or a pod; see [`netns`]): the host's own tables are not touched.
//! - `rate_limit` is one named nftables `limit` shared by the fault's rules, `rate over` its
//!   bytes per second then drop: a policer (no queue, so no added delay; TCP backs off to
//!   about the rate). Its burst is a tenth of a second of the rate, at least 16 KB; nftables'
//!   bucket holds a second of the rate on top, and starts full, so about that much passes at
//!   full speed first.
//! - `dns` refuses (ICMP port unreachable) UDP queries to port 53 whose query name is exactly
//!   one of `names`: the raw payload after the DNS header is compared with the name in wire
//!   form, 16 bytes at a time. Over TCP, the segment carrying such a query is reset. The
//!   resolver fails at once; other names resolve. DNS over TLS is not matched (encrypted).
//! - `dns` with an `answer` redirects those same UDP queries (a nat chain at output) to the
//!   agent's answering socket on the namespace's loopback ([`dns_answer`]); over TCP they are
//!   reset as above (a filter chain beside it), as a redirect acts at the SYN, before the
//!   name is known.
//! - `duplicate` clones `percent` of matching packets (`numgen random`, as `loss`) with
//!   `dup to ip daddr` / `dup to ip6 daddr`, which nftables has in its `ip` and `ip6` families
//!   only (not `inet`): such a fault has a table `chaosbot_<agent>_<fault>` in each family its
//!   destinations need, and it takes egress only (at input the clone would be routed, not
//!   received). The clone is sent by the kernel past the hook, so it is not cloned again.
//! - Recovery (agent start): the tables the journal names are deleted, and so is any other
//!   table with this agent's prefix (a kill -9 between `nft` and the journal cannot leave one
//!   behind, but a journal lost with its disk could).

mod dns_answer;
mod netlink;
mod netns;
pub mod shaper;

use std::fs::File;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

pub use netns::NetNs;

use crate::config::{HostNetworkRails, ProcessTarget};
use crate::spec::model::{Cidr, FaultSpec, FaultStep, NetAction, NetScope, parse_port_range};
use crate::store::FaultRecord;

/// The name the family is journaled under.
pub const FAMILY: &str = "host_network";
/// Every table chaosbot makes starts with this.
pub const TABLE_PREFIX: &str = "chaosbot_";

/// Why a host network fault was not put in place (nothing was applied), or not removed.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    #[error(
        "target `{0}` is not a declared host: host network faults act on a [[targets.host]] of an agent"
    )]
    NotHost(String),
    #[error(
        "host `{0}` has no [targets.host.network] section, so it refuses host network faults; add one (interfaces, destinations, max_loss_percent) to its agent.toml"
    )]
    NoRails(String),
    #[error(
        "`nft` is not installed on this host ({0}); install the `nftables` package on the agent's host"
    )]
    NftMissing(String),
    #[error(
        "destination `{value}` is not a CIDR, an address or a host name ({why}); write e.g. 10.0.0.0/24, 10.0.0.5 or db.internal"
    )]
    BadCidr { value: String, why: String },
    #[error("host name `{name}` does not resolve ({why}); check the name, or give its address")]
    Unresolved { name: String, why: String },
    #[error(
        "ports `{0}` is not a port or a port range; write e.g. 5432 or 8000-8099 (1..65535, low-high)"
    )]
    BadPorts(String),
    #[error("`{name}` is not a DNS name ({why}); write the name as looked up, e.g. db.internal")]
    BadDnsName { name: String, why: String },
    #[error("protocol `{0}` is not one of tcp, udp, icmp, all")]
    BadProtocol(String),
    #[error(
        "ports are given with protocol icmp, which has no ports; remove `ports` or use tcp/udp"
    )]
    IcmpPorts,
    #[error("direction `{0}` is not egress or ingress")]
    BadDirection(String),
    #[error(
        "interface `{0}` does not exist on this host; check `ip link` there and name an existing one"
    )]
    NoInterface(String),
    #[error(
        "interface `{name}` is not allowed on host `{target}` (allowed: {allowed}); use one of them or ask the operator to add it to [targets.host.network] interfaces"
    )]
    InterfaceNotAllowed {
        name: String,
        target: String,
        allowed: String,
    },
    #[error(
        "destination {dest} is outside what host `{target}` allows ({allowed}); narrow the step's destinations or ask the operator to widen [targets.host.network] destinations"
    )]
    DestinationNotAllowed {
        dest: String,
        target: String,
        allowed: String,
    },
    #[error(
        "host `{0}` requires the step to name destinations (its [targets.host.network] destinations restrict them); add `destinations`"
    )]
    DestinationsRequired(String),
    #[error(
        "the scope covers every peer and every port of host `{0}` (it would cut the host off from everything but its agent); narrow it with destinations or ports, or ask the operator to set allow_everything = true in [targets.host.network]"
    )]
    CoversEverything(String),
    #[error(
        "duplicate acts on egress only: the kernel routes a clone made at input instead of receiving it; remove `direction: ingress`"
    )]
    DuplicateIngress,
    #[error(
        "a dns answer acts on the host's own lookups (egress) only; remove `direction: ingress`"
    )]
    DnsAnswerIngress,
    #[error("cannot open the socket that answers the named lookups ({0}); nothing was applied")]
    AnswerSocket(String),
    #[error(
        "rate_kbps 0 lets nothing through; use blackhole for that, or a rate of 1 KB/s or more"
    )]
    ZeroRate,
    #[error("{kind} {percent} % is out of range; it must be above 0 and at most 100")]
    PercentRange { kind: &'static str, percent: f64 },
    /// A `delay`, `reorder` or correlated `loss` whose numbers cannot be applied (the text
    /// says why).
    #[error("{0}")]
    BadShape(String),
    #[error(
        "a delay of {ms} ms is above the guard rail of host `{target}` ({max} ms); use at most {max} ms (latency plus jitter) or ask the operator to raise max_delay_ms"
    )]
    DelayAboveRail { ms: f64, target: String, max: u64 },
    #[error(
        "the packet shaper could not start ({0}); nothing of this fault is left in place. It needs a kernel with nfnetlink_queue, the NFQUEUE x_tables target and nf_tables compat (CONFIG_NETFILTER_NETLINK_QUEUE, CONFIG_NETFILTER_XT_TARGET_NFQUEUE, CONFIG_NFT_COMPAT) and the agent running as root"
    )]
    Shaper(String),
    #[error(
        "loss {percent} % is above the guard rail of host `{target}` ({max} %); use at most {max} or ask the operator to raise max_loss_percent"
    )]
    LossAboveRail {
        percent: f64,
        target: String,
        max: f64,
    },
    /// The `namespace_of` process cannot be entered (the text says why and what to do).
    #[error("{0}")]
    Namespace(String),
    #[error(
        "the network namespace of process target `{0}` is gone (its processes exited since the step was checked); nothing was applied, start the process and run the step again"
    )]
    NamespaceGone(String),
    #[error("nft {what} failed: {stderr}; nothing of this fault is left in place")]
    Apply { what: String, stderr: String },
    #[error("nft {what} failed: {stderr}; check `nft list tables` on the host by hand")]
    Remove { what: String, stderr: String },
}

/// Who owns the tables made in this process: the agent's name (tagged into every table name,
/// so recovery removes only this agent's) and its control port (exempted from every fault).
struct Owner {
    tag: String,
    control_ports: Vec<u16>,
}

static OWNER: OnceLock<Owner> = OnceLock::new();

/// Called once at agent start, before any fault.
pub fn set_owner(agent: &str, control_port: Option<u16>) {
    let _ = OWNER.set(Owner {
        tag: format!("{:08x}", fnv(agent) as u32),
        control_ports: control_port.into_iter().collect(),
    });
}

fn owner() -> &'static Owner {
    OWNER.get_or_init(|| Owner {
        tag: format!("{:08x}", fnv("") as u32),
        control_ports: Vec::new(),
    })
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The prefix of this agent's tables.
pub fn own_prefix() -> String {
    format!("{TABLE_PREFIX}{}_", owner().tag)
}

/// The prefix of the tables of the agent named `agent`.
pub fn prefix_for(agent: &str) -> String {
    format!("{TABLE_PREFIX}{:08x}_", fnv(agent) as u32)
}

/// `5432` or `8000-8099`.
pub fn parse_ports(text: &str) -> Result<(u16, u16), HostNetError> {
    parse_port_range(text).ok_or_else(|| HostNetError::BadPorts(text.to_string()))
}

/// What the journal keeps (and revert and recovery need): the table and the script applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub table: String,
    pub script: String,
    pub summary: String,
    /// The process namespace the table lives in (`namespace_of`); None: the host's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetNs>,
    /// A `delay`, `reorder` or `corrupt`: what the shaper does, and the families of the
    /// tables whose `shape` chain sends packets to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaped: Option<NetAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shaped_families: Vec<String>,
    /// A dns answer: the names and the address the agent answers them with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_answer: Option<(Vec<String>, std::net::IpAddr)>,
}

/// The dns answer's sockets on the loopback of namespace `ns` (None: the agent's own), one
/// per family on one port, as the fault's `redirect` sends IPv4 queries to 127.0.0.1 and
/// IPv6 ones to ::1 at the same port; IPv4 alone where the namespace has no IPv6 loopback.
/// Bound from a thread of its own that enters the namespace, so no shared thread moves.
async fn answer_sockets(
    ns: Option<Arc<File>>,
) -> Result<(u16, Vec<tokio::net::UdpSocket>), HostNetError> {
    let bound = std::thread::spawn(move || -> std::io::Result<Vec<std::net::UdpSocket>> {
        if let Some(ns) = &ns {
            netns::enter_on_this_thread(ns)?;
        }
        let mut last = None;
        // The kernel picks the IPv6 port; IPv4 takes the same one unless something has it.
        for _ in 0..16 {
            let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") else {
                return Ok(vec![std::net::UdpSocket::bind("127.0.0.1:0")?]);
            };
            let port = v6.local_addr()?.port();
            match std::net::UdpSocket::bind(("127.0.0.1", port)) {
                Ok(v4) => return Ok(vec![v4, v6]),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port on both loopbacks")))
    })
    .join()
    .map_err(|_| HostNetError::AnswerSocket("the binding thread panicked".into()))?
    .map_err(|e| HostNetError::AnswerSocket(e.to_string()))?;
    let mut port = 0;
    let mut sockets = Vec::new();
    for s in bound {
        let err = |e: std::io::Error| HostNetError::AnswerSocket(e.to_string());
        s.set_nonblocking(true).map_err(err)?;
        port = s.local_addr().map_err(err)?.port();
        sockets.push(tokio::net::UdpSocket::from_std(s).map_err(err)?);
    }
    Ok((port, sockets))
}

/// The shaper's parameters for a shaped action (None for the others).
fn shape_of(action: &NetAction) -> Option<shaper::Shape> {
    let ms = |v: f64| std::time::Duration::from_secs_f64(v.max(0.0) / 1000.0);
    Some(match action {
        NetAction::Delay {
            latency_ms,
            jitter_ms,
            correlation,
        } => shaper::Shape::Delay {
            latency: ms(*latency_ms),
            jitter: ms(*jitter_ms),
            correlation: correlation / 100.0,
        },
        NetAction::Reorder {
            percent,
            latency_ms,
        } => shaper::Shape::Reorder {
            share: percent / 100.0,
            latency: ms(*latency_ms),
        },
        NetAction::Corrupt { percent } => shaper::Shape::Corrupt {
            share: percent / 100.0,
        },
        NetAction::Loss {
            percent,
            correlation,
        } if *correlation > 0.0 => shaper::Shape::Loss {
            share: percent / 100.0,
            correlation: correlation / 100.0,
        },
        _ => return None,
    })
}

/// The scope checked and resolved: everything the rules need.
#[derive(Debug, Clone)]
struct Resolved {
    peers: Vec<Cidr>,
    ports: Option<(u16, u16)>,
    protocol: &'static str,
    ingress: bool,
    interfaces: Vec<String>,
}

fn action_of(step: &FaultStep) -> Result<(&NetAction, &NetScope), HostNetError> {
    match &step.fault {
        FaultSpec::HostNetwork { action, scope } => Ok((action, scope)),
        _ => Err(HostNetError::NotHost(step.target.clone())),
    }
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

async fn resolve_peer(text: &str) -> Result<Vec<Cidr>, HostNetError> {
    let t = text.trim();
    if let Ok(c) = Cidr::parse(t) {
        return Ok(vec![c]);
    }
    // Something with a slash or only digits and dots was meant as a CIDR or address.
    let looks_numeric = t.contains('/') || t.chars().all(|c| c.is_ascii_digit() || c == '.');
    let is_name = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if looks_numeric || !is_name {
        let why = Cidr::parse(t).err().unwrap_or_default();
        return Err(HostNetError::BadCidr {
            value: text.to_string(),
            why,
        });
    }
    let unresolved = |why: String| HostNetError::Unresolved {
        name: t.to_string(),
        why,
    };
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((t, 0)),
    )
    .await
    .map_err(|_| unresolved("no answer within 5 s".into()))?
    .map_err(|e| unresolved(e.to_string()))?;
    let mut out: Vec<Cidr> = Vec::new();
    for a in found {
        let c = Cidr {
            addr: a.ip(),
            prefix: if a.is_ipv4() { 32 } else { 128 },
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(unresolved("no address".into()));
    }
    Ok(out)
}

/// Checks the scope against the host's guard rails and resolves it; nothing is touched.
async fn resolve(
    target: &str,
    rails: &HostNetworkRails,
    action: &NetAction,
    scope: &NetScope,
    ns: Option<&File>,
) -> Result<Resolved, HostNetError> {
    if let NetAction::Loss { percent, .. }
    | NetAction::Duplicate { percent }
    | NetAction::Reorder { percent, .. }
    | NetAction::Corrupt { percent } = action
        && !(percent.is_finite() && *percent > 0.0 && *percent <= 100.0)
    {
        return Err(HostNetError::PercentRange {
            kind: action.name(),
            percent: *percent,
        });
    }
    if let NetAction::Delay {
        latency_ms,
        jitter_ms,
        correlation,
    } = action
    {
        if !(latency_ms.is_finite() && *latency_ms > 0.0) {
            return Err(HostNetError::BadShape(format!(
                "a delay of {latency_ms} ms does nothing; give a latency above 0, e.g. 100ms"
            )));
        }
        if !(jitter_ms.is_finite() && *jitter_ms >= 0.0 && jitter_ms <= latency_ms) {
            return Err(HostNetError::BadShape(format!(
                "jitter {jitter_ms} ms must be between 0 and the latency ({latency_ms} ms)"
            )));
        }
        if !(0.0..=100.0).contains(correlation) {
            return Err(HostNetError::BadShape(format!(
                "correlation {correlation} % must be between 0 and 100"
            )));
        }
    }
    if let NetAction::Loss { correlation, .. } = action
        && !(0.0..=100.0).contains(correlation)
    {
        return Err(HostNetError::BadShape(format!(
            "correlation {correlation} % must be between 0 and 100"
        )));
    }
    if let NetAction::Reorder { latency_ms, .. } = action
        && !(latency_ms.is_finite() && *latency_ms > 0.0)
    {
        return Err(HostNetError::BadShape(format!(
            "reorder needs a latency above 0 (got {latency_ms} ms): the packets that do not go at once wait that long"
        )));
    }
    let held_ms = match action {
        NetAction::Delay {
            latency_ms,
            jitter_ms,
            ..
        } => latency_ms + jitter_ms,
        NetAction::Reorder { latency_ms, .. } => *latency_ms,
        _ => 0.0,
    };
    if held_ms > rails.max_delay() as f64 {
        return Err(HostNetError::DelayAboveRail {
            ms: held_ms,
            target: target.to_string(),
            max: rails.max_delay(),
        });
    }
    if let NetAction::Loss { percent, .. } | NetAction::Duplicate { percent } = action {
        let max = rails.max_loss_percent.unwrap_or(100.0);
        if *percent > max {
            return Err(HostNetError::LossAboveRail {
                percent: *percent,
                target: target.to_string(),
                max,
            });
        }
    }
    if let NetAction::RateLimit { rate_kbps: 0 } = action {
        return Err(HostNetError::ZeroRate);
    }
    let dns = matches!(
        action,
        NetAction::DnsFail { .. } | NetAction::DnsAnswer { .. }
    );
    if let NetAction::DnsFail { names } | NetAction::DnsAnswer { names, .. } = action {
        if names.is_empty() {
            return Err(HostNetError::BadDnsName {
                name: String::new(),
                why: "no name is given".into(),
            });
        }
        for n in names {
            crate::spec::model::dns_name(n).map_err(|why| HostNetError::BadDnsName {
                name: n.clone(),
                why,
            })?;
        }
    }
    let protocol = match scope.protocol.trim().to_ascii_lowercase().as_str() {
        // DNS queries are matched over UDP and TCP (the name in the query's first segment).
        "icmp" if dns => return Err(HostNetError::BadProtocol(scope.protocol.clone())),
        "tcp" => "tcp",
        "udp" => "udp",
        "icmp" => "icmp",
        "all" | "" => "all",
        _ => return Err(HostNetError::BadProtocol(scope.protocol.clone())),
    };
    let ingress = match scope.direction.trim().to_ascii_lowercase().as_str() {
        "egress" | "" => false,
        "ingress" => true,
        _ => return Err(HostNetError::BadDirection(scope.direction.clone())),
    };
    let mut ports = scope.ports.as_deref().map(parse_ports).transpose()?;
    if dns && ports.is_none() {
        ports = Some((53, 53));
    }
    if ports.is_some() && protocol == "icmp" {
        return Err(HostNetError::IcmpPorts);
    }
    let exists = |name: &str| match ns {
        Some(ns) => netns::interface_exists_in(ns, name),
        None => interface_exists(name),
    };
    let interfaces = match &scope.interface {
        Some(name) => {
            if !exists(name) {
                return Err(HostNetError::NoInterface(name.clone()));
            }
            if !rails.interfaces.is_empty() && !rails.interfaces.contains(name) {
                return Err(HostNetError::InterfaceNotAllowed {
                    name: name.clone(),
                    target: target.to_string(),
                    allowed: rails.interfaces.join(", "),
                });
            }
            vec![name.clone()]
        }
        // The host's interface names mean nothing inside a container's namespace.
        None if ns.is_some() => Vec::new(),
        None => rails.interfaces.clone(),
    };
    let mut peers = Vec::new();
    for d in &scope.destinations {
        for c in resolve_peer(d).await? {
            if !peers.contains(&c) {
                peers.push(c);
            }
        }
    }
    if !rails.destinations.is_empty() {
        let allowed: Vec<Cidr> = rails
            .destinations
            .iter()
            .filter_map(|d| Cidr::parse(d).ok())
            .collect();
        if peers.is_empty() {
            return Err(HostNetError::DestinationsRequired(target.to_string()));
        }
        if let Some(out) = peers
            .iter()
            .find(|p| !allowed.iter().any(|a| a.contains(p)))
        {
            return Err(HostNetError::DestinationNotAllowed {
                dest: out.to_string(),
                target: target.to_string(),
                allowed: rails.destinations.join(", "),
            });
        }
    }
    if matches!(action, NetAction::DnsAnswer { .. }) && ingress {
        return Err(HostNetError::DnsAnswerIngress);
    }
    if matches!(action, NetAction::Duplicate { .. }) && ingress {
        return Err(HostNetError::DuplicateIngress);
    }
    let every_peer = peers.is_empty() || peers.iter().any(Cidr::is_everything);
    if every_peer && ports.is_none() && protocol == "all" && !dns && !rails.allow_everything {
        return Err(HostNetError::CoversEverything(target.to_string()));
    }
    Ok(Resolved {
        peers,
        ports,
        protocol,
        ingress,
        interfaces,
    })
}

fn set_of<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("{{ {} }}", parts.join(", "))
    }
}

/// The nftables script of one fault: its own table, the control exemption first, then the
/// matching rules.
fn script(table: &str, action: &NetAction, r: &Resolved, control_ports: &[u16]) -> String {
    let (hook, peer_key, if_key) = if r.ingress {
        ("input", "saddr", "iifname")
    } else {
        ("output", "daddr", "oifname")
    };
    let mut head = Vec::new();
    if !r.interfaces.is_empty() {
        let quoted: Vec<String> = r.interfaces.iter().map(|i| format!("\"{i}\"")).collect();
        head.push(format!("{if_key} {}", set_of(&quoted)));
    }
    // One match per address family (an inet table's rule names one of ip/ip6).
    let v4: Vec<Cidr> = r
        .peers
        .iter()
        .copied()
        .filter(|c| c.addr.is_ipv4())
        .collect();
    let v6: Vec<Cidr> = r
        .peers
        .iter()
        .copied()
        .filter(|c| !c.addr.is_ipv4())
        .collect();
    let mut peer_matches = Vec::new();
    if !v4.is_empty() {
        peer_matches.push(format!("ip {peer_key} {}", set_of(&v4)));
    }
    if !v6.is_empty() {
        peer_matches.push(format!("ip6 {peer_key} {}", set_of(&v6)));
    }
    if peer_matches.is_empty() {
        peer_matches.push(String::new());
    }
    let ports = r.ports.map(|(lo, hi)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    });
    let l4 = |proto: &str| -> String {
        match (proto, &ports) {
            ("tcp", Some(p)) => format!("tcp dport {p}"),
            ("udp", Some(p)) => format!("udp dport {p}"),
            ("all", Some(p)) => format!("meta l4proto {{ tcp, udp }} th dport {p}"),
            ("tcp", None) => "meta l4proto tcp".into(),
            ("udp", None) => "meta l4proto udp".into(),
            ("icmp", _) => "meta l4proto { icmp, ipv6-icmp }".into(),
            _ => String::new(),
        }
    };
    // (l4 match, verdict) pairs: a reject answers TCP with a reset, the rest with ICMP.
    let verdicts: Vec<(String, &str)> = match action {
        NetAction::Blackhole => vec![(l4(r.protocol), "drop")],
        // The queue rule in `shape` is added by the shaper once it serves the queue.
        NetAction::Delay { .. } | NetAction::Reorder { .. } | NetAction::Corrupt { .. } => {
            vec![(l4(r.protocol), "jump shape")]
        }
        NetAction::Loss { .. } if action.is_shaped() => vec![(l4(r.protocol), "jump shape")],
        NetAction::Loss { .. } => vec![(l4(r.protocol), "drop")],
        // The family's own `dup to ip daddr` / `dup to ip6 daddr`: see `per_family`.
        NetAction::Duplicate { .. } => vec![(l4(r.protocol), DUP_TO_DADDR)],
        NetAction::RateLimit { .. } => {
            vec![(l4(r.protocol), "limit name \"bytes_per_second\" drop")]
        }
        // Over UDP a failed query is refused (ICMP) and an answered one redirected to the
        // agent's socket; over TCP both are reset (a connection is redirected at its SYN,
        // before the name is sent, so it cannot be sent elsewhere by name).
        NetAction::DnsAnswer { names, .. } | NetAction::DnsFail { names } => {
            let over_udp = match action {
                NetAction::DnsAnswer { .. } => REDIRECT_TO_ANSWER,
                _ => "reject with icmpx type port-unreachable",
            };
            let mut rules = Vec::new();
            for n in names {
                if r.protocol != "tcp" {
                    rules.push((
                        format!("{} {}", l4("udp"), dns_query_match(n, false)),
                        over_udp,
                    ));
                }
                if r.protocol != "udp" {
                    rules.push((
                        format!("{} {}", l4("tcp"), dns_query_match(n, true)),
                        "reject with tcp reset",
                    ));
                }
            }
            rules
        }
        NetAction::Reject => match r.protocol {
            "tcp" => vec![(l4("tcp"), "reject with tcp reset")],
            "all" => vec![
                (
                    match &ports {
                        Some(p) => format!("tcp dport {p}"),
                        None => "meta l4proto tcp".into(),
                    },
                    "reject with tcp reset",
                ),
                (l4("all"), "reject with icmpx type port-unreachable"),
            ],
            "icmp" => vec![(l4("icmp"), "reject with icmpx type admin-prohibited")],
            _ => vec![(l4(r.protocol), "reject with icmpx type port-unreachable")],
        },
    };
    let random = match action {
        NetAction::Loss { percent, .. } | NetAction::Duplicate { percent }
            if !action.is_shaped() =>
        {
            format!(
                "numgen random mod 10000 < {}",
                (percent * 100.0).round() as u32
            )
        }
        _ => String::new(),
    };
    let tables: Vec<(&str, Vec<&String>)> = if per_family(action) {
        let of = |key: &str| -> Vec<&String> {
            peer_matches
                .iter()
                .filter(|m| m.is_empty() || m.starts_with(key))
                .collect()
        };
        [("ip", of("ip ")), ("ip6", of("ip6 "))]
            .into_iter()
            .filter(|(_, m)| !m.is_empty())
            .collect()
    } else {
        vec![("inet", peer_matches.iter().collect())]
    };
    let mut out = String::new();
    for (fam, matches) in tables {
        let verdicts: Vec<(String, &str)> = verdicts
            .iter()
            .map(|(m, v)| match *v {
                DUP_TO_DADDR if fam == "ip6" => (m.clone(), "dup to ip6 daddr"),
                _ => (m.clone(), *v),
            })
            .collect();
        out.push_str(&table_text(
            fam,
            table,
            action,
            hook,
            control_ports,
            &head,
            &matches,
            &verdicts,
            &random,
        ));
    }
    out
}

/// One table of a fault's script: its chain at `hook`, the control exemption first, then a
/// rule per (peer match, l4 match and verdict).
#[allow(clippy::too_many_arguments)]
fn table_text(
    fam: &str,
    table: &str,
    action: &NetAction,
    hook: &str,
    control_ports: &[u16],
    head: &[String],
    peer_matches: &[&String],
    verdicts: &[(String, &str)],
    random: &str,
) -> String {
    let mut out = format!("table {fam} {table} {{\n");
    // A dns answer rewrites the query's destination: a nat chain, ahead of routing.
    let (chain_type, priority) = match action {
        NetAction::DnsAnswer { .. } => ("nat", -100),
        _ => ("filter", -10),
    };
    if action.is_shaped() {
        out.push_str("  chain shape {\n  }\n");
    }
    if let NetAction::RateLimit { rate_kbps } = action {
        let rate = rate_kbps.saturating_mul(1000);
        let burst = (rate / 10).max(16_000);
        out.push_str(&format!(
            "  limit bytes_per_second {{ rate over {rate} bytes/second burst {burst} bytes }}\n"
        ));
    }
    // A nat chain takes nat statements only: a dns answer's TCP resets go in a filter chain
    // of their own beside it.
    let (in_fault, in_filter): (Vec<_>, Vec<_>) = verdicts
        .iter()
        .partition(|(_, v)| chain_type == "filter" || *v == REDIRECT_TO_ANSWER);
    for (chain, chain_type, priority, verdicts) in [
        ("fault", chain_type, priority, in_fault),
        ("fault_tcp", "filter", -10, in_filter),
    ] {
        if chain == "fault_tcp" && verdicts.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  chain {chain} {{\n    type {chain_type} hook {hook} priority {priority}; policy accept;\n"
        ));
        for p in control_ports {
            out.push_str(&format!(
                "    tcp sport {p} accept\n    tcp dport {p} accept\n"
            ));
        }
        for peer in peer_matches {
            for (l4m, verdict) in &verdicts {
                let parts: Vec<&str> = head
                    .iter()
                    .map(String::as_str)
                    .chain([peer.as_str(), l4m.as_str(), random, verdict])
                    .filter(|s| !s.is_empty())
                    .collect();
                out.push_str(&format!("    {}\n", parts.join(" ")));
            }
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// The verdict of a dns answer's rules; the port is the agent's answering socket, bound at
/// inject (the journaled script keeps the placeholder; recovery needs only the table's name).
const REDIRECT_TO_ANSWER: &str = "redirect to :@answer_port@";

/// Matches a DNS query for exactly `name`, compared 16 bytes at a time (nftables' longest
/// payload comparison): over UDP the bytes after the UDP header (8) and the DNS header (12);
/// over TCP those after the segment's own header (`@ih`, whatever its options), the message's
/// length (2) and the DNS header, as resolvers send a query in one segment.
fn dns_query_match(name: &str, over_tcp: bool) -> String {
    let wire = crate::spec::model::dns_wire_name(name);
    let (base, start) = if over_tcp { ("ih", 14) } else { ("th", 20) };
    let mut parts = Vec::new();
    for (i, chunk) in wire.chunks(16).enumerate() {
        let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
        parts.push(format!(
            "@{base},{},{} 0x{hex}",
            (start + i * 16) * 8,
            chunk.len() * 8
        ));
    }
    parts.join(" ")
}

fn summary(action: &NetAction, step: &FaultStep, r: &Resolved) -> String {
    let what = match action {
        NetAction::Loss {
            percent,
            correlation,
        } if *correlation > 0.0 => format!("loss {percent}% (correlation {correlation}%)"),
        NetAction::Loss { percent, .. } => format!("loss {percent}%"),
        NetAction::Duplicate { percent } => format!("duplicate {percent}%"),
        NetAction::RateLimit { rate_kbps } => format!("rate limit {rate_kbps} KB/s"),
        NetAction::DnsFail { names } => format!("dns lookups of {} fail", names.join(", ")),
        NetAction::DnsAnswer { names, answer } => {
            format!("dns lookups of {} answer {answer}", names.join(", "))
        }
        NetAction::Delay {
            latency_ms,
            jitter_ms,
            correlation,
        } => {
            let mut t = format!("delay {latency_ms} ms");
            if *jitter_ms > 0.0 {
                t.push_str(&format!(" ± {jitter_ms} ms"));
            }
            if *correlation > 0.0 {
                t.push_str(&format!(" (correlation {correlation}%)"));
            }
            t
        }
        NetAction::Reorder {
            percent,
            latency_ms,
        } => format!("reorder: {percent}% at once, the rest {latency_ms} ms later"),
        NetAction::Corrupt { percent } => format!("corrupt {percent}%"),
        a => a.name().to_string(),
    };
    let peers = if r.peers.is_empty() {
        "every peer".to_string()
    } else {
        r.peers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ports = match r.ports {
        Some((lo, hi)) if lo == hi => format!(" port {lo}"),
        Some((lo, hi)) => format!(" ports {lo}-{hi}"),
        None => String::new(),
    };
    format!(
        "{what} on {} ({}, {} {peers}{ports})",
        step.target,
        if r.ingress { "ingress" } else { "egress" },
        r.protocol
    )
}

/// Runs `nft` with `args`, feeding `stdin`, in namespace `ns` (None: the agent's own); Err:
/// (spawn failed, stderr or spawn error).
async fn nft(
    args: &[&str],
    stdin: Option<&str>,
    ns: Option<&File>,
) -> Result<String, (bool, String)> {
    let mut cmd = tokio::process::Command::new("nft");
    if let Some(ns) = ns {
        netns::enter_before_exec(&mut cmd, ns);
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| (true, e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| (false, format!("cannot write the script to nft: {e}")))?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| (false, e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err((
            false,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Set once `nft` ran here (a later apply still reports it missing if it goes away).
static NFT_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `nft` can be run here (Err names the package to install).
pub async fn nft_available() -> Result<(), HostNetError> {
    use std::sync::atomic::Ordering;
    if NFT_SEEN.load(Ordering::Relaxed) {
        return Ok(());
    }
    match nft(&["--version"], None, None).await {
        Ok(_) => {
            NFT_SEEN.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err((true, why)) => Err(HostNetError::NftMissing(why)),
        Err((false, why)) => Err(HostNetError::NftMissing(why)),
    }
}

/// Applies a fault's script in one transaction, in namespace `ns`; on failure nothing of it
/// stays.
pub async fn apply(p: &Prepared, ns: Option<&File>) -> Result<(), HostNetError> {
    match nft(&["-f", "-"], Some(&p.script), ns).await {
        Ok(_) => Ok(()),
        Err((true, why)) => Err(HostNetError::NftMissing(why)),
        Err((_, stderr)) => {
            // `nft -f` is atomic, but delete in case a table of that name came out of it.
            let _ = remove(&p.table, ns).await;
            Err(HostNetError::Apply {
                what: format!("apply of table {}", p.table),
                stderr,
            })
        }
    }
}

/// Whether a fault needs one table in `ip` and one in `ip6` instead of one `inet` table:
/// nf_tables takes x_tables targets (the shaper's NFQUEUE) and `dup` in those families only.
fn per_family(action: &NetAction) -> bool {
    action.is_shaped() || matches!(action, NetAction::Duplicate { .. })
}

/// The `duplicate` verdict as written for the `ip` table; the `ip6` table gets
/// `dup to ip6 daddr`.
const DUP_TO_DADDR: &str = "dup to ip daddr";

/// The families chaosbot's tables are made in, most used first.
const FAMILIES: [&str; 3] = ["inet", "ip", "ip6"];

/// Chaosbot's tables present now in namespace `ns` (names only, of every family).
pub async fn chaosbot_tables(ns: Option<&File>) -> Result<Vec<String>, HostNetError> {
    let out = nft(&["list", "tables"], None, ns)
        .await
        .map_err(|(missing, stderr)| {
            if missing {
                HostNetError::NftMissing(stderr)
            } else {
                HostNetError::Remove {
                    what: "list tables".into(),
                    stderr,
                }
            }
        })?;
    let mut names: Vec<String> = Vec::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        if let (Some("table"), Some(_family), Some(name)) =
            (words.next(), words.next(), words.next())
            && name.starts_with(TABLE_PREFIX)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Deletes one of chaosbot's tables in namespace `ns`; already gone is fine.
pub async fn remove(table: &str, ns: Option<&File>) -> Result<(), HostNetError> {
    if !table.starts_with(TABLE_PREFIX) {
        return Err(HostNetError::Remove {
            what: format!("delete of table {table}"),
            stderr: "refusing to delete a table that is not chaosbot's".into(),
        });
    }
    // Whatever families the name is in (a shaped fault has an ip and an ip6 table of it):
    // each is added (a no-op when it is there) and deleted in one transaction, so a table
    // already gone is no error and one nft call does it all.
    let script: String = FAMILIES
        .iter()
        .map(|f| format!("add table {f} {table}\ndelete table {f} {table}\n"))
        .collect();
    match nft(&["-f", "-"], Some(&script), ns).await {
        Ok(_) => Ok(()),
        Err((true, why)) => Err(HostNetError::NftMissing(why)),
        Err((_, stderr)) => Err(HostNetError::Remove {
            what: format!("delete of table {table}"),
            stderr,
        }),
    }
}

/// At agent start: removes every table of this agent's prefix (none should be in place when
/// no fault is held). Returns what was removed.
pub async fn sweep_strays() -> Vec<String> {
    let prefix = own_prefix();
    let Ok(tables) = chaosbot_tables(None).await else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for t in tables.into_iter().filter(|t| t.starts_with(&prefix)) {
        match remove(&t, None).await {
            Ok(()) => {
                warn!(table = %t, "removed a stray host network fault table left by a previous agent");
                removed.push(t);
            }
            Err(e) => {
                warn!(table = %t, error = %e, "cannot remove a stray host network fault table")
            }
        }
    }
    removed
}

/// The host network family.
pub struct HostNetFaults;

struct Active {
    table: String,
    summary: String,
    /// The process namespace held open while the table is in it.
    ns: Option<Arc<File>>,
    /// Removes the table at the deadline even if nobody reverts.
    timer: tokio::task::JoinHandle<()>,
    /// The shaper serving a `delay`, `reorder` or `corrupt` (it stops by itself at the
    /// deadline too).
    shaper: std::sync::Mutex<Option<shaper::Shaper>>,
    /// The socket answering a dns answer's lookups.
    responder: Option<tokio::task::JoinHandle<()>>,
}

/// Stops a shaper off the async threads (it lets its held packets go first).
async fn stop_shaper(s: Option<shaper::Shaper>) {
    if let Some(mut s) = s {
        let _ = tokio::task::spawn_blocking(move || s.stop()).await;
    }
}

#[async_trait::async_trait]
impl super::ActiveFault for Active {
    async fn revert(&self) -> Result<(), super::FaultError> {
        self.timer.abort();
        // The table first: no new packet reaches the queue; then what is held goes.
        let removed = remove(&self.table, self.ns.as_deref()).await;
        if let Some(r) = &self.responder {
            r.abort();
        }
        let shaper = self.shaper.lock().map(|mut s| s.take()).unwrap_or(None);
        stop_shaper(shaper).await;
        removed?;
        Ok(())
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

/// Checks and resolves a step into what will be applied (public for the benchmark and tests).
/// Opens the namespace a fault acts in (None: the host's own); Err when it is gone.
fn open_namespace(ns: Option<&NetNs>) -> Result<Option<File>, HostNetError> {
    ns.map(|n| netns::open(n).ok_or_else(|| HostNetError::NamespaceGone(n.process.clone())))
        .transpose()
}

/// `processes` finds the process target `namespace_of` names.
pub async fn prepare_step(
    step: &FaultStep,
    host: Option<&crate::config::HostTarget>,
    processes: &(dyn Fn(&str) -> Option<ProcessTarget> + Sync),
    run_id: &str,
) -> Result<Prepared, HostNetError> {
    let (action, scope) = action_of(step)?;
    let host = host.ok_or_else(|| HostNetError::NotHost(step.target.clone()))?;
    let rails = host
        .network
        .as_ref()
        .ok_or_else(|| HostNetError::NoRails(host.name.clone()))?;
    let netns = match &scope.namespace_of {
        Some(name) => {
            let t = processes(name).ok_or_else(|| {
                HostNetError::Namespace(format!(
                    "`namespace_of: {name}` is not a process target of this agent; declare it under [[targets.process]] in agent.toml"
                ))
            })?;
            Some(netns::of_process(&t)?)
        }
        None => None,
    };
    let ns_file = open_namespace(netns.as_ref())?;
    let resolved = resolve(&host.name, rails, action, scope, ns_file.as_ref()).await?;
    nft_available().await?;
    // Refused before anything is journaled when the kernel cannot queue packets at all.
    if action.is_shaped() && !std::path::Path::new("/proc/net/netfilter/nfnetlink_queue").exists() {
        return Err(HostNetError::Shaper(
            "this kernel has no nfnetlink_queue (/proc/net/netfilter/nfnetlink_queue is missing)"
                .into(),
        ));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let unique = fnv(&format!(
        "{run_id}/{}/{nanos}/{}",
        step.name,
        std::process::id()
    ));
    let table = format!("{}{:012x}", own_prefix(), unique & 0xffff_ffff_ffff);
    let mut summary = summary(action, step, &resolved);
    if let Some(ns) = &netns {
        summary.push_str(&format!(
            " inside the network namespace of `{}` (pid {})",
            ns.process, ns.pid
        ));
    }
    let script = script(&table, action, &resolved, &owner().control_ports);
    let shaped_families = if action.is_shaped() {
        ["ip", "ip6"]
            .into_iter()
            .filter(|f| script.contains(&format!("table {f} {table} ")))
            .map(String::from)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Prepared {
        script,
        summary,
        table,
        netns,
        shaped: action.is_shaped().then(|| action.clone()),
        shaped_families,
        dns_answer: match action {
            NetAction::DnsAnswer { names, answer } => Some((names.clone(), *answer)),
            _ => None,
        },
    })
}

#[async_trait::async_trait]
impl super::FaultFamily for HostNetFaults {
    fn name(&self) -> &'static str {
        FAMILY
    }

    async fn prepare(
        &self,
        step: &FaultStep,
        ctx: &super::InjectContext<'_>,
    ) -> Result<serde_json::Value, super::FaultError> {
        let cfg = ctx.targets.config();
        let processes = |name: &str| cfg.process_target(name).cloned();
        let p = prepare_step(step, cfg.host_target(&step.target), &processes, ctx.run_id).await?;
        serde_json::to_value(&p)
            .map_err(|e| super::FaultError::Other(format!("cannot encode the rule set: {e}")))
    }

    async fn inject(
        &self,
        _step: &FaultStep,
        ctx: &super::InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn super::ActiveFault>, super::FaultError> {
        let mut p: Prepared = serde_json::from_value(prepared.clone())
            .map_err(|e| super::FaultError::Other(format!("unreadable rule set: {e}")))?;
        let ns = open_namespace(p.netns.as_ref())?.map(Arc::new);
        let started = Instant::now();
        // A dns answer's socket answers before any query is sent to it.
        let responder = match p.dns_answer.clone() {
            Some((names, answer)) => {
                let (port, sockets) = answer_sockets(ns.clone()).await?;
                p.script = p.script.replace("@answer_port@", &port.to_string());
                Some(tokio::spawn(dns_answer::serve_all(sockets, names, answer)))
            }
            None => None,
        };
        if let Err(e) = apply(&p, ns.as_deref()).await {
            if let Some(r) = &responder {
                r.abort();
            }
            return Err(e.into());
        }
        let shaper = match p.shaped.as_ref().and_then(shape_of) {
            Some(shape) => {
                let tables: Vec<(String, String)> = p
                    .shaped_families
                    .iter()
                    .map(|f| (f.clone(), p.table.clone()))
                    .collect();
                let (ns2, deadline, seed) = (ns.clone(), ctx.deadline, fnv(&p.table));
                let started = tokio::task::spawn_blocking(move || {
                    shaper::Shaper::start(shape, ns2, tables, "shape", deadline, seed)
                })
                .await
                .map_err(|e| HostNetError::Shaper(e.to_string()))
                .and_then(|r| r.map_err(|e| HostNetError::Shaper(e.to_string())));
                match started {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // Rolled back before the step fails.
                        if let Err(re) = remove(&p.table, ns.as_deref()).await {
                            warn!(table = %p.table, error = %re, "cannot roll back a host network fault whose shaper failed");
                        }
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        info!(run_id = %ctx.run_id, table = %p.table, took_ms = started.elapsed().as_millis() as u64, "host network fault applied");
        let deadline = tokio::time::Instant::from_std(ctx.deadline);
        let table = p.table.clone();
        let timer_ns = ns.clone();
        let answering = responder.as_ref().map(|r| r.abort_handle());
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Err(e) = remove(&table, timer_ns.as_deref()).await {
                warn!(table = %table, error = %e, "cannot remove a host network fault at its deadline");
            }
            if let Some(r) = answering {
                r.abort();
            }
        });
        Ok(Box::new(Active {
            table: p.table,
            summary: p.summary,
            ns,
            timer,
            shaper: std::sync::Mutex::new(shaper),
            responder,
        }))
    }

    async fn recover(&self, record: &FaultRecord) -> Result<String, super::FaultError> {
        let p: Prepared = serde_json::from_value(record.detail.clone())
            .map_err(|e| super::FaultError::Other(format!("unreadable rule set: {e}")))?;
        let Some(n) = &p.netns else {
            remove(&p.table, None).await?;
            return Ok(format!("deleted nftables table {}", p.table));
        };
        match netns::open(n) {
            Some(ns) => {
                remove(&p.table, Some(&ns)).await?;
                Ok(format!(
                    "deleted nftables table {} in the network namespace of `{}`",
                    p.table, n.process
                ))
            }
            None => Ok(format!(
                "the network namespace of `{}` is gone, and table {} with it",
                n.process, p.table
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(&Cidr::parse("10.2.3.4").unwrap()));
        assert!(!net.contains(&Cidr::parse("11.0.0.1").unwrap()));
        assert!(!net.contains(&Cidr::parse("0.0.0.0/0").unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&net));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains(&Cidr::parse("fd12::1").unwrap())
        );
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_ports("5432").unwrap(), (5432, 5432));
        assert_eq!(parse_ports("8000-8099").unwrap(), (8000, 8099));
        for bad in ["0", "70000", "9-3", "x", "1-"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    fn rails() -> HostNetworkRails {
        HostNetworkRails::default()
    }

    #[tokio::test]
    async fn bad_scopes_are_refused_with_what_was_wrong() {
        let scope = |f: &dyn Fn(&mut NetScope)| {
            let mut s = NetScope {
                protocol: "all".into(),
                direction: "egress".into(),
                ..NetScope::default()
            };
            f(&mut s);
            s
        };
        let bh = NetAction::Blackhole;
        let err = |a: NetAction, s: NetScope, r: HostNetworkRails| async move {
            resolve("web", &r, &a, &s, None)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err(bh.clone(), scope(&|_| {}), rails())
                .await
                .contains("every peer and every port")
        );
        assert!(
            err(
                bh.clone(),
                scope(&|s| s.destinations = vec!["0.0.0.0/0".into()]),
                rails()
            )
            .await
            .contains("every peer")
        );
        let allow = HostNetworkRails {
            allow_everything: true,
            ..rails()
        };
        assert_eq!(err(bh.clone(), scope(&|_| {}), allow).await, "");
        assert!(
            err(
                bh.clone(),
                scope(&|s| s.destinations = vec!["10.1.2.0/40".into()]),
                rails()
            )
            .await
            .contains("10.1.2.0/40")
        );
        assert!(
            err(
                bh.clone(),
                scope(&|s| s.ports = Some("9-3".into())),
                rails()
            )
            .await
            .contains("not a port")
        );
        assert!(
            err(
                bh.clone(),
                scope(&|s| s.destinations = vec!["no-such-host.invalid".into()]),
                rails()
            )
            .await
            .contains("does not resolve")
        );
        assert!(
            err(
                bh.clone(),
                scope(&|s| {
                    s.ports = Some("80".into());
                    s.interface = Some("nosuchif0".into());
                }),
                rails()
            )
            .await
            .contains("does not exist")
        );
        assert!(
            err(
                NetAction::Loss {
                    percent: 130.0,
                    correlation: 0.0,
                },
                scope(&|s| s.ports = Some("80".into())),
                rails()
            )
            .await
            .contains("at most 100")
        );
        let capped = HostNetworkRails {
            max_loss_percent: Some(20.0),
            destinations: vec!["10.0.0.0/8".into()],
            ..rails()
        };
        let in_net = |s: &mut NetScope| s.destinations = vec!["10.0.0.1".into()];
        assert!(
            err(
                NetAction::Loss {
                    percent: 30.0,
                    correlation: 0.0,
                },
                scope(&in_net),
                capped.clone()
            )
            .await
            .contains("guard rail")
        );
        assert!(
            err(
                bh.clone(),
                scope(&|s| s.destinations = vec!["192.168.0.1".into()]),
                capped
            )
            .await
            .contains("outside what host `web` allows")
        );
    }

    #[test]
    fn the_control_port_is_accepted_before_the_drop() {
        let r = Resolved {
            peers: vec![Cidr::parse("10.0.0.0/24").unwrap()],
            ports: Some((9000, 9000)),
            protocol: "tcp",
            ingress: false,
            interfaces: vec![],
        };
        let s = script("chaosbot_x_y", &NetAction::Blackhole, &r, &[7411]);
        let accept = s.find("tcp sport 7411 accept").unwrap();
        let drop = s.find("ip daddr 10.0.0.0/24 tcp dport 9000 drop").unwrap();
        assert!(accept < drop, "{s}");
    }

    #[test]
    fn a_dns_fault_matches_the_name_over_udp_and_tcp() {
        let r = Resolved {
            peers: vec![],
            ports: Some((53, 53)),
            protocol: "all",
            ingress: false,
            interfaces: vec![],
        };
        let fail = NetAction::DnsFail {
            names: vec!["db.internal".into()],
        };
        // 0x02 "db" 0x08 "internal" 0x00: after the UDP header and the DNS header (20 bytes),
        // or after the TCP header, the length and the DNS header (14 bytes of the payload).
        let wire = "0x02646208696e7465726e616c00";
        let s = script("chaosbot_x_y", &fail, &r, &[7411]);
        assert!(
            s.contains(&format!(
                "udp dport 53 @th,160,104 {wire} reject with icmpx type port-unreachable"
            )),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "tcp dport 53 @ih,112,104 {wire} reject with tcp reset"
            )),
            "{s}"
        );
        let answer = NetAction::DnsAnswer {
            names: vec!["db.internal".into()],
            answer: "10.0.9.9".parse().unwrap(),
        };
        let s = script("chaosbot_x_y", &answer, &r, &[7411]);
        let (nat, filter) = s.split_once("chain fault_tcp").unwrap();
        assert!(
            nat.contains("type nat") && nat.contains(REDIRECT_TO_ANSWER),
            "{s}"
        );
        assert!(!nat.contains("reset"), "a nat chain takes no reject: {s}");
        assert!(filter.contains("type filter") && filter.contains("reject with tcp reset"));
        assert!(
            filter.find("tcp sport 7411 accept") < filter.find("reset"),
            "{s}"
        );
        let udp_only = Resolved {
            protocol: "udp",
            ..r.clone()
        };
        let s = script("chaosbot_x_y", &answer, &udp_only, &[7411]);
        assert!(!s.contains("fault_tcp") && !s.contains("tcp reset"), "{s}");
    }

    #[test]
    fn a_shaped_fault_has_a_table_per_family_it_matches() {
        let delay = NetAction::Delay {
            latency_ms: 10.0,
            jitter_ms: 0.0,
            correlation: 0.0,
        };
        let mut r = Resolved {
            peers: vec![],
            ports: Some((5432, 5432)),
            protocol: "tcp",
            ingress: false,
            interfaces: vec![],
        };
        // Every peer: both families, each sending its matches to its own `shape` chain.
        let both = script("chaosbot_x_y", &delay, &r, &[7411]);
        assert!(both.contains("table ip chaosbot_x_y {"), "{both}");
        assert!(both.contains("table ip6 chaosbot_x_y {"), "{both}");
        assert_eq!(both.matches("chain shape {").count(), 2, "{both}");
        assert_eq!(
            both.matches("tcp dport 5432 jump shape").count(),
            2,
            "{both}"
        );
        assert!(!both.contains("table inet"), "{both}");
        // IPv6 peers only: the ip6 table alone, with the ip6 match.
        r.peers = vec![Cidr::parse("fd00::/64").unwrap()];
        let v6 = script("chaosbot_x_y", &delay, &r, &[7411]);
        assert!(!v6.contains("table ip chaosbot_x_y"), "{v6}");
        assert!(
            v6.contains("ip6 daddr fd00::/64 tcp dport 5432 jump shape"),
            "{v6}"
        );
        // Uncorrelated loss stays nftables' own draw, in one inet table.
        let loss = script(
            "chaosbot_x_y",
            &NetAction::Loss {
                percent: 10.0,
                correlation: 0.0,
            },
            &r,
            &[7411],
        );
        assert!(loss.contains("table inet chaosbot_x_y") && loss.contains("numgen random"));
    }

    #[test]
    fn a_duplicate_clones_with_its_own_familys_dup() {
        let dup = NetAction::Duplicate { percent: 30.0 };
        let r = Resolved {
            peers: vec![
                Cidr::parse("10.0.0.0/24").unwrap(),
                Cidr::parse("fd00:cb::/64").unwrap(),
            ],
            ports: None,
            protocol: "udp",
            ingress: false,
            interfaces: vec![],
        };
        let s = script("chaosbot_x_y", &dup, &r, &[7411]);
        let (ip, ip6) = s.split_once("table ip6 chaosbot_x_y {").unwrap();
        assert!(ip.contains("table ip chaosbot_x_y {"), "{s}");
        assert!(
            ip.contains("ip daddr 10.0.0.0/24 meta l4proto udp numgen random mod 10000 < 3000 dup to ip daddr"),
            "{s}"
        );
        assert!(!ip.contains("fd00"), "{s}");
        assert!(
            ip6.contains("ip6 daddr fd00:cb::/64 meta l4proto udp numgen random mod 10000 < 3000 dup to ip6 daddr"),
            "{s}"
        );
        assert!(!ip6.contains("10.0.0.0"), "{s}");
    }
}
