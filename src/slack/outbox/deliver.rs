//! Delivering one claimed thread head: resolve the keys it refers to, coalesce updates, call
//! Slack, and settle the row (delivered, rescheduled or failed).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::pacing::{backoff, millis};
use super::{Shared, metric};
use crate::run::now_ms;
use crate::slack::api::ApiError;
use crate::store::outbox::{Delivered, OutboundAction, OutboxRow, PostSlot};
use crate::store::{StoreError, StoreResult};

/// What a 429 for `method` holds: Slack limits `chat.postMessage` per channel (about one a
/// second in each, its "special" tier in the method's documentation) and the other methods
/// per workspace (their tier), so a post's 429 holds posts to that channel only, and one
/// busy channel does not stall the threads of the others. (A workspace-wide limit, if hit,
/// then answers each channel's next post with a 429 of its own.)
fn hold_key(method: &str, channel: &str) -> String {
    if method == "chat.postMessage" {
        format!("{method} in {channel}")
    } else {
        method.to_string()
    }
}

/// Slack's answers to a bot token it does not take (errors every Web API method can give):
/// no message is at fault and the operator can fix the token, so rows wait for that instead
/// of failing; a restart with a valid token delivers them.
fn token_refused(error: &str) -> bool {
    matches!(
        error,
        "not_authed" | "invalid_auth" | "account_inactive" | "token_revoked" | "token_expired"
    )
}

/// The Web API method that delivers an action (the store keeps only its kind).
pub(crate) fn web_api_method(action: &OutboundAction) -> &'static str {
    match action {
        OutboundAction::Post { .. } => "chat.postMessage",
        OutboundAction::Update { .. } => "chat.update",
        OutboundAction::Ephemeral { .. } => "chat.postEphemeral",
        OutboundAction::Reaction { .. } => "reactions.add",
        // The flow's last call, the one that shares the file (and is rate limited per method).
        OutboundAction::Upload { .. } => "files.completeUploadExternal",
    }
}

/// How long to wait for a parent queued in another thread before looking again.
const DEPENDENCY_POLL_MS: i64 = 500;

/// What a row needs before it can be sent.
enum Prepared {
    Send(Call),
    /// Nothing to send: Slack already shows a newer revision of the message. These rows are
    /// settled as superseded.
    Skip(Vec<i64>),
    /// Not yet: try again at `until` (no call made, no attempt counted).
    Wait {
        until: i64,
        why: String,
    },
    /// Never: the row depends on a message that will not exist.
    Fail(String),
}

struct Call {
    method: &'static str,
    body: Value,
    /// An upload: the file's bytes; `body` then holds `channel`, `thread_ts`, `filename` and
    /// `title` for the external upload flow.
    file: Option<Vec<u8>>,
    /// The row whose content is sent (the newest of coalesced updates).
    sent_id: i64,
    superseded: Vec<i64>,
    /// The revision an update shows (the newest of the coalesced ones).
    revision: Option<i64>,
}

fn update_revision(action: &OutboundAction) -> Option<i64> {
    match action {
        OutboundAction::Update { revision, .. } => *revision,
        _ => None,
    }
}

/// Resolution of a message key to (channel, ts).
enum Resolved {
    Found {
        channel: String,
        ts: String,
        last_update_ms: Option<i64>,
        revision: Option<i64>,
    },
    Wait(String),
    Fail(String),
}

async fn resolve(shared: &Shared, key: &str) -> StoreResult<Resolved> {
    if let Some(m) = shared.store.message_ref(key).await? {
        return Ok(Resolved::Found {
            channel: m.channel,
            ts: m.ts,
            last_update_ms: m.last_update_ms,
            revision: m.revision,
        });
    }
    if shared.store.post_pending(key).await? {
        return Ok(Resolved::Wait(format!(
            "waiting for message `{key}` to be posted"
        )));
    }
    Ok(Resolved::Fail(format!(
        "depends on message `{key}`, which was never delivered (its post failed or was never queued)"
    )))
}

