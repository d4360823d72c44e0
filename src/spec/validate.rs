//! Meaning checks: [`super::raw`] → [`super::model`], against the operator config.
//!
//! Every check records a located [`Problem`] and carries on, so one pass reports everything
//! that is wrong with a file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::locate::{DeError, Locations, Node, Seg, path_string};
use super::model::{
    Direction, DiskAmount, Experiment, FaultSpec, FaultStep, MemoryAmount, Probe, ProbeKind,
    ProcessAction, ResourceKind, Rollback, RollbackAction, Signal, Step, StopCondition, StopRule,
    Tolerance, ToxicKind,
};
use super::raw::{
    FAULT_KINDS, OneOrMany, RawExperiment, RawHttpAction, RawProbe, RawStep, RawStopCondition,
    STEP_KEYS, fault_attributes, target_kind_for,
};
use super::{Problem, did_you_mean, duration_serde};
use crate::config::Config;
use crate::load::Schedule;

/// Longer than this is certainly a typo (`30h` for `30s`).
pub const ABSURD: Duration = Duration::from_secs(24 * 3600);
/// Probes sampling faster than this would load the service more than the fault does.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Turns a deserialization error into a problem; unknown keys get "did you mean" hints from
/// the keys of their level (for a fault step: the keys of its fault kind). The second value is
/// the path of the suggested key, so that it is not also reported missing.
pub(crate) fn de_problem(file: &str, e: &DeError, root: &Node) -> (Problem, Option<String>) {
    let path = e.path.clone().unwrap_or_default();
    let where_ = match path.split_last() {
        Some((_, parent)) if e.unknown.is_some() && !parent.is_empty() => {
            format!(" in `{}`", path_string(parent))
        }
        _ if e.unknown.is_some() => String::new(),
        _ if path.is_empty() => " (the whole file)".into(),
        _ => format!(" at `{}`", path_string(&path)),
    };
    let Some((field, expected)) = &e.unknown else {
        let hint = if e.message.starts_with("expected a sequence") {
            "write a list here: `[a, b]`, or one `- item` per line"
        } else if e.message.starts_with("expected a string") {
            "write a single value here, not a list or a map"
        } else {
            "fix the shape of this value; docs/experiment-format.md shows every key with an example"
        };
        let p = Problem::at(file, e.pos, format!("{}{where_}", e.message), hint);
        return (p, None);
    };
    let parent = path.split_last().map(|(_, p)| p).unwrap_or_default();
    let mut allowed: Vec<&str> = expected.to_vec();
    let mut kind_note = String::new();
    if is_step_path(parent)
        && let Some(kind) = root
            .at(parent)
            .and_then(|s| s.get("fault"))
            .and_then(Node::scalar)
        && let Some(attrs) = fault_attributes(kind)
    {
        allowed = STEP_KEYS.to_vec();
        allowed.extend(attrs.iter().map(|(a, _)| *a));
        kind_note = format!(" for a `{kind}` fault");
    }
    let suggestion = did_you_mean(field, allowed.iter().copied());
    let hint = match &suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("keys allowed here{kind_note}: {}", allowed.join(", ")),
    };
    let p = Problem::at(
        file,
        e.pos,
        format!("unknown key `{field}`{where_}{kind_note}"),
        hint,
    );
    let suggested = suggestion.map(|s| {
        let mut path = parent.to_vec();
        path.push(Seg::Key(s));
        path_string(&path)
    });
    (p, suggested)
}

fn is_step_path(p: &[Seg]) -> bool {
    matches!(p, [.., Seg::Key(k), Seg::Index(_)] if k == "method" || k == "parallel")
}

struct Cx<'a> {
    file: &'a str,
    loc: &'a Locations,
    cfg: &'a Config,
    problems: Vec<Problem>,
    /// Keys suggested for a misspelt key: not reported missing a second time.
    suggested: &'a HashSet<String>,
    step_names: HashMap<String, String>,
    /// Fault steps with the top-level parallel group they run in (None: in sequence).
    faults: Vec<(String, Option<usize>, FaultStep)>,
    /// Names of the steps with `fault: load` (valid or not), for load stop conditions.
    load_steps: Vec<String>,
}

impl Cx<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let pos = self.loc.value(path);
        self.problems
            .push(Problem::at(self.file, pos, message, hint));
    }

    fn at_key(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let pos = self.loc.key(path);
        self.problems
            .push(Problem::at(self.file, pos, message, hint));
    }

    /// A required value; reports it missing (at the enclosing map) unless the file has it
    /// (then its shape was wrong and that is already reported).
    fn required<'v>(
        &mut self,
        path: &str,
        v: &'v Option<String>,
        what: &str,
        example: &str,
    ) -> Option<&'v str> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                if (!self.loc.has(path) || v.is_some()) && !self.suggested.contains(path) {
                    let key = path.rsplit('.').next().unwrap_or(path);
                    self.at(
                        path,
                        format!("{what} is missing `{key}`"),
                        format!("add it, like `{key}: {example}`"),
                    );
                }
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &str,
        v: &Option<String>,
        default: Option<Duration>,
    ) -> Option<Duration> {
        let Some(text) = v.as_deref() else {
            return default;
        };
        let key = path.rsplit('.').next().unwrap_or(path);
        match duration_serde::parse(text) {
            Ok(d) if d > ABSURD => {
                self.at(
                    path,
                    format!("`{key}: {text}` is longer than a day"),
                    "that is almost certainly a typo (h for s?); durations are capped at 24h",
                );
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                self.at(
                    path,
                    format!("`{key}`: {why}"),
                    "write it like 250ms, 30s or 2m",
                );
                None
            }
        }
    }

    fn ratio(&mut self, path: &str, v: &Option<String>, default: f64) -> Option<f64> {
        let Some(text) = v.as_deref() else {
            return Some(default);
        };
        let key = path.rsplit('.').next().unwrap_or(path);
        match text.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Some(f),
            Ok(_) => {
                self.at(
                    path,
                    format!("`{key}: {text}` is outside 0..1"),
                    "write a share between 0 and 1, like 0.5 for half",
                );
                None
            }
            Err(_) => {
                self.at(
                    path,
                    format!("`{key}: {text}` is not a number"),
                    "write a share between 0 and 1, like 0.5 for half",
                );
                None
            }
        }
    }

    fn uint(&mut self, path: &str, v: &Option<String>, example: &str) -> Option<u64> {
        let text = v.as_deref()?;
        let key = path.rsplit('.').next().unwrap_or(path);
        match text.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.at(
                    path,
                    format!("`{key}: {text}` is not a whole number of zero or more"),
                    format!("write it like `{key}: {example}`"),
                );
                None
            }
        }
    }

    fn status(&mut self, path: &str, v: &Option<OneOrMany>) -> Vec<u16> {
        let Some(OneOrMany(list)) = v else {
            return vec![200];
        };
        if list.is_empty() {
            self.at(
                path,
                "`status` is an empty list",
                "list the accepted codes, like `status: [200, 204]`, or leave it out for 200",
            );
        }
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match s.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => out.push(c),
                _ => {
                    let p = if self.loc.has(&format!("{path}[{i}]")) {
                        format!("{path}[{i}]")
                    } else {
                        path.to_string()
                    };
                    self.at(
                        &p,
                        format!("`{s}` is not an HTTP status code"),
                        "use codes between 100 and 599, like 200 or [200, 204]",
                    );
                }
            }
        }
        out
    }

    fn endpoint(&mut self, path: &str, name: &str, user: &str) -> Option<String> {
        if let Some(h) = self.cfg.http_endpoint(name) {
            return Some(h.url.clone());
        }
        let names: Vec<&str> = self
            .cfg
            .targets
            .http
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        let hint = if self.cfg.proxy_target(name).is_some() {
            format!(
                "`{name}` is a proxy target; {user} call a declared [[targets.http]] endpoint{}",
                list_suffix(&names)
            )
        } else if let Some(s) = did_you_mean(name, names.iter().copied()) {
            format!("did you mean `{s}`?")
        } else if names.is_empty() {
            "the operator config declares no [[targets.http]] endpoints; ask the operator to add one".into()
        } else {
            format!("declared endpoints: {}", names.join(", "))
        };
        self.at(
            path,
            format!("endpoint `{name}` is not declared in the operator config"),
            hint,
        );
        None
    }

    fn unique_step_name(&mut self, path: &str, name: &str) {
        if let Some(first) = self.step_names.get(name).cloned() {
            let pos = self.loc.value(&first);
            self.at(
                path,
                format!(
                    "step name `{name}` is used twice (first at line {})",
                    pos.line
                ),
                "give every step its own name; the journal and the reports refer to steps by name",
            );
        } else {
            self.step_names.insert(name.to_string(), path.to_string());
        }
    }
}

