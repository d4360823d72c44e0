//! Journals of runs too long to run in a test (a ten-minute or ten-hour run), with the shape a
//! real run has: a steady state before, one latency fault whose probe samples slow down and
//! start failing, a breach, a stop condition, an abort, the revert, the verification after and
//! the verdict; optionally a load step's per-second numbers.

use std::collections::BTreeMap;

use chaosbot::run::figures::{Latencies, LoadFigures};
use chaosbot::run::{Entry, Event, RollbackOutcome, RunSource, RunState, SamplePhase, Verdict};
use chaosbot::store::RunRecord;

pub const T0: i64 = 1_760_000_000_000;

pub struct Shape {
    pub seconds: i64,
    pub samples_per_second: i64,
    pub with_load: bool,
    /// Every sample fails (a probe whose endpoint is down all along).
    pub all_fail: bool,
}

fn entry(run: &str, seq: &mut i64, at_ms: i64, event: Event) -> Entry {
    *seq += 1;
    Entry {
        run_id: run.to_string(),
        seq: *seq,
        at_ms,
        event,
    }
}

pub fn record(id: &str, state: RunState, verdict: Option<Verdict>) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        experiment: "api-latency".into(),
        title: "The API answers within 500 ms when its responses are slower".into(),
        spec: serde_json::Value::Null,
        params: BTreeMap::new(),
        seed: 7,
        requested_by: "alice".into(),
        source: RunSource::Terminal,
        state,
        verdict,
        rollback: verdict.map(|_| RollbackOutcome::Reverted),
        reason: None,
        owner: None,
        lease_until_ms: None,
        created_ms: T0,
        started_ms: Some(T0),
        finished_ms: verdict.map(|_| T0 + 1),
        epoch: 1,
    }
}

/// A finished run of `shape`; the fault is in place over the middle half of it.
pub fn finished_run(id: &str, shape: &Shape) -> (RunRecord, Vec<Entry>) {
    let mut seq = 0;
    let mut out = Vec::new();
    let ms = shape.seconds * 1000;
    let (fault_on, fault_off) = (ms / 4, ms * 3 / 4);
    out.push(entry(
        id,
        &mut seq,
        T0,
        Event::Submitted {
            experiment: "api-latency".into(),
            title: "t".into(),
            requested_by: "alice".into(),
            source: RunSource::Terminal,
            params: BTreeMap::new(),
            seed: 7,
            targets: vec!["api".into()],
        },
    ));
    let step = 1000 / shape.samples_per_second.max(1);
    let mut t = 0;
    let mut injected = false;
    let mut reverted = false;
    let mut n: i64 = 0;
    while t < ms {
        if !injected && t >= fault_on {
            injected = true;
            out.push(entry(
                id,
                &mut seq,
                T0 + t,
                Event::FaultInjected {
                    step: "slow-responses".into(),
                    fault: "latency".into(),
                    target: "api".into(),
                    summary: "latency 250ms downstream".into(),
                    deadline_ms: T0 + fault_off + 3000,
                    agent: Some("local".into()),
                },
            ));
        }
        if injected && !reverted && t >= fault_on + (fault_off - fault_on) / 5 && n % 97 == 0 {
            // A breach and a stop condition a little after the fault went in.
            if !out
                .iter()
                .any(|e| matches!(e.event, Event::ToleranceExceeded { .. }))
            {
                out.push(entry(
                    id,
                    &mut seq,
                    T0 + t,
                    Event::ToleranceExceeded {
                        probe: "api-ok".into(),
                        detail: "failure ratio 0.4 > 0".into(),
                    },
                ));
            }
        }
        if !reverted && t >= fault_off {
            reverted = true;
            out.push(entry(
                id,
                &mut seq,
                T0 + t,
                Event::StopConditionMet {
                    probe: "api-ok".into(),
                    condition: "5 consecutive failures".into(),
                    detail: "5 in a row".into(),
                },
            ));
            out.push(entry(
                id,
                &mut seq,
                T0 + t,
                Event::AbortRequested {
                    by: "stop condition".into(),
                    reason: "api-ok".into(),
                },
            ));
            out.push(entry(
                id,
                &mut seq,
                T0 + t + 5,
                Event::FaultReverted {
                    step: "slow-responses".into(),
                    target: "api".into(),
                },
            ));
        }
        let during = injected && !reverted;
        let base = 8.0 + (n % 13) as f64 * 0.7;
        let latency = if during {
            base + 250.0 + (n % 29) as f64 * 9.0
        } else {
            base
        };
        let failing = shape.all_fail || (during && n % 3 == 0);
        let ok = !failing;
        out.push(entry(
            id,
            &mut seq,
            T0 + t,
            Event::ProbeSample {
                probe: "api-ok".into(),
                phase: if !injected {
                    SamplePhase::Before
                } else if during {
                    SamplePhase::During
                } else {
                    SamplePhase::After
                },
                ok,
                latency_ms: latency,
                detail: if ok { "200".into() } else { "too slow".into() },
            },
        ));
        if shape.with_load && during && t % 1000 == 0 {
            let second = ((t - fault_on) / 1000 + 1) as u64;
            out.push(entry(
                id,
                &mut seq,
                T0 + t,
                Event::LoadStats {
                    step: "slow-responses".into(),
                    second,
                    stats: LoadFigures {
                        target_rps: 200.0,
                        achieved_rps: 200.0 - (second % 7) as f64 * 6.0,
                        requests: 200,
                        ok: 198,
                        errors: 2,
                        latency: Latencies {
                            p99_ms: 260.0 + (second % 11) as f64 * 8.0,
                            ..Latencies::default()
                        },
                        ..LoadFigures::default()
                    },
                },
            ));
        }
        t += step;
        n += 1;
    }
    out.push(entry(
        id,
        &mut seq,
        T0 + ms,
        Event::Verdict {
            verdict: Verdict::Aborted,
            rollback: RollbackOutcome::Reverted,
            reason: "stop condition".into(),
        },
    ));
    let mut rec = record(id, RunState::Done, Some(Verdict::Aborted));
    rec.finished_ms = Some(T0 + ms);
    (rec, out)
}
