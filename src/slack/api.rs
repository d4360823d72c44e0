//! The Slack Web API as chaosbot uses it: JSON in, JSON out, with errors a caller can act on
//! (rate limits with their Retry-After, server errors, network errors, Slack's own `ok: false`).
//!
//! [`HttpSlackApi`] implements [`SlackApi`] over HTTP; its base URL comes from `SLACK_API_URL`,
//! so tests can point it at a fake Slack.

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

    /// Calls a Web API method with its arguments in the query string (a GET). Some methods,
    /// such as `files.getUploadURLExternal`, do not read JSON bodies.
    async fn call_get(
        &self,
        method: &str,
        _params: &[(&str, String)],
    ) -> Result<serde_json::Value, ApiError> {
        Err(ApiError::Refused(format!(
            "{method} over GET is not supported here"
        )))
    }

    /// POSTs raw bytes to a URL Slack handed out (a file upload URL).
    async fn post_bytes(&self, _url: &str, _bytes: Vec<u8>) -> Result<(), ApiError> {
        Err(ApiError::Refused(
            "uploading bytes is not supported here".into(),
        ))
    }
}

/// Uploads a file to `channel` through Slack's external upload flow: `files.getUploadURLExternal`
/// (a URL and a file id for this many bytes), a POST of the bytes to that URL, then
/// `files.completeUploadExternal` shares it in the channel. Needs the `files:write` scope.
/// Returns the file id. (Flow as described on docs.slack.dev, "Uploading files".)
pub async fn upload_file(
    api: &dyn SlackApi,
    channel: &str,
    filename: &str,
    title: &str,
    bytes: &[u8],
) -> Result<String, ApiError> {
    upload_file_to(api, channel, None, filename, title, bytes).await
}

/// [`upload_file`] into a thread: `thread_ts` is the parent message's `ts`.
pub async fn upload_file_to(
    api: &dyn SlackApi,
    channel: &str,
    thread_ts: Option<&str>,
    filename: &str,
    title: &str,
    bytes: &[u8],
) -> Result<String, ApiError> {
    let file_id = upload_unshared(api, filename, bytes).await?;
    share_uploaded(api, &file_id, channel, thread_ts, title).await?;
    Ok(file_id)
}

/// The first two steps of the external upload flow: the file is in Slack, seen by no one yet.
/// Returns its id.
pub async fn upload_unshared(
    api: &dyn SlackApi,
    filename: &str,
    bytes: &[u8],
) -> Result<String, ApiError> {
    let ticket = api
        .call_get(
            "files.getUploadURLExternal",
            &[
                ("filename", filename.to_string()),
                ("length", bytes.len().to_string()),
            ],
        )
        .await?;
    let (Some(url), Some(file_id)) = (ticket["upload_url"].as_str(), ticket["file_id"].as_str())
    else {
        return Err(ApiError::Refused(
            "files.getUploadURLExternal answered without upload_url or file_id".into(),
        ));
    };
    api.post_bytes(url, bytes.to_vec()).await?;
    Ok(file_id.to_string())
}

/// The last step: `files.completeUploadExternal` shares the uploaded file in `channel` (in the
/// thread of `thread_ts`, when given) as a message carrying it.
pub async fn share_uploaded(
    api: &dyn SlackApi,
    file_id: &str,
    channel: &str,
    thread_ts: Option<&str>,
    title: &str,
) -> Result<(), ApiError> {
    let mut complete = serde_json::json!({
        "files": [{"id": file_id, "title": title}],
        "channel_id": channel,
    });
    if let Some(ts) = thread_ts {
        complete["thread_ts"] = serde_json::json!(ts);
    }
    api.call("files.completeUploadExternal", complete).await?;
    Ok(())
}

/// How long one Web API call may take before it counts as a network error (a hanging Slack
/// must not hold a thread's delivery forever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when a 429 carries no (readable) `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiInitError {
    #[error("SLACK_API_URL `{0}` is not a URL (expected something like https://slack.com/api/)")]
    BadUrl(String),
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// [`SlackApi`] over HTTP, on slack-morphism's hyper connector.
///
/// slack-morphism's typed methods are not used: the outbox needs raw JSON bodies and answers,
/// and the connector's `http_post_uri` with `serde_json::Value` gives exactly that while still
/// mapping 429 + `Retry-After`, HTTP statuses and `ok: false` for us. Its rate control stays off:
/// it keys `chat.postMessage` per team, and the outbox paces per message itself.
pub struct HttpSlackApi {
    connector: slack_morphism::hyper_tokio::SlackClientHyperConnector<HttpsConnector>,
    base: url::Url,
    token: slack_morphism::SlackApiToken,
    timeout: Duration,
}

