//! Period summaries: how a day, a week, a month or the last N days of experiments went.
//!
//! Pure functions over run summaries (built from runs and their journals), questions and
//! planned runs; [`load`] reads what they need from the store. `/chaos summary week` and the
//! weekly digest render the result.

use std::collections::HashMap;

use serde::Serialize;

use super::{RunSummary, summarize};
use crate::schedule::UpcomingRun;
use crate::store::learning::Question;
use crate::store::{DynStore, RunRecord, StoreResult};

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The longest period a summary covers, in days (a year and a day: a leap year fits).
pub const MAX_DAYS: u32 = 366;

/// A period length as a person names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PeriodSpec {
    Day,
    Week,
    Month,
    /// The last N days (1..=[`MAX_DAYS`]).
    Days(u32),
}

/// Why a period word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("`{0}` days is not a period: give between 1 and {MAX_DAYS} days, e.g. `7` or `30d`")]
    OutOfRange(String),
    #[error(
        "`{0}` is not a period I know: use `day`, `week`, `month`, or a number of days such as `14` or `14d`"
    )]
    BadUnit(String),
}

impl PeriodSpec {
    /// Reads a period word. `Ok(None)` when the word is not a period at all (a run id: run ids
    /// start with `r-`, so they never look like a period). Numbers with another unit (`2w`,
    /// `12h`) and out-of-range counts are errors, not run ids, so a typo gets a precise answer.
    pub fn parse(word: &str) -> Result<Option<PeriodSpec>, PeriodError> {
        let w = word.trim().to_ascii_lowercase();
        match w.as_str() {
            "day" | "today" | "daily" => return Ok(Some(PeriodSpec::Day)),
            "week" | "weekly" => return Ok(Some(PeriodSpec::Week)),
            "month" | "monthly" => return Ok(Some(PeriodSpec::Month)),
            _ => {}
        }
        let digits: String = w.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return Ok(None);
        }
        let unit = &w[digits.len()..];
        if !matches!(unit, "" | "d" | "day" | "days") {
            return Err(PeriodError::BadUnit(word.to_string()));
        }
        match digits.parse::<u32>() {
            Ok(n) if (1..=MAX_DAYS).contains(&n) => Ok(Some(PeriodSpec::Days(n))),
            _ => Err(PeriodError::OutOfRange(digits)),
        }
    }

    pub fn days(self) -> u32 {
        match self {
            PeriodSpec::Day => 1,
            PeriodSpec::Week => 7,
            PeriodSpec::Month => 30,
            PeriodSpec::Days(n) => n,
        }
    }

    pub fn length_ms(self) -> i64 {
        i64::from(self.days()) * DAY_MS
    }

    /// "the last 7 days", "the last day".
    pub fn label(self) -> String {
        match self.days() {
            1 => "the last day".to_string(),
            n => format!("the last {n} days"),
        }
    }

    /// The window of this length that ends at `now_ms`.
    pub fn window_ending(self, now_ms: i64) -> Window {
        Window {
            from_ms: now_ms - self.length_ms(),
            to_ms: now_ms,
        }
    }
}

/// `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Window {
    pub fn length_ms(self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// The window of the same length just before this one (the trend's baseline).
    pub fn previous(self) -> Window {
        Window {
            from_ms: self.from_ms - self.length_ms(),
            to_ms: self.from_ms,
        }
    }

    pub fn contains(self, ms: i64) -> bool {
        ms >= self.from_ms && ms < self.to_ms
    }
}

/// Runs by verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    pub total: u32,
    pub held: u32,
    pub deviated: u32,
    pub aborted: u32,
    pub failed: u32,
    /// Not finished yet (queued or running).
    pub unfinished: u32,
    /// Runs whose rollback failed (counted besides their verdict).
    pub revert_failed: u32,
}

impl VerdictCounts {
    pub fn of(runs: &[RunSummary]) -> VerdictCounts {
        let mut c = VerdictCounts::default();
        for r in runs {
            c.total += 1;
            match r.verdict.as_deref() {
                Some("held") => c.held += 1,
                Some("deviated") => c.deviated += 1,
                Some("aborted") => c.aborted += 1,
                Some("failed") => c.failed += 1,
                _ => c.unfinished += 1,
            }
            if r.rollback.as_deref() == Some("revert-failed") {
                c.revert_failed += 1;
            }
        }
        c
    }
}

