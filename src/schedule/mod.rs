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

use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::store::{DynStore, StoreResult, schedules::Halt};

pub mod scheduler;
pub mod when;

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

/// `[schedules]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// How long before a fire its heads-up (with the Skip button) is posted.
    #[serde(default = "default_heads_up", with = "crate::spec::duration_serde")]
    pub heads_up: Duration,
    /// Scheduled runs start only inside these local hours (`HH:MM-HH:MM`, end exclusive;
    /// `00:00-24:00` for any time).
    #[serde(default = "default_allowed_hours")]
    pub allowed_hours: String,
    /// ... and on these days (`mon` … `sun`).
    #[serde(default = "default_allowed_days")]
    pub allowed_days: Vec<String>,
    /// Zone of the allowed hours, and of schedules that name none (IANA name).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Schedules may not fire more often than this.
    #[serde(default = "default_min_interval", with = "crate::spec::duration_serde")]
    pub min_interval: Duration,
    /// A fire found late (the process was down) still runs if it is at most this late;
    /// otherwise a "missed" note is posted instead.
    #[serde(default = "default_grace", with = "crate::spec::duration_serde")]
    pub grace: Duration,
}

fn default_heads_up() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_allowed_hours() -> String {
    "09:00-17:00".into()
}
fn default_allowed_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .iter()
        .map(|d| d.to_string())
        .collect()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_min_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_grace() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            heads_up: default_heads_up(),
            allowed_hours: default_allowed_hours(),
            allowed_days: default_allowed_days(),
            timezone: default_timezone(),
            min_interval: default_min_interval(),
            grace: default_grace(),
        }
    }
}

/// When scheduled runs may start: local hours on some days, in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedWindow {
    pub tz: Tz,
    /// Minutes after local midnight, `start` inclusive, `end` exclusive.
    pub start_min: u32,
    pub end_min: u32,
    /// Bit per weekday, 0 = Sunday.
    days: u8,
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl ScheduleConfig {
    /// The allowed window, or what is wrong with the settings.
    pub fn window(&self) -> Result<AllowedWindow, String> {
        let tz = when::parse_zone(self.timezone.trim())
            .map_err(|e| format!("schedules.timezone: {e}"))?;
        let bad_hours = || {
            format!(
                "schedules.allowed_hours `{}` is not a range of local times; write it like \"09:00-17:00\" (or \"00:00-24:00\" for any time)",
                self.allowed_hours
            )
        };
        let (a, b) = self.allowed_hours.split_once('-').ok_or_else(bad_hours)?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (start_min, end_min) = (
            minutes(a).ok_or_else(bad_hours)?,
            minutes(b).ok_or_else(bad_hours)?,
        );
        if start_min >= end_min {
            return Err(format!(
                "{}: the start must be before the end (a window across midnight is not supported)",
                bad_hours()
            ));
        }
        let mut days = 0u8;
        for d in &self.allowed_days {
            let lower = d.trim().to_lowercase();
            let i = DAY_NAMES
                .iter()
                .position(|n| lower.starts_with(n))
                .ok_or_else(|| {
                    format!("schedules.allowed_days: `{d}` is not a day; use mon, tue, …, sun")
                })?;
            days |= 1 << i;
        }
        if days == 0 {
            return Err(
                "schedules.allowed_days is empty, so no scheduled run could ever start; list days such as [\"mon\", \"tue\"]".into(),
            );
        }
        Ok(AllowedWindow {
            tz,
            start_min,
            end_min,
            days,
        })
    }

    /// The rules the `when` grammar applies.
    pub fn when_rules(&self) -> WhenRules {
        WhenRules {
            default_tz: when::parse_zone(self.timezone.trim()).unwrap_or(Tz::UTC),
            min_interval: self.min_interval,
        }
    }
}

impl AllowedWindow {
    /// Whether a run may start at `ms`.
    pub fn allows(&self, ms: i64) -> bool {
        let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) else {
            return false;
        };
        let local = t.with_timezone(&self.tz);
        let day = local.weekday().num_days_from_sunday();
        let minute = local.hour() * 60 + local.minute();
        self.days & (1 << day) != 0 && minute >= self.start_min && minute < self.end_min
    }

    /// E.g. `09:00-17:00 mon,tue,wed,thu,fri (UTC)`.
    pub fn describe(&self) -> String {
        let days: Vec<&str> = DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.days & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect();
        format!(
            "{:02}:{:02}-{:02}:{:02} {} ({})",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60,
            days.join(","),
            self.tz.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn allowed_window_hours_days_zone() {
        let cfg = ScheduleConfig {
            timezone: "Europe/Berlin".into(),
            ..ScheduleConfig::default()
        };
        let w = cfg.window().unwrap();
        assert_eq!(
            w.describe(),
            "09:00-17:00 mon,tue,wed,thu,fri (Europe/Berlin)"
        );
        // Tuesday 2026-11-24: 09:00 CET is 08:00 UTC.
        assert!(!w.allows(ms("2026-11-24T07:59:00Z")));
        assert!(w.allows(ms("2026-11-24T08:00:00Z")));
        assert!(w.allows(ms("2026-11-24T15:59:00Z")));
        assert!(!w.allows(ms("2026-11-24T16:00:00Z")));
        // Saturday.
        assert!(!w.allows(ms("2026-11-28T10:00:00Z")));
        let any = ScheduleConfig {
            allowed_hours: "00:00-24:00".into(),
            allowed_days: DAY_NAMES.iter().map(|d| d.to_string()).collect(),
            ..ScheduleConfig::default()
        };
        assert!(any.window().unwrap().allows(ms("2026-11-28T23:59:00Z")));
    }

    #[test]
    fn bad_window_settings_say_what_to_write() {
        let bad = |f: fn(&mut ScheduleConfig)| {
            let mut c = ScheduleConfig::default();
            f(&mut c);
            c.window().unwrap_err()
        };
        assert!(bad(|c| c.allowed_hours = "9-5".into()).contains("09:00-17:00"));
        assert!(bad(|c| c.allowed_hours = "17:00-09:00".into()).contains("before the end"));
        assert!(bad(|c| c.allowed_days = vec!["someday".into()]).contains("not a day"));
        assert!(bad(|c| c.allowed_days = vec![]).contains("empty"));
        assert!(bad(|c| c.timezone = "Europe/Berln".into()).contains("Europe/Berlin"));
    }
}