/// Installs rustls' ring provider once for the process. reqwest and slack-morphism can pull in
/// different providers; with two compiled in, rustls refuses to pick one by itself.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn https_or_http() -> HttpsConnector {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            // Without system roots https cannot be verified; plain http (a local fake) still works.
            tracing::warn!(error = %e, "no native TLS roots found; https calls to Slack will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build()
}

impl HttpSlackApi {
    /// `base_url` is the Web API root ending in `/` (e.g. [`crate::config::DEFAULT_SLACK_API_URL`]
    /// or a fake's URL); `token` is the bot token (or the app token, for Socket Mode).
    pub fn new(base_url: &str, token: &str) -> Result<Self, ApiInitError> {
        install_crypto_provider();
        let mut base = base_url.trim().to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let base = url::Url::parse(&base).map_err(|_| ApiInitError::BadUrl(base_url.into()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ApiInitError::BadUrl(base_url.into()));
        }
        let connector =
            slack_morphism::hyper_tokio::SlackClientHyperConnector::with_connector(https_or_http());
        Ok(HttpSlackApi {
            connector,
            base,
            token: slack_morphism::SlackApiToken::new(slack_morphism::SlackApiTokenValue(
                token.to_string(),
            )),
            timeout: CALL_TIMEOUT,
        })
    }

    /// Overrides the per-call timeout (default [`CALL_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Maps slack-morphism's error to what a caller can act on.
fn map_error(err: slack_morphism::errors::SlackClientError) -> ApiError {
    use slack_morphism::errors::SlackClientError as E;
    match err {
        E::ApiError(e) if e.code == "ratelimited" => ApiError::RateLimited {
            retry_after: DEFAULT_RETRY_AFTER,
        },
        // Slack's own transient failures (the Web API's common errors: "likely due to a
        // transient issue on our end", and some of the call may have been carried out): as a
        // lost answer, tried again after looking whether it took effect.
        E::ApiError(e)
            if matches!(
                e.code.as_str(),
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
            ) =>
        {
            ApiError::Network(format!("Slack answered `{}`", e.code))
        }
        E::ApiError(e) => ApiError::Refused(e.code),
        E::RateLimitError(e) => ApiError::RateLimited {
            retry_after: e.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        E::HttpError(e) if e.status_code.is_server_error() => {
            ApiError::Server(e.status_code.as_u16())
        }
        E::HttpError(e) => ApiError::Refused(format!("HTTP {}", e.status_code.as_u16())),
        // Broken connections, truncated or unparseable answers: try again later.
        other => ApiError::Network(other.to_string()),
    }
}

#[async_trait::async_trait]
impl SlackApi for HttpSlackApi {
    async fn call(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        use slack_morphism::SlackClientHttpConnector;
        let uri = self
            .base
            .join(method)
            .map_err(|_| ApiError::Refused(format!("bad method name `{method}`")))?;
        let span = tracing::debug_span!("slack_api", method);
        let context = slack_morphism::SlackClientApiCallContext {
            rate_control_params: None,
            token: Some(&self.token),
            tracing_span: &span,
            is_sensitive_url: false,
        };
        let call = self
            .connector
            .http_post_uri::<serde_json::Value, serde_json::Value>(uri, &body, context);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(map_error(e)),
            Err(_) => Err(ApiError::Network(format!(
                "no answer to {method} within {:?}",
                self.timeout
            ))),
        }
    }

    async fn call_get(
        &self,
        method: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, ApiError> {
        use slack_morphism::SlackClientHttpConnector;
        let mut uri = self
            .base
            .join(method)
            .map_err(|_| ApiError::Refused(format!("bad method name `{method}`")))?;
        uri.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let span = tracing::debug_span!("slack_api", method);
        let context = slack_morphism::SlackClientApiCallContext {
            rate_control_params: None,
            token: Some(&self.token),
            tracing_span: &span,
            is_sensitive_url: false,
        };
        let call = self
            .connector
            .http_get_uri::<serde_json::Value>(uri, context);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(map_error(e)),
            Err(_) => Err(ApiError::Network(format!(
                "no answer to {method} within {:?}",
                self.timeout
            ))),
        }
    }

    async fn post_bytes(&self, url: &str, bytes: Vec<u8>) -> Result<(), ApiError> {
        use http_body_util::Full;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| ApiError::Refused(format!("Slack's upload URL `{url}` is not a URL")))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<bytes::Bytes>>(https_or_http());
        let request = hyper::Request::post(uri)
            .header("content-type", "application/octet-stream")
            .body(Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| ApiError::Refused(format!("cannot build the upload request: {e}")))?;
        let answer = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(ApiError::Network(format!("upload failed: {e}"))),
            Err(_) => {
                return Err(ApiError::Network(format!(
                    "the upload got no answer within {:?}",
                    self.timeout
                )));
            }
        };
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() {
            Err(ApiError::Server(status.as_u16()))
        } else {
            Err(ApiError::Refused(format!(
                "the upload URL answered HTTP {}",
                status.as_u16()
            )))
        }
    }
}
