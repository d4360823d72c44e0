//! A fake Slack Web API (and Socket Mode endpoint) on loopback, for end-to-end tests.
//!
//! ```ignore
//! let slack = FakeSlack::start().await;
//! let api = HttpSlackApi::new(&slack.url(), "xoxb-test")?;   // url() ends in `/`
//! slack.rate_limit_next(1, Some("chat.postMessage"), 2);     // 429 + Retry-After: 2
//! slack.wait_for(|calls| calls.len() >= 3, Duration::from_secs(5)).await;
//! ```
//!
//! Every call is recorded (method, parsed JSON or form body, headers, when, what was answered).
//! Faults apply to the next N matching calls: 429 with `Retry-After`, an HTTP status, a hang,
//! or `ok: false`; a hang answers late what was already done (a post is in the channel
//! at once). Posted messages are kept and shown by `conversations.history` and
//! `conversations.replies` (with their metadata). Socket Mode: `apps.connections.open` answers with `ws://…/socket` on the same
//! server; the test pushes envelopes with `push` and reads what the client sent with `acks`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// JSON body, or a form body as a JSON object of strings; `{}` when empty.
    pub body: Value,
    /// Header names lower-case.
    pub headers: BTreeMap<String, String>,
    pub at: Instant,
    /// The HTTP status the fake answered (0 if it was still hanging).
    pub status: u16,
}