/// Resolves an optional `in_thread_of` into a `thread_ts`.
async fn thread_ts(
    shared: &Shared,
    parent: Option<&str>,
    now: i64,
) -> StoreResult<Result<Option<String>, Prepared>> {
    let Some(parent) = parent else {
        return Ok(Ok(None));
    };
    Ok(match resolve(shared, parent).await? {
        Resolved::Found { ts, .. } => Ok(Some(ts)),
        Resolved::Wait(why) => Err(Prepared::Wait {
            until: now + DEPENDENCY_POLL_MS,
            why,
        }),
        Resolved::Fail(why) => Err(Prepared::Fail(why)),
    })
}

fn with_blocks(mut body: Value, blocks: &Option<Value>) -> Value {
    if let (Some(blocks), Some(obj)) = (blocks, body.as_object_mut()) {
        obj.insert("blocks".into(), blocks.clone());
    }
    body
}

async fn prepare(shared: &Shared, row: &OutboxRow, now: i64) -> StoreResult<Prepared> {
    let method = web_api_method(&row.action);
    Ok(match &row.action {
        OutboundAction::Post {
            in_thread_of,
            text,
            blocks,
            ..
        } => {
            let ts = match thread_ts(shared, in_thread_of.as_deref(), now).await? {
                Ok(ts) => ts,
                Err(p) => return Ok(p),
            };
            let mut body = json!({
                "channel": row.channel,
                "text": text,
                "metadata": post_metadata(row),
            });
            if let Some(ts) = ts {
                body["thread_ts"] = json!(ts);
            }
            Prepared::Send(Call {
                method,
                body: with_blocks(body, blocks),
                sent_id: row.id,
                superseded: vec![],
                revision: None,
                file: None,
            })
        }
        OutboundAction::Ephemeral {
            user,
            in_thread_of,
            text,
            blocks,
        } => {
            let ts = match thread_ts(shared, in_thread_of.as_deref(), now).await? {
                Ok(ts) => ts,
                Err(p) => return Ok(p),
            };
            let mut body = json!({"channel": row.channel, "user": user, "text": text});
            if let Some(ts) = ts {
                body["thread_ts"] = json!(ts);
            }
            Prepared::Send(Call {
                method,
                body: with_blocks(body, blocks),
                sent_id: row.id,
                superseded: vec![],
                revision: None,
                file: None,
            })
        }
        OutboundAction::Reaction { key, name } => match resolve(shared, key).await? {
            Resolved::Found { channel, ts, .. } => Prepared::Send(Call {
                method,
                body: json!({"channel": channel, "timestamp": ts, "name": name}),
                sent_id: row.id,
                superseded: vec![],
                revision: None,
                file: None,
            }),
            Resolved::Wait(why) => Prepared::Wait {
                until: now + DEPENDENCY_POLL_MS,
                why,
            },
            Resolved::Fail(why) => Prepared::Fail(why),
        },
        OutboundAction::Update { key, .. } => match resolve(shared, key).await? {
            Resolved::Found {
                channel,
                ts,
                last_update_ms,
                revision: shown,
            } => {
                // At most one chat.update per message per window: a later update waits.
                let window = millis(shared.opts.update_interval);
                if let Some(last) = last_update_ms
                    && last + window > now
                {
                    return Ok(Prepared::Wait {
                        until: last + window,
                        why: format!("pacing updates of `{key}`"),
                    });
                }
                // Coalesce: send the newest pending update of this key, skip the ones between.
                // Only updates are skipped, so no post this update depends on is overtaken.
                // Newest is the highest revision when the updates carry one (renders queued
                // by several replicas), else the last queued.
                let newer = shared
                    .store
                    .newer_updates(&row.thread_key, key, row.id)
                    .await?;
                let newest = std::iter::once(row)
                    .chain(newer.iter())
                    .max_by_key(|r| (update_revision(&r.action), r.id))
                    .unwrap_or(row);
                let (sent_id, action) = (newest.id, &newest.action);
                let all = std::iter::once(row.id).chain(newer.iter().map(|r| r.id));
                let revision = update_revision(action);
                if revision.is_some() && revision <= shown {
                    return Ok(Prepared::Skip(all.collect()));
                }
                let superseded: Vec<i64> = all.filter(|&id| id != sent_id).collect();
                let OutboundAction::Update { text, blocks, .. } = action else {
                    return Err(StoreError::Corrupt(format!(
                        "outbox row {sent_id} listed as an update is not one"
                    )));
                };
                Prepared::Send(Call {
                    method,
                    body: with_blocks(json!({"channel": channel, "ts": ts, "text": text}), blocks),
                    sent_id,
                    superseded,
                    revision,
                    file: None,
                })
            }
            Resolved::Wait(why) => Prepared::Wait {
                until: now + DEPENDENCY_POLL_MS,
                why,
            },
            Resolved::Fail(why) => Prepared::Fail(why),
        },
        OutboundAction::Upload {
            in_thread_of,
            filename,
            title,
            content_base64,
        } => {
            let ts = match thread_ts(shared, in_thread_of.as_deref(), now).await? {
                Ok(ts) => ts,
                Err(p) => return Ok(p),
            };
            use base64::Engine as _;
            let bytes = match base64::engine::general_purpose::STANDARD.decode(content_base64) {
                Ok(b) => b,
                Err(e) => {
                    return Ok(Prepared::Fail(format!(
                        "the file to upload is damaged: {e}"
                    )));
                }
            };
            Prepared::Send(Call {
                method,
                body: json!({"channel": row.channel, "thread_ts": ts, "filename": filename, "title": title}),
                sent_id: row.id,
                superseded: vec![],
                revision: None,
                file: Some(bytes),
            })
        }
    })
}

