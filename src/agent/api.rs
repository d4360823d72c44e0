//! The agent's HTTP API ([`super::protocol`]): the routes, and the guard in front of them.
//!
//! Auth: `Authorization: Bearer <secret>`, compared in constant time. A Unix socket with no
//! secret configured needs no header (its mode, 0600 in a 0700 directory, is the credential).
//! `GET /metrics` needs no auth on a socket or loopback, and the secret over TLS. A refused
//! credential is logged on the `chaosbot::audit` target. Every other request must carry
//! `x-chaosbot-protocol: 1`.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tracing::warn;

use super::core::{AgentCore, Refusal};
use super::protocol::{self, ErrorBody};
use crate::config::Secret;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Transport {
    Unix,
    Tcp,
    Tls,
}

pub(super) struct Served {
    pub(super) core: AgentCore,
    pub(super) secret: Option<Secret>,
    pub(super) transport: Transport,
}

/// Who is on the other end of a connection (for the audit log).
#[derive(Clone)]
pub(super) struct Peer(pub(super) String);

/// The process-wide Prometheus recorder, installed once.
pub(super) fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot install the Prometheus recorder; /metrics stays empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    })
}

pub(super) fn router(served: Arc<Served>) -> Router {
    Router::new()
        .route("/v1/hello", get(hello))
        .route("/v1/proxies", post(proxies))
        .route("/v1/faults", post(apply).get(faults))
        .route("/v1/leases", post(renew))
        .route("/v1/faults/{id}/revert", post(revert))
        .route("/metrics", get(metrics_page))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(served.clone(), guard))
        .with_state(served)
}

fn refusal_response(r: &Refusal) -> Response {
    let status = match r.code {
        protocol::CODE_UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
        protocol::CODE_HELD | protocol::CODE_STALE_EPOCH => StatusCode::CONFLICT,
        protocol::CODE_FORBIDDEN => StatusCode::FORBIDDEN,
        protocol::CODE_NOT_FOUND => StatusCode::NOT_FOUND,
        protocol::CODE_FAULT => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, axum::Json(r.body())).into_response()
}

fn answer<T: serde::Serialize>(status: StatusCode, r: Result<T, Refusal>) -> Response {
    match r {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(r) => refusal_response(&r),
    }
}

/// Auth, then the protocol version, then the request counts as activity.
async fn guard(State(s): State<Arc<Served>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let metrics = path == "/metrics";
    if !(metrics && s.transport != Transport::Tls)
        && let Err(why) = check_auth(&s, req.headers())
    {
        let peer = req
            .extensions()
            .get::<Peer>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        warn!(target: "chaosbot::audit", peer = %peer, path = %path, why, "agent request refused");
        return refusal_response(&Refusal::new(
            protocol::CODE_UNAUTHENTICATED,
            format!("{why}; send `Authorization: Bearer <secret>` with the agent's secret"),
        ));
    }
    if !metrics {
        let theirs = req
            .headers()
            .get(protocol::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if theirs.as_deref() != Some(&protocol::PROTOCOL_VERSION.to_string()) {
            return refusal_response(&Refusal::new(
                protocol::CODE_PROTOCOL,
                format!(
                    "this agent speaks protocol {} and the request says {} (header {}); run the same chaosbot version on both sides",
                    protocol::PROTOCOL_VERSION,
                    theirs.unwrap_or_else(|| "none".into()),
                    protocol::PROTOCOL_HEADER
                ),
            ));
        }
    }
    s.core.touch().await;
    next.run(req).await
}

fn check_auth(s: &Served, headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(secret) = &s.secret else {
        // Only a Unix socket may run without a secret (the config refuses it elsewhere).
        return if s.transport == Transport::Unix {
            Ok(())
        } else {
            Err("the agent has no secret")
        };
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "an unreadable Authorization header")?
        .strip_prefix("Bearer ")
        .ok_or("the Authorization header is not `Bearer <secret>`")?;
    if bool::from(given.as_bytes().ct_eq(secret.expose().as_bytes())) {
        Ok(())
    } else {
        Err("a wrong secret")
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            protocol::CODE_BAD_REQUEST,
            format!("the body is not a valid {what} request: {e}"),
        )
    })
}

async fn hello(State(s): State<Arc<Served>>) -> Response {
    answer::<_>(StatusCode::OK, Ok::<_, Refusal>(s.core.hello().await))
}

async fn faults(State(s): State<Arc<Served>>) -> Response {
    answer::<_>(StatusCode::OK, Ok::<_, Refusal>(s.core.faults().await))
}

async fn proxies(State(s): State<Arc<Served>>, body: Bytes) -> Response {
    let r = match parse(&body, "proxies") {
        Ok(req) => s.core.proxies_up(&req).await,
        Err(r) => Err(r),
    };
    answer(StatusCode::OK, r)
}

async fn apply(State(s): State<Arc<Served>>, body: Bytes) -> Response {
    let r = match parse(&body, "apply") {
        Ok(req) => s.core.apply(&req).await,
        Err(r) => Err(r),
    };
    answer(StatusCode::CREATED, r)
}

async fn renew(State(s): State<Arc<Served>>, body: Bytes) -> Response {
    let r = match parse(&body, "renew") {
        Ok(req) => s.core.renew(&req).await,
        Err(r) => Err(r),
    };
    answer(StatusCode::OK, r)
}

async fn revert(
    State(s): State<Arc<Served>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let r = match parse(&body, "revert") {
        Ok(req) => s.core.revert(&id, &req).await,
        Err(r) => Err(r),
    };
    answer(StatusCode::OK, r)
}

async fn metrics_page() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics_handle().render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    let body = ErrorBody {
        code: protocol::CODE_NOT_FOUND.into(),
        message: format!(
            "no such agent API: {} {}; see the protocol table in the docs",
            req.method(),
            req.uri().path()
        ),
        holder: None,
    };
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
