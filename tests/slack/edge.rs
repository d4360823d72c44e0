//! The Slack edge end to end: the router bound on loopback, real HTTP requests signed like
//! Slack signs them, payloads shaped like Slack's documented ones, a real SQLite store and a
//! real engine. The Web API is a recording stub; the outbox is observed through a store wrapper
//! (its delivery is built elsewhere).

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaosbot::config::{AllowRule, Config, Secret, SlackConfig};
use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::Event;
use chaosbot::run::{RollbackOutcome, RunState, Verdict};
use chaosbot::slack::SlackOrigin;
use chaosbot::slack::api::{ApiError, SlackApi};
use chaosbot::slack::edge::{SlackApp, http::router, verify};
use chaosbot::store::digest::{DigestRecord, DigestStore};
use chaosbot::store::learning::{Answer, LearningKind, LearningStore, NewQuestion};
use chaosbot::store::outbox::{OutboundAction, OutboundMessage};
use chaosbot::store::schedules::ScheduleStore;
use chaosbot::store::{
    AuditEntry, DynStore, EdgeStore, NewRun, OutboxQueue, RunFilter, RunRecord, RunStore, Store,
    StoreError, StoreResult,
};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "test-signing-secret";
const TEAM: &str = "T1";
const CHAOS_CHANNEL: &str = "CCHAOS";
const BOT: &str = "UBOT";

// ---------------------------------------------------------------------------------------------
// Test doubles

/// The real SQLite store, with enqueued outbox messages also recorded in order, and a switch
/// that makes `ping` fail. Every other call goes straight to the real store.
struct RecordingStore {
    inner: DynStore,
    enqueued: Mutex<Vec<OutboundMessage>>,
    fail_ping: AtomicBool,
}

chaosbot::forward_store!(RecordingStore => inner:
    RunStore, JournalStore, AbortStore, FaultStore, OutboxDelivery, EdgeStore, LearningStore,
    ScheduleStore, GamedayStore);

#[async_trait::async_trait]
impl OutboxQueue for RecordingStore {
    async fn enqueue(&self, m: &[OutboundMessage], c: Option<(&str, i64)>) -> StoreResult<()> {
        self.enqueued.lock().unwrap().extend_from_slice(m);
        self.inner.enqueue(m, c).await
    }
    async fn render_cursor(&self, run_id: &str) -> StoreResult<i64> {
        self.inner.render_cursor(run_id).await
    }
    async fn next_revision(&self, key: &str) -> StoreResult<i64> {
        self.inner.next_revision(key).await
    }
    async fn enqueue_rendered(
        &self,
        m: &[OutboundMessage],
        run_id: &str,
        epoch: u64,
        from: i64,
        to: i64,
    ) -> StoreResult<bool> {
        let fresh = self
            .inner
            .enqueue_rendered(m, run_id, epoch, from, to)
            .await?;
        if fresh {
            self.enqueued.lock().unwrap().extend_from_slice(m);
        }
        Ok(fresh)
    }
}

#[async_trait::async_trait]
impl DigestStore for RecordingStore {
    async fn enqueue_digest(
        &self,
        start: i64,
        end: i64,
        by: &str,
        m: &[OutboundMessage],
    ) -> StoreResult<bool> {
        let fresh = self.inner.enqueue_digest(start, end, by, m).await?;
        if fresh {
            self.enqueued.lock().unwrap().extend_from_slice(m);
        }
        Ok(fresh)
    }
    async fn digest(&self, start: i64) -> StoreResult<Option<DigestRecord>> {
        self.inner.digest(start).await
    }
}

#[async_trait::async_trait]
impl Store for RecordingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        if self.fail_ping.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("ping switched off by the test".into()));
        }
        self.inner.ping().await
    }
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<chaosbot::store::Change>> {
        self.inner.changes()
    }
}

/// Records Web API calls and answers `ok: true`.
#[derive(Default)]
struct RecordingApi {
    calls: Mutex<Vec<(String, Value)>>,
}

#[async_trait::async_trait]
impl SlackApi for RecordingApi {
    async fn call(&self, method: &str, body: Value) -> Result<Value, ApiError> {
        self.calls.lock().unwrap().push((method.to_string(), body));
        Ok(json!({"ok": true}))
    }
}

// ---------------------------------------------------------------------------------------------
// The rig

const API_LATENCY: &str = r#"
name: api-latency
title: The API tolerates a little latency
description: Adds latency between clients and the API.
owner: "@tests"
parameters:
  latency: {type: duration, default: 10ms, min: 0ms, max: 500ms, description: Added delay}
  duration: {type: duration, default: 300ms, min: 100ms, max: 5s}
hypothesis:
  recovery_timeout: 3s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 100ms
      timeout: 2s
method:
  - name: slow-api
    target: api
    fault: latency
    direction: downstream
    latency: ${latency}
    duration: ${duration}
"#;

const API_LONG: &str = r#"
name: api-long
title: A long latency run, for aborting
description: Long enough to abort.
owner: "@tests"
parameters:
  duration: {type: duration, default: 30s, min: 1s, max: 60s}
hypothesis:
  recovery_timeout: 3s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 100ms
      timeout: 2s
method:
  - name: slow-api
    target: api
    fault: latency
    direction: downstream
    latency: 5ms
    duration: ${duration}
"#;

struct Rig {
    base: String,
    engine: Arc<Engine>,
    store: Arc<RecordingStore>,
    api: Arc<RecordingApi>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    _service: Service,
    _dir: tempfile::TempDir,
}

