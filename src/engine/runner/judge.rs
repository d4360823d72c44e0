//! Judging: probe samples and load figures against the tolerances and stop conditions while
//! the method runs, and the verdict once it is over.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::halt::Halt;
use crate::load::{LoadFigures, Threshold};
use crate::run::{Entry, Event, SamplePhase, Verdict, now_ms};
use crate::spec::model::{Experiment, FaultSpec, StopRule};

/// The verdict the samples support, and the breaches not journalled yet.
pub(super) struct Judgement {
    pub(super) verdict: Verdict,
    pub(super) reason: String,
    /// (probe or load step, detail) to journal as tolerance breaches before the verdict.
    pub(super) unreported: Vec<(String, String)>,
}

/// Judges probe samples taken during the method against the tolerances and stop conditions.
pub(super) struct Judge {
    names: Vec<String>,
    tolerance: Vec<f64>,
    expected: Vec<u64>,
    total: Vec<u64>,
    failed: Vec<u64>,
    consecutive: Vec<u32>,
    reported: Vec<bool>,
    windows: HashMap<usize, VecDeque<(Instant, bool)>>,
    stops: Vec<(usize, StopRule)>,
    /// Thresholds of each load step, judged on its totals.
    load_thresholds: HashMap<String, Vec<Threshold>>,
    /// (load step, threshold) judged on each of its seconds.
    load_stops: Vec<(String, Threshold)>,
    /// Load steps whose totals breached a threshold, with the detail.
    load_breaches: Vec<(String, String)>,
}

impl Judge {
    pub(super) fn new(exp: &Experiment) -> Judge {
        let n = exp.hypothesis.len();
        let method = exp.method_duration();
        let index: HashMap<&str, usize> = exp
            .hypothesis
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        Judge {
            names: exp.hypothesis.iter().map(|p| p.name.clone()).collect(),
            tolerance: exp
                .hypothesis
                .iter()
                .map(|p| p.tolerance.max_failure_ratio)
                .collect(),
            expected: exp
                .hypothesis
                .iter()
                .map(|p| {
                    (method.as_secs_f64() / p.interval.as_secs_f64().max(0.001))
                        .ceil()
                        .max(1.0) as u64
                })
                .collect(),
            total: vec![0; n],
            failed: vec![0; n],
            consecutive: vec![0; n],
            reported: vec![false; n],
            windows: HashMap::new(),
            stops: exp
                .stop_conditions
                .iter()
                .filter(|s| !matches!(s.rule, StopRule::LoadThreshold(_)))
                .filter_map(|s| index.get(s.probe.as_str()).map(|i| (*i, s.rule.clone())))
                .collect(),
            load_thresholds: exp
                .fault_steps()
                .iter()
                .filter_map(|f| match &f.fault {
                    FaultSpec::Load { thresholds, .. } => {
                        Some((f.name.clone(), thresholds.clone()))
                    }
                    _ => None,
                })
                .collect(),
            load_stops: exp
                .stop_conditions
                .iter()
                .filter_map(|s| match &s.rule {
                    StopRule::LoadThreshold(t) => Some((s.probe.clone(), t.clone())),
                    _ => None,
                })
                .collect(),
            load_breaches: Vec::new(),
        }
    }

    fn is_load_step(&self, name: &str) -> bool {
        self.load_thresholds.contains_key(name)
    }

    /// A stop condition breached by one second of a load step: (condition, detail).
    pub(super) fn load_stop(&self, step: &str, second: &LoadFigures) -> Option<(String, String)> {
        self.load_stops
            .iter()
            .filter(|(s, t)| s == step && t.judgeable(second))
            .find_map(|(_, t)| {
                t.check(second)
                    .err()
                    .map(|why| (StopRule::LoadThreshold(t.clone()).to_string(), why))
            })
    }

    /// The thresholds a load step's totals breach (each becomes a tolerance breach).
    pub(super) fn load_report(&mut self, step: &str, total: &LoadFigures) -> Vec<String> {
        let breaches: Vec<String> = self
            .load_thresholds
            .get(step)
            .into_iter()
            .flatten()
            .filter(|t| t.judgeable(total))
            .filter_map(|t| t.check(total).err())
            .collect();
        for b in &breaches {
            self.load_breaches.push((step.to_string(), b.clone()));
        }
        breaches
    }

    /// Reports (once) when failures already exceed what the tolerance allows for the whole
    /// method, so a live view can say "deviating" before the end.
    pub(super) fn tolerance_breach(&mut self, i: usize, ok: bool) -> Option<String> {
        self.total[i] += 1;
        if ok {
            return None;
        }
        self.failed[i] += 1;
        let allowed = (self.tolerance[i] * self.expected[i] as f64).floor() as u64;
        if self.failed[i] > allowed && !self.reported[i] {
            self.reported[i] = true;
            return Some(format!(
                "{} failed sample(s) so far; the tolerance allows {:.0}%",
                self.failed[i],
                self.tolerance[i] * 100.0
            ));
        }
        None
    }

