//! One-shot activities: action steps (an http call or a declared command, run once), the
//! `command` of probes and rollbacks, and the `expect` that judges a probe's output.

use std::time::Duration;

use super::cx::{Cx, http_method, http_path, join_url, list_suffix};
use crate::config::DEFAULT_COMMAND_TIMEOUT;
use crate::spec::did_you_mean;
use crate::spec::model::{Action, ActionStep, CommandRun, Expect, HttpCall, Step};
use crate::spec::raw::{OneOrMany, RawCommand, RawExpect, RawHttpAction, RawStep};

/// `command: {target}`: a declared `[[targets.command]]`, with its timeout.
pub(super) fn command(cx: &mut Cx, path: &str, c: &RawCommand) -> Option<(CommandRun, Duration)> {
    let timeout = cx.duration(
        &format!("{path}.timeout"),
        &c.timeout,
        Some(DEFAULT_COMMAND_TIMEOUT),
    );
    let name = cx
        .required(
            &format!("{path}.target"),
            &c.target,
            "this command",
            "restart-db",
        )?
        .to_string();
    let Some(t) = cx.cfg.command_target(&name) else {
        let names: Vec<&str> = cx
            .cfg
            .targets
            .command
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let hint = match did_you_mean(&name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "commands run only when the operator declares them under [[targets.command]]{}",
                list_suffix(&names)
            ),
        };
        cx.at(
            &format!("{path}.target"),
            format!("command `{name}` is not declared in the operator config"),
            hint,
        );
        return None;
    };
    let run = CommandRun {
        target: name,
        argv: t.argv.clone(),
        shell: t.shell.clone(),
    };
    Some((run, timeout?))
}

/// An http call to a declared endpoint: the call, its accepted codes (empty: any) and timeout.
pub(super) fn http_call(
    cx: &mut Cx,
    hp: &str,
    h: &RawHttpAction,
    default_method: &str,
    what: &str,
) -> Option<(HttpCall, Vec<u16>, Duration)> {
    let status = match &h.status {
        Some(OneOrMany(v)) if v.len() == 1 && v[0].trim() == "any" => Vec::new(),
        other => cx.status(&format!("{hp}.status"), other),
    };
    let timeout = cx.duration(
        &format!("{hp}.timeout"),
        &h.timeout,
        Some(Duration::from_secs(5)),
    );
    let url = cx
        .required(&format!("{hp}.endpoint"), &h.endpoint, what, "shop")
        .map(str::to_string)
        .and_then(|e| cx.endpoint(&format!("{hp}.endpoint"), &e, what));
    let url_path = http_path(cx, &format!("{hp}.path"), &h.path);
    let method = http_method(cx, &format!("{hp}.method"), &h.method, default_method);
    let call = HttpCall {
        url: join_url(&url?, &url_path?),
        tls: cx.endpoint_tls(h.endpoint.as_deref()),
        method: method?,
        headers: h.headers.clone().unwrap_or_default(),
        endpoint_headers: cx.endpoint_headers(h.endpoint.as_deref()),
        body: h.body.clone(),
    };
    Some((call, status, timeout?))
}

