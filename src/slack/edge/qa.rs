//! The Q&A in a run's thread, from the edge's side: thread replies become questions (edits and
//! deletions follow them), :+1: reactions are votes, the board's buttons open the answer and
//! learning forms, and `/chaos qa` / `/chaos learn`.
//!
//! Every handler is idempotent (a question is its Slack message, a vote is one row per person),
//! so an event Slack delivers twice changes nothing the second time, and a question posted while
//! chaosbot was down is taken when Slack redelivers it.

use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::{SlackApp, auth};
use crate::report;
use crate::run::now_ms;
use crate::slack::blocks::{Reply, truncate};
use crate::slack::qa::{
    self, ANSWER_ACTION_ID, ANSWER_BLOCK, ANSWER_MODAL_CALLBACK_ID, LEARN_KIND_BLOCK,
    LEARN_MODAL_CALLBACK_ID, LEARN_TEXT_BLOCK, mention,
};
use crate::store::RunRecord;
use crate::store::learning::{Answer, LearningKind, NewQuestion, Question};

/// Longest answer or learning accepted (a Slack section holds 3000 characters).
const MAX_NOTE_CHARS: usize = 2900;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The reaction names that count as a vote (`+1` is Slack's name for :thumbsup:; skin tones
/// come as `+1::skin-tone-3`).
fn is_vote(reaction: &str) -> bool {
    let base = reaction.split("::").next().unwrap_or(reaction);
    base == "+1" || base == "thumbsup"
}

/// Slack's `event_ts` ("1700000999.000100": seconds and microseconds) in microseconds.
fn event_micros(ts: &str) -> Option<i64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let secs: i64 = secs.parse().ok()?;
    let frac = format!("{:0<6}", frac.get(..6.min(frac.len()))?);
    let micros: i64 = frac.parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn is_own(event: &Value, bot_user: Option<&String>) -> bool {
    event.get("bot_id").is_some_and(|b| !b.is_null())
        || bot_user.is_some_and(|b| b == s(event, "user"))
}

impl SlackApp {
    /// Who may answer questions on a run and add its learnings: the speaker (who started it) and
    /// operators.
    fn may_speak(&self, user: &str, run: &RunRecord) -> Result<(), String> {
        let speaker = qa::speaker(run);
        if user == speaker || auth::is_operator(&self.cfg.slack, user) {
            return Ok(());
        }
        Err(format!(
            "only {} (the speaker: they started run `{}`) or an operator may answer questions and add learnings on it. Ask them, or {}.",
            mention(&speaker),
            run.id,
            auth::whom_to_ask(&self.cfg.slack)
        ))
    }

    fn board_top(&self) -> usize {
        self.cfg.qa.board_top as usize
    }

    async fn refresh_board(
        &self,
        run: &RunRecord,
        channel: &str,
        extra: Vec<crate::store::outbox::OutboundMessage>,
    ) {
        if let Err(e) = self
            .qa_boards
            .refresh(&self.store, run, channel, self.board_top(), now_ms(), extra)
            .await
        {
            warn!(run_id = %run.id, error = %e, "cannot queue the Q&A board update");
        }
    }

    /// A `message` event (any subtype). Replies in a run's thread are questions.
    pub(super) async fn qa_message_event(&self, team: &str, event: &Value) {
        let channel = s(event, "channel").to_string();
        match s(event, "subtype") {
            "" | "thread_broadcast" | "file_share" => {
                if is_own(event, self.bot_user_id.get()) {
                    return;
                }
                let ts = s(event, "ts");
                let thread_ts = s(event, "thread_ts");
                if thread_ts.is_empty() || thread_ts == ts {
                    return; // not a thread reply
                }
                self.question_asked(
                    team,
                    &channel,
                    s(event, "user"),
                    ts,
                    thread_ts,
                    s(event, "text"),
                )
                .await;
            }
            "message_changed" => {
                let msg = event.get("message").cloned().unwrap_or(Value::Null);
                if is_own(&msg, self.bot_user_id.get()) {
                    return;
                }
                self.question_edited(&channel, s(&msg, "ts"), s(&msg, "text"))
                    .await;
            }
            "message_deleted" => {
                let ts = s(event, "deleted_ts");
                self.question_deleted(&channel, ts).await;
            }
            other => debug!(subtype = other, "message subtype not used by the Q&A"),
        }
    }

    async fn run_for(&self, channel: &str, thread_ts: &str) -> Option<RunRecord> {
        let id = match self.store.run_for_thread(channel, thread_ts).await {
            Ok(Some(id)) => id,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, channel, thread_ts, "cannot look up the thread's run");
                return None;
            }
        };
        match self.store.get_run(&id).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, run_id = %id, "cannot read the run of a thread");
                None
            }
        }
    }

    async fn question_asked(
        &self,
        team: &str,
        channel: &str,
        user: &str,
        ts: &str,
        thread_ts: &str,
        text: &str,
    ) {
        if user.is_empty() || ts.is_empty() || text.trim().is_empty() {
            return;
        }
        let Some(run) = self.run_for(channel, thread_ts).await else {
            // A thread that is not a run's: people talk; that is not for chaosbot.
            debug!(
                channel,
                thread_ts, "reply in a thread that is not a run's ignored"
            );
            return;
        };
        let now = now_ms();
        let session = self.store.qa_session(&run.id).await.ok().flatten();
        if let Some(sess) = &session
            && !sess.is_open(now)
        {
            // A redelivery of a question taken while the Q&A was open still counts.
            if let Ok(Some(_)) = self.store.question_by_ts(channel, ts).await {
                return;
            }
            let reply = Reply::simple(format!(
                "The Q&A on run `{}` closed {}; your reply stays in the thread but is not on the board. Ask {} directly, or add what you learned with `/chaos learn {} <text>`.",
                run.id,
                crate::slack::digest::slack_date(sess.closes_ms),
                mention(&qa::speaker(&run)),
                run.id
            ));
            self.tell(channel, user, &reply).await;
            self.audit(
                team,
                user,
                channel,
                "event:qa_question",
                text,
                "refused: Q&A closed",
            )
            .await;
            return;
        }
        let new = NewQuestion {
            run_id: run.id.clone(),
            channel: channel.to_string(),
            ts: ts.to_string(),
            asked_by: user.to_string(),
            text: truncate(text.trim(), 3000),
            asked_ms: now,
        };
        let (question, fresh) = match self.store.add_question(&new).await {
            Ok(q) => q,
            Err(e) => {
                warn!(run_id = %run.id, error = %e, "cannot store a question");
                return;
            }
        };
        let mut extra = Vec::new();
        // Also on a redelivery: an earlier attempt may have stored the question and died before
        // answering it.
        if let Some(m) = self.answer_from_journal(&run, &question).await {
            extra.push(m);
        }
        self.refresh_board(&run, channel, extra).await;
        info!(run_id = %run.id, question = question.id, fresh, "question taken");
        if fresh {
            self.audit(
                team,
                user,
                channel,
                "event:qa_question",
                text,
                &format!("ok: question {}", question.id),
            )
            .await;
        }
    }

    async fn answer_from_journal(
        &self,
        run: &RunRecord,
        q: &Question,
    ) -> Option<crate::store::outbox::OutboundMessage> {
        if q.answer.is_some() || run.finished_ms.is_none() {
            return None;
        }
        let entries = match self.store.journal(&run.id, 0).await {
            Ok(e) => e,
            Err(e) => {
                warn!(run_id = %run.id, error = %e, "cannot read the journal to answer a question");
                return None;
            }
        };
        let summary = report::summarize(run, &entries);
        match qa::auto_answer(&self.store, run, &entries, &summary, q, now_ms()).await {
            Ok(m) => m,
            Err(e) => {
                warn!(run_id = %run.id, error = %e, "cannot store chaosbot's answer");
                None
            }
        }
    }

    async fn question_edited(&self, channel: &str, ts: &str, text: &str) {
        if ts.is_empty() || text.trim().is_empty() {
            return;
        }
        let q = match self
            .store
            .edit_question(channel, ts, &truncate(text.trim(), 3000), now_ms())
            .await
        {
            Ok(Some(q)) => q,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot store a question's edit");
                return;
            }
        };
        if let Ok(Some(run)) = self.store.get_run(&q.run_id).await {
            // An edit can turn a question into one the journal answers.
            let extra = self
                .answer_from_journal(&run, &q)
                .await
                .into_iter()
                .collect();
            self.refresh_board(&run, channel, extra).await;
        }
    }

    async fn question_deleted(&self, channel: &str, ts: &str) {
        if ts.is_empty() {
            return;
        }
        match self.store.remove_question(channel, ts, now_ms()).await {
            Ok(Some(q)) => {
                if let Ok(Some(run)) = self.store.get_run(&q.run_id).await {
                    self.refresh_board(&run, channel, Vec::new()).await;
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot take a deleted question off the board"),
        }
    }

    /// `reaction_added` / `reaction_removed`: a :+1: on a question is a vote.
    pub(super) async fn qa_reaction_event(&self, event: &Value, added: bool) {
        if !is_vote(s(event, "reaction")) {
            return;
        }
        let user = s(event, "user");
        if user.is_empty() || self.bot_user_id.get().is_some_and(|b| b == user) {
            debug!("the bot's own reaction is not a vote");
            return;
        }
        let item = event.get("item").cloned().unwrap_or(Value::Null);
        if s(&item, "type") != "message" {
            return;
        }
        let (channel, ts) = (s(&item, "channel"), s(&item, "ts"));
        let q = match self.store.question_by_ts(channel, ts).await {
            Ok(Some(q)) if q.deleted_ms.is_none() => q,
            Ok(_) => return, // a reaction on something that is not a question
            Err(e) => {
                warn!(error = %e, "cannot look up the question voted on");
                return;
            }
        };
        // Slack may deliver an add and its removal out of order: the event's own time decides.
        let at = event_micros(s(event, "event_ts")).unwrap_or_else(|| now_ms() * 1000);
        let changed = if added {
            self.store.add_vote(q.id, user, at).await
        } else {
            self.store.remove_vote(q.id, user, at).await
        };
        match changed {
            Ok(true) => {
                if let Ok(Some(run)) = self.store.get_run(&q.run_id).await {
                    self.refresh_board(&run, channel, Vec::new()).await;
                }
            }
            Ok(false) => {} // a repeat
            Err(e) => warn!(error = %e, question = q.id, "cannot record a vote"),
        }
    }

    /// The Answer button: opens the answer form for the speaker; tells anyone else why not.
    pub(super) async fn qa_answer_button(
        &self,
        user: &str,
        channel: &str,
        value: &str,
        trigger_id: Option<&str>,
    ) -> Result<String, String> {
        let id: i64 = value.parse().map_err(|_| {
            "this Answer button names no question; use the board's buttons".to_string()
        })?;
        let q = self
            .store
            .question(id)
            .await
            .map_err(|e| format!("cannot read the question right now ({e}); try again"))?
            .ok_or_else(|| "that question no longer exists".to_string())?;
        let run = self
            .store
            .get_run(&q.run_id)
            .await
            .map_err(|e| format!("cannot read the run right now ({e}); try again"))?
            .ok_or_else(|| format!("run `{}` no longer exists", q.run_id))?;
        self.may_speak(user, &run)?;
        let trigger = trigger_id.filter(|t| !t.is_empty()).ok_or_else(|| {
            "Slack sent no trigger to open the form with; press the button again".to_string()
        })?;
        let view = answer_modal(&q, channel);
        self.api
            .call("views.open", json!({"trigger_id": trigger, "view": view}))
            .await
            .map_err(|e| format!("cannot open the answer form ({e}); press the button again"))?;
        Ok(format!("answer form opened for question {id}"))
    }

    /// The "Add a learning" button.
    pub(super) async fn qa_learn_button(
        &self,
        user: &str,
        channel: &str,
        run_id: &str,
        trigger_id: Option<&str>,
    ) -> Result<String, String> {
        let run = self
            .store
            .get_run(run_id)
            .await
            .map_err(|e| format!("cannot read the run right now ({e}); try again"))?
            .ok_or_else(|| format!("no run `{run_id}`"))?;
        self.may_speak(user, &run)?;
        let trigger = trigger_id.filter(|t| !t.is_empty()).ok_or_else(|| {
            "Slack sent no trigger to open the form with; press the button again".to_string()
        })?;
        self.api
            .call(
                "views.open",
                json!({"trigger_id": trigger, "view": learn_modal(run_id, channel)}),
            )
            .await
            .map_err(|e| format!("cannot open the form ({e}); press the button again"))?;
        Ok(format!("learning form opened for run {run_id}"))
    }

    /// Submissions of the answer and learning forms. `Value::Null` closes the form; errors are
    /// shown next to the field.
    pub(super) async fn qa_view_submission(&self, view: &Value, team: &str, user: &str) -> Value {
        let meta: Value = view
            .get("private_metadata")
            .and_then(Value::as_str)
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or(Value::Null);
        let values = view
            .pointer("/state/values")
            .cloned()
            .unwrap_or(Value::Null);
        let callback = s(view, "callback_id");
        let field = |block: &str| -> String {
            values
                .pointer(&format!("/{block}/{block}/value"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let (result, block, action) = if let Err(m) = auth::check_team(&self.cfg.slack, team) {
            let block = if callback == ANSWER_MODAL_CALLBACK_ID {
                ANSWER_BLOCK
            } else {
                LEARN_TEXT_BLOCK
            };
            (Err(m), block, "modal:qa")
        } else if callback == ANSWER_MODAL_CALLBACK_ID {
            let text = field(ANSWER_BLOCK);
            let qid = meta.get("question").and_then(Value::as_i64).unwrap_or(0);
            (
                self.submit_answer(user, qid, &text).await,
                ANSWER_BLOCK,
                "modal:qa_answer",
            )
        } else {
            let text = field(LEARN_TEXT_BLOCK);
            let kind = match values
                .pointer(&format!(
                    "/{LEARN_KIND_BLOCK}/{LEARN_KIND_BLOCK}/selected_option/value"
                ))
                .and_then(Value::as_str)
            {
                Some("change") => LearningKind::Change,
                _ => LearningKind::Learned,
            };
            let run_id = meta
                .get("run")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (
                self.add_learning(user, &run_id, kind, &text).await,
                LEARN_TEXT_BLOCK,
                "modal:qa_learn",
            )
        };
        let channel = meta
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match result {
            Ok(done) => {
                self.audit(team, user, &channel, action, &done, "ok").await;
                Value::Null
            }
            Err(msg) => {
                self.audit(team, user, &channel, action, "", &format!("refused: {msg}"))
                    .await;
                json!({"response_action": "errors", "errors": {block: truncate(&msg, 1000)}})
            }
        }
    }

    async fn submit_answer(&self, user: &str, qid: i64, text: &str) -> Result<String, String> {
        if text.is_empty() {
            return Err("write the answer (it is posted in the thread under the question)".into());
        }
        if text.chars().count() > MAX_NOTE_CHARS {
            return Err(format!(
                "the answer is {} characters long; Slack shows at most {MAX_NOTE_CHARS} here — shorten it or link to a document",
                text.chars().count()
            ));
        }
        let q = self
            .store
            .question(qid)
            .await
            .map_err(|e| format!("cannot read the question right now ({e}); try again"))?
            .ok_or_else(|| {
                "this question no longer exists (its message was deleted?)".to_string()
            })?;
        let run = self
            .store
            .get_run(&q.run_id)
            .await
            .map_err(|e| format!("cannot read the run right now ({e}); try again"))?
            .ok_or_else(|| format!("run `{}` no longer exists", q.run_id))?;
        self.may_speak(user, &run)?;
        let answer = Answer {
            text: text.to_string(),
            by: user.to_string(),
            at_ms: now_ms(),
            auto: false,
        };
        let q = self
            .store
            .answer_question(qid, &answer)
            .await
            .map_err(|e| format!("cannot store the answer right now ({e}); submit again"))?
            .ok_or_else(|| "this question no longer exists".to_string())?;
        let post = qa::thread_post(&run.id, &q.channel, qa::answer_text(&q, &answer));
        self.refresh_board(&run, &q.channel, vec![post]).await;
        info!(run_id = %run.id, question = qid, "question answered");
        Ok(format!("question {qid}: {}", truncate(text, 200)))
    }

    /// Stores a learning, posts it in the run's thread and updates the board.
    pub(super) async fn add_learning(
        &self,
        user: &str,
        run_id: &str,
        kind: LearningKind,
        text: &str,
    ) -> Result<String, String> {
        if text.is_empty() {
            return Err("write what was learned or what changes".into());
        }
        if text.chars().count() > MAX_NOTE_CHARS {
            return Err(format!(
                "that note is {} characters long; keep it under {MAX_NOTE_CHARS} (link to a document for more)",
                text.chars().count()
            ));
        }
        let run = self
            .store
            .get_run(run_id)
            .await
            .map_err(|e| format!("cannot read run `{run_id}` right now ({e}); try again"))?
            .ok_or_else(|| format!("no run `{run_id}`; `/chaos status` lists runs in flight"))?;
        self.may_speak(user, &run)?;
        self.store
            .add_learning(&run.id, kind, text, user, now_ms())
            .await
            .map_err(|e| format!("cannot store the note right now ({e}); try again"))?;
        let heading = match kind {
            LearningKind::Learned => "What we learned",
            LearningKind::Change => "What we change",
        };
        if let Some(origin) = run.source.slack().cloned() {
            let post = qa::thread_post(
                &run.id,
                &origin.channel,
                format!(":memo: *{heading}* — {}:\n{text}", mention(user)),
            );
            self.refresh_board(&run, &origin.channel, vec![post]).await;
        }
        Ok(format!(
            "{} on run {}: {}",
            kind.as_str(),
            run.id,
            truncate(text, 200)
        ))
    }

    /// `/chaos qa <run>`: the whole board, to the caller only.
    pub(super) async fn qa_board_reply(
        &self,
        team: &str,
        user: &str,
        run_id: &str,
    ) -> Result<Reply, Reply> {
        let run = self
            .visible_run(run_id, team, user)
            .await
            .map_err(Reply::error)?;
        let rendered = qa::render_board(&self.store, &run, 40, now_ms(), false)
            .await
            .map_err(|e| {
                Reply::error(format!(
                    "cannot read the Q&A of `{run_id}` right now ({e}); try again"
                ))
            })?;
        let mut reply = Reply::new(rendered.text);
        for b in rendered.blocks.as_array().into_iter().flatten() {
            if let Some(t) = b.pointer("/text/text").and_then(Value::as_str) {
                reply.push(t.to_string());
            } else if let Some(t) = b.pointer("/elements/0/text").and_then(Value::as_str) {
                reply.push(format!("_{t}_"));
            }
        }
        Ok(reply)
    }
}

fn answer_modal(q: &Question, channel: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": ANSWER_MODAL_CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Answer a question"},
        "submit": {"type": "plain_text", "text": "Post answer"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json!({"question": q.id, "channel": channel, "run": q.run_id}).to_string(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(
                &format!("{} asked:\n> {}", mention(&q.asked_by), q.text.replace('\n', "\n> ")), 3000)}},
            {
                "type": "input",
                "block_id": ANSWER_BLOCK,
                "label": {"type": "plain_text", "text": "Your answer"},
                "hint": {"type": "plain_text", "text": "Posted in the run's thread under the question, and kept in the run's learning record."},
                "element": {"type": "plain_text_input", "action_id": ANSWER_BLOCK, "multiline": true, "max_length": MAX_NOTE_CHARS},
            },
        ],
    })
}

