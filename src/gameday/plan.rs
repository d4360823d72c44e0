//! Game-day plans: YAML files in `<catalog>/gamedays/`, each an agenda of catalog experiments
//! with their parameters. (The experiment catalog reads only the files directly in its folder,
//! so plans in the subfolder are never taken for experiments.)
//!
//! A plan is checked with the same care as an experiment: every problem at once, each with
//! file, line and column; unknown keys with the closest known one; unknown experiments with
//! the closest names in the catalog; each item's parameters checked by resolving the item
//! exactly as it will run. `docs/gamedays.md` describes the format for people.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
pub use crate::config::MAX_QA_WINDOW;
use crate::spec::locate::{self, Locations};
use crate::spec::model::Experiment;
use crate::spec::{Catalog, Problem, SpecErrors, validate};

/// The longest extra pause between two agenda items.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Agenda items per plan: a day's track, not a batch job.
pub const MAX_ITEMS: usize = 20;

/// The folder of plans inside a catalog.
pub fn plans_dir(catalog: &Path) -> PathBuf {
    catalog.join("gamedays")
}

/// A validated plan, every agenda item resolved. Stored as the game day's snapshot, so what
/// the opening message announced is what runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub owner: String,
    #[serde(with = "crate::spec::duration_serde")]
    pub qa_window: Duration,
    #[serde(with = "crate::spec::duration_serde")]
    pub pause_between: Duration,
    pub agenda: Vec<AgendaItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaItem {
    pub experiment: String,
    /// The item's title in the agenda (the experiment's title unless the plan sets one).
    pub title: String,
    /// The parameters the plan sets (the experiment's defaults fill the rest).
    pub params: BTreeMap<String, String>,
    /// The experiment resolved with those parameters.
    pub resolved: Experiment,
}

impl Plan {
    /// How long the runs take at most, without the windows between them.
    pub fn runs_duration(&self) -> Duration {
        self.agenda
            .iter()
            .map(|i| i.resolved.method_duration() + i.resolved.recovery_timeout)
            .sum()
    }

    /// An upper bound for the whole game day: every run at its longest, and the windows
    /// between them.
    pub fn longest_duration(&self) -> Duration {
        let gaps = self.agenda.len().saturating_sub(1) as u32;
        self.runs_duration() + (self.qa_window + self.pause_between) * gaps
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a game-day plan (a map with name, title, owner, agenda, ...)"
)]
struct RawPlan {
    name: Option<String>,
    title: Option<String>,
    description: Option<String>,
    owner: Option<String>,
    qa_window: Option<String>,
    pause_between: Option<String>,
    agenda: Option<Vec<RawItem>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an agenda item (a map with experiment, and optionally params and title)"
)]
struct RawItem {
    experiment: Option<String>,
    title: Option<String>,
    params: Option<BTreeMap<String, String>>,
}

/// True when `text` reads as a plan (its top level has an `agenda`), not an experiment.
pub fn looks_like_plan(text: &str) -> bool {
    locate::parse_tree(text)
        .ok()
        .and_then(|(root, _)| root)
        .is_some_and(|root| root.get("agenda").is_some())
}

/// True for a file `chaosbot validate` should check as a plan: it sits in a `gamedays`
/// folder, or its text reads as a plan.
pub fn is_plan_file(path: &Path) -> bool {
    let in_gamedays = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "gamedays");
    in_gamedays
        || std::fs::read_to_string(path)
            .map(|t| looks_like_plan(&t))
            .unwrap_or(false)
}

