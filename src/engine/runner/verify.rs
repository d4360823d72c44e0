//! After the revert: the experiment's own rollback actions, then the steady state probed
//! again until it is back, which is what lets the run say "reverted".

use std::time::{Duration, Instant};

use tracing::warn;

use super::halt::LeaseLost;
use super::{Shared, append, journal_sample, set_state};
use crate::probes::{self, http};
use crate::run::{Event, RollbackOutcome, RunState, SamplePhase};
use crate::spec::model::{Rollback, RollbackAction};

/// Runs the rollbacks, then verifies; `revert_ok` is whether every fault came off.
pub(super) async fn rollback_outcome(
    sh: &Shared,
    revert_ok: bool,
) -> Result<RollbackOutcome, LeaseLost> {
    run_rollbacks(sh).await?;
    if !sh.injected_any.load(std::sync::atomic::Ordering::SeqCst) {
        set_state(sh, RunState::Reverting).await?;
        return Ok(RollbackOutcome::NothingToRevert);
    }
    set_state(sh, RunState::Verifying).await?;
    Ok(match verify(sh).await? {
        Ok(()) if revert_ok => RollbackOutcome::Reverted,
        Ok(()) => RollbackOutcome::RevertFailed,
        Err(why) => {
            warn!(%why, "steady state not restored");
            RollbackOutcome::RevertFailed
        }
    })
}

async fn run_rollbacks(sh: &Shared) -> Result<(), LeaseLost> {
    for rb in &sh.exp.rollbacks {
        let (ok, detail) = run_rollback(rb).await;
        append(
            sh,
            Event::RollbackAction {
                name: rb.name.clone(),
                ok,
                detail,
            },
        )
        .await?;
    }
    Ok(())
}

/// One rollback action: whether it did what it should, and what happened.
async fn run_rollback(rb: &Rollback) -> (bool, String) {
    match &rb.action {
        RollbackAction::Http {
            url,
            tls,
            method,
            body,
            headers,
            endpoint_headers,
            expect_status,
            timeout,
        } => {
            let client = match probes::http::HttpClient::fresh_connections(tls) {
                Ok(c) => c,
                Err(e) => return (false, format!("{method} {url}: {e}")),
            };
            let headers = match endpoint_headers.over(headers) {
                Ok(headers) => headers,
                Err(e) => return (false, format!("{method} {url}: {e}")),
            };
            let call = client.exchange(url, method, &headers, body.as_deref());
            match tokio::time::timeout(*timeout, call).await {
                Ok(Ok(a)) if expect_status.is_empty() || expect_status.contains(&a.status) => {
                    (true, format!("{method} {url} → {}", a.status))
                }
                Ok(Ok(http::Answer { status, .. })) => (
                    false,
                    format!("{method} {url} → {status}, expected {expect_status:?}"),
                ),
                Ok(Err(e)) => (false, e),
                Err(_) => (
                    false,
                    format!(
                        "{method} {url}: no answer within {}",
                        humantime::format_duration(*timeout)
                    ),
                ),
            }
        }
        RollbackAction::Command {
            command,
            any_exit,
            timeout,
        } => match probes::command::run(command, *timeout).await {
            Ok(out) if out.status == 0 || *any_exit => (
                true,
                format!("`{}` exited {}", command.display(), out.status),
            ),
            Ok(out) => (
                false,
                format!(
                    "`{}` exited {}: {}",
                    command.display(),
                    out.status,
                    out.stderr.trim()
                ),
            ),
            Err(e) => (false, e),
        },
    }
}

/// Samples every probe until all pass in the same round, within the recovery timeout.
async fn verify(sh: &Shared) -> Result<Result<(), String>, LeaseLost> {
    let exp = &sh.exp;
    let deadline = Instant::now() + exp.recovery_timeout;
    let pause = exp
        .hypothesis
        .iter()
        .map(|p| p.interval)
        .min()
        .unwrap_or(Duration::from_millis(500))
        .min(Duration::from_millis(500));
    loop {
        let mut failing = None;
        for probe in &exp.hypothesis {
            let s = probes::sample(probe).await;
            journal_sample(sh, probe, SamplePhase::After, &s).await?;
            if !s.ok && failing.is_none() {
                failing = Some(format!("probe `{}`: {}", probe.name, s.detail));
            }
        }
        match failing {
            None => return Ok(Ok(())),
            Some(why) if Instant::now() + pause >= deadline => {
                return Ok(Err(format!(
                    "the steady state was not back {} after the faults were removed ({why})",
                    humantime::format_duration(exp.recovery_timeout)
                )));
            }
            Some(_) => tokio::time::sleep(pause).await,
        }
    }
}
