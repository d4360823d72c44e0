//! Game days: a conference track of experiments. A plan (see [`plan`]) lists experiments; the
//! game day runs them one after another in one channel, each through the ordinary start path
//! (so each has its own parent message from the projector and its own Q&A thread), waits a
//! Q&A window after each run before the next, and posts its own opening and closing summary.
//!
//! - [`plan`]: plan files in `<catalog>/gamedays/`, parsed and validated.
//! - The driver (the long-running task that drives open game days; every step is persisted,
//!   and a lease on the row makes exactly one replica drive each game day) and the rendering
//!   of the opening, the notes and the closing are in the Slack edge: `crate::slack::gameday`.
//! - Starting and stopping are use cases of [`crate::app`]; `/chaos gameday` (list, start,
//!   stop) is in the Slack edge.

pub mod plan;

pub use plan::{AgendaItem, Plan, Plans, load_plans, parse_plan};

/// The outbox thread key of a game day: its opening, notes and closing share it, so they are
/// delivered in order.
pub fn thread_key(id: &str) -> String {
    format!("gameday:{id}")
}

/// The outbox message key of the game day's opening message (its thread holds the notes).
pub fn opening_key(id: &str) -> String {
    format!("gameday:{id}:opening")
}

/// The outbox message key of the note posted after agenda item `index` (0-based).
pub fn note_key(id: &str, index: usize) -> String {
    format!("gameday:{id}:note:{index}")
}

/// The outbox message key of the closing summary.
pub fn closing_key(id: &str) -> String {
    format!("gameday:{id}:closing")
}

/// A fresh game-day id: `g-` and ten characters that are easy to read aloud.
pub fn new_gameday_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut id = String::from("g-");
    for _ in 0..10 {
        let i = rand::random_range(0..ALPHABET.len());
        id.push(char::from(ALPHABET[i]));
    }
    id
}