/// The message metadata every post carries: which outbox row it delivers, so a post whose
/// answer never came (or whose sender died mid-call) is found in Slack instead of sent twice.
/// (Message metadata: `event_type` and `event_payload`, Slack's "Message metadata" docs.)
const METADATA_EVENT: &str = "chaosbot_outbox_row";

fn post_metadata(row: &OutboxRow) -> Value {
    json!({
        "event_type": METADATA_EVENT,
        "event_payload": {"row": row.id, "thread": row.thread_key},
    })
}

/// What tells the message a call whose answer never came would have made.
enum SentMark<'a> {
    /// A post: the row in its metadata.
    Metadata,
    /// An upload (which carries no metadata): the file it shares.
    File(&'a str),
}

impl SentMark<'_> {
    fn is_on(&self, row: &OutboxRow, message: &Value) -> bool {
        match self {
            SentMark::Metadata => {
                let meta = &message["metadata"];
                meta["event_type"] == METADATA_EVENT
                    && meta["event_payload"]["row"] == json!(row.id)
                    && meta["event_payload"]["thread"] == json!(row.thread_key)
            }
            SentMark::File(id) => message["files"]
                .as_array()
                .is_some_and(|files| files.iter().any(|f| f["id"] == *id)),
        }
    }
}

/// Whether Slack already shows what `row` sends (by a call whose answer never came): the
/// message's ts, from the thread's replies (in a thread) or the channel's history since the
/// call started (at the top), found by its mark.
async fn already_sent(
    shared: &Shared,
    row: &OutboxRow,
    call: &Call,
    started_ms: i64,
    mark: SentMark<'_>,
) -> Result<Option<String>, ApiError> {
    let text = |k: &str| call.body.get(k).and_then(Value::as_str).map(str::to_string);
    let channel = text("channel").unwrap_or_else(|| row.channel.clone());
    let mut params = vec![
        ("channel", channel),
        ("include_all_metadata", "true".to_string()),
        ("limit", "1000".to_string()),
    ];
    let method = match text("thread_ts") {
        Some(ts) => {
            params.push(("ts", ts));
            "conversations.replies"
        }
        None => {
            // A minute of slack for clocks apart (ours and Slack's).
            let oldest = (started_ms / 1000).saturating_sub(60);
            params.push(("oldest", format!("{oldest}.000000")));
            "conversations.history"
        }
    };
    let answer = shared.api.call_get(method, &params).await?;
    let found = answer
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| mark.is_on(row, m))
        .and_then(|m| m.get("ts"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(found)
}

/// Makes the call(s) of a prepared row: one Web API call, or the three of an upload, whose
/// file id is recorded before the call that shares it.
async fn send(shared: &Shared, row: &OutboxRow, call: &Call) -> Result<Value, ApiError> {
    let Some(bytes) = &call.file else {
        return shared.api.call(call.method, call.body.clone()).await;
    };
    let text = |k: &str| call.body.get(k).and_then(Value::as_str).unwrap_or("");
    let api = shared.api.as_ref();
    let file_id = crate::slack::api::upload_unshared(api, text("filename"), bytes).await?;
    // Unrecorded, a lost answer to the share could not be looked up: not shared now (the file
    // stays unseen), so the next attempt uploads it anew.
    match shared
        .store
        .set_call_file(row.id, &shared.opts.owner, &file_id)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::Network("outbox claim lost before sharing".into())),
        Err(e) => {
            return Err(ApiError::Network(format!(
                "cannot record the uploaded file before sharing it: {e}"
            )));
        }
    }
    let thread_ts = call.body.get("thread_ts").and_then(Value::as_str);
    crate::slack::api::share_uploaded(api, &file_id, text("channel"), thread_ts, text("title"))
        .await?;
    Ok(json!({"ok": true, "file_id": file_id}))
}

