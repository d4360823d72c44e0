//! The resolved experiment: what the engine executes and what a run row stores.
//!
//! The YAML a person writes (see [`super::raw`]) is parsed, parameter-substituted and validated
//! into these types. Everything here is already checked against the operator config: targets
//! exist, durations are within the guard rails, probes named by stop conditions exist.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod action;
mod host;
mod hostnet;
mod network;

pub use action::{Action, ActionStep, CommandRun, Expect, HttpCall, Sampling};
pub use host::{DiskAmount, MemoryAmount, ProcessAction, ResourceKind, Signal};
pub use hostnet::{Cidr, NetAction, NetScope, dns_name, dns_wire_name, parse_port_range};
pub use network::{Direction, ToxicKind};

use crate::load::{LoadPlan, Schedule, Threshold};

/// A validated experiment with its run parameters applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    pub description: String,
    pub owner: String,
    pub tags: Vec<String>,
    /// The parameter values this instance was resolved with (defaults plus overrides).
    pub params: BTreeMap<String, String>,
    pub hypothesis: Vec<Probe>,
    /// When the probes sample (continuously by default).
    #[serde(default, skip_serializing_if = "is_continuous")]
    pub sampling: Sampling,
    pub method: Vec<Step>,
    pub stop_conditions: Vec<StopCondition>,
    pub rollbacks: Vec<Rollback>,
    /// How long after the faults are removed the probes get to show the steady state again.
    #[serde(with = "crate::spec::duration_serde")]
    pub recovery_timeout: Duration,
    /// What another replica does with the run when its owner is lost mid-run.
    #[serde(default)]
    pub on_owner_loss: OnOwnerLoss,
}

/// `on_owner_loss`: what a replica that adopts a run whose owner died does with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOwnerLoss {
    /// Revert the faults through their agents, verify, and close the run `aborted`.
    #[default]
    Revert,
    /// Take the agents' leases over, rebuild the judge from the journal, run the rest of the
    /// method and close the run with its true verdict (or revert, saying why it cannot).
    Continue,
}

impl OnOwnerLoss {
    pub const CHOICES: [&'static str; 2] = ["revert", "continue"];

    pub fn as_str(self) -> &'static str {
        match self {
            OnOwnerLoss::Revert => "revert",
            OnOwnerLoss::Continue => "continue",
        }
    }
}

fn is_continuous(s: &Sampling) -> bool {
    *s == Sampling::Continuous
}

impl Experiment {
    /// Upper bound of the method's duration (sequence adds, parallel takes the longest).
    pub fn method_duration(&self) -> Duration {
        self.method.iter().map(Step::duration).sum()
    }

    /// Every fault step, in method order (flattening parallel groups and sequences).
    /// The servers (`https://host:port`) the run calls without checking their certificate
    /// (`insecure_skip_verify = true` on their endpoint), each once.
    pub fn unverified_servers(&self) -> Vec<String> {
        let probes = self.hypothesis.iter().filter_map(|p| match &p.kind {
            ProbeKind::Http { url, tls, .. } => Some((url, &**tls)),
            ProbeKind::Tcp { .. } | ProbeKind::Command { .. } => None,
        });
        let rollbacks = self.rollbacks.iter().filter_map(|r| match &r.action {
            RollbackAction::Http { url, tls, .. } => Some((url, tls)),
            RollbackAction::Command { .. } => None,
        });
        let actions = self
            .action_steps()
            .into_iter()
            .filter_map(|a| match &a.action {
                Action::Http(h) => Some((&h.url, &h.tls)),
                Action::Command(_) => None,
            });
        let loads = self
            .fault_steps()
            .into_iter()
            .filter_map(|s| match &s.fault {
                FaultSpec::Load { url, tls, .. } => Some((url, &**tls)),
                _ => None,
            });
        let mut out: Vec<String> = Vec::new();
        for (url, tls) in probes.chain(rollbacks).chain(loads).chain(actions) {
            if !tls.insecure_skip_verify {
                continue;
            }
            let server = url::Url::parse(url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|_| url.clone());
            if !out.contains(&server) {
                out.push(server);
            }
        }
        out
    }

