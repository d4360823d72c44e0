//! `chaosbot import chaostoolkit`: a Chaos Toolkit experiment (JSON or YAML) translated into a
//! chaosbot experiment and the operator config it needs.
//!
//! The semantics followed are chaostoolkit-lib's (`chaoslib/`): the steady-state hypothesis is
//! checked before and after the method (`sampling: before_after`), method activities run once
//! in order and their failures do not stop the method, tolerances judge the provider's output
//! (`{status, headers, body}` or `{status, stdout, stderr}`), `${name}` is replaced from the
//! `configuration` section (environment entries read at import time, with their defaults)
//! and from `secrets`, whose values are never written into the experiment: in an http
//! header they become a header of the endpoint, read from the environment when the request
//! is made; in a process argument, a shell reference to the environment variable.
//! Every URL becomes a declared `[[targets.http]]` and every command a `[[targets.command]]`,
//! so what runs stays the operator's to review. Python providers cannot run here and are
//! refused, naming the module. Every problem of the file is reported at once, located.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::Problem;
use super::locate::{Node, NodeKind, Pos, parse_tree};
use crate::config::HeaderTemplates;

mod toxi;
use toxi::{Toxi, ToxiTarget, is_chaostoxi};

/// What an import produces: the experiment's name, its YAML, and the config's TOML.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub experiment_yaml: String,
    pub config_toml: String,
    /// What people should know about the translation (ignored keys, always-failing forms).
    pub notes: Vec<String>,
}

/// Translates one Chaos Toolkit experiment. `file` names it in problems and in the output.
/// `env` reads environment variables (for `configuration` entries of type `env`).
pub fn import(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, Vec<Problem>> {
    let (root, tree_problems) = match parse_tree(text) {
        Ok(t) => t,
        Err(p) => return Err(vec![Problem::at(file, p.pos, p.message, p.hint)]),
    };
    let mut ix = Importer {
        file,
        problems: tree_problems
            .into_iter()
            .map(|p| Problem::at(file, p.pos, p.message, p.hint))
            .collect(),
        notes: Vec::new(),
        config: BTreeMap::new(),
        secrets: BTreeMap::new(),
        http: Vec::new(),
        commands: Vec::new(),
        toxi: Vec::new(),
        step_names: Vec::new(),
    };
    let Some(root) = root.filter(|r| matches!(r.kind, NodeKind::Map(_))) else {
        ix.problem(
            Pos::default(),
            "",
            "the file holds no experiment (a map with title, steady-state-hypothesis, method, ...)",
            "give the path of a Chaos Toolkit experiment file",
        );
        return Err(ix.problems);
    };
    let out = ix.experiment(&root, env);
    if !ix.problems.is_empty() {
        return Err(ix.problems);
    }
    let Some((name, exp)) = out else {
        return Err(ix.problems);
    };
    Ok(Imported {
        experiment_yaml: yaml_text(&exp),
        config_toml: ix.config_toml(),
        name,
        notes: ix.notes,
    })
}

struct HttpTarget {
    name: String,
    base: String,
    insecure: bool,
    /// Headers carrying secrets, as templates (`${VAR}` read at run time).
    headers: BTreeMap<String, String>,
}

/// Where a secret's value comes from (chaoslib `secret.py`: inline values and `env` keys).
#[derive(Debug, Clone)]
enum SecretSource {
    Inline(String),
    Env(String),
}

/// Stands for a secret inside substituted text, until the text finds a place that keeps the
/// value out of the experiment (two private-use characters around the secret's name).
const SECRET_OPEN: char = '\u{E000}';
const SECRET_CLOSE: char = '\u{E001}';

fn secret_marker(name: &str) -> String {
    format!("{SECRET_OPEN}{name}{SECRET_CLOSE}")
}

/// Text split into literal parts (`Ok`) and secret names (`Err`).
fn secret_parts(text: &str) -> Vec<Result<&str, &str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(SECRET_OPEN) {
        let after = &rest[i + SECRET_OPEN.len_utf8()..];
        let Some(j) = after.find(SECRET_CLOSE) else {
            break;
        };
        if i > 0 {
            out.push(Ok(&rest[..i]));
        }
        out.push(Err(&after[..j]));
        rest = &after[j + SECRET_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(Ok(rest));
    }
    out
}

/// The secrets named anywhere in a value.
fn secrets_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            for part in secret_parts(s) {
                if let Err(name) = part
                    && !out.iter().any(|n| n == name)
                {
                    out.push(name.to_string());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| secrets_in(x, out)),
        Value::Object(m) => m.values().for_each(|x| secrets_in(x, out)),
        _ => {}
    }
}

/// A word for `/bin/sh`: single-quoted literal parts, and `"$VAR"` for secrets read from the
/// environment (inline secrets are literal parts).
fn shell_word(word: &str, secrets: &BTreeMap<String, SecretSource>) -> String {
    let quote = |t: &str| format!("'{}'", t.replace('\'', "'\\''"));
    let mut out = String::new();
    for part in secret_parts(word) {
        match part {
            Ok(text) => out.push_str(&quote(text)),
            Err(name) => match secrets.get(name) {
                Some(SecretSource::Env(var)) => out.push_str(&format!("\"${var}\"")),
                Some(SecretSource::Inline(v)) => out.push_str(&quote(v)),
                None => {}
            },
        }
    }
    if out.is_empty() { "''".into() } else { out }
}

struct CommandDecl {
    name: String,
    argv: Vec<String>,
    shell: Option<String>,
}

struct Importer<'a> {
    file: &'a str,
    problems: Vec<Problem>,
    notes: Vec<String>,
    config: BTreeMap<String, Value>,
    /// `secrets`, every scope in one map (chaoslib `substitute` looks in all of them, after
    /// the configuration; the first scope naming a key wins).
    secrets: BTreeMap<String, SecretSource>,
    http: Vec<HttpTarget>,
    commands: Vec<CommandDecl>,
    /// Proxies on a Toxiproxy server (chaostoxi activities).
    toxi: Vec<ToxiTarget>,
    step_names: Vec<String>,
}

/// The default limit of an activity with no `timeout` (Chaos Toolkit waits forever).
const DEFAULT_TIMEOUT_S: f64 = 30.0;