/// Delivers one claimed row. Store errors are logged: the claim then lapses with its lease and
/// the row is tried again, so nothing is lost.
pub(super) async fn deliver(shared: Arc<Shared>, row: OutboxRow) {
    if let Err(e) = deliver_inner(&shared, &row).await {
        tracing::error!(row = row.id, thread = %row.thread_key, error = %e,
            "outbox store error; the row will be retried when its claim lapses");
    }
}

async fn deliver_inner(shared: &Shared, row: &OutboxRow) -> StoreResult<()> {
    let owner = shared.opts.owner.as_str();
    let now = now_ms();
    let method = web_api_method(&row.action);
    // A 429 any replica saw holds the method (posts: in that channel) for all of them.
    let held = hold_key(method, &row.channel);
    if let Some(left) = shared.store.method_held_for(&held).await? {
        tracing::trace!(row = row.id, method, left, "method held after a 429");
        shared
            .store
            .reschedule(row.id, owner, now + left, None, false)
            .await?;
        return Ok(());
    }
    let call = match prepare(shared, row, now).await? {
        Prepared::Send(call) => call,
        Prepared::Skip(rows) => {
            tracing::debug!(
                row = row.id,
                skipped = rows.len(),
                "Slack already shows a newer revision; nothing sent"
            );
            shared
                .store
                .mark_delivered(Delivered {
                    claimed_id: row.id,
                    owner,
                    now_ms: now,
                    sent_id: row.id,
                    superseded: rows,
                    posted: None,
                    updated_key: None,
                    revision: None,
                })
                .await?;
            return Ok(());
        }
        Prepared::Wait { until, why } => {
            tracing::trace!(row = row.id, %why, "outbox row waits");
            shared
                .store
                .reschedule(row.id, owner, until, None, false)
                .await?;
            return Ok(());
        }
        Prepared::Fail(why) => {
            tracing::error!(row = row.id, thread = %row.thread_key, method, reason = %why,
                "Slack message cannot be delivered");
            shared.store.mark_failed(row.id, owner, &why).await?;
            metric::delivered(method, "failed_dependency");
            return Ok(());
        }
    };

    // About one post per second per channel (Slack's limit for chat.postMessage), counted
    // across replicas. Slots go in the order asked for, so a channel's posts keep their order
    // across threads; a slot a little ahead is waited for here, one further off later.
    if method == "chat.postMessage" {
        let interval = millis(shared.opts.post_interval);
        let max_wait = interval.saturating_mul(2).max(1000);
        match shared
            .store
            .take_post_slot(&row.channel, interval, shared.opts.post_burst, max_wait)
            .await?
        {
            PostSlot::Reserved { in_ms } if in_ms > 0 => {
                tracing::trace!(row = row.id, channel = %row.channel, in_ms, "pacing posts");
                tokio::time::sleep(Duration::from_millis(u64::try_from(in_ms).unwrap_or(0))).await;
            }
            PostSlot::Reserved { .. } => {}
            PostSlot::Busy { retry_in_ms } => {
                tracing::trace!(row = row.id, channel = %row.channel, retry_in_ms,
                    "no post slot near enough; asking again later");
                shared
                    .store
                    .reschedule(row.id, owner, now + retry_in_ms, None, false)
                    .await?;
                return Ok(());
            }
        }
    }

    // A post or an upload is not idempotent: one that may have reached Slack (no answer came,
    // or its process died mid-call) is looked for before it is made again, and every such call
    // is recorded as started before it is made. (An upload is looked for only once it had a
    // file to share.)
    let upload = call.file.is_some();
    if method == "chat.postMessage" || upload {
        let mark = match &row.call_file_id {
            Some(id) if upload => Some(SentMark::File(id)),
            _ if upload => None,
            _ => Some(SentMark::Metadata),
        };
        if let (Some(started), Some(mark)) = (row.call_started_ms, mark) {
            match already_sent(shared, row, &call, started, mark).await {
                Ok(Some(ts)) => {
                    tracing::info!(row = row.id, method, %ts,
                        "Slack already shows this message (its answer was lost); not sending it again");
                    let answer = json!({"ok": true, "channel": row.channel, "ts": ts});
                    return settle_ok(shared, row, &call, &answer, now_ms()).await;
                }
                Ok(None) => {}
                Err(ApiError::Refused(e)) if token_refused(&e) => {
                    return token_wait(shared, row, now, &e).await;
                }
                // Without the history scope (or access to the channel) it cannot be looked
                // up: sent again, as before (a line twice rather than none).
                Err(ApiError::Refused(e)) => {
                    tracing::warn!(row = row.id, error = %e,
                        "cannot look up whether an unanswered message reached Slack; sending it again");
                }
                Err(e) => {
                    let wait = retry_later(shared, row, now, &e).await?;
                    tracing::warn!(row = row.id, error = %e, ?wait,
                        "cannot look up whether an unanswered message reached Slack; retrying");
                    return Ok(());
                }
            }
        }
        if !shared
            .store
            .set_call_started(row.id, owner, Some(now_ms()))
            .await?
        {
            tracing::warn!(row = row.id, "outbox claim lost before the call");
            return Ok(());
        }
    }

    // The API enforces its own timeout; this outer one guards any SlackApi implementation.
    let answer =
        match tokio::time::timeout(shared.opts.call_timeout, send(shared, row, &call)).await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::Network(format!(
                "no answer within {:?}",
                shared.opts.call_timeout
            ))),
        };
    let now = now_ms();
    match answer {
        Ok(answer) => settle_ok(shared, row, &call, &answer, now).await,
        // Reacting twice is not a failure: the reaction is there.
        Err(ApiError::Refused(e)) if method == "reactions.add" && e == "already_reacted" => {
            settle_ok(shared, row, &call, &Value::Null, now).await
        }
        Err(ApiError::RateLimited { retry_after }) => {
            let until = now + millis(retry_after);
            // Not carried out: the next attempt need not look for it.
            shared.store.set_call_started(row.id, owner, None).await?;
            shared.store.hold_method(&held, millis(retry_after)).await?;
            metric::retried("rate_limited");
            tracing::warn!(
                row = row.id,
                method,
                ?retry_after,
                "Slack rate limit; waiting"
            );
            shared
                .store
                .reschedule(row.id, owner, until, Some("rate limited"), true)
                .await?;
            Ok(())
        }
        Err(e @ (ApiError::Network(_) | ApiError::Server(_))) => {
            let reason = if matches!(e, ApiError::Network(_)) {
                "network"
            } else {
                // An HTTP error status: Slack did not carry the call out.
                shared.store.set_call_started(row.id, owner, None).await?;
                "server"
            };
            let wait = retry_later(shared, row, now, &e).await?;
            metric::retried(reason);
            tracing::warn!(row = row.id, method, error = %e, ?wait, attempts = row.attempts + 1,
                "Slack call failed; retrying");
            Ok(())
        }
        Err(ApiError::Refused(e)) if token_refused(&e) => {
            // Not carried out: the next attempt need not look for it.
            shared.store.set_call_started(row.id, owner, None).await?;
            token_wait(shared, row, now, &e).await
        }
        Err(ApiError::Refused(e)) => {
            tracing::error!(row = row.id, thread = %row.thread_key, method, error = %e,
                "Slack refused a message; it is marked failed");
            metric::delivered(method, "refused");
            shared
                .store
                .mark_failed(row.id, owner, &format!("Slack refused {method}: {e}"))
                .await?;
            Ok(())
        }
    }
}

