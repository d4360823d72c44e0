//! The `when` of a schedule: a 5-field cron expression (`0 14 * * tue,thu`) or a plain form
//! (`every tue,thu at 14:00`, `every day at 09:30`, `every weekday at 10:00`), optionally
//! followed by `in <IANA zone>` (`in Europe/Berlin`).
//!
//! Plain forms are translated to cron, so one evaluator computes every fire time, in the
//! schedule's zone:
//! - a local time that does not exist that day (the hour skipped when clocks go forward) is
//!   **moved forward** by the length of the gap: `02:30` in Berlin on the last Sunday of
//!   March fires at `03:30` local time (01:30 UTC), so a daily schedule never loses a day;
//! - a local time that happens twice (clocks go back) fires **once**, at its first occurrence.
//!
//! Cron fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or `jan`-`dec`)
//! and day of week (0-7 or `sun`-`sat`, 0 and 7 both Sunday); each takes `*`, numbers, ranges
//! `a-b`, steps `*/n` or `a-b/n`, and lists `a,b`. When both day fields are restricted, a day
//! matching either fires; a day field that starts with `*` (`*/2`) is not restricted, so the two
//! are then both required (as in Vixie cron).

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{close_zones, unknown_zone_message};

/// How far ahead a schedule is searched for its next fire: 8 years covers every leap-day
/// pattern, so a schedule with no fire in that window never fires.
const SEARCH_DAYS: i64 = 366 * 8 + 2;
/// How many fires the minimum-interval check looks at (and how far ahead, below).
const INTERVAL_CHECK_FIRES: usize = 1000;
const INTERVAL_CHECK_DAYS: i64 = 400;

/// What the grammar needs from the config.
#[derive(Debug, Clone)]
pub struct WhenRules {
    /// Zone of a schedule that names none.
    pub default_tz: Tz,
    /// Schedules may not fire more often than this.
    pub min_interval: Duration,
}

impl Default for WhenRules {
    fn default() -> Self {
        WhenRules {
            default_tz: Tz::UTC,
            min_interval: Duration::from_secs(3600),
        }
    }
}

const EXAMPLES: &str = "write a 5-field cron expression such as `0 14 * * tue,thu`, or a plain form such as `every tue,thu at 14:00`, `every day at 09:30`, `every weekday at 10:00`, optionally followed by `in Europe/Berlin`";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhenError {
    #[error("the schedule needs a time: {EXAMPLES}")]
    Empty,
    #[error("cannot read `{text}` as a schedule: {why}. {}", capitalize(EXAMPLES))]
    Unparsable { text: String, why: String },
    #[error("{}", unknown_zone_message(zone, suggestions))]
    UnknownZone {
        zone: String,
        suggestions: Vec<String>,
    },
    #[error(
        "`{text}` would fire every {}; schedules may fire at most once every {} (the configured minimum, `[schedules] min_interval`). Choose a less frequent time, e.g. `every day at 10:00`",
        human(*every), human(*min)
    )]
    TooFrequent {
        text: String,
        every: Duration,
        min: Duration,
    },
    #[error(
        "`{text}` never fires (no date matches it in the next 8 years, e.g. February 30th); check the day and month fields"
    )]
    Never { text: String },
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A duration the way people say it: `1m`, `1h`, `1h 30m`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// A parsed, valid `when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    /// The normalized 5-field cron expression (what is stored and evaluated).
    pub expr: String,
    pub tz: Tz,
    cron: Cron,
}

/// Finds an IANA zone by name, ignoring case.
pub fn parse_zone(name: &str) -> Result<Tz, WhenError> {
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
    {
        return Ok(*tz);
    }
    Err(WhenError::UnknownZone {
        zone: name.to_string(),
        suggestions: close_zones(name),
    })
}

