//! Faults held by agents: recorded in the store before the agent is asked, applied under the
//! run's epoch and a lease, renewed by one keeper task per run, reverted by asking the agent
//! (and, when the agent stays unreachable, by its lease lapsing).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::{info, warn};

use super::fault::{Counted, Held, Injected, time_to_live};
use super::halt::InjectError;
use super::{Shared, append};
use crate::agent::protocol::{Apply, FaultState, Renew, Revert};
use crate::agent::{AgentError, AgentLink};
use crate::engine::agents::AgentRouter;
use crate::faults;
use crate::report::text::clock_time;
use crate::run::{AgentReverted, Event, now_ms};
use crate::spec::model::{FaultSpec, FaultStep};
use crate::store::NewFault;

/// After the lease has lapsed, how much longer a revert keeps trying an unreachable agent.
const PAST_LEASE: i64 = 2_000;
const RETRY: Duration = Duration::from_millis(500);

/// A fault an agent holds.
pub(super) struct RemoteFault {
    link: Arc<dyn AgentLink>,
    fault_id: String,
    /// Unix ms the lease runs to, as the agent last said.
    lease_until_ms: Arc<AtomicI64>,
    /// Held from a request to the agent until its events are forwarded, so a renewal's
    /// events cannot overtake the revert's (its `LoadStats` land before its `LoadReport`).
    relay: Arc<tokio::sync::Mutex<()>>,
}

impl RemoteFault {
    /// A fault another controller put in place, taken over under this run's epoch.
    pub(super) fn adopted(
        link: Arc<dyn AgentLink>,
        fault_id: String,
        lease_until_ms: i64,
    ) -> RemoteFault {
        RemoteFault {
            link,
            fault_id,
            lease_until_ms: Arc::new(AtomicI64::new(lease_until_ms)),
            relay: Arc::default(),
        }
    }

    pub(super) fn agent(&self) -> &str {
        self.link.name()
    }
}

/// The router, when this step's fault goes through an agent.
pub(super) fn router_for(sh: &Shared, step: &FaultStep) -> Option<Arc<AgentRouter>> {
    if sh.eng.family_override.is_some() || !held_by_agent(sh, step) {
        return None;
    }
    sh.eng.agents().cloned()
}

/// In agent mode, whether an agent holds this step: every fault but load, and load whose
/// endpoint names an agent (a load without one is generated in the controller). A target on
/// a Toxiproxy server is held by that server, through the controller.
pub(super) fn held_by_agent(sh: &Shared, step: &FaultStep) -> bool {
    let cfg = sh.eng.targets().config();
    if cfg.toxiproxy_target(&step.target).is_some() {
        return false;
    }
    !matches!(step.fault, FaultSpec::Load { .. }) || cfg.agent_of(&step.target).is_some()
}

/// Hands what the agent buffered for a fault (a load's numbers) to the run loop, which
/// journals and judges them as it does a local load's. They arrive in batches, once per
/// renewal, rather than once a second.
fn forward(sh: &Shared, events: Vec<Event>) {
    for ev in events {
        // The run loop may be gone (run over): the numbers have nowhere to go.
        let _ = sh.events.send(ev);
    }
}

