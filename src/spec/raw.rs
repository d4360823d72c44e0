//! The experiment YAML as written: its shape, before any meaning is checked.
//!
//! Every struct denies unknown keys (the error names the keys a level accepts, which feeds the
//! "did you mean" hints). Every field is optional and every scalar is read as text, so that a
//! missing or mistyped value is reported by [`super::validate`] with its location and a message
//! that fits the field, alongside all the other problems of the file, instead of stopping at
//! the first one. `docs/experiment-format.md` describes the format for people.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an experiment (a map with name, title, owner, hypothesis, method, ...)"
)]
pub struct RawExperiment {
    pub name: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Read separately (before substitution) by [`super::params`].
    pub parameters: Option<de::IgnoredAny>,
    pub hypothesis: Option<RawHypothesis>,
    pub method: Option<Vec<RawStep>>,
    pub stop_conditions: Option<Vec<RawStopCondition>>,
    pub rollbacks: Option<Vec<RawRollback>>,
    pub on_owner_loss: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `probes` and optionally `recovery_timeout`"
)]
pub struct RawHypothesis {
    pub recovery_timeout: Option<String>,
    /// `continuous` (default) or `before_after`.
    pub sampling: Option<String>,
    pub probes: Option<Vec<RawProbe>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a probe (a map with name and http, tcp or command)"
)]
pub struct RawProbe {
    pub name: Option<String>,
    pub http: Option<RawHttpProbe>,
    pub tcp: Option<RawTcpProbe>,
    pub command: Option<RawCommand>,
    pub expect: Option<RawExpect>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub tolerance: Option<RawTolerance>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an http probe (a map with endpoint, path, method, status, ...)"
)]
pub struct RawHttpProbe {
    pub endpoint: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub status: Option<OneOrMany>,
    pub max_latency: Option<String>,
    pub body_contains: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub body: Option<String>,
}

/// `command: {target: <declared command>}` (probes, actions, rollbacks).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a command (a map with target and optionally timeout)"
)]
pub struct RawCommand {
    pub target: Option<String>,
    pub timeout: Option<String>,
}

/// `expect:` on a probe: exactly one of `status`, `equals`, `regex`, `jsonpath`, `range`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an expectation (a map with one of status, equals, regex, jsonpath, range)"
)]
pub struct RawExpect {
    pub status: Option<OneOrMany>,
    /// JSON text of the value the whole output must equal.
    pub equals: Option<String>,
    pub regex: Option<String>,
    pub jsonpath: Option<String>,
    /// JSON text of the list the path's matches must equal.
    pub values: Option<String>,
    pub count: Option<String>,
    pub range: Option<Vec<String>>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a tcp probe (a map with target and optionally max_latency)"
)]
pub struct RawTcpProbe {
    pub target: Option<String>,
    pub max_latency: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `max_failure_ratio`")]
pub struct RawTolerance {
    pub max_failure_ratio: Option<String>,
}

/// One method step: a fault (name, target, fault, ...), an action, a `wait`, a `parallel`
/// group, or a `sequence` (steps in order, as a member of a parallel group).
/// The attributes of all fault kinds are flattened here; which ones a step may use depends on
/// its `fault` ([`fault_attributes`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a step (a fault with name, target, fault and duration; `wait: 5s`; `parallel: [...]`; or `sequence: [...]`)"
)]
pub struct RawStep {
    pub name: Option<String>,
    pub target: Option<String>,
    pub fault: Option<String>,
    pub direction: Option<String>,
    pub toxicity: Option<String>,
    pub duration: Option<String>,
    pub wait: Option<String>,
    pub parallel: Option<Vec<RawStep>>,
    pub sequence: Option<Vec<RawStep>>,
    /// A fault step's steps that run while it is held (then it is reverted).
    pub during: Option<Vec<RawStep>>,
    /// With `during`: `at_close` leaves the fault in place until the run's close.
    pub revert: Option<String>,
    pub latency: Option<String>,
    pub jitter: Option<String>,
    pub rate_kbps: Option<String>,
    pub timeout: Option<String>,
    pub delay: Option<String>,
    pub average_size: Option<String>,
    pub size_variation: Option<String>,
    pub bytes: Option<String>,
    pub signal: Option<String>,
    pub restart: Option<String>,
    pub workers: Option<String>,
    pub percent: Option<String>,
    pub mib: Option<String>,
    pub fraction: Option<String>,
    pub until_percent: Option<String>,
    pub block_kib: Option<String>,
    pub mib_per_s: Option<String>,
    /// Host network faults: peers (CIDRs, addresses, host names), ports, protocol, interface.
    pub destinations: Option<Vec<String>>,
    pub ports: Option<String>,
    pub protocol: Option<String>,
    pub interface: Option<String>,
    /// Host network faults inside a process target's network namespace.
    pub namespace_of: Option<String>,
    /// `dns`: the names whose queries fail (or get `answer`).
    pub names: Option<Vec<String>>,
    pub answer: Option<String>,
    /// Host `delay` and `loss`: how much each packet's draw is like the one before, percent.
    pub correlation: Option<String>,
    // `load` attributes (`timeout` above is shared with the toxics).
    pub path: Option<String>,
    pub method: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub body: Option<String>,
    pub rate: Option<String>,
    pub ramp: Option<RawRamp>,
    pub connections: Option<String>,
    pub thresholds: Option<Vec<String>>,
    // Action steps: one http call or one declared command.
    pub http: Option<RawHttpAction>,
    pub command: Option<RawCommand>,
}