impl Importer<'_> {
    /// Every target name generated so far (http, command and Toxiproxy), so a new one is unique.
    fn target_names(&self) -> Vec<String> {
        self.http
            .iter()
            .map(|t| t.name.clone())
            .chain(self.commands.iter().map(|c| c.name.clone()))
            .chain(self.toxi.iter().map(|t| t.name.clone()))
            .collect()
    }

    fn problem(&mut self, pos: Pos, pointer: &str, message: impl Into<String>, hint: &str) {
        let pointer = if pointer.is_empty() { "/" } else { pointer };
        self.problems.push(Problem::at(
            self.file,
            pos,
            format!("{pointer}: {}", message.into()),
            hint,
        ));
    }

    fn experiment(
        &mut self,
        root: &Node,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, Value)> {
        if let Some(c) = root.get("configuration") {
            self.configuration(c, env);
        }
        if let Some(s) = root.get("secrets") {
            self.secrets(s);
        }
        if root.get("controls").is_some() {
            self.notes
                .push("`controls` are Chaos Toolkit extensions and were left out".into());
        }
        let play_rollbacks = self.runtime(root);
        let title = match root.get("title").map(|t| self.value(t)) {
            Some(Value::String(t)) if !t.trim().is_empty() => t,
            _ => {
                self.problem(
                    root.pos,
                    "/title",
                    "the experiment has no `title`",
                    "Chaos Toolkit requires one; add `\"title\": \"...\"`",
                );
                String::new()
            }
        };
        let name = slug(&title);
        let description = root
            .get("description")
            .map(|d| self.value(d))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let tags: Vec<Value> = match root.get("tags").map(|t| self.value(t)) {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|t| Value::String(scalar_text(&t)))
                .collect(),
            _ => Vec::new(),
        };

        // What `ref` may name: the hypothesis probes and the method's activities (chaoslib
        // `caching.cache_activities`).
        let mut named: BTreeMap<String, (String, Node)> = BTreeMap::new();
        let hypo = root.get("steady-state-hypothesis");
        let probes: Vec<(String, &Node)> = match hypo.and_then(|h| h.get("probes")) {
            Some(Node {
                kind: NodeKind::Seq(items),
                ..
            }) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("/steady-state-hypothesis/probes/{i}"), n))
                .collect(),
            _ => Vec::new(),
        };
        let method: Vec<(String, &Node)> = match root.get("method") {
            Some(Node {
                kind: NodeKind::Seq(items),
                ..
            }) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("/method/{i}"), n))
                .collect(),
            _ => Vec::new(),
        };
        for (p, n) in method.iter().chain(probes.iter()) {
            if let Some(name) = n.get("name").and_then(Node::scalar) {
                named.insert(name.to_string(), (p.clone(), (*n).clone()));
            }
        }

        let mut hyp_probes = Vec::new();
        if probes.is_empty() {
            self.problem(
                hypo.map(|h| h.pos).unwrap_or(root.pos),
                "/steady-state-hypothesis",
                "the experiment has no steady-state hypothesis with probes",
                "chaosbot judges every run by its hypothesis: add `steady-state-hypothesis` with at least one probe and its tolerance",
            );
        }
        let mut probe_names: Vec<String> = Vec::new();
        for (p, n) in &probes {
            let Some((p, n)) = self.resolve(p, n, &named) else {
                continue;
            };
            if n.get("provider").is_some_and(is_chaostoxi) {
                self.chaostoxi(&p, &n, Role::Hypothesis);
                continue;
            }
            if let Some(mut probe) = self.activity(&p, &n, Role::Hypothesis) {
                let base = probe["name"].as_str().unwrap_or("probe").to_string();
                let unique = unique_name(&base, &probe_names);
                probe_names.push(unique.clone());
                probe["name"] = Value::String(unique);
                hyp_probes.push(probe);
            }
        }

        if method.is_empty() {
            self.problem(
                root.get("method").map(|m| m.pos).unwrap_or(root.pos),
                "/method",
                "the experiment has no method activities",
                "add at least one action or probe under `method`",
            );
        }
        // chaoslib `run.run_activities`: a `background` activity starts and the ones after it
        // run meanwhile; the method ends when all have. So each background activity becomes a
        // parallel group of itself (with its pauses) and a sequence of the rest of the method.
        // A chaostoxi toxic becomes a fault step held `during` the activities up to the one
        // removing it ([`toxi`]).
        let mut items: Vec<Item> = Vec::new();
        for (p, n) in &method {
            let Some((p, n)) = self.resolve(p, n, &named) else {
                continue;
            };
            let background = n
                .get("background")
                .map(|b| self.value(b))
                .is_some_and(|b| b == Value::Bool(true));
            let (before, after) = self.pauses(&p, &n);
            let wait = |w: Option<String>| w.map(|w| json!({ "wait": w }));
            if n.get("provider").is_some_and(is_chaostoxi) {
                let toxi = self.chaostoxi(&p, &n, Role::Method);
                items.extend(wait(before).map(|w| Item::Plain(vec![w])));
                match toxi {
                    Some(Toxi::Start { key, step }) => items.push(Item::Start { key, step }),
                    Some(Toxi::End(key)) => items.push(Item::End(Some(key))),
                    Some(Toxi::EndAll) => items.push(Item::End(None)),
                    None => {}
                }
                items.extend(wait(after).map(|w| Item::Plain(vec![w])));
                continue;
            }
            let mut member: Vec<Value> = wait(before).into_iter().collect();
            if let Some(mut step) = self.activity(&p, &n, Role::Method) {
                let base = step["name"].as_str().unwrap_or("step").to_string();
                let unique = unique_name(&base, &self.step_names);
                self.step_names.push(unique.clone());
                step["name"] = Value::String(unique);
                member.push(step);
            }
            member.extend(wait(after));
            items.push(if background {
                Item::Background(member)
            } else {
                Item::Plain(member)
            });
        }
        // The after round's probes run while a toxic the method leaves in place is held.
        let after_round: f64 = hyp_probes
            .iter()
            .map(|p| p["timeout"].as_str().map(text_seconds).unwrap_or(0.0))
            .sum();
        let steps = build_method(&items, after_round);
        let mut rollbacks = Vec::new();
        let mut rollback_names: Vec<String> = Vec::new();
        if let Some(Node {
            kind: NodeKind::Seq(items),
            ..
        }) = root.get("rollbacks").filter(|_| play_rollbacks)
        {
            for (i, n) in items.iter().enumerate() {
                let p = format!("/rollbacks/{i}");
                let Some((p, n)) = self.resolve(&p, n, &named) else {
                    continue;
                };
                if n.get("pauses").is_some() {
                    self.notes.push(format!(
                        "{p}: the pauses of a rollback are not imported (rollbacks run one after another)"
                    ));
                }
                if n.get("provider").is_some_and(is_chaostoxi) {
                    if self.chaostoxi(&p, &n, Role::Rollback).is_some() {
                        self.notes.push(format!(
                            "{p}: removing Toxiproxy toxics is chaosbot's automatic revert (before the rollbacks), not a rollback"
                        ));
                    }
                    continue;
                }
                if let Some(mut rb) = self.activity(&p, &n, Role::Rollback) {
                    let base = rb["name"].as_str().unwrap_or("rollback").to_string();
                    let unique = unique_name(&base, &rollback_names);
                    rollback_names.push(unique.clone());
                    rb["name"] = Value::String(unique);
                    rollbacks.push(rb);
                }
            }
        }

        let mut exp = Map::new();
        exp.insert("name".into(), Value::String(name.clone()));
        exp.insert("title".into(), Value::String(title));
        if !description.is_empty() {
            exp.insert("description".into(), Value::String(description));
        }
        exp.insert(
            "owner".into(),
            Value::String(format!("imported from {}", self.file)),
        );
        if !tags.is_empty() {
            exp.insert("tags".into(), Value::Array(tags));
        }
        exp.insert(
            "hypothesis".into(),
            json!({"sampling": "before_after", "probes": hyp_probes}),
        );
        exp.insert("method".into(), Value::Array(steps));
        if !rollbacks.is_empty() {
            exp.insert("rollbacks".into(), Value::Array(rollbacks));
        }
        Some((name, Value::Object(exp)))
    }

    /// `runtime` (which `chaos run` reads from the experiment, its command line taking
    /// precedence): the strategies chaosbot can keep. Whether the rollbacks are imported.
    fn runtime(&mut self, root: &Node) -> bool {
        let Some(rt) = root.get("runtime") else {
            return true;
        };
        let strategy = |section: &str| -> Option<(Pos, String)> {
            let n = rt.get(section)?.get("strategy")?;
            Some((n.pos, n.scalar().unwrap_or_default().to_string()))
        };
        if let Some((pos, s)) = strategy("hypothesis") {
            match s.as_str() {
                "default" => {}
                // Without `--fail-fast` (a command-line flag) the rounds during the method
                // are recorded and change nothing: the outcome is the before and after rounds'.
                "continuously" | "continously" => self.notes.push(format!(
                    "/runtime/hypothesis/strategy: `{s}` is imported as the default (before and after the method): in Chaos Toolkit the rounds during the method decide nothing without `--fail-fast`"
                )),
                other => self.problem(
                    pos,
                    "/runtime/hypothesis/strategy",
                    format!(
                        "hypothesis strategy `{other}` is not imported: chaosbot checks the steady state before the method (no steady state, no injection) and after it"
                    ),
                    "remove it (or write `default`); for probes during the method, give the chaosbot experiment `sampling: continuous`",
                ),
            }
        }
        match strategy("rollbacks") {
            None => true,
            Some((_, s)) if s == "default" => true,
            Some((_, s)) if s == "always" => {
                self.notes.push(
                    "/runtime/rollbacks/strategy: `always` is imported as the default: a run that fails before the method has injected nothing, so chaosbot has nothing to roll back".into(),
                );
                true
            }
            Some((_, s)) if s == "never" => {
                self.notes.push(
                    "/runtime/rollbacks/strategy: `never`, so the rollbacks were left out (chaosbot still reverts its own faults)".into(),
                );
                false
            }
            Some((pos, other)) => {
                self.problem(
                    pos,
                    "/runtime/rollbacks/strategy",
                    format!(
                        "rollback strategy `{other}` is not imported: chaosbot plays the rollbacks whatever the verdict"
                    ),
                    "remove it (or write `default`, `always` or `never`)",
                );
                true
            }
        }
    }

    /// `configuration`: plain values, and `{type: env, key, default}` read now.
    fn configuration(&mut self, c: &Node, env: &dyn Fn(&str) -> Option<String>) {
        let NodeKind::Map(entries) = &c.kind else {
            self.problem(
                c.pos,
                "/configuration",
                "`configuration` is not a map",
                "write it as `{\"name\": value, ...}`",
            );
            return;
        };
        for e in entries {
            let p = format!("/configuration/{}", pointer_escape(&e.key));
            let v = self.value(&e.value);
            let resolved = match &v {
                Value::Object(m) if m.contains_key("type") => {
                    match m.get("type").and_then(Value::as_str) {
                        Some("env") => {
                            let key = m.get("key").and_then(Value::as_str).unwrap_or_default();
                            match (env(key), m.get("default")) {
                                (Some(val), _) => Some(convert_env(
                                    m.get("env_var_type").and_then(Value::as_str),
                                    &val,
                                )),
                                (None, Some(d)) => Some(d.clone()),
                                (None, None) => {
                                    self.problem(
                                        e.value.pos,
                                        &p,
                                        format!(
                                            "the environment variable `{key}` is not set and the entry has no default"
                                        ),
                                        "set it when importing, or give the entry a `default`",
                                    );
                                    None
                                }
                            }
                        }
                        other => {
                            self.problem(
                                e.value.pos,
                                &p,
                                format!(
                                    "configuration entries of type `{}` are not imported",
                                    other.unwrap_or("?")
                                ),
                                "only plain values and `{\"type\": \"env\", \"key\": ..., \"default\": ...}` are read",
                            );
                            None
                        }
                    }
                }
                _ => Some(v.clone()),
            };
            if let Some(r) = resolved {
                self.config.insert(e.key.clone(), r);
            }
        }
    }

    /// `secrets`: `{scope: {key: value | {type: env, key: VAR}}}`. Values are never read here:
    /// an env secret is read from the environment when it is used, an inline one is written
    /// only into the operator config. Vault secrets are refused.
    fn secrets(&mut self, s: &Node) {
        let NodeKind::Map(scopes) = &s.kind else {
            self.problem(
                s.pos,
                "/secrets",
                "`secrets` is not a map",
                "write it as `{\"scope\": {\"name\": {\"type\": \"env\", \"key\": \"VAR\"}}}`",
            );
            return;
        };
        for scope in scopes {
            let sp = format!("/secrets/{}", pointer_escape(&scope.key));
            let NodeKind::Map(entries) = &scope.value.kind else {
                self.problem(
                    scope.value.pos,
                    &sp,
                    format!("secret scope `{}` is not a map", scope.key),
                    "write it as `{\"name\": {\"type\": \"env\", \"key\": \"VAR\"}}`",
                );
                continue;
            };
            for e in entries {
                let p = format!("{sp}/{}", pointer_escape(&e.key));
                let v = self.value(&e.value);
                let source = match &v {
                    Value::Object(m) => match m.get("type").and_then(Value::as_str) {
                        Some("env") => match m.get("key").and_then(Value::as_str) {
                            Some(var) if HeaderTemplates::is_variable_name(var) => {
                                SecretSource::Env(var.to_string())
                            }
                            _ => {
                                self.problem(
                                    e.value.pos,
                                    &p,
                                    format!("env secret `{}` has no usable `key`", e.key),
                                    "name the environment variable: `{\"type\": \"env\", \"key\": \"API_TOKEN\"}`",
                                );
                                continue;
                            }
                        },
                        Some("vault") => {
                            self.problem(
                                e.value.pos,
                                &p,
                                format!(
                                    "secret `{}` is read from Vault, which chaosbot does not read",
                                    e.key
                                ),
                                "put the value in an environment variable where chaosbot runs and write `{\"type\": \"env\", \"key\": \"VAR\"}`",
                            );
                            continue;
                        }
                        // chaoslib keeps a map of another type as an inline value.
                        _ => SecretSource::Inline(v.to_string()),
                    },
                    other => SecretSource::Inline(scalar_text(other)),
                };
                if self.secrets.contains_key(&e.key) {
                    continue;
                }
                if let SecretSource::Inline(_) = source {
                    self.notes.push(format!(
                        "{p}: the inline secret `{}` is written into chaosbot.toml where it is used; better kept in an environment variable (`{{\"type\": \"env\", \"key\": ...}}`)",
                        e.key
                    ));
                }
                self.secrets.insert(e.key.clone(), source);
            }
        }
    }

    /// A `ref` replaced by the activity it names (located where that activity is written).
    fn resolve(
        &mut self,
        p: &str,
        n: &Node,
        named: &BTreeMap<String, (String, Node)>,
    ) -> Option<(String, Node)> {
        let Some(r) = n.get("ref") else {
            return Some((p.to_string(), n.clone()));
        };
        let name = r.scalar().unwrap_or_default();
        match named.get(name) {
            Some((at, node)) if node.get("ref").is_none() => Some((at.clone(), node.clone())),
            _ => {
                let known: Vec<&str> = named.keys().map(String::as_str).collect();
                let hint = match crate::spec::did_you_mean(name, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "a ref names an activity of the method or a hypothesis probe ({})",
                        if known.is_empty() {
                            "there are none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                };
                self.problem(
                    r.pos,
                    &format!("{p}/ref"),
                    format!("`ref: {name}` names no activity"),
                    &hint,
                );
                None
            }
        }
    }

    /// `pauses: {before, after}` (seconds, or `${name}`) as chaosbot durations.
    fn pauses(&mut self, p: &str, n: &Node) -> (Option<String>, Option<String>) {
        let Some(pauses) = n.get("pauses") else {
            return (None, None);
        };
        let mut one = |key: &str| -> Option<String> {
            let node = pauses.get(key)?;
            let v = self.subst(&self.value(node));
            match seconds(&v) {
                Some(s) if s > 0.0 => Some(duration_text(s)),
                Some(_) => None,
                None => {
                    self.problem(
                        node.pos,
                        &format!("{p}/pauses/{key}"),
                        format!("pause `{key}` is not a number of seconds"),
                        "write it like `\"before\": 5`",
                    );
                    None
                }
            }
        };
        let b = one("before");
        let a = one("after");
        (b, a)
    }

    /// One activity as a chaosbot probe, action step or rollback.
    fn activity(&mut self, p: &str, n: &Node, role: Role) -> Option<Value> {
        let name = match n.get("name").map(|x| self.value(x)) {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => {
                self.problem(
                    n.pos,
                    &format!("{p}/name"),
                    "this activity has no `name`",
                    "Chaos Toolkit requires one; add `\"name\": \"...\"`",
                );
                return None;
            }
        };
        match n.get("type").and_then(Node::scalar) {
            Some("probe" | "action") => {}
            other => {
                self.problem(
                    n.get("type").map(|t| t.pos).unwrap_or(n.pos),
                    &format!("{p}/type"),
                    format!("activity `{name}` has type `{}`", other.unwrap_or("(none)")),
                    "an activity is a `probe` or an `action`",
                );
                return None;
            }
        }
        let Some(provider) = n.get("provider") else {
            self.problem(
                n.pos,
                &format!("{p}/provider"),
                format!("activity `{name}` has no provider"),
                "add `\"provider\": {\"type\": \"http\", \"url\": ...}` or a process provider",
            );
            return None;
        };
        let pp = format!("{p}/provider");
        let tolerance = match role {
            Role::Hypothesis => match n.get("tolerance") {
                Some(t) => Some(self.tolerance(&format!("{p}/tolerance"), t)?),
                None => {
                    self.problem(
                        n.pos,
                        &format!("{p}/tolerance"),
                        format!("hypothesis probe `{name}` has no tolerance"),
                        "every hypothesis probe needs a `tolerance` (e.g. 200 for an http status, 0 for an exit code)",
                    );
                    return None;
                }
            },
            _ => None,
        };
        let kind = provider.get("type").and_then(Node::scalar).unwrap_or("");
        let (key, body, timeout) = match kind {
            "http" => self.http_provider(&pp, provider, &name)?,
            "process" => self.process_provider(&pp, provider, &name)?,
            "python" => {
                let module = provider
                    .get("module")
                    .and_then(Node::scalar)
                    .unwrap_or("(no module)");
                self.problem(
                    provider.pos,
                    &pp,
                    format!(
                        "activity `{name}` calls the Python module `{module}`, which chaosbot cannot run"
                    ),
                    "express it as an http or process activity, or write the chaosbot fault it stands for (network faults: latency, bandwidth, down, ...)",
                );
                return None;
            }
            other => {
                self.problem(
                    provider.get("type").map(|t| t.pos).unwrap_or(provider.pos),
                    &format!("{pp}/type"),
                    format!("activity `{name}` has the unknown provider type `{other}`"),
                    "Chaos Toolkit's provider types are http, process and python",
                );
                return None;
            }
        };
        let mut left = Vec::new();
        secrets_in(&body, &mut left);
        if let Some(t) = &tolerance {
            secrets_in(t, &mut left);
        }
        if !left.is_empty() {
            self.secret_misplaced(provider.pos, &pp, &name, &left);
            return None;
        }
        let mut out = Map::new();
        out.insert("name".into(), Value::String(name));
        out.insert(key.into(), body);
        match role {
            Role::Hypothesis => {
                out.insert("timeout".into(), Value::String(duration_text(timeout)));
                if let Some(t) = tolerance {
                    out.insert("expect".into(), t);
                }
            }
            Role::Method => {
                if let Some(Value::Object(m)) = out.get_mut(key) {
                    m.insert("timeout".into(), Value::String(duration_text(timeout)));
                }
            }
            Role::Rollback => {
                if let Some(Value::Object(m)) = out.get_mut(key) {
                    m.insert("timeout".into(), Value::String(duration_text(timeout)));
                    if key == "http" {
                        m.insert("status".into(), Value::String("any".into()));
                    }
                }
                if key == "command" {
                    out.insert("any_exit".into(), Value::Bool(true));
                }
            }
        }
        Some(Value::Object(out))
    }

    /// The http provider: a declared endpoint per URL base, the rest on the activity.
    fn http_provider(
        &mut self,
        pp: &str,
        provider: &Node,
        name: &str,
    ) -> Option<(&'static str, Value, f64)> {
        let url = match provider.get("url").map(|u| self.subst(&self.value(u))) {
            Some(Value::String(u)) => u,
            _ => {
                self.problem(
                    provider.pos,
                    &format!("{pp}/url"),
                    format!("http activity `{name}` has no `url`"),
                    "add `\"url\": \"http://host:port/path\"`",
                );
                return None;
            }
        };
        // Checked before the URL and the arguments are encoded (which hides the markers).
        let arguments = provider
            .get("arguments")
            .map(|a| (a, self.subst(&self.value(a))));
        let mut used = Vec::new();
        secrets_in(&Value::String(url.clone()), &mut used);
        if let Some((_, args)) = &arguments {
            secrets_in(args, &mut used);
        }
        if !used.is_empty() {
            self.secret_misplaced(provider.pos, pp, name, &used);
            return None;
        }
        let parsed = match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                self.problem(
                    provider.get("url").map(|u| u.pos).unwrap_or(provider.pos),
                    &format!("{pp}/url"),
                    format!("`{url}` is not an http(s) URL"),
                    "write it like `http://127.0.0.1:8080/health`",
                );
                return None;
            }
        };
        let method = provider
            .get("method")
            .map(|m| scalar_text(&self.subst(&self.value(m))).to_ascii_uppercase())
            .unwrap_or_else(|| "GET".into());
        let mut headers: BTreeMap<String, String> = match provider
            .get("headers")
            .map(|h| self.subst(&self.value(h)))
        {
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect(),
            Some(_) => {
                self.problem(
                    provider
                        .get("headers")
                        .map(|h| h.pos)
                        .unwrap_or(provider.pos),
                    &format!("{pp}/headers"),
                    "`headers` is not a map",
                    "write it as `{\"Name\": \"value\"}`",
                );
                return None;
            }
            None => BTreeMap::new(),
        };
        let insecure = match provider.get("verify_tls").and_then(Node::scalar) {
            Some("false") => parsed.scheme() == "https",
            _ => false,
        };
        let timeout = self.timeout(pp, provider, true)?;
        let mut path = parsed.path().to_string();
        let mut query: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut body = None;
        if let Some((a, args)) = arguments
            && !args.is_null()
        {
            let json_body = headers
                .get("Content-Type")
                .is_some_and(|c| c == "application/json");
            if method == "GET" {
                match &args {
                    Value::Object(m) => {
                        query.extend(m.iter().map(|(k, v)| (k.clone(), scalar_text(v))))
                    }
                    _ => {
                        self.problem(
                            a.pos,
                            &format!("{pp}/arguments"),
                            "the arguments of a GET are not a map",
                            "they become the query string: write `{\"name\": value}`",
                        );
                        return None;
                    }
                }
            } else if json_body {
                body = Some(args.to_string());
            } else {
                match &args {
                    Value::Object(m) => {
                        let pairs: Vec<(String, String)> =
                            m.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect();
                        body = serde_urlencoded::to_string(pairs).ok();
                        headers
                            .entry("Content-Type".into())
                            .or_insert_with(|| "application/x-www-form-urlencoded".into());
                    }
                    Value::String(s) => body = Some(s.clone()),
                    other => body = Some(other.to_string()),
                }
            }
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&serde_urlencoded::to_string(&query).unwrap_or_default());
        }
        // Headers holding secrets are the endpoint's: templates in chaosbot.toml.
        let mut secret_headers = BTreeMap::new();
        headers.retain(|k, v| {
            let parts = secret_parts(v);
            if parts.iter().all(Result::is_ok) {
                return true;
            }
            let template: String = parts
                .into_iter()
                .map(|part| match part {
                    Ok(text) => HeaderTemplates::literal(text),
                    Err(name) => match self.secrets.get(name) {
                        Some(SecretSource::Env(var)) => HeaderTemplates::variable(var),
                        Some(SecretSource::Inline(v)) => HeaderTemplates::literal(v),
                        None => String::new(),
                    },
                })
                .collect();
            secret_headers.insert(k.clone(), template);
            false
        });
        let base = parsed.origin().ascii_serialization();
        let endpoint = self.http_target(&base, insecure, secret_headers);
        let mut call = Map::new();
        call.insert("endpoint".into(), Value::String(endpoint));
        call.insert("path".into(), Value::String(path));
        call.insert("method".into(), Value::String(method));
        if !headers.is_empty() {
            call.insert(
                "headers".into(),
                Value::Object(
                    headers
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ),
            );
        }
        if let Some(b) = body {
            call.insert("body".into(), Value::String(b));
        }
        Some(("http", Value::Object(call), timeout))
    }

    /// The process provider: one declared command per command line.
    fn process_provider(
        &mut self,
        pp: &str,
        provider: &Node,
        name: &str,
    ) -> Option<(&'static str, Value, f64)> {
        let path = match provider.get("path").map(|u| self.subst(&self.value(u))) {
            Some(Value::String(u)) if !u.is_empty() => u,
            _ => {
                self.problem(
                    provider.pos,
                    &format!("{pp}/path"),
                    format!("process activity `{name}` has no `path`"),
                    "add `\"path\": \"program\"`",
                );
                return None;
            }
        };
        let timeout = self.timeout(pp, provider, false)?;
        let args = provider
            .get("arguments")
            .map(|a| self.subst(&self.value(a)))
            .unwrap_or(Value::Null);
        // chaoslib `provider/process.py`: a string goes through the shell after the path; a
        // list is the arguments; a map is flattened key, value; empty values are dropped.
        let (argv, shell) = match &args {
            Value::Null => (vec![path.clone()], None),
            Value::String(s) => (Vec::new(), Some(format!("{path} {s}"))),
            Value::Array(a) => {
                let mut v = vec![path.clone()];
                v.extend(a.iter().filter(|x| !is_empty_arg(x)).map(scalar_text));
                (v, None)
            }
            Value::Object(m) => {
                let mut v = vec![path.clone()];
                for (k, x) in m {
                    v.push(k.clone());
                    if !is_empty_arg(x) {
                        v.push(scalar_text(x));
                    }
                }
                (v, None)
            }
            other => (vec![path.clone(), scalar_text(other)], None),
        };
        let (argv, shell) = self.command_with_secrets(argv, shell);
        let target = self.command_target(&path, argv, shell);
        Some(("command", json!({"target": target}), timeout))
    }

    /// A problem for secrets used where they would be written into the experiment.
    fn secret_misplaced(&mut self, pos: Pos, pp: &str, name: &str, secrets: &[String]) {
        let names: Vec<String> = secrets.iter().map(|n| format!("`{n}`")).collect();
        self.problem(
            pos,
            pp,
            format!(
                "activity `{name}` uses the secret{} {} in its URL, arguments or tolerance, where chaosbot would have to write it into the experiment",
                if secrets.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
            "chaosbot sends secrets as an endpoint's headers (an http provider's `headers`) or reads them from the environment in a command (a process provider's arguments); move it there",
        );
    }

    /// A command line whose words hold secrets, as one that reads them from the environment
    /// (`"$VAR"` in a `/bin/sh` line, so the value is never in the config or on show).
    fn command_with_secrets(
        &self,
        argv: Vec<String>,
        shell: Option<String>,
    ) -> (Vec<String>, Option<String>) {
        let has = |w: &str| secret_parts(w).iter().any(Result::is_err);
        match shell {
            Some(line) if has(&line) => {
                // Already a shell line: each secret becomes one word read from the environment.
                let line: String = secret_parts(&line)
                    .into_iter()
                    .map(|part| match part {
                        Ok(text) => text.to_string(),
                        Err(name) => shell_word(&secret_marker(name), &self.secrets),
                    })
                    .collect();
                (Vec::new(), Some(line))
            }
            None if argv.iter().any(|w| has(w)) => {
                let words: Vec<String> =
                    argv.iter().map(|w| shell_word(w, &self.secrets)).collect();
                (Vec::new(), Some(words.join(" ")))
            }
            other => (argv, other),
        }
    }

    /// A provider's `timeout`: seconds, or `[connect, read]` for http (their sum bounds the
    /// call; chaosbot has one limit per call).
    fn timeout(&mut self, pp: &str, provider: &Node, http: bool) -> Option<f64> {
        let Some(t) = provider.get("timeout") else {
            return Some(DEFAULT_TIMEOUT_S);
        };
        let v = self.subst(&self.value(t));
        let secs = match &v {
            Value::Array(a) if http && a.len() == 2 => match (seconds(&a[0]), seconds(&a[1])) {
                (Some(c), Some(r)) => Some(c + r),
                _ => None,
            },
            other => seconds(other),
        };
        match secs {
            Some(s) if s > 0.0 => Some(s),
            _ => {
                self.problem(
                    t.pos,
                    &format!("{pp}/timeout"),
                    "`timeout` is not a positive number of seconds",
                    if http {
                        "write it like `5` or `[3, 10]` (connect, read)"
                    } else {
                        "write it like `5`"
                    },
                );
                None
            }
        }
    }

    /// A tolerance as a chaosbot `expect` (chaoslib `hypothesis.within_tolerance`: the output
    /// of an http or process provider is a mapping with a `status`).
    fn tolerance(&mut self, p: &str, t: &Node) -> Option<Value> {
        let v = self.value(t);
        let v = match &v {
            Value::String(_) => self.subst(&v),
            _ => v,
        };
        match &v {
            Value::Bool(b) => {
                self.notes.push(format!(
                    "{p}: a boolean tolerance compares the probe's whole output, a mapping for http and process probes, so it is never met (as in Chaos Toolkit)"
                ));
                Some(json!({"equals": Value::Bool(*b).to_string()}))
            }
            Value::Number(n) if n.is_i64() => Some(json!({"status": [n]})),
            Value::String(s) => {
                self.notes.push(format!(
                    "{p}: a string tolerance compares the probe's whole output, a mapping for http and process probes, so it is never met (as in Chaos Toolkit)"
                ));
                Some(json!({"equals": Value::String(s.clone()).to_string()}))
            }
            Value::Array(a) => {
                let codes: Option<Vec<i64>> = a.iter().map(Value::as_i64).collect();
                match codes {
                    Some(c) if !c.is_empty() => Some(json!({"status": c})),
                    _ => {
                        self.problem(
                            t.pos,
                            p,
                            "a list tolerance of an http or process probe lists status or exit codes",
                            "write whole numbers, like `[200, 204]`",
                        );
                        None
                    }
                }
            }
            Value::Object(m) => self.tolerance_map(p, t, m),
            _ => {
                self.problem(
                    t.pos,
                    p,
                    "this tolerance is neither a boolean, an integer, a string, a list nor a map",
                    "see Chaos Toolkit's tolerance forms: 200, [200, 204], {\"type\": \"regex\", ...}",
                );
                None
            }
        }
    }

    fn tolerance_map(&mut self, p: &str, t: &Node, m: &Map<String, Value>) -> Option<Value> {
        let target = m.get("target").map(scalar_text);
        let need_target = |me: &mut Self, form: &str| -> Option<String> {
            if target.is_none() {
                me.problem(
                    t.pos,
                    &format!("{p}/target"),
                    format!("a `{form}` tolerance here needs `target`"),
                    "name the part of the output to test: `body`, `status`, `stdout`, ...",
                );
            }
            target.clone()
        };
        match m.get("type").and_then(Value::as_str) {
            Some("regex") => {
                let Some(pattern) = m.get("pattern").map(|x| scalar_text(&self.subst(x))) else {
                    self.problem(
                        t.pos,
                        &format!("{p}/pattern"),
                        "a regex tolerance needs `pattern`",
                        "add `\"pattern\": \"...\"`",
                    );
                    return None;
                };
                if let Err(e) = regex::Regex::new(&pattern) {
                    self.problem(
                        t.pos,
                        &format!("{p}/pattern"),
                        format!("the pattern does not compile: {e}"),
                        "write a regular expression",
                    );
                    return None;
                }
                let target = need_target(self, "regex")?;
                Some(json!({"regex": pattern, "target": target}))
            }
            Some("jsonpath") => {
                let Some(path) = m.get("path").map(|x| scalar_text(&self.subst(x))) else {
                    self.problem(
                        t.pos,
                        &format!("{p}/path"),
                        "a jsonpath tolerance needs `path`",
                        "add `\"path\": \"$.field\"`",
                    );
                    return None;
                };
                if let Err(e) = serde_json_path::JsonPath::parse(path.trim()) {
                    self.problem(
                        t.pos,
                        &format!("{p}/path"),
                        format!("`{path}` is not a JSON path: {e}"),
                        "write it like `$.items[0].status`",
                    );
                    return None;
                }
                let mut out = Map::new();
                out.insert("jsonpath".into(), Value::String(path.trim().to_string()));
                if let Some(tg) = target {
                    out.insert("target".into(), Value::String(tg));
                }
                if let Some(e) = m.get("expect") {
                    let e = self.subst(e);
                    let list = match e {
                        Value::Array(_) => e,
                        other => Value::Array(vec![other]),
                    };
                    out.insert("values".into(), Value::String(list.to_string()));
                }
                if let Some(c) = m.get("count") {
                    out.insert("count".into(), Value::String(scalar_text(c)));
                }
                Some(Value::Object(out))
            }
            Some("range") => {
                let bounds: Option<Vec<f64>> = match m.get("range") {
                    Some(Value::Array(a)) if a.len() == 2 => a.iter().map(Value::as_f64).collect(),
                    _ => None,
                };
                let Some(b) = bounds else {
                    self.problem(
                        t.pos,
                        &format!("{p}/range"),
                        "a range tolerance needs `range: [lower, upper]` of two numbers",
                        "write it like `\"range\": [200, 299]`",
                    );
                    return None;
                };
                let target = need_target(self, "range")?;
                Some(json!({"range": b, "target": target}))
            }
            Some("probe") => {
                self.problem(
                    t.pos,
                    p,
                    "a probe used as a tolerance is not imported",
                    "use a regex, jsonpath or range tolerance, or a status code",
                );
                None
            }
            other => {
                self.problem(
                    t.pos,
                    &format!("{p}/type"),
                    format!(
                        "the tolerance type `{}` is unknown",
                        other.unwrap_or("(none)")
                    ),
                    "Chaos Toolkit's tolerance types are regex, jsonpath, range and probe",
                );
                None
            }
        }
    }

    /// `${name}` from the configuration (a value that is exactly `${name}` keeps its type), or
    /// a secret's marker (see [`SECRET_OPEN`]).
    fn subst(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => {
                if let Some(key) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
                    && let Some(val) = self.config.get(key)
                {
                    return val.clone();
                }
                let known = |k: &str| self.config.contains_key(k) || self.secrets.contains_key(k);
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(i) = rest.find("${") {
                    out.push_str(&rest[..i]);
                    let after = &rest[i + 2..];
                    match after.find('}') {
                        Some(j) if known(&after[..j]) => {
                            let key = &after[..j];
                            match self.config.get(key) {
                                Some(v) => out.push_str(&scalar_text(v)),
                                None => out.push_str(&secret_marker(key)),
                            }
                            rest = &after[j + 1..];
                        }
                        // Left as written, as Python's safe_substitute does.
                        _ => {
                            out.push_str("${");
                            rest = after;
                        }
                    }
                }
                out.push_str(rest);
                Value::String(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.subst(x)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), self.subst(x))).collect())
            }
            other => other.clone(),
        }
    }

    /// A node as JSON: plain scalars typed as YAML 1.2 core (JSON files type them the same).
    fn value(&self, n: &Node) -> Value {
        match &n.kind {
            NodeKind::Scalar { text, plain: false } => Value::String(text.clone()),
            NodeKind::Scalar { text, plain: true } => typed(text),
            NodeKind::Seq(items) => Value::Array(items.iter().map(|x| self.value(x)).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), self.value(&e.value)))
                    .collect(),
            ),
            NodeKind::Skip => Value::Null,
        }
    }

    fn http_target(
        &mut self,
        base: &str,
        insecure: bool,
        headers: BTreeMap<String, String>,
    ) -> String {
        if let Some(t) = self
            .http
            .iter()
            .find(|t| t.base == base && t.insecure == insecure && t.headers == headers)
        {
            return t.name.clone();
        }
        let stem = slug(base.split_once("://").map(|(_, r)| r).unwrap_or(base));
        let taken = self.target_names();
        let name = unique_name(&format!("http-{stem}"), &taken);
        self.http.push(HttpTarget {
            name: name.clone(),
            base: base.to_string(),
            insecure,
            headers,
        });
        name
    }

    fn command_target(&mut self, path: &str, argv: Vec<String>, shell: Option<String>) -> String {
        if let Some(c) = self
            .commands
            .iter()
            .find(|c| c.argv == argv && c.shell == shell)
        {
            return c.name.clone();
        }
        let program = path.rsplit('/').next().unwrap_or(path);
        let taken = self.target_names();
        let name = unique_name(&format!("cmd-{}", slug(program)), &taken);
        self.commands.push(CommandDecl {
            name: name.clone(),
            argv,
            shell,
        });
        name
    }

    fn config_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = format!(
            "# Generated by `chaosbot import chaostoolkit` from {}.\n# Review every target: an experiment can touch only what is declared here.\n",
            self.file
        );
        for t in &self.http {
            out.push_str(&format!(
                "\n[[targets.http]]\nname = {}\nurl = {}\ndescription = {}\n",
                q(&t.name),
                q(&t.base),
                q(&format!(
                    "generated by chaosbot import chaostoolkit from {}",
                    self.file
                ))
            ));
            if t.insecure {
                out.push_str(
                    "insecure_skip_verify = true   # verify_tls: false in the experiment\n",
                );
            }
            if !t.headers.is_empty() {
                let pairs: Vec<String> = t
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                    .collect();
                out.push_str(&format!(
                    "# from the experiment's secrets: ${{VAR}} is read from the environment when a request is made\nheaders = {{ {} }}\n",
                    pairs.join(", ")
                ));
            }
        }
        for t in &self.toxi {
            out.push_str(&format!(
                "\n[[targets.proxy]]\nname = {}\ntoxiproxy = {}\nproxy = {}\ndescription = {}\n",
                q(&t.name),
                q(&t.url),
                q(&t.proxy),
                q(&format!(
                    "generated by chaosbot import chaostoolkit from {}",
                    self.file
                ))
            ));
        }
        for c in &self.commands {
            out.push_str(&format!("\n[[targets.command]]\nname = {}\n", q(&c.name)));
            match &c.shell {
                Some(s) => out.push_str(&format!("shell = {}\n", q(s))),
                None => {
                    let words: Vec<String> = c.argv.iter().map(|w| q(w)).collect();
                    out.push_str(&format!("argv = [{}]\n", words.join(", ")));
                }
            }
            out.push_str("generated = true\n");
        }
        out
    }
}

