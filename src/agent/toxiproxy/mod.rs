//! Toxiproxy's HTTP API on the agent, so Toxiproxy's clients drive chaosbot's proxies.
//!
//! Served on its own listener (agent.toml `[toxiproxy] listen`, by default 127.0.0.1:8474 as
//! Toxiproxy; the local agent only with `--toxiproxy`). The routes, JSON shapes, status codes
//! and error bodies are Shopify/toxiproxy's (`api.go`; shapes in [`model`]):
//!
//! | route                                          | answer                           |
//! |------------------------------------------------|----------------------------------|
//! | `GET /version`                                 | `{"version": ...}`               |
//! | `GET /proxies`                                 | every proxy, a map by name       |
//! | `POST /proxies`                                | the new proxy (201)              |
//! | `POST /populate`                               | `{"proxies": [...]}` (201)       |
//! | `GET, POST, PATCH, DELETE /proxies/{p}`        | the proxy; DELETE 204            |
//! | `GET, POST /proxies/{p}/toxics`                | the toxics; the new toxic (200)  |
//! | `GET, POST, PATCH, DELETE /proxies/{p}/toxics/{t}` | the toxic; DELETE 204        |
//! | `POST /reset`                                  | 204                              |
//!
//! Errors are `{"error": ..., "status": ...}`: 400 bad body or field, 404 unknown proxy or
//! toxic (and unknown routes), 405 a known route with another method, 409 a duplicate, 403 a
//! browser (`User-Agent: Mozilla/...`, as Toxiproxy, so a web page cannot drive it).
//!
//! Where chaosbot differs, on purpose:
//! - Every toxic made here (and every `enabled: false`) goes away by itself after
//!   `toxic_deadline` (1 h by default), and each change is an audit line (`chaosbot::audit`).
//! - A toxic may carry `"seed"`; its random decisions follow it (else a random seed).
//! - Proxies of the agent's config are listed and take toxics, but are not moved or deleted
//!   here (403); toxics a run holds under a lease are listed by their step name and changed
//!   only by the run (409). `/reset` removes only what this API made.
//! - A proxy made without `listen` listens on 127.0.0.1 (Toxiproxy: every interface).
//! - The API has no authentication, like Toxiproxy's: a non-loopback listen needs
//!   `allow_remote = true`.

mod model;
mod ops;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tracing::{info, warn};

pub use model::ApiError;
use model::{ProxyInput, ToxicInput, parse_body};
pub use ops::Toxiproxy;

use super::api::Peer;
use super::core::AgentCore;

type Shared = Arc<Toxiproxy>;

/// Binds the API and serves it on its own thread and runtime, so a request is not queued
/// behind the proxies' data path (busy copying on a saturated link) on the agent's runtime;
/// what starts proxies still runs on the agent's runtime ([`Toxiproxy::on_main`]). A port in
/// use is a warning (the agent runs on without it), not a failed start. The task returned
/// stands for the API: aborting it stops the API's thread.
pub async fn start(
    core: AgentCore,
    listen: SocketAddr,
    deadline: std::time::Duration,
) -> Option<(Shared, tokio::task::JoinHandle<()>)> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%listen, error = %e, "cannot listen for the Toxiproxy API; the agent runs without it. Stop what holds the port (a real Toxiproxy?) or set [toxiproxy] listen in agent.toml");
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    let shared = Arc::new(Toxiproxy::new(core, deadline));
    let app = router(shared.clone());
    let std_listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            warn!(%listen, error = %e, "cannot hand the Toxiproxy API's socket to its thread; the agent runs without the API");
            return None;
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let thread_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("toxiproxy-api".into())
        .spawn(move || serve_thread(std_listener, app, thread_stop));
    if let Err(e) = spawned {
        warn!(%listen, error = %e, "cannot start the Toxiproxy API's thread; the agent runs without the API");
        return None;
    }
    info!(listen = %bound, toxic_deadline = ?deadline, "Toxiproxy API listening");
    let task = tokio::spawn(async move {
        let _stop = stop.drop_guard();
        std::future::pending::<()>().await
    });
    Some((shared, task))
}

