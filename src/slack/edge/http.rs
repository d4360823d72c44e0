//! The HTTP edge: Slack's three request URLs plus `/healthz` and `/metrics`.
//!
//! Every Slack request is size-capped and signature-checked on its raw bytes before anything
//! parses it; forged, unsigned or stale requests get 401 and nothing else happens. Handlers
//! answer within Slack's 3 s: slow work is spawned, and a handler that still runs after
//! [`ANSWER_WITHIN`] is answered for and left to finish in the background.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tracing::{error, warn};

use super::verify::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER, VerifyError};
use super::{SlackApp, SlashCommand};
use crate::slack::blocks::Reply;

/// Slack's payloads are a few KiB; anything this big is not from Slack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Slack gives up after 3 s; leave room for the network.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(2500);

const REQUESTS: &str = "chaosbot_slack_requests_total";
const LATENCY: &str = "chaosbot_slack_handler_seconds";

/// The process-wide Prometheus recorder, installed once.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(h) => h,
            Err(e) => {
                // Someone else installed a global recorder first; serve an empty page rather
                // than fail the server.
                warn!(error = %e, "cannot install the Prometheus recorder; /metrics stays empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

pub fn router(app: Arc<SlackApp>) -> Router {
    metrics_handle();
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/events", post(events))
        .route("/slack/interactions", post(interactions))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .with_state(app)
}

fn record(route: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!(REQUESTS, "route" => route, "outcome" => outcome).increment(1);
    metrics::histogram!(LATENCY, "route" => route).record(started.elapsed().as_secs_f64());
}

/// Reads the body (capped) and checks its signature; the error is the response to send.
async fn signed_body(
    app: &SlackApp,
    route: &'static str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, (StatusCode, &'static str)> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        warn!(route, "request body above {MAX_BODY_BYTES} bytes refused");
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            warn!(route, error = %e, "cannot read the request body (or it is above {MAX_BODY_BYTES} bytes)");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
        }
    };
    let Some(secret) = app.cfg.slack.signing_secret.as_ref() else {
        error!(
            route,
            "no Slack signing secret configured (SLACK_SIGNING_SECRET); refusing every Slack request"
        );
        return Err((StatusCode::UNAUTHORIZED, "unauthorized"));
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let now = chrono::Utc::now().timestamp();
    match verify::verify(
        secret.expose(),
        h(TIMESTAMP_HEADER),
        h(SIGNATURE_HEADER),
        &bytes,
        now,
    ) {
        Ok(()) => Ok(bytes),
        Err(e) => {
            let kind = match e {
                VerifyError::MissingHeader(_) => "unsigned",
                VerifyError::Malformed { .. } => "malformed",
                VerifyError::Stale { .. } => "stale",
                VerifyError::Mismatch => "forged",
            };
            warn!(route, kind, error = %e, "Slack request refused");
            Err((StatusCode::UNAUTHORIZED, "unauthorized"))
        }
    }
}

fn json_response(v: Value) -> Response {
    if v.is_null() {
        StatusCode::OK.into_response()
    } else {
        axum::Json(v).into_response()
    }
}

/// Runs `work` in its own task and answers with its result, or with `late` if it is not done
/// within [`ANSWER_WITHIN`] (the task then finishes in the background).
async fn answer_in_time<F>(route: &'static str, work: F, late: Value) -> (Value, &'static str)
where
    F: Future<Output = Value> + Send + 'static,
{
    let task = tokio::spawn(work);
    match tokio::time::timeout(ANSWER_WITHIN, task).await {
        Ok(Ok(v)) => (v, "ok"),
        Ok(Err(e)) => {
            error!(route, error = %e, "handler task failed");
            (
                Reply::error("something went wrong inside chaosbot; nothing was changed. Try again, and tell its operator if it persists").ephemeral(),
                "error",
            )
        }
        Err(_) => {
            warn!(
                route,
                "handler slower than {ANSWER_WITHIN:?}; answered early"
            );
            (late, "late")
        }
    }
}

async fn commands(State(app): State<Arc<SlackApp>>, headers: HeaderMap, body: Body) -> Response {
    const ROUTE: &str = "commands";
    let started = Instant::now();
    let bytes = match signed_body(&app, ROUTE, &headers, body).await {
        Ok(b) => b,
        Err((status, outcome)) => {
            record(ROUTE, outcome, started);
            return status.into_response();
        }
    };
    let cmd = match SlashCommand::from_form(&bytes) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "malformed slash command body");
            record(ROUTE, "bad_request", started);
            return json_response(Reply::error(e.to_string()).ephemeral());
        }
    };
    let late = Reply::simple(
        "Still working on that; if it was a `start`, `status` shows the run in a moment.",
    )
    .ephemeral();
    let (v, outcome) =
        answer_in_time(ROUTE, async move { app.handle_command(cmd).await }, late).await;
    record(ROUTE, outcome, started);
    json_response(v)
}

async fn events(State(app): State<Arc<SlackApp>>, headers: HeaderMap, body: Body) -> Response {
    const ROUTE: &str = "events";
    let started = Instant::now();
    let bytes = match signed_body(&app, ROUTE, &headers, body).await {
        Ok(b) => b,
        Err((status, outcome)) => {
            record(ROUTE, outcome, started);
            return status.into_response();
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "malformed Events API body");
            record(ROUTE, "bad_request", started);
            return (StatusCode::BAD_REQUEST, "expected a JSON Events API body").into_response();
        }
    };
    let retry = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    let answer = app.handle_event(body, retry).await;
    record(ROUTE, "ok", started);
    json_response(answer.unwrap_or(Value::Null))
}

async fn interactions(
    State(app): State<Arc<SlackApp>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ROUTE: &str = "interactions";
    let started = Instant::now();
    let bytes = match signed_body(&app, ROUTE, &headers, body).await {
        Ok(b) => b,
        Err((status, outcome)) => {
            record(ROUTE, outcome, started);
            return status.into_response();
        }
    };
    let payload = serde_urlencoded::from_bytes::<HashMap<String, String>>(&bytes)
        .ok()
        .and_then(|mut form| form.remove("payload"))
        .and_then(|p| serde_json::from_str::<Value>(&p).ok());
    let Some(payload) = payload else {
        warn!("interaction without a JSON `payload` form field");
        record(ROUTE, "bad_request", started);
        return (
            StatusCode::BAD_REQUEST,
            "expected a form body with a JSON `payload` field",
        )
            .into_response();
    };
    // Late: an empty answer closes a modal; the outcome still reaches the user through the
    // outbox.
    let (v, outcome) = answer_in_time(
        ROUTE,
        async move { app.handle_interaction(payload).await },
        Value::Null,
    )
    .await;
    record(ROUTE, outcome, started);
    json_response(v)
}

async fn healthz(State(app): State<Arc<SlackApp>>) -> Response {
    let started = Instant::now();
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await,
        Ok(Ok(()))
    );
    record("healthz", if ok { "ok" } else { "unavailable" }, started);
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer\n",
        )
            .into_response()
    }
}

async fn metrics_page() -> Response {
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