fn learn_modal(run_id: &str, channel: &str) -> Value {
    let option = |text: &str, value: &str| json!({"text": {"type": "plain_text", "text": text}, "value": value});
    json!({
        "type": "modal",
        "callback_id": LEARN_MODAL_CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Add a learning"},
        "submit": {"type": "plain_text", "text": "Add"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json!({"run": run_id, "channel": channel}).to_string(),
        "blocks": [
            {
                "type": "input",
                "block_id": LEARN_KIND_BLOCK,
                "label": {"type": "plain_text", "text": "Kind"},
                "element": {
                    "type": "static_select",
                    "action_id": LEARN_KIND_BLOCK,
                    "initial_option": option("What we learned", "learned"),
                    "options": [option("What we learned", "learned"), option("What we change", "change")],
                },
            },
            {
                "type": "input",
                "block_id": LEARN_TEXT_BLOCK,
                "label": {"type": "plain_text", "text": "Note"},
                "element": {"type": "plain_text_input", "action_id": LEARN_TEXT_BLOCK, "multiline": true, "max_length": MAX_NOTE_CHARS},
            },
        ],
    })
}

pub(super) fn is_qa_action(action_id: &str) -> bool {
    action_id == ANSWER_ACTION_ID || action_id == qa::LEARN_ACTION_ID
}

pub(super) fn is_qa_view(callback_id: &str) -> bool {
    callback_id == ANSWER_MODAL_CALLBACK_ID || callback_id == LEARN_MODAL_CALLBACK_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_in_microseconds() {
        assert_eq!(
            event_micros("1700000999.000100"),
            Some(1_700_000_999_000_100)
        );
        assert_eq!(event_micros("1700000999.5"), Some(1_700_000_999_500_000));
        assert_eq!(event_micros("1700000999"), Some(1_700_000_999_000_000));
        assert_eq!(event_micros("soon"), None);
        assert_eq!(event_micros(""), None);
    }

    #[test]
    fn votes_are_thumbs_up_in_any_skin_tone() {
        assert!(is_vote("+1"));
        assert!(is_vote("+1::skin-tone-4"));
        assert!(is_vote("thumbsup"));
        assert!(!is_vote("-1"));
        assert!(!is_vote("eyes"));
    }
}
