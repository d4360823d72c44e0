//! The Slack Web API as chaosbot uses it: JSON in, JSON out, with errors a caller can act on
//! (rate limits with their Retry-After, server errors, network errors, Slack's own `ok: false`).
//!
//! CONTRACT: the outbox work implements [`SlackApi`] over HTTP (base URL from `SLACK_API_URL`,
//! so tests can point it at a fake Slack).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// HTTP 429: wait `retry_after` before calling again.
    #[error("rate limited by Slack; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// HTTP 5xx: Slack had a problem; retry with backoff.
    #[error("Slack answered HTTP {0}")]
    Server(u16),
    /// No answer, or a broken connection; retry with backoff.
    #[error("cannot reach Slack: {0}")]
    Network(String),
    /// Slack answered `ok: false` (e.g. `channel_not_found`); retrying will not help.
    #[error("Slack refused the call: {0}")]
    Refused(String),
}

impl ApiError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ApiError::Refused(_))
    }
}

#[async_trait::async_trait]
pub trait SlackApi: Send + Sync {
    /// Calls a Web API method (`chat.postMessage`, `views.open`, ...) with a JSON body and
    /// returns Slack's JSON answer when it says `ok: true`.
    async fn call(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError>;
}
