//! Experiment parameters: their declarations, `--set name=value` overrides with type and bound
//! checks, and `${name}` substitution into the located tree.
//!
//! A scalar that is exactly `${name}` is replaced by the parameter's value as a plain YAML
//! scalar (so a number stays a number); `${name}` inside a longer string is replaced textually.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::locate::{self, Node, NodeKind, Seg};
use super::raw::RawParams;
use super::{Problem, did_you_mean, duration_serde};

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Duration,
    Number,
    Integer,
    String,
}

impl ParamKind {
    pub const NAMES: &'static [&'static str] = &["duration", "number", "integer", "string"];

    pub fn parse(s: &str) -> Option<ParamKind> {
        Some(match s {
            "duration" => ParamKind::Duration,
            "number" => ParamKind::Number,
            "integer" => ParamKind::Integer,
            "string" => ParamKind::String,
            _ => return None,
        })
    }

    fn example(self) -> &'static str {
        match self {
            ParamKind::Duration => "250ms or 30s",
            ParamKind::Number => "0.5",
            ParamKind::Integer => "10",
            ParamKind::String => "any text",
        }
    }
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamKind::Duration => "duration",
            ParamKind::Number => "number",
            ParamKind::Integer => "integer",
            ParamKind::String => "string",
        })
    }
}

/// A declared parameter, as listed in a catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub kind: ParamKind,
    pub default: String,
    pub min: Option<String>,
    pub max: Option<String>,
    pub description: String,
}

