//! Stop conditions: probe rules (consecutive failures, a failure ratio over a window) and
//! load thresholds judged on one second of a load step.

use std::time::Duration;

use super::cx::Cx;
use crate::spec::did_you_mean;
use crate::spec::model::{StopCondition, StopRule};
use crate::spec::raw::RawStopCondition;

/// `stop_conditions: [...]`; `probes` are the probe names of the hypothesis.
pub(super) fn stop_conditions(
    cx: &mut Cx,
    raw: &[RawStopCondition],
    probes: &[String],
) -> Vec<StopCondition> {
    let mut stops = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        if let Some(c) = stop_condition(cx, &format!("stop_conditions[{i}]"), s, probes) {
            stops.push(c);
        }
    }
    stops
}

/// One stop condition: a probe rule, or a load threshold.
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
    let rule = probe_rule(cx, path, s);
    Some(StopCondition {
        probe: probe?,
        rule: rule?,
    })
}

/// Exactly one probe rule: `consecutive_failures` or `failure_ratio`.
fn probe_rule(cx: &mut Cx, path: &str, s: &RawStopCondition) -> Option<StopRule> {
    match (&s.consecutive_failures, &s.failure_ratio) {
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
        (Some(_), None) => consecutive_rule(cx, path, s),
        (None, Some(_)) => ratio_rule(cx, path, s),
    }
}

/// `consecutive_failures: 5` (`window` and `min_samples` belong to the ratio rule).
fn consecutive_rule(cx: &mut Cx, path: &str, s: &RawStopCondition) -> Option<StopRule> {
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

/// `failure_ratio: 0.5` over a `window` of at least `min_samples` samples.
fn ratio_rule(cx: &mut Cx, path: &str, s: &RawStopCondition) -> Option<StopRule> {
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

/// `- load: <load step>` with `threshold: "error_rate < 20%"`: halts the run when one second
/// of that step breaches the threshold.
fn load_stop_condition(cx: &mut Cx, path: &str, s: &RawStopCondition) -> Option<StopCondition> {
    // Every key of a stop condition but the two of a load condition.
    for key in cx.given::<RawStopCondition>(path) {
        if key == "load" || key == "threshold" {
            continue;
        }
        cx.at_key(
            &format!("{path}.{key}"),
            format!("a `load` stop condition takes no `{key}`"),
            "a load stop condition is `load: <step name>` with `threshold: \"error_rate < 20%\"`; put probe rules in their own stop condition",
        );
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
