//! Socket Mode against the fake Slack: `apps.connections.open` plus its WebSocket endpoint.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaosbot::slack::socket::{SocketHandler, SocketKind, SocketModeClient, SocketModeOptions};
use serde_json::{Value, json};
use support::fake_slack::FakeSlack;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(SocketKind, Value)>>,
}

#[async_trait::async_trait]
impl SocketHandler for Recorder {
    async fn handle(&self, kind: SocketKind, payload: Value) -> Option<Value> {
        self.seen.lock().unwrap().push((kind, payload.clone()));
        match kind {
            SocketKind::SlashCommands => {
                Some(json!({"text": format!("got {}", payload["text"].as_str().unwrap_or(""))}))
            }
            SocketKind::Interactive if payload["slow"] == json!(true) => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some(json!({"too": "late"}))
            }
            _ => None,
        }
    }
}

fn client(slack: &FakeSlack, handler: Arc<Recorder>) -> SocketModeClient {
    SocketModeClient::new(&slack.url(), "xapp-test", handler)
        .unwrap()
        .with_options(SocketModeOptions {
            ack_deadline: Duration::from_millis(500),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(300),
        })
}

fn envelope(id: &str, kind: &str, payload: Value) -> Value {
    json!({"envelope_id": id, "type": kind, "payload": payload, "accepts_response_payload": true})
}

#[tokio::test]
async fn envelopes_are_handled_and_acked_with_the_handler_payload() {
    let slack = FakeSlack::start().await;
    let handler = Arc::new(Recorder::default());
    let cancel = CancellationToken::new();
    let task = client(&slack, handler.clone()).start(cancel.clone());
    assert!(slack.wait_for_connections(1, WAIT).await);
    let open = slack.calls_of("apps.connections.open");
    assert_eq!(open[0].headers["authorization"], "Bearer xapp-test");

    slack.push(envelope(
        "e1",
        "slash_commands",
        json!({"command": "/chaos", "text": "list"}),
    ));
    let ack = slack.wait_for_ack("e1", WAIT).await.expect("e1 acked");
    assert_eq!(
        ack,
        json!({"envelope_id": "e1", "payload": {"text": "got list"}})
    );

    slack.push(envelope(
        "e2",
        "events_api",
        json!({"event": {"type": "app_mention"}}),
    ));
    let ack = slack.wait_for_ack("e2", WAIT).await.expect("e2 acked");
    assert_eq!(ack, json!({"envelope_id": "e2"}));

    // A slow handler still gets its envelope acked in time (without a payload).
    let pushed = std::time::Instant::now();
    slack.push(envelope("e3", "interactive", json!({"slow": true})));
    let ack = slack.wait_for_ack("e3", WAIT).await.expect("e3 acked");
    assert_eq!(ack, json!({"envelope_id": "e3"}));
    assert!(pushed.elapsed() < Duration::from_secs(3));

    let kinds: Vec<SocketKind> = handler
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        kinds,
        vec![
            SocketKind::SlashCommands,
            SocketKind::EventsApi,
            SocketKind::Interactive
        ]
    );

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops on cancel")
        .unwrap();
}

#[tokio::test]
async fn reconnects_after_close_and_disconnect() {
    let slack = FakeSlack::start().await;
    let handler = Arc::new(Recorder::default());
    let cancel = CancellationToken::new();
    let task = client(&slack, handler.clone()).start(cancel.clone());
    assert!(slack.wait_for_connections(1, WAIT).await);

    slack.close_sockets();
    assert!(
        slack.wait_for_connections(2, WAIT).await,
        "reconnected after close"
    );
    slack.push(envelope(
        "after-close",
        "slash_commands",
        json!({"text": "one"}),
    ));
    assert!(slack.wait_for_ack("after-close", WAIT).await.is_some());

    slack.push(json!({"type": "disconnect", "reason": "refresh_requested"}));
    assert!(
        slack.wait_for_connections(3, WAIT).await,
        "reconnected after disconnect"
    );
    slack.push(envelope(
        "after-disconnect",
        "slash_commands",
        json!({"text": "two"}),
    ));
    let ack = slack
        .wait_for_ack("after-disconnect", WAIT)
        .await
        .expect("acked");
    assert_eq!(ack["payload"]["text"], "got two");
    assert!(slack.calls_of("apps.connections.open").len() >= 3);

    // An outage of apps.connections.open is retried with backoff.
    slack.fail_next(2, Some("apps.connections.open"), 500);
    slack.close_sockets();
    assert!(
        slack.wait_for_connections(4, WAIT).await,
        "reconnected after 500s"
    );

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops on cancel")
        .unwrap();
}
