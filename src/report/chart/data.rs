//! What the run chart shows, built from the run's journal: per-probe latency percentiles and
//! failures per time bucket, fault windows, marks (breaches, stop conditions, aborts), and the
//! per-second numbers of load steps. Drawing is in [`super::draw`].

use std::collections::BTreeMap;

use crate::load::threshold::Metric;
use crate::run::{Entry, Event, RunState};
use crate::spec::model::{Experiment, FaultSpec, ProbeKind};
use crate::store::RunRecord;

/// At most about this many buckets along the time axis: a ten-hour run is drawn as wide
/// buckets instead of 36 000 points per line.
const MAX_BUCKETS: i64 = 600;

/// Bucket widths the chart may pick, in seconds (the smallest that keeps under [`MAX_BUCKETS`]).
const BUCKET_STEPS_S: &[i64] = &[1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

/// One time bucket of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, milliseconds since the run was submitted.
    pub start_ms: i64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSeries {
    pub probe: String,
    pub buckets: Vec<Bucket>,
    pub samples: u64,
    pub failed: u64,
    /// The probe's `max_latency`, when it has one (drawn as a line).
    pub max_latency_ms: Option<f64>,
}

/// When a fault was in place.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    pub step: String,
    pub fault: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// False while the fault is still in place (the window runs to the chart's end) or when
    /// its revert failed.
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// The hypothesis tolerance was exceeded.
    Breach,
    StopCondition,
    Abort,
    /// A step failed or a revert failed.
    Failure,
}

impl MarkKind {
    pub fn label(self) -> &'static str {
        match self {
            MarkKind::Breach => "breach",
            MarkKind::StopCondition => "stop condition",
            MarkKind::Abort => "abort",
            MarkKind::Failure => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at_ms: i64,
    pub kind: MarkKind,
    /// Who or what (probe name, requester), short.
    pub label: String,
}

/// One second of a load step.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPoint {
    pub at_ms: i64,
    pub achieved_rps: f64,
    pub target_rps: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadSeries {
    pub step: String,
    pub points: Vec<LoadPoint>,
    /// The step's `p99 < …` threshold, in milliseconds.
    pub p99_limit_ms: Option<f64>,
}

/// Everything the run chart draws.
#[derive(Debug, Clone, PartialEq)]
pub struct RunChart {
    pub run_id: String,
    pub title: String,
    pub experiment: String,
    pub state: String,
    pub verdict: Option<String>,
    pub rollback: Option<String>,
    /// Length of the time axis in milliseconds (0 when nothing happened yet).
    pub span_ms: i64,
    pub bucket_ms: i64,
    pub probes: Vec<ProbeSeries>,
    pub faults: Vec<FaultWindow>,
    pub marks: Vec<Mark>,
    pub loads: Vec<LoadSeries>,
}

impl RunChart {
    /// Why there is nothing to plot, when there is nothing (drawn instead of empty axes).
    pub fn empty_reason(&self) -> Option<String> {
        if !self.probes.is_empty() || !self.loads.is_empty() {
            return None;
        }
        Some(if self.state == RunState::Queued.as_str() {
            "No samples yet: the run is still queued".to_string()
        } else if self.verdict.is_none() {
            "No samples yet: the first probe results are on their way".to_string()
        } else {
            "No probe samples: the run recorded none before it ended".to_string()
        })
    }

