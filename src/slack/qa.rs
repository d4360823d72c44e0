//! The speaker Q&A in a run's thread: the board (one message, updated in place), its buttons and
//! modals, and the answers chaosbot gives itself from the journal.
//!
//! The data lives in the store ([`crate::store::LearningStore`]); this module renders it and
//! queues what must be posted. Both the projector (which opens the Q&A when a run ends) and the
//! edge (questions, votes, answers) use it.

use serde_json::{Value, json};
use tracing::warn;

use super::blocks::{MAX_SECTION_CHARS, section, truncate};
use super::digest::slack_date;
use super::render::Rendered;
use super::{run_parent_key, run_thread_key};
use crate::config::QaConfig;
use crate::report::{self, RunSummary};
use crate::run::Entry;
use crate::store::learning::{Answer, Learning, LearningKind, QaSession, Question};
use crate::store::outbox::{OutboundAction, OutboundMessage};
use crate::store::{DynStore, RunRecord, StoreResult};

/// `action_id` of a question's Answer button; its `value` is the question id.
pub const ANSWER_ACTION_ID: &str = "qa_answer";
/// `action_id` of the board's "Add a learning" button; its `value` is the run id.
pub const LEARN_ACTION_ID: &str = "qa_learn";
/// `callback_id` of the answer modal.
pub const ANSWER_MODAL_CALLBACK_ID: &str = "qa_answer";
/// `callback_id` of the learning modal.
pub const LEARN_MODAL_CALLBACK_ID: &str = "qa_learn";
/// Who chaosbot's own answers are by.
pub const AUTO_ANSWERER: &str = "chaosbot";

pub const ANSWER_BLOCK: &str = "answer";
pub const LEARN_KIND_BLOCK: &str = "kind";
pub const LEARN_TEXT_BLOCK: &str = "text";

/// The outbox message key of a run's Q&A board.
pub fn board_key(run_id: &str) -> String {
    format!("run:{run_id}:qa")
}

/// A Slack mention for a user id, as-is for anything else (`cli`, `chaosbot`).
pub fn mention(user: &str) -> String {
    if user.starts_with('U') || user.starts_with('W') {
        format!("<@{user}>")
    } else {
        format!("`{user}`")
    }
}

fn quote(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn button(text: &str, action_id: &str, value: &str) -> Value {
    json!({
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
    })
}

/// The speaker of a run: who started it.
pub fn speaker(run: &RunRecord) -> String {
    run.source
        .slack()
        .cloned()
        .map(|o| o.user)
        .unwrap_or_else(|| run.requested_by.clone())
}

/// The board: questions ranked by votes (answered ones marked), the learnings, and how to take
/// part. `interactive` adds the Answer and "Add a learning" buttons.
pub fn board(
    run: &RunRecord,
    session: Option<&QaSession>,
    questions: &[Question],
    learnings: &[Learning],
    top: usize,
    now_ms: i64,
    interactive: bool,
) -> Rendered {
    let answered = questions.iter().filter(|q| q.answer.is_some()).count();
    let text = format!(
        "Q&A on run {} of {}: {} question(s), {answered} answered",
        run.id,
        run.experiment,
        questions.len()
    );
    let status = match session {
        Some(s) if s.is_open(now_ms) => format!("open until {}", slack_date(s.closes_ms)),
        Some(s) => format!(
            "closed {} — no new questions; answers are still welcome",
            slack_date(s.closes_ms)
        ),
        None => "opens when the run ends".to_string(),
    };
    let mut blocks = vec![section(&truncate(
        &format!(
            ":speech_balloon: *Q&A on run `{}`* — {} · {status}\nReply in this thread to ask {} (the speaker) a question; react with :+1: to a question to vote for it. Questions that ask for a number the journal holds (a percentile, the error rate, time to detect or recover, when a fault started or ended, who started the run) are answered at once by chaosbot.",
            run.id,
            run.title,
            mention(&speaker(run)),
        ),
        MAX_SECTION_CHARS,
    ))];
    if questions.is_empty() {
        blocks.push(section("_No questions yet._"));
    }
    for q in questions.iter().take(top) {
        let mut s = format!(
            "*{}* :+1: · {}{}\n{}",
            q.votes,
            mention(&q.asked_by),
            if q.edited_ms.is_some() {
                " _(edited)_"
            } else {
                ""
            },
            quote(&truncate(&q.text, 600))
        );
        match &q.answer {
            Some(a) if a.auto => {
                s.push_str("\n:robot_face: _answered from the journal, in the thread_")
            }
            Some(a) => s.push_str(&format!(
                "\n:white_check_mark: *answered by {}*: {}",
                mention(&a.by),
                truncate(&a.text.replace('\n', " "), 800)
            )),
            None => s.push_str("\n:hourglass_flowing_sand: _waiting for the speaker_"),
        }
        let mut block = section(&truncate(&s, MAX_SECTION_CHARS));
        if interactive {
            block["accessory"] = button(
                if q.answer.as_ref().is_some_and(|a| !a.auto) {
                    "Answer again"
                } else {
                    "Answer"
                },
                ANSWER_ACTION_ID,
                &q.id.to_string(),
            );
        }
        blocks.push(block);
    }
    if questions.len() > top {
        blocks.push(
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                "… and {} more question(s) with fewer votes; `/chaos qa {}` shows them all.",
                questions.len() - top,
                run.id
            )}]}),
        );
    }
    let notes = |kind: LearningKind| -> Vec<String> {
        learnings
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| format!("• {} — {}", truncate(&l.text, 500), mention(&l.added_by)))
            .collect()
    };
    let (learned, change) = (notes(LearningKind::Learned), notes(LearningKind::Change));
    if !learned.is_empty() || !change.is_empty() {
        let mut s = String::new();
        if !learned.is_empty() {
            s.push_str(&format!("*What we learned*\n{}", learned.join("\n")));
        }
        if !change.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!("*What we change*\n{}", change.join("\n")));
        }
        blocks.push(section(&truncate(&s, MAX_SECTION_CHARS)));
    }
    if interactive {
        blocks.push(json!({
            "type": "actions",
            "elements": [button("Add a learning", LEARN_ACTION_ID, &run.id)],
        }));
    }
    Rendered {
        text,
        blocks: Value::Array(blocks),
    }
}

