//! Socket Mode: Slack pushes slash commands, events and interactions over a WebSocket, so the
//! bot needs no public URL.
//!
//! Written on tokio-tungstenite rather than slack-morphism's `SlackClientSocketModeListener`:
//! that listener parses payloads into its own typed models (we hand the raw JSON to the same
//! functions the HTTP routes use), acks interactions without a response payload (modal
//! `response_action`s need one), and stops on process signals instead of a cancellation token.
//! `apps.connections.open` goes through [`HttpSlackApi`] with the app token, so it follows the
//! configured API URL (a fake in tests).

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::slack::api::{ApiError, ApiInitError, HttpSlackApi, SlackApi};
use crate::slack::outbox::backoff;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    SlashCommands,
    EventsApi,
    Interactive,
}

impl SocketKind {
    fn parse(kind: &str) -> Option<SocketKind> {
        match kind {
            "slash_commands" => Some(SocketKind::SlashCommands),
            "events_api" => Some(SocketKind::EventsApi),
            "interactive" => Some(SocketKind::Interactive),
            _ => None,
        }
    }
}

/// Answers envelopes. The answer becomes the ack's `payload` (the slash command's reply, a
/// modal's `response_action`); it must come within Slack's 3 s, so spawn any longer work.
#[async_trait::async_trait]
pub trait SocketHandler: Send + Sync {
    async fn handle(&self, kind: SocketKind, payload: Value) -> Option<Value>;
}

#[derive(Debug, Clone)]
pub struct SocketModeOptions {
    /// A handler slower than this is acked without a payload (Slack retries after 3 s).
    pub ack_deadline: Duration,
    /// Reconnect backoff after failures (doubling, jittered).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for SocketModeOptions {
    fn default() -> Self {
        SocketModeOptions {
            ack_deadline: Duration::from_millis(2500),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("apps.connections.open failed: {0}")]
    Open(#[from] ApiError),
    #[error("apps.connections.open answered without a url")]
    NoUrl,
    #[error("WebSocket connect failed: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

/// How a connection ended.
enum Ended {
    Cancelled,
    /// Closed after `hello`: the connection worked, reconnect at once.
    AfterHello,
    /// Closed before `hello`: count as a failure.
    BeforeHello,
}

pub struct SocketModeClient {
    api: Arc<dyn SlackApi>,
    handler: Arc<dyn SocketHandler>,
    opts: SocketModeOptions,
}

impl SocketModeClient {
    /// `api_url`: the Web API base (`SLACK_API_URL`); `app_token`: the `xapp-…` token.
    pub fn new(
        api_url: &str,
        app_token: &str,
        handler: Arc<dyn SocketHandler>,
    ) -> Result<Self, ApiInitError> {
        let api = HttpSlackApi::new(api_url, app_token)?;
        Ok(Self::with_api(Arc::new(api), handler))
    }

    /// With any [`SlackApi`] authenticated by the app token.
    pub fn with_api(api: Arc<dyn SlackApi>, handler: Arc<dyn SocketHandler>) -> Self {
        SocketModeClient {
            api,
            handler,
            opts: SocketModeOptions::default(),
        }
    }

    pub fn with_options(mut self, opts: SocketModeOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Spawns [`SocketModeClient::run`].
    pub fn start(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(cancel))
    }

    /// Connects, serves, and reconnects until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut failures: i64 = 0;
        while !cancel.is_cancelled() {
            let ended = match self.connect().await {
                Ok(ws) => self.serve(ws, &cancel).await,
                Err(e) => {
                    tracing::warn!(error = %e, "Socket Mode connection failed");
                    Ended::BeforeHello
                }
            };
            let delay = match ended {
                Ended::Cancelled => break,
                Ended::AfterHello => {
                    failures = 0;
                    Duration::ZERO
                }
                Ended::BeforeHello => {
                    failures += 1;
                    backoff(failures, self.opts.backoff_base, self.opts.backoff_max)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!("Socket Mode stopped");
    }

    async fn connect(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        ConnectError,
    > {
        let answer = self.api.call("apps.connections.open", json!({})).await?;
        let url = answer
            .get("url")
            .and_then(Value::as_str)
            .ok_or(ConnectError::NoUrl)?;
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    async fn serve<S>(
        &self,
        ws: tokio_tungstenite::WebSocketStream<S>,
        cancel: &CancellationToken,
    ) -> Ended
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        // Handlers run as tasks; their acks come back here, the one writer of the socket.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Value>();
        let mut hello = false;
        let ended = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ended::Cancelled;
                }
                Some(ack) = ack_rx.recv() => {
                    if let Err(e) = sink.send(Message::text(ack.to_string())).await {
                        tracing::warn!(error = %e, "Socket Mode ack not sent; reconnecting");
                        break Ended::AfterHello;
                    }
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        match self.on_text(text.as_str(), &ack_tx) {
                            Incoming::Hello => {
                                hello = true;
                                tracing::info!("Socket Mode connected");
                            }
                            Incoming::Disconnect => {
                                tracing::info!("Slack asked to reconnect");
                                break Ended::AfterHello;
                            }
                            Incoming::Other => {}
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break Ended::AfterHello,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Socket Mode read failed");
                        break Ended::AfterHello;
                    }
                    Some(Ok(_)) => {}
                },
            }
        };
        match ended {
            Ended::AfterHello if !hello => Ended::BeforeHello,
            other => other,
        }
    }

    fn on_text(&self, text: &str, acks: &mpsc::UnboundedSender<Value>) -> Incoming {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("Socket Mode message is not JSON; ignored");
            return Incoming::Other;
        };
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "hello" => return Incoming::Hello,
            "disconnect" => return Incoming::Disconnect,
            _ => {}
        }
        let Some(envelope_id) = msg.get("envelope_id").and_then(Value::as_str) else {
            tracing::debug!(kind, "Socket Mode message without envelope_id; ignored");
            return Incoming::Other;
        };
        let envelope_id = envelope_id.to_string();
        let Some(kind) = SocketKind::parse(kind) else {
            // Ack what we do not handle, so Slack does not resend it.
            tracing::debug!(kind, "unhandled Socket Mode envelope; acked");
            let _ = acks.send(json!({ "envelope_id": envelope_id }));
            return Incoming::Other;
        };
        let payload = msg.get("payload").cloned().unwrap_or(Value::Null);
        let handler = self.handler.clone();
        let acks = acks.clone();
        let deadline = self.opts.ack_deadline;
        tokio::spawn(async move {
            let work = tokio::spawn(async move { handler.handle(kind, payload).await });
            let response = match tokio::time::timeout(deadline, work).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, ?kind, "Socket Mode handler panicked");
                    None
                }
                Err(_) => {
                    // The handler keeps running; Slack only needs the ack now.
                    tracing::warn!(
                        ?kind,
                        ?deadline,
                        "Socket Mode handler too slow; acked without payload"
                    );
                    None
                }
            };
            let ack = match response {
                Some(payload) => json!({ "envelope_id": envelope_id, "payload": payload }),
                None => json!({ "envelope_id": envelope_id }),
            };
            // Err: the connection is gone; Slack resends unacked envelopes after reconnecting.
            let _ = acks.send(ack);
        });
        Incoming::Other
    }
}

enum Incoming {
    Hello,
    Disconnect,
    Other,
}