/// One method activity on its way to chaosbot steps.
enum Item {
    /// Steps in order (an activity with its pauses).
    Plain(Vec<Value>),
    /// A `background` activity with its pauses.
    Background(Vec<Value>),
    /// A toxic put in place (its fault step, `during` still to fill).
    Start { key: String, step: Value },
    /// The toxic of this key removed (None: all of them, `reset`).
    End(Option<String>),
}

impl Item {
    fn ends(&self, key: &str) -> bool {
        match self {
            Item::End(None) => true,
            Item::End(Some(k)) => k == key,
            _ => false,
        }
    }
}

/// A member of a parallel group (one step, or a sequence of several).
fn one(mut v: Vec<Value>) -> Value {
    if v.len() == 1 {
        v.remove(0)
    } else {
        json!({ "sequence": v })
    }
}

/// The method's steps from its activities: a background activity beside the rest, a toxic
/// held during the activities up to its removal (to the end of the method and through the
/// after round, `after_round` seconds, when the method does not remove it).
fn build_method(items: &[Item], after_round: f64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Item::Plain(member) => out.extend(member.iter().cloned()),
            Item::Background(member) => {
                let rest = build_method(&items[i + 1..], after_round);
                if rest.is_empty() || member.is_empty() {
                    out.extend(member.iter().cloned());
                    out.extend(rest);
                } else {
                    out.push(json!({"parallel": [one(member.clone()), one(rest)]}));
                }
                return out;
            }
            Item::Start { key, step } => {
                let end = items[i + 1..]
                    .iter()
                    .position(|it| it.ends(key))
                    .map(|j| i + 1 + j);
                let span = &items[i + 1..end.unwrap_or(items.len())];
                let during = build_method(span, after_round);
                let mut step = step.clone();
                // Its duration bounds it: the activities it is held for, the after round
                // when it stays to the close, and a margin.
                let mut bound = during.iter().map(step_seconds).sum::<f64>() + 30.0;
                if end.is_none() {
                    bound += after_round;
                    step["revert"] = Value::String("at_close".into());
                }
                step["duration"] = Value::String(duration_text(bound.ceil()));
                step["during"] = Value::Array(during);
                out.push(step);
                match end {
                    Some(j) => i = j,
                    None => return out,
                }
            }
            // Nothing of that key is in place here (the toxic existed before the run).
            Item::End(_) => {}
        }
        i += 1;
    }
    out
}

