//! Crash recovery: runs left in flight by a process that died (or stopped renewing its lease)
//! are reverted as far as possible, re-probed, and closed as `aborted` with the reason.
//!
//! With several replicas on one database, each recoverer first adopts the run (owner = itself,
//! epoch raised, in one conditional update): exactly one replica wins it, the agents learn the
//! new epoch from its revert and refuse the old owner's late renewals, and the old owner's
//! fenced journal writes fail if it comes back.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::instance::InstanceId;
use super::runner::adopt;
use super::{Engine, lock};
use crate::faults;
use crate::probes;
use crate::run::{Event, SamplePhase};
use crate::run::{RollbackOutcome, Verdict};
use crate::spec::model::{Experiment, OnOwnerLoss};
use crate::store::{RunRecord, StoreError};

/// Recovers every orphaned run; returns their ids. A run whose experiment says
/// `on_owner_loss: continue` is carried on in a task of its own when it can be.
pub async fn recover_orphans(eng: &Arc<Engine>) -> Result<Vec<String>, StoreError> {
    let store = eng.store();
    let dead: Vec<String> = store
        .active_owners()
        .await?
        .into_iter()
        .filter(|o| InstanceId::parse(o).is_some_and(|owner| eng.instance().is_dead_owner(&owner)))
        .collect();
    // Leases are timed on the store's clock (the database server's on Postgres).
    let orphans = store.orphaned_runs(store.clock_ms().await?, &dead).await?;
    let me = eng.instance().to_string();
    let mut done = Vec::new();
    for seen in orphans {
        // Never "recover" a run this process is executing right now.
        if seen.owner.as_deref() == Some(me.as_str()) {
            continue;
        }
        let Some(run) = store
            .adopt_orphan(&seen.id, &me, eng.opts.lease, seen.epoch)
            .await?
        else {
            continue; // another replica adopted it first, or it just finished
        };
        eng.hold(&run.id, run.epoch);
        let mut not_continued = None;
        if let Some(exp) = to_continue(&run) {
            match adopt::take_over(eng, &run).await {
                Ok(adoption) => {
                    let previous = owner_of(&seen);
                    done.push(run.id.clone());
                    carry_on(eng, run, exp, previous, adoption);
                    continue;
                }
                Err(why) => {
                    warn!(run_id = %run.id, %why, "cannot carry the run on; reverting it");
                    not_continued = Some(why);
                }
            }
        }
        let recovered = recover_run(eng, &seen, &run, not_continued).await;
        eng.release(&run.id);
        recovered?;
        done.push(run.id);
    }
    Ok(done)
}

/// The experiment of a run that asks to be carried on when its owner is lost.
fn to_continue(run: &RunRecord) -> Option<Experiment> {
    serde_json::from_value::<Experiment>(run.spec.clone())
        .ok()
        .filter(|exp| exp.on_owner_loss == OnOwnerLoss::Continue)
}

fn owner_of(seen: &RunRecord) -> String {
    seen.owner
        .clone()
        .unwrap_or_else(|| "an unknown process".into())
}

/// Runs the adopted run to its verdict in a task of its own, like a claimed one: its halt
/// token takes aborts from this process and from the others' wake-ups.
fn carry_on(
    eng: &Arc<Engine>,
    run: RunRecord,
    exp: Experiment,
    previous: String,
    adoption: adopt::Adoption,
) {
    let halt = CancellationToken::new();
    lock(&eng.running).insert(run.id.clone(), halt.clone());
    let eng2 = Arc::clone(eng);
    eng.tracker.spawn(async move {
        let id = run.id.clone();
        adopt::resume(&eng2, run, exp, previous, adoption, halt).await;
        eng2.release(&id);
        lock(&eng2.running).remove(&id);
        eng2.wake.notify_one();
    });
}

/// `seen` is the run as its dead owner left it; `run` as adopted (its raised epoch).
/// `not_continued`: why the experiment's `on_owner_loss: continue` could not be honoured.
async fn recover_run(
    eng: &Engine,
    seen: &RunRecord,
    run: &RunRecord,
    not_continued: Option<String>,
) -> Result<(), StoreError> {
    let owner = owner_of(seen);
    warn!(run_id = %run.id, %owner, state = %run.state, epoch = run.epoch, "recovering a run left in flight");
    let (reverted, failures) = revert_open_faults(eng, run).await?;
    let mut reason = format!(
        "owner lost: the process running it ({owner}) stopped while the run was {}; recovered by {}",
        run.state,
        eng.instance()
    );
    if let Some(why) = not_continued {
        reason.push_str(&format!(
            "; on_owner_loss is `continue`, but {why}, so it was reverted instead"
        ));
    }
    eng.append(
        &run.id,
        Event::Recovered {
            reason: reason.clone(),
            faults_reverted: reverted,
        },
    )
    .await?;
    let verified = verify_recovered(eng, run).await?;
    let rollback = if !failures.is_empty() || verified.is_some() {
        RollbackOutcome::RevertFailed
    } else {
        RollbackOutcome::Reverted
    };
    let mut full = reason;
    if !failures.is_empty() {
        full.push_str(&format!("; could not revert: {}", failures.join("; ")));
    }
    if let Some(why) = verified {
        full.push_str(&format!(
            "; steady state not verified after recovery ({why})"
        ));
    }
    eng.finish(&run.id, Verdict::Aborted, rollback, &full)
        .await?;
    Ok(())
}