    pub fn fault_steps(&self) -> Vec<&FaultStep> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a FaultStep>) {
            for s in steps {
                match s {
                    Step::Fault(f) => out.push(f),
                    Step::Held { fault, during, .. } => {
                        out.push(fault);
                        walk(during, out);
                    }
                    Step::Wait { .. } | Step::Action(_) => {}
                    Step::Parallel(inner) | Step::Sequence(inner) => walk(inner, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.method, &mut out);
        out
    }

    /// Every action step, in method order (flattening parallel groups and sequences).
    pub fn action_steps(&self) -> Vec<&ActionStep> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a ActionStep>) {
            for s in steps {
                match s {
                    Step::Action(a) => out.push(a),
                    Step::Wait { .. } | Step::Fault(_) => {}
                    Step::Parallel(inner) | Step::Sequence(inner) => walk(inner, out),
                    Step::Held { during, .. } => walk(during, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.method, &mut out);
        out
    }

    /// The proxied targets this experiment's network faults act through (bound before a run).
    pub fn proxy_targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .fault_steps()
            .iter()
            .filter(|f| matches!(f.fault, FaultSpec::Network { .. }))
            .map(|f| f.target.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The declared targets this experiment touches (its blast radius).
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .fault_steps()
            .iter()
            .map(|f| f.target.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

// A method has a handful of steps, built once per run: boxing the fault (large since the load
// step's attributes) would cost every pattern match for bytes nobody misses.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Fault(FaultStep),
    Wait {
        #[serde(with = "crate::spec::duration_serde")]
        duration: Duration,
    },
    Parallel(Vec<Step>),
    /// Steps in order: a member of a parallel group that is itself several steps (what a
    /// Chaos Toolkit `background` activity runs beside).
    Sequence(Vec<Step>),
    /// One HTTP call or declared command, run once.
    Action(ActionStep),
    /// A fault held while its `during` steps run (its duration bounds it), then reverted; with
    /// `at_close`, left in place through the hypothesis' after round and reverted by the
    /// close, before the rollbacks (a Chaos Toolkit toxic its rollbacks delete).
    Held {
        fault: FaultStep,
        during: Vec<Step>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        at_close: bool,
    },
}

impl Step {
    pub fn duration(&self) -> Duration {
        match self {
            Step::Fault(f) => f.duration,
            Step::Wait { duration } => *duration,
            Step::Action(a) => a.timeout,
            Step::Parallel(inner) => inner.iter().map(Step::duration).max().unwrap_or_default(),
            Step::Sequence(inner) => inner.iter().map(Step::duration).sum(),
            Step::Held { fault, during, .. } => {
                fault.duration.max(during.iter().map(Step::duration).sum())
            }
        }
    }
}

/// One fault applied to one declared target for a fixed time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultStep {
    pub name: String,
    pub target: String,
    #[serde(with = "crate::spec::duration_serde")]
    pub duration: Duration,
    pub fault: FaultSpec,
}

/// What a fault step does: one variant per fault family (network, process, resource, load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "family")]
pub enum FaultSpec {
    /// A toxic on the built-in TCP proxy in front of the target.
    Network {
        toxic: ToxicKind,
        direction: Direction,
        /// Probability in [0, 1] that a given connection is affected.
        toxicity: f64,
    },
    /// A signal to the processes of a declared process target (`kill`, `pause`).
    Process { action: ProcessAction },
    /// Load on this host (`cpu`, `memory`) or a declared directory (`disk`, `io`).
    Resource { stress: ResourceKind },
    /// nftables rules on a declared host's own traffic, put in place by its agent.
    HostNetwork { action: NetAction, scope: NetScope },
    /// HTTP load on a declared endpoint (the step's target is a `[[targets.http]]` name).
    Load {
        /// Full URL: the endpoint's URL plus the step's `path`.
        url: String,
        /// The endpoint's TLS settings (https only; empty for http).
        #[serde(default, skip_serializing_if = "crate::tls::TlsOptions::is_default")]
        tls: Box<crate::tls::TlsOptions>,
        method: String,
        headers: BTreeMap<String, String>,
        /// The endpoint's own headers (templates, read when the request is made).
        #[serde(
            default,
            skip_serializing_if = "crate::config::HeaderTemplates::is_empty"
        )]
        endpoint_headers: crate::config::HeaderTemplates,
        body: Option<String>,
        schedule: Schedule,
        connections: usize,
        /// Per request.
        #[serde(with = "crate::spec::duration_serde")]
        timeout: Duration,
        /// Judged on the whole step as hypothesis tolerances.
        thresholds: Vec<Threshold>,
    },
}

impl FaultSpec {
    /// Short kind name as shown to people ("latency", "bandwidth", "load", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            FaultSpec::Network { toxic, .. } => toxic.name(),
            FaultSpec::Process { action } => action.name(),
            FaultSpec::Resource { stress } => stress.name(),
            FaultSpec::HostNetwork { action, .. } => action.name(),
            FaultSpec::Load { .. } => "load",
        }
    }

    /// Whether the fault acts through the built-in proxy of its target (which the engine
    /// binds and checks before anything is injected).
    pub fn uses_proxy(&self) -> bool {
        matches!(self, FaultSpec::Network { .. })
    }

    /// The generator's plan for a load step lasting `duration`, with the experiment's headers
    /// only (the endpoint's are read where the load is generated: [`FaultSpec::load_headers`]).
    pub fn load_plan(&self, duration: Duration) -> Option<LoadPlan> {
        match self {
            FaultSpec::Load {
                url,
                method,
                headers,
                body,
                schedule,
                connections,
                timeout,
                ..
            } => Some(LoadPlan {
                url: url.clone(),
                method: method.clone(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body: body.clone(),
                schedule: *schedule,
                connections: *connections,
                timeout: *timeout,
                duration,
            }),
            _ => None,
        }
    }

    /// A load step's headers with its endpoint's, read from this process's environment.
    pub fn load_headers(&self) -> Result<Vec<(String, String)>, crate::config::HeaderError> {
        match self {
            FaultSpec::Load {
                headers,
                endpoint_headers,
                ..
            } => Ok(endpoint_headers.over(headers)?.into_iter().collect()),
            _ => Ok(Vec::new()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub name: String,
    pub kind: ProbeKind,
    #[serde(with = "crate::spec::duration_serde")]
    pub interval: Duration,
    #[serde(with = "crate::spec::duration_serde")]
    pub timeout: Duration,
    pub tolerance: Tolerance,
    /// Judges the probe's output instead of its `status` and `body_contains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Http {
        /// Full URL, resolved from a declared endpoint plus the probe's path.
        url: String,
        /// The endpoint's TLS settings (https only; empty for http).
        #[serde(default, skip_serializing_if = "crate::tls::TlsOptions::is_default")]
        tls: Box<crate::tls::TlsOptions>,
        method: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The endpoint's own headers (templates, read when the request is made).
        #[serde(
            default,
            skip_serializing_if = "crate::config::HeaderTemplates::is_empty"
        )]
        endpoint_headers: crate::config::HeaderTemplates,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// Accepted status codes (a sample with any other status fails).
        expect_status: Vec<u16>,
        #[serde(default, with = "crate::spec::opt_duration_serde")]
        max_latency: Option<Duration>,
        body_contains: Option<String>,
    },
    Tcp {
        /// host:port, resolved from a declared target.
        address: String,
        #[serde(default, with = "crate::spec::opt_duration_serde")]
        max_latency: Option<Duration>,
    },
    /// A declared command run once per sample: it passes when it exits 0 (or as `expect` says).
    Command { command: CommandRun },
}