/// The API's thread: a runtime of its own accepting and answering until `stop`.
fn serve_thread(
    listener: std::net::TcpListener,
    app: Router,
    stop: tokio_util::sync::CancellationToken,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(error = %e, "cannot start the Toxiproxy API's runtime; the API is off");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "Toxiproxy API: cannot register its socket; the API is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((s, addr)) => {
                        let app = app.clone();
                        tokio::spawn(super::server::serve_conn(s, app, Peer(addr.to_string())));
                    }
                    Err(e) => {
                        warn!(error = %e, "Toxiproxy API: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
}

fn with_405(m: MethodRouter<Shared>) -> MethodRouter<Shared> {
    m.fallback(method_not_allowed)
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/version", with_405(get(version)))
        .route("/reset", with_405(post(reset)))
        .route("/proxies", with_405(get(index).post(create)))
        .route("/populate", with_405(post(populate)))
        .route(
            "/proxies/{proxy}",
            with_405(get(show).post(update).patch(update).delete(delete)),
        )
        .route(
            "/proxies/{proxy}/toxics",
            with_405(get(toxics).post(add_toxic)),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            with_405(
                get(toxic)
                    .post(update_toxic)
                    .patch(update_toxic)
                    .delete(remove_toxic),
            ),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Browsers are refused (as Toxiproxy: a page must not reach a local API); every request
/// counts as activity for the local agent's idle exit.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua.starts_with("Mozilla/") {
        let peer = req.extensions().get::<Peer>().map(|p| p.0.clone());
        warn!(target: "chaosbot::audit", peer = ?peer, user_agent = ua, "Toxiproxy API: a browser was refused");
        return ApiError::new(StatusCode::FORBIDDEN, "User agent not allowed").into_response();
    }
    s.core().touch().await;
    next.run(req).await
}

fn reply<T: serde::Serialize>(status: StatusCode, r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn done(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!(
            "{{\"version\": \"{}\"}}\n",
            concat!(env!("CARGO_PKG_VERSION"), "-chaosbot")
        ),
    )
        .into_response()
}

async fn index(State(s): State<Shared>) -> Response {
    (StatusCode::OK, axum::Json(s.index().await)).into_response()
}

async fn create(State(s): State<Shared>, body: Bytes) -> Response {
    let r = match parse_body::<ProxyInput>(&body) {
        Ok(input) => s.on_main(|s| async move { s.create(input).await }).await,
        Err(e) => Err(e),
    };
    reply(StatusCode::CREATED, r)
}

async fn populate(State(s): State<Shared>, body: Bytes) -> Response {
    let inputs = match parse_body::<Vec<ProxyInput>>(&body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let (proxies, err) = match s
        .on_main(|s| async move { Ok(s.populate(inputs).await) })
        .await
    {
        Ok(r) => r,
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut out = serde_json::json!({ "proxies": proxies });
    let status = match err {
        None => StatusCode::CREATED,
        Some(e) => {
            out["error"] = e.error.clone().into();
            out["status"] = e.status.into();
            e.status_code()
        }
    };
    (status, axum::Json(out)).into_response()
}

async fn show(State(s): State<Shared>, UrlPath(p): UrlPath<String>) -> Response {
    reply(StatusCode::OK, s.show(&p).await)
}

async fn update(State(s): State<Shared>, UrlPath(p): UrlPath<String>, body: Bytes) -> Response {
    let r = match parse_body::<ProxyInput>(&body) {
        Ok(input) => {
            s.on_main(|s| async move { s.update(&p, input).await })
                .await
        }
        Err(e) => Err(e),
    };
    reply(StatusCode::OK, r)
}

async fn delete(State(s): State<Shared>, UrlPath(p): UrlPath<String>) -> Response {
    done(s.on_main(|s| async move { s.delete(&p).await }).await)
}

async fn reset(State(s): State<Shared>) -> Response {
    done(s.on_main(|s| async move { s.reset().await }).await)
}

async fn toxics(State(s): State<Shared>, UrlPath(p): UrlPath<String>) -> Response {
    reply(StatusCode::OK, s.toxics(&p).await)
}

async fn add_toxic(State(s): State<Shared>, UrlPath(p): UrlPath<String>, body: Bytes) -> Response {
    let r = match parse_body::<ToxicInput>(&body) {
        Ok(input) => s.add_toxic(&p, input).await,
        Err(e) => Err(e),
    };
    // Toxiproxy answers a new toxic with 200, not 201.
    reply(StatusCode::OK, r)
}

async fn toxic(State(s): State<Shared>, UrlPath((p, t)): UrlPath<(String, String)>) -> Response {
    reply(StatusCode::OK, s.toxic(&p, &t).await)
}

async fn update_toxic(
    State(s): State<Shared>,
    UrlPath((p, t)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let r = match parse_body::<ToxicInput>(&body) {
        Ok(input) => s.update_toxic(&p, &t, input).await,
        Err(e) => Err(e),
    };
    reply(StatusCode::OK, r)
}

async fn remove_toxic(
    State(s): State<Shared>,
    UrlPath((p, t)): UrlPath<(String, String)>,
) -> Response {
    done(s.remove_toxic(&p, &t).await)
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}; see Toxiproxy's API for the methods of each route",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no Toxiproxy route {} {}; the routes are /version, /proxies, /populate, /reset, /proxies/{{name}}, /proxies/{{name}}/toxics and /proxies/{{name}}/toxics/{{toxic}}",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}
