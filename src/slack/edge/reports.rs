//! `/chaos summary <period>`, the Q&A part of `/chaos summary <run>`, and `/chaos report`.

use serde_json::json;
use tracing::warn;

use super::{SlackApp, SlashCommand, auth};
use crate::report::period::{self, PeriodSpec, Window};
use crate::report::record;
use crate::run::now_ms;
use crate::slack::blocks::{self, Reply};
use crate::slack::digest;
use crate::store::learning::{Learning, LearningKind, Question};
use crate::store::outbox::{OutboundAction, OutboundMessage};

/// How long a period summary may take before the answer goes out without it (it follows as
/// an ephemeral message): well inside Slack's 3 s.
pub const INLINE_WAIT: std::time::Duration = std::time::Duration::from_millis(2_000);

/// At most this many questions in a run's summary (most votes first); the rest are counted.
pub const SUMMARY_QUESTIONS: usize = 10;

/// The "Questions and answers" and "What we learned / what we change" sections of a run's
/// summary.
pub fn qa_sections(reply: &mut Reply, questions: &[Question], learnings: &[Learning]) {
    let asked: Vec<&Question> = questions
        .iter()
        .filter(|q| q.deleted_ms.is_none())
        .collect();
    if asked.is_empty() {
        reply.push("*Questions and answers:* none asked yet — reply in the run's thread to ask.");
    } else {
        let open = asked.iter().filter(|q| q.answer.is_none()).count();
        let mut lines = vec![format!(
            "*Questions and answers* ({} asked, {open} still open)",
            asked.len()
        )];
        for q in asked.iter().take(SUMMARY_QUESTIONS) {
            lines.push(format!(
                "• *{}* vote(s) — “{}” (<@{}>)",
                q.votes,
                blocks::truncate(&q.text, 300),
                q.asked_by
            ));
            lines.push(match &q.answer {
                Some(a) if a.auto => format!(
                    "    ↳ {} _(answered by chaosbot from the journal)_",
                    blocks::truncate(&a.text, 500)
                ),
                Some(a) => format!("    ↳ {} — <@{}>", blocks::truncate(&a.text, 500), a.by),
                None => "    ↳ _open: waiting for the speaker_".to_string(),
            });
        }
        if asked.len() > SUMMARY_QUESTIONS {
            lines.push(format!(
                "_… and {} more question(s) on the run's Q&A board_",
                asked.len() - SUMMARY_QUESTIONS
            ));
        }
        reply.push(lines.join("\n"));
    }
    for (kind, title) in [
        (LearningKind::Learned, "What we learned"),
        (LearningKind::Change, "What we change"),
    ] {
        let notes: Vec<String> = learnings
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| format!("• {} — <@{}>", blocks::truncate(&l.text, 500), l.added_by))
            .collect();
        reply.push(if notes.is_empty() {
            format!("*{title}:* nothing noted yet.")
        } else {
            format!("*{title}*\n{}", notes.join("\n"))
        });
    }
}

/// Runs `work` in its own task and waits up to `wait` for it: its answer when it is done in
/// time; otherwise `pending` at once, and `late` gets the answer when it is ready.
pub(crate) async fn answer_within<W, L, LF>(
    wait: std::time::Duration,
    work: W,
    late: L,
    pending: Reply,
) -> Result<Reply, Reply>
where
    W: std::future::Future<Output = Result<Reply, Reply>> + Send + 'static,
    L: FnOnce(Reply) -> LF + Send + 'static,
    LF: std::future::Future<Output = ()> + Send,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<Reply, Reply>>();
    tokio::spawn(async move {
        let answer = work.await;
        // The caller stopped waiting (its receiver is gone): deliver it the other way.
        if let Err(Ok(reply) | Err(reply)) = tx.send(answer) {
            late(reply).await;
        }
    });
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Reply::error(
            "the answer could not be built (an internal task stopped); try again",
        )),
        Err(_) => Ok(pending),
    }
}

