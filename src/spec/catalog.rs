//! A catalog: a folder of experiment files (`*.yaml`, `*.yml`), each parsed with its parameter
//! defaults. A bad file does not hide the good ones: its problems are listed next to them.

use std::path::{Path, PathBuf};

use super::params::ParamInfo;
use super::{Problem, SpecErrors, did_you_mean, model, parse_experiment, parse_full};
use crate::config::Config;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
    /// Problems of files that did not load (and of the folder itself).
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub path: PathBuf,
    /// The file's text, so a run resolves exactly what was listed.
    pub text: String,
    /// The experiment with its parameter defaults.
    pub experiment: model::Experiment,
    pub parameters: Vec<ParamInfo>,
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not recursing), in name order.
pub fn load_catalog(dir: &Path, cfg: &Config) -> Catalog {
    let mut catalog = Catalog::default();
    let folder_problem = |message: String, hint: &str| Problem {
        file: dir.display().to_string(),
        line: 0,
        column: 0,
        message,
        hint: Some(hint.to_string()),
    };
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                "the experiment catalog folder does not exist".to_string()
            } else {
                format!("cannot read the experiment catalog folder: {e}")
            };
            catalog.problems.push(folder_problem(
                message,
                "create it, or point `catalog` in the config (or CHAOSBOT_CATALOG) at the folder of experiment YAML files",
            ));
            return catalog;
        }
    };
    let mut paths: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    paths.sort();
    for path in paths {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                catalog.problems.push(Problem {
                    file,
                    line: 0,
                    column: 0,
                    message: format!("cannot read the experiment file: {e}"),
                    hint: Some("check that the file is readable and UTF-8".into()),
                });
                continue;
            }
        };
        let parsed = parse_full(&text, &file, cfg, &[]);
        match parsed.experiment {
            Some(experiment) if parsed.problems.is_empty() => {
                if let Some(other) = catalog
                    .entries
                    .iter()
                    .find(|e| e.experiment.name == experiment.name)
                {
                    catalog.problems.push(Problem {
                        file,
                        line: 1,
                        column: 1,
                        message: format!(
                            "experiment name `{}` is already used by {}",
                            experiment.name,
                            other.path.display()
                        ),
                        hint: Some("give every experiment in the catalog its own name".into()),
                    });
                    continue;
                }
                catalog.entries.push(CatalogEntry {
                    path,
                    text,
                    experiment,
                    parameters: parsed.params,
                });
            }
            _ => catalog.problems.extend(parsed.problems),
        }
    }
    catalog
}

impl Catalog {
    /// The experiment called `name`, or a message with the closest name.
    pub fn find(&self, name: &str) -> Result<&CatalogEntry, String> {
        if let Some(e) = self.entries.iter().find(|e| e.experiment.name == name) {
            return Ok(e);
        }
        let names: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.experiment.name.as_str())
            .collect();
        Err(match did_you_mean(name, names.iter().copied()) {
            Some(s) => format!("no experiment `{name}`; did you mean `{s}`?"),
            None if names.is_empty() => format!("no experiment `{name}`; the catalog is empty"),
            None => format!(
                "no experiment `{name}`; the catalog has: {}",
                names.join(", ")
            ),
        })
    }

    /// The experiment called `name`, resolved with `overrides`.
    pub fn resolve(
        &self,
        name: &str,
        cfg: &Config,
        overrides: &[(String, String)],
    ) -> Result<model::Experiment, SpecErrors> {
        let entry = self.find(name).map_err(|message| SpecErrors {
            problems: vec![Problem {
                file: "catalog".into(),
                line: 0,
                column: 0,
                message,
                hint: Some("list the catalog to see every experiment's name".into()),
            }],
        })?;
        parse_experiment(
            &entry.text,
            &entry.path.display().to_string(),
            cfg,
            overrides,
        )
    }
}