impl When {
    /// Parses what a person typed, in a zone (`in ...` or the default), and checks that it
    /// fires at all and not more often than allowed (measured from `now_ms` on).
    pub fn parse(text: &str, rules: &WhenRules, now_ms: i64) -> Result<When, WhenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(WhenError::Empty);
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        // `... in <Zone>` at the end.
        let (words, tz) = match words.as_slice() {
            [rest @ .., inw, zone] if inw.eq_ignore_ascii_case("in") => {
                (rest.to_vec(), parse_zone(zone)?)
            }
            _ => (words.clone(), rules.default_tz),
        };
        if words.is_empty() {
            return Err(WhenError::Empty);
        }
        let expr = if words[0].eq_ignore_ascii_case("every") {
            plain_to_cron(text, &words[1..], rules.min_interval)?
        } else {
            words.join(" ")
        };
        let cron = Cron::parse(&expr).map_err(|why| WhenError::Unparsable {
            text: text.to_string(),
            why,
        })?;
        let when = When { expr, tz, cron };
        let first = when.next_after(now_ms).ok_or_else(|| WhenError::Never {
            text: text.to_string(),
        })?;
        if let Some(every) = when.shortest_gap(first, rules.min_interval)
            && every < rules.min_interval
        {
            return Err(WhenError::TooFrequent {
                text: text.to_string(),
                every,
                min: rules.min_interval,
            });
        }
        Ok(when)
    }

    /// Rebuilds a stored schedule (its expression was checked when it was created).
    pub fn from_stored(expr: &str, tz: &str) -> Result<When, WhenError> {
        let tz = parse_zone(tz)?;
        let cron = Cron::parse(expr).map_err(|why| WhenError::Unparsable {
            text: expr.to_string(),
            why,
        })?;
        Ok(When {
            expr: expr.to_string(),
            tz,
            cron,
        })
    }

    /// The first fire strictly after `after_ms` (Unix ms), if any within the search window.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
        let start = after.with_timezone(&self.tz).date_naive();
        for d in 0..SEARCH_DAYS {
            let date = start.checked_add_signed(chrono::Duration::days(d))?;
            if !self.cron.day_matches(date) {
                continue;
            }
            // Fires of one day, resolved to instants; the earliest after `after` wins (a time
            // moved forward out of a gap may land after a later time of the same day).
            let best = self
                .cron
                .times()
                .filter_map(|(h, m)| date.and_hms_opt(h, m, 0))
                .map(|naive| self.resolve(naive))
                .filter(|t| *t > after_ms)
                .min();
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// The next `n` fires after `after_ms`.
    pub fn next_n(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut cur = after_ms;
        while out.len() < n {
            match self.next_after(cur) {
                Some(t) => {
                    out.push(t);
                    cur = t;
                }
                None => break,
            }
        }
        out
    }

    /// The local wall-clock time to an instant: single, the earlier of two, or moved forward
    /// out of a gap by the gap's length.
    fn resolve(&self, naive: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => t.timestamp_millis(),
            chrono::LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
            chrono::LocalResult::None => {
                // Read the local time with the offset in force before the gap.
                let before = naive - chrono::Duration::days(1);
                let offset = self.tz.offset_from_utc_datetime(&before).fix();
                (naive - chrono::Duration::seconds(i64::from(offset.local_minus_utc())))
                    .and_utc()
                    .timestamp_millis()
            }
        }
    }

    /// The shortest time between consecutive fires over the coming months, stopping as soon
    /// as one is shorter than `min`.
    fn shortest_gap(&self, first_ms: i64, min: Duration) -> Option<Duration> {
        let horizon = first_ms + INTERVAL_CHECK_DAYS * 86_400_000;
        let mut prev = first_ms;
        let mut shortest: Option<Duration> = None;
        for _ in 0..INTERVAL_CHECK_FIRES {
            let Some(next) = self.next_after(prev) else {
                break;
            };
            if next > horizon {
                break;
            }
            let gap = Duration::from_millis(u64::try_from(next - prev).unwrap_or(0));
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            if gap < min {
                break;
            }
            prev = next;
        }
        shortest
    }

    /// An instant in the schedule's zone, e.g. `Tue 2026-11-24 14:00 CET`.
    pub fn local(&self, ms: i64) -> String {
        local_time(self.tz, ms)
    }
}

