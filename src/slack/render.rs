//! Block Kit renderings of a run, all computed from its journal: the parent message (updated in
//! place), one thread reply per phase change, breach, stop condition and abort, and the final
//! summary. Slack's limits are respected here: at most 50 blocks per message and 3000
//! characters per section text; longer content is split over several messages.

use std::time::Duration;

use serde_json::{Value, json};

use super::blocks::{MAX_SECTION_CHARS, Reply, section, truncate};

use crate::report::RunSummary;
use crate::run::RunState;
use crate::run::{Entry, Event};
use crate::store::RunRecord;

/// A message ready for the outbox: the fallback text and the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub blocks: Value,
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, MAX_SECTION_CHARS)}]})
}

fn state_label(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "⏳ queued",
        RunState::CheckingSteadyState => "🔎 checking the steady state",
        RunState::Injecting => "⚡ injecting",
        RunState::Observing => "👀 observing",
        RunState::Reverting => "↩️ reverting",
        RunState::Verifying => "🩺 verifying the revert",
        RunState::Done => "done",
    }
}

fn verdict_label(verdict: &str) -> &'static str {
    match verdict {
        "held" => "✅ HELD",
        "deviated" => "⚠️ DEVIATED",
        "aborted" => "🛑 ABORTED",
        _ => "❌ FAILED",
    }
}

fn user(requested_by: &str) -> String {
    if requested_by.starts_with('U') || requested_by.starts_with('W') {
        format!("<@{requested_by}>")
    } else {
        requested_by.to_string()
    }
}

/// The latest sample of each probe in the journal ("name ✓ 12.3 ms"), and the latest second
/// of each load step still running ("`api-load` ⚡ 400 req/s (target 400) · p99 12.3 ms").
fn latest_numbers(entries: &[Entry]) -> Vec<String> {
    let mut latest: Vec<(String, Option<String>)> = Vec::new();
    let mut set =
        |key: String, text: Option<String>| match latest.iter_mut().find(|(p, _)| *p == key) {
            Some(slot) => slot.1 = text,
            None => latest.push((key, text)),
        };
    for e in entries {
        match &e.event {
            Event::ProbeSample {
                probe,
                ok,
                latency_ms,
                detail,
                ..
            } => {
                let text = if *ok {
                    format!("`{probe}` ✓ {latency_ms:.1} ms")
                } else {
                    format!("`{probe}` ✗ {latency_ms:.1} ms — {detail}")
                };
                set(format!("probe:{probe}"), Some(text));
            }
            Event::LoadStats { step, stats, .. } => {
                set(
                    format!("load:{step}"),
                    Some(format!("`{step}` ⚡ {}", stats.line())),
                );
            }
            // The final report has its own reply; a finished load has no "latest" second.
            Event::LoadReport { step, .. } => set(format!("load:{step}"), None),
            _ => {}
        }
    }
    latest.into_iter().filter_map(|(_, t)| t).collect()
}

/// How far through the method the run is, from the journal (0–100).
fn progress(entries: &[Entry], method_ms: i64, state: RunState) -> u32 {
    if state == RunState::Done {
        return 100;
    }
    let start = entries.iter().find_map(|e| match &e.event {
        Event::StateChanged {
            to: RunState::Injecting,
            ..
        } => Some(e.at_ms),
        _ => None,
    });
    let (Some(start), Some(last)) = (start, entries.last()) else {
        return 0;
    };
    if method_ms <= 0 {
        return 0;
    }
    (((last.at_ms - start) * 100 / method_ms).clamp(0, 100)) as u32
}

fn bar(percent: u32) -> String {
    let filled = (percent / 10) as usize;
    format!(
        "{}{} {percent}%",
        "▰".repeat(filled),
        "▱".repeat(10 - filled)
    )
}

/// The run's parent message in the channel.
pub fn parent(
    run: &RunRecord,
    entries: &[Entry],
    summary: &RunSummary,
    method_ms: i64,
) -> Rendered {
    parent_in_queue(run, entries, summary, method_ms, None)
}

