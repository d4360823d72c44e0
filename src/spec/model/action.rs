//! One-shot activities: HTTP calls and declared commands run once as a method step or a
//! rollback, the expectations a probe's output is judged by, and how the hypothesis samples.
//! These carry Chaos Toolkit's semantics (see `chaosbot import chaostoolkit`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A declared `[[targets.command]]`, resolved: what runs is the operator's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    pub target: String,
    /// Program and arguments (empty when `shell` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

impl CommandRun {
    pub fn display(&self) -> String {
        match &self.shell {
            Some(s) => s.clone(),
            None => self.argv.join(" "),
        }
    }
}

/// An HTTP request made once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    pub url: String,
    #[serde(default, skip_serializing_if = "crate::tls::TlsOptions::is_default")]
    pub tls: crate::tls::TlsOptions,
    pub method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The endpoint's own headers (templates, read when the request is made).
    #[serde(
        default,
        skip_serializing_if = "crate::config::HeaderTemplates::is_empty"
    )]
    pub endpoint_headers: crate::config::HeaderTemplates,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What a method action step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Http(HttpCall),
    Command(CommandRun),
}

impl Action {
    /// The declared target the action uses (endpoint URL for http, the command's name).
    pub fn describe(&self) -> String {
        match self {
            Action::Http(h) => format!("{} {}", h.method, h.url),
            Action::Command(c) => format!("`{}` ({})", c.display(), c.target),
        }
    }
}

/// A method step that runs one action once. Its failure (no answer, a timeout, a command that
/// cannot start) is journalled and the method goes on, as in Chaos Toolkit; an answer with any
/// status or exit code is a success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStep {
    pub name: String,
    pub action: Action,
    #[serde(with = "crate::spec::duration_serde")]
    pub timeout: Duration,
}

/// How a probe's output is judged (instead of `status`/`body_contains`). The output is a
/// mapping: `{status, headers, body}` for http (the body parsed when the answer says
/// `Content-Type: application/json`), `{status, stdout, stderr}` for a command, `status` being
/// the exit code. The forms are Chaos Toolkit's tolerances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// `status` is one of these (a status code or an exit code).
    Status(Vec<i64>),
    /// The whole output equals this value (never true of a mapping: kept for fidelity).
    Equals(serde_json::Value),
    /// `pattern` is found in the text of `target` (`body`, `stdout`, ...).
    Regex { target: String, pattern: String },
    /// The JSON path matches in `target` (the whole output without one): at least once, or
    /// `count` times, or its matches equal `values`.
    JsonPath {
        target: Option<String>,
        path: String,
        values: Option<Vec<serde_json::Value>>,
        count: Option<u64>,
    },
    /// The number in `target` lies within [min, max].
    Range { target: String, min: f64, max: f64 },
}

/// When the hypothesis probes sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Once before the method, at every interval while it runs, and again after the revert.
    #[default]
    Continuous,
    /// Once before the method and once right after it (faults still in place), in order,
    /// stopping at the first failure: the hypothesis holds when that last round passes
    /// (Chaos Toolkit's steady-state hypothesis).
    BeforeAfter,
}
