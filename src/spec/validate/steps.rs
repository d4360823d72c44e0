//! The method: its steps in order (`wait`, `parallel` groups, fault steps), the keys and
//! target of each fault step, and faults that would fight each other when run together.
//! The attributes of each fault family are read in [`super::network`], [`super::host`] and
//! [`super::load`].

use std::time::Duration;

use super::cx::{Cx, list_suffix};
use super::{host, load, network};
use crate::spec::did_you_mean;
use crate::spec::model::{Direction, FaultSpec, FaultStep, Step, ToxicKind};
use crate::spec::raw::{
    FAULT_KINDS, NETWORK_STEP_KEYS, RawStep, STEP_KEYS, fault_attributes, target_kind_for,
};

/// `method: [...]`, then the overlap check of its parallel groups.
pub(super) fn method(cx: &mut Cx, raw: Option<&[RawStep]>) -> Vec<Step> {
    let mut method = Vec::new();
    let steps = raw.unwrap_or_default();
    if steps.is_empty() && !(raw.is_none() && cx.loc.has("method")) {
        let at = if cx.loc.has("method") { "method" } else { "" };
        cx.at(
            at,
            "the method has no steps",
            "add at least one fault step under `method:`",
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let path = format!("method[{i}]");
        if let Some(st) = step(cx, &path, s) {
            method.push(st);
        }
    }
    overlaps(cx);
    method
}

/// One step (its path says which parallel groups it runs in, for the overlap check).
fn step(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Step> {
    let is_wait = s.wait.is_some() || cx.loc.has(&format!("{path}.wait"));
    let is_parallel = s.parallel.is_some()
        || s.sequence.is_some()
        || cx.loc.has(&format!("{path}.parallel"))
        || cx.loc.has(&format!("{path}.sequence"));
    let is_action = s.http.is_some()
        || s.command.is_some()
        || cx.loc.has(&format!("{path}.http"))
        || cx.loc.has(&format!("{path}.command"));
    if is_wait || is_parallel {
        wait_or_group(cx, path, s, is_wait)
    } else if is_action {
        super::actions::action_step(cx, path, s)
    } else {
        fault_step(cx, path, s)
    }
}

/// `- wait: 5s`, `- parallel: [...]` or `- sequence: [...]`: nothing else may sit next to
/// any of them.
fn wait_or_group(cx: &mut Cx, path: &str, s: &RawStep, is_wait: bool) -> Option<Step> {
    let given: Vec<&str> = ["wait", "parallel", "sequence"]
        .into_iter()
        .filter(|k| cx.loc.has(&format!("{path}.{k}")))
        .collect();
    let what = if is_wait {
        "wait"
    } else if s.parallel.is_some() || cx.loc.has(&format!("{path}.parallel")) {
        "parallel"
    } else {
        "sequence"
    };
    if given.len() > 1 {
        cx.at_key(
            &format!("{path}.{}", given[1]),
            format!(
                "a step is one of `wait`, `parallel` or `sequence`, not `{}` and `{}`",
                given[0], given[1]
            ),
            "split it into two steps",
        );
    }
    for k in cx.given::<RawStep>(path) {
        if k == "wait" || k == "parallel" || k == "sequence" {
            continue;
        }
        cx.at_key(
            &format!("{path}.{k}"),
            format!("a `{what}` step takes no `{k}`"),
            if what == "wait" {
                "a wait step is only `- wait: 5s`; put the fault in its own step".to_string()
            } else {
                format!(
                    "list the steps under `{what}:`, each with its own name, target and duration"
                )
            },
        );
    }
    if is_wait {
        // None: the value had the wrong shape, reported already.
        let w = s.wait.clone()?;
        let d = cx.duration(&format!("{path}.wait"), &Some(w), None)?;
        return Some(Step::Wait { duration: d });
    }
    let inner = if what == "parallel" {
        s.parallel.as_deref()?
    } else {
        s.sequence.as_deref()?
    };
    if inner.is_empty() {
        let hint = if what == "parallel" {
            "list the steps that run at the same time under `parallel:`, or remove it"
        } else {
            "list the steps that run one after the other under `sequence:`, or remove it"
        };
        cx.at(
            &format!("{path}.{what}"),
            format!("this {what} group has no steps"),
            hint,
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, st) in inner.iter().enumerate() {
        match step(cx, &format!("{path}.{what}[{i}]"), st) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    let group = if what == "parallel" {
        Step::Parallel(out)
    } else {
        Step::Sequence(out)
    };
    ok.then_some(group)
}

/// Whether the steps at these two paths (`method[2].parallel[0].sequence[1]`) run at the same
/// time: where their paths part, they are two members of one parallel group (or one is held
/// while the other, in its `during`, runs).
fn concurrent(a: &str, b: &str) -> bool {
    // A step in a fault's `during` runs while that fault is held.
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long
        .strip_prefix(short)
        .is_some_and(|rest| rest.starts_with(".during["))
    {
        return true;
    }
    a.split('.')
        .zip(b.split('.'))
        .find(|(x, y)| x != y)
        .is_some_and(|(x, y)| x.starts_with("parallel[") && y.starts_with("parallel["))
}

/// A fault step: name, kind, target, duration, then the attributes of its kind.
fn fault_step(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Step> {
    let name = cx.required(
        &format!("{path}.name"),
        &s.name,
        "this step",
        "slow-payments",
    );
    if let Some(n) = name {
        cx.unique_step_name(&format!("{path}.name"), n);
    }
    let (kind, attrs) = fault_kind(cx, path, s);
    // Which kind of declared target the fault acts on (None: the kind is unknown).
    let wants = kind.as_deref().and_then(target_kind_for);
    let network = wants.is_none_or(|w| w == "proxy");
    let is_load = kind.as_deref().map(str::trim) == Some("load");
    if let (true, Some(n)) = (is_load, name) {
        cx.load_steps.push(n.to_string());
    }
    let (target, load_base) = step_target(cx, path, s, kind.as_deref(), wants, is_load);
    let direction = if network {
        network::direction(cx, path, s)
    } else {
        Some(Direction::Downstream)
    };
    let toxicity = if network {
        cx.ratio(&format!("{path}.toxicity"), &s.toxicity, 1.0)
    } else {
        Some(1.0)
    };
    let duration = step_duration(cx, path, s);

    let mut fault = None;
    if let (Some(k), Some(attrs)) = (kind.as_deref(), attrs) {
        let ok = attributes(cx, path, k, attrs, network);
        fault = if is_load {
            // Checked even when a key is wrong, so every problem of the step is reported.
            load::load_spec(cx, path, s, load_base.as_deref(), duration).filter(|_| ok)
        } else if !ok {
            None
        } else if !network {
            host::host_fault_spec(cx, path, k, s, target.as_deref())
        } else {
            network::toxic(cx, path, k, s).and_then(|toxic| {
                Some(FaultSpec::Network {
                    toxic,
                    direction: direction?,
                    toxicity: toxicity?,
                })
            })
        };
    }
    if let (
        Some(FaultSpec::Network {
            toxic, toxicity, ..
        }),
        Some(t),
    ) = (&fault, &target)
    {
        toxiproxy_equivalent(cx, path, t, toxic, *toxicity);
    }
    let fs = FaultStep {
        name: name?.to_string(),
        target: target?,
        duration: duration.filter(|d| !d.is_zero())?,
        fault: fault?,
    };
    cx.faults.push((path.to_string(), fs.clone()));
    held(cx, path, s, fs)
}

/// A fault step with `during: [...]` (and `revert`): held while those steps run.
fn held(cx: &mut Cx, path: &str, s: &RawStep, fault: FaultStep) -> Option<Step> {
    let at_close = match s.revert.as_deref().map(str::trim) {
        None | Some("after_during") => false,
        Some("at_close") => true,
        Some(other) => {
            cx.at(
                &format!("{path}.revert"),
                format!("unknown revert `{other}`"),
                "use `after_during` (the default: reverted when the `during` steps end) or `at_close` (reverted by the run's close, after the hypothesis' last round)",
            );
            return None;
        }
    };
    let Some(inner) = s.during.as_deref() else {
        if s.revert.is_some() {
            cx.at_key(
                &format!("{path}.revert"),
                "`revert` goes with `during`",
                "a fault step without `during` is reverted at the end of its duration; add `during: [...]` with the steps it is held for",
            );
            return None;
        }
        return Some(Step::Fault(fault));
    };
    let mut during = Vec::new();
    let mut ok = true;
    for (i, st) in inner.iter().enumerate() {
        match step(cx, &format!("{path}.during[{i}]"), st) {
            Some(x) => during.push(x),
            None => ok = false,
        }
    }
    ok.then_some(Step::Held {
        fault,
        during,
        at_close,
    })
}

/// A target on a Toxiproxy server takes what its API can express: `down` is the proxy's
/// `enabled: false`, which acts on every connection at once, so it has no `toxicity`.
fn toxiproxy_equivalent(cx: &mut Cx, path: &str, target: &str, toxic: &ToxicKind, toxicity: f64) {
    let Some(t) = cx.cfg.toxiproxy_target(target) else {
        return;
    };
    if matches!(toxic, ToxicKind::Down) && toxicity < 1.0 {
        let url = t.url.clone();
        cx.at(
            &format!("{path}.toxicity"),
            format!(
                "`down` with toxicity {toxicity} has no Toxiproxy equivalent (target `{target}` is a proxy on the Toxiproxy server at {url}, where `down` disables the whole proxy)"
            ),
            "remove `toxicity` (every connection goes down), or use `reset_peer` or `timeout` with a toxicity",
        );
    }
}

/// The attributes of a fault kind: (name, required).
type Attributes = &'static [(&'static str, bool)];

/// `fault: <kind>` and the attributes that kind takes (None: missing or unknown, reported).
fn fault_kind(cx: &mut Cx, path: &str, s: &RawStep) -> (Option<String>, Option<Attributes>) {
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
    (kind, attrs)
}

/// The step's target, and for a load step the URL of its endpoint. A load step aims at an
/// HTTP endpoint (its URL is the base of the requests); every other fault acts on a declared
/// target of its kind.
fn step_target(
    cx: &mut Cx,
    path: &str,
    s: &RawStep,
    kind: Option<&str>,
    wants: Option<&'static str>,
    is_load: bool,
) -> (Option<String>, Option<String>) {
    let tpath = format!("{path}.target");
    let target = cx
        .required(&tpath, &s.target, "this fault step", "payments")
        .map(str::to_string);
    if is_load {
        let base = target
            .as_deref()
            .and_then(|t| cx.endpoint(&tpath, t, "load steps"));
        (target.filter(|_| base.is_some()), base)
    } else {
        let target = target.and_then(|t| fault_target(cx, &tpath, &t, kind, wants));
        (target, None)
    }
}

/// `duration`: required, and above zero.
fn step_duration(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Duration> {
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
    duration
}

/// The keys the step gives, checked against the attributes of its kind `k` (`direction` and
/// `toxicity` belong to network faults only); required attributes must be there. False when
/// a key is wrong or missing.
fn attributes(
    cx: &mut Cx,
    path: &str,
    k: &str,
    attrs: &[(&'static str, bool)],
    network: bool,
) -> bool {
    let mut ok = true;
    for key in cx.given::<RawStep>(path) {
        let shared = STEP_KEYS.contains(&key) && (network || !NETWORK_STEP_KEYS.contains(&key));
        if shared || attrs.iter().any(|(a, _)| *a == key) {
            continue;
        }
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
    for (attr, required) in attrs {
        let apath = format!("{path}.{attr}");
        if *required && !cx.loc.has(&apath) && !cx.suggested.contains(&apath) {
            cx.at(
                path,
                format!("a `{k}` fault needs `{attr}`"),
                format!("add it, like `{attr}: {}`", example(attr)),
            );
            ok = false;
        }
    }
    ok
}

/// A value to show in "add it, like ..." for a required attribute.
fn example(attr: &str) -> &'static str {
    match attr {
        "latency" => "100ms",
        "rate_kbps" => "64",
        "timeout" => "5s",
        "delay" => "1s",
        "average_size" => "64",
        "bytes" => "1024",
        "percent" => "50",
        "mib_per_s" => "20",
        _ => "...",
    }
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
    let names = declared(cx, want);
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

/// The names of the declared targets of kind `want` ("process", "host", "disk", else proxy).
fn declared<'c>(cx: &Cx<'c>, want: &str) -> Vec<&'c str> {
    match want {
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
    }
}

/// Two faults at the same time on one target and direction, or `down` with anything else on
/// that target, would fight each other.
fn overlaps(cx: &mut Cx) {
    let faults = std::mem::take(&mut cx.faults);
    for (j, (path_b, b)) in faults.iter().enumerate() {
        for (path_a, a) in faults[..j].iter() {
            if !concurrent(path_a, path_b) || a.target != b.target {
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
