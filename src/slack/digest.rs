//! Period summaries and learning records in Slack, and the weekly digest.
//!
//! The digest task wakes up regularly, works out from its clock which week's digest is due
//! (the config's weekday and time in its time zone), and posts the past week's summary, the
//! open questions and next week's planned runs through the outbox. "Posted" is a row in
//! `digests` written in the same transaction as the messages
//! ([`crate::store::DigestStore::enqueue_digest`]), so several replicas, or a restart, post
//! each week's digest once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::DynClock;
use crate::config::DigestTime;
use crate::report;
use crate::report::period::{self, DAY_MS, Direction, PeriodSummary, Trend, Window};
use crate::schedule::UpcomingRun;
use crate::slack::blocks::{self, Reply};
use crate::store::DynStore;
use crate::store::outbox::{OutboundAction, OutboundMessage};

/// How far back the digest looks for questions still waiting for an answer.
pub const OPEN_QUESTIONS_DAYS: i64 = 28;
/// At most this many lines per list (deviated runs, questions, planned runs); the rest is
/// counted.
pub const MAX_LIST: usize = 15;
/// A digest whose time passed more than this long ago (the bot was down all that time) is
/// skipped rather than posted days late; the next week's comes as planned.
pub const CATCH_UP_MS: i64 = DAY_MS;
/// Slack's `markdown` block takes at most 12 000 characters
/// (docs.slack.dev, Block Kit reference, "Markdown block").
pub const MAX_MARKDOWN_CHARS: usize = 12_000;

/// A timestamp Slack renders in each reader's time zone (UTC as the fallback).
pub fn slack_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let fallback = chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| secs.to_string());
    format!("<!date^{secs}^{{date_short_pretty}} {{time}}|{fallback}>")
}

fn secs(ms: f64) -> String {
    format!("{:.1}s", ms / 1000.0)
}

fn trend_line(name: &str, t: &Trend) -> String {
    let now = match t.mean_ms {
        Some(m) => format!(
            "{} (mean of {} run{})",
            secs(m),
            t.runs,
            if t.runs == 1 { "" } else { "s" }
        ),
        None => "– (no run measured it)".to_string(),
    };
    let vs = match (t.direction, t.previous_mean_ms, t.delta_ms()) {
        (Direction::Faster, Some(p), Some(d)) => {
            format!(
                " · :arrow_down: {} faster than before ({})",
                secs(-d),
                secs(p)
            )
        }
        (Direction::Slower, Some(p), Some(d)) => {
            format!(" · :arrow_up: {} slower than before ({})", secs(d), secs(p))
        }
        (Direction::Same, Some(p), _) => format!(" · unchanged ({} before)", secs(p)),
        _ => " · no comparison (the previous period has no measurement)".to_string(),
    };
    format!("*{name}:* {now}{vs}")
}

fn more(n: usize) -> String {
    format!("_… and {n} more_")
}