/// A row whose call Slack refused for the bot token: back to wait, with the backoff of a
/// failed attempt, saying what to fix.
async fn token_wait(shared: &Shared, row: &OutboxRow, now: i64, error: &str) -> StoreResult<()> {
    let e = ApiError::Refused(error.to_string());
    let wait = retry_later(shared, row, now, &e).await?;
    metric::retried("token_refused");
    tracing::error!(row = row.id, thread = %row.thread_key, error, ?wait,
        "Slack does not take the bot token: set a valid [slack] bot_token (or SLACK_BOT_TOKEN) and restart; the message waits, nothing is lost");
    Ok(())
}

/// Puts a claimed row back after a failed attempt, due after the jittered backoff of its
/// attempts so far; the wait.
async fn retry_later(
    shared: &Shared,
    row: &OutboxRow,
    now: i64,
    error: &ApiError,
) -> StoreResult<Duration> {
    let wait = backoff(
        row.attempts + 1,
        shared.opts.backoff_base,
        shared.opts.backoff_max,
    );
    shared
        .store
        .reschedule(
            row.id,
            &shared.opts.owner,
            now + millis(wait),
            Some(&error.to_string()),
            true,
        )
        .await?;
    Ok(wait)
}

async fn settle_ok(
    shared: &Shared,
    row: &OutboxRow,
    call: &Call,
    answer: &Value,
    now: i64,
) -> StoreResult<()> {
    let method = call.method;
    let (posted_key, updated_key) = match &row.action {
        OutboundAction::Post { key, .. } => (key.as_deref(), None),
        OutboundAction::Update { key, .. } => (None, Some(key.as_str())),
        _ => (None, None),
    };

    let ts = answer.get("ts").and_then(Value::as_str);
    let channel = answer
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or(&row.channel);
    let posted = match (posted_key, ts) {
        (Some(key), Some(ts)) => Some((key, channel, ts)),
        (Some(key), None) => {
            // Delivered, but replies to it cannot be threaded; they will fail with a reason.
            tracing::error!(row = row.id, key, "chat.postMessage answered without a ts");
            None
        }
        _ => None,
    };
    let recorded = shared
        .store
        .mark_delivered(Delivered {
            claimed_id: row.id,
            owner: &shared.opts.owner,
            now_ms: now,
            sent_id: call.sent_id,
            superseded: call.superseded.clone(),
            posted,
            updated_key,
            revision: call.revision,
        })
        .await?;
    if recorded {
        metric::delivered(method, "ok");
        if !call.superseded.is_empty() {
            tracing::debug!(
                row = row.id,
                coalesced = call.superseded.len(),
                "updates coalesced"
            );
        }
    } else {
        // Our lease lapsed mid-call and another replica took the row over.
        tracing::warn!(row = row.id, method, "outbox claim lost during delivery");
    }
    Ok(())
}