fn list_suffix(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (declared: {})", names.join(", "))
    }
}

/// Raw → model. Returns the model only when no problem was found.
pub(crate) fn experiment(
    file: &str,
    loc: &Locations,
    cfg: &Config,
    raw: &RawExperiment,
    params: BTreeMap<String, String>,
    suggested: &HashSet<String>,
) -> (Option<Experiment>, Vec<Problem>) {
    let mut cx = Cx {
        file,
        loc,
        cfg,
        problems: Vec::new(),
        suggested,
        step_names: HashMap::new(),
        faults: Vec::new(),
        load_steps: Vec::new(),
    };
    let cx = &mut cx;

    let name = cx.required("name", &raw.name, "the experiment", "checkout-latency");
    if let Some(n) = name {
        let slug = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !slug {
            cx.at(
                "name",
                format!("name `{n}` is not a slug"),
                "use 1 to 64 lowercase letters, digits and `-`, like `checkout-latency`; people type it in chat",
            );
        }
    }
    let title = cx.required(
        "title",
        &raw.title,
        "the experiment",
        "Checkout tolerates slow payments",
    );
    let owner = cx.required("owner", &raw.owner, "the experiment", "\"@sre-payments\"");

    // Hypothesis.
    let mut probes = Vec::new();
    let mut probe_names: Vec<String> = Vec::new();
    let mut recovery = Some(Duration::from_secs(10));
    match &raw.hypothesis {
        None => {
            if !loc.has("hypothesis") {
                cx.at(
                    "",
                    "the experiment has no `hypothesis`",
                    "add `hypothesis:` with at least one probe that shows the steady state",
                );
            }
        }
        Some(h) => {
            recovery = cx.duration(
                "hypothesis.recovery_timeout",
                &h.recovery_timeout,
                Some(Duration::from_secs(10)),
            );
            let list = h.probes.as_deref().unwrap_or_default();
            if list.is_empty() && !(h.probes.is_none() && loc.has("hypothesis.probes")) {
                cx.at(
                    "hypothesis.probes",
                    "the hypothesis has no probes",
                    "add at least one probe under `hypothesis.probes`, e.g. an http probe of a declared endpoint",
                );
            }
            for (i, p) in list.iter().enumerate() {
                let path = format!("hypothesis.probes[{i}]");
                if let Some(n) = p.name.as_deref() {
                    if probe_names.iter().any(|x| x == n) {
                        cx.at(
                            &format!("{path}.name"),
                            format!("probe name `{n}` is used twice"),
                            "give every probe its own name; stop conditions refer to probes by name",
                        );
                    } else {
                        probe_names.push(n.to_string());
                    }
                }
                if let Some(probe) = probe(cx, &path, p) {
                    probes.push(probe);
                }
            }
        }
    }

    // Method.
    let mut method = Vec::new();
    let steps = raw.method.as_deref().unwrap_or_default();
    if steps.is_empty() && !(raw.method.is_none() && loc.has("method")) {
        cx.at(
            if loc.has("method") { "method" } else { "" },
            "the method has no steps",
            "add at least one fault step under `method:`",
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let path = format!("method[{i}]");
        let group = s.parallel.as_ref().map(|_| i);
        if let Some(st) = step(cx, &path, s, group) {
            method.push(st);
        }
    }
    overlaps(cx);

    // Stop conditions.
    let mut stops = Vec::new();
    for (i, s) in raw.stop_conditions.iter().flatten().enumerate() {
        if let Some(c) = stop_condition(cx, &format!("stop_conditions[{i}]"), s, &probe_names) {
            stops.push(c);
        }
    }

    // Rollbacks.
    let mut rollbacks = Vec::new();
    let mut rollback_names: Vec<String> = Vec::new();
    for (i, r) in raw.rollbacks.iter().flatten().enumerate() {
        let path = format!("rollbacks[{i}]");
        let name = cx.required(
            &format!("{path}.name"),
            &r.name,
            "this rollback",
            "flush-cache",
        );
        if let Some(n) = name {
            if rollback_names.iter().any(|x| x == n) {
                cx.at(
                    &format!("{path}.name"),
                    format!("rollback name `{n}` is used twice"),
                    "give every rollback its own name",
                );
            }
            rollback_names.push(n.to_string());
        }
        let action = match &r.http {
            None => {
                if !loc.has(&format!("{path}.http")) {
                    cx.at(
                        &path,
                        "this rollback has no action",
                        "add `http: {endpoint: ..., path: ..., method: POST}`",
                    );
                }
                None
            }
            Some(h) => http_action(cx, &format!("{path}.http"), h),
        };
        if let (Some(n), Some(action)) = (name, action) {
            rollbacks.push(Rollback {
                name: n.to_string(),
                action,
            });
        }
    }

    // Guard rail: the whole run must fit.
    let method_total: Duration = method.iter().map(Step::duration).sum();
    if let Some(rec) = recovery {
        let total = method_total + rec;
        let max = cfg.guard_rails.max_run_duration;
        if total > max {
            cx.at_key(
                "method",
                format!(
                    "the run could take {} (method {} + recovery_timeout {}), above the operator's limit of {}",
                    humantime::format_duration(total),
                    humantime::format_duration(method_total),
                    humantime::format_duration(rec),
                    humantime::format_duration(max)
                ),
                "shorten the steps (or their duration parameters), or ask the operator to raise guard_rails.max_run_duration",
            );
        }
    }

    let problems = std::mem::take(&mut cx.problems);
    if !problems.is_empty() {
        return (None, problems);
    }
    let (Some(name), Some(title), Some(owner), Some(recovery_timeout)) =
        (name, title, owner, recovery)
    else {
        return (None, problems);
    };
    (
        Some(Experiment {
            name: name.to_string(),
            title: title.to_string(),
            description: raw.description.clone().unwrap_or_default(),
            owner: owner.to_string(),
            tags: raw.tags.clone().unwrap_or_default(),
            params,
            hypothesis: probes,
            method,
            stop_conditions: stops,
            rollbacks,
            recovery_timeout,
        }),
        problems,
    )
}

fn probe(cx: &mut Cx, path: &str, p: &RawProbe) -> Option<Probe> {
    let name = cx.required(
        &format!("{path}.name"),
        &p.name,
        "this probe",
        "checkout-ok",
    );
    let interval = cx.duration(
        &format!("{path}.interval"),
        &p.interval,
        Some(Duration::from_secs(1)),
    );
    if let Some(i) = interval
        && i < MIN_PROBE_INTERVAL
    {
        cx.at(
            &format!("{path}.interval"),
            format!(
                "probe interval {} is below the minimum of 50ms",
                humantime::format_duration(i)
            ),
            "sample at 50ms or slower; faster probing loads the service more than the fault does",
        );
    }
    let timeout = cx.duration(
        &format!("{path}.timeout"),
        &p.timeout,
        Some(Duration::from_secs(2)),
    );
    if timeout == Some(Duration::ZERO) {
        cx.at(
            &format!("{path}.timeout"),
            "probe timeout is zero",
            "give the probe time to answer, like `timeout: 2s`",
        );
    }
    let ratio = match &p.tolerance {
        Some(t) => cx.ratio(
            &format!("{path}.tolerance.max_failure_ratio"),
            &t.max_failure_ratio,
            0.0,
        ),
        None => Some(0.0),
    };
    let kind = match (&p.http, &p.tcp) {
        (Some(_), Some(_)) => {
            cx.at_key(
                &format!("{path}.tcp"),
                "a probe has either `http` or `tcp`, not both",
                "split it into two probes with their own names",
            );
            None
        }
        (None, None) => {
            if !cx.loc.has(&format!("{path}.http")) && !cx.loc.has(&format!("{path}.tcp")) {
                cx.at(
                    path,
                    "this probe has neither `http` nor `tcp`",
                    "add `http: {endpoint: <declared endpoint>, path: /health}` or `tcp: {target: <declared target>}`",
                );
            }
            None
        }
        (Some(h), None) => {
            let hp = format!("{path}.http");
            let status = cx.status(&format!("{hp}.status"), &h.status);
            let max_latency = cx.duration(&format!("{hp}.max_latency"), &h.max_latency, None);
            let url = cx
                .required(
                    &format!("{hp}.endpoint"),
                    &h.endpoint,
                    "this http probe",
                    "shop",
                )
                .map(str::to_string)
                .and_then(|e| cx.endpoint(&format!("{hp}.endpoint"), &e, "http probes"));
            let url_path = http_path(cx, &format!("{hp}.path"), &h.path);
            let method = http_method(cx, &format!("{hp}.method"), &h.method, "GET");
            match (url, url_path, method) {
                (Some(u), Some(p), Some(m)) => Some(ProbeKind::Http {
                    url: join_url(&u, &p),
                    method: m,
                    expect_status: status,
                    max_latency,
                    body_contains: h.body_contains.clone(),
                }),
                _ => None,
            }
        }
        (None, Some(t)) => {
            let tp = format!("{path}.tcp");
            let max_latency = cx.duration(&format!("{tp}.max_latency"), &t.max_latency, None);
            let target = cx
                .required(
                    &format!("{tp}.target"),
                    &t.target,
                    "this tcp probe",
                    "payments",
                )
                .map(str::to_string);
            target.and_then(|t| {
                let address = tcp_address(cx, &format!("{tp}.target"), &t)?;
                Some(ProbeKind::Tcp {
                    address,
                    max_latency,
                })
            })
        }
    };
    Some(Probe {
        name: name?.to_string(),
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        tolerance: Tolerance {
            max_failure_ratio: ratio?,
        },
    })
}

fn tcp_address(cx: &mut Cx, path: &str, name: &str) -> Option<String> {
    if let Some(p) = cx.cfg.proxy_target(name) {
        return Some(p.listen.to_string());
    }
    if let Some(h) = cx.cfg.http_endpoint(name) {
        let (scheme, rest) = h.url.split_once("://").unwrap_or(("http", h.url.as_str()));
        let hostport = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
        let has_port = match hostport.rfind(':') {
            Some(i) => !hostport[i..].contains(']'),
            None => false,
        };
        return Some(if has_port {
            hostport.to_string()
        } else if scheme == "https" {
            format!("{hostport}:443")
        } else {
            format!("{hostport}:80")
        });
    }
    let names: Vec<&str> = cx.cfg.target_names().collect();
    let hint = match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => {
            "the operator config declares no targets; ask the operator to add one".into()
        }
        None => format!("declared targets: {}", names.join(", ")),
    };
    cx.at(
        path,
        format!("target `{name}` is not declared in the operator config"),
        hint,
    );
    None
}