/// Parses and validates one plan against the config and the experiment catalog. All problems
/// of the file are returned at once.
pub fn parse_plan(
    text: &str,
    file: &str,
    cfg: &Config,
    catalog: &Catalog,
) -> Result<Plan, SpecErrors> {
    let fail = |problems: Vec<Problem>| Err(SpecErrors { problems });
    let (root, tree_problems) = match locate::parse_tree(text) {
        Ok(t) => t,
        Err(p) => return fail(vec![Problem::at(file, p.pos, p.message, p.hint)]),
    };
    let mut problems: Vec<Problem> = tree_problems
        .into_iter()
        .map(|p| Problem::at(file, p.pos, p.message, p.hint))
        .collect();
    let Some(root) = root.filter(|r| !r.is_null()) else {
        problems.push(Problem {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: "the plan file is empty".into(),
            hint: Some(
                "write a plan: name, title, owner and an agenda of experiments (see docs/gamedays.md)"
                    .into(),
            ),
        });
        return fail(problems);
    };
    let loc = Locations::of(&root);
    let (raw, errors) = locate::from_tree::<RawPlan>(root.clone(), &[]);
    let mut suggested = HashSet::new();
    for e in &errors {
        let (mut p, s) = validate::de_problem(file, e, &root);
        // de_problem points at the experiment format; plans have their own page.
        if let Some(h) = &mut p.hint {
            *h = h.replace("docs/experiment-format.md", "docs/gamedays.md");
        }
        problems.push(p);
        suggested.extend(s);
    }
    let raw = raw.unwrap_or_default();
    let mut cx = Cx {
        file,
        loc: &loc,
        problems,
        suggested: &suggested,
    };
    let plan = cx.plan(&raw, cfg, catalog);
    let mut problems = cx.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    match plan {
        Some(plan) if problems.is_empty() => Ok(plan),
        _ => fail(problems),
    }
}

/// Reads and validates one plan file.
pub fn load_plan(path: &Path, cfg: &Config, catalog: &Catalog) -> Result<Plan, SpecErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_plan(&text, &file, cfg, catalog),
        Err(e) => Err(SpecErrors {
            problems: vec![Problem {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read the plan file: {e}"),
                hint: Some("check the path and that the file is readable (and UTF-8)".into()),
            }],
        }),
    }
}

/// The plans of a catalog: every `*.yaml`/`*.yml` in `<catalog>/gamedays/`, in name order.
/// A bad plan does not hide the good ones.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub plans: Vec<(PathBuf, Plan)>,
    pub problems: Vec<Problem>,
    /// The name each file that did not validate gives itself (if it reads that far), and
    /// its problems: so asking for that plan explains what is wrong with it.
    broken: Vec<(Option<String>, Vec<Problem>)>,
}

impl Plans {
    /// The problems of the plan file(s) naming themselves `name`, as `line L:C: message (hint)`
    /// (no server paths: this is shown in Slack).
    pub fn problems_of(&self, name: &str) -> Vec<String> {
        self.broken
            .iter()
            .filter(|(n, _)| n.as_deref() == Some(name))
            .flat_map(|(_, problems)| problems)
            .map(|p| {
                let at = if p.line > 0 {
                    format!("line {}:{}: ", p.line, p.column)
                } else {
                    String::new()
                };
                match &p.hint {
                    Some(h) => format!("• {at}{} ({h})", p.message),
                    None => format!("• {at}{}", p.message),
                }
            })
            .collect()
    }

    /// The plan called `name`, or a message with the closest name.
    pub fn find(&self, name: &str) -> Result<&Plan, String> {
        if let Some((_, p)) = self.plans.iter().find(|(_, p)| p.name == name) {
            return Ok(p);
        }
        let names: Vec<&str> = self.plans.iter().map(|(_, p)| p.name.as_str()).collect();
        let broken = if self.problems.is_empty() {
            String::new()
        } else {
            format!(
                " ({} plan file(s) have problems; `chaosbot validate` on the server explains them)",
                self.problems
                    .iter()
                    .map(|p| &p.file)
                    .collect::<HashSet<_>>()
                    .len()
            )
        };
        Err(
            match crate::spec::did_you_mean(name, names.iter().copied()) {
                Some(s) => format!("no game-day plan `{name}`; did you mean `{s}`?{broken}"),
                None if names.is_empty() => format!(
                    "no game-day plan `{name}`: there are no valid plans in the catalog's `gamedays` folder{broken}"
                ),
                None => format!(
                    "no game-day plan `{name}`; the plans are: {}{broken}",
                    names.join(", ")
                ),
            },
        )
    }
}