/// An instant in a zone, e.g. `Tue 2026-11-24 14:00 CET`.
pub fn local_time(tz: Tz, ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&tz)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string(),
        None => ms.to_string(),
    }
}

/// `every ...` (the words after `every`, zone already taken off) as a cron expression.
fn plain_to_cron(text: &str, words: &[&str], min: Duration) -> Result<String, WhenError> {
    let bad = |why: String| WhenError::Unparsable {
        text: text.to_string(),
        why,
    };
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    // Intervals: `every second`, `every 5 minutes`, `every hour`, `every 2 hours`.
    let (count, unit) = match lower.as_slice() {
        [unit] => (Some(1u64), *unit),
        [n, unit] if n.parse::<u64>().is_ok() => (n.parse::<u64>().ok(), *unit),
        _ => (None, ""),
    };
    if let Some(n) = count {
        let secs = match unit.trim_end_matches('s') {
            "second" | "sec" => Some(1),
            "minute" | "min" => Some(60),
            "hour" => Some(3600),
            _ => None,
        };
        if let Some(unit_secs) = secs {
            if n == 0 {
                return Err(bad("an interval of zero".into()));
            }
            let every = Duration::from_secs(n.saturating_mul(unit_secs));
            if every < min {
                return Err(WhenError::TooFrequent {
                    text: text.to_string(),
                    every,
                    min,
                });
            }
            return match unit_secs {
                60 if 60 % n == 0 => Ok(format!("*/{n} * * * *")),
                3600 if n == 1 => Ok("0 * * * *".into()),
                3600 if 24 % n == 0 => Ok(format!("0 */{n} * * *")),
                _ => Err(bad(format!(
                    "an interval of {} does not divide the day evenly; use a cron expression for it",
                    human(every)
                ))),
            };
        }
    }
    // `every <days> at <times>`.
    let Some(at) = lower.iter().position(|w| *w == "at") else {
        return Err(bad("`every` needs the days and `at` a time".into()));
    };
    let days_words = &lower[..at];
    let time_words = &lower[at + 1..];
    if days_words.is_empty() {
        return Err(bad("`every` needs the days before `at`".into()));
    }
    if time_words.is_empty() {
        return Err(bad("`at` needs a time such as 14:00".into()));
    }
    let days = plain_days(&days_words.join(",")).map_err(bad)?;
    let mut hours: Vec<u32> = Vec::new();
    let mut minutes: Vec<u32> = Vec::new();
    for t in time_words
        .join(",")
        .split(',')
        .filter(|t| !t.is_empty() && *t != "and")
    {
        let (h, m) = parse_clock(t).map_err(bad)?;
        hours.push(h);
        minutes.push(m);
    }
    minutes.sort();
    minutes.dedup();
    hours.sort();
    hours.dedup();
    // One cron line covers the times only when they share their minute (cron crosses hours
    // with minutes); otherwise say so rather than fire at times nobody asked for.
    if minutes.len() > 1 {
        return Err(bad(
            "several times in one plain schedule must share their minutes (e.g. `at 10:00,14:00`); make two schedules instead".into(),
        ));
    }
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    Ok(format!("{} {} * * {days}", list(&minutes), list(&hours)))
}

/// `day`, `weekday`, `weekend`, or day names (`tue,thu`, `monday`, `mon-fri`) as a cron
/// day-of-week field.
fn plain_days(s: &str) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty() && *p != "and") {
        match part {
            "day" | "days" | "daily" => return Ok("*".into()),
            "weekday" | "weekdays" => out.push("1-5".into()),
            "weekend" | "weekends" => out.push("0,6".into()),
            _ => {
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (a, Some(b)),
                    None => (part, None),
                };
                let day = |d: &str| {
                    day_number(d).ok_or_else(|| {
                        format!("`{d}` is not a day; use mon, tue, …, sun, `day` or `weekday`")
                    })
                };
                let a = day(a)?;
                match b {
                    Some(b) => out.push(format!("{a}-{}", day(b)?)),
                    None => out.push(a.to_string()),
                }
            }
        }
    }
    if out.is_empty() {
        return Err("`every` needs the days before `at`".into());
    }
    Ok(out.join(","))
}