fn http_path(cx: &mut Cx, path: &str, v: &Option<String>) -> Option<String> {
    let p = v.clone().unwrap_or_else(|| "/".into());
    if !p.starts_with('/') {
        cx.at(
            path,
            format!("path `{p}` does not start with `/`"),
            format!("write it like `/{p}`; it is added to the endpoint's URL"),
        );
        return None;
    }
    Some(p)
}

fn http_method(cx: &mut Cx, path: &str, v: &Option<String>, default: &str) -> Option<String> {
    let m = v.clone().unwrap_or_else(|| default.into());
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let up = m.trim().to_ascii_uppercase();
    if METHODS.contains(&up.as_str()) {
        return Some(up);
    }
    let hint = match did_you_mean(&up, METHODS.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("use one of {}", METHODS.join(", ")),
    };
    cx.at(path, format!("`{m}` is not an HTTP method"), hint);
    None
}

fn join_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

fn http_action(cx: &mut Cx, hp: &str, h: &RawHttpAction) -> Option<RollbackAction> {
    let status = cx.status(&format!("{hp}.status"), &h.status);
    let timeout = cx.duration(
        &format!("{hp}.timeout"),
        &h.timeout,
        Some(Duration::from_secs(5)),
    );
    let url = cx
        .required(
            &format!("{hp}.endpoint"),
            &h.endpoint,
            "this http rollback",
            "shop",
        )
        .map(str::to_string)
        .and_then(|e| cx.endpoint(&format!("{hp}.endpoint"), &e, "rollbacks"));
    let url_path = http_path(cx, &format!("{hp}.path"), &h.path);
    let method = http_method(cx, &format!("{hp}.method"), &h.method, "POST");
    Some(RollbackAction::Http {
        url: join_url(&url?, &url_path?),
        method: method?,
        body: h.body.clone(),
        expect_status: status,
        timeout: timeout?,
    })
}