/// The period summary as a Slack answer. `heading` names the period ("the last 7 days").
pub fn period_reply(s: &PeriodSummary, heading: &str) -> Reply {
    let c = &s.counts;
    let mut reply = Reply::new(format!(
        "Chaos summary of {heading}: {} run(s), {} held, {} deviated",
        c.total, c.held, c.deviated
    ));
    let previous = &s.previous_counts;
    reply.push(format!(
        "*Chaos summary of {heading}* ({} – {})\n*{} run(s)*: {} held · {} deviated · {} aborted · {} failed{}{}\n_Previous period: {} run(s), {} held, {} deviated_",
        slack_date(s.window.from_ms),
        slack_date(s.window.to_ms),
        c.total,
        c.held,
        c.deviated,
        c.aborted,
        c.failed,
        if c.unfinished > 0 {
            format!(" · {} still running", c.unfinished)
        } else {
            String::new()
        },
        if c.revert_failed > 0 {
            format!(
                "\n:rotating_light: *{} run(s) could not revert* — check their targets",
                c.revert_failed
            )
        } else {
            " · every rollback verified".to_string()
        },
        previous.total,
        previous.held,
        previous.deviated,
    ));
    reply.push(format!(
        "{}\n{}",
        trend_line("Mean time to detect", &s.time_to_detect),
        trend_line("Mean time to recover", &s.time_to_recover)
    ));
    if !s.deviated.is_empty() {
        let mut lines = vec![format!("*Deviated ({})*", s.deviated.len())];
        for d in s.deviated.iter().take(MAX_LIST) {
            lines.push(format!(
                "• `{}` *{}* — {}{}",
                d.run_id,
                d.experiment,
                d.title,
                d.reason
                    .as_deref()
                    .map(|r| format!(": {}", blocks::truncate(r, 200)))
                    .unwrap_or_default()
            ));
        }
        if s.deviated.len() > MAX_LIST {
            lines.push(more(s.deviated.len() - MAX_LIST));
        }
        reply.push(lines.join("\n"));
    }
    reply.push(open_questions(&s.unanswered));
    reply.push(planned_runs(&s.upcoming));
    reply
}

fn open_questions(qs: &[period::OpenQuestion]) -> String {
    if qs.is_empty() {
        return "*Open questions:* none — every question has an answer.".to_string();
    }
    let mut lines = vec![format!("*Open questions ({})*", qs.len())];
    for q in qs.iter().take(MAX_LIST) {
        lines.push(format!(
            "• on `{}`: “{}” — <@{}>, {} · {} vote(s)",
            q.run_id,
            blocks::truncate(&q.text, 200),
            q.asked_by,
            slack_date(q.asked_ms),
            q.votes
        ));
    }
    if qs.len() > MAX_LIST {
        lines.push(more(qs.len() - MAX_LIST));
    }
    lines.join("\n")
}

/// The runs schedules plan, one line each.
pub fn planned_runs(up: &[UpcomingRun]) -> String {
    if up.is_empty() {
        return "*Next scheduled runs:* none planned.".to_string();
    }
    let mut lines = vec![format!("*Next scheduled runs ({})*", up.len())];
    for u in up.iter().take(MAX_LIST) {
        lines.push(format!(
            "• {} — *{}* in <#{}> (schedule {})",
            slack_date(u.at_ms),
            u.experiment,
            u.channel,
            u.schedule_id
        ));
    }
    if up.len() > MAX_LIST {
        lines.push(more(up.len() - MAX_LIST));
    }
    lines.join("\n")
}

/// Markdown cut into pieces of at most `max` characters on line boundaries; a code fence cut
/// in two is closed at the end of one piece and opened again at the start of the next.
pub fn markdown_pages(md: &str, max: usize) -> Vec<String> {
    // Leave room for the fence lines added at the cuts.
    let room = max.saturating_sub(8).max(1);
    let mut pages = Vec::new();
    let mut open_fence = false;
    for piece in blocks::split_text(md, room) {
        let mut page = String::new();
        if open_fence {
            page.push_str("```\n");
        }
        page.push_str(&piece);
        for line in piece.lines() {
            if line.trim_start().starts_with("```") {
                open_fence = !open_fence;
            }
        }
        if open_fence {
            page.push_str("\n```");
        }
        pages.push(page);
    }
    pages
}