/// `ramp: {from: 10, to: 500, over: 30s}` (req/s; `over` defaults to the step's duration).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a ramp (a map with from, to and optionally over)"
)]
pub struct RawRamp {
    pub from: Option<String>,
    pub to: Option<String>,
    pub over: Option<String>,
}

/// The keys every fault step has, whatever its kind (any other key it gives is an attribute
/// of its kind, [`fault_attributes`]).
pub const STEP_KEYS: &[&str] = &[
    "name",
    "target",
    "fault",
    "direction",
    "toxicity",
    "duration",
    "during",
    "revert",
];

/// The keys of [`STEP_KEYS`] that act on network faults only: on other kinds they are
/// checked as attributes (which those kinds do not take).
pub const NETWORK_STEP_KEYS: &[&str] = &["direction", "toxicity"];

/// A host network fault's own attributes, then the scope every one of them takes.
macro_rules! host_network_attrs {
    ($($own:expr),*) => {
        &[
            $($own,)*
            ("destinations", false),
            ("ports", false),
            ("protocol", false),
            ("direction", false),
            ("interface", false),
            ("namespace_of", false),
        ]
    };
}

/// The attributes of a fault kind: (name, required).
pub fn fault_attributes(kind: &str) -> Option<&'static [(&'static str, bool)]> {
    Some(match kind {
        "latency" => &[("latency", true), ("jitter", false)],
        "bandwidth" => &[("rate_kbps", true)],
        "timeout" => &[("timeout", true)],
        "reset_peer" => &[("timeout", false)],
        "down" => &[],
        "slow_close" => &[("delay", true)],
        "slicer" => &[
            ("average_size", true),
            ("size_variation", false),
            ("delay", false),
        ],
        "limit_data" => &[("bytes", true)],
        "kill" => &[("signal", false), ("restart", false)],
        "pause" => &[],
        "cpu" => &[("workers", false), ("percent", true)],
        // Exactly one of the two amounts; checked in validate.
        "memory" => &[("mib", false), ("fraction", false)],
        "disk" => &[("mib", false), ("until_percent", false)],
        "io" => &[("block_kib", false), ("mib_per_s", true)],
        "blackhole" | "reject" => host_network_attrs!(),
        "loss" => host_network_attrs!(("percent", true), ("correlation", false)),
        "duplicate" => host_network_attrs!(("percent", true)),
        "rate_limit" => host_network_attrs!(("rate_kbps", true)),
        "dns" => host_network_attrs!(("names", true), ("answer", false)),
        "delay" => {
            host_network_attrs!(("latency", true), ("jitter", false), ("correlation", false))
        }
        "reorder" => host_network_attrs!(("percent", true), ("latency", true)),
        "corrupt" => host_network_attrs!(("percent", true)),
        // `rate` or `ramp` is required; validate says so (one of two is not expressible here).
        "load" => &[
            ("path", false),
            ("method", false),
            ("headers", false),
            ("body", false),
            ("rate", false),
            ("ramp", false),
            ("connections", false),
            ("timeout", false),
            ("thresholds", false),
        ],
        _ => return None,
    })
}

/// Every fault kind, for "did you mean" hints and help texts.
pub const FAULT_KINDS: &[&str] = &[
    "latency",
    "bandwidth",
    "timeout",
    "reset_peer",
    "down",
    "slow_close",
    "slicer",
    "limit_data",
    "kill",
    "pause",
    "cpu",
    "memory",
    "disk",
    "io",
    "load",
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

/// The kind of declared target a fault kind acts on (`[[targets.<kind>]]`).
pub fn target_kind_for(fault: &str) -> Option<&'static str> {
    Some(match fault {
        "kill" | "pause" => "process",
        "cpu" | "memory" | "blackhole" | "reject" | "loss" | "rate_limit" | "dns" | "duplicate"
        | "delay" | "reorder" | "corrupt" => "host",
        "disk" | "io" => "disk",
        "load" => "http",
        other if fault_attributes(other).is_some() => "proxy",
        _ => return None,
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a stop condition (a map with probe and consecutive_failures or failure_ratio, or with load and threshold)"
)]
pub struct RawStopCondition {
    pub probe: Option<String>,
    /// A load step whose one-second windows are judged against `threshold`.
    pub load: Option<String>,
    pub threshold: Option<String>,
    pub consecutive_failures: Option<String>,
    pub failure_ratio: Option<String>,
    pub window: Option<String>,
    pub min_samples: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rollback (a map with name and http or command)"
)]
pub struct RawRollback {
    pub name: Option<String>,
    pub http: Option<RawHttpAction>,
    pub command: Option<RawCommand>,
    /// A command rollback that accepts any exit code (`true`); otherwise it must exit 0.
    pub any_exit: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an http action (a map with endpoint, path, method, body, status, timeout)"
)]
pub struct RawHttpAction {
    pub endpoint: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub body: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Accepted codes, or `any`.
    pub status: Option<OneOrMany>,
    pub timeout: Option<String>,
}

/// One declared parameter (`parameters: {name: {type, default, min, max, description}}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a parameter (a map with type, default and optionally min, max, description)"
)]
pub struct RawParam {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub default: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub description: Option<String>,
}

/// The `parameters` map, in file order.
#[derive(Debug, Clone, Default)]
pub struct RawParams(pub Vec<(String, RawParam)>);

impl<'de> Deserialize<'de> for RawParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawParams;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of parameter names to {type, default, ...}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawParams, E> {
                Ok(RawParams::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawParams, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, RawParam>()? {
                    out.push((k, v));
                }
                Ok(RawParams(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A single value or a list of values (`status: 200` or `status: [200, 204]`).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<String>()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}
