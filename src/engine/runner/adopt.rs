//! Carrying on a run whose owner was lost (`on_owner_loss: continue`).
//!
//! The replica that adopted the run (its epoch raised in the store) first takes the agents'
//! leases over under that epoch, so the lost owner can never renew or revert again
//! ([`take_over`]). Then it rebuilds what the owner knew from the journal: the judge's tallies
//! (every sample of the method so far), a stop condition already met, and where the method
//! stands (which step is in place and how much of it is left, see [`plan`]). It keeps probing,
//! runs the rest of the method and closes the run like any other, with its true verdict.
//!
//! Whatever cannot be carried on truthfully is refused with the reason, and the caller reverts
//! instead: a fault the lost process held itself (it went down with it, so the step was not in
//! place all along), an agent that cannot be reached or no longer holds its fault, a run that
//! had not reached its method or whose step had failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::fault::{Counted, Held, Injected};
use super::halt::Halt;
use super::judge::Judge;
use super::method::Plan;
use super::remote::RemoteFault;
use super::{Shared, append, drive, pending_halt};
use crate::agent::AgentLink;
use crate::agent::protocol::{FaultState, Renew};
use crate::engine::Engine;
use crate::run::{Entry, Event, RunState, now_ms};
use crate::spec::model::{Experiment, OnOwnerLoss, Step};
use crate::store::{FaultRecord, RunRecord};

/// What taking the run over found: the faults now held under the new epoch, the journal so
/// far, and what the agents had buffered for the run (a load's numbers).
pub struct Adoption {
    faults: Vec<AdoptedFault>,
    journal: Vec<Entry>,
    events: Vec<Event>,
}

/// A fault record and its id on the agent that holds it.
type HeldBy = (FaultRecord, String);

struct AdoptedFault {
    record: FaultRecord,
    link: Arc<dyn AgentLink>,
    fault_id: String,
    lease_until_ms: i64,
}