/// A run that deviated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviatedRun {
    pub run_id: String,
    pub experiment: String,
    pub title: String,
    pub reason: Option<String>,
}

/// Which way a mean time moved against the previous period. Lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Faster,
    Slower,
    Same,
    /// One of the two periods has no measurement.
    NoComparison,
}

/// A mean time in this period and the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    /// Mean over the runs that measured it; `None` when none did.
    pub mean_ms: Option<f64>,
    /// How many runs measured it.
    pub runs: u32,
    pub previous_mean_ms: Option<f64>,
    pub previous_runs: u32,
    pub direction: Direction,
}

impl Trend {
    fn of(current: &[Option<i64>], previous: &[Option<i64>]) -> Trend {
        let (mean_ms, runs) = mean(current);
        let (previous_mean_ms, previous_runs) = mean(previous);
        let direction = match (mean_ms, previous_mean_ms) {
            (Some(now), Some(before)) if (now - before).abs() < 0.5 => Direction::Same,
            (Some(now), Some(before)) if now < before => Direction::Faster,
            (Some(_), Some(_)) => Direction::Slower,
            _ => Direction::NoComparison,
        };
        Trend {
            mean_ms,
            runs,
            previous_mean_ms,
            previous_runs,
            direction,
        }
    }

    /// Change against the previous period, in ms (negative: faster).
    pub fn delta_ms(&self) -> Option<f64> {
        Some(self.mean_ms? - self.previous_mean_ms?)
    }
}

fn mean(values: &[Option<i64>]) -> (Option<f64>, u32) {
    let got: Vec<i64> = values.iter().flatten().copied().collect();
    if got.is_empty() {
        (None, 0)
    } else {
        let n = got.len() as f64;
        (
            Some(got.iter().map(|v| *v as f64).sum::<f64>() / n),
            got.len() as u32,
        )
    }
}

/// A question nobody has answered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenQuestion {
    pub run_id: String,
    pub question_id: i64,
    pub asked_by: String,
    pub asked_ms: i64,
    pub text: String,
    pub votes: i64,
}

/// Everything a period summary shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodSummary {
    pub window: Window,
    pub counts: VerdictCounts,
    pub previous_counts: VerdictCounts,
    pub deviated: Vec<DeviatedRun>,
    pub time_to_detect: Trend,
    pub time_to_recover: Trend,
    /// Oldest first.
    pub unanswered: Vec<OpenQuestion>,
    /// In time order.
    pub upcoming: Vec<UpcomingRun>,
}

/// Builds the summary of `window`. `current` and `previous` are the summaries of the runs
/// created in `window` and in the window before it; `questions` may hold more than the open
/// questions of the period (answered, deleted or later ones are left out here).
pub fn summarize_period(
    window: Window,
    current: &[RunSummary],
    previous: &[RunSummary],
    questions: &[Question],
    upcoming: &[UpcomingRun],
) -> PeriodSummary {
    let deviated = current
        .iter()
        .filter(|r| r.verdict.as_deref() == Some("deviated"))
        .map(|r| DeviatedRun {
            run_id: r.run_id.clone(),
            experiment: r.experiment.clone(),
            title: r.title.clone(),
            reason: r.reason.clone(),
        })
        .collect();
    let detect = |runs: &[RunSummary]| -> Vec<Option<i64>> {
        runs.iter().map(|r| r.time_to_detect_ms).collect()
    };
    let recover = |runs: &[RunSummary]| -> Vec<Option<i64>> {
        runs.iter().map(|r| r.time_to_recover_ms).collect()
    };
    let mut unanswered: Vec<OpenQuestion> = questions
        .iter()
        .filter(|q| q.answer.is_none() && q.deleted_ms.is_none() && q.asked_ms < window.to_ms)
        .map(|q| OpenQuestion {
            run_id: q.run_id.clone(),
            question_id: q.id,
            asked_by: q.asked_by.clone(),
            asked_ms: q.asked_ms,
            text: q.text.clone(),
            votes: q.votes,
        })
        .collect();
    unanswered.sort_by_key(|q| (q.asked_ms, q.question_id));
    let mut upcoming = upcoming.to_vec();
    upcoming.sort_by_key(|u| u.at_ms);
    PeriodSummary {
        window,
        counts: VerdictCounts::of(current),
        previous_counts: VerdictCounts::of(previous),
        deviated,
        time_to_detect: Trend::of(&detect(current), &detect(previous)),
        time_to_recover: Trend::of(&recover(current), &recover(previous)),
        unanswered,
        upcoming,
    }
}