/// The longest a generated step takes, in seconds.
fn step_seconds(v: &Value) -> f64 {
    if let Some(w) = v.get("wait").and_then(Value::as_str) {
        return text_seconds(w);
    }
    if let Some(Value::Array(a)) = v.get("parallel") {
        return a.iter().map(step_seconds).fold(0.0, f64::max);
    }
    if let Some(Value::Array(a)) = v.get("sequence") {
        return a.iter().map(step_seconds).sum();
    }
    if let Some(d) = v.get("duration").and_then(Value::as_str) {
        return text_seconds(d);
    }
    ["http", "command"]
        .iter()
        .find_map(|k| v.get(*k)?.get("timeout")?.as_str().map(text_seconds))
        .unwrap_or(0.0)
}

/// A duration this importer wrote (`30s`, `1500ms`) in seconds.
fn text_seconds(t: &str) -> f64 {
    humantime::parse_duration(t)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Hypothesis,
    Method,
    Rollback,
}

fn typed(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Value::from(i)
            } else if let Ok(f) = text.parse::<f64>()
                && text.chars().any(|c| c.is_ascii_digit())
            {
                Value::from(f)
            } else {
                Value::String(text.to_string())
            }
        }
    }
}

/// A value as Python's `str()` writes a scalar (what arguments and headers become).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn is_empty_arg(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str() == Some("")
}