/// Takes the run's faults over on their agents under the run's (raised) epoch. `Err` says, for
/// the thread, why the run cannot be carried on; what was taken over is then reverted by the
/// caller under the same epoch.
pub async fn take_over(eng: &Engine, run: &RunRecord) -> Result<Adoption, String> {
    let store = eng.store();
    let read = |e: crate::store::StoreError| format!("the store could not be read ({e})");
    match run.state {
        RunState::Injecting | RunState::Observing | RunState::Reverting | RunState::Verifying => {}
        other => {
            return Err(format!(
                "the run was {other}, not in its method: there is nothing to carry on"
            ));
        }
    }
    let journal = store.journal(&run.id, 0).await.map_err(read)?;
    if let Some(step) = journal.iter().find_map(|e| match &e.event {
        Event::StepFailed { step, .. } => Some(step.clone()),
        _ => None,
    }) {
        return Err(format!("step `{step}` had failed and the run was closing"));
    }
    let open = store.open_faults(&run.id).await.map_err(read)?;
    let mut per_agent: HashMap<String, (Arc<dyn AgentLink>, Vec<HeldBy>)> = HashMap::new();
    for record in open {
        if record.family != "agent" {
            return Err(format!(
                "step `{}` ({} fault) was held inside the lost process, so it went down with it",
                record.step, record.family
            ));
        }
        let field = |k: &str| {
            record
                .detail
                .get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        let (Some(agent), Some(fault_id)) = (field("agent"), field("fault_id")) else {
            return Err(format!(
                "the record of step `{}` names no agent or fault id",
                record.step
            ));
        };
        let Some(link) = eng.agents().and_then(|r| r.by_name(&agent)) else {
            return Err(format!(
                "agent `{agent}`, which holds step `{}`, is not configured in this process",
                record.step
            ));
        };
        per_agent
            .entry(agent)
            .or_insert_with(|| (link, Vec::new()))
            .1
            .push((record, fault_id));
    }
    let mut faults = Vec::new();
    let mut events = Vec::new();
    for (agent, (link, held)) in per_agent {
        // Only `continue` adopts: the lease outlasts this owner's run lease too.
        let lease_ms = eng
            .agents()
            .map(|r| r.fault_lease(OnOwnerLoss::Continue, eng.opts.lease))
            .unwrap_or_default();
        let req = Renew {
            run_id: run.id.clone(),
            epoch: run.epoch,
            fault_ids: held.iter().map(|(_, id)| id.clone()).collect(),
            lease_ms: u64::try_from(lease_ms.as_millis()).unwrap_or(u64::MAX),
        };
        let renewed = link.renew(&req).await.map_err(|e| {
            format!(
                "agent `{agent}` could not take the run's leases over under the new epoch ({e})"
            )
        })?;
        let mut states: HashMap<String, (FaultState, Vec<Event>)> = renewed
            .faults
            .into_iter()
            .map(|s| (s.fault_id, (s.state, s.events)))
            .collect();
        for (record, fault_id) in held {
            let Some((state, buffered)) = states.remove(&fault_id) else {
                return Err(format!(
                    "agent `{agent}` said nothing of step `{}`",
                    record.step
                ));
            };
            events.extend(buffered);
            let lease_until_ms = match state {
                FaultState::Held { lease_until_ms } => lease_until_ms,
                FaultState::Gone { reason, at_ms } => {
                    return Err(format!(
                        "agent `{agent}` had already reverted step `{}` at {} ({reason}), so it was not in place all along",
                        record.step,
                        crate::report::text::clock_time(at_ms)
                    ));
                }
                FaultState::Unknown => {
                    return Err(format!(
                        "agent `{agent}` has no record of step `{}`",
                        record.step
                    ));
                }
            };
            faults.push(AdoptedFault {
                record,
                link: Arc::clone(&link),
                fault_id,
                lease_until_ms,
            });
        }
    }
    Ok(Adoption {
        faults,
        journal,
        events,
    })
}

/// Carries the adopted run on to its verdict. `previous` is the lost owner.
pub async fn resume(
    eng: &Arc<Engine>,
    run: RunRecord,
    exp: Experiment,
    previous: String,
    adoption: Adoption,
    halt: CancellationToken,
) {
    let span = tracing::info_span!("run", run_id = %run.id, experiment = %run.experiment);
    async move {
        let Adoption {
            faults,
            journal,
            events: buffered,
        } = adoption;
        let now = (Instant::now(), now_ms());
        let ago = |ms: i64| Duration::from_millis(u64::try_from(now.1 - ms).unwrap_or(0));
        let at = |ms: i64| now.0.checked_sub(ago(ms)).unwrap_or(now.0);
        let started = run.started_ms.map(at).unwrap_or(now.0);
        let injected_any = journal
            .iter()
            .any(|e| matches!(e.event, Event::FaultInjected { .. }))
            || !faults.is_empty();
        let evidence = Evidence::of(&journal, &faults);
        let plan = plan(&exp.method, &evidence, run.state, now.1);
        let active = faults
            .into_iter()
            .map(|f| Injected {
                record_id: f.record.id,
                step: f.record.step.clone(),
                target: f.record.target.clone(),
                deadline: at(f.record.deadline_ms),
                fault: Held::Remote(RemoteFault::adopted(
                    f.link,
                    f.fault_id,
                    f.lease_until_ms,
                )),
                counted: Counted::new(),
            })
            .collect();
        let (events, events_rx) = mpsc::unbounded_channel();
        for ev in buffered {
            let _ = events.send(ev);
        }
        let sh = Arc::new(Shared {
            eng: Arc::clone(eng),
            run_id: run.id.clone(),
            exp,
            seed: run.seed,
            epoch: run.epoch,
            started,
            halt,
            state: Mutex::new(run.state),
            active: Mutex::new(active),
            injected_any: AtomicBool::new(injected_any),
            revert_failed: std::sync::Mutex::new(None),
            events,
        });
        let mut judge = Judge::new(&sh.exp);
        let missing = judge.replay(&journal);
        let mut halted = journal.iter().rev().find_map(|e| match &e.event {
            Event::StopConditionMet { probe, detail, .. } => {
                Some(Halt::StopCondition(judge.stop_reason(probe, detail)))
            }
            _ => None,
        });
        if halted.is_none() {
            halted = pending_halt(&sh).await;
        }
        let samples = journal
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::ProbeSample {
                        phase: crate::run::SamplePhase::During,
                        ..
                    }
                )
            })
            .count();
        let detail = describe(&plan, &sh.exp.method, halted.as_ref(), samples);
        info!(%previous, epoch = run.epoch, %detail, "adopted a run whose owner was lost; carrying it on");
        let adopted = Event::Adopted {
            previous,
            by: eng.instance().to_string(),
            detail,
        };
        if append(&sh, adopted).await.is_err() {
            warn!("lost the adopted run before saying so; another process holds it");
            return;
        }
        for (probe, detail) in missing {
            let _ = append(&sh, Event::ToleranceExceeded { probe, detail }).await;
        }
        drive(sh, events_rx, Some((judge, halted, plan))).await;
    }
    .instrument(span)
    .await
}

