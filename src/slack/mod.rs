//! The Slack edge: a team runs and watches experiments from a channel.
//!
//! - [`edge`]: request verification, the HTTP routes, the `/chaos` command grammar, events and
//!   interactions, authorization and the audit log. It only parses, authorizes and submits.
//! - [`api`]: the Slack Web API client.
//! - [`outbox`]: persisted, ordered, retried, coalesced delivery of every write to Slack.
//! - [`socket`]: Socket Mode, the WebSocket alternative to the HTTP routes.
//! - [`projector`] and [`render`]: a run's journal rendered into the channel (parent message,
//!   thread, summary), through the outbox.
//!
//! Nothing here injects faults; nothing in the engine knows about Slack. A run started from
//! Slack carries its origin in `RunRecord::source` (see [`SlackOrigin`]), which is how the
//! views find the channel to render into.

pub mod api;
pub mod blocks;
pub mod digest;
pub mod edge;
pub mod outbox;
pub mod projector;
pub mod qa;
pub mod render;
pub mod server;
pub mod socket;

/// Where a Slack-started run came from, encoded in the run's `source` as
/// `slack:<team>:<channel>:<user>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackOrigin {
    pub team: String,
    pub channel: String,
    pub user: String,
}

impl SlackOrigin {
    pub fn to_source(&self) -> String {
        format!("slack:{}:{}:{}", self.team, self.channel, self.user)
    }

    pub fn from_source(source: &str) -> Option<SlackOrigin> {
        let mut parts = source.strip_prefix("slack:")?.splitn(3, ':');
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

/// The outbox thread key of a run: its parent message and thread replies share it.
pub fn run_thread_key(run_id: &str) -> String {
    format!("run:{run_id}")
}

/// The outbox message key of a run's parent message.
pub fn run_parent_key(run_id: &str) -> String {
    format!("run:{run_id}:parent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_round_trips() {
        let o = SlackOrigin {
            team: "T1".into(),
            channel: "C2".into(),
            user: "U3".into(),
        };
        assert_eq!(SlackOrigin::from_source(&o.to_source()), Some(o));
        assert_eq!(SlackOrigin::from_source("cli"), None);
        assert_eq!(SlackOrigin::from_source("slack:T1::U3"), None);
    }
}