fn step(cx: &mut Cx, path: &str, s: &RawStep, group: Option<usize>) -> Option<Step> {
    let fault_keys: [(&str, bool); 31] = [
        ("name", s.name.is_some()),
        ("target", s.target.is_some()),
        ("fault", s.fault.is_some()),
        ("direction", s.direction.is_some()),
        ("toxicity", s.toxicity.is_some()),
        ("duration", s.duration.is_some()),
        ("latency", s.latency.is_some()),
        ("jitter", s.jitter.is_some()),
        ("rate_kbps", s.rate_kbps.is_some()),
        ("timeout", s.timeout.is_some()),
        ("delay", s.delay.is_some()),
        ("average_size", s.average_size.is_some()),
        ("size_variation", s.size_variation.is_some()),
        ("bytes", s.bytes.is_some()),
        ("signal", s.signal.is_some()),
        ("restart", s.restart.is_some()),
        ("workers", s.workers.is_some()),
        ("percent", s.percent.is_some()),
        ("mib", s.mib.is_some()),
        ("fraction", s.fraction.is_some()),
        ("until_percent", s.until_percent.is_some()),
        ("block_kib", s.block_kib.is_some()),
        ("mib_per_s", s.mib_per_s.is_some()),
        ("path", s.path.is_some()),
        ("method", s.method.is_some()),
        ("headers", s.headers.is_some()),
        ("body", s.body.is_some()),
        ("rate", s.rate.is_some()),
        ("ramp", s.ramp.is_some()),
        ("connections", s.connections.is_some()),
        ("thresholds", s.thresholds.is_some()),
    ];
    let is_wait = s.wait.is_some() || cx.loc.has(&format!("{path}.wait"));
    let is_parallel = s.parallel.is_some() || cx.loc.has(&format!("{path}.parallel"));
    if is_wait || is_parallel {
        let what = if is_wait { "wait" } else { "parallel" };
        if is_wait && is_parallel {
            cx.at_key(
                &format!("{path}.parallel"),
                "a step is either `wait` or `parallel`, not both",
                "split it into two steps",
            );
        }
        for (k, present) in fault_keys {
            if present {
                cx.at_key(
                    &format!("{path}.{k}"),
                    format!("a `{what}` step takes no `{k}`"),
                    if what == "wait" {
                        "a wait step is only `- wait: 5s`; put the fault in its own step".to_string()
                    } else {
                        "list the faults under `parallel:`, each with its own name, target and duration".to_string()
                    },
                );
            }
        }
        if is_wait {
            // None: the value had the wrong shape, reported already.
            let w = s.wait.clone()?;
            let d = cx.duration(&format!("{path}.wait"), &Some(w), None)?;
            return Some(Step::Wait { duration: d });
        }
        let inner = s.parallel.as_deref()?;
        if inner.is_empty() {
            cx.at(
                &format!("{path}.parallel"),
                "this parallel group has no steps",
                "list the steps that run at the same time under `parallel:`, or remove it",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, st) in inner.iter().enumerate() {
            match step(cx, &format!("{path}.parallel[{i}]"), st, group) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        return ok.then_some(Step::Parallel(out));
    }

    // A fault step.
    let name = cx.required(
        &format!("{path}.name"),
        &s.name,
        "this step",
        "slow-payments",
    );
    if let Some(n) = name {
        cx.unique_step_name(&format!("{path}.name"), n);
    }
    let kind = cx
        .required(
            &format!("{path}.fault"),
            &s.fault,
            "this fault step",
            "latency",
        )
        .map(str::to_string);
    let attrs = kind.as_deref().and_then(|k| {
        let a = fault_attributes(k);
        if a.is_none() {
            let hint = match did_you_mean(k, FAULT_KINDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("fault kinds: {}", FAULT_KINDS.join(", ")),
            };
            cx.at(
                &format!("{path}.fault"),
                format!("unknown fault kind `{k}`"),
                hint,
            );
        }
        a
    });
    // Which kind of declared target the fault acts on (None: the kind is unknown).
    let wants = kind.as_deref().and_then(target_kind_for);
    let network = wants.is_none_or(|w| w == "proxy");
    let target = cx
        .required(
            &format!("{path}.target"),
            &s.target,
            "this fault step",
            "payments",
        )
        .map(str::to_string);
    let is_load = kind.as_deref().map(str::trim) == Some("load");
    if let (true, Some(n)) = (is_load, name) {
        cx.load_steps.push(n.to_string());
    }
    // A load step aims at an HTTP endpoint (its URL is the base of the requests); every other
    // fault acts on a declared target of its kind.
    let load_base = match (&target, is_load) {
        (Some(t), true) => cx.endpoint(&format!("{path}.target"), t, "load steps"),
        _ => None,
    };
    let target = if is_load {
        target.filter(|_| load_base.is_some())
    } else {
        target.and_then(|t| fault_target(cx, &format!("{path}.target"), &t, kind.as_deref(), wants))
    };
    let direction = match s.direction.as_deref().map(str::trim) {
        _ if !network => Some(Direction::Downstream),
        None | Some("downstream") => Some(Direction::Downstream),
        Some("upstream") => Some(Direction::Upstream),
        Some(other) => {
            let hint = match did_you_mean(other, ["upstream", "downstream"]) {
                Some(s) => format!("did you mean `{s}`?"),
                None => {
                    "use `upstream` (client → service) or `downstream` (service → client)".into()
                }
            };
            cx.at(
                &format!("{path}.direction"),
                format!("unknown direction `{other}`"),
                hint,
            );
            None
        }
    };
    let toxicity = if network {
        cx.ratio(&format!("{path}.toxicity"), &s.toxicity, 1.0)
    } else {
        Some(1.0)
    };
    let dpath = format!("{path}.duration");
    let duration = if s.duration.is_none() {
        cx.required(&dpath, &s.duration, "this fault step", "30s");
        None
    } else {
        cx.duration(&dpath, &s.duration, None)
    };
    if duration == Some(Duration::ZERO) {
        cx.at(
            &dpath,
            "fault duration is zero",
            "give the fault a duration above zero, like 30s",
        );
    }

    // Attributes of the fault kind. `direction` and `toxicity` belong to network faults only.
    let mut toxic = None;
    let mut host_fault = None;
    let mut load_fault = None;
    if let (Some(k), Some(attrs)) = (kind.as_deref(), attrs) {
        let mut ok = true;
        let checked = fault_keys[6..]
            .iter()
            .chain(fault_keys[3..5].iter().filter(|_| !network));
        for (key, present) in checked {
            if *present && !attrs.iter().any(|(a, _)| a == key) {
                let takes = if attrs.is_empty() {
                    format!("a `{k}` fault takes no attributes")
                } else {
                    let list: Vec<&str> = attrs.iter().map(|(a, _)| *a).collect();
                    format!("a `{k}` fault takes: {}", list.join(", "))
                };
                cx.at_key(
                    &format!("{path}.{key}"),
                    format!("`{key}` is not an attribute of a `{k}` fault"),
                    format!("remove it or change the fault kind; {takes}"),
                );
                ok = false;
            }
        }
        for (attr, required) in attrs {
            let present = fault_keys.iter().any(|(key, p)| key == attr && *p);
            let apath = format!("{path}.{attr}");
            if *required && !present && !cx.loc.has(&apath) && !cx.suggested.contains(&apath) {
                let example = match *attr {
                    "latency" => "100ms",
                    "rate_kbps" => "64",
                    "timeout" => "5s",
                    "delay" => "1s",
                    "average_size" => "64",
                    "bytes" => "1024",
                    "percent" => "50",
                    "mib_per_s" => "20",
                    _ => "...",
                };
                cx.at(
                    path,
                    format!("a `{k}` fault needs `{attr}`"),
                    format!("add it, like `{attr}: {example}`"),
                );
                ok = false;
            }
        }
        let d = |cx: &mut Cx, key: &str, v: &Option<String>| {
            cx.duration(&format!("{path}.{key}"), v, Some(Duration::ZERO))
        };
        let u = |cx: &mut Cx, key: &str, v: &Option<String>, ex: &str| {
            cx.uint(&format!("{path}.{key}"), v, ex)
        };
        if is_load {
            // Checked even when a key is wrong, so every problem of the step is reported.
            let spec = load_spec(cx, path, s, load_base.as_deref(), duration);
            load_fault = spec.filter(|_| ok);
        } else if ok && !network {
            host_fault = host_fault_spec(cx, path, k, s, target.as_deref());
        } else if ok {
            toxic = match k {
                "latency" => match (d(cx, "latency", &s.latency), d(cx, "jitter", &s.jitter)) {
                    (Some(latency), Some(jitter)) => Some(ToxicKind::Latency { latency, jitter }),
                    _ => None,
                },
                "bandwidth" => u(cx, "rate_kbps", &s.rate_kbps, "64")
                    .map(|rate_kbps| ToxicKind::Bandwidth { rate_kbps }),
                "timeout" => {
                    d(cx, "timeout", &s.timeout).map(|timeout| ToxicKind::Timeout { timeout })
                }
                "reset_peer" => {
                    d(cx, "timeout", &s.timeout).map(|timeout| ToxicKind::ResetPeer { timeout })
                }
                "down" => Some(ToxicKind::Down),
                "slow_close" => {
                    d(cx, "delay", &s.delay).map(|delay| ToxicKind::SlowClose { delay })
                }
                "slicer" => {
                    let size = u(cx, "average_size", &s.average_size, "64");
                    let var = match &s.size_variation {
                        Some(_) => u(cx, "size_variation", &s.size_variation, "16"),
                        None => Some(0),
                    };
                    let delay = d(cx, "delay", &s.delay);
                    if size == Some(0) {
                        cx.at(
                            &format!("{path}.average_size"),
                            "`average_size` is zero",
                            "slices need at least one byte, like `average_size: 64`",
                        );
                    }
                    match (size, var, delay) {
                        (Some(a), Some(v), Some(delay)) if a > 0 => Some(ToxicKind::Slicer {
                            average_size: usize::try_from(a).unwrap_or(usize::MAX),
                            size_variation: usize::try_from(v).unwrap_or(usize::MAX),
                            delay,
                        }),
                        _ => None,
                    }
                }
                "limit_data" => {
                    u(cx, "bytes", &s.bytes, "1024").map(|bytes| ToxicKind::LimitData { bytes })
                }
                _ => None,
            };
        }
    }
    let fault = if is_load {
        load_fault?
    } else if network {
        FaultSpec::Network {
            toxic: toxic?,
            direction: direction?,
            toxicity: toxicity?,
        }
    } else {
        host_fault?
    };
    let fs = FaultStep {
        name: name?.to_string(),
        target: target?,
        duration: duration.filter(|d| !d.is_zero())?,
        fault,
    };
    cx.faults.push((path.to_string(), group, fs.clone()));
    Some(Step::Fault(fs))
}

/// Checks that a fault step names a declared target of the kind its fault acts on.
fn fault_target(
    cx: &mut Cx,
    path: &str,
    t: &str,
    kind: Option<&str>,
    wants: Option<&'static str>,
) -> Option<String> {
    let have = cx.cfg.target_kind(t);
    match (wants, have) {
        (Some(w), Some(h)) if w == h => return Some(t.to_string()),
        // The fault kind is unknown (reported already): any fault-able target will do.
        (None, Some(h)) if h != "http" => return Some(t.to_string()),
        _ => {}
    }
    let want = wants.unwrap_or("proxy");
    let names: Vec<&str> = match want {
        "process" => cx
            .cfg
            .targets
            .process
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
        "host" => cx
            .cfg
            .targets
            .host
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
        "disk" => cx
            .cfg
            .targets
            .disk
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
        _ => cx
            .cfg
            .targets
            .proxy
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
    };
    let kind = kind.unwrap_or("network");
    let (message, hint) = match have {
        Some("http") if want == "proxy" => (
            format!("`{t}` is an http endpoint, not a proxied target"),
            format!(
                "faults need a proxied target ([[targets.proxy]]) to act on{}",
                list_suffix(&names)
            ),
        ),
        Some(h) => (
            format!("`{t}` is a {h} target; a `{kind}` fault needs a {want} target"),
            format!(
                "name a [[targets.{want}]] target{}",
                if names.is_empty() {
                    " (the operator config declares none; ask the operator to add one)".to_string()
                } else {
                    list_suffix(&names)
                }
            ),
        ),
        None => (
            format!("target `{t}` is not declared in the operator config"),
            match did_you_mean(t, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() && want == "proxy" => {
                    "the operator config declares no [[targets.proxy]]; ask the operator to add the service".into()
                }
                None if names.is_empty() => format!(
                    "the operator config declares no [[targets.{want}]]; ask the operator to add one"
                ),
                None if want == "proxy" => format!("declared proxy targets: {}", names.join(", ")),
                None => format!("declared {want} targets: {}", names.join(", ")),
            },
        ),
    };
    cx.at(path, message, hint);
    None
}

impl Cx<'_> {
    /// A number within `lo..=hi` (`lo` excluded when `open_lo`).
    fn number(
        &mut self,
        path: &str,
        v: &Option<String>,
        lo: f64,
        hi: f64,
        example: &str,
    ) -> Option<f64> {
        let text = v.as_deref()?;
        let key = path.rsplit('.').next().unwrap_or(path);
        match text.trim().parse::<f64>() {
            Ok(f) if f > lo && f <= hi => Some(f),
            Ok(f) if f > hi => {
                self.at(
                    path,
                    format!("`{key}: {text}` is over {hi}"),
                    format!("use a value above {lo} and at most {hi}, like `{key}: {example}`"),
                );
                None
            }
            Ok(_) => {
                self.at(
                    path,
                    format!("`{key}: {text}` is not above {lo}"),
                    format!("use a value above {lo} and at most {hi}, like `{key}: {example}`"),
                );
                None
            }
            Err(_) => {
                self.at(
                    path,
                    format!("`{key}: {text}` is not a number"),
                    format!("write it like `{key}: {example}`"),
                );
                None
            }
        }
    }

    /// A whole number of at least 1.
    fn positive(&mut self, path: &str, v: &Option<String>, example: &str) -> Option<u64> {
        let n = self.uint(path, v, example)?;
        if n == 0 {
            let key = path.rsplit('.').next().unwrap_or(path);
            self.at(
                path,
                format!("`{key}` is zero"),
                format!("use 1 or more, like `{key}: {example}`"),
            );
            return None;
        }
        Some(n)
    }

    /// Exactly one of two keys (`a` or `b`); reports none or both.
    fn one_of(&mut self, path: &str, kind: &str, a: (&str, bool), b: (&str, bool)) -> bool {
        match (a.1, b.1) {
            (true, true) => {
                self.at_key(
                    &format!("{path}.{}", b.0),
                    format!(
                        "a `{kind}` fault takes either `{}` or `{}`, not both",
                        a.0, b.0
                    ),
                    "keep one of them".to_string(),
                );
                false
            }
            (false, false) => {
                if !self.loc.has(&format!("{path}.{}", a.0))
                    && !self.loc.has(&format!("{path}.{}", b.0))
                {
                    self.at(
                        path,
                        format!("a `{kind}` fault needs `{}` or `{}`", a.0, b.0),
                        format!("add one, like `{}: 256`", a.0),
                    );
                }
                false
            }
            _ => true,
        }
    }
}

/// The process and resource kinds: their attributes checked against the target's guard rails.
fn host_fault_spec(
    cx: &mut Cx,
    path: &str,
    k: &str,
    s: &RawStep,
    target: Option<&str>,
) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    match k {
        "kill" => {
            let signal = match s.signal.as_deref() {
                None => Some(Signal::Term),
                Some(text) => match Signal::parse(text) {
                    Some(sig) => Some(sig),
                    None => {
                        let up = text.trim().to_ascii_uppercase();
                        let bare = up.strip_prefix("SIG").unwrap_or(&up).to_string();
                        let hint = match did_you_mean(&bare, Signal::NAMES.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!(
                                "signals a kill step may send: {}",
                                Signal::NAMES.join(", ")
                            ),
                        };
                        cx.at(&at("signal"), format!("unknown signal `{text}`"), hint);
                        None
                    }
                },
            };
            let restart = match s.restart.as_deref().map(str::trim) {
                None | Some("false") => Some(false),
                Some("true") => Some(true),
                Some(other) => {
                    cx.at(
                        &at("restart"),
                        format!("`restart: {other}` is not true or false"),
                        "write `restart: true` to run the target's restart_command when the step ends",
                    );
                    None
                }
            };
            if restart == Some(true)
                && let Some(t) = target
                && cx
                    .cfg
                    .process_target(t)
                    .is_some_and(|p| p.restart_command.is_none())
            {
                cx.at(
                    &at("restart"),
                    format!("target `{t}` declares no `restart_command`"),
                    "ask the operator to add `restart_command` to the target, or remove `restart: true`",
                );
                return None;
            }
            Some(FaultSpec::Process {
                action: ProcessAction::Kill {
                    signal: signal?,
                    restart: restart?,
                },
            })
        }
        "pause" => Some(FaultSpec::Process {
            action: ProcessAction::Pause,
        }),
        "cpu" => {
            let workers = match &s.workers {
                None => Some(1),
                Some(_) => cx.positive(&at("workers"), &s.workers, "1"),
            };
            let max = target
                .and_then(|t| cx.cfg.host_target(t))
                .map(|h| h.cpu_worker_limit());
            if let (Some(w), Some(max)) = (workers, max)
                && w > u64::from(max)
            {
                cx.at(
                    &at("workers"),
                    format!(
                        "{w} cpu workers is above the guard rail of `{}` ({max})",
                        target.unwrap_or_default()
                    ),
                    format!("use at most {max}, or ask the operator to raise max_cpu_workers"),
                );
                return None;
            }
            let percent = cx.number(&at("percent"), &s.percent, 0.0, 100.0, "50");
            Some(FaultSpec::Resource {
                stress: ResourceKind::Cpu {
                    workers: u32::try_from(workers?).unwrap_or(u32::MAX),
                    percent: percent?,
                },
            })
        }
        "memory" => {
            if !cx.one_of(
                path,
                k,
                ("mib", s.mib.is_some()),
                ("fraction", s.fraction.is_some()),
            ) {
                return None;
            }
            let host = target.and_then(|t| cx.cfg.host_target(t)).cloned();
            let amount = if s.mib.is_some() {
                let mib = cx.positive(&at("mib"), &s.mib, "256")?;
                if let Some(h) = &host
                    && let Some(max) = h.max_memory_mib
                    && mib > max
                {
                    cx.at(
                        &at("mib"),
                        format!("{mib} MiB is beyond the memory guard rail of `{}` (max_memory_mib = {max})", h.name),
                        format!("use at most {max}, or ask the operator to raise max_memory_mib"),
                    );
                    return None;
                }
                MemoryAmount::Mib(mib)
            } else {
                MemoryAmount::Fraction(cx.number(&at("fraction"), &s.fraction, 0.0, 1.0, "0.5")?)
            };
            Some(FaultSpec::Resource {
                stress: ResourceKind::Memory { amount },
            })
        }
        "disk" => {
            if !cx.one_of(
                path,
                k,
                ("mib", s.mib.is_some()),
                ("until_percent", s.until_percent.is_some()),
            ) {
                return None;
            }
            let amount = if s.mib.is_some() {
                DiskAmount::Mib(cx.positive(&at("mib"), &s.mib, "256")?)
            } else {
                let p = cx.number(&at("until_percent"), &s.until_percent, 0.0, 100.0, "80")?;
                if let Some(d) = target.and_then(|t| cx.cfg.disk_target(t))
                    && p > d.max_fill_percent
                {
                    let (name, max) = (d.name.clone(), d.max_fill_percent);
                    cx.at(
                        &at("until_percent"),
                        format!("filling to {p}% is beyond the guard rail of `{name}` (max_fill_percent = {max})"),
                        format!("use at most {max}"),
                    );
                    return None;
                }
                DiskAmount::UntilPercent(p)
            };
            Some(FaultSpec::Resource {
                stress: ResourceKind::Disk { amount },
            })
        }
        "io" => {
            let block_kib = match &s.block_kib {
                None => Some(64),
                Some(_) => cx.positive(&at("block_kib"), &s.block_kib, "64"),
            };
            if let Some(b) = block_kib
                && b > 65536
            {
                cx.at(
                    &at("block_kib"),
                    format!("`block_kib: {b}` is over 65536 (64 MiB)"),
                    "use blocks of 4 to 65536 KiB, like `block_kib: 64`",
                );
                return None;
            }
            let rate = cx.positive(&at("mib_per_s"), &s.mib_per_s, "20")?;
            if let Some(d) = target.and_then(|t| cx.cfg.disk_target(t))
                && rate > d.max_io_mib_per_s
            {
                let (name, max) = (d.name.clone(), d.max_io_mib_per_s);
                cx.at(
                    &at("mib_per_s"),
                    format!("{rate} MiB/s is beyond the io guard rail of `{name}` (max_io_mib_per_s = {max})"),
                    format!("use at most {max}, or ask the operator to raise max_io_mib_per_s"),
                );
                return None;
            }
            Some(FaultSpec::Resource {
                stress: ResourceKind::Io {
                    block_kib: block_kib?,
                    mib_per_s: rate,
                },
            })
        }
        _ => None,
    }
}

