//! Load steps: HTTP load on a declared endpoint (rate or ramp, connections, headers, per-step
//! thresholds).

use std::collections::BTreeMap;
use std::time::Duration;

use super::cx::{Cx, http_method, http_path, join_url};
use crate::load::{Schedule, Threshold};
use crate::spec::model::FaultSpec;
use crate::spec::raw::{RawRamp, RawStep};

/// Highest rate a load step may ask for: above it, a typo is likelier than an intent.
pub const MAX_LOAD_RATE: f64 = 1_000_000.0;
/// Most connections one load step may open.
pub const MAX_LOAD_CONNECTIONS: u64 = 10_000;

/// The attributes of a `load` step. `base` is the endpoint's URL (None: already reported).
pub(super) fn load_spec(
    cx: &mut Cx,
    path: &str,
    s: &RawStep,
    base: Option<&str>,
    duration: Option<Duration>,
) -> Option<FaultSpec> {
    let schedule = schedule(cx, path, s, duration);
    let url_path = http_path(cx, &format!("{path}.path"), &s.path);
    let method = http_method(cx, &format!("{path}.method"), &s.method, "GET");
    let connections = connections(cx, path, s);
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
    let headers = headers(cx, path, s);
    let thresholds = thresholds(cx, path, s);
    let base = base?;
    let tls = cx.endpoint_tls(s.target.as_deref());
    let spec = FaultSpec::Load {
        url: join_url(base, &url_path?),
        tls: Box::new(tls.clone()),
        method: method?,
        headers,
        endpoint_headers: cx.endpoint_headers(s.target.as_deref()),
        body: s.body.clone(),
        schedule: schedule?,
        connections: connections?,
        timeout: timeout?,
        thresholds: thresholds?,
    };
    let load_tls = if base.starts_with("https://") {
        match crate::load::LoadTls::new(&tls) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.at(
                    &format!("{path}.target"),
                    e.to_string(),
                    "fix the endpoint's TLS settings in the operator config",
                );
                return None;
            }
        }
    } else {
        None
    };
    if let Some(plan) = spec.load_plan(duration.unwrap_or_default())
        && let Err(e) = crate::load::check_with_tls(&plan, load_tls.as_ref())
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

/// `rate: 200` (constant) or `ramp: {from, to, over}` (growing), exactly one of them.
fn schedule(cx: &mut Cx, path: &str, s: &RawStep, duration: Option<Duration>) -> Option<Schedule> {
    match (&s.rate, &s.ramp) {
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
        (None, Some(r)) => ramp(cx, &format!("{path}.ramp"), r, duration),
    }
}

/// `ramp: {from: 10, to: 500, over: 30s}`; `over` defaults to the step's duration.
fn ramp(cx: &mut Cx, rp: &str, r: &RawRamp, duration: Option<Duration>) -> Option<Schedule> {
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
                rp,
                "this ramp goes from 0 to 0 and sends nothing",
                "ramp to a rate above zero, like `to: 200`",
            );
            None
        }
        _ => None,
    }
}

/// Requests per second, within 0..[`MAX_LOAD_RATE`].
fn rate_of(cx: &mut Cx, p: &str, v: &Option<String>, ex: &str) -> Option<f64> {
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
}

/// `connections` (default 10), within 1..[`MAX_LOAD_CONNECTIONS`].
fn connections(cx: &mut Cx, path: &str, s: &RawStep) -> Option<usize> {
    match &s.connections {
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
    }
}

/// `headers: {name: value}`: names and values HTTP can carry.
fn headers(cx: &mut Cx, path: &str, s: &RawStep) -> BTreeMap<String, String> {
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
    headers
}

/// `thresholds: ["p99 < 300ms", ...]`, judged on the whole step; None when one is wrong.
fn thresholds(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Vec<Threshold>> {
    let mut thresholds = Vec::new();
    let mut thresholds_ok = true;
    for (i, t) in s.thresholds.iter().flatten().enumerate() {
        match Threshold::parse(t) {
            Ok(t) => thresholds.push(t),
            Err(e) => {
                cx.at(&format!("{path}.thresholds[{i}]"), e.message, e.hint);
                thresholds_ok = false;
            }
        }
    }
    thresholds_ok.then_some(thresholds)
}