/// A method step with `http:` or `command:`: the action runs once.
pub(super) fn action_step(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Step> {
    let name = cx.required(&format!("{path}.name"), &s.name, "this step", "call-api");
    if let Some(n) = name {
        cx.unique_step_name(&format!("{path}.name"), n);
    }
    for k in cx.given::<RawStep>(path) {
        if !matches!(k, "name" | "http" | "command") {
            cx.at_key(
                &format!("{path}.{k}"),
                format!("an action step takes no `{k}`"),
                "an action step is `name` with one `http: {...}` or `command: {target: ...}`; put a fault in its own step",
            );
        }
    }
    let (action, timeout) = match (&s.http, &s.command) {
        (Some(_), Some(_)) => {
            cx.at_key(
                &format!("{path}.command"),
                "an action step has either `http` or `command`, not both",
                "split it into two steps with their own names",
            );
            return None;
        }
        (Some(h), None) => {
            let (call, _, t) = http_call(cx, &format!("{path}.http"), h, "GET", "action steps")?;
            (Action::Http(call), t)
        }
        (None, Some(c)) => {
            let (run, t) = command(cx, &format!("{path}.command"), c)?;
            (Action::Command(run), t)
        }
        (None, None) => return None,
    };
    Some(Step::Action(ActionStep {
        name: name?.to_string(),
        action,
        timeout,
    }))
}

/// `expect: {...}` on a probe: exactly one form.
pub(super) fn expect(cx: &mut Cx, path: &str, e: &RawExpect) -> Option<Expect> {
    let forms: Vec<&str> = [
        ("status", e.status.is_some()),
        ("equals", e.equals.is_some()),
        ("regex", e.regex.is_some()),
        ("jsonpath", e.jsonpath.is_some()),
        ("range", e.range.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if forms.len() != 1 {
        cx.at(
            path,
            format!(
                "`expect` needs exactly one of status, equals, regex, jsonpath or range (it has {})",
                if forms.is_empty() { "none".to_string() } else { forms.join(", ") }
            ),
            "e.g. `expect: {status: [200]}` or `expect: {regex: \"ok\", target: body}`",
        );
        return None;
    }
    let target = e.target.clone();
    let need_target = |cx: &mut Cx, form: &str| -> Option<String> {
        if target.is_none() {
            cx.at(
                path,
                format!("`expect: {{{form}: ...}}` needs `target`"),
                "name the part of the output to test: `body`, `status`, `headers`, `stdout` or `stderr`",
            );
        }
        target.clone()
    };
    let json = |cx: &mut Cx, key: &str, text: &str| -> Option<serde_json::Value> {
        match serde_json::from_str(text) {
            Ok(v) => Some(v),
            Err(err) => {
                cx.at(
                    &format!("{path}.{key}"),
                    format!("`{key}` is not JSON text: {err}"),
                    "quote JSON text, like `values: '[1, \"a\"]'`",
                );
                None
            }
        }
    };
    match forms[0] {
        "status" => {
            let OneOrMany(list) = e.status.clone()?;
            let mut codes = Vec::new();
            for s in &list {
                match s.trim().parse::<i64>() {
                    Ok(c) => codes.push(c),
                    Err(_) => cx.at(
                        &format!("{path}.status"),
                        format!("`{s}` is not a status code or exit code"),
                        "write whole numbers, like `status: [0]` or `status: [200, 204]`",
                    ),
                }
            }
            (codes.len() == list.len()).then_some(Expect::Status(codes))
        }
        "equals" => Some(Expect::Equals(json(cx, "equals", e.equals.as_deref()?)?)),
        "regex" => {
            let pattern = e.regex.clone()?;
            if let Err(err) = regex::Regex::new(&pattern) {
                cx.at(
                    &format!("{path}.regex"),
                    format!("the pattern does not compile: {err}"),
                    "write a regular expression (Rust's regex syntax, close to Python's `re`)",
                );
                return None;
            }
            Some(Expect::Regex {
                target: need_target(cx, "regex")?,
                pattern,
            })
        }
        "jsonpath" => {
            let p = e.jsonpath.clone()?;
            if let Err(err) = serde_json_path::JsonPath::parse(&p) {
                cx.at(
                    &format!("{path}.jsonpath"),
                    format!("`{p}` is not a JSON path: {err}"),
                    "write it like `$.items[0].status`",
                );
                return None;
            }
            let values = match e.values.as_deref() {
                None => None,
                Some(t) => match json(cx, "values", t)? {
                    serde_json::Value::Array(a) => Some(a),
                    v => Some(vec![v]),
                },
            };
            let count = match &e.count {
                None => None,
                Some(_) => Some(cx.uint(&format!("{path}.count"), &e.count, "1")?),
            };
            Some(Expect::JsonPath {
                target,
                path: p,
                values,
                count,
            })
        }
        _ => {
            let r = e.range.clone()?;
            let nums: Vec<f64> = r.iter().filter_map(|x| x.trim().parse().ok()).collect();
            if r.len() != 2 || nums.len() != 2 || nums[0] > nums[1] {
                cx.at(
                    &format!("{path}.range"),
                    "`range` needs two numbers, the lower bound first",
                    "write it like `range: [0, 100]`",
                );
                return None;
            }
            Some(Expect::Range {
                target: need_target(cx, "range")?,
                min: nums[0],
                max: nums[1],
            })
        }
    }
}
