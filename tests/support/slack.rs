//! Talking to `chaosbot serve` the way Slack does, for end-to-end tests: requests signed with
//! the app's signing secret (slash commands as forms, Events API bodies as JSON, interaction
//! payloads), and the Slack settings that point chaosbot at a fake Slack.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chaosbot::config::{AllowRule, Secret, SlackConfig};
use chaosbot::slack::edge::verify;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

/// Slack settings for a test: the secret, a bot token, the fake's URL, one workspace, and who
/// may do what.
pub fn settings(
    secret: &str,
    api_url: String,
    team: &str,
    operators: &[&str],
    allow: Vec<AllowRule>,
) -> SlackConfig {
    SlackConfig {
        signing_secret: Some(Secret(secret.into())),
        bot_token: Some(Secret("xoxb-test".into())),
        api_url: Some(api_url),
        team_id: Some(team.into()),
        operators: operators.iter().map(|o| o.to_string()).collect(),
        allow,
        contact: Some("#sre-oncall".into()),
        // Paced as in production, only faster, so tests with many posts stay quick.
        post_interval: std::time::Duration::from_millis(50),
        ..SlackConfig::default()
    }
}

/// POSTs a request signed like Slack's; the status and the body. Slack wants its answer
/// within 3 s, so a slower answer fails the test.
pub async fn post_signed(
    secret: &str,
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, String) {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = verify::sign(secret, &ts, body.as_bytes());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(3), client.request(req))
        .await
        .expect("Slack gets its answer within 3 s")
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A `/chaos` slash command with every field Slack sends; its JSON answer.
pub async fn slash(
    secret: &str,
    addr: SocketAddr,
    (team, channel): (&str, &str),
    user: &str,
    text: &str,
) -> Value {
    let body = serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", team),
        ("team_domain", "example"),
        ("channel_id", channel),
        ("channel_name", "chaos"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/chaos"),
        ("text", text),
        ("api_app_id", "A123456"),
        ("response_url", "https://hooks.slack.com/commands/1234/5678"),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ])
    .unwrap();
    let (status, body) = post_signed(secret, addr, "/slack/commands", FORM, body).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The text of an answer: its fallback and every section.
pub fn answer_text(v: &Value) -> String {
    let mut out = v["text"].as_str().unwrap_or("").to_string();
    for b in v["blocks"].as_array().into_iter().flatten() {
        out.push('\n');
        out.push_str(b["text"]["text"].as_str().unwrap_or(""));
    }
    out
}

/// An Events API `event_callback` carrying `event`.
pub async fn event(secret: &str, addr: SocketAddr, team: &str, event_id: &str, event: Value) {
    let body = json!({
        "token": "x", "team_id": team, "api_app_id": "A1", "type": "event_callback",
        "event_id": event_id, "event_time": 1_700_000_000, "event": event,
    });
    let (status, body) = post_signed(secret, addr, "/slack/events", JSON, body.to_string()).await;
    assert_eq!(status, 200, "{body}");
}

/// An interaction payload (a button press, a form submission); the status and the body.
pub async fn interaction(secret: &str, addr: SocketAddr, payload: &Value) -> (u16, String) {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    post_signed(secret, addr, "/slack/interactions", FORM, body).await
}

/// A `block_actions` payload shaped like Slack's: `user` pressed the button `action_id`.
pub fn button_press(team: &str, channel: &str, user: &str, action_id: &str, value: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
        "api_app_id": "A02",
        "token": "Shh_its_a_seekrit",
        "container": {"type": "message", "message_ts": "1548261231.000200", "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "12466734323.1395872398",
        "team": {"id": team, "domain": "example"},
        "channel": {"id": channel, "name": "chaos"},
        "response_url": "https://hooks.slack.com/actions/T1/1/2",
        "actions": [{"action_id": action_id, "block_id": "b", "value": value,
                     "type": "button", "action_ts": "1548426417.840180",
                     "text": {"type": "plain_text", "text": "press"}}]
    })
}