/// Highest rate a load step may ask for: above it, a typo is likelier than an intent.
pub const MAX_LOAD_RATE: f64 = 1_000_000.0;
/// Most connections one load step may open.
pub const MAX_LOAD_CONNECTIONS: u64 = 10_000;

/// The attributes of a `load` step. `base` is the endpoint's URL (None: already reported).
fn load_spec(
    cx: &mut Cx,
    path: &str,
    s: &RawStep,
    base: Option<&str>,
    duration: Option<Duration>,
) -> Option<FaultSpec> {
    let rate_of = |cx: &mut Cx, p: &str, v: &Option<String>, ex: &str| -> Option<f64> {
        let text = v.as_deref()?;
        let key = p.rsplit('.').next().unwrap_or(p);
        match text.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && (0.0..=MAX_LOAD_RATE).contains(&r) => Some(r),
            Ok(_) => {
                cx.at(
                    p,
                    format!("`{key}: {text}` is outside 0..{MAX_LOAD_RATE}"),
                    format!("write requests per second, like `{key}: {ex}`"),
                );
                None
            }
            Err(_) => {
                cx.at(
                    p,
                    format!("`{key}: {text}` is not a number of requests per second"),
                    format!("write it like `{key}: {ex}`"),
                );
                None
            }
        }
    };
    let schedule = match (&s.rate, &s.ramp) {
        (Some(_), Some(_)) => {
            cx.at_key(
                &format!("{path}.ramp"),
                "a load step has either `rate` or `ramp`, not both",
                "keep `rate: 200` for a constant load, or `ramp: {from: 10, to: 200}` for a growing one",
            );
            None
        }
        (None, None) => {
            if !cx.loc.has(&format!("{path}.rate")) && !cx.loc.has(&format!("{path}.ramp")) {
                cx.at(
                    path,
                    "a `load` fault needs `rate` or `ramp`",
                    "add `rate: 200` (requests per second), or `ramp: {from: 10, to: 200}`",
                );
            }
            None
        }
        (Some(_), None) => {
            let p = format!("{path}.rate");
            match rate_of(cx, &p, &s.rate, "200") {
                Some(r) if r > 0.0 => Some(Schedule::Constant { rate: r }),
                Some(_) => {
                    cx.at(
                        &p,
                        "`rate: 0` sends nothing",
                        "use a rate above zero, like `rate: 200`",
                    );
                    None
                }
                None => None,
            }
        }
        (None, Some(r)) => {
            let rp = format!("{path}.ramp");
            let from = cx
                .required(&format!("{rp}.from"), &r.from, "this ramp", "10")
                .map(|_| ())
                .and_then(|_| rate_of(cx, &format!("{rp}.from"), &r.from, "10"));
            let to = cx
                .required(&format!("{rp}.to"), &r.to, "this ramp", "200")
                .map(|_| ())
                .and_then(|_| rate_of(cx, &format!("{rp}.to"), &r.to, "200"));
            let over = match &r.over {
                None => duration,
                Some(_) => cx.duration(&format!("{rp}.over"), &r.over, None),
            };
            if let (Some(o), Some(d)) = (over, duration)
                && (o.is_zero() || o > d)
            {
                cx.at(
                    &format!("{rp}.over"),
                    format!(
                        "the ramp lasts {} but the step {}",
                        humantime::format_duration(o),
                        humantime::format_duration(d)
                    ),
                    "give `over` a duration above zero and at most the step's (or leave it out: the ramp then spans the step)",
                );
                return None;
            }
            match (from, to, over) {
                (Some(f), Some(t), Some(o)) if f > 0.0 || t > 0.0 => Some(Schedule::Ramp {
                    from: f,
                    to: t,
                    over: o,
                }),
                (Some(_), Some(_), Some(_)) => {
                    cx.at(
                        &rp,
                        "this ramp goes from 0 to 0 and sends nothing",
                        "ramp to a rate above zero, like `to: 200`",
                    );
                    None
                }
                _ => None,
            }
        }
    };
    let url_path = http_path(cx, &format!("{path}.path"), &s.path);
    let method = http_method(cx, &format!("{path}.method"), &s.method, "GET");
    let connections = match &s.connections {
        None => Some(10),
        Some(_) => {
            let p = format!("{path}.connections");
            match cx.uint(&p, &s.connections, "10") {
                Some(n) if (1..=MAX_LOAD_CONNECTIONS).contains(&n) => Some(n as usize),
                Some(n) => {
                    cx.at(
                        &p,
                        format!("`connections: {n}` is outside 1..{MAX_LOAD_CONNECTIONS}"),
                        "use a handful per core of the target, like `connections: 10`",
                    );
                    None
                }
                None => None,
            }
        }
    };
    let tp = format!("{path}.timeout");
    let timeout = cx.duration(&tp, &s.timeout, Some(Duration::from_secs(5)));
    if timeout == Some(Duration::ZERO) {
        cx.at(
            &tp,
            "`timeout: 0s` fails every request",
            "give requests time, like `timeout: 5s`",
        );
        return None;
    }
    let mut headers = BTreeMap::new();
    for (k, v) in s.headers.iter().flatten() {
        let hp = format!("{path}.headers.{k}");
        if hyper::header::HeaderName::from_bytes(k.trim().as_bytes()).is_err() {
            cx.at_key(
                &hp,
                format!("`{k}` is not a valid header name"),
                "header names are letters, digits and `-`, like `x-request-source`",
            );
        } else if hyper::header::HeaderValue::from_str(v).is_err() {
            cx.at(
                &hp,
                format!("the value of header `{k}` has characters HTTP headers cannot carry"),
                "use visible ASCII text (no line breaks)",
            );
        } else {
            headers.insert(k.trim().to_string(), v.clone());
        }
    }
    let mut thresholds = Vec::new();
    let mut thresholds_ok = true;
    for (i, t) in s.thresholds.iter().flatten().enumerate() {
        match crate::load::Threshold::parse(t) {
            Ok(t) => thresholds.push(t),
            Err(e) => {
                cx.at(&format!("{path}.thresholds[{i}]"), e.message, e.hint);
                thresholds_ok = false;
            }
        }
    }
    let base = base?;
    if !base.starts_with("http://") {
        cx.at(
            &format!("{path}.target"),
            format!("endpoint `{base}` is not plain http"),
            "the load generator speaks HTTP/1.1 without TLS; point the step at an http:// endpoint",
        );
        return None;
    }
    let spec = FaultSpec::Load {
        url: join_url(base, &url_path?),
        method: method?,
        headers,
        body: s.body.clone(),
        schedule: schedule?,
        connections: connections?,
        timeout: timeout?,
        thresholds,
    };
    if !thresholds_ok {
        return None;
    }
    if let Some(plan) = spec.load_plan(duration.unwrap_or_default())
        && let Err(e) = crate::load::check(&plan)
    {
        cx.at(
            &format!("{path}.target"),
            e.to_string(),
            "fix the endpoint's URL in the operator config, or the step's path",
        );
        return None;
    }
    Some(spec)
}

