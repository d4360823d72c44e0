//! What a game day posts: the opening (agenda, times, who), a note after each run (the Q&A
//! window and what comes next), and the closing summary (each item's verdict and numbers,
//! totals). Plain functions of the stored game day and run summaries, so they can be tested
//! and re-rendered after a restart identically.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::gameday::plan::Plan;
use crate::report::RunSummary;
use crate::slack::blocks::Reply;
use crate::store::gamedays::{GamedayRecord, GamedayState};

/// One agenda item as the closing summary shows it.
#[derive(Debug, Clone)]
pub struct ItemOutcome {
    pub title: String,
    pub experiment: String,
    /// The run's summary, when the item was submitted.
    pub run: Option<RunSummary>,
}

/// A duration for people, rounded to the second (at least 1 s).
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

fn fmt_ms(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => fmt_duration(Duration::from_millis(ms as u64)),
        _ => "–".to_string(),
    }
}

/// A time Slack shows in each reader's zone (UTC as the fallback text).
pub fn slack_time(ms: i64) -> String {
    let secs = ms / 1000;
    let fallback = chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_else(|| secs.to_string());
    format!("<!date^{secs}^{{time}}|{fallback}>")
}

/// The opening message: what the game day is, who started it, and the agenda with the latest
/// time each item starts (every earlier run at its longest, plus the windows).
pub fn opening(g: &GamedayRecord, plan: &Plan) -> Reply {
    let text = format!(
        "Game day {} `{}`: {} — {} experiment(s), started by <@{}>",
        g.id,
        plan.name,
        plan.title,
        plan.agenda.len(),
        g.started_by
    );
    let mut head = format!(
        ":calendar: *Game day: {}* (`{}`, id `{}`)\nStarted by <@{}> · owner {} · {} experiment(s) in this channel, one after another",
        plan.title,
        plan.name,
        g.id,
        g.started_by,
        plan.owner,
        plan.agenda.len()
    );
    if !plan.description.trim().is_empty() {
        head.push_str(&format!("\n_{}_", plan.description.trim()));
    }
    head.push_str(&format!(
        "\nAfter each run, its thread is open for questions for {} before the next starts{}. Ends by {} at the latest.",
        fmt_duration(plan.qa_window),
        if plan.pause_between.is_zero() {
            String::new()
        } else {
            format!(" (plus a {} pause)", fmt_duration(plan.pause_between))
        },
        slack_time(g.created_ms + plan.longest_duration().as_millis() as i64)
    ));
    let mut agenda = vec!["*Agenda*".to_string()];
    let mut offset = Duration::ZERO;
    for (i, item) in plan.agenda.iter().enumerate() {
        let longest = item.resolved.method_duration() + item.resolved.recovery_timeout;
        let params: Vec<String> = item
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        agenda.push(format!(
            "{}. *{}* — `{}`{} · starts by {} · runs up to {}",
            i + 1,
            item.title,
            item.experiment,
            if params.is_empty() {
                String::new()
            } else {
                format!(" {}", params.join(" "))
            },
            slack_time(g.created_ms + offset.as_millis() as i64),
            fmt_duration(longest)
        ));
        offset += longest + plan.qa_window + plan.pause_between;
    }
    agenda.push(format!(
        "Stop it with `/chaos gameday stop {}` (the run in progress is aborted and reverted).",
        g.id
    ));
    Reply::new(text).section(head).section(agenda.join("\n"))
}

/// The note in the game day's thread after item `index` finished.
pub fn note(plan: &Plan, index: usize, run_id: &str) -> Reply {
    let Some(item) = plan.agenda.get(index) else {
        return Reply::simple(format!("Run `{run_id}` finished."));
    };
    let text = match plan.agenda.get(index + 1) {
        Some(next) => format!(
            ":speech_balloon: Q&A for `{}` (run `{run_id}`) open for {}; next: `{}`{}.",
            item.experiment,
            fmt_duration(plan.qa_window),
            next.experiment,
            if plan.pause_between.is_zero() {
                String::new()
            } else {
                format!(
                    " after a further {} pause",
                    fmt_duration(plan.pause_between)
                )
            }
        ),
        None => format!(
            ":speech_balloon: Q&A for `{}` (run `{run_id}`) is open in its thread; that was the last item — the closing summary follows.",
            item.experiment
        ),
    };
    Reply::simple(text)
}

/// The closing summary: each item's verdict, run id, duration, time to detect and recover, and
/// the totals.
pub fn closing(g: &GamedayRecord, plan: &Plan, items: &[ItemOutcome], now_ms: i64) -> Reply {
    let ended = match g.state {
        GamedayState::Done => "finished".to_string(),
        GamedayState::Stopped => format!(
            "stopped{}{}",
            g.stopped_by
                .as_deref()
                .filter(|b| *b != "chaosbot")
                .map(|b| format!(" by <@{b}>"))
                .unwrap_or_default(),
            g.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        GamedayState::Running => "ended".to_string(),
    };
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut run_total_ms = 0i64;
    let mut lines = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match &item.run {
            Some(s) => {
                let verdict = s
                    .verdict
                    .clone()
                    .unwrap_or_else(|| format!("{} (not finished)", s.state));
                *verdicts.entry(verdict.clone()).or_default() += 1;
                run_total_ms += s.duration_ms.unwrap_or(0);
                lines.push(format!(
                    "{}. *{}* — `{}` · {} {} · run `{}` · took {} · detect {} · recover {}{}",
                    i + 1,
                    item.title,
                    item.experiment,
                    verdict_emoji(s.verdict.as_deref()),
                    verdict,
                    s.run_id,
                    fmt_ms(s.duration_ms),
                    fmt_ms(s.time_to_detect_ms),
                    fmt_ms(s.time_to_recover_ms),
                    s.reason
                        .as_deref()
                        .filter(|_| s.verdict.as_deref() != Some("held"))
                        .map(|r| format!("\n    _{r}_"))
                        .unwrap_or_default()
                ));
            }
            None => lines.push(format!(
                "{}. *{}* — `{}` · not run",
                i + 1,
                item.title,
                item.experiment
            )),
        }
    }
    let ran = items.iter().filter(|i| i.run.is_some()).count();
    let by_verdict: Vec<String> = verdicts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let text = format!(
        "Game day {} `{}` {}: {} of {} experiment(s) ran{}",
        g.id,
        plan.name,
        ended,
        ran,
        items.len(),
        if by_verdict.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_verdict.join(", "))
        }
    );
    let head = format!(
        ":checkered_flag: *Game day {}: {}* (`{}`, id `{}`)",
        ended, plan.title, plan.name, g.id
    );
    let totals = format!(
        "*Totals:* {} of {} ran{} · runs took {} · the game day took {}\nEach run's thread holds its Q&A; `/chaos summary <run-id>` shows a run in full.",
        ran,
        items.len(),
        if by_verdict.is_empty() {
            String::new()
        } else {
            format!(" — {}", by_verdict.join(", "))
        },
        fmt_ms(Some(run_total_ms)),
        fmt_ms(Some(g.finished_ms.unwrap_or(now_ms) - g.created_ms)),
    );
    Reply::new(text)
        .section(head)
        .section(lines.join("\n"))
        .section(totals)
}

fn verdict_emoji(v: Option<&str>) -> &'static str {
    match v {
        Some("held") => ":white_check_mark:",
        Some("deviated") => ":warning:",
        Some("aborted") => ":octagonal_sign:",
        Some("failed") => ":x:",
        _ => ":hourglass:",
    }
}