/// The board as it stands in the store.
pub async fn render_board(
    store: &DynStore,
    run: &RunRecord,
    top: usize,
    now_ms: i64,
    interactive: bool,
) -> StoreResult<Rendered> {
    let session = store.qa_session(&run.id).await?;
    let questions = store.questions(&run.id).await?;
    let learnings = store.learnings(&run.id).await?;
    Ok(board(
        run,
        session.as_ref(),
        &questions,
        &learnings,
        top,
        now_ms,
        interactive,
    ))
}

/// A reply in the run's thread.
pub fn thread_post(run_id: &str, channel: &str, text: String) -> OutboundMessage {
    OutboundMessage {
        thread_key: run_thread_key(run_id),
        channel: channel.to_string(),
        action: OutboundAction::Post {
            key: None,
            in_thread_of: Some(run_parent_key(run_id)),
            text: truncate(&text, super::blocks::MAX_TEXT_CHARS),
            blocks: Some(Value::Array(
                super::blocks::split_text(&text, MAX_SECTION_CHARS)
                    .iter()
                    .take(super::blocks::MAX_BLOCKS)
                    .map(|t| section(t))
                    .collect(),
            )),
        },
    }
}

/// The thread reply for chaosbot's own answer.
pub fn auto_answer_text(q: &Question, body: &str, speaker: &str) -> String {
    format!(
        ":robot_face: *Answered from the run's journal* (chaosbot) — {} asked:\n{}\n{body}\n_{} (the speaker) may add more from the Q&A board._",
        mention(&q.asked_by),
        quote(&truncate(&q.text, 600)),
        mention(speaker)
    )
}

/// The thread reply for a person's answer.
pub fn answer_text(q: &Question, answer: &Answer) -> String {
    format!(
        ":speech_balloon: *{} answers* {}'s question:\n{}\n{}",
        mention(&answer.by),
        mention(&q.asked_by),
        quote(&truncate(&q.text, 600)),
        answer.text
    )
}

