//! The live terminal view of one run: a progress bar over the method, the latest number of
//! every probe with a sparkline of its recent latencies, and one line per event that matters.
//! It only reads the journal stream.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;

use crate::run::{Entry, Event};

/// How many of a probe's latest samples its sparkline shows.
pub const SPARK_SAMPLES: usize = 20;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per sample, oldest first: a bar from `▁` (the window's lowest latency) to `█`
/// (its highest), `✗` for a failed sample (`None`). Flat when every latency is the same.
pub fn sparkline(samples: &[Option<f64>]) -> String {
    let values = samples.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    samples
        .iter()
        .map(|s| match s {
            None => '✗',
            Some(v) if !v.is_finite() => '✗',
            Some(v) if hi - lo < 1e-9 => BARS[0],
            Some(v) => {
                let level = ((v - lo) / (hi - lo) * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// Follows the run's journal until its verdict; `method_ms` sizes the progress bar.
pub async fn follow(mut rx: broadcast::Receiver<Entry>, run_id: String, method_ms: u64) {
    let bar = ProgressBar::new(method_ms.max(1));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut state = String::from("queued");
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut failing: BTreeMap<String, bool> = BTreeMap::new();
    let mut recent: BTreeMap<String, VecDeque<Option<f64>>> = BTreeMap::new();
    let mut method_started: Option<i64> = None;
    loop {
        let entry = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if entry.run_id != run_id {
            continue;
        }
        if let Some(start) = method_started {
            bar.set_position(
                u64::try_from(entry.at_ms - start)
                    .unwrap_or(0)
                    .min(method_ms),
            );
        }
        let line = match &entry.event {
            Event::ProbeOutput { .. } => None,
            Event::StateChanged { to, .. } => {
                state = to.to_string();
                if method_started.is_none() && to.as_str() == "injecting" {
                    method_started = Some(entry.at_ms);
                }
                Some(format!("→ {to}"))
            }
            Event::ProbeSample {
                probe,
                phase,
                ok,
                latency_ms,
                detail,
            } => {
                let mark = if *ok { "✓" } else { "✗" };
                let was_ok = failing.get(probe).is_none_or(|f| !f);
                failing.insert(probe.clone(), !ok);
                let window = recent.entry(probe.clone()).or_default();
                if window.len() == SPARK_SAMPLES {
                    window.pop_front();
                }
                window.push_back(ok.then_some(*latency_ms));
                let spark = sparkline(window.make_contiguous());
                latest.insert(
                    probe.clone(),
                    format!("{probe} {mark} {latency_ms:.1}ms {spark}"),
                );
                // One line when a probe starts failing and one when it passes again; the
                // numbers in between are on the status line.
                match (was_ok, ok) {
                    (true, false) => {
                        Some(format!("✗ {probe} ({}) failing: {detail}", phase.as_str()))
                    }
                    (false, true) => Some(format!("✓ {probe} ({}) passing again", phase.as_str())),
                    _ => None,
                }
            }
            Event::FaultInjected { summary, .. } => Some(format!("⚡ injected: {summary}")),
            Event::FaultReverted { step, .. } => Some(format!("↺ reverted `{step}`")),
            Event::FaultRevertFailed { step, error, .. } => {
                Some(format!("!! REVERT FAILED for `{step}`: {error}"))
            }
            Event::ToleranceExceeded { probe, detail } => {
                Some(format!("⚠ hypothesis breached by `{probe}`: {detail}"))
            }
            Event::StopConditionMet { probe, detail, .. } => {
                Some(format!("■ stop condition on `{probe}`: {detail}"))
            }
            Event::AbortRequested { by, reason } => {
                Some(format!("■ abort requested by {by}: {reason}"))
            }
            Event::StepFailed { step, error } => Some(format!("!! step `{step}` failed: {error}")),
            Event::RollbackAction { name, ok, detail } => Some(format!(
                "↺ rollback `{name}` {}: {detail}",
                if *ok { "ok" } else { "FAILED" }
            )),
            Event::ActionRan {
                step, ok, detail, ..
            } => Some(format!(
                "▶ action `{step}` {}: {detail}",
                if *ok { "ran" } else { "FAILED" }
            )),
            Event::Recovered { reason, .. } => Some(format!("recovered: {reason}")),
            e @ Event::Adopted { .. } => crate::report::text::adopted(e),
            Event::Warning { text } => Some(format!("⚠ {text}")),
            e @ (Event::AgentLost { .. } | Event::AgentBack { .. } | Event::AgentNote { .. }) => {
                crate::report::text::agent_event(e).map(|t| format!("⛁ {t}"))
            }
            Event::LoadStats { step, stats, .. } => {
                latest.insert(
                    step.clone(),
                    format!(
                        "{step} {:.0} rps p99 {:.1}ms {:.1}% err",
                        stats.achieved_rps,
                        stats.latency.p99_ms,
                        stats.error_rate() * 100.0
                    ),
                );
                None
            }
            Event::LoadReport { step, stats, .. } => {
                latest.remove(step);
                Some(format!("▤ load `{step}` done: {}", stats.line()))
            }
            Event::Submitted { .. } => None,
            Event::Verdict {
                verdict, rollback, ..
            } => {
                bar.finish_and_clear();
                println!("verdict: {verdict} ({rollback})");
                return;
            }
        };
        let numbers: Vec<&str> = latest.values().map(String::as_str).collect();
        bar.set_message(format!("{state} │ {}", numbers.join(" │ ")));
        if let Some(line) = line {
            bar.suspend(|| println!("{line}"));
        }
    }
    bar.finish_and_clear();
}
