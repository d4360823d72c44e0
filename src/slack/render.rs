//! Block Kit renderings of a run, all computed from its journal: the parent message (updated in
//! place), one thread reply per phase change, breach, stop condition and abort, and the final
//! summary. Slack's limits are respected here: at most 50 blocks per message and 3000
//! characters per section text; longer content is split over several messages.

use serde_json::{Value, json};

use crate::engine::state::RunState;
use crate::journal::{Entry, Event};
use crate::report::RunSummary;
use crate::store::RunRecord;

/// Slack's limit on blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Slack's limit on a section's text.
pub const MAX_SECTION_CHARS: usize = 3000;

/// A message ready for the outbox: the fallback text and the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub blocks: Value,
}

/// A section block, its text cut to Slack's limit (with a note) if needed.
pub fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION_CHARS)}})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, MAX_SECTION_CHARS)}]})
}

/// Cuts `text` to at most `max` characters, saying so.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    const NOTE: &str = "… (cut; `chaosbot show` has it all)";
    let keep = max.saturating_sub(NOTE.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(NOTE);
    out
}

/// Splits long text into chunks of at most `max` characters, at line breaks where possible.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if current.chars().count() + line.chars().count() > max && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        if line.chars().count() > max {
            // One line longer than a whole section: hard-cut it.
            let chars: Vec<char> = line.chars().collect();
            for piece in chars.chunks(max) {
                chunks.push(piece.iter().collect());
            }
            continue;
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Groups blocks into messages of at most [`MAX_BLOCKS`] each.
pub fn paginate(blocks: Vec<Value>) -> Vec<Value> {
    blocks
        .chunks(MAX_BLOCKS)
        .map(|c| Value::Array(c.to_vec()))
        .collect()
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

/// The latest sample of each probe in the journal: "name ✓ 12.3 ms".
fn latest_numbers(entries: &[Entry]) -> Vec<String> {
    let mut latest: Vec<(String, String)> = Vec::new();
    for e in entries {
        if let Event::ProbeSample {
            probe,
            ok,
            latency_ms,
            detail,
            ..
        } = &e.event
        {
            let text = if *ok {
                format!("`{probe}` ✓ {latency_ms:.1} ms")
            } else {
                format!("`{probe}` ✗ {latency_ms:.1} ms — {detail}")
            };
            match latest.iter_mut().find(|(p, _)| p == probe) {
                Some(slot) => slot.1 = text,
                None => latest.push((probe.clone(), text)),
            }
        }
    }
    latest.into_iter().map(|(_, t)| t).collect()
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
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&format!("🧪 {}", run.title), 150), "emoji": true}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Experiment*\n`{}`", run.experiment)},
            {"type": "mrkdwn", "text": format!("*Started by*\n{}", user(&run.requested_by))},
            {"type": "mrkdwn", "text": format!("*Status*\n{status}")},
            {"type": "mrkdwn", "text": format!("*Targets*\n{}", if targets.is_empty() { "-".to_string() } else { targets.join(", ") })},
        ]}),
    ];
    let numbers = latest_numbers(entries);
    if !numbers.is_empty() {
        blocks.push(section(&format!("*Latest probes*\n{}", numbers.join("\n"))));
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
        Event::Recovered { reason, .. } => format!("🩹 Recovered after a crash: {reason}"),
        Event::ProbeSample { .. } | Event::Verdict { .. } => return None,
    };
    Some(Rendered {
        blocks: json!([section(&text)]),
        text,
    })
}

fn phase_row(name: &str, s: &crate::report::PhaseStats) -> Option<String> {
    (s.samples > 0).then(|| {
        format!(
            "{name:<7} {:>4} samples {:>4} failed   p50 {:>8.1} ms   p99 {:>8.1} ms",
            s.samples, s.failed, s.p50_ms, s.p99_ms
        )
    })
}

/// The final summary, as one or more messages (each a block array within Slack's limits).
pub fn summary(summary: &RunSummary) -> Vec<Rendered> {
    let verdict = summary.verdict.as_deref().unwrap_or("running");
    let secs =
        |ms: Option<i64>| ms.map_or("-".to_string(), |v| format!("{:.1} s", v as f64 / 1000.0));
    let mut blocks = vec![section(&format!(
        "*Summary of `{}`* — {} · rollback *{}*\n{}",
        summary.run_id,
        verdict_label(verdict),
        summary.rollback.as_deref().unwrap_or("-"),
        summary.reason.as_deref().unwrap_or("")
    ))];
    blocks.push(json!({"type": "section", "fields": [
        {"type": "mrkdwn", "text": format!("*Started by*\n{}", user(&summary.requested_by))},
        {"type": "mrkdwn", "text": format!("*Duration*\n{}", secs(summary.duration_ms))},
        {"type": "mrkdwn", "text": format!("*Time to detect*\n{}", secs(summary.time_to_detect_ms))},
        {"type": "mrkdwn", "text": format!("*Time to recover*\n{}", secs(summary.time_to_recover_ms))},
    ]}));
    let mut numbers = String::new();
    for p in &summary.probes {
        numbers.push_str(&format!("{}\n", p.probe));
        for (name, st) in [
            ("before", &p.before),
            ("during", &p.during),
            ("after", &p.after),
        ] {
            if let Some(row) = phase_row(name, st) {
                numbers.push_str(&format!("  {row}\n"));
            }
        }
    }
    if !numbers.is_empty() {
        for chunk in split_text(&numbers, MAX_SECTION_CHARS - 8) {
            blocks.push(section(&format!("```{chunk}```")));
        }
    }
    let timeline: String = summary
        .timeline
        .iter()
        .map(|t| format!("{:>7.1}s  {}\n", t.offset_ms as f64 / 1000.0, t.text))
        .collect();
    for (i, chunk) in split_text(&timeline, MAX_SECTION_CHARS - 24)
        .into_iter()
        .enumerate()
    {
        let head = if i == 0 { "*Timeline*\n" } else { "" };
        blocks.push(section(&format!("{head}```{chunk}```")));
    }
    let fallback = format!("Summary of {}: {verdict}", summary.run_id);
    paginate(blocks)
        .into_iter()
        .map(|b| Rendered {
            text: fallback.clone(),
            blocks: b,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_within_limits() {
        let text: String = (0..500)
            .map(|i| format!("line {i} of the timeline\n"))
            .collect();
        let chunks = split_text(&text, 3000);
        assert!(chunks.len() > 3);
        assert!(chunks.iter().all(|c| c.chars().count() <= 3000));
        assert_eq!(chunks.concat(), text);
        let giant = "x".repeat(7000);
        let chunks = split_text(&giant, 3000);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), giant);
    }

    #[test]
    fn clip_and_paginate_respect_slack_limits() {
        let s = clip(&"y".repeat(5000), MAX_SECTION_CHARS);
        assert_eq!(s.chars().count(), MAX_SECTION_CHARS);
        let blocks: Vec<Value> = (0..120).map(|i| section(&i.to_string())).collect();
        let pages = paginate(blocks);
        assert_eq!(pages.len(), 3);
        assert!(
            pages
                .iter()
                .all(|p| p.as_array().unwrap().len() <= MAX_BLOCKS)
        );
    }
}
