//! Renderings of a run's journal for people: the final summary (numbers before, during and
//! after; timeline; time to detect and to recover), the live terminal view ([`live`]), answers
//! to questions from the journal ([`ask`]), period summaries ([`period`]) and the learning
//! record ([`record`]).
//!
//! Views write no transport's markup: what goes to Slack is built from [`text`] pieces that
//! `slack/` renders as mrkdwn.

pub mod ask;
pub mod chaostoolkit;
pub mod chart;
pub mod live;
pub mod period;
pub mod record;
pub mod text;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::run::{Entry, Event, Latencies, LoadFigures, SamplePhase};
use crate::store::RunRecord;

/// Latency and success numbers of one probe in one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PhaseStats {
    pub samples: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeStats {
    pub probe: String,
    pub before: PhaseStats,
    pub during: PhaseStats,
    pub after: PhaseStats,
}

/// The totals of one load step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoadSummary {
    pub step: String,
    pub target: String,
    pub duration_ms: u64,
    /// Latencies corrected for coordinated omission, rates, status codes and errors.
    pub stats: LoadFigures,
    /// Latency from the actual send, for comparison.
    pub service_time: Latencies,
    pub stopped_early: bool,
}

impl LoadSummary {
    /// Several lines for people: rates, percentiles, codes, errors.
    pub fn lines(&self) -> Vec<String> {
        let s = &self.stats;
        let l = &s.latency;
        let mut out = vec![
            format!(
                "{} requests in {:.1}s{}: {:.1} req/s achieved{} · {:.2}% failed",
                s.requests,
                self.duration_ms as f64 / 1000.0,
                if self.stopped_early {
                    " (stopped early)"
                } else {
                    ""
                },
                s.achieved_rps,
                if s.target_rps > 0.0 {
                    format!(" of {:.1} targeted", s.target_rps)
                } else {
                    String::new()
                },
                s.error_rate() * 100.0
            ),
            format!(
                "latency p50 {:.1} · p90 {:.1} · p95 {:.1} · p99 {:.1} · p99.9 {:.1} · max {:.1} ms (from intended send time)",
                l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
            ),
            format!(
                "service time p50 {:.1} · p99 {:.1} · max {:.1} ms (uncorrected)",
                self.service_time.p50_ms, self.service_time.p99_ms, self.service_time.max_ms
            ),
        ];
        if !s.status_counts.is_empty() {
            let codes: Vec<String> = s
                .status_counts
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            out.push(format!("status {}", codes.join(", ")));
        }
        if !s.error_counts.is_empty() {
            let errs: Vec<String> = s
                .error_counts
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            out.push(format!("errors {}", errs.join(", ")));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelineItem {
    /// Milliseconds since the run was submitted.
    pub offset_ms: i64,
    pub text: String,
}

/// Everything a person wants to know about a finished (or running) run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    pub run_id: String,
    pub experiment: String,
    pub title: String,
    pub requested_by: String,
    pub seed: u64,
    pub params: BTreeMap<String, String>,
    pub state: String,
    pub verdict: Option<String>,
    pub rollback: Option<String>,
    pub reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub probes: Vec<ProbeStats>,
    pub timeline: Vec<TimelineItem>,
    /// From the first fault injected to the first sign of trouble (failed sample).
    pub time_to_detect_ms: Option<i64>,
    /// From the last fault removed to the steady state being back (probes passing again).
    pub time_to_recover_ms: Option<i64>,
    /// One entry per load step that ran, in journal order.
    pub loads: Vec<LoadSummary>,
}

/// Builds the summary from the run record and its journal.
pub fn summarize(run: &RunRecord, entries: &[Entry]) -> RunSummary {
    let t0 = entries.first().map(|e| e.at_ms).unwrap_or(run.created_ms);
    let mut hists: BTreeMap<(String, SamplePhase), (Histogram<u64>, u64, u64)> = BTreeMap::new();
    let mut probe_order: Vec<String> = Vec::new();
    let mut timeline = Vec::new();
    let mut first_injected = None;
    let mut first_trouble = None;
    let mut last_reverted = None;
    let mut after_samples: Vec<(i64, bool)> = Vec::new();
    let mut loads = Vec::new();

    for e in entries {
        let at = e.at_ms - t0;
        match &e.event {
            Event::ProbeSample {
                probe,
                phase,
                ok,
                latency_ms,
                ..
            } => {
                if !probe_order.contains(probe) {
                    probe_order.push(probe.clone());
                }
                let slot = hists.entry((probe.clone(), *phase)).or_insert_with(|| {
                    (
                        // Microseconds, up to an hour, 3 significant digits.
                        Histogram::new_with_bounds(1, 3_600_000_000, 3)
                            .expect("constant histogram bounds are valid"),
                        0,
                        0,
                    )
                });
                let us = (latency_ms * 1000.0).round().max(1.0) as u64;
                let _ = slot.0.record(us.min(3_600_000_000));
                slot.1 += 1;
                if !ok {
                    slot.2 += 1;
                }
                if *phase == SamplePhase::During && !ok && first_trouble.is_none() {
                    first_trouble = Some(e.at_ms);
                }
                if *phase == SamplePhase::After {
                    after_samples.push((e.at_ms, *ok));
                }
            }
            Event::Submitted { requested_by, .. } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("submitted by {requested_by}"),
            }),
            Event::StateChanged { to, .. } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("→ {to}"),
            }),
            Event::FaultInjected { step, summary, .. } => {
                first_injected.get_or_insert(e.at_ms);
                timeline.push(TimelineItem {
                    offset_ms: at,
                    text: format!("fault `{step}` injected: {summary}"),
                });
            }
            Event::FaultReverted { step, .. } => {
                last_reverted = Some(e.at_ms);
                timeline.push(TimelineItem {
                    offset_ms: at,
                    text: format!("fault `{step}` reverted"),
                });
            }
            Event::FaultRevertFailed { step, error, .. } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("REVERT FAILED for `{step}`: {error}"),
            }),
            Event::ToleranceExceeded { probe, detail } => {
                first_trouble.get_or_insert(e.at_ms);
                timeline.push(TimelineItem {
                    offset_ms: at,
                    text: format!("hypothesis breached by `{probe}`: {detail}"),
                })
            }
            Event::StopConditionMet {
                probe, condition, ..
            } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("stop condition on `{probe}`: {condition}"),
            }),
            Event::AbortRequested { by, reason } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("abort requested by {by}: {reason}"),
            }),
            Event::StepFailed { step, error } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("step `{step}` failed: {error}"),
            }),
            Event::RollbackAction { name, ok, detail } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!(
                    "rollback `{name}` {}: {detail}",
                    if *ok { "done" } else { "FAILED" }
                ),
            }),
            Event::ActionRan {
                step, ok, detail, ..
            } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!(
                    "action `{step}` {}: {detail}",
                    if *ok { "ran" } else { "FAILED" }
                ),
            }),
            Event::Recovered { reason, .. } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("recovered: {reason}"),
            }),
            ev @ Event::Adopted { .. } => timeline.push(TimelineItem {
                offset_ms: at,
                text: text::adopted(ev).unwrap_or_default(),
            }),
            Event::Warning { text } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("warning: {text}"),
            }),
            ev @ (Event::AgentLost { .. } | Event::AgentBack { .. } | Event::AgentNote { .. }) => {
                if let Some(text) = text::agent_event(ev) {
                    timeline.push(TimelineItem {
                        offset_ms: at,
                        text,
                    });
                }
            }
            Event::Verdict {
                verdict, rollback, ..
            } => timeline.push(TimelineItem {
                offset_ms: at,
                text: format!("verdict: {verdict} ({rollback})"),
            }),
            // Per-second numbers are for live views; the report below has the totals.
            Event::LoadStats { .. } | Event::ProbeOutput { .. } => {}
            Event::LoadReport {
                step,
                target,
                duration_ms,
                stats,
                service_time,
                stopped_early,
            } => {
                timeline.push(TimelineItem {
                    offset_ms: at,
                    text: format!("load `{step}` done: {}", stats.line()),
                });
                loads.push(LoadSummary {
                    step: step.clone(),
                    target: target.clone(),
                    duration_ms: *duration_ms,
                    stats: stats.clone(),
                    service_time: service_time.clone(),
                    stopped_early: *stopped_early,
                });
            }
        }
    }

    let stats = |probe: &str, phase: SamplePhase| -> PhaseStats {
        match hists.get(&(probe.to_string(), phase)) {
            None => PhaseStats::default(),
            Some((h, n, failed)) => PhaseStats {
                samples: *n,
                failed: *failed,
                p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
                p95_ms: h.value_at_quantile(0.95) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            },
        }
    };
    let probes = probe_order
        .iter()
        .map(|p| ProbeStats {
            probe: p.clone(),
            before: stats(p, SamplePhase::Before),
            during: stats(p, SamplePhase::During),
            after: stats(p, SamplePhase::After),
        })
        .collect();

    // Recovered = the first passing sample after which no later "after" sample failed.
    let time_to_recover_ms = last_reverted.and_then(|rev| {
        let last_bad = after_samples
            .iter()
            .filter(|(t, ok)| !ok && *t >= rev)
            .map(|(t, _)| *t)
            .max();
        after_samples
            .iter()
            .filter(|(t, ok)| *ok && *t >= rev && last_bad.is_none_or(|b| *t > b))
            .map(|(t, _)| *t)
            .min()
            .map(|t| t - rev)
    });

    RunSummary {
        run_id: run.id.clone(),
        experiment: run.experiment.clone(),
        title: run.title.clone(),
        requested_by: run.requested_by.clone(),
        seed: run.seed,
        params: run.params.clone(),
        state: run.state.to_string(),
        verdict: run.verdict.map(|v| v.to_string()),
        rollback: run.rollback.map(|r| r.to_string()),
        reason: run.reason.clone(),
        duration_ms: run.finished_ms.map(|f| f - run.created_ms),
        probes,
        timeline,
        time_to_detect_ms: match (first_injected, first_trouble) {
            (Some(i), Some(t)) if t >= i => Some(t - i),
            _ => None,
        },
        time_to_recover_ms,
        loads,
    }
}