/// Undoes every fault the run's record says is still open; returns how many came off and
/// what could not be undone.
async fn revert_open_faults(
    eng: &Engine,
    run: &RunRecord,
) -> Result<(u32, Vec<String>), StoreError> {
    let mut reverted = 0u32;
    let mut failures = Vec::new();
    // These faults leave `chaosbot_active_faults` alone: the gauge counts the faults this
    // process put in place, and these are another process's.
    for fault in eng.store().open_faults(&run.id).await? {
        let outcome = match faults::family_named(&fault.family) {
            None if fault.family == "agent" => recover_agent_fault(eng, run, &fault).await,
            Some(family) => family.recover(&fault).await.map_err(|e| e.to_string()),
            None => Err(format!(
                "no fault family named `{}` in this build",
                fault.family
            )),
        };
        match outcome {
            Ok(what) => {
                info!(run_id = %run.id, step = %fault.step, %what, "fault recovered");
                eng.store().mark_fault_reverted(fault.id).await?;
                eng.append(
                    &run.id,
                    Event::FaultReverted {
                        step: fault.step.clone(),
                        target: fault.target.clone(),
                    },
                )
                .await?;
                reverted += 1;
            }
            Err(error) => {
                eng.append(
                    &run.id,
                    Event::FaultRevertFailed {
                        step: fault.step.clone(),
                        target: fault.target.clone(),
                        error: error.clone(),
                    },
                )
                .await?;
                failures.push(format!("step `{}`: {error}", fault.step));
            }
        }
    }
    Ok((reverted, failures))
}

/// "Reverted" means verified: probes once more before saying so; returns why not, if not.
/// The proxies are part of the service path, so the ones this run used come back up first.
async fn verify_recovered(eng: &Engine, run: &RunRecord) -> Result<Option<String>, StoreError> {
    let exp = match serde_json::from_value::<Experiment>(run.spec.clone()) {
        Ok(exp) => exp,
        Err(e) => return Ok(Some(format!("the stored experiment cannot be read: {e}"))),
    };
    if let Some(router) = eng.agents() {
        let names = eng.targets().proxies_for(&exp);
        if !names.is_empty()
            && let Err(e) = router.proxies_up(&names, false).await
        {
            warn!(run_id = %run.id, error = %e, "cannot bring the run's proxies up on their agents");
        }
    }
    for target in eng.targets().proxies_for(&exp) {
        if eng.agents().is_some() {
            break;
        }
        if let Err(e) = eng.targets().proxy(&target).await {
            warn!(run_id = %run.id, %target, error = %e, "cannot restart the proxy");
        }
    }
    let mut bad = None;
    for probe in &exp.hypothesis {
        let s = probes::sample(probe).await;
        eng.append(
            &run.id,
            Event::ProbeSample {
                probe: probe.name.clone(),
                phase: SamplePhase::After,
                ok: s.ok,
                latency_ms: probes::ms(s.latency),
                detail: s.detail.clone(),
            },
        )
        .await?;
        if !s.ok && bad.is_none() {
            bad = Some(format!("probe `{}`: {}", probe.name, s.detail));
        }
    }
    Ok(bad)
}

/// A fault an agent held: ask that agent to revert it under the run's epoch. Best effort: an
/// agent that cannot be reached reverts by itself when the lease lapses, which is journalled.
async fn recover_agent_fault(
    eng: &Engine,
    run: &RunRecord,
    fault: &crate::store::FaultRecord,
) -> Result<String, String> {
    use crate::agent::protocol::{CODE_NOT_FOUND, Revert};
    let field = |k: &str| {
        fault
            .detail
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let (Some(agent), Some(fault_id)) = (field("agent"), field("fault_id")) else {
        return Err("the fault record names no agent or fault id".into());
    };
    let Some(link) = eng.agents().and_then(|r| r.by_name(&agent)) else {
        return Err(format!(
            "agent `{agent}` is not configured in this process; its lease lapses and it reverts by itself"
        ));
    };
    let req = Revert {
        run_id: run.id.clone(),
        epoch: run.epoch,
    };
    let said = match link.revert(&fault_id, &req).await {
        Ok(r) => match r.earlier {
            Some(g) => format!(
                "it had already reverted `{}` at {} ({})",
                fault.step,
                crate::report::text::clock_time(g.at_ms),
                g.reason
            ),
            None => format!("it reverted `{}` on request", fault.step),
        },
        Err(crate::agent::AgentError::Refused { code, .. }) if code == CODE_NOT_FOUND => {
            format!("it has no record of `{}` (nothing in place)", fault.step)
        }
        Err(e) if e.is_unreachable() => format!(
            "unreachable ({e}); the lease of `{}` lapses by itself and the agent reverts it",
            fault.step
        ),
        Err(e) => return Err(e.to_string()),
    };
    let _ = eng
        .append(
            &run.id,
            Event::AgentNote {
                agent: agent.clone(),
                text: said.clone(),
            },
        )
        .await;
    Ok(format!("agent `{agent}`: {said}"))
}