/// "behind `r-…` (holds `svc`) · position 2 in the queue; …": what a queued run waits for.
pub fn queue_line(place: &crate::store::QueuePlace) -> Option<String> {
    if place.holders.is_empty() {
        return None;
    }
    let behind: Vec<String> = place
        .holders
        .iter()
        .map(|h| format!("`{}` (holds `{}`)", h.run_id, h.target))
        .collect();
    Some(format!(
        "behind {} · position {} in the queue; it starts when that run ends",
        behind.join(", "),
        place.ahead + 1
    ))
}

/// The parent message of a run, with where it stands in the queue while it waits behind the
/// run that holds its target.
pub fn parent_in_queue(
    run: &RunRecord,
    entries: &[Entry],
    summary: &RunSummary,
    method_ms: i64,
    queue: Option<&crate::store::QueuePlace>,
) -> Rendered {
    let state = entries
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Event::StateChanged { to, .. } => Some(*to),
            Event::Verdict { .. } => Some(RunState::Done),
            _ => None,
        })
        .unwrap_or(RunState::Queued);
    let targets: Vec<String> = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::Submitted { targets, .. } => Some(targets.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let status = match &summary.verdict {
        Some(v) => format!(
            "{} · rollback *{}*",
            verdict_label(v),
            summary.rollback.as_deref().unwrap_or("-")
        ),
        None => format!(
            "{} · {}",
            state_label(state),
            bar(progress(entries, method_ms, state))
        ),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("🧪 {}", run.title), 150), "emoji": true}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Experiment*\n`{}`", run.experiment)},
            {"type": "mrkdwn", "text": format!("*Started by*\n{}", user(&run.requested_by))},
            {"type": "mrkdwn", "text": format!("*Status*\n{status}")},
            {"type": "mrkdwn", "text": format!("*Targets*\n{}", if targets.is_empty() { "-".to_string() } else { targets.join(", ") })},
        ]}),
    ];
    if state == RunState::Queued
        && let Some(line) = queue.and_then(queue_line)
    {
        blocks.push(section(&format!(":hourglass_flowing_sand: Queued {line}")));
    }
    let numbers = latest_numbers(entries);
    if !numbers.is_empty() {
        blocks.push(section(&format!(
            "*Latest numbers*\n{}",
            numbers.join("\n")
        )));
    }
    if let Some(reason) = &summary.reason {
        blocks.push(section(&format!("*Why:* {reason}")));
    }
    if state != RunState::Done && summary.verdict.is_none() {
        blocks.push(json!({"type": "actions", "block_id": "run_actions", "elements": [{
            "type": "button",
            "action_id": "abort_run",
            "style": "danger",
            "value": run.id,
            "text": {"type": "plain_text", "text": "Abort", "emoji": true},
            "confirm": {
                "title": {"type": "plain_text", "text": "Abort this run?"},
                "text": {"type": "mrkdwn", "text": format!("Faults of `{}` are removed at once and the steady state is re-checked.", run.experiment)},
                "confirm": {"type": "plain_text", "text": "Abort"},
                "deny": {"type": "plain_text", "text": "Keep running"},
                "style": "danger"
            }
        }]}));
    }
    let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    blocks.push(context(&format!(
        "run `{}` · seed {}{}",
        run.id,
        run.seed,
        if params.is_empty() {
            String::new()
        } else {
            format!(" · {}", params.join(" "))
        }
    )));
    let text = match &summary.verdict {
        Some(v) => format!(
            "{}: {} ({})",
            run.title,
            v,
            summary.rollback.as_deref().unwrap_or("-")
        ),
        None => format!("{}: {}", run.title, state),
    };
    Rendered {
        text,
        blocks: Value::Array(blocks),
    }
}

/// Adds the link to the run's live page (chart, timeline, verdict, Q&A) above the parent
/// message's last line. `url` is a signed link; Slack reads `&` in a link as `&amp;`.
pub fn add_page_link(parent: &mut Rendered, url: &str) {
    let Some(blocks) = parent.blocks.as_array_mut() else {
        return;
    };
    let at = blocks.len().saturating_sub(1);
    blocks.insert(
        at,
        context(&format!(
            ":chart_with_upwards_trend: {}: the chart as it happens, the timeline, the verdict and the Q&A",
            page_link(url)
        )),
    );
}

/// `<url|Live page>` in mrkdwn (Slack wants `&`, `<` and `>` in a link escaped).
pub fn page_link(url: &str) -> String {
    let escaped = url
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<{escaped}|Live page>")
}