    /// The bucket width as people say it ("1 s", "5 min").
    pub fn bucket_label(&self) -> String {
        let s = self.bucket_ms / 1000;
        if s >= 3600 && s % 3600 == 0 {
            format!("{} h", s / 3600)
        } else if s >= 60 && s % 60 == 0 {
            format!("{} min", s / 60)
        } else {
            format!("{s} s")
        }
    }
}

fn bucket_for(span_ms: i64) -> i64 {
    let span = u64::try_from(span_ms).unwrap_or(0);
    let needed_s = (span / MAX_BUCKETS as u64).div_ceil(1000).max(1);
    let s = BUCKET_STEPS_S
        .iter()
        .copied()
        .find(|&s| s as u64 >= needed_s)
        .map(|s| s as u64)
        .unwrap_or_else(|| needed_s.div_ceil(3600) * 3600);
    i64::try_from(s * 1000).unwrap_or(i64::MAX)
}

/// The value at quantile `q` of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Limits the chart draws as lines, read from the run's resolved experiment.
#[derive(Default)]
struct Limits {
    probe_max_ms: BTreeMap<String, f64>,
    load_p99_ms: BTreeMap<String, f64>,
}

fn limits(spec: &serde_json::Value) -> Limits {
    let mut out = Limits::default();
    // An older or foreign definition simply draws no limit lines.
    let Ok(exp) = serde_json::from_value::<Experiment>(spec.clone()) else {
        return out;
    };
    for p in &exp.hypothesis {
        let max = match &p.kind {
            ProbeKind::Http { max_latency, .. } | ProbeKind::Tcp { max_latency, .. } => {
                *max_latency
            }
            ProbeKind::Command { .. } => None,
        };
        if let Some(m) = max {
            out.probe_max_ms
                .insert(p.name.clone(), m.as_secs_f64() * 1000.0);
        }
    }
    for step in exp.fault_steps() {
        if let FaultSpec::Load { thresholds, .. } = &step.fault
            && let Some(t) = thresholds.iter().find(|t| t.metric == Metric::P99)
        {
            out.load_p99_ms.insert(step.name.clone(), t.limit);
        }
    }
    out
}

/// One bucket of one probe while building: latencies, passed, failed.
type Slot = (Vec<f64>, u64, u64);

/// Builds the chart of `run` from its journal; `now_ms` ends the time axis of a run that is
/// still going.
pub fn build(run: &RunRecord, entries: &[Entry], now_ms: i64) -> RunChart {
    let t0 = entries.first().map(|e| e.at_ms).unwrap_or(run.created_ms);
    let last = entries.last().map(|e| e.at_ms).unwrap_or(t0);
    let running = run.finished_ms.is_none() && run.state != RunState::Done;
    let end = if running { now_ms.max(last) } else { last };
    let span_ms = (end - t0).max(0);
    let bucket_ms = bucket_for(span_ms);
    let limits = limits(&run.spec);

    // probe → bucket index → (latencies, ok, failed)
    let mut samples: BTreeMap<String, BTreeMap<i64, Slot>> = BTreeMap::new();
    let mut probe_order: Vec<String> = Vec::new();
    let mut faults: Vec<FaultWindow> = Vec::new();
    let mut deadlines: Vec<i64> = Vec::new();
    let mut marks = Vec::new();
    let mut loads: Vec<LoadSeries> = Vec::new();

    for e in entries {
        let at = e.at_ms - t0;
        match &e.event {
            Event::ProbeSample {
                probe,
                ok,
                latency_ms,
                ..
            } => {
                if !probe_order.contains(probe) {
                    probe_order.push(probe.clone());
                }
                let slot = samples
                    .entry(probe.clone())
                    .or_default()
                    .entry(at / bucket_ms)
                    .or_default();
                if latency_ms.is_finite() {
                    slot.0.push(latency_ms.max(0.0));
                }
                if *ok {
                    slot.1 += 1;
                } else {
                    slot.2 += 1;
                }
            }
            Event::FaultInjected {
                step,
                fault,
                deadline_ms,
                ..
            } => {
                faults.push(FaultWindow {
                    step: step.clone(),
                    fault: fault.clone(),
                    start_ms: at,
                    end_ms: span_ms,
                    closed: false,
                });
                deadlines.push(deadline_ms - t0);
            }
            Event::FaultReverted { step, .. } => {
                if let Some(w) = faults
                    .iter_mut()
                    .rev()
                    .find(|w| &w.step == step && !w.closed)
                {
                    w.end_ms = at;
                    w.closed = true;
                }
            }
            Event::FaultRevertFailed { step, .. } => marks.push(Mark {
                at_ms: at,
                kind: MarkKind::Failure,
                label: format!("revert of {step} failed"),
            }),
            Event::StepFailed { step, .. } => marks.push(Mark {
                at_ms: at,
                kind: MarkKind::Failure,
                label: format!("{step} failed"),
            }),
            Event::ToleranceExceeded { probe, .. } => marks.push(Mark {
                at_ms: at,
                kind: MarkKind::Breach,
                label: probe.clone(),
            }),
            Event::StopConditionMet { probe, .. } => marks.push(Mark {
                at_ms: at,
                kind: MarkKind::StopCondition,
                label: probe.clone(),
            }),
            Event::AbortRequested { by, .. } => marks.push(Mark {
                at_ms: at,
                kind: MarkKind::Abort,
                label: by.clone(),
            }),
            Event::LoadStats { step, stats, .. } => {
                let point = LoadPoint {
                    at_ms: at,
                    achieved_rps: stats.achieved_rps,
                    target_rps: stats.target_rps,
                    p99_ms: stats.latency.p99_ms,
                };
                match loads.iter_mut().find(|l| &l.step == step) {
                    Some(l) => l.points.push(point),
                    None => loads.push(LoadSeries {
                        step: step.clone(),
                        points: vec![point],
                        p99_limit_ms: limits.load_p99_ms.get(step).copied(),
                    }),
                }
            }
            _ => {}
        }
    }
    // A window never reverted in a finished run ends at its own deadline (the agent removes
    // it by then) or the end of the journal, whichever is first.
    if !running {
        for (w, deadline) in faults.iter_mut().zip(&deadlines) {
            if !w.closed {
                w.end_ms = (*deadline).clamp(w.start_ms, span_ms);
            }
        }
    }

    let probes = probe_order
        .into_iter()
        .map(|probe| {
            let per_bucket = samples.remove(&probe).unwrap_or_default();
            let mut total = 0;
            let mut failed = 0;
            let buckets = per_bucket
                .into_iter()
                .map(|(i, (mut lat, ok, bad))| {
                    lat.sort_by(f64::total_cmp);
                    total += ok + bad;
                    failed += bad;
                    Bucket {
                        start_ms: i * bucket_ms,
                        p50_ms: quantile(&lat, 0.50),
                        p99_ms: quantile(&lat, 0.99),
                        ok,
                        failed: bad,
                    }
                })
                .collect();
            ProbeSeries {
                max_latency_ms: limits.probe_max_ms.get(&probe).copied(),
                probe,
                buckets,
                samples: total,
                failed,
            }
        })
        .collect();

    RunChart {
        run_id: run.id.clone(),
        title: run.title.clone(),
        experiment: run.experiment.clone(),
        state: run.state.to_string(),
        verdict: run.verdict.map(|v| v.to_string()),
        rollback: run.rollback.map(|r| r.to_string()),
        span_ms,
        bucket_ms,
        probes,
        faults,
        marks,
        loads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_with_the_run() {
        assert_eq!(bucket_for(0), 1000);
        assert_eq!(bucket_for(600_000), 1000);
        assert_eq!(bucket_for(601_000), 2000);
        // Ten hours: 36 000 s / 600 = 60 s buckets.
        assert_eq!(bucket_for(36_000_000), 60_000);
        assert_eq!(bucket_for(1_000 * 3600 * 1000), 7_200_000);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