fn seconds(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn convert_env(kind: Option<&str>, raw: &str) -> Value {
    match kind {
        Some("int") => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Some("float") => raw
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Some("bool") => Value::Bool(matches!(raw.trim(), "true" | "True" | "1" | "yes")),
        Some("json") => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into())),
        _ => Value::String(raw.into()),
    }
}

/// Seconds as a chaosbot duration (`1500ms`, `30s`).
fn duration_text(s: f64) -> String {
    let ms = (s * 1000.0).round() as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A chaosbot name (1..64 of a-z, 0-9, -) from free text.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(64).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "imported".into()
    } else {
        out
    }
}

fn unique_name(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.iter().any(|t| t == n))
        .unwrap_or_else(|| base.to_string())
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The chaosbot experiment as YAML text (block style, strings quoted where YAML needs it).
fn yaml_text(v: &Value) -> String {
    use yaml_rust2::{Yaml, YamlEmitter};
    fn conv(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(conv).collect()),
            Value::Object(m) => Yaml::Hash(
                m.iter()
                    .map(|(k, x)| (Yaml::String(k.clone()), conv(x)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    let mut em = YamlEmitter::new(&mut out);
    // Emitting into a String cannot fail for values built from JSON.
    let _ = em.dump(&conv(v));
    let body = out.strip_prefix("---\n").unwrap_or(&out).to_string();
    format!(
        "# Imported by `chaosbot import chaostoolkit`; run it with the chaosbot.toml beside it.\n{body}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_slugs() {
        assert_eq!(
            slug("What is the impact of an expired certificate?"),
            "what-is-the-impact-of-an-expired-certificate"
        );
        assert_eq!(slug("!!!"), "imported");
        assert_eq!(duration_text(1.5), "1500ms");
        assert_eq!(duration_text(30.0), "30s");
    }

    const WITH_SECRETS: &str = r#"{
      "title": "secrets stay out",
      "configuration": {"base": "http://127.0.0.1:9"},
      "secrets": {
        "api": {"token": {"type": "env", "key": "API_TOKEN"}, "static": "s$3"},
        "other": {"token": "never used: the first scope wins"}
      },
      "steady-state-hypothesis": {"title": "up", "probes": [
        {"type": "probe", "name": "authorized", "tolerance": 200,
         "provider": {"type": "http", "url": "${base}/private",
                      "headers": {"Authorization": "Bearer ${token}", "X-Static": "${static}",
                                  "Accept": "application/json"}}},
        {"type": "probe", "name": "public", "tolerance": 200,
         "provider": {"type": "http", "url": "${base}/public"}}
      ]},
      "method": [
        {"type": "action", "name": "call", "provider": {"type": "process", "path": "check",
         "arguments": ["--token", "${token}", "it's ${static}"]}}
      ]
    }"#;

    #[test]
    fn secrets_become_endpoint_headers_and_environment_references() {
        let out = import(WITH_SECRETS, "x.json", &|_| None).unwrap();
        assert!(
            !out.experiment_yaml.contains("Bearer"),
            "{}",
            out.experiment_yaml
        );
        assert!(
            !out.experiment_yaml.contains('\u{E000}'),
            "{}",
            out.experiment_yaml
        );
        let cfg = crate::config::Config::from_toml(&out.config_toml).unwrap();
        let secret = cfg
            .targets
            .http
            .iter()
            .find(|h| !h.headers.is_empty())
            .unwrap();
        assert_eq!(
            secret.headers.0.get("Authorization").map(String::as_str),
            Some("Bearer ${API_TOKEN}")
        );
        assert_eq!(
            secret.headers.0.get("X-Static").map(String::as_str),
            Some("s$$3")
        );
        assert!(secret.headers.check().is_ok());
        // The probe without secrets calls another endpoint entry of the same base, and the
        // header without secrets stays on the probe.
        assert_eq!(cfg.targets.http.len(), 2, "{}", out.config_toml);
        assert!(
            out.experiment_yaml.contains("Accept"),
            "{}",
            out.experiment_yaml
        );
        let cmd = &cfg.targets.command[0];
        assert_eq!(
            cmd.shell.as_deref(),
            Some(r#"'check' '--token' "$API_TOKEN" 'it'\''s ''s$3'"#)
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("inline secret `static`"))
        );
        assert!(
            !out.notes
                .iter()
                .any(|n| n.contains("inline secret `token`"))
        );
    }

    #[test]
    fn vault_secrets_and_secrets_in_urls_are_refused_located() {
        let text = WITH_SECRETS
            .replace(
                r#""static": "s$3""#,
                r#""static": "s$3", "db": {"type": "vault", "path": "secret/db"}"#,
            )
            .replace("${base}/public", "${base}/public?key=${token}")
            .replace(
                r#"{"type": "action", "name": "call","#,
                r#"{"type": "action", "name": "slow", "provider": {"type": "python",
                    "module": "chaostoxi.toxic.actions", "func": "create_latency_toxic",
                    "arguments": {"for_proxy": "${token}", "toxic_name": "l", "latency": 9}}},
                   {"type": "action", "name": "call","#,
            );
        let problems = import(&text, "x.json", &|_| None).unwrap_err();
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("/secrets/api/db") && t.contains("Vault")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("/steady-state-hypothesis/probes/1/provider")
                    && t.contains("secret `token`")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("/method/0/provider") && t.contains("secret `token`")),
            "{texts:?}"
        );
    }
}