pub fn load_plans(cfg: &Config, catalog: &Catalog) -> Plans {
    let dir = plans_dir(&cfg.catalog);
    let mut out = Plans::default();
    let Ok(read) = std::fs::read_dir(&dir) else {
        // No folder, no plans: not a problem (game days are optional).
        return out;
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
        match load_plan(&path, cfg, catalog) {
            Ok(plan) => {
                if let Some((other, _)) = out.plans.iter().find(|(_, p)| p.name == plan.name) {
                    out.problems.push(Problem {
                        file: path.display().to_string(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "plan name `{}` is already used by {}",
                            plan.name,
                            other.display()
                        ),
                        hint: Some("give every plan its own name".into()),
                    });
                    continue;
                }
                out.plans.push((path, plan));
            }
            Err(e) => {
                let name = std::fs::read_to_string(&path).ok().and_then(|t| {
                    locate::parse_tree(&t)
                        .ok()
                        .and_then(|(root, _)| root)
                        .and_then(|r| r.get("name").and_then(|n| n.scalar()).map(str::to_string))
                });
                out.broken.push((name, e.problems.clone()));
                out.problems.extend(e.problems);
            }
        }
    }
    out
}

struct Cx<'a> {
    file: &'a str,
    loc: &'a Locations,
    problems: Vec<Problem>,
    suggested: &'a HashSet<String>,
}