/// `chat.postMessage` bodies' `blocks` for a markdown document: one `markdown` block per
/// message.
pub fn markdown_messages(md: &str) -> Vec<Value> {
    markdown_pages(md, MAX_MARKDOWN_CHARS)
        .into_iter()
        .map(|page| json!([{"type": "markdown", "text": page}]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The weekly digest
// ---------------------------------------------------------------------------------------------

/// The week a digest covers: `[start_ms, due_ms)`, posted at `due_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestWeek {
    pub start_ms: i64,
    pub due_ms: i64,
}

/// The latest digest moment at or before `now_ms` and the week it closes. Weeks are counted
/// in local time, so a week with a daylight-saving change is an hour shorter or longer.
pub fn latest_due(t: &DigestTime, now_ms: i64) -> Option<DigestWeek> {
    let now = chrono::DateTime::from_timestamp_millis(now_ms)?.with_timezone(&t.timezone);
    let today = now.date_naive();
    let back = (7 + today.weekday().num_days_from_monday() as i64
        - t.weekday.num_days_from_monday() as i64)
        % 7;
    let mut day = today - chrono::Duration::days(back);
    // At most two steps back: this week's moment may still lie ahead.
    for _ in 0..3 {
        if let Some(due) = local_ms(t, day)
            && due <= now_ms
        {
            let start = local_ms(t, day - chrono::Duration::days(7))?;
            return Some(DigestWeek {
                start_ms: start,
                due_ms: due,
            });
        }
        day -= chrono::Duration::days(7);
    }
    None
}

/// `t.at` on `day` in the digest's time zone, as Unix ms. A time skipped by a daylight-saving
/// jump is taken an hour later; a repeated one at its first occurrence.
fn local_ms(t: &DigestTime, day: chrono::NaiveDate) -> Option<i64> {
    let naive = day.and_time(t.at);
    let local = t
        .timezone
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            t.timezone
                .from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })?;
    Some(local.timestamp_millis())
}

/// The digest's messages for `week`: the summary of the week, the open questions of the last
/// [`OPEN_QUESTIONS_DAYS`] days and the runs planned for the next seven days.
pub async fn build_digest(
    store: &DynStore,
    channel: &str,
    week: DigestWeek,
) -> crate::store::StoreResult<Vec<OutboundMessage>> {
    let window = Window {
        from_ms: week.start_ms,
        to_ms: week.due_ms,
    };
    let summary = period::load(
        store,
        window,
        week.due_ms - OPEN_QUESTIONS_DAYS * DAY_MS,
        Window {
            from_ms: week.due_ms,
            to_ms: week.due_ms + 7 * DAY_MS,
        },
    )
    .await?;
    let mut reply = period_reply(&summary, "the past week");
    reply.text = format!(":calendar: Weekly chaos digest — {}", reply.text);
    let thread_key = format!("digest:{}", week.start_ms);
    let mut messages: Vec<OutboundMessage> = reply
        .pages()
        .into_iter()
        .enumerate()
        .map(|(i, page)| OutboundMessage {
            thread_key: thread_key.clone(),
            channel: channel.to_string(),
            action: OutboundAction::Post {
                key: Some(format!("digest:{}:{i}", week.start_ms)),
                in_thread_of: None,
                text: blocks::truncate(&reply.text, blocks::MAX_TEXT_CHARS),
                blocks: Some(page),
            },
        })
        .collect();
    // The week as a picture, in the digest's thread.
    let chart = report::chart::week::load(
        store,
        "The past week: runs by verdict, time to detect and to recover",
        week.start_ms,
        WEEKS_BEFORE,
    )
    .await?;
    let drawn = tokio::task::spawn_blocking(move || report::chart::week::render_png(&chart)).await;
    match drawn {
        Ok(Ok(png)) => {
            use base64::Engine as _;
            messages.push(OutboundMessage {
                thread_key,
                channel: channel.to_string(),
                action: OutboundAction::Upload {
                    in_thread_of: Some(format!("digest:{}:0", week.start_ms)),
                    filename: format!(
                        "chaosbot-week-{}.png",
                        chrono::DateTime::from_timestamp_millis(week.start_ms)
                            .map(|d| d.format("%Y-%m-%d").to_string())
                            .unwrap_or_default()
                    ),
                    title: "The past week in charts".to_string(),
                    content_base64: base64::engine::general_purpose::STANDARD.encode(png),
                },
            });
        }
        Ok(Err(e)) => warn!(error = %e, "cannot draw the week's chart; the digest goes without it"),
        Err(e) => {
            warn!(error = %e, "drawing the week's chart panicked; the digest goes without it")
        }
    }
    Ok(messages)
}