/// Two faults at the same time on one target and direction, or `down` with anything else on
/// that target, would fight each other.
fn overlaps(cx: &mut Cx) {
    let faults = std::mem::take(&mut cx.faults);
    for (j, (path_b, group_b, b)) in faults.iter().enumerate() {
        let Some(g) = group_b else { continue };
        for (_, group_a, a) in faults[..j].iter() {
            if group_a != &Some(*g) || a.target != b.target {
                continue;
            }
            let (ta, da, tb, db) = match (&a.fault, &b.fault) {
                (
                    FaultSpec::Network {
                        toxic: ta,
                        direction: da,
                        ..
                    },
                    FaultSpec::Network {
                        toxic: tb,
                        direction: db,
                        ..
                    },
                ) => (ta, da, tb, db),
                (FaultSpec::Process { .. }, FaultSpec::Process { .. }) => {
                    // One step's revert (SIGCONT, restart) would undo the other's fault.
                    cx.at(
                        &format!("{path_b}.target"),
                        format!(
                            "steps `{}` and `{}` signal the processes of `{}` at the same time",
                            a.name, b.name, b.target
                        ),
                        "run process faults on one target one after the other",
                    );
                    continue;
                }
                _ => continue,
            };
            let down = matches!(ta, ToxicKind::Down) || matches!(tb, ToxicKind::Down);
            if down {
                cx.at(
                    &format!("{path_b}.target"),
                    format!(
                        "steps `{}` and `{}` run at the same time on `{}`, and one of them is `down`",
                        a.name, b.name, b.target
                    ),
                    "a target that is down has no traffic for another fault to act on; run them one after the other",
                );
            } else if da == db {
                cx.at(
                    &format!("{path_b}.target"),
                    format!(
                        "steps `{}` and `{}` run at the same time on `{}` ({da})",
                        a.name, b.name, b.target
                    ),
                    "two faults on one target and direction overlap; run them one after the other, or use the other direction",
                );
            }
        }
    }
    cx.faults = faults;
}