/// Answers `q` from the run's journal when it asks for a number the journal holds: stores the
/// answer and returns the thread reply to queue. `None` leaves it to the speaker.
pub async fn auto_answer(
    store: &DynStore,
    run: &RunRecord,
    entries: &[Entry],
    summary: &RunSummary,
    q: &Question,
    now_ms: i64,
) -> StoreResult<Option<OutboundMessage>> {
    if q.answer.is_some() || run.finished_ms.is_none() {
        return Ok(None);
    }
    let Some(lines) = report::ask::answer(&q.text, summary, entries) else {
        return Ok(None);
    };
    // Stored as posted: the board and `/chaos summary` show the same text as the thread.
    let body = super::blocks::mrkdwn_list(&lines);
    let answer = Answer {
        text: body.clone(),
        by: AUTO_ANSWERER.to_string(),
        at_ms: now_ms,
        auto: true,
    };
    store.answer_question(q.id, &answer).await?;
    Ok(Some(thread_post(
        &run.id,
        &q.channel,
        auto_answer_text(q, &body, &speaker(run)),
    )))
}

/// What the projector queues when a run ends: the board (and the Q&A window opened in the
/// store), then chaosbot's answers to questions asked while the run was going.
pub async fn open_for_finished_run(
    store: &DynStore,
    run: &RunRecord,
    entries: &[Entry],
    summary: &RunSummary,
    channel: &str,
    settings: &QaConfig,
    now_ms: i64,
) -> StoreResult<Vec<OutboundMessage>> {
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let top = settings.board_top as usize;
    store
        .open_qa(&run.id, channel, now_ms, now_ms.saturating_add(window_ms))
        .await?;
    let mut answers = Vec::new();
    for q in store.questions(&run.id).await? {
        match auto_answer(store, run, entries, summary, &q, now_ms).await {
            Ok(Some(m)) => answers.push(m),
            Ok(None) => {}
            Err(e) => {
                warn!(run_id = %run.id, question = q.id, error = %e, "cannot answer a question from the journal")
            }
        }
    }
    let rendered = render_board(store, run, top, now_ms, true).await?;
    let mut out = vec![OutboundMessage {
        thread_key: run_thread_key(&run.id),
        channel: channel.to_string(),
        action: OutboundAction::Post {
            key: Some(board_key(&run.id)),
            in_thread_of: Some(run_parent_key(&run.id)),
            text: rendered.text,
            blocks: Some(rendered.blocks),
        },
    }];
    out.extend(answers);
    Ok(out)
}

/// The update of the run's board: its next revision is taken before the board is read, so
/// across replicas the highest revision shows at least everything written before any lower
/// one was taken (delivery sends the highest and never an older one after it).
pub async fn board_update(
    store: &DynStore,
    run: &RunRecord,
    channel: &str,
    top: usize,
    now_ms: i64,
) -> StoreResult<OutboundMessage> {
    let key = board_key(&run.id);
    let revision = store.next_revision(&key).await?;
    let rendered = render_board(store, run, top, now_ms, true).await?;
    Ok(OutboundMessage {
        thread_key: run_thread_key(&run.id),
        channel: channel.to_string(),
        action: OutboundAction::Update {
            key,
            text: rendered.text,
            blocks: Some(rendered.blocks),
            revision: Some(revision),
        },
    })
}

/// Queues board updates of a run, ordered across replicas by revision (see [`board_update`]).
/// Each refresh queues one even when this process sent the same board before: another replica
/// may have shown a newer one since, and coalescing keeps a burst to one call.
#[derive(Default)]
pub struct BoardUpdates;

impl BoardUpdates {
    /// Re-renders the run's board and queues its update (plus `extra` messages first, in the
    /// same transaction). Returns whether anything was queued.
    pub async fn refresh(
        &self,
        store: &DynStore,
        run: &RunRecord,
        channel: &str,
        top: usize,
        now_ms: i64,
        extra: Vec<OutboundMessage>,
    ) -> StoreResult<bool> {
        let mut out = extra;
        // Before the run ends there is no board to update yet (the projector posts it).
        let key = board_key(&run.id);
        let has_board =
            store.message_ref(&key).await?.is_some() || store.post_pending(&key).await?;
        if has_board {
            out.push(board_update(store, run, channel, top, now_ms).await?);
        }
        if out.is_empty() {
            return Ok(false);
        }
        store.enqueue(&out, None).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_quotes() {
        assert_eq!(mention("U123"), "<@U123>");
        assert_eq!(mention("cli"), "`cli`");
        assert_eq!(quote("a\nb"), "> a\n> b");
    }
}
