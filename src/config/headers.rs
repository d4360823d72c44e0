//! Headers an endpoint sends with every request, for credentials kept out of experiments.
//!
//! The operator writes them on a `[[targets.http]]` entry; each value is a template in which
//! `${VAR}` stands for the environment variable `VAR` of the process making the request (and
//! `$$` for one `$`). Experiments, journals, reports and Slack only ever hold the template: the
//! value is read when a request is built and goes nowhere but onto the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `name → template`, as written in the operator config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderTemplates(pub BTreeMap<String, String>);

/// Why the headers cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "header `{header}` of the endpoint reads the environment variable `{var}`, which is not set; set it where chaosbot (or the agent generating the load) runs"
    )]
    Unset { header: String, var: String },
    #[error(
        "header `{header}` of the endpoint reads the environment variable `{var}`, whose value is not a valid header value (line breaks or control characters)"
    )]
    BadValue { header: String, var: String },
}

/// One piece of a template.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and `${VAR}` references, or says what is wrong with it.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        if let Some(more) = after.strip_prefix('$') {
            out.push(Piece::Text("$"));
            rest = more;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!(
                    "`${{` at byte {i} is not closed; write `${{VAR}}`, or `$$` for a `$`"
                ));
            };
            let var = &body[..end];
            if !HeaderTemplates::is_variable_name(var) {
                return Err(format!(
                    "`${{{var}}}` does not name an environment variable (letters, digits and `_`, not starting with a digit)"
                ));
            }
            out.push(Piece::Var(var));
            rest = &body[end + 1..];
        } else {
            return Err(format!(
                "a `$` at byte {i} starts neither `${{VAR}}` nor `$$`; write `$$` for a `$`"
            ));
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

impl HeaderTemplates {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` written as a template that stands for itself (`$` doubled).
    pub fn literal(text: &str) -> String {
        text.replace('$', "$$")
    }

    /// A template for the environment variable `var`.
    pub fn variable(var: &str) -> String {
        format!("${{{var}}}")
    }

    /// Whether `name` can be read as `${name}`.
    pub fn is_variable_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Header names HTTP can carry and templates that parse; the first problem otherwise.
    pub fn check(&self) -> Result<(), String> {
        for (name, template) in &self.0 {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!(
                    "`{name}` is not an HTTP header name (letters, digits and -, like `Authorization`)"
                ));
            }
            let ps = pieces(template).map_err(|e| format!("header `{name}`: {e}"))?;
            for p in ps {
                if let Piece::Text(t) = p
                    && reqwest::header::HeaderValue::from_str(t).is_err()
                {
                    return Err(format!(
                        "header `{name}` holds characters a header value cannot carry"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The environment variables the templates read.
    pub fn variables(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .values()
            .filter_map(|t| pieces(t).ok())
            .flatten()
            .filter_map(|p| match p {
                Piece::Var(v) => Some(v.to_string()),
                Piece::Text(_) => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The headers with their values, read from `env` now.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, HeaderError> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, template) in &self.0 {
            // Checked when the config was loaded; a template that does not parse sends nothing.
            let Ok(ps) = pieces(template) else {
                continue;
            };
            let mut value = String::new();
            for p in ps {
                match p {
                    Piece::Text(t) => value.push_str(t),
                    Piece::Var(var) => {
                        let v = env(var).ok_or_else(|| HeaderError::Unset {
                            header: name.clone(),
                            var: var.to_string(),
                        })?;
                        if reqwest::header::HeaderValue::from_str(&v).is_err() {
                            return Err(HeaderError::BadValue {
                                header: name.clone(),
                                var: var.to_string(),
                            });
                        }
                        value.push_str(&v);
                    }
                }
            }
            out.push((name.clone(), value));
        }
        Ok(out)
    }

    /// A request's own headers with the endpoint's added, read from this process's
    /// environment; the endpoint's replace the request's of the same name (the operator's
    /// credentials are not the experiment's to change).
    pub fn over(
        &self,
        request: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, HeaderError> {
        self.over_with(request, &|v| std::env::var(v).ok())
    }

    fn over_with(
        &self,
        request: &BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, HeaderError> {
        if self.is_empty() {
            return Ok(request.clone());
        }
        let ours = self.resolve(env)?;
        let mut out: BTreeMap<String, String> = request
            .iter()
            .filter(|(k, _)| !ours.iter().any(|(o, _)| o.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.extend(ours);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(pairs: &[(&str, &str)]) -> HeaderTemplates {
        HeaderTemplates(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn variables_are_read_when_resolved_and_dollars_escape() {
        let t = templates(&[
            ("Authorization", "Bearer ${TOKEN}"),
            ("X-Cost", "$$5 ${A}${B}"),
        ]);
        assert!(t.check().is_ok());
        assert_eq!(t.variables(), vec!["A", "B", "TOKEN"]);
        let env = |v: &str| match v {
            "TOKEN" => Some("s3cret".to_string()),
            "A" => Some("a".to_string()),
            "B" => Some("b".to_string()),
            _ => None,
        };
        assert_eq!(
            t.resolve(&env).unwrap(),
            vec![
                ("Authorization".to_string(), "Bearer s3cret".to_string()),
                ("X-Cost".to_string(), "$5 ab".to_string()),
            ]
        );
        assert_eq!(HeaderTemplates::literal("a$b"), "a$$b");
        let round = templates(&[("X", &HeaderTemplates::literal("a${b}$"))]);
        assert_eq!(round.resolve(&env).unwrap()[0].1, "a${b}$");
    }

    #[test]
    fn an_unset_variable_or_a_bad_value_is_named() {
        let t = templates(&[("Authorization", "Bearer ${TOKEN}")]);
        let err = t.resolve(&|_| None).unwrap_err();
        assert_eq!(
            err,
            HeaderError::Unset {
                header: "Authorization".into(),
                var: "TOKEN".into()
            }
        );
        assert!(err.to_string().contains("`TOKEN`"), "{err}");
        let err = t.resolve(&|_| Some("a\nb".into())).unwrap_err();
        assert!(matches!(err, HeaderError::BadValue { .. }), "{err}");
    }

    #[test]
    fn bad_templates_and_names_are_refused() {
        for (name, value, needle) in [
            ("Authorization", "Bearer ${TOKEN", "not closed"),
            ("Authorization", "Bearer ${1X}", "does not name"),
            ("Authorization", "cost $5", "`$$`"),
            ("Bad Name", "x", "not an HTTP header name"),
            ("X", "a\nb", "cannot carry"),
        ] {
            let err = templates(&[(name, value)]).check().unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
    }

    #[test]
    fn the_endpoints_headers_replace_the_requests_of_the_same_name() {
        let t = templates(&[("authorization", "${TOKEN}")]);
        let request: BTreeMap<String, String> = [
            ("Authorization".to_string(), "from-experiment".to_string()),
            ("Accept".to_string(), "text/plain".to_string()),
        ]
        .into();
        let out = t.over_with(&request, &|_| Some("from-env".into())).unwrap();
        assert_eq!(
            out.get("authorization").map(String::as_str),
            Some("from-env")
        );
        assert_eq!(out.get("Accept").map(String::as_str), Some("text/plain"));
        assert!(!out.contains_key("Authorization"));
    }
}
