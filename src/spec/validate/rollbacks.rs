//! Rollbacks: extra actions (an HTTP request to a declared endpoint) run after the faults
//! are removed.

use std::time::Duration;

use super::cx::{Cx, http_method, http_path, join_url};
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
        let action = match &r.http {
            None => {
                if !cx.loc.has(&format!("{path}.http")) {
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
    rollbacks
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
        tls: cx.endpoint_tls(h.endpoint.as_deref()),
        method: method?,
        body: h.body.clone(),
        expect_status: status,
        timeout: timeout?,
    })
}