/// The thread reply for one journal entry, if it deserves one.
pub fn thread_reply(entry: &Entry) -> Option<Rendered> {
    let text = match &entry.event {
        Event::Submitted {
            requested_by,
            params,
            ..
        } => {
            let p: Vec<String> = params.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
            format!(
                "Queued by {}{}",
                user(requested_by),
                if p.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", p.join(" "))
                }
            )
        }
        Event::StateChanged { to, .. } => match to {
            RunState::CheckingSteadyState => {
                "🔎 Checking the steady state before injecting anything".into()
            }
            RunState::Injecting => "⚡ Injecting".into(),
            RunState::Observing => "👀 Observing with the fault in place".into(),
            RunState::Reverting => "↩️ Reverting: removing every fault".into(),
            RunState::Verifying => "🩺 Verifying: probing until the steady state is back".into(),
            RunState::Queued | RunState::Done => return None,
        },
        Event::FaultInjected { summary, step, .. } => {
            format!("⚡ Fault `{step}` injected: {summary}")
        }
        Event::FaultReverted { step, .. } => format!("↩️ Fault `{step}` removed"),
        Event::FaultRevertFailed { step, error, .. } => {
            format!("🚨 *Could not remove fault `{step}`*: {error}")
        }
        Event::ToleranceExceeded { probe, detail } => {
            format!("⚠️ Hypothesis breached by `{probe}`: {detail}")
        }
        Event::StopConditionMet {
            probe,
            condition,
            detail,
        } => {
            format!(
                "🛑 Stop condition on `{probe}` ({condition}): {detail}. Halting and reverting."
            )
        }
        Event::AbortRequested { by, reason } => format!(
            "🛑 Abort requested by {}{}",
            user(by),
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ),
        Event::StepFailed { step, error } => format!("❌ Step `{step}` failed: {error}"),
        Event::RollbackAction { name, ok, detail } => format!(
            "{} Rollback `{name}`: {detail}",
            if *ok { "↩️" } else { "🚨" }
        ),
        Event::ActionRan {
            step, ok, detail, ..
        } => format!(
            "{} Action `{step}`: {detail}",
            if *ok { "▶️" } else { "🚨" }
        ),
        Event::Recovered { reason, .. } => format!("🩹 Recovered after a crash: {reason}"),
        Event::Adopted { .. } => {
            format!("🔁 {}", crate::report::text::adopted(&entry.event)?)
        }
        Event::Warning { text } => format!("⚠️ {text}"),
        Event::AgentLost { .. } => {
            format!("📡 {}", crate::report::text::agent_event(&entry.event)?)
        }
        Event::AgentBack { .. } | Event::AgentNote { .. } => {
            format!("🛰️ {}", crate::report::text::agent_event(&entry.event)?)
        }
        Event::LoadReport {
            step,
            target,
            duration_ms,
            stats,
            service_time,
            stopped_early,
        } => {
            let report = crate::report::LoadSummary {
                step: step.clone(),
                target: target.clone(),
                duration_ms: *duration_ms,
                stats: stats.clone(),
                service_time: service_time.clone(),
                stopped_early: *stopped_early,
            };
            format!(
                "📈 Load `{step}` on `{target}` finished\n```{}```",
                report.lines().join("\n")
            )
        }
        // Per-second load numbers show in the parent's latest numbers, not as replies.
        Event::ProbeSample { .. }
        | Event::ProbeOutput { .. }
        | Event::Verdict { .. }
        | Event::LoadStats { .. } => {
            return None;
        }
    };
    Some(Rendered {
        blocks: json!([section(&text)]),
        text,
    })
}