impl Call {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: secs`.
    RateLimit { retry_after_secs: u64 },
    /// This HTTP status with a plain-text body.
    Status(u16),
    /// Answer normally, but only after this long.
    Hang(Duration),
    /// HTTP 200 `{"ok": false, "error": error}`.
    Refuse(String),
}

struct Rule {
    method: Option<String>,
    remaining: usize,
    fault: Fault,
}

enum SocketOut {
    Text(String),
    Close,
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    rules: Mutex<Vec<Rule>>,
    refused_channels: Mutex<BTreeMap<String, String>>,
    ts: AtomicU64,
    changed: Notify,
    sockets: Mutex<Vec<mpsc::UnboundedSender<SocketOut>>>,
    received: Mutex<Vec<Value>>,
    connections: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
    /// Bytes POSTed to upload URLs handed out by `files.getUploadURLExternal`, by file id.
    uploads: Mutex<BTreeMap<String, Vec<u8>>>,
    files: AtomicU64,
    /// `rate_limit_every`: (N, Retry-After seconds); every Nth call answers 429.
    rate_limit_every: Mutex<Option<(u32, u64)>>,
    counted: AtomicU64,
    /// Messages posted (`chat.postMessage` answered ok): channel, ts, thread_ts, text,
    /// metadata, as `conversations.history` and `conversations.replies` show them.
    messages: Mutex<Vec<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct FakeSlack {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        *lock(&inner.addr) = Some(addr);
        let app = Router::new()
            .route("/api/{method}", any(api))
            .route("/socket", get(socket))
            .route("/upload/{file_id}", axum::routing::post(upload))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack {
            addr,
            inner,
            server,
        }
    }

    /// Web API base URL, ending in `/` (use as `SLACK_API_URL`).
    pub fn url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    pub fn socket_url(&self) -> String {
        format!("ws://{}/socket", self.addr)
    }

    /// What was uploaded to each file id (external upload flow).
    pub fn uploads(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.inner.uploads).clone()
    }

    /// The messages posted, in order (what `conversations.history` would show, with replies).
    pub fn messages(&self) -> Vec<Value> {
        lock(&self.inner.messages).clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Answers the next `n` calls (of `method`, or of any method) with `fault`.
    pub fn fault_next(&self, n: usize, method: Option<&str>, fault: Fault) {
        lock(&self.inner.rules).push(Rule {
            method: method.map(str::to_string),
            remaining: n,
            fault,
        });
    }

    pub fn rate_limit_next(&self, n: usize, method: Option<&str>, retry_after_secs: u64) {
        self.fault_next(n, method, Fault::RateLimit { retry_after_secs });
    }

    pub fn fail_next(&self, n: usize, method: Option<&str>, status: u16) {
        self.fault_next(n, method, Fault::Status(status));
    }

    pub fn hang_next(&self, n: usize, method: Option<&str>, delay: Duration) {
        self.fault_next(n, method, Fault::Hang(delay));
    }

    pub fn refuse_next(&self, n: usize, method: Option<&str>, error: &str) {
        self.fault_next(n, method, Fault::Refuse(error.to_string()));
    }

    /// From now on every `n`th call (counted over all methods) answers 429 with
    /// `Retry-After: retry_after_secs`; `None` turns it off.
    pub fn rate_limit_every(&self, n: Option<u32>, retry_after_secs: u64) {
        *lock(&self.inner.rate_limit_every) = n.filter(|&n| n > 0).map(|n| (n, retry_after_secs));
        self.inner.counted.store(0, Ordering::SeqCst);
    }

    /// Every call naming `channel` answers `ok: false` with `error` (e.g. `channel_not_found`).
    pub fn refuse_channel(&self, channel: &str, error: &str) {
        lock(&self.inner.refused_channels).insert(channel.into(), error.into());
    }

    /// Removes pending faults.
    pub fn heal(&self) {
        lock(&self.inner.rules).clear();
    }

    /// The calls once `pred` holds, or `None` after `timeout`.
    pub async fn try_wait_for(
        &self,
        pred: impl Fn(&[Call]) -> bool,
        timeout: Duration,
    ) -> Option<Vec<Call>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            let calls = self.calls();
            if pred(&calls) {
                return Some(calls);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            // Also wake periodically: a Notify registered late must not cost the whole timeout.
            let step = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(step, changed).await;
        }
    }

    /// Like [`FakeSlack::try_wait_for`], panicking with the calls seen on timeout.
    pub async fn wait_for(&self, pred: impl Fn(&[Call]) -> bool, timeout: Duration) -> Vec<Call> {
        match self.try_wait_for(pred, timeout).await {
            Some(calls) => calls,
            None => panic!(
                "fake Slack: condition not met within {timeout:?}; calls: {:#?}",
                self.calls()
                    .iter()
                    .map(|c| (c.method.clone(), c.status, c.body.clone()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    // ---- Socket Mode ----

    /// WebSocket connections accepted so far.
    pub fn socket_connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Sends a JSON message (an envelope) to every connected socket client; returns how many.
    pub fn push(&self, envelope: Value) -> usize {
        let text = envelope.to_string();
        let mut sockets = lock(&self.inner.sockets);
        sockets.retain(|s| s.send(SocketOut::Text(text.clone())).is_ok());
        sockets.len()
    }

    /// Closes every connected socket (the client should reconnect).
    pub fn close_sockets(&self) {
        for s in lock(&self.inner.sockets).drain(..) {
            let _ = s.send(SocketOut::Close);
        }
    }

    /// Every JSON message received from socket clients (acks), in order.
    pub fn acks(&self) -> Vec<Value> {
        lock(&self.inner.received).clone()
    }

    /// Waits for the ack of `envelope_id`.
    pub async fn wait_for_ack(&self, envelope_id: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self
                .acks()
                .into_iter()
                .find(|a| a.get("envelope_id").and_then(Value::as_str) == Some(envelope_id));
            if found.is_some() {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` socket clients have connected in total.
    pub async fn wait_for_connections(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.socket_connections() < n || lock(&self.inner.sockets).is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    if body.is_empty() {
        return json!({});
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        return Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        );
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

fn take_fault(inner: &Inner, method: &str) -> Option<Fault> {
    let mut rules = lock(&inner.rules);
    let i = rules
        .iter()
        .position(|r| r.remaining > 0 && r.method.as_deref().is_none_or(|m| m == method))?;
    rules[i].remaining -= 1;
    let fault = rules[i].fault.clone();
    if rules[i].remaining == 0 {
        rules.remove(i);
    }
    Some(fault)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The upload URL of the external upload flow: keeps the bytes, answers like Slack (plain text).
async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> Response {
    let len = body.len();
    lock(&inner.uploads).insert(file_id, body.to_vec());
    inner.changed.notify_waiters();
    (StatusCode::OK, format!("OK - {len}")).into_response()
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // GET calls carry their arguments in the query string.
    let mut parsed = parse_body(&headers, &body);
    if let (Some(q), Value::Object(map)) = (query, &mut parsed) {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&q).unwrap_or_default();
        for (k, v) in pairs {
            map.entry(k).or_insert(Value::String(v));
        }
    }
    let call = Call {
        method: method.clone(),
        body: parsed,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        at: Instant::now(),
        status: 0,
    };
    let index = {
        let mut calls = lock(&inner.calls);
        calls.push(call.clone());
        calls.len() - 1
    };
    let every = *lock(&inner.rate_limit_every);
    let fault = match every {
        Some((n, retry_after_secs))
            if (inner.counted.fetch_add(1, Ordering::SeqCst) + 1) % u64::from(n) == 0 =>
        {
            Some(Fault::RateLimit { retry_after_secs })
        }
        _ => take_fault(&inner, &method),
    };
    let response = match fault {
        Some(Fault::RateLimit { retry_after_secs }) => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"ok": false, "error": "ratelimited"}),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_secs.to_string().parse().unwrap(),
            );
            r
        }
        Some(Fault::Status(s)) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "fake Slack outage",
        )
            .into_response(),
        Some(Fault::Refuse(error)) => {
            json_response(StatusCode::OK, json!({"ok": false, "error": error}))
        }
        // A hang is a late answer: what the call does is done now (a post is in the channel).
        Some(Fault::Hang(d)) => {
            let done = answer(&inner, &method, &call.body);
            tokio::time::sleep(d).await;
            done
        }
        None => answer(&inner, &method, &call.body),
    };
    lock(&inner.calls)[index].status = response.status().as_u16();
    inner.changed.notify_waiters();
    response
}