/// Which runs a reader may see (a Slack user sees their own workspace's runs).
pub type RunFilter<'a> = &'a (dyn Fn(&RunRecord) -> bool + Send + Sync);

/// The summaries of the runs created in `window` that `keep` accepts.
pub async fn run_summaries(
    store: &DynStore,
    window: Window,
    keep: RunFilter<'_>,
) -> StoreResult<Vec<RunSummary>> {
    let runs = store.runs_between(window.from_ms, window.to_ms).await?;
    let mut out = Vec::with_capacity(runs.len());
    for run in runs.into_iter().filter(|r| keep(r)) {
        let journal = store.journal(&run.id, 0).await?;
        out.push(summarize(&run, &journal));
    }
    Ok(out)
}

/// Reads everything the summary of `window` needs and builds it: its runs and the previous
/// window's, the questions asked since `questions_since_ms` still unanswered, and the runs
/// planned in `upcoming`.
pub async fn load(
    store: &DynStore,
    window: Window,
    questions_since_ms: i64,
    upcoming: Window,
) -> StoreResult<PeriodSummary> {
    load_visible(store, window, questions_since_ms, upcoming, &|_| true).await
}

/// [`load`] with only the runs (and the questions on runs) that `keep` accepts.
pub async fn load_visible(
    store: &DynStore,
    window: Window,
    questions_since_ms: i64,
    upcoming: Window,
    keep: RunFilter<'_>,
) -> StoreResult<PeriodSummary> {
    let current = run_summaries(store, window, keep).await?;
    let previous = run_summaries(store, window.previous(), keep).await?;
    let mut questions = Vec::new();
    let mut seen: HashMap<String, bool> = HashMap::new();
    for q in store.unanswered_questions(questions_since_ms).await? {
        let visible = match seen.get(&q.run_id) {
            Some(v) => *v,
            None => {
                let v = store.get_run(&q.run_id).await?.is_some_and(|r| keep(&r));
                seen.insert(q.run_id.clone(), v);
                v
            }
        };
        if visible {
            questions.push(q);
        }
    }
    let planned = crate::schedule::upcoming(store, upcoming.from_ms, upcoming.to_ms).await?;
    Ok(summarize_period(
        window, &current, &previous, &questions, &planned,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(
        id: &str,
        verdict: Option<&str>,
        rollback: &str,
        ttd: Option<i64>,
        ttr: Option<i64>,
    ) -> RunSummary {
        RunSummary {
            run_id: id.into(),
            experiment: format!("exp-{id}"),
            title: format!("Title {id}"),
            requested_by: "U1".into(),
            seed: 1,
            params: BTreeMap::new(),
            state: "done".into(),
            verdict: verdict.map(str::to_string),
            rollback: Some(rollback.into()),
            reason: Some(format!("reason {id}")),
            duration_ms: Some(1000),
            probes: vec![],
            timeline: vec![],
            time_to_detect_ms: ttd,
            time_to_recover_ms: ttr,
            loads: vec![],
        }
    }

    fn question(id: i64, asked_ms: i64, answered: bool, deleted: bool) -> Question {
        Question {
            id,
            run_id: format!("r-{id}"),
            channel: "C1".into(),
            ts: format!("{id}.0"),
            asked_by: "U2".into(),
            text: format!("q{id}"),
            asked_ms,
            edited_ms: None,
            deleted_ms: deleted.then_some(asked_ms + 1),
            votes: id,
            answer: answered.then(|| crate::store::learning::Answer {
                text: "a".into(),
                by: "U1".into(),
                at_ms: asked_ms + 5,
                auto: false,
            }),
        }
    }

    #[test]
    fn parses_period_words_and_refuses_bad_ones() {
        assert_eq!(PeriodSpec::parse("week"), Ok(Some(PeriodSpec::Week)));
        assert_eq!(PeriodSpec::parse("Day"), Ok(Some(PeriodSpec::Day)));
        assert_eq!(PeriodSpec::parse("month"), Ok(Some(PeriodSpec::Month)));
        assert_eq!(PeriodSpec::parse("14"), Ok(Some(PeriodSpec::Days(14))));
        assert_eq!(PeriodSpec::parse("30d"), Ok(Some(PeriodSpec::Days(30))));
        assert_eq!(PeriodSpec::parse("r-abcdefghjk"), Ok(None));
        assert!(matches!(
            PeriodSpec::parse("0"),
            Err(PeriodError::OutOfRange(_))
        ));
        assert!(matches!(
            PeriodSpec::parse("367d"),
            Err(PeriodError::OutOfRange(_))
        ));
        assert!(matches!(
            PeriodSpec::parse("99999999999999"),
            Err(PeriodError::OutOfRange(_))
        ));
        let e = PeriodSpec::parse("2w").unwrap_err();
        assert!(e.to_string().contains("`day`, `week`, `month`"), "{e}");
        assert_eq!(PeriodSpec::Month.days(), 30);
        assert_eq!(PeriodSpec::Days(3).length_ms(), 3 * DAY_MS);
    }

    #[test]
    fn counts_verdicts_means_and_trend() {
        let now = 100 * DAY_MS;
        let w = PeriodSpec::Week.window_ending(now);
        assert_eq!(w.previous().to_ms, w.from_ms);
        assert_eq!(w.previous().length_ms(), 7 * DAY_MS);
        let current = vec![
            run("a", Some("held"), "reverted", None, None),
            run("b", Some("deviated"), "reverted", Some(1_000), Some(4_000)),
            run("c", Some("deviated"), "revert-failed", Some(3_000), None),
            run("d", Some("aborted"), "reverted", None, Some(2_000)),
            run("e", Some("failed"), "nothing-to-revert", None, None),
            run("f", None, "reverted", None, None),
        ];
        let previous = vec![
            run("p", Some("deviated"), "reverted", Some(4_000), Some(1_000)),
            run("q", Some("held"), "reverted", None, None),
        ];
        let questions = vec![
            question(3, w.from_ms + 10, false, false),
            question(1, w.from_ms + 5, false, false),
            question(2, w.from_ms + 7, true, false),
            question(4, w.from_ms + 9, false, true),
            question(5, now + 1, false, false),
        ];
        let upcoming = vec![
            UpcomingRun {
                at_ms: now + 2 * DAY_MS,
                experiment: "x".into(),
                schedule_id: 2,
                channel: "C1".into(),
            },
            UpcomingRun {
                at_ms: now + DAY_MS,
                experiment: "y".into(),
                schedule_id: 1,
                channel: "C1".into(),
            },
        ];
        let s = summarize_period(w, &current, &previous, &questions, &upcoming);
        assert_eq!(
            s.counts,
            VerdictCounts {
                total: 6,
                held: 1,
                deviated: 2,
                aborted: 1,
                failed: 1,
                unfinished: 1,
                revert_failed: 1,
            }
        );
        assert_eq!(s.previous_counts.total, 2);
        let ids: Vec<&str> = s.deviated.iter().map(|d| d.run_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        // Detect: (1000 + 3000) / 2 = 2000 against 4000 before: faster.
        assert_eq!(s.time_to_detect.mean_ms, Some(2_000.0));
        assert_eq!(s.time_to_detect.runs, 2);
        assert_eq!(s.time_to_detect.previous_mean_ms, Some(4_000.0));
        assert_eq!(s.time_to_detect.direction, Direction::Faster);
        assert_eq!(s.time_to_detect.delta_ms(), Some(-2_000.0));
        // Recover: (4000 + 2000) / 2 = 3000 against 1000: slower.
        assert_eq!(s.time_to_recover.mean_ms, Some(3_000.0));
        assert_eq!(s.time_to_recover.direction, Direction::Slower);
        let open: Vec<i64> = s.unanswered.iter().map(|q| q.question_id).collect();
        assert_eq!(
            open,
            [1, 3],
            "answered, deleted and later questions are left out"
        );
        let planned: Vec<&str> = s.upcoming.iter().map(|u| u.experiment.as_str()).collect();
        assert_eq!(planned, ["y", "x"]);

        let empty = summarize_period(w, &[], &[], &[], &[]);
        assert_eq!(empty.counts.total, 0);
        assert_eq!(empty.time_to_detect.mean_ms, None);
        assert_eq!(empty.time_to_detect.direction, Direction::NoComparison);
    }
}
