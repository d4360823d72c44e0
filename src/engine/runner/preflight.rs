//! Before anything is injected: the proxies bound and their upstreams reachable, then the
//! steady state holding. Either failing closes the run with nothing to revert.

use super::halt::LeaseLost;
use super::{Outcome, Shared, append, journal_sample};
use crate::probes;
use crate::run::{Event, SamplePhase, Verdict};

/// Binds the proxies and reaches the upstreams. (Process and resource targets are resolved
/// by their family's `prepare`.)
pub(super) async fn preflight(sh: &Shared) -> Option<Outcome> {
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