pub(super) fn fault_id(run_id: &str, step: &str) -> String {
    format!("{run_id}/{step}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Records the fault, then asks its agent to put it in place, then registers it for revert.
pub(super) async fn inject(
    sh: &Shared,
    step: &FaultStep,
    router: &AgentRouter,
) -> Result<i64, InjectError> {
    let link = router.for_target(&step.target);
    let ttl = time_to_live(sh, step);
    let deadline = Instant::now() + ttl;
    let deadline_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let id = fault_id(&sh.run_id, &step.name);
    let family = faults::family_for(&step.fault).name();
    let record_id = sh
        .eng
        .store()
        .record_fault(NewFault {
            run_id: sh.run_id.clone(),
            step: step.name.clone(),
            target: step.target.clone(),
            family: "agent".to_string(),
            detail: serde_json::json!({ "agent": link.name(), "fault_id": id, "family": family }),
            deadline_ms,
            owner: sh.eng.instance().to_string(),
            epoch: Some(sh.epoch),
        })
        .await
        .map_err(InjectError::Record)?;
    let req = Apply {
        run_id: sh.run_id.clone(),
        epoch: sh.epoch,
        fault_id: id.clone(),
        step: step.clone(),
        seed: faults::derive_seed(sh.seed, &step.name),
        ttl_ms: ms(ttl),
        lease_ms: ms(router.fault_lease(sh.exp.on_owner_loss, sh.eng.opts.lease)),
        declare: router.declaration(&step.target),
    };
    let applied = match link.apply(&req).await {
        Ok(a) => a,
        Err(e) => {
            // An apply whose answer was lost may have taken effect: take it back (best effort;
            // its lease lapses anyway). A refusal left nothing touched.
            let revert = Revert {
                run_id: sh.run_id.clone(),
                epoch: sh.epoch,
            };
            if !e.is_unreachable() || link.revert(&id, &revert).await.is_ok() {
                let _ = sh.eng.store().mark_fault_reverted(record_id).await;
            }
            return Err(InjectError::Agent(e));
        }
    };
    sh.injected_any.store(true, Ordering::SeqCst);
    sh.active.lock().await.push(Injected {
        record_id,
        step: step.name.clone(),
        target: step.target.clone(),
        deadline,
        fault: Held::Remote(RemoteFault {
            link: Arc::clone(&link),
            fault_id: id,
            lease_until_ms: Arc::new(AtomicI64::new(applied.lease_until_ms)),
            relay: Arc::default(),
        }),
        counted: Counted::new(),
    });
    info!(step = %step.name, agent = link.name(), summary = %applied.summary, "fault injected");
    let _ = append(
        sh,
        Event::FaultInjected {
            step: step.name.clone(),
            fault: step.fault.kind_name().to_string(),
            target: step.target.clone(),
            summary: format!("{} (held by agent `{}`)", applied.summary, link.name()),
            deadline_ms: applied.deadline_ms,
            agent: Some(link.name().to_string()),
        },
    )
    .await;
    Ok(record_id)
}

/// Asks the agent to revert. `Ok(Some(note))`: the agent had already reverted it by itself.
pub(super) async fn revert(
    sh: &Shared,
    f: &RemoteFault,
    step: &str,
) -> Result<Option<String>, String> {
    let req = Revert {
        run_id: sh.run_id.clone(),
        epoch: sh.epoch,
    };
    let mut refusals = 0u32;
    // Bounded: by the lease's end (plus a margin) for an unreachable agent, by count otherwise.
    loop {
        let relay = f.relay.lock().await;
        let answer = f.link.revert(&f.fault_id, &req).await.map(|mut r| {
            forward(sh, std::mem::take(&mut r.events));
            r
        });
        drop(relay);
        let e = match answer {
            Ok(r) => {
                return Ok(r.earlier.map(|g| {
                    format!(
                        "it had already reverted `{step}` at {} ({})",
                        clock_time(g.at_ms),
                        g.reason
                    )
                }));
            }
            Err(AgentError::Refused { code, .. })
                if code == crate::agent::protocol::CODE_NOT_FOUND =>
            {
                return Ok(Some(format!(
                    "it has no record of `{step}` (nothing in place)"
                )));
            }
            Err(e) => e,
        };
        if e.is_unreachable() {
            let lapse = f.lease_until_ms.load(Ordering::SeqCst);
            if now_ms() > lapse + PAST_LEASE {
                return Err(format!(
                    "{e}. Its lease lapsed at {}, so the agent reverted the fault by itself unless it is down too",
                    clock_time(lapse)
                ));
            }
        } else {
            refusals += 1;
            if refusals >= 3 || matches!(e, AgentError::StaleEpoch { .. }) {
                return Err(e.to_string());
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The run's lease keeper: every `renew_every`, one renewal per agent for the run's open
/// faults; journals when an agent is lost and when it is back (with what it reverted).
pub(super) async fn keep_leases(sh: Arc<Shared>, stop: CancellationToken) {
    let Some(router) = sh.eng.agents().cloned() else {
        return;
    };
    // The run's proxies too: probes and traffic go through them between faults, and the
    // local agent exits when nobody asks anything of it.
    let proxies = sh.eng.targets().proxies_for(&sh.exp);
    tokio::spawn(
        Arc::clone(&router)
            .keep_proxies_up(proxies, stop.clone())
            .in_current_span(),
    );
    let mut lost: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(router.renew_every) => {}
            _ = stop.cancelled() => return,
        }
        // The open faults per agent: (link, [(fault id, lease cell)]).
        let mut per_agent: HashMap<String, (Arc<dyn AgentLink>, Vec<String>)> = HashMap::new();
        let mut relays: HashMap<String, Vec<Arc<tokio::sync::Mutex<()>>>> = HashMap::new();
        let mut cells: HashMap<String, Arc<AtomicI64>> = HashMap::new();
        for i in sh.active.lock().await.iter() {
            if let Held::Remote(r) = &i.fault {
                let entry = per_agent
                    .entry(r.agent().to_string())
                    .or_insert_with(|| (Arc::clone(&r.link), Vec::new()));
                entry.1.push(r.fault_id.clone());
                cells.insert(r.fault_id.clone(), Arc::clone(&r.lease_until_ms));
                relays
                    .entry(r.agent().to_string())
                    .or_default()
                    .push(Arc::clone(&r.relay));
            }
        }
        for (agent, (link, fault_ids)) in per_agent {
            let req = Renew {
                run_id: sh.run_id.clone(),
                epoch: sh.epoch,
                fault_ids,
                lease_ms: ms(router.fault_lease(sh.exp.on_owner_loss, sh.eng.opts.lease)),
            };
            let mut relayed = Vec::new();
            for r in relays.get(&agent).into_iter().flatten() {
                relayed.push(r.lock().await);
            }
            let renewed = match link.renew(&req).await {
                Ok(r) => r,
                Err(e) => {
                    if lost.insert(agent.clone()) {
                        warn!(%agent, error = %e, "agent lost: its faults revert by themselves when their lease lapses");
                        let error = e.to_string();
                        let _ = append(&sh, Event::AgentLost { agent, error }).await;
                    }
                    continue;
                }
            };
            let mut gone = Vec::new();
            for state in renewed.faults {
                forward(&sh, state.events);
                match state.state {
                    FaultState::Held { lease_until_ms } => {
                        if let Some(c) = cells.get(&state.fault_id) {
                            c.store(lease_until_ms, Ordering::SeqCst);
                        }
                    }
                    FaultState::Gone { reason, at_ms } => {
                        gone.push((state.fault_id, reason, at_ms))
                    }
                    FaultState::Unknown => {
                        gone.push((state.fault_id, "unknown to the agent".into(), now_ms()))
                    }
                }
            }
            drop(relayed);
            let reverted = drop_gone(&sh, gone).await;
            if lost.remove(&agent) {
                info!(%agent, "agent back");
                let _ = append(&sh, Event::AgentBack { agent, reverted }).await;
            } else if !reverted.is_empty() {
                let _ = append(&sh, Event::AgentBack { agent, reverted }).await;
            }
        }
    }
}

/// Removes from the run's list the faults the agent already reverted (so the step's own
/// revert does not fail on them), marks them in the store and journals them as reverted.
async fn drop_gone(sh: &Shared, gone: Vec<(String, String, i64)>) -> Vec<AgentReverted> {
    let mut out = Vec::new();
    for (id, reason, at_ms) in gone {
        let removed = {
            let mut active = sh.active.lock().await;
            let pos = active
                .iter()
                .position(|i| matches!(&i.fault, Held::Remote(r) if r.fault_id == id));
            pos.map(|p| active.remove(p))
        };
        let Some(injected) = removed else { continue };
        if let Err(e) = sh.eng.store().mark_fault_reverted(injected.record_id).await {
            warn!(error = %e, "fault reverted by its agent but not marked in the store");
        }
        drop(injected.counted);
        out.push(AgentReverted {
            step: injected.step.clone(),
            reason,
            at_ms,
        });
        let _ = append(
            sh,
            Event::FaultReverted {
                step: injected.step,
                target: injected.target,
            },
        )
        .await;
    }
    out
}