fn slack_config() -> SlackConfig {
    SlackConfig {
        signing_secret: Some(Secret(SECRET.into())),
        team_id: Some(TEAM.into()),
        operators: vec!["UOP".into()],
        allow: vec![
            AllowRule {
                experiments: vec!["api-lat*".into()],
                users: vec![],
                channels: vec![CHAOS_CHANNEL.into()],
            },
            AllowRule {
                experiments: vec!["api-long".into()],
                users: vec!["UALICE".into(), "UBOB".into()],
                channels: vec![],
            },
        ],
        contact: Some("#sre-oncall".into()),
        ..SlackConfig::default()
    }
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

async fn rig_with(tweak: impl FnOnce(&mut Config)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    std::fs::write(catalog.join("api-latency.yaml"), API_LATENCY).unwrap();
    std::fs::write(catalog.join("api-long.yaml"), API_LONG).unwrap();
    let service = service().await;
    let mut cfg = config(free_port(), service.addr);
    cfg.catalog = catalog;
    cfg.slack = slack_config();
    tweak(&mut cfg);
    let cfg = Arc::new(cfg);
    let store = Arc::new(RecordingStore {
        inner: sqlite_store(dir.path()).await,
        enqueued: Mutex::new(Vec::new()),
        fail_ping: AtomicBool::new(false),
    });
    let dyn_store: DynStore = store.clone();
    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.lease = Duration::from_secs(3);
    opts.abort_poll = Duration::from_millis(50);
    let engine = Engine::new(dyn_store.clone(), TargetRegistry::new(cfg.clone()), opts);
    engine.start().await.unwrap();
    let api = Arc::new(RecordingApi::default());
    let app = Arc::new(SlackApp {
        engine: engine.clone(),
        store: dyn_store,
        cfg,
        api: api.clone(),
        bot_user_id: std::sync::OnceLock::from(BOT.to_string()),
        qa_boards: Default::default(),
        clock: chaosbot::clock::system(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    Rig {
        base: format!("http://{addr}"),
        engine,
        store,
        api,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _service: service,
        _dir: dir,
    }
}

enum Sig {
    Good,
    Forged,
    Stale,
    None,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Rig {
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        sig: Sig,
        extra: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", content_type);
        let ts = match sig {
            Sig::Stale => (now() - 600).to_string(),
            _ => now().to_string(),
        };
        match sig {
            Sig::Good | Sig::Stale => {
                req = req
                    .header("x-slack-request-timestamp", &ts)
                    .header("x-slack-signature", verify::sign(SECRET, &ts, &body));
            }
            Sig::Forged => {
                req = req.header("x-slack-request-timestamp", &ts).header(
                    "x-slack-signature",
                    verify::sign("not-the-secret", &ts, &body),
                );
            }
            Sig::None => {}
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            self.client
                .request(req.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("answer within 10 s")
        .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends `/chaos <text>` as `user` in `channel`; returns the answer's JSON.
    async fn command_in(&self, team: &str, channel: &str, user: &str, text: &str) -> Value {
        let (status, body) = self
            .send(
                Method::POST,
                "/slack/commands",
                "application/x-www-form-urlencoded",
                command_body(team, channel, user, text).into_bytes(),
                Sig::Good,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response_type"], "ephemeral", "{v}");
        v
    }

    async fn command(&self, user: &str, text: &str) -> Value {
        self.command_in(TEAM, CHAOS_CHANNEL, user, text).await
    }

    async fn event(&self, body: &Value, extra: &[(&str, &str)]) -> (StatusCode, String) {
        self.send(
            Method::POST,
            "/slack/events",
            "application/json",
            body.to_string().into_bytes(),
            Sig::Good,
            extra,
        )
        .await
    }

    async fn interaction(&self, payload: &Value) -> (StatusCode, String) {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.send(
            Method::POST,
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            body.into_bytes(),
            Sig::Good,
            &[],
        )
        .await
    }

    async fn runs(&self) -> Vec<RunRecord> {
        self.store
            .list_runs(RunFilter {
                experiment: None,
                limit: 100,
            })
            .await
            .unwrap()
    }

    fn enqueued(&self) -> Vec<OutboundMessage> {
        self.store.enqueued.lock().unwrap().clone()
    }

    async fn wait_enqueued(&self, n: usize) -> Vec<OutboundMessage> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.enqueued().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.enqueued()
    }

    async fn wait_done(&self, id: &str) -> RunRecord {
        tokio::time::timeout(Duration::from_secs(60), self.engine.wait(id))
            .await
            .expect("run finishes within 60 s")
            .unwrap()
    }
}

/// A slash command body with every field Slack documents.
fn command_body(team: &str, channel: &str, user: &str, text: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", team),
        ("team_domain", "example"),
        ("enterprise_id", "E0001"),
        ("enterprise_name", "Globular Construct Inc"),
        ("channel_id", channel),
        ("channel_name", "chaos"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/chaos"),
        ("text", text),
        ("api_app_id", "A123456"),
        ("is_enterprise_install", "false"),
        ("response_url", "https://hooks.slack.com/commands/1234/5678"),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap()
}

/// The answer's text and every block's text, joined.
fn all_text(v: &Value) -> String {
    let mut out = v["text"].as_str().unwrap_or("").to_string();
    if let Some(blocks) = v["blocks"].as_array() {
        for b in blocks {
            out.push('\n');
            out.push_str(b["text"]["text"].as_str().unwrap_or(""));
        }
    }
    out
}

fn run_id_in(text: &str) -> String {
    let start = text.find("`r-").expect("a run id in the answer") + 1;
    let len = text[start..].find('`').unwrap();
    text[start..start + len].to_string()
}

fn mention(event_id: &str, user: &str, text: &str, bot_id: Option<&str>) -> Value {
    let mut event = json!({
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": "1515449522.000016",
        "channel": CHAOS_CHANNEL,
        "event_ts": "1515449522.000016"
    });
    if let Some(b) = bot_id {
        event["bot_id"] = json!(b);
    }
    json!({
        "token": "ZZZZZZWSxiZZZ2yIvs3peJ",
        "team_id": TEAM,
        "api_app_id": "A123ABC456",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1515449522,
        "authorizations": [{"enterprise_id": null, "team_id": TEAM, "user_id": BOT, "is_bot": true}],
        "event_context": "EC12345"
    })
}

fn abort_button(user: &str, run_id: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": TEAM},
        "api_app_id": "A02",
        "token": "Shh_its_a_seekrit",
        "container": {"type": "message", "message_ts": "1548261231.000200", "channel_id": CHAOS_CHANNEL, "is_ephemeral": false},
        "trigger_id": "12466734323.1395872398",
        "team": {"id": TEAM, "domain": "example"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": CHAOS_CHANNEL, "name": "chaos"},
        "state": {"values": {}},
        "response_url": "https://www.postresponsestome.com/T123567/1509734234",
        "actions": [{
            "action_id": "abort_run",
            "block_id": "run_actions",
            "text": {"type": "plain_text", "text": "Abort", "emoji": true},
            "value": run_id,
            "style": "danger",
            "type": "button",
            "action_ts": "1548426417.840180"
        }]
    })
}

fn modal_submission(user: &str, view: &Value, experiment: &str, params: &str) -> Value {
    let mut view = view.clone();
    view["id"] = json!("VNHU13V36");
    view["team_id"] = json!(TEAM);
    view["hash"] = json!("156663117.cd33ad1f");
    view["state"] = json!({"values": {
        "experiment": {"experiment": {"type": "static_select", "selected_option": {
            "text": {"type": "plain_text", "text": experiment}, "value": experiment}}},
        "params": {"params": {"type": "plain_text_input", "value": params}}
    }});
    json!({
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "example"},
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": TEAM},
        "api_app_id": "AXXXXXXXXX",
        "token": "XXXXXXXXXXXX",
        "trigger_id": "12345.98765.abcd2358fdea",
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
        "enterprise": null
    })
}

async fn audit_actions(rig: &Rig) -> Vec<(String, String)> {
    rig.store
        .audit_log(100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.outcome))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Verification and limits

#[test]
fn slack_published_signing_example() {
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    verify::verify(
        "8f742231b10e8888abcd99yyyzzz85a5",
        "1531420618",
        sig,
        body.as_bytes(),
        1531420618 + 10,
    )
    .unwrap();
    assert!(
        verify::verify(
            "8f742231b10e8888abcd99yyyzzz85a5",
            "1531420618",
            sig,
            body.as_bytes(),
            1531420618 + 301
        )
        .is_err()
    );
}

#[tokio::test]
async fn forged_stale_and_unsigned_requests_get_401_and_start_nothing() {
    let rig = rig().await;
    let body = command_body(TEAM, CHAOS_CHANNEL, "UOP", "start api-latency");
    for sig in [Sig::Forged, Sig::Stale, Sig::None] {
        for path in ["/slack/commands", "/slack/events", "/slack/interactions"] {
            let (status, _) = rig
                .send(
                    Method::POST,
                    path,
                    "application/x-www-form-urlencoded",
                    body.clone().into_bytes(),
                    match sig {
                        Sig::Forged => Sig::Forged,
                        Sig::Stale => Sig::Stale,
                        _ => Sig::None,
                    },
                    &[],
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rig.runs().await.is_empty());
    assert!(rig.store.audit_log(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let rig = rig().await;
    let big = command_body(TEAM, CHAOS_CHANNEL, "UOP", &"x".repeat(70 * 1024));
    let (status, _) = rig
        .send(
            Method::POST,
            "/slack/commands",
            "application/x-www-form-urlencoded",
            big.into_bytes(),
            Sig::Good,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(rig.runs().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The command

#[tokio::test]
async fn help_and_list() {
    let rig = rig().await;
    for text in ["", "help"] {
        let t = all_text(&rig.command("U1", text).await);
        assert!(t.contains("/chaos start <experiment>"), "{t}");
        assert!(t.contains("/chaos abort all"), "{t}");
    }
    let t = all_text(&rig.command("U1", "list").await);
    assert!(
        t.contains("`api-latency`") && t.contains("`api-long`"),
        "{t}"
    );
    assert!(t.contains("The API tolerates a little latency"), "{t}");
    assert!(t.contains("targets: api"), "{t}");
    assert!(t.contains("between 0ms and 500ms"), "{t}");
    assert!(t.contains("default `10ms`"), "{t}");
}

#[tokio::test]
async fn start_submits_a_run_with_the_slack_origin() {
    let rig = rig().await;
    let v = rig.command("U1", "start api-latency latency=20ms").await;
    let t = all_text(&v);
    assert!(t.contains("is queued"), "{t}");
    let id = run_id_in(&t);
    let run = rig.store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.requested_by, "U1");
    assert_eq!(
        run.source.slack().cloned(),
        Some(SlackOrigin {
            team: TEAM.into(),
            channel: CHAOS_CHANNEL.into(),
            user: "U1".into()
        })
    );
    assert_eq!(run.params.get("latency").map(String::as_str), Some("20ms"));
    let done = rig.wait_done(&id).await;
    assert_eq!(done.state, RunState::Done);
    assert_eq!(done.verdict, Some(Verdict::Held), "{:?}", done.reason);
    let audit = audit_actions(&rig).await;
    assert_eq!(audit[0], ("command:start".to_string(), "ok".to_string()));
}

#[tokio::test]
async fn bad_input_gets_a_specific_answer_and_starts_nothing() {
    let rig = rig().await;
    let cases: &[(&str, &str)] = &[
        ("start api-latncy", "did you mean `api-latency`"),
        ("start api-latency latency=9s", "above the maximum"),
        (
            "start api-latency nonsense",
            "write parameters as `key=value`",
        ),
        ("strat api-latency", "did you mean `start`"),
        ("summary", "needs a run id"),
    ];
    for (text, expect) in cases {
        let t = all_text(&rig.command("U1", text).await);
        assert!(t.contains(expect), "{text}: {t}");
    }
    let giant = format!("start api-latency {}", "latency=1ms ".repeat(200));
    let t = all_text(&rig.command("U1", &giant).await);
    assert!(t.contains("the limit is 2000"), "{t}");
    // Signed but not a slash command form.
    let (status, body) = rig
        .send(
            Method::POST,
            "/slack/commands",
            "application/x-www-form-urlencoded",
            b"text=start&garbage".to_vec(),
            Sig::Good,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("could not read the slash command"), "{body}");
    assert!(rig.runs().await.is_empty());
    let audit = audit_actions(&rig).await;
    assert!(
        audit.iter().all(|(_, o)| o.starts_with("refused")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn unauthorized_user_channel_and_team_are_refused_naming_whom_to_ask() {
    let rig = rig().await;
    let t = all_text(
        &rig.command_in(TEAM, "COTHER", "U1", "start api-latency")
            .await,
    );
    assert!(t.contains("<#CCHAOS>") && t.contains("#sre-oncall"), "{t}");
    let t = all_text(&rig.command("UEVE", "start api-long").await);
    assert!(
        t.contains("not among the users") && t.contains("#sre-oncall"),
        "{t}"
    );
    let t = all_text(
        &rig.command_in("T2", CHAOS_CHANNEL, "UOP", "start api-latency")
            .await,
    );
    assert!(t.contains("another Slack workspace"), "{t}");
    assert!(rig.runs().await.is_empty());
}

#[tokio::test]
async fn no_rules_and_no_operators_tells_what_to_configure() {
    let rig = rig_with(|c| {
        c.slack.operators.clear();
        c.slack.allow.clear();
    })
    .await;
    let t = all_text(&rig.command("U1", "start api-latency").await);
    assert!(
        t.contains("operators = [\"U1\"]") && t.contains("[[slack.allow]]"),
        "{t}"
    );
    assert!(rig.runs().await.is_empty());
}

#[tokio::test]
async fn abort_by_requester_refused_for_others_allowed_for_operator() {
    let rig = rig().await;
    let id1 = run_id_in(&all_text(&rig.command("UALICE", "start api-long").await));
    let t = all_text(&rig.command("UBOB", &format!("abort {id1}")).await);
    assert!(
        t.contains("only <@UALICE>") && t.contains("#sre-oncall"),
        "{t}"
    );
    let t = all_text(&rig.command("UALICE", &format!("abort {id1} enough")).await);
    assert!(t.contains(&id1) && t.contains(":octagonal_sign:"), "{t}");
    let run = rig.wait_done(&id1).await;
    assert_eq!(run.verdict, Some(Verdict::Aborted));

    let id2 = run_id_in(&all_text(&rig.command("UALICE", "start api-long").await));
    let t = all_text(&rig.command("UOP", &format!("abort {id2}")).await);
    assert!(t.contains(":octagonal_sign:"), "{t}");
    assert_eq!(rig.wait_done(&id2).await.verdict, Some(Verdict::Aborted));
    let t = all_text(&rig.command("UOP", &format!("abort {id2}")).await);
    assert!(t.contains("already finished"), "{t}");
}

#[tokio::test]
async fn abort_all_is_for_operators() {
    let rig = rig().await;
    let a = run_id_in(&all_text(&rig.command("UALICE", "start api-long").await));
    let b = run_id_in(&all_text(&rig.command("UBOB", "start api-long").await));
    let t = all_text(&rig.command("UALICE", "abort all").await);
    assert!(t.contains("only operators"), "{t}");
    let t = all_text(&rig.command("UOP", "abort all maintenance").await);
    assert!(t.contains("Aborting 2 run(s)"), "{t}");
    for id in [a, b] {
        assert_eq!(rig.wait_done(&id).await.verdict, Some(Verdict::Aborted));
    }
}

#[tokio::test]
async fn abort_all_halts_starts_until_resume() {
    let rig = rig().await;
    let t = all_text(&rig.command("UOP", "abort all game day prep").await);
    assert!(t.contains("A halt is now in force"), "{t}");
    // A second abort all keeps the first halt.
    let t = all_text(&rig.command("UOP", "abort all again").await);
    assert!(t.contains("already in force"), "{t}");
    let halt = rig.store.current_halt().await.unwrap().unwrap();
    assert_eq!(
        (halt.halted_by.as_str(), halt.reason.as_str()),
        ("UOP", "game day prep")
    );

    // start is refused, naming who, when, why and how to resume; nothing is queued.
    let before = rig
        .store
        .list_runs(RunFilter {
            experiment: None,
            limit: 100,
        })
        .await
        .unwrap()
        .len();
    let t = all_text(&rig.command("UALICE", "start api-latency").await);
    assert!(
        t.contains("a halt is in force since")
            && t.contains("<@UOP>")
            && t.contains("game day prep")
            && t.contains("/chaos resume"),
        "{t}"
    );
    let after = rig
        .store
        .list_runs(RunFilter {
            experiment: None,
            limit: 100,
        })
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);

    // Only operators resume; then starts work again.
    let t = all_text(&rig.command("UALICE", "resume").await);
    assert!(t.contains("only operators"), "{t}");
    let t = all_text(&rig.command("UOP", "resume").await);
    assert!(t.contains("is lifted") && t.contains("<@UOP>"), "{t}");
    assert!(rig.store.current_halt().await.unwrap().is_none());
    let t = all_text(&rig.command("UOP", "resume").await);
    assert!(t.contains("No halt is in force"), "{t}");
    let id = run_id_in(&all_text(&rig.command("UALICE", "start api-latency").await));
    rig.wait_done(&id).await;
}

#[tokio::test]
async fn status_lists_queued_and_running_runs() {
    let rig = rig().await;
    let t = all_text(&rig.command("U1", "status").await);
    assert!(t.contains("No run is queued or running"), "{t}");
    let id = run_id_in(&all_text(&rig.command("UALICE", "start api-long").await));
    let t = all_text(&rig.command("U1", "status").await);
    assert!(
        t.contains(&id) && t.contains("api-long") && t.contains("<@UALICE>"),
        "{t}"
    );
    rig.command("UOP", "abort all").await;
    rig.wait_done(&id).await;
}

#[tokio::test]
async fn summary_of_a_finished_run_and_no_run_for_another_team() {
    // No team_id: several workspaces, each sees only its own runs.
    let rig = rig_with(|c| c.slack.team_id = None).await;
    let id = run_id_in(&all_text(&rig.command("U1", "start api-latency").await));
    rig.wait_done(&id).await;
    let v = rig.command("U1", &format!("summary {id}")).await;
    let t = all_text(&v);
    assert!(t.contains("*Verdict:* HELD"), "{t}");
    assert!(t.contains("Rollback:* reverted"), "{t}");
    assert!(
        t.contains("Probe `api-ok`") && t.contains("before") && t.contains("after"),
        "{t}"
    );
    assert!(t.contains("fault `slow-api` injected"), "{t}");
    assert!(t.contains("Time to detect"), "{t}");
    assert!(v["blocks"].as_array().unwrap().len() <= 50);
    let t = all_text(
        &rig.command_in("T2", "C9", "U9", &format!("summary {id}"))
            .await,
    );
    assert!(t.contains(&format!("no run `{id}`")), "{t}");
    let t = all_text(
        &rig.command_in("T2", "C9", "U9", &format!("abort {id}"))
            .await,
    );
    assert!(t.contains("no run"), "{t}");
    let t = all_text(&rig.command("U1", "summary r-doesnotexist").await);
    assert!(t.contains("no run `r-doesnotexist`"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// Events

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    let rig = rig().await;
    let (status, body) = rig
        .event(
            &json!({
                "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
                "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                "type": "url_verification"
            }),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[tokio::test]
async fn mentions_are_answered_once_and_own_messages_ignored() {
    let rig = rig().await;
    let first = mention("Ev01", "U1", "<@UBOT> hello", None);
    let (status, _) = rig.event(&first, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = rig
        .event(
            &first,
            &[
                ("x-slack-retry-num", "1"),
                ("x-slack-retry-reason", "http_timeout"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The bot's own messages: by bot_id, and by the bot's user id.
    rig.event(&mention("Ev02", "U1", "<@UBOT> hi", Some("B01")), &[])
        .await;
    rig.event(&mention("Ev03", BOT, "<@UBOT> hi", None), &[])
        .await;
    let msgs = rig.wait_enqueued(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs_after = rig.enqueued();
    assert_eq!(msgs_after.len(), 1, "{msgs_after:?}");
    assert_eq!(msgs, msgs_after);
    let m = &msgs[0];
    assert_eq!(m.thread_key, format!("mention:{CHAOS_CHANNEL}"));
    assert_eq!(m.channel, CHAOS_CHANNEL);
    match &m.action {
        OutboundAction::Post {
            key: None,
            in_thread_of: None,
            text,
            blocks: Some(_),
        } => assert!(text.contains("/chaos list"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    // "status" answers with the status.
    rig.event(&mention("Ev04", "U1", "<@UBOT> status please", None), &[])
        .await;
    let msgs = rig.wait_enqueued(2).await;
    match &msgs[1].action {
        OutboundAction::Post { text, .. } => {
            assert!(text.contains("No run is queued or running"), "{text}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // The audit row is written by the spawned handler, right after it enqueues the answer.
    let mut audit = audit_actions(&rig).await;
    for _ in 0..100 {
        if audit
            .iter()
            .filter(|(a, _)| a == "event:app_mention")
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        audit = audit_actions(&rig).await;
    }
    assert_eq!(
        audit
            .iter()
            .filter(|(a, _)| a == "event:app_mention")
            .count(),
        2,
        "{audit:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Interactions

#[tokio::test]
async fn abort_button_checks_who_and_reports_through_the_outbox() {
    let rig = rig().await;
    let id = run_id_in(&all_text(&rig.command("UALICE", "start api-long").await));
    let (status, body) = rig.interaction(&abort_button("UBOB", &id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty(), "{body}");
    let msgs = rig.wait_enqueued(1).await;
    match &msgs[0].action {
        OutboundAction::Ephemeral { user, text, .. } => {
            assert_eq!(user, "UBOB");
            assert!(text.contains("only <@UALICE>"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_ne!(
        rig.store.get_run(&id).await.unwrap().unwrap().state,
        RunState::Done
    );
    rig.interaction(&abort_button("UALICE", &id)).await;
    let msgs = rig.wait_enqueued(2).await;
    match &msgs[1].action {
        OutboundAction::Ephemeral { user, text, .. } => {
            assert_eq!(user, "UALICE");
            assert!(
                text.contains(&id) && text.contains(":octagonal_sign:"),
                "{text}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rig.wait_done(&id).await.verdict, Some(Verdict::Aborted));
    // The audit row is written after the answer is queued: wait for it (bounded).
    let abort_rows = |audit: &[(String, String)]| {
        audit
            .iter()
            .filter(|(a, _)| a == "button:abort_run")
            .count()
    };
    for _ in 0..100 {
        if abort_rows(&audit_actions(&rig).await) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(abort_rows(&audit_actions(&rig).await), 2);
}

#[tokio::test]
async fn start_form_opens_and_its_submission_starts_a_run() {
    let rig = rig().await;
    let t = all_text(&rig.command("U1", "start").await);
    assert!(t.contains("Opening the form"), "{t}");
    let start = Instant::now();
    let view = loop {
        let calls = rig.api.calls.lock().unwrap().clone();
        if let Some((_, body)) = calls.iter().find(|(m, _)| m == "views.open") {
            assert_eq!(
                body["trigger_id"],
                "13345224609.738474920.8088930838d88f008e0"
            );
            break body["view"].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "views.open not called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view["callback_id"], "chaos_start");
    let options = view["blocks"][0]["element"]["options"].as_array().unwrap();
    assert_eq!(options.len(), 2);
    assert_eq!(options[0]["value"], "api-latency");

    let (status, body) = rig
        .interaction(&modal_submission("U1", &view, "api-latency", "latency=9s"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response_action"], "errors");
    assert!(
        v["errors"]["params"]
            .as_str()
            .unwrap()
            .contains("above the maximum"),
        "{v}"
    );
    let (_, body) = rig
        .interaction(&modal_submission("UEVE", &view, "api-long", ""))
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["errors"]["experiment"]
            .as_str()
            .unwrap()
            .contains("not among the users"),
        "{v}"
    );
    assert!(rig.runs().await.is_empty());

    let (status, body) = rig
        .interaction(&modal_submission(
            "U1",
            &view,
            "api-latency",
            "latency=15ms\nduration=200ms",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty(), "{body}");
    let runs = rig.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].source.slack().unwrap().channel, CHAOS_CHANNEL);
    assert_eq!(
        runs[0].params.get("duration").map(String::as_str),
        Some("200ms")
    );
    let msgs = rig.wait_enqueued(1).await;
    match &msgs[0].action {
        OutboundAction::Ephemeral { user, text, .. } => {
            assert_eq!(user, "U1");
            assert!(text.contains(&runs[0].id), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    rig.wait_done(&runs[0].id).await;
    let audit = audit_actions(&rig).await;
    assert_eq!(audit.iter().filter(|(a, _)| a == "modal:start").count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Health and metrics

#[tokio::test]
async fn healthz_and_metrics() {
    let rig = rig().await;
    let (status, _) = rig
        .send(
            Method::GET,
            "/healthz",
            "text/plain",
            vec![],
            Sig::None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    rig.store.fail_ping.store(true, Ordering::SeqCst);
    let (status, _) = rig
        .send(
            Method::GET,
            "/healthz",
            "text/plain",
            vec![],
            Sig::None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    rig.command("U1", "help").await;
    let (status, body) = rig
        .send(
            Method::GET,
            "/metrics",
            "text/plain",
            vec![],
            Sig::None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("chaosbot_slack_requests_total{route=\"commands\",outcome=\"ok\"}"),
        "{body}"
    );
    assert!(
        body.contains("chaosbot_slack_handler_seconds_bucket"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// EdgeStore on both backends

async fn edge_store_behaviour(store: DynStore) {
    assert!(store.remember_event("Ev1", 1).await.unwrap());
    assert!(!store.remember_event("Ev1", 2).await.unwrap());
    assert!(store.remember_event("Ev2", 3).await.unwrap());
    // Old rows go; a pruned event would be taken again (Slack no longer retries it by then).
    assert_eq!(store.prune_events(3).await.unwrap(), 1);
    assert!(
        !store.remember_event("Ev2", 4).await.unwrap(),
        "newer rows stay"
    );
    assert!(store.remember_event("Ev1", 5).await.unwrap());
    for (i, action) in ["command:help", "button:abort_run"].iter().enumerate() {
        store
            .audit(&AuditEntry {
                at_ms: i as i64,
                team: TEAM.into(),
                user: "U1".into(),
                channel: CHAOS_CHANNEL.into(),
                action: (*action).into(),
                detail: "d".into(),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
    }
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, "button:abort_run");
    assert_eq!(store.audit_log(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn edge_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    edge_store_behaviour(sqlite_store(dir.path()).await).await;
}

#[tokio::test]
async fn edge_store_on_postgres() {
    with_postgres(|url| async move {
        edge_store_behaviour(chaosbot::store::open(&url).await.unwrap()).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Summaries with Q&A, period summaries, the learning record

fn ask(run: &str, ts: &str, by: &str, text: &str) -> NewQuestion {
    NewQuestion {
        run_id: run.into(),
        channel: CHAOS_CHANNEL.into(),
        ts: ts.into(),
        asked_by: by.into(),
        text: text.into(),
        asked_ms: chaosbot::run::now_ms(),
    }
}

#[tokio::test]
async fn summary_of_a_run_shows_its_qa_and_learnings() {
    let rig = rig().await;
    let id = run_id_in(&all_text(&rig.command("U1", "start api-latency").await));
    rig.wait_done(&id).await;
    let t = all_text(&rig.command("U1", &format!("summary {id}")).await);
    assert!(t.contains("*Questions and answers:* none asked yet"), "{t}");
    assert!(t.contains("*What we learned:* nothing noted yet."), "{t}");

    let s = &rig.store;
    let (auto, _) = s
        .add_question(&ask(
            &id,
            "5.1",
            "UQ1",
            "what was the p99 during the fault?",
        ))
        .await
        .unwrap();
    let (person, _) = s
        .add_question(&ask(&id, "5.2", "UQ2", "would a retry have hidden it?"))
        .await
        .unwrap();
    s.add_question(&ask(&id, "5.3", "UQ3", "does staging differ?"))
        .await
        .unwrap();
    s.add_vote(person.id, "UV1", 1).await.unwrap();
    s.add_vote(person.id, "UV2", 1).await.unwrap();
    let answer = |text: &str, by: &str, auto: bool| Answer {
        text: text.into(),
        by: by.into(),
        at_ms: chaosbot::run::now_ms(),
        auto,
    };
    s.answer_question(auto.id, &answer("p99 was 14.2 ms", "chaosbot", true))
        .await
        .unwrap();
    s.answer_question(person.id, &answer("yes, twice over", "USPEAK", false))
        .await
        .unwrap();
    s.add_learning(
        &id,
        LearningKind::Learned,
        "10 ms is invisible",
        "USPEAK",
        1,
    )
    .await
    .unwrap();
    s.add_learning(&id, LearningKind::Change, "try 200 ms next", "USPEAK", 2)
        .await
        .unwrap();

    let v = rig.command("U1", &format!("summary {id}")).await;
    let t = all_text(&v);
    assert!(t.contains("*Verdict:* HELD"), "the run part stays: {t}");
    assert!(t.contains("(3 asked, 1 still open)"), "{t}");
    // Most votes first.
    let first = t
        .find("would a retry have hidden it?")
        .expect("voted question");
    let second = t
        .find("what was the p99 during the fault?")
        .expect("auto question");
    assert!(first < second, "{t}");
    assert!(
        t.contains("*2* vote(s) — “would a retry have hidden it?” (<@UQ2>)"),
        "{t}"
    );
    assert!(t.contains("↳ yes, twice over — <@USPEAK>"), "{t}");
    assert!(
        t.contains("↳ p99 was 14.2 ms _(answered by chaosbot from the journal)_"),
        "{t}"
    );
    assert!(t.contains("“does staging differ?”"), "{t}");
    assert!(t.contains("_open: waiting for the speaker_"), "{t}");
    assert!(
        t.contains("*What we learned*\n• 10 ms is invisible — <@USPEAK>"),
        "{t}"
    );
    assert!(
        t.contains("*What we change*\n• try 200 ms next — <@USPEAK>"),
        "{t}"
    );
    assert!(v["blocks"].as_array().unwrap().len() <= 50);
}

/// A finished run of `team`, created through the store like the engine does.
async fn seeded_run(rig: &Rig, id: &str, team: &str, verdict: Verdict, rollback: RollbackOutcome) {
    let source = SlackOrigin {
        team: team.into(),
        channel: CHAOS_CHANNEL.into(),
        user: "U1".into(),
    }
    .to_source();
    rig.store
        .create_run(
            NewRun {
                id: id.into(),
                experiment: format!("exp-{id}"),
                title: format!("Title of {id}"),
                spec: json!({"name": format!("exp-{id}")}),
                params: Default::default(),
                seed: 7,
                requested_by: "U1".into(),
                source: chaosbot::run::RunSource::parse(&source),
            },
            Event::Submitted {
                experiment: format!("exp-{id}"),
                title: format!("Title of {id}"),
                requested_by: "U1".into(),
                source: chaosbot::run::RunSource::parse(&source),
                params: Default::default(),
                seed: 7,
                targets: vec![],
            },
        )
        .await
        .unwrap();
    rig.store
        .finish_run(id, verdict, rollback, &format!("{verdict} on purpose"))
        .await
        .unwrap();
}

#[tokio::test]
async fn summary_week_counts_the_callers_runs_by_verdict() {
    let rig = rig().await;
    let held = run_id_in(&all_text(&rig.command("U1", "start api-latency").await));
    rig.wait_done(&held).await;
    seeded_run(
        &rig,
        "r-deviated01",
        TEAM,
        Verdict::Deviated,
        RollbackOutcome::Reverted,
    )
    .await;
    seeded_run(
        &rig,
        "r-aborted001",
        TEAM,
        Verdict::Aborted,
        RollbackOutcome::RevertFailed,
    )
    .await;
    seeded_run(
        &rig,
        "r-failed0001",
        TEAM,
        Verdict::Failed,
        RollbackOutcome::NothingToRevert,
    )
    .await;
    // Another workspace's run is not counted, nor its questions shown.
    seeded_run(
        &rig,
        "r-otherteam1",
        "T2",
        Verdict::Deviated,
        RollbackOutcome::Reverted,
    )
    .await;
    rig.store
        .add_question(&ask("r-deviated01", "6.1", "UQ1", "why did it deviate?"))
        .await
        .unwrap();
    rig.store
        .add_question(&ask("r-otherteam1", "6.2", "UQ9", "secret question"))
        .await
        .unwrap();

    let v = rig.command("U1", "summary week").await;
    let t = all_text(&v);
    assert!(t.contains("*Chaos summary of the last 7 days*"), "{t}");
    assert!(
        t.contains("*4 run(s)*: 1 held · 1 deviated · 1 aborted · 1 failed"),
        "{t}"
    );
    assert!(t.contains("*1 run(s) could not revert*"), "{t}");
    assert!(
        t.contains("_Previous period: 0 run(s), 0 held, 0 deviated_"),
        "{t}"
    );
    assert!(
        t.contains(
            "• `r-deviated01` *exp-r-deviated01* — Title of r-deviated01: deviated on purpose"
        ),
        "{t}"
    );
    assert!(t.contains("*Mean time to detect:*"), "{t}");
    assert!(
        t.contains("no comparison"),
        "nothing ran the week before: {t}"
    );
    assert!(t.contains("*Open questions (1)*"), "{t}");
    assert!(
        t.contains("on `r-deviated01`: “why did it deviate?” — <@UQ1>"),
        "{t}"
    );
    assert!(
        !t.contains("r-otherteam1") && !t.contains("secret question"),
        "{t}"
    );
    assert!(t.contains("*Next scheduled runs:*"), "{t}");

    // Other lengths, and bad ones with a precise answer.
    let t = all_text(&rig.command("U1", "summary 30d").await);
    assert!(
        t.contains("the last 30 days") && t.contains("*4 run(s)*"),
        "{t}"
    );
    let t = all_text(&rig.command("U1", "summary day").await);
    assert!(t.contains("the last day"), "{t}");
    let t = all_text(&rig.command("U1", "summary 0").await);
    assert!(t.contains("between 1 and 366 days"), "{t}");
    let t = all_text(&rig.command("U1", "summary 9999d").await);
    assert!(t.contains("between 1 and 366 days"), "{t}");
    let t = all_text(&rig.command("U1", "summary 2w").await);
    assert!(t.contains("use `day`, `week`, `month`"), "{t}");
    // A run id still means the run.
    let t = all_text(&rig.command("U1", "summary r-deviated01").await);
    assert!(t.contains("*Verdict:* DEVIATED"), "{t}");
}

#[tokio::test]
async fn report_posts_the_learning_record_in_pages() {
    // No team_id: several workspaces, each sees only its own runs.
    let rig = rig_with(|c| c.slack.team_id = None).await;
    let id = run_id_in(&all_text(&rig.command("U1", "start api-latency").await));
    rig.wait_done(&id).await;
    rig.store
        .add_question(&ask(&id, "7.1", "UQ1", "how much latency did we add?"))
        .await
        .unwrap();
    // A long learning, so the record needs more than one message.
    let long = "a long note. ".repeat(1_200);
    rig.store
        .add_learning(&id, LearningKind::Learned, &long, "USPEAK", 1)
        .await
        .unwrap();
    let before = rig.store.enqueued.lock().unwrap().len();
    let t = all_text(&rig.command("U1", &format!("report {id}")).await);
    assert!(t.contains("Posting the learning record"), "{t}");
    let posted: Vec<OutboundMessage> = rig.store.enqueued.lock().unwrap()[before..]
        .iter()
        .filter(|m| m.thread_key.starts_with("report:"))
        .cloned()
        .collect();
    assert!(posted.len() >= 2, "{} message(s)", posted.len());
    assert!(t.contains(&format!("({} message(s))", posted.len())), "{t}");
    let mut whole = String::new();
    for m in &posted {
        assert_eq!(m.channel, CHAOS_CHANNEL);
        let OutboundAction::Post { blocks, .. } = &m.action else {
            panic!("a post: {m:?}");
        };
        let blocks = blocks.as_ref().unwrap().as_array().unwrap().clone();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0]["type"], "markdown");
        let text = blocks[0]["text"].as_str().unwrap();
        assert!(text.chars().count() <= 12_000);
        whole.push_str(text);
    }
    assert!(
        whole.starts_with(&format!("# Learning record: run `{id}`")),
        "{whole}"
    );
    assert!(whole.contains("how much latency did we add?"));
    assert!(whole.contains("## What we change"));

    // Another workspace cannot export it; a bad argument is explained.
    let t = all_text(
        &rig.command_in("T2", "C9", "U9", &format!("report {id}"))
            .await,
    );
    assert!(t.contains(&format!("no run `{id}`")), "{t}");
    let t = all_text(&rig.command("U1", &format!("report {id} as pdf")).await);
    assert!(t.contains("report <run-id> [as file]"), "{t}");
    // This rig's Web API stub cannot upload: the caller is told, privately, what to do instead.
    let t = all_text(&rig.command("U1", &format!("report {id} as file")).await);
    assert!(t.contains("Uploading the learning record"), "{t}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let told = rig.store.enqueued.lock().unwrap().iter().any(|m| {
            matches!(&m.action, OutboundAction::Ephemeral { user, text, .. }
                if user == "U1" && text.contains("could not be uploaded as a file"))
        });
        if told {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no upload error message within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