/// How many weeks before the digest's week its chart compares against.
const WEEKS_BEFORE: u32 = 4;

/// The task `chaosbot serve` runs when `[digest] channel` is set.
pub struct DigestTask {
    pub store: DynStore,
    pub clock: DynClock,
    pub channel: String,
    pub time: DigestTime,
    /// How often it looks at the clock.
    pub poll: Duration,
    /// Names this process in the `digests` row.
    pub instance: String,
    /// Wakes the outbox after queueing.
    pub notify: Arc<dyn Fn() + Send + Sync>,
}

impl DigestTask {
    /// Posts the due digest if nobody did yet. `Ok(Some(week))` when this call queued it.
    pub async fn tick(&self) -> crate::store::StoreResult<Option<DigestWeek>> {
        let now = self.clock.now_ms();
        let Some(week) = latest_due(&self.time, now) else {
            return Ok(None);
        };
        if now - week.due_ms > CATCH_UP_MS {
            return Ok(None);
        }
        if self.store.digest(week.start_ms).await?.is_some() {
            return Ok(None);
        }
        let messages = build_digest(&self.store, &self.channel, week).await?;
        let fresh = self
            .store
            .enqueue_digest(week.start_ms, week.due_ms, &self.instance, &messages)
            .await?;
        if fresh {
            info!(
                channel = %self.channel,
                week_start_ms = week.start_ms,
                messages = messages.len(),
                "weekly digest queued"
            );
            (self.notify)();
            Ok(Some(week))
        } else {
            Ok(None)
        }
    }