fn answer(inner: &Inner, method: &str, body: &Value) -> Response {
    let channel = body.get("channel").and_then(Value::as_str).unwrap_or("");
    if let Some(error) = lock(&inner.refused_channels).get(channel) {
        return json_response(StatusCode::OK, json!({"ok": false, "error": error}));
    }
    let next_ts = || {
        let n = inner.ts.fetch_add(1, Ordering::SeqCst) + 1;
        // As Slack's: the time of posting in seconds, then a part unique to the message.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        format!("{secs}.{:06}", n % 1_000_000)
    };
    let out = match method {
        "chat.postMessage" => {
            let ts = next_ts();
            lock(&inner.messages).push(json!({
                "channel": channel,
                "ts": ts,
                "thread_ts": body.get("thread_ts"),
                "text": body.get("text"),
                "metadata": body.get("metadata"),
            }));
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": body.get("text")}})
        }
        "conversations.history" | "conversations.replies" => {
            let arg = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (thread, oldest) = (arg("ts"), arg("oldest"));
            let messages: Vec<Value> = lock(&inner.messages)
                .iter()
                .filter(|m| m["channel"] == channel)
                .filter(|m| {
                    let ts = m["ts"].as_str().unwrap_or("");
                    if method == "conversations.replies" {
                        ts == thread || m["thread_ts"].as_str() == Some(thread.as_str())
                    } else {
                        m["thread_ts"].is_null() && ts >= oldest.as_str()
                    }
                })
                .cloned()
                .collect();
            json!({"ok": true, "messages": messages, "has_more": false})
        }
        "chat.update" => {
            json!({"ok": true, "channel": channel, "ts": body.get("ts"), "text": body.get("text")})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": next_ts()}),
        "reactions.add" => json!({"ok": true}),
        "files.getUploadURLExternal" => {
            if body.get("filename").is_none() || body.get("length").is_none() {
                json!({"ok": false, "error": "invalid_arguments"})
            } else {
                let n = inner.files.fetch_add(1, Ordering::SeqCst) + 1;
                let addr = lock(&inner.addr).map(|a| a.to_string()).unwrap_or_default();
                let id = format!("F{n:08}");
                json!({"ok": true, "upload_url": format!("http://{addr}/upload/{id}"), "file_id": id})
            }
        }
        "files.completeUploadExternal" => {
            let files = body.get("files").cloned().unwrap_or(json!([]));
            let known = files.as_array().is_some_and(|fs| {
                !fs.is_empty()
                    && fs.iter().all(|f| {
                        f["id"]
                            .as_str()
                            .is_some_and(|id| lock(&inner.uploads).contains_key(id))
                    })
            });
            if known {
                // Shared as a message carrying the files, in the thread when given one.
                let ts = next_ts();
                lock(&inner.messages).push(json!({
                    "channel": body.get("channel_id"),
                    "ts": ts,
                    "thread_ts": body.get("thread_ts"),
                    "text": "",
                    "files": files,
                }));
                json!({"ok": true, "files": files})
            } else {
                json!({"ok": false, "error": "file_not_found"})
            }
        }
        "views.open" | "views.update" | "views.push" => {
            json!({"ok": true, "view": {"id": "V0FAKE", "hash": "fake"}})
        }
        "auth.test" => json!({
            "ok": true, "url": "https://fake.slack.test/", "team": "Fake", "user": "chaosbot",
            "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"
        }),
        "apps.connections.open" => {
            let addr = lock(&inner.addr).map(|a| a.to_string()).unwrap_or_default();
            json!({"ok": true, "url": format!("ws://{addr}/socket")})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    json_response(StatusCode::OK, out)
}

/// A WebSocket endpoint done by hand: upgrade the connection, then speak tungstenite over it.
async fn socket(State(inner): State<Arc<Inner>>, mut req: Request) -> Response {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return (StatusCode::BAD_REQUEST, "not a websocket request").into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        serve_socket(inner, ws).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .body(Body::empty())
        .unwrap()
}

async fn serve_socket<S>(inner: Arc<Inner>, ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}});
    if sink.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    lock(&inner.sockets).push(tx);
    inner.connections.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(SocketOut::Text(t)) => {
                    if sink.send(Message::text(t)).await.is_err() { break; }
                }
                Some(SocketOut::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        lock(&inner.received).push(v);
                    }
                }
                Some(Ok(Message::Ping(p))) => { let _ = sink.send(Message::Pong(p)).await; }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
