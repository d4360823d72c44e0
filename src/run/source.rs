//! Where a run came from: the terminal, a Slack channel, a schedule or a game day.
//!
//! Stored as a short string in the run row and in the journal's `submitted` event, so rows
//! written by earlier versions read back unchanged:
//!
//! | source | stored as |
//! |---|---|
//! | the terminal | `cli` |
//! | a person in Slack | `slack:<team>:<channel>:<user>` |
//! | a schedule's fire | `schedule:<schedule id>:<team>:<channel>:<user>` |
//! | a game day's item | `gameday:<game day id>:<team>:<channel>:<user>` |
//!
//! Anything else (a hand-made row, a future edge) reads back as [`RunSource::Other`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Slack workspace, channel and person a run belongs to (where its live message goes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlackOrigin {
    pub team: String,
    pub channel: String,
    pub user: String,
}

impl SlackOrigin {
    /// `slack:<team>:<channel>:<user>`: kept for callers that hold only a source string.
    pub fn to_source(&self) -> String {
        RunSource::Slack(self.clone()).to_string()
    }

    /// The origin of any Slack-bound source string (a person, a schedule or a game day).
    pub fn from_source(source: &str) -> Option<SlackOrigin> {
        RunSource::parse(source).slack().cloned()
    }

    fn parse_parts(rest: &str) -> Option<SlackOrigin> {
        let mut parts = rest.splitn(3, ':');
        let team = parts.next()?.to_string();
        let channel = parts.next()?.to_string();
        let user = parts.next()?.to_string();
        if team.is_empty() || channel.is_empty() || user.is_empty() {
            return None;
        }
        Some(SlackOrigin {
            team,
            channel,
            user,
        })
    }
}

impl fmt::Display for SlackOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.team, self.channel, self.user)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunSource {
    /// `chaosbot run` or `chaosbot demo` in a terminal (who: the run's `requested_by`).
    Terminal,
    /// `/chaos start` or the start form.
    Slack(SlackOrigin),
    /// A planned fire of a schedule made in `origin`'s channel.
    Schedule {
        schedule_id: i64,
        origin: SlackOrigin,
    },
    /// An item of a game day in `origin`'s channel.
    Gameday {
        gameday_id: String,
        origin: SlackOrigin,
    },
    /// A source this version does not know, kept as it was written.
    Other(String),
}

impl RunSource {
    pub fn parse(s: &str) -> RunSource {
        let parsed = if s == "cli" {
            Some(RunSource::Terminal)
        } else if let Some(rest) = s.strip_prefix("slack:") {
            SlackOrigin::parse_parts(rest).map(RunSource::Slack)
        } else if let Some(rest) = s.strip_prefix("schedule:") {
            rest.split_once(':').and_then(|(id, rest)| {
                Some(RunSource::Schedule {
                    schedule_id: id.parse().ok()?,
                    origin: SlackOrigin::parse_parts(rest)?,
                })
            })
        } else if let Some(rest) = s.strip_prefix("gameday:") {
            rest.split_once(':').and_then(|(id, rest)| {
                (!id.is_empty()).then_some(())?;
                Some(RunSource::Gameday {
                    gameday_id: id.to_string(),
                    origin: SlackOrigin::parse_parts(rest)?,
                })
            })
        } else {
            None
        };
        parsed.unwrap_or_else(|| RunSource::Other(s.to_string()))
    }

    /// The Slack channel the run lives in, if any.
    pub fn slack(&self) -> Option<&SlackOrigin> {
        match self {
            RunSource::Slack(o)
            | RunSource::Schedule { origin: o, .. }
            | RunSource::Gameday { origin: o, .. } => Some(o),
            RunSource::Terminal | RunSource::Other(_) => None,
        }
    }

    /// Short words for people: "the terminal", "Slack", "schedule 4", "game day g-1".
    pub fn describe(&self) -> String {
        match self {
            RunSource::Terminal => "the terminal".into(),
            RunSource::Slack(_) => "Slack".into(),
            RunSource::Schedule { schedule_id, .. } => format!("schedule {schedule_id}"),
            RunSource::Gameday { gameday_id, .. } => format!("game day {gameday_id}"),
            RunSource::Other(s) => s.clone(),
        }
    }
}

impl fmt::Display for RunSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunSource::Terminal => f.write_str("cli"),
            RunSource::Slack(o) => write!(f, "slack:{o}"),
            RunSource::Schedule {
                schedule_id,
                origin,
            } => write!(f, "schedule:{schedule_id}:{origin}"),
            RunSource::Gameday { gameday_id, origin } => write!(f, "gameday:{gameday_id}:{origin}"),
            RunSource::Other(s) => f.write_str(s),
        }
    }
}

impl From<&str> for RunSource {
    fn from(s: &str) -> Self {
        RunSource::parse(s)
    }
}

impl Serialize for RunSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(RunSource::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> SlackOrigin {
        SlackOrigin {
            team: "T1".into(),
            channel: "C2".into(),
            user: "U3".into(),
        }
    }

    #[test]
    fn every_source_round_trips_through_its_string() {
        for s in [
            RunSource::Terminal,
            RunSource::Slack(origin()),
            RunSource::Schedule {
                schedule_id: 42,
                origin: origin(),
            },
            RunSource::Gameday {
                gameday_id: "g-abc".into(),
                origin: origin(),
            },
            RunSource::Other("webhook".into()),
        ] {
            assert_eq!(RunSource::parse(&s.to_string()), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<RunSource>(&json).unwrap(), s);
        }
    }

    #[test]
    fn earlier_rows_read_back_as_before() {
        assert_eq!(RunSource::parse("cli"), RunSource::Terminal);
        assert_eq!(
            RunSource::parse("slack:T1:C2:U3"),
            RunSource::Slack(origin())
        );
        assert_eq!(
            RunSource::parse("slack:T1::U3"),
            RunSource::Other("slack:T1::U3".into())
        );
        assert_eq!(
            SlackOrigin::from_source(&origin().to_source()),
            Some(origin())
        );
        assert_eq!(SlackOrigin::from_source("cli"), None);
        assert_eq!(
            SlackOrigin::from_source("schedule:7:T1:C2:U3"),
            Some(origin())
        );
    }
}
