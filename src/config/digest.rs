//! `[digest]`: the weekly digest's channel and moment of the week.

use serde::Deserialize;

use super::ConfigError;

/// `[digest]`: when and where the weekly digest is posted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Slack channel id (`C…`) to post to; no channel, no digest.
    #[serde(default)]
    pub channel: Option<String>,
    /// Day of the week: `mon` … `sun` (or the full name).
    #[serde(default = "default_digest_weekday")]
    pub weekday: String,
    /// Local time of day, `HH:MM` (24-hour).
    #[serde(default = "default_digest_at")]
    pub at: String,
    /// IANA time zone name, e.g. `Europe/Berlin`; `weekday` and `at` are read in it.
    #[serde(default = "default_digest_timezone")]
    pub timezone: String,
}

fn default_digest_weekday() -> String {
    "mon".into()
}
fn default_digest_at() -> String {
    "09:00".into()
}
fn default_digest_timezone() -> String {
    "UTC".into()
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            channel: None,
            weekday: default_digest_weekday(),
            at: default_digest_at(),
            timezone: default_digest_timezone(),
        }
    }
}

/// A [`DigestConfig`] read and checked: the moment of the week the digest is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestTime {
    pub weekday: chrono::Weekday,
    pub at: chrono::NaiveTime,
    pub timezone: chrono_tz::Tz,
}

impl DigestConfig {
    /// The channel, when the digest is on.
    pub fn enabled_channel(&self) -> Option<&str> {
        self.channel
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }

    /// Reads `weekday`, `at` and `timezone`; the error says which one is wrong and how to write it.
    pub fn time(&self) -> Result<DigestTime, ConfigError> {
        let weekday = self.weekday.trim().parse::<chrono::Weekday>().map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.weekday `{}` is not a day of the week; write mon, tue, wed, thu, fri, sat or sun",
                self.weekday
            ))
        })?;
        let at = chrono::NaiveTime::parse_from_str(self.at.trim(), "%H:%M").map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.at `{}` is not a time of day; write it as HH:MM on a 24-hour clock, e.g. \"09:00\"",
                self.at
            ))
        })?;
        let timezone = self.timezone.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            ConfigError::Invalid(format!(
                "digest.timezone `{}` is not a time zone; use an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\"",
                self.timezone
            ))
        })?;
        Ok(DigestTime {
            weekday,
            at,
            timezone,
        })
    }
}
