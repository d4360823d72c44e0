//! Rollbacks: extra actions (an HTTP request to a declared endpoint) run after the faults
//! are removed.

use super::cx::Cx;
use crate::spec::model::{Rollback, RollbackAction};
use crate::spec::raw::{RawHttpAction, RawRollback};

/// `rollbacks: [{name, http: {...}}]`.
pub(super) fn rollbacks(cx: &mut Cx, raw: &[RawRollback]) -> Vec<Rollback> {
    let mut rollbacks = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("rollbacks[{i}]");
        let name = cx.required(
            &format!("{path}.name"),
            &r.name,
            "this rollback",
            "flush-cache",
        );
        if let Some(n) = name {
            if names.iter().any(|x| x == n) {
                cx.at(
                    &format!("{path}.name"),
                    format!("rollback name `{n}` is used twice"),
                    "give every rollback its own name",
                );
            }
            names.push(n.to_string());
        }
        let action = match (&r.http, &r.command) {
            (Some(_), Some(_)) => {
                cx.at_key(
                    &format!("{path}.command"),
                    "a rollback has either `http` or `command`, not both",
                    "split it into two rollbacks with their own names",
                );
                None
            }
            (None, None) => {
                if !cx.loc.has(&format!("{path}.http")) && !cx.loc.has(&format!("{path}.command")) {
                    cx.at(
                        &path,
                        "this rollback has no action",
                        "add `http: {endpoint: ..., path: ..., method: POST}` or `command: {target: ...}`",
                    );
                }
                None
            }
            (Some(h), None) => http_action(cx, &format!("{path}.http"), h),
            (None, Some(c)) => super::actions::command(cx, &format!("{path}.command"), c).map(
                |(command, timeout)| RollbackAction::Command {
                    command,
                    any_exit: r.any_exit.as_deref() == Some("true"),
                    timeout,
                },
            ),
        };
        if let (Some(n), Some(action)) = (name, action) {
            rollbacks.push(Rollback {
                name: n.to_string(),
                action,
            });
        }
    }
    rollbacks
}

fn http_action(cx: &mut Cx, hp: &str, h: &RawHttpAction) -> Option<RollbackAction> {
    let (call, expect_status, timeout) = super::actions::http_call(cx, hp, h, "POST", "rollbacks")?;
    Some(RollbackAction::Http {
        url: call.url,
        tls: call.tls,
        method: call.method,
        body: call.body,
        headers: call.headers,
        endpoint_headers: call.endpoint_headers,
        expect_status,
        timeout,
    })
}