/// What the journal and the fault records say of each fault step: when it went in (Unix ms),
/// when it came off, and the record of the ones still in place.
struct Evidence {
    injected: HashMap<String, i64>,
    reverted: HashMap<String, i64>,
    open: HashMap<String, (i64, i64)>,
    /// Action steps that ran, and when (an action runs once: never again after adoption).
    actions: HashMap<String, i64>,
    /// When the method began (the run left the steady-state check).
    method_start: Option<i64>,
}

impl Evidence {
    fn of(journal: &[Entry], faults: &[AdoptedFault]) -> Evidence {
        let mut ev = Evidence {
            injected: HashMap::new(),
            reverted: HashMap::new(),
            open: faults
                .iter()
                .map(|f| (f.record.step.clone(), (f.record.id, f.record.injected_ms)))
                .collect(),
            actions: HashMap::new(),
            method_start: None,
        };
        for e in journal {
            match &e.event {
                Event::StateChanged {
                    from: RunState::CheckingSteadyState,
                    to: RunState::Injecting | RunState::Observing,
                } => {
                    ev.method_start.get_or_insert(e.at_ms);
                }
                Event::FaultInjected { step, .. } => {
                    ev.injected.entry(step.clone()).or_insert(e.at_ms);
                }
                Event::FaultReverted { step, .. } | Event::FaultRevertFailed { step, .. } => {
                    ev.reverted.insert(step.clone(), e.at_ms);
                }
                Event::ActionRan { step, .. } => {
                    ev.actions.insert(step.clone(), e.at_ms);
                }
                _ => {}
            }
        }
        ev
    }

    fn started(&self, step: &Step) -> bool {
        match step {
            Step::Fault(f) => {
                self.injected.contains_key(&f.name) || self.open.contains_key(&f.name)
            }
            Step::Wait { .. } => false,
            Step::Action(a) => self.actions.contains_key(&a.name),
            Step::Parallel(inner) | Step::Sequence(inner) => inner.iter().any(|s| self.started(s)),
            Step::Held { fault, during, .. } => {
                self.started(&Step::Fault(fault.clone())) || during.iter().any(|s| self.started(s))
            }
        }
    }
}

/// Where the method stands at `now` (Unix ms): the steps the lost owner finished are done, a
/// fault still in place is held for what is left of its step, a wait goes on for what is left
/// of it, and what had not started runs as written. A run that was reverting (or verifying)
/// has nothing left: the close reverts what is still in place, verifies and judges.
fn plan(method: &[Step], ev: &Evidence, state: RunState, now: i64) -> Vec<Plan> {
    if matches!(state, RunState::Reverting | RunState::Verifying) {
        // A fault still in place is the close's to revert.
        return vec![Plan::Done; method.len()];
    }
    plan_seq(method, ev, ev.method_start, now, false).0
}

/// A sequence starting at `cursor` (Unix ms; `None` once an earlier step is still going):
/// its plan, and when it ended if it did. `after_started`: a step after the whole sequence
/// went in (so its waits were over).
fn plan_seq(
    steps: &[Step],
    ev: &Evidence,
    mut cursor: Option<i64>,
    now: i64,
    after_started: bool,
) -> (Vec<Plan>, Option<i64>) {
    let mut out = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let later_started = after_started || steps[k + 1..].iter().any(|s| ev.started(s));
        let (p, end) = plan_step(step, ev, cursor, now, later_started);
        out.push(p);
        cursor = end;
    }
    (out, cursor)
}