    pub(super) fn stop_condition(&mut self, i: usize, ok: bool) -> Option<(String, String)> {
        self.stop_condition_at(i, ok, Instant::now())
    }

    /// [`Judge::stop_condition`] for a sample taken at `now` (a replayed one is older).
    fn stop_condition_at(&mut self, i: usize, ok: bool, now: Instant) -> Option<(String, String)> {
        self.consecutive[i] = if ok { 0 } else { self.consecutive[i] + 1 };
        for (probe, rule) in &self.stops {
            if *probe != i {
                continue;
            }
            match rule {
                StopRule::ConsecutiveFailures(n) if self.consecutive[i] >= *n => {
                    return Some((
                        rule.to_string(),
                        format!("{} consecutive failed samples", self.consecutive[i]),
                    ));
                }
                StopRule::FailureRatio {
                    ratio,
                    window,
                    min_samples,
                } => {
                    let w = self.windows.entry(i).or_default();
                    w.push_back((now, ok));
                    while w
                        .front()
                        .is_some_and(|(t, _)| now.duration_since(*t) > *window)
                    {
                        w.pop_front();
                    }
                    let n = w.len();
                    let bad = w.iter().filter(|(_, ok)| !ok).count();
                    if n >= *min_samples as usize && n > 0 && bad as f64 / n as f64 > *ratio {
                        return Some((
                            rule.to_string(),
                            format!(
                                "{bad} of the last {n} samples failed ({:.0}%)",
                                100.0 * bad as f64 / n as f64
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Rebuilds the tallies from a journal written by another process (an adopted run):
    /// every sample taken during the method, at the time it was taken, and every load step's
    /// totals. Returns the live breaches the journal lacks (its writer died before saying so),
    /// to be journalled now. Stop conditions already met are the caller's to honour.
    pub(super) fn replay(&mut self, journal: &[Entry]) -> Vec<(String, String)> {
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut missing = Vec::new();
        for e in journal {
            match &e.event {
                Event::ProbeSample {
                    probe,
                    phase: SamplePhase::During,
                    ok,
                    ..
                } => {
                    let Some(i) = self.names.iter().position(|n| n == probe) else {
                        continue;
                    };
                    let ago = Duration::from_millis(u64::try_from(now_ms - e.at_ms).unwrap_or(0));
                    let at = now.checked_sub(ago).unwrap_or(now);
                    if let Some(detail) = self.tolerance_breach(i, *ok) {
                        missing.push((probe.clone(), detail));
                    }
                    self.stop_condition_at(i, *ok, at);
                }
                Event::LoadReport { step, stats, .. } => {
                    self.load_report(step, stats);
                }
                Event::ToleranceExceeded { probe, .. } => missing.retain(|(p, _)| p != probe),
                _ => {}
            }
        }
        missing
    }

    /// How a stop condition the journal recorded reads as the halt's reason.
    pub(super) fn stop_reason(&self, probe: &str, detail: &str) -> String {
        if self.is_load_step(probe) {
            format!("load step `{probe}`: {detail}")
        } else {
            format!("probe `{probe}`: {detail}")
        }
    }

    fn final_breaches(&self) -> Vec<(String, String)> {
        let mut out = self.probe_breaches();
        out.extend(self.load_breaches.iter().cloned());
        out
    }

    fn probe_breaches(&self) -> Vec<(String, String)> {
        (0..self.names.len())
            .filter(|&i| self.total[i] > 0)
            .filter_map(|i| {
                let ratio = self.failed[i] as f64 / self.total[i] as f64;
                (ratio > self.tolerance[i]).then(|| {
                    (
                        self.names[i].clone(),
                        format!(
                            "{} of {} samples failed ({:.0}%, tolerance {:.0}%)",
                            self.failed[i],
                            self.total[i],
                            ratio * 100.0,
                            self.tolerance[i] * 100.0
                        ),
                    )
                })
            })
            .collect()
    }

    fn reported(&self, probe: &str) -> bool {
        self.load_breaches.iter().any(|(s, _)| s == probe)
            || self
                .names
                .iter()
                .position(|n| n == probe)
                .is_some_and(|i| self.reported[i])
    }

    /// The verdict: a halt decides it (a failed step fails the run, anything else aborts
    /// it); otherwise the hypothesis held unless a tolerance was breached.
    pub(super) fn judgement(&self, halt: Option<&Halt>) -> Judgement {
        let (verdict, reason) = match halt {
            Some(h @ Halt::StepFailed(_)) => (Verdict::Failed, h.to_string()),
            Some(h) => (Verdict::Aborted, h.to_string()),
            None => return self.hypothesis_judgement(),
        };
        Judgement {
            verdict,
            reason,
            unreported: Vec::new(),
        }
    }

    fn hypothesis_judgement(&self) -> Judgement {
        let breaches = self.final_breaches();
        if breaches.is_empty() {
            return Judgement {
                verdict: Verdict::Held,
                reason: "the hypothesis held while the faults were in place".to_string(),
                unreported: Vec::new(),
            };
        }
        let text: Vec<String> = breaches
            .iter()
            .map(|(p, d)| {
                if self.is_load_step(p) {
                    format!("load step `{p}`: {d}")
                } else {
                    format!("probe `{p}`: {d}")
                }
            })
            .collect();
        Judgement {
            verdict: Verdict::Deviated,
            reason: format!("the hypothesis broke: {}", text.join("; ")),
            unreported: breaches
                .into_iter()
                .filter(|(probe, _)| !self.reported(probe))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::spec::model::{Probe, ProbeKind, Step, StopCondition, Tolerance};

    fn exp(tolerance: f64, stops: Vec<StopRule>) -> Experiment {
        Experiment {
            name: "t".into(),
            title: "t".into(),
            description: String::new(),
            owner: "o".into(),
            tags: vec![],
            params: Default::default(),
            hypothesis: vec![Probe {
                name: "p".into(),
                kind: ProbeKind::Tcp {
                    address: "127.0.0.1:1".into(),
                    max_latency: None,
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                tolerance: Tolerance {
                    max_failure_ratio: tolerance,
                },
                expect: None,
            }],
            method: vec![Step::Wait {
                duration: Duration::from_secs(10),
            }],
            stop_conditions: stops
                .into_iter()
                .map(|rule| StopCondition {
                    probe: "p".into(),
                    rule,
                })
                .collect(),
            rollbacks: vec![],
            recovery_timeout: Duration::from_secs(1),
            on_owner_loss: Default::default(),
            sampling: Default::default(),
        }
    }

    #[test]
    fn tolerance_is_judged_on_the_whole_method() {
        // 10 expected samples, 20% tolerated: 2 failures are fine, the 3rd is a breach.
        let mut j = Judge::new(&exp(0.2, vec![]));
        assert_eq!(j.tolerance_breach(0, false), None);
        assert_eq!(j.tolerance_breach(0, false), None);
        assert!(j.tolerance_breach(0, false).is_some());
        assert_eq!(j.tolerance_breach(0, false), None, "reported once");
        for _ in 0..7 {
            j.tolerance_breach(0, true);
        }
        // 4 of 11 failed: above 20%.
        let breaches = j.final_breaches();
        assert_eq!(breaches.len(), 1);
        assert!(breaches[0].1.contains("4 of 11"), "{breaches:?}");

        let mut ok = Judge::new(&exp(0.2, vec![]));
        ok.tolerance_breach(0, false);
        for _ in 0..9 {
            ok.tolerance_breach(0, true);
        }
        assert!(ok.final_breaches().is_empty());
    }

    #[test]
    fn consecutive_failures_reset_on_success() {
        let mut j = Judge::new(&exp(1.0, vec![StopRule::ConsecutiveFailures(3)]));
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, true).is_none());
        assert!(j.stop_condition(0, false).is_none());
        assert!(j.stop_condition(0, false).is_none());
        let (rule, detail) = j.stop_condition(0, false).unwrap();
        assert_eq!(rule, "3 consecutive failures");
        assert!(detail.contains('3'));
    }

    #[test]
    fn failure_ratio_waits_for_min_samples_and_uses_the_window() {
        let rule = StopRule::FailureRatio {
            ratio: 0.5,
            window: Duration::from_secs(60),
            min_samples: 4,
        };
        let mut j = Judge::new(&exp(1.0, vec![rule]));
        // 3 failures of 3: above the ratio, but fewer than min_samples.
        for _ in 0..3 {
            assert!(j.stop_condition(0, false).is_none());
        }
        let (_, detail) = j.stop_condition(0, true).unwrap();
        assert!(detail.contains("3 of the last 4"), "{detail}");

        let short = StopRule::FailureRatio {
            ratio: 0.5,
            window: Duration::from_millis(30),
            min_samples: 2,
        };
        let mut j = Judge::new(&exp(1.0, vec![short]));
        assert!(j.stop_condition(0, false).is_none());
        std::thread::sleep(Duration::from_millis(60));
        // The old failure left the window, so only the passing samples count.
        assert!(j.stop_condition(0, true).is_none());
        assert!(j.stop_condition(0, true).is_none());
    }

    #[test]
    fn a_halt_decides_the_verdict_and_breaches_are_journalled_once() {
        let mut j = Judge::new(&exp(0.0, vec![]));
        let abort = Halt::Abort {
            by: "alice".into(),
            reason: String::new(),
        };
        let judged = j.judgement(Some(&abort));
        assert_eq!(
            (judged.verdict, judged.reason.as_str()),
            (Verdict::Aborted, "aborted by alice")
        );
        assert_eq!(j.judgement(None).verdict, Verdict::Held);

        // Reported live: not journalled again at the end.
        assert!(j.tolerance_breach(0, false).is_some());
        let judged = j.judgement(None);
        assert_eq!(judged.verdict, Verdict::Deviated);
        assert!(
            judged
                .reason
                .starts_with("the hypothesis broke: probe `p`: 1 of 1"),
            "{}",
            judged.reason
        );
        assert!(judged.unreported.is_empty());
    }
}
