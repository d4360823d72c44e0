//! Meaning checks: [`super::raw`] → [`super::model`], against the operator config.
//!
//! Every check records a located [`Problem`] and carries on, so one pass reports everything
//! that is wrong with a file. This file walks the experiment; each concern has its own part:
//! [`probes`] (the hypothesis), [`steps`] (the method, with [`network`], [`host`] and [`load`]
//! for the attributes of each fault family), [`stops`], [`rollbacks`], and [`keys`] for what
//! serde refused while reading the raw types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::locate::Locations;
use super::model::{Experiment, OnOwnerLoss, Step};
use super::raw::RawExperiment;
use super::{Problem, did_you_mean};
use crate::config::Config;

mod actions;
mod cx;
mod host;
mod keys;
mod load;
mod network;
mod probes;
mod rollbacks;
mod steps;
mod stops;
#[cfg(test)]
mod tests;

use cx::Cx;
pub(crate) use keys::de_problem;
pub use load::{MAX_LOAD_CONNECTIONS, MAX_LOAD_RATE};

/// Longer than this is certainly a typo (`30h` for `30s`).
pub const ABSURD: Duration = Duration::from_secs(24 * 3600);
/// Probes sampling faster than this would load the service more than the fault does.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Raw → model. Returns the model only when no problem was found. `suggested` holds the paths
/// of keys offered for a misspelt key, `rejected` the paths of values serde refused (both are
/// reported already).
pub(crate) fn experiment(
    file: &str,
    loc: &Locations,
    cfg: &Config,
    raw: &RawExperiment,
    params: BTreeMap<String, String>,
    suggested: &HashSet<String>,
    rejected: &HashSet<String>,
) -> (Option<Experiment>, Vec<Problem>) {
    let mut cx = Cx {
        file,
        loc,
        cfg,
        problems: Vec::new(),
        suggested,
        rejected,
        step_names: HashMap::new(),
        faults: Vec::new(),
        load_steps: Vec::new(),
    };
    let cx = &mut cx;

    let (name, title, owner) = header(cx, raw);
    let hypothesis = probes::hypothesis(cx, raw.hypothesis.as_ref());
    let method = steps::method(cx, raw.method.as_deref());
    let stop_conditions = stops::stop_conditions(
        cx,
        raw.stop_conditions.as_deref().unwrap_or_default(),
        &hypothesis.names,
    );
    let rollbacks = rollbacks::rollbacks(cx, raw.rollbacks.as_deref().unwrap_or_default());
    if let Some(rec) = hypothesis.recovery {
        run_fits(cx, &method, rec);
    }
    let on_owner_loss = on_owner_loss(cx, raw.on_owner_loss.as_deref());

    let problems = std::mem::take(&mut cx.problems);
    if !problems.is_empty() {
        return (None, problems);
    }
    let (Some(name), Some(title), Some(owner), Some(recovery_timeout), Some(on_owner_loss)) =
        (name, title, owner, hypothesis.recovery, on_owner_loss)
    else {
        return (None, problems);
    };
    let experiment = Experiment {
        name: name.to_string(),
        title: title.to_string(),
        description: raw.description.clone().unwrap_or_default(),
        owner: owner.to_string(),
        tags: raw.tags.clone().unwrap_or_default(),
        params,
        hypothesis: hypothesis.probes,
        sampling: hypothesis.sampling,
        method,
        stop_conditions,
        rollbacks,
        recovery_timeout,
        on_owner_loss,
    };
    (Some(experiment), problems)
}

/// `name` (a slug people type in chat), `title` and `owner`.
fn header<'r>(
    cx: &mut Cx,
    raw: &'r RawExperiment,
) -> (Option<&'r str>, Option<&'r str>, Option<&'r str>) {
    let name = cx.required("name", &raw.name, "the experiment", "checkout-latency");
    if let Some(n) = name {
        let slug = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !slug {
            cx.at(
                "name",
                format!("name `{n}` is not a slug"),
                "use 1 to 64 lowercase letters, digits and `-`, like `checkout-latency`; people type it in chat",
            );
        }
    }
    let title = cx.required(
        "title",
        &raw.title,
        "the experiment",
        "Checkout tolerates slow payments",
    );
    let owner = cx.required("owner", &raw.owner, "the experiment", "\"@sre-payments\"");
    (name, title, owner)
}

/// `on_owner_loss: revert | continue` (default revert).
fn on_owner_loss(cx: &mut Cx, v: Option<&str>) -> Option<OnOwnerLoss> {
    match v.map(str::trim) {
        None | Some("revert") => Some(OnOwnerLoss::Revert),
        Some("continue") => Some(OnOwnerLoss::Continue),
        Some(other) => {
            let hint = match did_you_mean(other, OnOwnerLoss::CHOICES) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use `revert` (another replica reverts the faults and closes the run aborted) or `continue` (another replica adopts the run and finishes it with its verdict)".into(),
            };
            cx.at(
                "on_owner_loss",
                format!("unknown on_owner_loss `{other}`"),
                hint,
            );
            None
        }
    }
}

/// Guard rail: the whole run (method plus recovery) must fit the operator's limit.
fn run_fits(cx: &mut Cx, method: &[Step], rec: Duration) {
    let method_total: Duration = method.iter().map(Step::duration).sum();
    let total = method_total + rec;
    let max = cx.cfg.guard_rails.max_run_duration;
    if total > max {
        cx.at_key(
            "method",
            format!(
                "the run could take {} (method {} + recovery_timeout {}), above the operator's limit of {}",
                humantime::format_duration(total),
                humantime::format_duration(method_total),
                humantime::format_duration(rec),
                humantime::format_duration(max)
            ),
            "shorten the steps (or their duration parameters), or ask the operator to raise guard_rails.max_run_duration",
        );
    }
}
