//! Experiment definitions: YAML in a catalog folder, parsed, parameter-substituted and
//! validated against the operator config into a [`model::Experiment`].
//!
//! Every problem is reported with file, line and column and a hint, and all problems of a file
//! are reported at once (not just the first).

pub mod catalog;
pub mod chaostoolkit;
pub mod locate;
pub mod model;
pub mod params;
pub mod raw;
pub mod validate;

use std::fmt;
use std::path::Path;

use crate::config::Config;

pub use crate::config::{duration_serde, opt_duration_serde};
pub use catalog::{Catalog, CatalogEntry, load_catalog};
pub use params::{ParamInfo, ParamKind, parse_override};

/// Parses, substitutes parameters (defaults plus `overrides`) and validates one experiment.
/// `file` is the name used in problems. All problems of the file are returned at once.
pub fn parse_experiment(
    text: &str,
    file: &str,
    cfg: &Config,
    overrides: &[(String, String)],
) -> Result<model::Experiment, SpecErrors> {
    let parsed = parse_full(text, file, cfg, overrides);
    match parsed.experiment {
        Some(e) if parsed.problems.is_empty() => Ok(e),
        _ => Err(SpecErrors {
            problems: parsed.problems,
        }),
    }
}

/// Reads and parses one experiment file (an unreadable file is one problem).
pub fn load_experiment(
    path: &Path,
    cfg: &Config,
    overrides: &[(String, String)],
) -> Result<model::Experiment, SpecErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_experiment(&text, &file, cfg, overrides),
        Err(e) => Err(SpecErrors {
            problems: vec![Problem {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read the experiment file: {e}"),
                hint: Some("check the path and that the file is readable (and UTF-8)".into()),
            }],
        }),
    }
}

/// What one pass over a file found: the experiment (when it is valid), its declared
/// parameters and every problem.
pub(crate) struct Parsed {
    pub experiment: Option<model::Experiment>,
    pub params: Vec<ParamInfo>,
    pub problems: Vec<Problem>,
}

pub(crate) fn parse_full(
    text: &str,
    file: &str,
    cfg: &Config,
    overrides: &[(String, String)],
) -> Parsed {
    let mut problems = Vec::new();
    let fail = |problems: Vec<Problem>| Parsed {
        experiment: None,
        params: Vec::new(),
        problems,
    };
    let (root, tree_problems) = match locate::parse_tree(text) {
        Ok(t) => t,
        Err(p) => return fail(vec![Problem::at(file, p.pos, p.message, p.hint)]),
    };
    for p in tree_problems {
        problems.push(Problem::at(file, p.pos, p.message, p.hint));
    }
    let Some(mut root) = root.filter(|r| !r.is_null()) else {
        problems.push(Problem {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: "the file is empty".into(),
            hint: Some(
                "write an experiment: name, title, owner, hypothesis and method (see docs/experiment-format.md)"
                    .into(),
            ),
        });
        return fail(problems);
    };
    let (infos, p) = params::declarations(&root, file);
    problems.extend(p);
    let (values, p) = params::resolve(&infos, overrides);
    problems.extend(p);
    // Names declared (even with a bad declaration) are not "undeclared" references.
    let declared: Vec<String> = match root.get("parameters").map(|n| &n.kind) {
        Some(locate::NodeKind::Map(entries)) => entries.iter().map(|e| e.key.clone()).collect(),
        _ => Vec::new(),
    };
    problems.extend(params::substitute(&mut root, &values, &declared, file));
    // Substitution keeps the shape and every position; read after it, the map also knows
    // which values a parameter left empty.
    let loc = locate::Locations::of(&root);

    let (raw, errors) = locate::from_tree::<raw::RawExperiment>(root.clone(), &[]);
    let mut suggested = std::collections::HashSet::new();
    let mut rejected = std::collections::HashSet::new();
    for e in &errors {
        let (p, s) = validate::de_problem(file, e, &root);
        problems.push(p);
        suggested.extend(s);
        rejected.extend(e.path.as_deref().map(locate::path_string));
    }
    let raw = raw.unwrap_or_default();
    let (experiment, p) =
        validate::experiment(file, &loc, cfg, &raw, values, &suggested, &rejected);
    problems.extend(p);
    problems.sort_by_key(|p| (p.file != file, p.line, p.column));
    problems.dedup();
    Parsed {
        experiment,
        params: infos,
        problems,
    }
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    crate::suggest::closest(word, candidates).map(str::to_string)
}

/// One problem found in an experiment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub(crate) fn at(
        file: &str,
        pos: locate::Pos,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// All the problems of one or more files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