impl ParamInfo {
    /// "a duration between 0ms and 2s", for messages.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ParamKind::Integer => "an integer".to_string(),
            k => format!("a {k}"),
        };
        match (&self.min, &self.max) {
            (Some(lo), Some(hi)) => format!("{kind} between {lo} and {hi}"),
            (Some(lo), None) => format!("{kind} of at least {lo}"),
            (None, Some(hi)) => format!("{kind} of at most {hi}"),
            (None, None) => kind,
        }
    }

    /// Checks that `text` is a value of this parameter's type within its bounds.
    pub fn check(&self, text: &str) -> Result<(), String> {
        let v = parse_value(self.kind, text)?;
        if let Some(lo) = &self.min
            && let Ok(lo_v) = parse_value(self.kind, lo)
            && compare(&v, &lo_v) == Some(Ordering::Less)
        {
            return Err(format!("`{text}` is below the minimum {lo}"));
        }
        if let Some(hi) = &self.max
            && let Ok(hi_v) = parse_value(self.kind, hi)
            && compare(&v, &hi_v) == Some(Ordering::Greater)
        {
            return Err(format!("`{text}` is above the maximum {hi}"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Dur(Duration),
    Num(f64),
    Int(i64),
    Str,
}

fn parse_value(kind: ParamKind, text: &str) -> Result<Value, String> {
    let t = text.trim();
    match kind {
        ParamKind::Duration => duration_serde::parse(t).map(Value::Dur),
        ParamKind::Number => match t.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Num(f)),
            _ => Err(format!("`{t}` is not a number; write it like 0.5 or 10")),
        },
        ParamKind::Integer => t
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("`{t}` is not a whole number; write it like 10")),
        ParamKind::String => Ok(Value::Str),
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Dur(a), Value::Dur(b)) => Some(a.cmp(b)),
        (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Reads and checks the `parameters` declarations of a file.
pub(crate) fn declarations(root: &Node, file: &str) -> (Vec<ParamInfo>, Vec<Problem>) {
    let mut problems = Vec::new();
    let Some(node) = root.get("parameters") else {
        return (Vec::new(), problems);
    };
    let base = [Seg::Key("parameters".into())];
    let (raw, errors) = locate::from_tree::<RawParams>(node.clone(), &base);
    for e in errors {
        problems.push(super::validate::de_problem(file, &e, root).0);
    }
    let Some(RawParams(raw)) = raw else {
        return (Vec::new(), problems);
    };
    let loc = locate::Locations::of(root);
    let mut out = Vec::new();
    for (name, p) in raw {
        let path = format!("parameters.{name}");
        let at = |sub: &str| {
            if sub.is_empty() {
                loc.key(&path)
            } else {
                loc.value(&format!("{path}.{sub}"))
            }
        };
        let mut ok = true;
        if !valid_name(&name) {
            problems.push(Problem::at(
                file,
                at(""),
                format!("parameter name `{name}` has characters a `${{...}}` reference cannot use"),
                "use letters, digits, `_` and `-` only, like `latency` or `max_rate`",
            ));
            ok = false;
        }
        let kind = match p.kind.as_deref() {
            None => {
                problems.push(Problem::at(
                    file,
                    at(""),
                    format!("parameter `{name}` has no `type`"),
                    "add `type: duration`, `number`, `integer` or `string`",
                ));
                None
            }
            Some(k) => match ParamKind::parse(k) {
                Some(kind) => Some(kind),
                None => {
                    let hint = match did_you_mean(k, ParamKind::NAMES.iter().copied()) {
                        Some(s) => format!(
                            "did you mean `{s}`? types are duration, number, integer, string"
                        ),
                        None => "types are duration, number, integer, string".into(),
                    };
                    problems.push(Problem::at(
                        file,
                        at("type"),
                        format!("parameter `{name}` has unknown type `{k}`"),
                        hint,
                    ));
                    None
                }
            },
        };
        let Some(kind) = kind else { continue };
        let Some(default) = p.default.clone() else {
            problems.push(Problem::at(
                file,
                at(""),
                format!("parameter `{name}` has no `default`"),
                format!(
                    "add a default value, like `default: {}`",
                    kind.example().split(' ').next().unwrap_or("1")
                ),
            ));
            continue;
        };
        for (key, v) in [
            ("default", Some(&default)),
            ("min", p.min.as_ref()),
            ("max", p.max.as_ref()),
        ] {
            let Some(v) = v else { continue };
            if kind == ParamKind::String && key != "default" {
                problems.push(Problem::at(
                    file,
                    at(key),
                    format!("parameter `{name}` is a string; `{key}` does not apply"),
                    "remove it, or change the type to duration, number or integer",
                ));
                ok = false;
                continue;
            }
            if let Err(why) = parse_value(kind, v) {
                problems.push(Problem::at(
                    file,
                    at(key),
                    format!("parameter `{name}`: {key} {why}"),
                    format!("`{name}` is a {kind}; write it like {}", kind.example()),
                ));
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let info = ParamInfo {
            name: name.clone(),
            kind,
            default: default.clone(),
            min: p.min.clone(),
            max: p.max.clone(),
            description: p.description.clone().unwrap_or_default(),
        };
        if let (Some(lo), Some(hi)) = (&info.min, &info.max)
            && let (Ok(lo_v), Ok(hi_v)) = (parse_value(kind, lo), parse_value(kind, hi))
            && compare(&lo_v, &hi_v) == Some(Ordering::Greater)
        {
            problems.push(Problem::at(
                file,
                at("min"),
                format!("parameter `{name}`: min {lo} is above max {hi}"),
                "swap them, or fix the one that is wrong",
            ));
            continue;
        }
        if let Err(why) = info.check(&default) {
            problems.push(Problem::at(
                file,
                at("default"),
                format!("parameter `{name}`: default {why}"),
                format!("the default must be {}", info.describe()),
            ));
        }
        out.push(info);
    }
    (out, problems)
}

/// Parses one `--set` argument, `name=value`.
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    let Some((k, v)) = arg.split_once('=') else {
        return Err(format!(
            "`{arg}` is not an override; write it as name=value, like latency=500ms"
        ));
    };
    let k = k.trim();
    if k.is_empty() {
        return Err(format!(
            "`{arg}` has no parameter name before `=`; write it as name=value, like latency=500ms"
        ));
    }
    if !valid_name(k) {
        return Err(format!(
            "`{k}` is not a parameter name; names use letters, digits, `_` and `-`"
        ));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// The value of every declared parameter: its default, or its override when one is given.
pub(crate) fn resolve(
    infos: &[ParamInfo],
    overrides: &[(String, String)],
) -> (BTreeMap<String, String>, Vec<Problem>) {
    let mut values: BTreeMap<String, String> = infos
        .iter()
        .map(|p| (p.name.clone(), p.default.clone()))
        .collect();
    let mut problems = Vec::new();
    let set = |message: String, hint: String| Problem {
        file: "--set".into(),
        line: 0,
        column: 0,
        message,
        hint: Some(hint),
    };
    for (name, value) in overrides {
        let Some(info) = infos.iter().find(|p| &p.name == name) else {
            let names: Vec<&str> = infos.iter().map(|p| p.name.as_str()).collect();
            let hint = match did_you_mean(name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => "this experiment declares no parameters".into(),
                None => format!("this experiment's parameters are: {}", names.join(", ")),
            };
            problems.push(set(
                format!("`{name}={value}`: this experiment has no parameter `{name}`"),
                hint,
            ));
            continue;
        };
        match info.check(value) {
            Ok(()) => {
                values.insert(name.clone(), value.clone());
            }
            Err(why) => problems.push(set(
                format!("`{name}={value}`: {why}"),
                format!("`{name}` must be {}", info.describe()),
            )),
        }
    }
    (values, problems)
}

/// Replaces `${name}` in every scalar outside `parameters`; undeclared names are problems.
pub(crate) fn substitute(
    root: &mut Node,
    values: &BTreeMap<String, String>,
    declared: &[String],
    file: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let NodeKind::Map(entries) = &mut root.kind {
        for e in entries.iter_mut().filter(|e| e.key != "parameters") {
            walk(&mut e.value, values, declared, file, &mut problems);
        }
    }
    problems
}

fn walk(
    node: &mut Node,
    values: &BTreeMap<String, String>,
    declared: &[String],
    file: &str,
    problems: &mut Vec<Problem>,
) {
    let pos = node.pos;
    match &mut node.kind {
        NodeKind::Map(entries) => {
            for e in entries {
                walk(&mut e.value, values, declared, file, problems);
            }
        }
        NodeKind::Seq(items) => {
            for i in items {
                walk(i, values, declared, file, problems);
            }
        }
        NodeKind::Skip => {}
        NodeKind::Scalar { text, plain } => {
            if !text.contains("${") {
                return;
            }
            let mut out = String::new();
            let mut rest = text.as_str();
            let mut whole = None;
            let mut unresolved = false;
            while let Some(start) = rest.find("${") {
                let Some(len) = rest[start..].find('}') else {
                    break;
                };
                let name = &rest[start + 2..start + len];
                out.push_str(&rest[..start]);
                match values.get(name) {
                    Some(v) => {
                        if start == 0 && len + 1 == rest.len() && out.is_empty() {
                            whole = Some(v.clone());
                        }
                        out.push_str(v);
                    }
                    None => {
                        let hint = match did_you_mean(name, declared.iter().map(String::as_str)) {
                            Some(s) => format!("did you mean `${{{s}}}`?"),
                            None if declared.is_empty() => {
                                "declare it under `parameters:` with a type and a default".into()
                            }
                            None => format!(
                                "declare it under `parameters:`; declared: {}",
                                declared.join(", ")
                            ),
                        };
                        // A declared parameter with a bad declaration is reported there.
                        if !declared.iter().any(|d| d == name) {
                            problems.push(Problem::at(
                                file,
                                pos,
                                format!("`${{{name}}}` names no declared parameter"),
                                hint,
                            ));
                        }
                        unresolved = true;
                        out.push_str(&rest[start..start + len + 1]);
                    }
                }
                rest = &rest[start + len + 1..];
            }
            out.push_str(rest);
            if unresolved {
                // Reported above; set aside so it is not also reported as a bad value.
                node.kind = NodeKind::Skip;
            } else if let Some(v) = whole {
                *text = v;
                *plain = true;
            } else {
                *text = out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: ParamKind, default: &str, min: Option<&str>, max: Option<&str>) -> ParamInfo {
        ParamInfo {
            name: "p".into(),
            kind,
            default: default.into(),
            min: min.map(Into::into),
            max: max.map(Into::into),
            description: String::new(),
        }
    }

    #[test]
    fn override_syntax() {
        assert_eq!(
            parse_override("latency=500ms").unwrap(),
            ("latency".into(), "500ms".into())
        );
        assert_eq!(parse_override("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(
            parse_override("latency")
                .unwrap_err()
                .contains("name=value")
        );
        assert!(
            parse_override("=5")
                .unwrap_err()
                .contains("no parameter name")
        );
        assert!(parse_override("a b=5").is_err());
    }

    #[test]
    fn bounds_per_kind() {
        let d = info(ParamKind::Duration, "250ms", Some("0ms"), Some("2s"));
        assert!(d.check("2s").is_ok());
        assert!(d.check("3s").unwrap_err().contains("above the maximum 2s"));
        assert!(d.check("-1s").unwrap_err().contains("negative"));
        assert_eq!(d.describe(), "a duration between 0ms and 2s");
        let n = info(ParamKind::Number, "0.5", Some("0"), Some("1"));
        assert!(n.check("1.5").unwrap_err().contains("above"));
        assert!(n.check("x").unwrap_err().contains("not a number"));
        let i = info(ParamKind::Integer, "3", Some("1"), None);
        assert!(i.check("0").unwrap_err().contains("below the minimum 1"));
        assert!(i.check("1.5").unwrap_err().contains("whole number"));
    }

    #[test]
    fn substitution_whole_and_inside() {
        let (root, _) = locate::parse_tree("a: ${x}\nb: \"pre-${x}-post\"\nc: ${nope}\n").unwrap();
        let mut root = root.unwrap();
        let values = BTreeMap::from([("x".to_string(), "1.5".to_string())]);
        let problems = substitute(&mut root, &values, &["x".into()], "f.yaml");
        assert_eq!(
            root.get("a").unwrap().kind,
            NodeKind::Scalar {
                text: "1.5".into(),
                plain: true
            }
        );
        assert_eq!(root.get("b").unwrap().scalar(), Some("pre-1.5-post"));
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (3, 4));
    }
}