impl SlackApp {
    /// Adds the run's Q&A and learnings to its summary; when they cannot be read, says so
    /// instead (the rest of the summary is still worth showing).
    pub(crate) async fn add_qa(&self, reply: &mut Reply, run_id: &str) {
        let read = async {
            let q = self.store.questions(run_id).await?;
            let l = self.store.learnings(run_id).await?;
            Ok::<_, crate::store::StoreError>((q, l))
        };
        match read.await {
            Ok((q, l)) => qa_sections(reply, &q, &l),
            Err(e) => {
                warn!(error = %e, run_id, "cannot read the run's Q&A");
                reply.push(format!(
                    ":warning: The Q&A of `{run_id}` could not be read ({e}); ask again in a moment."
                ));
            }
        }
    }

    /// `/chaos summary week` (day, month, N days): the period that ends now. Only the runs the
    /// caller may see are counted (their workspace's; CLI runs for operators).
    ///
    /// A long period reads many journals; when that takes longer than [`INLINE_WAIT`], the
    /// caller is told it is on its way and gets it as an ephemeral message (Slack wants its
    /// answer within 3 s).
    pub(crate) async fn summary_period(
        &self,
        cmd: &SlashCommand,
        period: PeriodSpec,
    ) -> Result<Reply, Reply> {
        let store = self.store.clone();
        let cfg = self.cfg.clone();
        let (team, user, channel) = (
            cmd.team_id.clone(),
            cmd.user_id.clone(),
            cmd.channel_id.clone(),
        );
        let work = async move {
            let now = now_ms();
            let window = period.window_ending(now);
            let upcoming = Window {
                from_ms: now,
                to_ms: now + period.length_ms().min(7 * period::DAY_MS),
            };
            let keep = |r: &crate::store::RunRecord| {
                super::handlers::visible_to(&cfg.slack, r, &team, &user)
            };
            period::load_visible(&store, window, window.from_ms, upcoming, &keep)
                .await
                .map(|s| digest::period_reply(&s, &period.label()))
                .map_err(|e| {
                    warn!(error = %e, "cannot build a period summary");
                    Reply::error(format!(
                        "the runs of {} could not be read right now ({e}); try again in a moment",
                        period.label()
                    ))
                })
        };
        let store = self.store.clone();
        let user = cmd.user_id.clone();
        let late = move |reply: Reply| async move {
            let msg = OutboundMessage {
                thread_key: format!("ephemeral:{channel}:{user}"),
                channel: channel.clone(),
                action: OutboundAction::Ephemeral {
                    user: user.clone(),
                    in_thread_of: None,
                    text: blocks::truncate(&reply.text, blocks::MAX_TEXT_CHARS),
                    blocks: Some(json!(reply.blocks())),
                },
            };
            if let Err(e) = store.enqueue(&[msg], None).await {
                warn!(error = %e, "cannot queue a late period summary");
            }
        };
        let pending = Reply::simple(format!(
            ":hourglass_flowing_sand: Counting the runs of {}… the summary appears here in a moment.",
            period.label()
        ));
        answer_within(INLINE_WAIT, work, late, pending).await
    }