/// The run's summary: verdict, who, durations, time to detect and to recover, probe numbers
/// before/during/after, faults and the timeline. `/chaos summary` answers with it; the thread
/// gets it (as several replies when it is long) when the run ends.
pub fn summary(s: &RunSummary) -> Reply {
    let verdict = s.verdict.as_deref().unwrap_or("still running");
    let mut reply = Reply::new(format!("Run {} of {}: {verdict}", s.run_id, s.experiment));
    reply.push(format!(
        "*Run `{}`* — {} (`{}`)\n*Verdict:* {} · *Rollback:* {}{}\n*Started by* <@{}> · *state* {} · *duration* {}\n*Time to detect:* {} · *Time to recover:* {}",
        s.run_id,
        s.title,
        s.experiment,
        verdict.to_uppercase(),
        s.rollback.as_deref().unwrap_or("–"),
        s.reason
            .as_deref()
            .map(|r| format!("\n*Why:* {r}"))
            .unwrap_or_default(),
        s.requested_by,
        s.state,
        fmt_ms(s.duration_ms),
        fmt_ms(s.time_to_detect_ms),
        fmt_ms(s.time_to_recover_ms),
    ));
    if !s.params.is_empty() {
        let p: Vec<String> = s.params.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        reply.push(format!("*Parameters:* {}", p.join(" ")));
    }
    for p in &s.probes {
        let row = |name: &str, st: &crate::report::PhaseStats| {
            format!(
                "{name:<7} {:>5} samples {:>4} failed  p50 {:>8.1} ms  p95 {:>8.1} ms  max {:>8.1} ms",
                st.samples, st.failed, st.p50_ms, st.p95_ms, st.max_ms
            )
        };
        reply.push(format!(
            "*Probe `{}`*\n```{}\n{}\n{}```",
            p.probe,
            row("before", &p.before),
            row("during", &p.during),
            row("after", &p.after)
        ));
    }
    for l in &s.loads {
        reply.push(format!(
            "*Load `{}`* on `{}`\n```{}```",
            l.step,
            l.target,
            l.lines().join("\n")
        ));
    }
    let faults: Vec<String> = s
        .timeline
        .iter()
        .filter(|t| t.text.starts_with("fault") || t.text.starts_with("REVERT FAILED"))
        .map(|t| format!("+{} {}", fmt_ms(Some(t.offset_ms)), t.text))
        .collect();
    reply.push(if faults.is_empty() {
        "*Faults:* none injected".to_string()
    } else {
        format!("*Faults:*\n{}", faults.join("\n"))
    });
    let timeline: String = s
        .timeline
        .iter()
        .map(|t| format!("{:>7.1}s  {}\n", t.offset_ms as f64 / 1000.0, t.text))
        .collect();
    if !timeline.is_empty() {
        reply.push(format!("*Timeline*\n```{timeline}```"));
    }
    reply
}

fn fmt_ms(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => {
            humantime::format_duration(Duration::from_millis(ms as u64)).to_string()
        }
        _ => "–".to_string(),
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::run::{Latencies, LoadFigures};

    fn entry(event: Event) -> Entry {
        Entry {
            run_id: "r1".into(),
            seq: 1,
            at_ms: 0,
            event,
        }
    }

    fn figures() -> LoadFigures {
        LoadFigures {
            target_rps: 200.0,
            achieved_rps: 198.0,
            requests: 1980,
            ok: 1970,
            errors: 10,
            latency: Latencies {
                p99_ms: 42.5,
                ..Latencies::default()
            },
            status_counts: [("200".to_string(), 1970)].into(),
            error_counts: [("connect refused".to_string(), 10)].into(),
        }
    }

    #[test]
    fn the_final_load_report_gets_one_reply_and_seconds_none() {
        let second = entry(Event::LoadStats {
            step: "api-load".into(),
            second: 3,
            stats: figures(),
        });
        assert!(thread_reply(&second).is_none());
        let report = entry(Event::LoadReport {
            step: "api-load".into(),
            target: "api-http".into(),
            duration_ms: 10_000,
            stats: figures(),
            service_time: Latencies::default(),
            stopped_early: false,
        });
        let r = thread_reply(&report).unwrap();
        assert!(
            r.text.contains("Load `api-load` on `api-http` finished"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("198.0 req/s achieved of 200.0 targeted"),
            "{}",
            r.text
        );
        assert!(r.text.contains("p99 42.5"), "{}", r.text);
        assert!(r.text.contains("connect refused: 10"), "{}", r.text);
        // The parent shows the latest second while the load runs, and drops it at the end.
        let live = latest_numbers(std::slice::from_ref(&second));
        assert_eq!(live.len(), 1);
        assert!(
            live[0].contains("198 req/s (target 200) · p99 42.5 ms"),
            "{live:?}"
        );
        assert!(latest_numbers(&[second, report]).is_empty());
    }
}
