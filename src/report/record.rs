//! The learning record: the whole story of one run, for people (markdown) and for other tools
//! (JSON, `schema_version` 1, documented field by field in `docs/learning-record.md`).
//!
//! Built from the run, its journal, its Q&A and its learnings; nothing here reads the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{LoadSummary, ProbeStats, summarize};
use crate::run::Entry;
use crate::store::RunRecord;
use crate::store::learning::{Learning, LearningKind, Question};

/// Bumped only when a field changes meaning or disappears; new fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearningRecord {
    pub schema_version: u32,
    /// When this record was produced (Unix ms).
    pub generated_ms: i64,
    pub run: RunInfo,
    /// The resolved experiment the run executed (the experiment model as JSON).
    pub definition: serde_json::Value,
    pub parameters: BTreeMap<String, String>,
    pub seed: u64,
    pub outcome: Outcome,
    pub numbers: Numbers,
    pub timeline: Vec<TimelineEntry>,
    /// Most votes first, then oldest first.
    pub questions: Vec<RecordQuestion>,
    /// Oldest first.
    pub learnings: Vec<RecordLearning>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub experiment: String,
    pub title: String,
    pub requested_by: String,
    pub source: String,
    pub state: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub verdict: Option<String>,
    pub rollback: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Numbers {
    pub time_to_detect_ms: Option<i64>,
    pub time_to_recover_ms: Option<i64>,
    pub probes: Vec<ProbeStats>,
    pub loads: Vec<LoadSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub at_ms: i64,
    /// Since the run was submitted.
    pub offset_ms: i64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordQuestion {
    pub id: i64,
    pub asked_by: String,
    pub asked_ms: i64,
    pub edited_ms: Option<i64>,
    pub text: String,
    pub votes: i64,
    pub answer: Option<RecordAnswer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordAnswer {
    pub text: String,
    pub by: String,
    pub at_ms: i64,
    /// Answered by chaosbot from the journal, not by a person.
    pub auto: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordLearning {
    /// `learned` or `change`.
    pub kind: LearningKind,
    pub text: String,
    pub added_by: String,
    pub added_ms: i64,
}

/// Builds the record. `questions` as the store ranks them (deleted ones are left out).
pub fn build(
    run: &RunRecord,
    journal: &[Entry],
    questions: &[Question],
    learnings: &[Learning],
    generated_ms: i64,
) -> LearningRecord {
    let s = summarize(run, journal);
    let t0 = journal.first().map(|e| e.at_ms).unwrap_or(run.created_ms);
    LearningRecord {
        schema_version: SCHEMA_VERSION,
        generated_ms,
        run: RunInfo {
            id: run.id.clone(),
            experiment: run.experiment.clone(),
            title: run.title.clone(),
            requested_by: run.requested_by.clone(),
            source: run.source.to_string(),
            state: run.state.to_string(),
            created_ms: run.created_ms,
            started_ms: run.started_ms,
            finished_ms: run.finished_ms,
            duration_ms: s.duration_ms,
        },
        definition: run.spec.clone(),
        parameters: run.params.clone(),
        seed: run.seed,
        outcome: Outcome {
            verdict: s.verdict.clone(),
            rollback: s.rollback.clone(),
            reason: s.reason.clone(),
        },
        numbers: Numbers {
            time_to_detect_ms: s.time_to_detect_ms,
            time_to_recover_ms: s.time_to_recover_ms,
            probes: s.probes.clone(),
            loads: s.loads.clone(),
        },
        timeline: s
            .timeline
            .iter()
            .map(|t| TimelineEntry {
                at_ms: t0 + t.offset_ms,
                offset_ms: t.offset_ms,
                text: t.text.clone(),
            })
            .collect(),
        questions: record_questions(questions),
        learnings: learnings
            .iter()
            .map(|l| RecordLearning {
                kind: l.kind,
                text: l.text.clone(),
                added_by: l.added_by.clone(),
                added_ms: l.added_ms,
            })
            .collect(),
    }
}

/// The questions of a record: the ones not deleted, in the order given.
pub fn record_questions(questions: &[Question]) -> Vec<RecordQuestion> {
    questions
        .iter()
        .filter(|q| q.deleted_ms.is_none())
        .map(|q| RecordQuestion {
            id: q.id,
            asked_by: q.asked_by.clone(),
            asked_ms: q.asked_ms,
            edited_ms: q.edited_ms,
            text: q.text.clone(),
            votes: q.votes,
            answer: q.answer.as_ref().map(|a| RecordAnswer {
                text: a.text.clone(),
                by: a.by.clone(),
                at_ms: a.at_ms,
                auto: a.auto,
            }),
        })
        .collect()
}

/// Pretty JSON (the record has no map keys that are not strings, so this cannot fail in
/// practice; the error is passed on rather than hidden).
pub fn to_json(r: &LearningRecord) -> serde_json::Result<String> {
    serde_json::to_string_pretty(r)
}

/// `2026-11-26 09:58:33 UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn secs(ms: Option<i64>) -> String {
    ms.map(|v| format!("{:.1} s", v as f64 / 1000.0))
        .unwrap_or_else(|| "–".into())
}

/// Markdown for people: the same content as the JSON.
/// [`to_markdown`] with the run chart embedded under the title, by `chart_link` (a path
/// relative to the markdown file, such as `r-abc123defg.svg`).
pub fn to_markdown_with_chart(r: &LearningRecord, chart_link: &str) -> String {
    let md = to_markdown(r);
    // After the heading line and its blank line.
    let split = md.find("\n\n").map(|i| i + 2).unwrap_or(md.len());
    let (head, rest) = md.split_at(split);
    format!(
        "{head}![Run chart of `{}`]({chart_link})\n\n{rest}",
        r.run.id
    )
}

pub fn to_markdown(r: &LearningRecord) -> String {
    let mut out = String::new();
    let run = &r.run;
    let _ = writeln!(out, "# Learning record: run `{}`\n", run.id);
    let _ = writeln!(out, "**{}** (`{}`)\n", run.title, run.experiment);
    let _ = writeln!(
        out,
        "- Verdict: **{}**",
        r.outcome
            .verdict
            .as_deref()
            .unwrap_or("not finished")
            .to_uppercase()
    );
    let _ = writeln!(
        out,
        "- Rollback: {}",
        r.outcome.rollback.as_deref().unwrap_or("–")
    );
    if let Some(reason) = &r.outcome.reason {
        let _ = writeln!(out, "- Why: {reason}");
    }
    let _ = writeln!(
        out,
        "- Requested by: {} (from {})",
        run.requested_by, run.source
    );
    let _ = writeln!(out, "- Submitted: {}", utc(run.created_ms));
    if let Some(f) = run.finished_ms {
        let _ = writeln!(out, "- Finished: {}", utc(f));
    }
    let _ = writeln!(out, "- Duration: {}", secs(run.duration_ms));
    let _ = writeln!(out, "- State: {}", run.state);

    let _ = writeln!(out, "\n## Parameters and seed\n");
    let _ = writeln!(out, "- Seed: `{}`", r.seed);
    if r.parameters.is_empty() {
        let _ = writeln!(out, "- Parameters: none (the experiment's defaults)");
    }
    for (k, v) in &r.parameters {
        let _ = writeln!(out, "- `{k}` = `{v}`");
    }

    let _ = writeln!(out, "\n## Numbers\n");
    let _ = writeln!(
        out,
        "- Time to detect: {}\n- Time to recover: {}",
        secs(r.numbers.time_to_detect_ms),
        secs(r.numbers.time_to_recover_ms)
    );
    if !r.numbers.probes.is_empty() {
        let _ = writeln!(
            out,
            "\n| Probe | Phase | Samples | Failed | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in &r.numbers.probes {
            for (phase, st) in [
                ("before", &p.before),
                ("during", &p.during),
                ("after", &p.after),
            ] {
                let _ = writeln!(
                    out,
                    "| `{}` | {phase} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    p.probe, st.samples, st.failed, st.p50_ms, st.p95_ms, st.p99_ms, st.max_ms
                );
            }
        }
    }
    for l in &r.numbers.loads {
        let _ = writeln!(out, "\nLoad `{}` on `{}`:\n", l.step, l.target);
        for line in l.lines() {
            let _ = writeln!(out, "- {line}");
        }
    }

    let _ = writeln!(out, "\n## Timeline\n");
    if r.timeline.is_empty() {
        let _ = writeln!(out, "Nothing was journaled.");
    }
    for t in &r.timeline {
        let _ = writeln!(
            out,
            "- +{:.1} s ({}) {}",
            t.offset_ms as f64 / 1000.0,
            utc(t.at_ms),
            t.text
        );
    }

    let _ = writeln!(out, "\n## Questions and answers\n");
    if r.questions.is_empty() {
        let _ = writeln!(out, "No questions were asked.");
    }
    for q in &r.questions {
        let _ = writeln!(
            out,
            "- **Q** ({} vote{}) {} — asked by {} at {}",
            q.votes,
            if q.votes == 1 { "" } else { "s" },
            q.text,
            q.asked_by,
            utc(q.asked_ms)
        );
        match &q.answer {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "  - **A** {} — {} at {}{}",
                    a.text,
                    if a.auto { "chaosbot" } else { a.by.as_str() },
                    utc(a.at_ms),
                    if a.auto {
                        " (answered automatically from the journal)"
                    } else {
                        ""
                    }
                );
            }
            None => {
                let _ = writeln!(out, "  - _not answered yet_");
            }
        }
    }

    let _ = writeln!(out, "\n## What we learned\n");
    write_learnings(&mut out, r, LearningKind::Learned);
    let _ = writeln!(out, "\n## What we change\n");
    write_learnings(&mut out, r, LearningKind::Change);

    let _ = writeln!(out, "\n## Definition\n");
    let _ = writeln!(
        out,
        "```json\n{}\n```",
        serde_json::to_string_pretty(&r.definition).unwrap_or_else(|_| "{}".into())
    );
    let _ = writeln!(
        out,
        "\n_Generated by chaosbot at {} (learning record schema {})._",
        utc(r.generated_ms),
        r.schema_version
    );
    out
}

fn write_learnings(out: &mut String, r: &LearningRecord, kind: LearningKind) {
    let mut any = false;
    for l in r.learnings.iter().filter(|l| l.kind == kind) {
        any = true;
        let _ = writeln!(out, "- {} — {} at {}", l.text, l.added_by, utc(l.added_ms));
    }
    if !any {
        let _ = writeln!(out, "Nothing noted yet.");
    }
}
