//! The pass's context and the value checks every part shares: required values, durations,
//! shares, numbers, status codes, declared endpoints, HTTP paths and methods.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::ABSURD;
use crate::config::Config;
use crate::spec::locate::{Locations, fields_of};
use crate::spec::model::FaultStep;
use crate::spec::raw::OneOrMany;
use crate::spec::{Problem, did_you_mean, duration_serde};

/// One pass over an experiment: where things are, what the operator declared, and the
/// problems found so far.
pub(super) struct Cx<'a> {
    pub file: &'a str,
    pub loc: &'a Locations,
    pub cfg: &'a Config,
    pub problems: Vec<Problem>,
    /// Keys suggested for a misspelt key: not reported missing a second time.
    pub suggested: &'a HashSet<String>,
    /// Values serde already refused (unknown keys, wrong shapes): reported once, there.
    pub rejected: &'a HashSet<String>,
    pub step_names: HashMap<String, String>,
    /// Fault steps with their paths (which say the parallel groups they run in).
    pub faults: Vec<(String, FaultStep)>,
    /// Names of the steps with `fault: load` (valid or not), for load stop conditions.
    pub load_steps: Vec<String>,
}

impl Cx<'_> {
    /// The keys of the map at `path` that the file sets and the raw struct `T` accepts (in
    /// the struct's order): read from the located tree, checked against what serde reads.
    pub fn given<T: DeserializeOwned>(&self, path: &str) -> Vec<&'static str> {
        fields_of::<T>()
            .iter()
            .copied()
            .filter(|k| self.is_given(&format!("{path}.{k}")))
            .collect()
    }

    /// Whether the file sets the value at `path` (and serde took it).
    pub fn is_given(&self, path: &str) -> bool {
        self.loc.is_set(path) && !self.rejected.contains(path)
    }

    pub fn at(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let pos = self.loc.value(path);
        self.problems
            .push(Problem::at(self.file, pos, message, hint));
    }

    pub fn at_key(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let pos = self.loc.key(path);
        self.problems
            .push(Problem::at(self.file, pos, message, hint));
    }

    /// A required value; reports it missing (at the enclosing map) unless the file has it
    /// (then its shape was wrong and that is already reported).
    pub fn required<'v>(
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

    pub fn duration(
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

    pub fn ratio(&mut self, path: &str, v: &Option<String>, default: f64) -> Option<f64> {
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

    pub fn uint(&mut self, path: &str, v: &Option<String>, example: &str) -> Option<u64> {
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

    pub fn status(&mut self, path: &str, v: &Option<OneOrMany>) -> Vec<u16> {
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

    /// The TLS settings of a declared endpoint (the default when it is not declared: that is
    /// reported where its URL is looked up).
    pub fn endpoint_tls(&self, name: Option<&str>) -> crate::tls::TlsOptions {
        name.and_then(|n| self.cfg.http_endpoint(n))
            .map(|h| h.tls())
            .unwrap_or_default()
    }

    /// The headers a declared endpoint adds to every request (empty when it is not declared).
    pub fn endpoint_headers(&self, name: Option<&str>) -> crate::config::HeaderTemplates {
        name.and_then(|n| self.cfg.http_endpoint(n))
            .map(|h| h.headers.clone())
            .unwrap_or_default()
    }

    pub fn endpoint(&mut self, path: &str, name: &str, user: &str) -> Option<String> {
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

    pub fn unique_step_name(&mut self, path: &str, name: &str) {
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
    /// A number within `lo..=hi` (`lo` excluded when `open_lo`).
    pub fn number(
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
    pub fn positive(&mut self, path: &str, v: &Option<String>, example: &str) -> Option<u64> {
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
    pub fn one_of(&mut self, path: &str, kind: &str, a: (&str, bool), b: (&str, bool)) -> bool {
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

pub(super) fn list_suffix(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (declared: {})", names.join(", "))
    }
}

pub(super) fn http_path(cx: &mut Cx, path: &str, v: &Option<String>) -> Option<String> {
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

pub(super) fn http_method(
    cx: &mut Cx,
    path: &str,
    v: &Option<String>,
    default: &str,
) -> Option<String> {
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

pub(super) fn join_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}
