//! Before anything is injected: the proxies bound and their upstreams reachable, then the
//! steady state holding. Either failing closes the run with nothing to revert.

use super::halt::LeaseLost;
use super::{Outcome, Shared, append, journal_sample};
use crate::probes;
use crate::run::{Event, SamplePhase, Verdict};

/// Binds the proxies and reaches the upstreams. (Process and resource targets are resolved
/// by their family's `prepare`.)
pub(super) async fn preflight(sh: &Shared) -> Option<Outcome> {
    if sh.eng.family_override.is_none()
        && let Some(failed) = toxiproxies_ready(sh).await
    {
        return Some(failed);
    }
    if sh.eng.agents().is_some() && sh.eng.family_override.is_none() {
        return agents_ready(sh).await;
    }
    let targets = sh.eng.targets();
    for target in targets.proxies_for(&sh.exp) {
        let ready = async {
            targets.proxy(&target).await?;
            targets.check_upstream(&target).await
        };
        if let Err(e) = ready.await {
            return Some(Outcome::nothing_injected(
                Verdict::Failed,
                format!("{e}; nothing was injected"),
            ));
        }
    }
    None
}

/// Samples every probe once; the first failure closes the run.
pub(super) async fn steady_state(sh: &Shared) -> Result<Option<Outcome>, LeaseLost> {
    // Said on every run that relies on it, so nobody reads a verdict without knowing.
    for server in sh.exp.unverified_servers() {
        let text = format!(
            "{server}: the server's certificate is not checked (insecure_skip_verify = true on its endpoint)"
        );
        append(sh, Event::Warning { text }).await?;
    }
    for probe in &sh.exp.hypothesis {
        let s = probes::sample(probe).await;
        journal_sample(sh, probe, SamplePhase::Before, &s).await?;
        if !s.ok {
            return Ok(Some(Outcome::nothing_injected(
                Verdict::Failed,
                format!(
                    "the steady state did not hold before injection (probe `{}`: {}); nothing was injected",
                    probe.name, s.detail
                ),
            )));
        }
    }
    Ok(None)
}

/// Agent mode: every agent the run needs answers (hello), then the proxies come up on their
/// agents with their upstreams checked. Any failure closes the run before anything is
/// injected anywhere, naming the agent.
async fn agents_ready(sh: &Shared) -> Option<Outcome> {
    let router = sh.eng.agents()?;
    let fail = |why: String| {
        Some(Outcome::nothing_injected(
            Verdict::Failed,
            format!("{why}; nothing was injected"),
        ))
    };
    let proxies = sh.eng.targets().proxies_for(&sh.exp);
    let mut held: Vec<&str> = sh
        .exp
        .fault_steps()
        .iter()
        .filter(|f| super::remote::held_by_agent(sh, f))
        .map(|f| f.target.as_str())
        .collect();
    held.extend(proxies.iter().map(String::as_str));
    let mut seen = Vec::new();
    for target in held {
        let link = router.for_target(target);
        if seen.iter().any(|n: &String| n == link.name()) {
            continue;
        }
        seen.push(link.name().to_string());
        match link.hello().await {
            Ok(hello) => {
                let text = format!(
                    "chaosbot {} (protocol {}) holds this run's faults under a {} lease renewed every {}; if the lease lapses it reverts them by itself",
                    hello.version,
                    hello.protocol,
                    humantime::format_duration(
                        router.fault_lease(sh.exp.on_owner_loss, sh.eng.opts.lease),
                    ),
                    humantime::format_duration(router.renew_every)
                );
                let agent = link.name().to_string();
                if append(sh, Event::AgentNote { agent, text }).await.is_err() {
                    return fail("the run's lease was lost to another process".into());
                }
            }
            Err(e) => return fail(e.to_string()),
        }
    }
    if proxies.is_empty() {
        return None;
    }
    match router.proxies_up(&proxies, true).await {
        Err(e) => fail(e.to_string()),
        Ok(views) => views.iter().find_map(|v| {
            v.upstream_error.as_ref().and_then(|why| {
                fail(format!(
                    "upstream {} of target `{}` is unreachable: {why}. Start the service or fix `upstream` in the config",
                    v.upstream, v.name
                ))
            })
        }),
    }
}

/// The Toxiproxy servers of the run's targets answer and have their proxies; the journal says
/// which server holds which target's toxics, and what it cannot promise (no dead-man's switch).
async fn toxiproxies_ready(sh: &Shared) -> Option<Outcome> {
    let cfg = sh.eng.targets().config();
    for name in sh.exp.proxy_targets() {
        let Some(target) = cfg.toxiproxy_target(&name) else {
            continue;
        };
        let text = match crate::faults::toxiproxy::check(target).await {
            Ok(text) => text,
            Err(e) => {
                return Some(Outcome::nothing_injected(
                    Verdict::Failed,
                    format!("target `{name}`: {e}; nothing was injected"),
                ));
            }
        };
        if append(sh, Event::Warning { text }).await.is_err() {
            return Some(Outcome::nothing_injected(
                Verdict::Failed,
                "the run's lease was lost to another process; nothing was injected".into(),
            ));
        }
    }
    None
}