fn day_number(d: &str) -> Option<u32> {
    let d = d.trim_end_matches('s');
    const DAYS: [(&str, &str); 7] = [
        ("sun", "sunday"),
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
    ];
    DAYS.iter()
        .position(|(short, long)| {
            d == *short || d == *long || (d.len() >= 3 && long.starts_with(d))
        })
        .and_then(|i| u32::try_from(i).ok())
}

/// `14:00`, `9:30`.
fn parse_clock(t: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{t}` is not a time of day; write it as HH:MM, e.g. 14:00");
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// A parsed 5-field cron expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    dom_any: bool,
    dow_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DOWS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    fn parse(expr: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        match fields.len() {
            5 => {}
            6 => {
                return Err(
                    "it has 6 fields; chaosbot takes 5 (minute hour day-of-month month day-of-week), without seconds"
                        .into(),
                );
            }
            n => {
                return Err(format!(
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week), this has {n}"
                ));
            }
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let dom = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut dow = field(fields[4], "day of week", 0, 7, &DOWS)?;
        // 7 is Sunday too.
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        Ok(Cron {
            minutes,
            hours,
            dom,
            months,
            dow,
            // As in Vixie cron, a day field that starts with `*` (`*`, `*/2`) is unrestricted:
            // the day fields are then ANDed, and ORed only when both are restricted.
            dom_any: fields[2].starts_with('*'),
            dow_any: fields[4].starts_with('*'),
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.dom & (1 << date.day()) != 0;
        let dow = self.dow & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_any || self.dow_any {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The (hour, minute) pairs of a matching day, in order.
    fn times(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..24u32)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60u32)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .map(move |m| (h, m))
            })
    }
}

/// One cron field as a bit set of its allowed values.
fn field(s: &str, name: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        let lower = v.to_lowercase();
        if let Some(i) = names
            .iter()
            .position(|n| lower.starts_with(n) && lower.len() >= 3)
        {
            // Names count from the field's low end (months from 1, days from 0).
            return Ok(lo + u32::try_from(i).unwrap_or(0));
        }
        let n: u32 = v
            .parse()
            .map_err(|_| format!("`{v}` in the {name} field is not a number"))?;
        if n < lo || n > hi {
            return Err(format!("{n} in the {name} field is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in s.split(',') {
        if item.is_empty() {
            return Err(format!("the {name} field `{s}` has an empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => {
                let st: u32 = st.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("the step `/{st}` in the {name} field must be a whole number above 0")
                })?;
                (r, st)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            // `a/n` runs from a to the field's end.
            (a, if item.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(format!(
                "the range `{range}` in the {name} field runs backwards"
            ));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            // A huge step (`*/4000000000`) ends the range instead of overflowing.
            match v.checked_add(step) {
                Some(n) => v = n,
                None => break,
            }
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn utc(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn rules() -> WhenRules {
        WhenRules::default()
    }

    // 2026-11-24 is a Tuesday.
    const TUE_NOON: &str = "2026-11-24T12:00:00Z";

    #[test]
    fn plain_forms_translate_to_cron() {
        let now = ms(TUE_NOON);
        let cases = [
            ("every tue,thu at 14:00", "0 14 * * 2,4"),
            ("every day at 09:30", "30 9 * * *"),
            ("every weekday at 10:00", "0 10 * * 1-5"),
            ("every monday at 9:00", "0 9 * * 1"),
            ("Every Mon-Wed at 10:00,16:00", "0 10,16 * * 1-3"),
            ("every hour", "0 * * * *"),
            ("every 6 hours", "0 */6 * * *"),
        ];
        for (text, expr) in cases {
            let w = When::parse(text, &rules(), now).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(w.expr, expr, "{text}");
            assert_eq!(w.tz, Tz::UTC);
        }
    }

    #[test]
    fn next_fires_in_the_zone() {
        let now = ms(TUE_NOON);
        let w = When::parse("every tue,thu at 14:00 in Europe/Berlin", &rules(), now).unwrap();
        assert_eq!(w.tz, chrono_tz::Europe::Berlin);
        let next: Vec<String> = w.next_n(now, 3).into_iter().map(utc).collect();
        // 14:00 CET is 13:00 UTC.
        assert_eq!(
            next,
            [
                "2026-11-24T13:00:00Z",
                "2026-11-26T13:00:00Z",
                "2026-12-01T13:00:00Z"
            ]
        );
        assert_eq!(
            w.local(w.next_after(now).unwrap()),
            "Tue 2026-11-24 14:00 CET"
        );
        // Strictly after: a fire at `now` is not next.
        let at = ms("2026-11-24T13:00:00Z");
        assert_eq!(utc(w.next_after(at).unwrap()), "2026-11-26T13:00:00Z");
    }

    #[test]
    fn cron_fields_names_ranges_steps_lists() {
        let now = ms(TUE_NOON);
        let w = When::parse("0 9-17/4 * * MON-FRI", &rules(), now).unwrap();
        let next: Vec<String> = w.next_n(now, 4).into_iter().map(utc).collect();
        assert_eq!(
            next,
            [
                "2026-11-24T13:00:00Z",
                "2026-11-24T17:00:00Z",
                "2026-11-25T09:00:00Z",
                "2026-11-25T13:00:00Z"
            ]
        );
        // Sunday as 7 and as 0; months by name.
        let a = When::parse("30 6 * jan,dec 7", &rules(), now).unwrap();
        let b = When::parse("30 6 * 12,1 sun", &rules(), now).unwrap();
        assert_eq!(a.next_n(now, 5), b.next_n(now, 5));
        assert_eq!(utc(a.next_after(now).unwrap()), "2026-12-06T06:30:00Z");
        // Both day fields restricted: either matches (1st of the month, or a Friday).
        let w = When::parse("0 8 1 * fri", &rules(), now).unwrap();
        let next: Vec<String> = w.next_n(now, 3).into_iter().map(utc).collect();
        assert_eq!(
            next,
            [
                "2026-11-27T08:00:00Z",
                "2026-12-01T08:00:00Z",
                "2026-12-04T08:00:00Z"
            ]
        );
        // A day field that starts with `*` is unrestricted, so the fields are ANDed: odd days
        // of the month that are Mondays (Vixie cron), not every odd day and every Monday.
        let w = When::parse("0 9 */2 * mon", &rules(), now).unwrap();
        let next: Vec<String> = w.next_n(now, 3).into_iter().map(utc).collect();
        assert_eq!(
            next,
            [
                "2026-12-07T09:00:00Z",
                "2026-12-21T09:00:00Z",
                "2027-01-11T09:00:00Z"
            ]
        );
        let w = When::parse("0 9 13 * */3", &rules(), now).unwrap();
        assert_eq!(
            utc(w.next_after(now).unwrap()),
            // The next 13th that is a Sunday, Wednesday or Saturday: 2026-12-13, a Sunday.
            "2026-12-13T09:00:00Z"
        );
    }

    #[test]
    fn dst_gap_moves_forward_and_overlap_fires_once() {
        let berlin = WhenRules {
            default_tz: chrono_tz::Europe::Berlin,
            ..rules()
        };
        // Clocks go forward 02:00 -> 03:00 on Sunday 2026-03-29.
        let w = When::parse("30 2 * * *", &berlin, ms("2026-03-28T12:00:00Z")).unwrap();
        let next: Vec<String> = w
            .next_n(ms("2026-03-28T12:00:00Z"), 2)
            .into_iter()
            .map(utc)
            .collect();
        // 02:30 does not exist on the 29th: it fires at 03:30 CEST (01:30 UTC); the next day
        // at 02:30 CEST (00:30 UTC).
        assert_eq!(next, ["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]);
        assert_eq!(
            w.local(ms("2026-03-29T01:30:00Z")),
            "Sun 2026-03-29 03:30 CEST"
        );
        // Clocks go back 03:00 -> 02:00 on Sunday 2026-10-25: 02:30 happens twice, fires once
        // (the first, 00:30 UTC), then the next day at 02:30 CET (01:30 UTC).
        let next: Vec<String> = w
            .next_n(ms("2026-10-24T12:00:00Z"), 2)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(next, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    }

    #[test]
    fn too_frequent_is_refused_with_the_minimum() {
        let now = ms(TUE_NOON);
        for text in [
            "every second",
            "* * * * *",
            "every minute",
            "every 30 minutes",
            "*/10 * * * *",
            "0,30 9 * * *",
        ] {
            let e = When::parse(text, &rules(), now).unwrap_err();
            assert!(matches!(e, WhenError::TooFrequent { .. }), "{text}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("at most once every 1h"), "{msg}");
        }
        let e = When::parse("every second", &rules(), now).unwrap_err();
        assert!(e.to_string().contains("would fire every 1s"), "{e}");
        // A lower minimum allows it.
        let lax = WhenRules {
            min_interval: Duration::from_secs(600),
            ..rules()
        };
        assert_eq!(
            When::parse("every 30 minutes", &lax, now).unwrap().expr,
            "*/30 * * * *"
        );
    }

    #[test]
    fn never_firing_is_refused() {
        let now = ms(TUE_NOON);
        for text in ["0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            let e = When::parse(text, &rules(), now).unwrap_err();
            assert!(matches!(e, WhenError::Never { .. }), "{text}: {e}");
            assert!(e.to_string().contains("never fires"));
        }
        // February 29th does fire (in 2028).
        let w = When::parse("0 0 29 2 *", &rules(), now).unwrap();
        assert_eq!(utc(w.next_after(now).unwrap()), "2028-02-29T00:00:00Z");
    }

    #[test]
    fn unknown_zones_suggest_close_names() {
        let now = ms(TUE_NOON);
        let e = When::parse("every day at 10:00 in Europe/Berln", &rules(), now).unwrap_err();
        match &e {
            WhenError::UnknownZone { suggestions, .. } => {
                assert_eq!(
                    suggestions.first().map(String::as_str),
                    Some("Europe/Berlin")
                )
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().contains("did you mean `Europe/Berlin`"),
            "{e}"
        );
        let e = When::parse("every day at 10:00 in Mars/Olympus", &rules(), now).unwrap_err();
        assert!(e.to_string().contains("is not a time zone"), "{e}");
        // Case does not matter.
        let w = When::parse("every day at 10:00 in america/new_york", &rules(), now).unwrap();
        assert_eq!(w.tz, chrono_tz::America::New_York);
    }

    #[test]
    fn unparsable_inputs_say_what_is_wrong() {
        let now = ms(TUE_NOON);
        let cases = [
            ("", "needs a time"),
            ("tomorrow", "5 fields"),
            ("0 0 0 * * *", "6 fields"),
            ("61 * * * *", "61 in the minute field is outside 0-59"),
            ("0 0 * * funday", "not a number"),
            ("0 5-2 * * *", "runs backwards"),
            ("0 */0 * * *", "above 0"),
            ("every tue", "`at` a time"),
            ("every blursday at 10:00", "`blursday` is not a day"),
            ("every day at 25:00", "not a time of day"),
            ("every day at 10:00,14:30", "share their minutes"),
            ("every 7 hours", "does not divide the day"),
        ];
        for (text, want) in cases {
            let e = When::parse(text, &rules(), now).unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let now = ms(TUE_NOON);
        let w = When::parse("0 0/4294967295 * * *", &rules(), now).unwrap();
        assert_eq!(utc(w.next_after(now).unwrap()), "2026-11-25T00:00:00Z");
        let e = When::parse("0 99999999999 * * *", &rules(), now).unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
        let e = When::parse("every 99999999999999999999 hours", &rules(), now).unwrap_err();
        assert!(matches!(e, WhenError::Unparsable { .. }), "{e}");
    }

    #[test]
    fn stored_schedules_rebuild() {
        let w = When::from_stored("0 14 * * 2,4", "Europe/Berlin").unwrap();
        let again = When::parse("every tue,thu at 14:00 in Europe/Berlin", &rules(), 0).unwrap();
        assert_eq!(w, again);
    }
}