impl Cx<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let pos = self.loc.value(path);
        self.problems
            .push(Problem::at(self.file, pos, message, hint));
    }

    fn required(&mut self, path: &str, v: &Option<String>, example: &str) -> Option<String> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                if (!self.loc.has(path) || v.is_some()) && !self.suggested.contains(path) {
                    let key = path.rsplit('.').next().unwrap_or(path);
                    self.at(
                        path,
                        format!("the plan is missing `{key}`"),
                        format!("add it, like `{key}: {example}`"),
                    );
                }
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &str,
        v: &Option<String>,
        default: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let Some(text) = v.as_deref() else {
            return Some(default);
        };
        match crate::spec::duration_serde::parse(text) {
            Ok(d) if d > max => {
                self.at(
                    path,
                    format!(
                        "`{path}` is {}, above the limit of {}",
                        humantime::format_duration(d),
                        humantime::format_duration(max)
                    ),
                    format!("use at most {}", humantime::format_duration(max)),
                );
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                self.at(path, format!("`{path}`: {m}"), "write it like 10m or 30s");
                None
            }
        }
    }

    fn plan(&mut self, raw: &RawPlan, cfg: &Config, catalog: &Catalog) -> Option<Plan> {
        let name = self.required("name", &raw.name, "api-resilience-day");
        if let Some(n) = &name {
            let slug = n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !slug {
                self.at(
                    "name",
                    format!("name `{n}` is not a slug"),
                    "use 1 to 64 lowercase letters, digits and `-`, like `api-resilience-day`; people type it in chat",
                );
            } else if n == "stop" || n == "list" {
                self.at(
                    "name",
                    format!("name `{n}` is a word of the `gameday` command"),
                    "choose another name, like `api-resilience-day`",
                );
            }
        }
        let title = self.required("title", &raw.title, "API resilience game day");
        let owner = self.required("owner", &raw.owner, "\"@sre-api\"");
        let qa_window = self.duration(
            "qa_window",
            &raw.qa_window,
            cfg.gameday.qa_window,
            MAX_QA_WINDOW,
        );
        let pause_between = self.duration(
            "pause_between",
            &raw.pause_between,
            Duration::ZERO,
            MAX_PAUSE,
        );
        let agenda = self.agenda(raw, cfg, catalog);
        Some(Plan {
            name: name?,
            title: title?,
            description: raw.description.clone().unwrap_or_default(),
            owner: owner?,
            qa_window: qa_window?,
            pause_between: pause_between?,
            agenda: agenda?,
        })
    }

    fn agenda(
        &mut self,
        raw: &RawPlan,
        cfg: &Config,
        catalog: &Catalog,
    ) -> Option<Vec<AgendaItem>> {
        let items = match &raw.agenda {
            Some(items) if !items.is_empty() => items,
            Some(_) => {
                self.at(
                    "agenda",
                    "the agenda is empty",
                    "list the experiments to run, one `- experiment: <name>` per line",
                );
                return None;
            }
            None => {
                if !self.loc.has("agenda") && !self.suggested.contains("agenda") {
                    self.at(
                        "agenda",
                        "the plan is missing `agenda`",
                        "add the experiments to run: `agenda: [{experiment: api-latency}]`, or one `- experiment: <name>` per line",
                    );
                }
                return None;
            }
        };
        if items.len() > MAX_ITEMS {
            self.at(
                "agenda",
                format!(
                    "the agenda has {} items; a game day runs at most {MAX_ITEMS}",
                    items.len()
                ),
                "split it into several game days",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let base = format!("agenda[{i}]");
            let exp_path = format!("{base}.experiment");
            let Some(name) = self.required(&exp_path, &item.experiment, "api-latency") else {
                ok = false;
                continue;
            };
            if let Err(m) = catalog.find(&name) {
                self.at(
                    &exp_path,
                    format!("agenda item {}: {m}", i + 1),
                    "name an experiment of the catalog; `/chaos list` shows them",
                );
                ok = false;
                continue;
            }
            let params = item.params.clone().unwrap_or_default();
            let overrides: Vec<(String, String)> =
                params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let params_path = if self.loc.has(&format!("{base}.params")) {
                format!("{base}.params")
            } else {
                exp_path.clone()
            };
            match catalog.resolve(&name, cfg, &overrides) {
                Ok(resolved) => {
                    let longest = resolved.method_duration() + resolved.recovery_timeout;
                    let limit = cfg.guard_rails.max_run_duration;
                    if longest > limit {
                        self.at(
                            &params_path,
                            format!(
                                "agenda item {} (`{name}`) may run for up to {}, above the guard rail of {}",
                                i + 1,
                                humantime::format_duration(longest),
                                humantime::format_duration(limit)
                            ),
                            "shorten it with its parameters, or raise guard_rails.max_run_duration",
                        );
                        ok = false;
                        continue;
                    }
                    let title = item
                        .title
                        .as_deref()
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| resolved.title.clone());
                    out.push(AgendaItem {
                        experiment: name,
                        title,
                        params,
                        resolved,
                    });
                }
                Err(errors) => {
                    for p in errors.problems {
                        // Point at the plan's item; the experiment's own file is named too.
                        let key_path = p
                            .message
                            .split('`')
                            .nth(1)
                            .and_then(|k| k.split('=').next())
                            .map(|k| format!("{base}.params.{k}"))
                            .filter(|k| self.loc.has(k))
                            .unwrap_or_else(|| params_path.clone());
                        self.at(
                            &key_path,
                            format!("agenda item {} (`{name}`): {}", i + 1, p.message),
                            p.hint.unwrap_or_else(|| {
                                "check the item's params against the experiment's parameters".into()
                            }),
                        );
                    }
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_detection() {
        assert!(looks_like_plan("name: x\nagenda:\n  - experiment: a\n"));
        assert!(!looks_like_plan("name: x\nmethod: []\n"));
        assert!(!looks_like_plan(": : :\n\t"));
    }

    #[test]
    fn longest_duration_counts_the_windows_between_items() {
        let exp: Experiment = serde_json::from_value(serde_json::json!({
            "name": "e", "title": "t", "description": "", "owner": "o", "tags": [],
            "params": {}, "hypothesis": [], "method": [], "stop_conditions": [],
            "rollbacks": [], "recovery_timeout": "5s"
        }))
        .unwrap();
        let item = AgendaItem {
            experiment: "e".into(),
            title: "t".into(),
            params: BTreeMap::new(),
            resolved: exp,
        };
        let plan = Plan {
            name: "p".into(),
            title: "t".into(),
            description: String::new(),
            owner: "o".into(),
            qa_window: Duration::from_secs(60),
            pause_between: Duration::from_secs(10),
            agenda: vec![item.clone(), item.clone(), item],
        };
        assert_eq!(plan.runs_duration(), Duration::from_secs(15));
        assert_eq!(plan.longest_duration(), Duration::from_secs(15 + 2 * 70));
        let back: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }
}