fn plan_step(
    step: &Step,
    ev: &Evidence,
    cursor: Option<i64>,
    now: i64,
    later_started: bool,
) -> (Plan, Option<i64>) {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
    let left = |end: i64| Duration::from_millis(u64::try_from(end - now).unwrap_or(0));
    match step {
        Step::Fault(f) => {
            if let Some(&(record_id, recorded)) = ev.open.get(&f.name) {
                let start = ev.injected.get(&f.name).copied().unwrap_or(recorded);
                let plan = Plan::Hold {
                    record_id,
                    left: left(start + ms(f.duration)),
                };
                return (plan, None);
            }
            match ev.injected.get(&f.name) {
                Some(&at) => {
                    let end = ev
                        .reverted
                        .get(&f.name)
                        .copied()
                        .unwrap_or(at + ms(f.duration));
                    (Plan::Done, Some(end))
                }
                None => (Plan::Fault(f.clone()), None),
            }
        }
        Step::Wait { duration } => match cursor {
            None => (Plan::Wait(*duration), None),
            // A later step went in: this wait was over.
            Some(c) if later_started => (Plan::Done, Some(c)),
            Some(c) if c + ms(*duration) <= now => (Plan::Done, Some(c + ms(*duration))),
            Some(c) => (Plan::Wait(left(c + ms(*duration))), None),
        },
        Step::Action(a) => match ev.actions.get(&a.name) {
            Some(&at) => (Plan::Done, Some(at)),
            None => (Plan::Action(a.clone()), None),
        },
        Step::Parallel(inner) => {
            let mut plans = Vec::new();
            let mut end = cursor;
            for s in inner {
                let (p, e) = plan_step(s, ev, cursor, now, later_started);
                plans.push(p);
                end = match (end, e) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            if plans.iter().all(|p| *p == Plan::Done) {
                return (Plan::Done, end);
            }
            (Plan::Parallel(plans), end)
        }
        Step::Held {
            fault,
            during,
            at_close,
        } => {
            let (fp, _) = plan_step(&Step::Fault(fault.clone()), ev, cursor, now, later_started);
            let (dp, end) = plan_seq(during, ev, cursor, now, later_started);
            if fp == Plan::Done && dp.iter().all(|p| *p == Plan::Done) {
                return (Plan::Done, end);
            }
            let plan = Plan::Held {
                fault: Box::new(fp),
                during: dp,
                at_close: *at_close,
            };
            (plan, end)
        }
        Step::Sequence(inner) => {
            let (plans, end) = plan_seq(inner, ev, cursor, now, later_started);
            if plans.iter().all(|p| *p == Plan::Done) {
                return (Plan::Done, end);
            }
            (Plan::Sequence(plans), end)
        }
    }
}

/// For the thread: what is in place and how much is left, on how many samples the judge
/// resumes, or the halt the lost owner had begun.
fn describe(plan: &[Plan], method: &[Step], halt: Option<&Halt>, samples: usize) -> String {
    fn walk(
        p: &[Plan],
        s: &[Step],
        holds: &mut Vec<String>,
        waits: &mut Vec<Duration>,
        fresh: &mut usize,
    ) {
        for (p, s) in p.iter().zip(s) {
            match (p, s) {
                (Plan::Hold { left, .. }, Step::Fault(f)) => holds.push(format!(
                    "`{}` stays in place for {} more",
                    f.name,
                    human(*left)
                )),
                (Plan::Wait(d), _) => waits.push(*d),
                (Plan::Fault(_), _) => *fresh += 1,
                (Plan::Parallel(ip), Step::Parallel(is))
                | (Plan::Sequence(ip), Step::Sequence(is)) => walk(ip, is, holds, waits, fresh),
                (
                    Plan::Held {
                        fault: fp, during, ..
                    },
                    Step::Held {
                        fault: fs,
                        during: ds,
                        ..
                    },
                ) => {
                    walk(
                        std::slice::from_ref(&**fp),
                        &[Step::Fault(fs.clone())],
                        holds,
                        waits,
                        fresh,
                    );
                    walk(during, ds, holds, waits, fresh);
                }
                _ => {}
            }
        }
    }
    let (mut holds, mut waits, mut fresh) = (Vec::new(), Vec::new(), 0usize);
    walk(plan, method, &mut holds, &mut waits, &mut fresh);
    let mut parts = holds;
    if let Some(first) = waits.first()
        && parts.is_empty()
    {
        parts.push(format!("waiting {} more", human(*first)));
    }
    if fresh > 0 {
        parts.push(format!("{fresh} fault step(s) still to run"));
    }
    if parts.is_empty() {
        parts.push("the method had ended; reverting and verifying".into());
    }
    let mut text = parts.join(", then ");
    text.push_str(&format!(
        "; the judge resumes from the {samples} sample(s) journalled so far"
    ));
    if let Some(h) = halt {
        text.push_str(&format!("; the run was halting: {h}"));
    }
    text
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{Direction, FaultSpec, FaultStep, ToxicKind};

    fn fault(name: &str, secs: u64) -> Step {
        Step::Fault(FaultStep {
            name: name.into(),
            target: "t".into(),
            duration: Duration::from_secs(secs),
            fault: FaultSpec::Network {
                toxic: ToxicKind::Latency {
                    latency: Duration::from_millis(100),
                    jitter: Duration::ZERO,
                },
                direction: Direction::Downstream,
                toxicity: 1.0,
            },
        })
    }

    fn wait(secs: u64) -> Step {
        Step::Wait {
            duration: Duration::from_secs(secs),
        }
    }

    fn evidence(start: i64) -> Evidence {
        Evidence {
            injected: HashMap::new(),
            reverted: HashMap::new(),
            open: HashMap::new(),
            actions: HashMap::new(),
            method_start: Some(start),
        }
    }

    #[test]
    fn a_fault_in_place_is_held_for_what_is_left_and_the_rest_runs_as_written() {
        // wait 2s, a 10s (in place since 3000), wait 5s, b 4s; now 8000.
        let method = vec![wait(2), fault("a", 10), wait(5), fault("b", 4)];
        let mut ev = evidence(1000);
        ev.injected.insert("a".into(), 3000);
        ev.open.insert("a".into(), (7, 2990));
        let p = plan(&method, &ev, RunState::Observing, 8000);
        assert_eq!(p[0], Plan::Done);
        assert_eq!(
            p[1],
            Plan::Hold {
                record_id: 7,
                left: Duration::from_secs(5)
            }
        );
        assert_eq!(p[2], Plan::Wait(Duration::from_secs(5)));
        assert!(matches!(&p[3], Plan::Fault(f) if f.name == "b"));
        let text = describe(&p, &method, None, 9);
        assert!(text.starts_with("`a` stays in place for 5s more, then 1 fault step(s) still to run; the judge resumes from the 9 sample(s)"), "{text}");
    }

    #[test]
    fn a_wait_after_finished_faults_goes_on_for_what_is_left() {
        // a 3s from 1000, reverted at 4100; wait 10s: 2900 ms of it left at 12000.
        let method = vec![
            fault("a", 3),
            wait(10),
            Step::Parallel(vec![fault("b", 1), wait(2)]),
        ];
        let mut ev = evidence(1000);
        ev.injected.insert("a".into(), 1000);
        ev.reverted.insert("a".into(), 4100);
        let p = plan(&method, &ev, RunState::Observing, 12000);
        assert_eq!(p[0], Plan::Done);
        assert_eq!(p[1], Plan::Wait(Duration::from_millis(2100)));
        assert!(
            matches!(&p[2], Plan::Parallel(inner) if matches!(inner[0], Plan::Fault(_)) && inner[1] == Plan::Wait(Duration::from_secs(2)))
        );

        // Long past the wait, and with a later step already in: all done.
        ev.injected.insert("b".into(), 14100);
        ev.reverted.insert("b".into(), 15100);
        let p = plan(&method, &ev, RunState::Observing, 30000);
        assert_eq!(p, vec![Plan::Done, Plan::Done, Plan::Done]);
        let text = describe(&p, &method, None, 0);
        assert!(text.starts_with("the method had ended"), "{text}");
    }

    #[test]
    fn a_held_fault_in_place_keeps_its_record_and_its_during_sequence_goes_on() {
        // a (60s bound) held during [wait 2s, sequence [b 3s, wait 4s]]; a in place since
        // 1000, b ran 3000..6000; now 7000: 3 s of the inner wait left.
        let Step::Fault(a) = fault("a", 60) else {
            unreachable!()
        };
        let method = vec![Step::Held {
            fault: a,
            during: vec![wait(2), Step::Sequence(vec![fault("b", 3), wait(4)])],
            at_close: true,
        }];
        let mut ev = evidence(1000);
        ev.injected.insert("a".into(), 1000);
        ev.open.insert("a".into(), (5, 1000));
        ev.injected.insert("b".into(), 3000);
        ev.reverted.insert("b".into(), 6000);
        let p = plan(&method, &ev, RunState::Observing, 7000);
        let Plan::Held {
            fault,
            during,
            at_close,
        } = &p[0]
        else {
            panic!("{p:?}")
        };
        assert!(*at_close);
        assert_eq!(
            **fault,
            Plan::Hold {
                record_id: 5,
                left: Duration::from_secs(54)
            }
        );
        assert_eq!(during[0], Plan::Done);
        assert_eq!(
            during[1],
            Plan::Sequence(vec![Plan::Done, Plan::Wait(Duration::from_secs(3))])
        );
        let text = describe(&p, &method, None, 0);
        assert!(
            text.starts_with("`a` stays in place for 54s more"),
            "{text}"
        );
    }

    #[test]
    fn a_reverting_or_verifying_run_has_nothing_left_to_run() {
        let method = vec![fault("a", 30), wait(10)];
        let mut ev = evidence(1000);
        ev.open.insert("a".into(), (1, 1000));
        for state in [RunState::Reverting, RunState::Verifying] {
            assert_eq!(
                plan(&method, &ev, state, 5000),
                vec![Plan::Done, Plan::Done]
            );
        }
    }
}