/// How much failure the hypothesis tolerates while the method runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Highest share of failed samples during the method for the hypothesis to hold (0 = none).
    pub max_failure_ratio: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            max_failure_ratio: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopCondition {
    /// The probe it watches; for [`StopRule::LoadThreshold`], the load step.
    pub probe: String,
    pub rule: StopRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// Halt after this many failed samples in a row.
    ConsecutiveFailures(u32),
    /// Halt when the share of failed samples within the trailing window exceeds `ratio`
    /// (judged once the window holds at least `min_samples`).
    FailureRatio {
        ratio: f64,
        #[serde(with = "crate::spec::duration_serde")]
        window: Duration,
        min_samples: u32,
    },
    /// Halt when one second of the named load step breaches the threshold.
    LoadThreshold(Threshold),
}

impl std::fmt::Display for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopRule::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            StopRule::FailureRatio { ratio, window, .. } => write!(
                f,
                "failure ratio above {:.0}% over {}",
                ratio * 100.0,
                humantime::format_duration(*window)
            ),
            StopRule::LoadThreshold(t) => write!(f, "load threshold `{t}` over one second"),
        }
    }
}

/// An extra action run after the faults are removed (in addition to the automatic revert).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub name: String,
    pub action: RollbackAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackAction {
    /// An HTTP request to a declared endpoint (e.g. a cache flush or a feature-flag reset).
    Http {
        url: String,
        /// The endpoint's TLS settings (https only; empty for http).
        #[serde(default, skip_serializing_if = "crate::tls::TlsOptions::is_default")]
        tls: crate::tls::TlsOptions,
        method: String,
        body: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The endpoint's own headers (templates, read when the request is made).
        #[serde(
            default,
            skip_serializing_if = "crate::config::HeaderTemplates::is_empty"
        )]
        endpoint_headers: crate::config::HeaderTemplates,
        /// Accepted codes; empty: any answer.
        expect_status: Vec<u16>,
        #[serde(with = "crate::spec::duration_serde")]
        timeout: Duration,
    },
    /// A declared command; it must exit 0 unless `any_exit` (imported rollbacks accept any).
    Command {
        command: CommandRun,
        #[serde(default)]
        any_exit: bool,
        #[serde(with = "crate::spec::duration_serde")]
        timeout: Duration,
    },
}
