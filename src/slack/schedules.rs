//! How schedules look in Slack: the heads-up of a fire (with its Skip button) and the notes
//! about a fire, as outbox messages. The scheduler queues them; the edge handles the button.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::slack::blocks::{Reply, truncate};
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::schedules::Schedule;

/// `action_id` of the Skip button on a heads-up; its `value` is `<schedule id>:<fire ms>`.
pub const SKIP_ACTION_ID: &str = "skip_fire";

/// The outbox key of a fire's heads-up message (its notes are replies in its thread).
pub fn heads_up_key(schedule_id: i64, fire_ms: i64) -> String {
    format!("schedule:{schedule_id}:{fire_ms}")
}

/// Messages of one schedule are delivered in order.
pub fn schedule_thread_key(schedule_id: i64) -> String {
    format!("schedule:{schedule_id}")
}

/// A note about a fire: a reply under its heads-up when one was posted, else in the channel.
pub fn note(s: &Schedule, fire_ms: i64, heads_up_posted: bool, text: &str) -> OutboundMessage {
    OutboundMessage {
        thread_key: schedule_thread_key(s.id),
        channel: s.channel.clone(),
        action: OutboundAction::Post {
            key: None,
            in_thread_of: heads_up_posted.then(|| heads_up_key(s.id, fire_ms)),
            text: truncate(text, crate::slack::blocks::MAX_TEXT_CHARS),
            blocks: Some(Value::Array(Reply::simple(text).blocks())),
        },
    }
}

/// The heads-up blocks: what will run when, and (while it can still be skipped) a Skip button.
pub fn heads_up_blocks(text: &str, schedule_id: i64, fire_ms: i64, skippable: bool) -> Value {
    let mut blocks = Reply::simple(text).blocks();
    if skippable {
        blocks.push(json!({
            "type": "actions",
            "block_id": "schedule_fire",
            "elements": [{
                "type": "button",
                "action_id": SKIP_ACTION_ID,
                "text": {"type": "plain_text", "text": "Skip this run"},
                "value": format!("{schedule_id}:{fire_ms}"),
                "confirm": {
                    "title": {"type": "plain_text", "text": "Skip this run?"},
                    "text": {"type": "mrkdwn", "text": "Only this run is skipped; the schedule stays."},
                    "confirm": {"type": "plain_text", "text": "Skip"},
                    "deny": {"type": "plain_text", "text": "Keep it"},
                },
            }],
        }));
    }
    Value::Array(blocks)
}

pub fn params_text(params: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" with `{}`", p.join(" "))
    }
}