fn stop_condition(
    cx: &mut Cx,
    path: &str,
    s: &RawStopCondition,
    probes: &[String],
) -> Option<StopCondition> {
    if s.load.is_some() || s.threshold.is_some() || cx.loc.has(&format!("{path}.load")) {
        return load_stop_condition(cx, path, s);
    }
    let probe = cx
        .required(
            &format!("{path}.probe"),
            &s.probe,
            "this stop condition",
            "checkout-ok",
        )
        .map(str::to_string);
    let probe = probe.and_then(|p| {
        if probes.contains(&p) {
            return Some(p);
        }
        let hint = match did_you_mean(&p, probes.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if probes.is_empty() => "declare the probe under `hypothesis.probes` first".into(),
            None => format!("probes of this experiment: {}", probes.join(", ")),
        };
        cx.at(
            &format!("{path}.probe"),
            format!("stop condition names probe `{p}`, which does not exist"),
            hint,
        );
        None
    });
    let rule = match (&s.consecutive_failures, &s.failure_ratio) {
        (Some(_), Some(_)) => {
            cx.at_key(
                &format!("{path}.failure_ratio"),
                "a stop condition has either `consecutive_failures` or `failure_ratio`, not both",
                "split it into two stop conditions on the same probe",
            );
            None
        }
        (None, None) => {
            if !cx.loc.has(&format!("{path}.consecutive_failures"))
                && !cx.loc.has(&format!("{path}.failure_ratio"))
            {
                cx.at(
                    path,
                    "this stop condition has no rule",
                    "add `consecutive_failures: 5`, or `failure_ratio: 0.5` with `window: 10s`",
                );
            }
            None
        }
        (Some(_), None) => {
            for k in ["window", "min_samples"] {
                if cx.loc.has(&format!("{path}.{k}")) {
                    cx.at_key(
                        &format!("{path}.{k}"),
                        format!("`{k}` applies to `failure_ratio`, not `consecutive_failures`"),
                        "remove it, or use `failure_ratio` instead",
                    );
                }
            }
            let n = cx.uint(
                &format!("{path}.consecutive_failures"),
                &s.consecutive_failures,
                "5",
            );
            match n {
                Some(0) => {
                    cx.at(
                        &format!("{path}.consecutive_failures"),
                        "`consecutive_failures: 0` would stop the run before any sample",
                        "use 1 or more, like `consecutive_failures: 5`",
                    );
                    None
                }
                Some(n) => Some(StopRule::ConsecutiveFailures(
                    u32::try_from(n).unwrap_or(u32::MAX),
                )),
                None => None,
            }
        }
        (None, Some(_)) => {
            let ratio = cx.ratio(&format!("{path}.failure_ratio"), &s.failure_ratio, 0.0);
            let wpath = format!("{path}.window");
            let window = if s.window.is_none() {
                cx.required(
                    &wpath,
                    &s.window,
                    "this failure_ratio stop condition",
                    "10s",
                );
                None
            } else {
                cx.duration(&wpath, &s.window, None)
            };
            if window == Some(Duration::ZERO) {
                cx.at(&wpath, "`window` is zero", "use a window like 10s");
            }
            let min = match &s.min_samples {
                None => Some(5),
                Some(_) => cx.uint(&format!("{path}.min_samples"), &s.min_samples, "5"),
            };
            if min == Some(0) {
                cx.at(
                    &format!("{path}.min_samples"),
                    "`min_samples: 0` would judge an empty window",
                    "use 1 or more (default 5)",
                );
            }
            match (ratio, window, min) {
                (Some(ratio), Some(window), Some(m)) if !window.is_zero() && m > 0 => {
                    Some(StopRule::FailureRatio {
                        ratio,
                        window,
                        min_samples: u32::try_from(m).unwrap_or(u32::MAX),
                    })
                }
                _ => None,
            }
        }
    };
    Some(StopCondition {
        probe: probe?,
        rule: rule?,
    })
}