    /// Ticks every `poll` until `stop`. Errors (a database hiccup) are logged and retried at
    /// the next tick; nothing is lost, since the row and the messages commit together.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                warn!(error = %e, "the weekly digest could not be queued; trying again shortly");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn due_moments_follow_the_local_week() {
        let t = DigestTime {
            weekday: chrono::Weekday::Mon,
            at: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            timezone: "Europe/Berlin".parse().unwrap(),
        };
        // Thursday 26 Nov 2026: the last Monday 09:00 Berlin (UTC+1) was 23 Nov, 08:00 UTC.
        let w = latest_due(&t, at("2026-11-26T10:00:00Z")).unwrap();
        assert_eq!(w.due_ms, at("2026-11-23T08:00:00Z"));
        assert_eq!(w.start_ms, at("2026-11-16T08:00:00Z"));
        // Monday 08:59 Berlin: still last week's.
        let w = latest_due(&t, at("2026-11-23T07:59:00Z")).unwrap();
        assert_eq!(w.due_ms, at("2026-11-16T08:00:00Z"));
        // Exactly on time.
        let w = latest_due(&t, at("2026-11-23T08:00:00Z")).unwrap();
        assert_eq!(w.due_ms, at("2026-11-23T08:00:00Z"));
        // Across the spring change (29 Mar 2026): the week is an hour shorter.
        let w = latest_due(&t, at("2026-03-31T12:00:00Z")).unwrap();
        assert_eq!(w.due_ms, at("2026-03-30T07:00:00Z"));
        assert_eq!(w.due_ms - w.start_ms, 7 * DAY_MS - 3_600_000);
    }

    #[test]
    fn period_reply_shows_trends_and_planned_runs() {
        use crate::report::period::{DeviatedRun, OpenQuestion, VerdictCounts};
        let trend = |now: Option<f64>, before: Option<f64>, direction| Trend {
            mean_ms: now,
            runs: now.map_or(0, |_| 2),
            previous_mean_ms: before,
            previous_runs: before.map_or(0, |_| 1),
            direction,
        };
        let planned = |at_ms: i64, experiment: &str, id: i64| UpcomingRun {
            at_ms,
            experiment: experiment.into(),
            schedule_id: id,
            channel: "CPLAN".into(),
        };
        let mut s = PeriodSummary {
            window: Window {
                from_ms: 1_700_000_000_000,
                to_ms: 1_700_000_000_000 + 7 * DAY_MS,
            },
            counts: VerdictCounts {
                total: 3,
                held: 1,
                deviated: 1,
                aborted: 0,
                failed: 0,
                unfinished: 1,
                revert_failed: 0,
            },
            previous_counts: VerdictCounts::default(),
            deviated: vec![DeviatedRun {
                run_id: "r-1".into(),
                experiment: "e".into(),
                title: "T".into(),
                reason: None,
            }],
            time_to_detect: trend(Some(1_500.0), Some(4_000.0), Direction::Faster),
            time_to_recover: trend(Some(9_000.0), Some(3_000.0), Direction::Slower),
            unanswered: vec![OpenQuestion {
                run_id: "r-1".into(),
                question_id: 1,
                asked_by: "U1".into(),
                asked_ms: 1_700_000_100_000,
                text: "why?".into(),
                votes: 2,
            }],
            upcoming: vec![
                planned(1_700_000_000_000 + 8 * DAY_MS, "checkout-latency", 4),
                planned(1_700_000_000_000 + 9 * DAY_MS, "cache-outage", 5),
            ],
        };
        let text = |s: &PeriodSummary| {
            period_reply(s, "the last 7 days")
                .blocks()
                .iter()
                .map(|b| b["text"]["text"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let t = text(&s);
        assert!(
            t.contains("1 still running · every rollback verified"),
            "{t}"
        );
        assert!(
            t.contains("*Mean time to detect:* 1.5s (mean of 2 runs) · :arrow_down: 2.5s faster than before (4.0s)"),
            "{t}"
        );
        assert!(
            t.contains("*Mean time to recover:* 9.0s (mean of 2 runs) · :arrow_up: 6.0s slower than before (3.0s)"),
            "{t}"
        );
        assert!(t.contains("• `r-1` *e* — T"), "{t}");
        assert!(t.contains("*Next scheduled runs (2)*"), "{t}");
        assert!(
            t.contains("• <!date^1700691200^{date_short_pretty} {time}|2023-11-22 22:13 UTC> — *checkout-latency* in <#CPLAN> (schedule 4)"),
            "{t}"
        );
        let first = t.find("checkout-latency").unwrap();
        assert!(first < t.find("cache-outage").unwrap());

        // Long lists are cut with a count.
        s.upcoming = (0..40)
            .map(|i| planned(1_700_000_000_000 + i * 60_000, "many", i))
            .collect();
        let t = text(&s);
        assert_eq!(t.matches("*many*").count(), MAX_LIST);
        assert!(
            t.contains(&format!("_… and {} more_", 40 - MAX_LIST)),
            "{t}"
        );
        s.upcoming.clear();
        s.time_to_detect = trend(None, Some(1.0), Direction::NoComparison);
        let t = text(&s);
        assert!(t.contains("*Next scheduled runs:* none planned."), "{t}");
        assert!(
            t.contains("*Mean time to detect:* – (no run measured it) · no comparison"),
            "{t}"
        );
    }

    #[test]
    fn markdown_pages_respect_the_limit_and_fences() {
        let mut md = String::from("# Title\n\n```json\n");
        for i in 0..400 {
            md.push_str(&format!("  \"field_{i}\": \"{}\",\n", "x".repeat(40)));
        }
        md.push_str("```\n\nThe end.\n");
        let pages = markdown_pages(&md, 5_000);
        assert!(pages.len() >= 4, "{} pages", pages.len());
        for p in &pages {
            assert!(p.chars().count() <= 5_000);
            let fences = p.lines().filter(|l| l.starts_with("```")).count();
            assert_eq!(fences % 2, 0, "every page closes the fences it opens");
        }
        assert!(pages.last().unwrap().contains("The end."));
        let messages = markdown_messages("short");
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0][0]["type"], "markdown");
    }
}
