//! Judges a probe's output (a JSON mapping) against its [`Expect`], with Chaos Toolkit's
//! tolerance semantics (chaostoolkit-lib `chaoslib/hypothesis.py`, `within_tolerance`).

use serde_json::Value;

use crate::spec::model::Expect;

/// `Ok(detail)` when the output meets the expectation, `Err(why)` when not.
pub fn judge(expect: &Expect, output: &Value) -> Result<String, String> {
    match expect {
        Expect::Status(codes) => {
            let status = output.get("status").and_then(Value::as_i64);
            match status {
                Some(s) if codes.contains(&s) => Ok(format!("status {s}")),
                Some(s) => Err(format!("status {s}, expected {}", list(codes))),
                None => Err("the output has no status".into()),
            }
        }
        Expect::Equals(v) => {
            if output == v {
                Ok(format!("the output equals {v}"))
            } else {
                Err(format!(
                    "the output is not {v} (it is a mapping with {})",
                    keys(output)
                ))
            }
        }
        Expect::Regex { target, pattern } => {
            let text = text_of(output, target)?;
            let rx = regex::Regex::new(pattern).map_err(|e| format!("pattern: {e}"))?;
            if rx.is_match(&text) {
                Ok(format!("`{target}` matches /{pattern}/"))
            } else {
                Err(format!("`{target}` does not match /{pattern}/"))
            }
        }
        Expect::JsonPath {
            target,
            path,
            values,
            count,
        } => {
            let doc = match target {
                None => output.clone(),
                Some(t) => match output.get(t) {
                    // A text body is read as JSON when it is JSON.
                    Some(Value::String(s)) => {
                        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                    }
                    Some(v) => v.clone(),
                    None => output.clone(),
                },
            };
            let jp = serde_json_path::JsonPath::parse(path).map_err(|e| e.to_string())?;
            let found: Vec<Value> = jp.query(&doc).all().into_iter().cloned().collect();
            let ok = match (values, count) {
                (Some(want), _) => &found == want,
                (None, Some(n)) => found.len() as u64 == *n,
                (None, None) => !found.is_empty(),
            };
            let shown = Value::Array(found.clone());
            if ok {
                Ok(format!("{path} → {shown}"))
            } else {
                let wanted = match (values, count) {
                    (Some(w), _) => format!("expected {}", Value::Array(w.clone())),
                    (None, Some(n)) => format!("expected {n} match(es)"),
                    (None, None) => "expected a match".to_string(),
                };
                Err(format!("{path} → {shown}, {wanted}"))
            }
        }
        Expect::Range { target, min, max } => {
            let v = output.get(target).unwrap_or(output);
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if *min <= n && n <= *max => Ok(format!("`{target}` = {n}")),
                Some(n) => Err(format!("`{target}` = {n}, outside [{min}, {max}]")),
                None => Err(format!("`{target}` is not a number")),
            }
        }
    }
}

fn text_of(output: &Value, target: &str) -> Result<String, String> {
    match output.get(target) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(v) => Ok(v.to_string()),
        None => Err(format!(
            "the output has no `{target}` (it has {})",
            keys(output)
        )),
    }
}

fn keys(v: &Value) -> String {
    match v {
        Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => "no keys".into(),
    }
}

fn list(codes: &[i64]) -> String {
    codes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_form_follows_chaos_toolkit() {
        let out = json!({"status": 200, "headers": {}, "body": "{\"a\": [1, 2]}"});
        assert!(judge(&Expect::Status(vec![200, 201]), &out).is_ok());
        assert!(judge(&Expect::Status(vec![500]), &out).is_err());
        assert!(judge(&Expect::Equals(json!(true)), &out).is_err());
        let rx = |p: &str| Expect::Regex {
            target: "body".into(),
            pattern: p.into(),
        };
        assert!(judge(&rx(r#""a": \["#), &out).is_ok());
        assert!(judge(&rx("^nope"), &out).is_err());
        let jp = |values: Option<Vec<Value>>, count| Expect::JsonPath {
            target: Some("body".into()),
            path: "$.a[*]".into(),
            values,
            count,
        };
        assert!(judge(&jp(None, None), &out).is_ok());
        assert!(judge(&jp(None, Some(2)), &out).is_ok());
        assert!(judge(&jp(None, Some(3)), &out).is_err());
        assert!(judge(&jp(Some(vec![json!(1), json!(2)]), None), &out).is_ok());
        assert!(judge(&jp(Some(vec![json!("1"), json!(2)]), None), &out).is_err());
        let range = |min, max| Expect::Range {
            target: "status".into(),
            min,
            max,
        };
        assert!(judge(&range(200.0, 299.0), &out).is_ok());
        assert!(judge(&range(300.0, 399.0), &out).is_err());
    }
}