/// The final report as text for a terminal.
pub fn render_text(s: &RunSummary) -> String {
    let mut out = String::new();
    let verdict = s.verdict.as_deref().unwrap_or("(running)");
    let _ = writeln!(out, "Run {}  ·  {} ({})", s.run_id, s.title, s.experiment);
    let _ = writeln!(
        out,
        "Verdict: {}   Rollback: {}",
        verdict.to_uppercase(),
        s.rollback.as_deref().unwrap_or("-")
    );
    if let Some(r) = &s.reason {
        let _ = writeln!(out, "Why: {r}");
    }
    let params: Vec<String> = s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "Requested by {}  ·  seed {}{}{}",
        s.requested_by,
        s.seed,
        if params.is_empty() { "" } else { "  ·  " },
        params.join(" ")
    );
    if let Some(d) = s.duration_ms {
        let _ = writeln!(out, "Duration: {:.1}s", d as f64 / 1000.0);
    }
    let ttd = s
        .time_to_detect_ms
        .map(|v| format!("{:.1}s", v as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let ttr = s
        .time_to_recover_ms
        .map(|v| format!("{:.1}s", v as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "Time to detect: {ttd}   Time to recover: {ttr}");
    if !s.probes.is_empty() {
        let _ = writeln!(
            out,
            "\nProbes            phase    samples  failed    p50 ms    p99 ms    max ms"
        );
        for p in &s.probes {
            for (name, st) in [
                ("before", &p.before),
                ("during", &p.during),
                ("after", &p.after),
            ] {
                if st.samples == 0 {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{:<17} {:<8} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1}",
                    truncate(&p.probe, 17),
                    name,
                    st.samples,
                    st.failed,
                    st.p50_ms,
                    st.p99_ms,
                    st.max_ms
                );
            }
        }
    }
    for l in &s.loads {
        let _ = writeln!(out, "\nLoad `{}` on {}", l.step, l.target);
        for line in l.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !s.timeline.is_empty() {
        let _ = writeln!(out, "\nTimeline");
        for t in &s.timeline {
            let _ = writeln!(out, "  {:>8.2}s  {}", t.offset_ms as f64 / 1000.0, t.text);
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