/// `- load: <load step>` with `threshold: "error_rate < 20%"`: halts the run when one second
/// of that step breaches the threshold.
fn load_stop_condition(cx: &mut Cx, path: &str, s: &RawStopCondition) -> Option<StopCondition> {
    for (key, present) in [
        ("probe", s.probe.is_some()),
        ("consecutive_failures", s.consecutive_failures.is_some()),
        ("failure_ratio", s.failure_ratio.is_some()),
        ("window", s.window.is_some()),
        ("min_samples", s.min_samples.is_some()),
    ] {
        if present {
            cx.at_key(
                &format!("{path}.{key}"),
                format!("a `load` stop condition takes no `{key}`"),
                "a load stop condition is `load: <step name>` with `threshold: \"error_rate < 20%\"`; put probe rules in their own stop condition",
            );
        }
    }
    let step = cx
        .required(
            &format!("{path}.load"),
            &s.load,
            "this stop condition",
            "api-load",
        )
        .map(str::to_string);
    let loads = cx.load_steps.clone();
    let step = step.and_then(|name| {
        if loads.contains(&name) {
            return Some(name);
        }
        let message = if cx.step_names.contains_key(&name) {
            format!("step `{name}` is not a load step")
        } else {
            format!("stop condition names load step `{name}`, which does not exist")
        };
        let hint = match did_you_mean(&name, loads.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if loads.is_empty() => "add a step with `fault: load` to the method first".into(),
            None => format!("load steps of this experiment: {}", loads.join(", ")),
        };
        cx.at(&format!("{path}.load"), message, hint);
        None
    });
    let tp = format!("{path}.threshold");
    let threshold = cx
        .required(
            &tp,
            &s.threshold,
            "this load stop condition",
            "\"error_rate < 20%\"",
        )
        .map(str::to_string)
        .and_then(|t| match crate::load::Threshold::parse(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.at(&tp, e.message, e.hint);
                None
            }
        });
    Some(StopCondition {
        probe: step?,
        rule: StopRule::LoadThreshold(threshold?),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::spec::parse_experiment;

    fn cfg() -> Config {
        Config::from_toml(
            "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n",
        )
        .unwrap()
    }

    fn problems(text: &str) -> Vec<String> {
        let err = parse_experiment(text, "t.yaml", &cfg(), &[]).unwrap_err();
        err.problems.iter().map(|p| p.to_string()).collect()
    }

    const HEAD: &str = "name: x\ntitle: t\nowner: o\nhypothesis:\n  probes:\n    - {name: p, tcp: {target: payments}}\n";

    #[test]
    fn wrong_shapes_are_located_and_the_rest_still_checked() {
        let ps = problems(&format!(
            "{HEAD}tags: payments\nmethod:\n  - {{name: a, target: payments, fault: down, duration: 1s}}\n  - wait: {{x: 1}}\n  - name: b\n    target: payments\n    fault: down\n    duration: 1s\n    toxicity: [1]\n"
        ));
        assert_eq!(ps.len(), 3, "{ps:#?}");
        assert!(
            ps[0].starts_with("t.yaml:7:7: expected a sequence, found string"),
            "{ps:#?}"
        );
        assert!(
            ps[1].starts_with("t.yaml:10:12: expected a string, found a map"),
            "{ps:#?}"
        );
        assert!(ps[2].starts_with("t.yaml:15:15:"), "{ps:#?}");
    }

    #[test]
    fn wait_steps_take_nothing_else() {
        let ps = problems(&format!("{HEAD}method:\n  - wait: 5s\n    name: w\n"));
        assert_eq!(ps.len(), 1, "{ps:#?}");
        assert!(
            ps[0].starts_with("t.yaml:9:5: a `wait` step takes no `name`"),
            "{ps:#?}"
        );
    }

    #[test]
    fn whole_scalar_parameters_stay_numbers_and_text_is_spliced() {
        let text = format!(
            "{HEAD}parameters:\n  n: {{type: integer, default: 5}}\n  who: {{type: string, default: ops}}\ndescription: \"owned by ${{who}}\"\nmethod:\n  - {{name: a, target: payments, fault: bandwidth, rate_kbps: \"${{n}}\", duration: 1s}}\nstop_conditions:\n  - probe: p\n    consecutive_failures: ${{n}}\n"
        );
        let e = parse_experiment(&text, "t.yaml", &cfg(), &[]).unwrap();
        assert_eq!(e.description, "owned by ops");
        assert_eq!(
            e.stop_conditions[0].rule,
            crate::spec::model::StopRule::ConsecutiveFailures(5)
        );
    }

    fn load_problems(method: &str, stops: &str) -> Vec<String> {
        let cfg = Config::from_toml(
            "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n[[targets.http]]\nname = \"shop\"\nurl = \"http://127.0.0.1:18080\"\n[[targets.http]]\nname = \"secure\"\nurl = \"https://127.0.0.1:18443\"\n",
        )
        .unwrap();
        let text = format!("{HEAD}method:\n{method}{stops}");
        match parse_experiment(&text, "t.yaml", &cfg, &[]) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn load_steps_parse_into_the_model() {
        let cfg = Config::from_toml(
            "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n[[targets.http]]\nname = \"shop\"\nurl = \"http://127.0.0.1:18080/\"\n",
        )
        .unwrap();
        let text = format!(
            "{HEAD}method:\n  - name: l\n    target: shop\n    fault: load\n    path: /search?q=1\n    method: post\n    headers: {{x-a: b}}\n    body: hi\n    ramp: {{from: 10, to: 100}}\n    thresholds: [\"p99 < 300ms\", \"error_rate < 1%\"]\n    duration: 10s\nstop_conditions:\n  - load: l\n    threshold: \"error_rate < 20%\"\n"
        );
        let e = parse_experiment(&text, "t.yaml", &cfg, &[]).unwrap();
        let f = e.fault_steps()[0].clone();
        let crate::spec::model::FaultSpec::Load {
            url,
            method,
            headers,
            schedule,
            connections,
            thresholds,
            ..
        } = &f.fault
        else {
            panic!("{f:?}")
        };
        assert_eq!(url, "http://127.0.0.1:18080/search?q=1");
        assert_eq!(method, "POST");
        assert_eq!(headers["x-a"], "b");
        assert_eq!(*connections, 10);
        assert_eq!(thresholds.len(), 2);
        assert_eq!(
            *schedule,
            crate::load::Schedule::Ramp {
                from: 10.0,
                to: 100.0,
                over: std::time::Duration::from_secs(10)
            }
        );
        assert!(matches!(
            e.stop_conditions[0].rule,
            crate::spec::model::StopRule::LoadThreshold(_)
        ));
    }

    #[test]
    fn load_mistakes_are_located_with_hints() {
        let ps = load_problems(
            "  - name: l\n    target: shop\n    fault: load\n    rate: 10\n    thresholds: [\"p99 < 300ms\", \"eror_rate < 1%\"]\n    duration: 5s\n",
            "stop_conditions:\n  - load: lod\n    threshold: \"p99 < soon\"\n",
        );
        assert_eq!(ps.len(), 3, "{ps:#?}");
        assert!(
            ps[0].starts_with("t.yaml:12:33: `eror_rate` is not a load metric")
                && ps[0].contains("did you mean `error_rate`?"),
            "{ps:#?}"
        );
        assert!(
            ps[1].contains("load step `lod`, which does not exist")
                && ps[1].contains("did you mean `l`?"),
            "{ps:#?}"
        );
        assert!(ps[2].contains("p99 < soon"), "{ps:#?}");

        let ps = load_problems(
            "  - {name: l, target: payments, fault: load, rate: 10, duration: 5s}\n  - {name: m, target: secure, fault: load, ramp: {from: 1, to: 2}, rate: 3, duration: 5s}\n  - {name: n, target: shop, fault: load, toxicity: 1, duration: 5s}\n  - {name: o, target: shop, fault: load, rate: 1, latency: 1s, duration: 5s}\n",
            "",
        );
        let all = ps.join("\n");
        assert!(
            all.contains(
                "`payments` is a proxy target; load steps call a declared [[targets.http]] endpoint"
            ),
            "{all}"
        );
        assert!(all.contains("either `rate` or `ramp`, not both"), "{all}");
        assert!(
            all.contains("`toxicity` is not an attribute of a `load` fault"),
            "{all}"
        );
        assert!(
            all.contains("a `load` fault needs `rate` or `ramp`"),
            "{all}"
        );
        assert!(
            all.contains("`latency` is not an attribute of a `load` fault"),
            "{all}"
        );
        assert!(all.contains("not plain http"), "{all}");
    }
}
