//! The hypothesis: its probes (http or tcp, of declared targets) and the recovery timeout.

use std::time::Duration;

use super::MIN_PROBE_INTERVAL;
use super::actions;
use super::cx::{Cx, http_method, http_path, join_url};
use crate::spec::did_you_mean;
use crate::spec::model::{Probe, ProbeKind, Sampling, Tolerance};
use crate::spec::raw::{RawHttpProbe, RawHypothesis, RawProbe, RawTcpProbe};

/// What the hypothesis gives the rest of the pass.
pub(super) struct Hypothesis {
    pub probes: Vec<Probe>,
    /// Every probe name given (valid probe or not), for stop conditions.
    pub names: Vec<String>,
    /// None: wrong and reported.
    pub recovery: Option<Duration>,
    pub sampling: Sampling,
}

/// `hypothesis: {recovery_timeout, probes: [...]}`.
pub(super) fn hypothesis(cx: &mut Cx, raw: Option<&RawHypothesis>) -> Hypothesis {
    let mut out = Hypothesis {
        probes: Vec::new(),
        names: Vec::new(),
        recovery: Some(Duration::from_secs(10)),
        sampling: Sampling::Continuous,
    };
    let Some(h) = raw else {
        if !cx.loc.has("hypothesis") {
            cx.at(
                "",
                "the experiment has no `hypothesis`",
                "add `hypothesis:` with at least one probe that shows the steady state",
            );
        }
        return out;
    };
    out.recovery = cx.duration(
        "hypothesis.recovery_timeout",
        &h.recovery_timeout,
        Some(Duration::from_secs(10)),
    );
    match h.sampling.as_deref().map(str::trim) {
        None | Some("continuous") => {}
        Some("before_after") => out.sampling = Sampling::BeforeAfter,
        Some(other) => cx.at(
            "hypothesis.sampling",
            format!("`sampling: {other}` is not a sampling mode"),
            "use `continuous` (the default) or `before_after`",
        ),
    }
    let list = h.probes.as_deref().unwrap_or_default();
    if list.is_empty() && !(h.probes.is_none() && cx.loc.has("hypothesis.probes")) {
        cx.at(
            "hypothesis.probes",
            "the hypothesis has no probes",
            "add at least one probe under `hypothesis.probes`, e.g. an http probe of a declared endpoint",
        );
    }
    for (i, p) in list.iter().enumerate() {
        let path = format!("hypothesis.probes[{i}]");
        if let Some(n) = p.name.as_deref() {
            if out.names.iter().any(|x| x == n) {
                cx.at(
                    &format!("{path}.name"),
                    format!("probe name `{n}` is used twice"),
                    "give every probe its own name; stop conditions refer to probes by name",
                );
            } else {
                out.names.push(n.to_string());
            }
        }
        if let Some(probe) = probe(cx, &path, p) {
            out.probes.push(probe);
        }
    }
    out
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
    let kind = probe_kind(cx, path, p);
    let expect = match &p.expect {
        None => None,
        Some(e) => Some(actions::expect(cx, &format!("{path}.expect"), e)?),
    };
    Some(Probe {
        name: name?.to_string(),
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        tolerance: Tolerance {
            max_failure_ratio: ratio?,
        },
        expect,
    })
}

/// `http`, `tcp` or `command`, exactly one of them.
fn probe_kind(cx: &mut Cx, path: &str, p: &RawProbe) -> Option<ProbeKind> {
    if let Some(c) = &p.command {
        if p.http.is_some() || p.tcp.is_some() {
            cx.at_key(
                &format!("{path}.command"),
                "a probe has one of `http`, `tcp` or `command`, not several",
                "split it into probes with their own names",
            );
            return None;
        }
        let (command, _) = actions::command(cx, &format!("{path}.command"), c)?;
        return Some(ProbeKind::Command { command });
    }
    match (&p.http, &p.tcp) {
        (Some(_), Some(_)) => {
            cx.at_key(
                &format!("{path}.tcp"),
                "a probe has either `http` or `tcp`, not both",
                "split it into two probes with their own names",
            );
            None
        }
        (None, None) => {
            if !cx.loc.has(&format!("{path}.http"))
                && !cx.loc.has(&format!("{path}.tcp"))
                && !cx.loc.has(&format!("{path}.command"))
            {
                cx.at(
                    path,
                    "this probe has neither `http` nor `tcp`",
                    "add `http: {endpoint: <declared endpoint>, path: /health}` or `tcp: {target: <declared target>}`",
                );
            }
            None
        }
        (Some(h), None) => http_probe(cx, &format!("{path}.http"), h),
        (None, Some(t)) => tcp_probe(cx, &format!("{path}.tcp"), t),
    }
}

fn http_probe(cx: &mut Cx, hp: &str, h: &RawHttpProbe) -> Option<ProbeKind> {
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
            tls: Box::new(cx.endpoint_tls(h.endpoint.as_deref())),
            method: m,
            headers: h.headers.clone().unwrap_or_default(),
            endpoint_headers: cx.endpoint_headers(h.endpoint.as_deref()),
            body: h.body.clone(),
            expect_status: status,
            max_latency,
            body_contains: h.body_contains.clone(),
        }),
        _ => None,
    }
}

fn tcp_probe(cx: &mut Cx, tp: &str, t: &RawTcpProbe) -> Option<ProbeKind> {
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

fn tcp_address(cx: &mut Cx, path: &str, name: &str) -> Option<String> {
    if let Some(p) = cx.cfg.proxy_target(name) {
        return Some(p.listen.to_string());
    }
    if let Some(t) = cx.cfg.toxiproxy_target(name) {
        let url = t.url.clone();
        cx.at(
            path,
            format!(
                "`{name}` is a proxy on the Toxiproxy server at {url}, whose listen address chaosbot does not know before a run"
            ),
            "probe it through a [[targets.http]] endpoint at the proxy's listen address, or write the tcp probe's `address: HOST:PORT`",
        );
        return None;
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
