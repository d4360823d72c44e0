//! Schedules: experiments that start by themselves at planned times.
//!
//! - [`when`] is the grammar (`every tue,thu at 14:00 in Europe/Berlin`, or cron) and computes
//!   fire times in the schedule's zone.
//! - Schedules, their fires and the halt are rows ([`crate::store::ScheduleStore`]), so they
//!   survive restarts and a fire happens once across replicas.
//! - [`scheduler`] is the task `chaosbot serve` runs: heads-ups, fires, and the notes saying
//!   why a fire did not run.
//! - Making and removing schedules are use cases of [`crate::app`]; the `/chaos` handlers and
//!   the Skip button are in the Slack edge, the heads-up and notes in `crate::slack::schedules`.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::store::{DynStore, StoreResult, schedules::Halt};

pub mod when;

pub use crate::config::{AllowedWindow, ScheduleConfig};
pub use when::{When, WhenError, WhenRules};

/// A run a schedule plans to start (for period summaries and the weekly digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpcomingRun {
    /// Unix ms at which the run is planned to start.
    pub at_ms: i64,
    pub experiment: String,
    pub schedule_id: i64,
    /// The Slack channel the run will appear in.
    pub channel: String,
}

/// At most this many planned runs per schedule in one [`upcoming`] answer (an hourly schedule
/// over a month would otherwise list 700).
const UPCOMING_PER_SCHEDULE: usize = 200;

/// Runs planned by schedules between `from_ms` (inclusive) and `to_ms` (exclusive), in time
/// order. Fires already skipped (by the Skip button) are left out; whether a fire will be
/// skipped for the allowed hours, a halt or a busy target is decided when it comes.
pub async fn upcoming(store: &DynStore, from_ms: i64, to_ms: i64) -> StoreResult<Vec<UpcomingRun>> {
    let mut out = Vec::new();
    for s in store.list_schedules().await? {
        let Ok(when) = When::from_stored(&s.expr, &s.tz) else {
            continue;
        };
        let mut cur = from_ms.max(s.created_ms) - 1;
        for _ in 0..UPCOMING_PER_SCHEDULE {
            let Some(at) = when.next_after(cur) else {
                break;
            };
            if at >= to_ms {
                break;
            }
            cur = at;
            let skipped = store
                .get_fire(s.id, at)
                .await?
                .is_some_and(|f| f.skipped.is_some());
            if !skipped {
                out.push(UpcomingRun {
                    at_ms: at,
                    experiment: s.experiment.clone(),
                    schedule_id: s.id,
                    channel: s.channel.clone(),
                });
            }
        }
    }
    out.sort_by_key(|u| (u.at_ms, u.schedule_id));
    Ok(out)
}

/// The halt in force, if any (`abort all` puts one in force, `resume` lifts it). While one is,
/// nothing starts from Slack, a schedule or a game day.
pub async fn halt_in_force(store: &DynStore) -> StoreResult<Option<Halt>> {
    store.current_halt().await
}

/// How a refusal names a halt: who, when, why, and how to lift it.
pub fn halt_text(h: &Halt, tz: Tz) -> String {
    format!(
        "a halt is in force since {} (<@{}> ran `abort all`: {}). Nothing starts until an operator types `/chaos resume`",
        when::local_time(tz, h.since_ms),
        h.halted_by,
        h.reason
    )
}

// The `[schedules]` section is config (it is read and checked with the rest of the settings);
// the rules of the `when` grammar it sets are this module's.
impl ScheduleConfig {
    /// The rules the `when` grammar applies.
    pub fn when_rules(&self) -> WhenRules {
        WhenRules {
            default_tz: when::parse_zone(self.timezone.trim()).unwrap_or(Tz::UTC),
            min_interval: self.min_interval,
        }
    }
}