    /// `/chaos report <run>`: the learning record posted in the channel as markdown messages
    /// (as many as it takes), or uploaded as a file.
    pub(crate) async fn report(
        &self,
        cmd: &SlashCommand,
        id: &str,
        as_file: bool,
    ) -> Result<Reply, Reply> {
        let run = self
            .visible_run(id, &cmd.team_id, &cmd.user_id)
            .await
            .map_err(Reply::error)?;
        let read = async {
            let j = self.store.journal(&run.id, 0).await?;
            let q = self.store.questions(&run.id).await?;
            let l = self.store.learnings(&run.id).await?;
            Ok::<_, crate::store::StoreError>((j, q, l))
        };
        let (journal, questions, learnings) = read.await.map_err(|e| {
            warn!(error = %e, run_id = id, "cannot read a run for its report");
            Reply::error(format!(
                "the record of `{id}` could not be read right now ({e}); try again"
            ))
        })?;
        let rec = record::build(&run, &journal, &questions, &learnings, now_ms());
        let md = record::to_markdown(&rec);
        if as_file {
            return self.upload_report(cmd, &run.id, md).await;
        }
        let pages = digest::markdown_messages(&md);
        let text = format!("Learning record of run {} ({})", run.id, run.experiment);
        let thread_key = format!("report:{}:{}:{}", run.id, cmd.channel_id, now_ms());
        let messages: Vec<OutboundMessage> = pages
            .iter()
            .map(|page| OutboundMessage {
                thread_key: thread_key.clone(),
                channel: cmd.channel_id.clone(),
                action: OutboundAction::Post {
                    key: None,
                    in_thread_of: None,
                    text: text.clone(),
                    blocks: Some(page.clone()),
                },
            })
            .collect();
        self.store.enqueue(&messages, None).await.map_err(|e| {
            warn!(error = %e, run_id = id, "cannot queue the report");
            Reply::error(format!(
                "the record of `{id}` could not be queued for posting ({e}); try again, or tell {}",
                auth::whom_to_ask(&self.cfg.slack)
            ))
        })?;
        Ok(Reply::simple(format!(
            ":page_facing_up: Posting the learning record of `{id}` in this channel ({} message(s)). `report {id} as file` uploads it as a markdown file instead.",
            messages.len()
        )))
    }

    /// Uploads the record through Slack's external upload flow, in the background (three
    /// calls do not fit Slack's 3 s for the answer).
    async fn upload_report(
        &self,
        cmd: &SlashCommand,
        run_id: &str,
        md: String,
    ) -> Result<Reply, Reply> {
        let api = self.api.clone();
        let channel = cmd.channel_id.clone();
        let user = cmd.user_id.clone();
        let store = self.store.clone();
        let run = run_id.to_string();
        tokio::spawn(async move {
            let filename = format!("chaosbot-{run}.md");
            let title = format!("Learning record of run {run}");
            if let Err(e) = crate::slack::api::upload_file(
                api.as_ref(),
                &channel,
                &filename,
                &title,
                md.as_bytes(),
            )
            .await
            {
                warn!(error = %e, run_id = %run, "cannot upload the report file");
                let reply = Reply::error(format!(
                    "the record of `{run}` could not be uploaded as a file ({e}); `report {run}` posts it as messages instead"
                ));
                let msg = OutboundMessage {
                    thread_key: format!("ephemeral:{channel}:{user}"),
                    channel: channel.clone(),
                    action: OutboundAction::Ephemeral {
                        user: user.clone(),
                        in_thread_of: None,
                        text: reply.text.clone(),
                        blocks: Some(json!(reply.blocks())),
                    },
                };
                if let Err(e) = store.enqueue(&[msg], None).await {
                    warn!(error = %e, "cannot queue the upload error message");
                }
            }
        });
        Ok(Reply::simple(format!(
            ":page_facing_up: Uploading the learning record of `{run_id}` to this channel as `chaosbot-{run_id}.md`…"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn quick_answers_inline_slow_ones_later() {
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = got.clone();
        let late = move |r: Reply| async move { sink.lock().unwrap().push(r.text) };
        let quick = answer_within(
            Duration::from_secs(5),
            async { Ok(Reply::simple("done")) },
            late,
            Reply::simple("pending"),
        )
        .await;
        assert_eq!(quick.unwrap().text, "done");

        let sink = got.clone();
        let late = move |r: Reply| async move { sink.lock().unwrap().push(r.text) };
        let slow = answer_within(
            Duration::from_millis(50),
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err(Reply::simple("slow but here"))
            },
            late,
            Reply::simple("pending"),
        )
        .await;
        assert_eq!(slow.unwrap().text, "pending");
        for _ in 0..200 {
            if !got.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(*got.lock().unwrap(), ["slow but here"], "only the late one");
    }
}
