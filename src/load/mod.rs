//! The HTTP load attack: open-loop request generation at a constant rate or a ramp over a
//! fixed pool of keep-alive connections, with latencies measured from each request's
//! *intended* send time (corrected for coordinated omission, as wrk2 and oha's
//! `--latency-correction` do), a per-request timeout, and a breakdown of status codes and
//! errors. Numbers are reported once a second and in total. https targets go over TLS
//! ([`LoadTls`], [`spawn_with_tls`]) with session resumption on reconnects.
//!
//! - [`schedule`]: when each request is due.
//! - `conn`: the connection workers.
//! - [`stats`]: histograms and counts.
//! - [`threshold`]: k6-style pass/fail criteria (`p99 < 300ms`).

mod conn;
pub mod schedule;
pub mod stats;
pub mod threshold;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};

pub use schedule::Schedule;
pub use stats::{ErrorKind, Latencies, LoadFigures};
pub use threshold::{Threshold, ThresholdError};

use stats::Window;

/// What to send, how fast, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Full `http://host:port/path?query` URL.
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub schedule: Schedule,
    /// Keep-alive connections (each carries one request at a time).
    pub connections: usize,
    /// Per request, from connect (when needed) to the last byte of the answer.
    pub timeout: Duration,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load URL `{url}` is not valid: {why}; use an http://host:port/path URL")]
    BadUrl { url: String, why: String },
    #[error(
        "load URL `{0}` is not plain http; the load generator speaks HTTP/1.1 without TLS, point it at an http:// endpoint"
    )]
    UnsupportedScheme(String),
    #[error("`{0}` is not an HTTP method; use GET, POST, PUT, ...")]
    BadMethod(String),
    #[error("header `{name}` cannot be sent: {why}; fix its name or value")]
    BadHeader { name: String, why: String },
    #[error("`connections` must be at least 1")]
    NoConnections,
    #[error(
        "load URL `{0}` is neither http nor https; point it at an http:// or https:// endpoint"
    )]
    BadScheme(String),
    #[error("load URL `{url}`: {source}")]
    Tls {
        url: String,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// TLS for an https load target: one client configuration shared by every connection of the
/// attack (so they share its session cache and reconnections resume), and the name verified.
#[derive(Clone)]
pub struct LoadTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Verified in the certificate, sent as SNI and in `Host` instead of the URL's host.
    pub server_name: Option<String>,
}

impl LoadTls {
    /// Builds the configuration from an endpoint's TLS options (files read and checked).
    pub fn new(opts: &crate::tls::TlsOptions) -> Result<LoadTls, crate::tls::TlsError> {
        Ok(LoadTls {
            config: crate::tls::client_config(opts)?,
            server_name: opts.server_name.clone(),
        })
    }
}

impl std::fmt::Debug for LoadTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What a finished attack measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOutcome {
    /// Over the whole attack (latency corrected for coordinated omission).
    pub total: LoadFigures,
    /// Service time (from the actual send) over the whole attack, for comparison.
    pub service_time: Latencies,
    pub elapsed: Duration,
    /// Stopped before the end of its duration (revert, abort, deadline).
    pub stopped_early: bool,
}

/// A running attack. Dropping the handle does not stop it (its deadline does).
pub struct LoadHandle {
    stop: CancellationToken,
    task: JoinHandle<LoadOutcome>,
}

impl LoadHandle {
    /// Stops sending at once (in-flight requests are abandoned and their connections
    /// closed) and returns the totals.
    pub async fn stop(self) -> Option<LoadOutcome> {
        self.stop.cancel();
        self.task.await.ok()
    }

    /// Waits for the attack to end by itself.
    pub async fn finish(self) -> Option<LoadOutcome> {
        self.task.await.ok()
    }

    /// A token that stops the attack when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

fn template(plan: &LoadPlan, tls: Option<&LoadTls>) -> Result<conn::RequestTemplate, LoadError> {
    let bad = |why: String| LoadError::BadUrl {
        url: plan.url.clone(),
        why,
    };
    let url = url::Url::parse(&plan.url).map_err(|e| bad(e.to_string()))?;
    // https needs its TLS settings; without them the generator stays plain http.
    let tls = match (url.scheme(), tls) {
        ("http", _) => None,
        ("https", Some(tls)) => Some(tls),
        ("https", None) => return Err(LoadError::UnsupportedScheme(plan.url.clone())),
        _ => return Err(LoadError::BadScheme(plan.url.clone())),
    };
    let host = url.host_str().ok_or_else(|| bad("it has no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let tls_target = match tls {
        None => None,
        Some(tls) => {
            let opts = crate::tls::TlsOptions {
                server_name: tls.server_name.clone(),
                ..Default::default()
            };
            let name = crate::tls::server_name(&opts, host).map_err(|source| LoadError::Tls {
                url: plan.url.clone(),
                source,
            })?;
            Some(conn::TlsTarget {
                connector: tokio_rustls::TlsConnector::from(Arc::clone(&tls.config)),
                name,
            })
        }
    };
    // With `server_name`, the server is addressed by that name (as SNI is).
    let named = tls.and_then(|t| t.server_name.as_deref()).unwrap_or(host);
    let authority = match url.port() {
        Some(p) => format!("{named}:{p}"),
        None => named.to_string(),
    };
    let mut pq = url.path().to_string();
    if let Some(q) = url.query() {
        pq.push('?');
        pq.push_str(q);
    }
    // Checked with the `http` types, then written out once.
    let _: Uri = pq
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    let method = Method::from_bytes(plan.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| LoadError::BadMethod(plan.method.clone()))?;
    let mut headers = HeaderMap::new();
    let hv = |name: &str, v: &str| {
        HeaderValue::from_str(v).map_err(|e| LoadError::BadHeader {
            name: name.to_string(),
            why: e.to_string(),
        })
    };
    headers.insert(HOST, hv("host", &authority)?);
    for (k, v) in &plan.headers {
        let name =
            HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| LoadError::BadHeader {
                name: k.clone(),
                why: e.to_string(),
            })?;
        headers.insert(name, hv(k, v)?);
    }
    let body = plan.body.clone().unwrap_or_default();
    // A body is framed by its length; methods that usually carry one say 0 when it is empty
    // (as HTTP clients do), so servers do not wait for a body that never comes.
    let carries_body =
        !body.is_empty() || matches!(method, Method::POST | Method::PUT | Method::PATCH);
    if carries_body && !headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut wire = Vec::with_capacity(256 + body.len());
    wire.extend_from_slice(method.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(pq.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &headers {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(body.as_bytes());
    Ok(conn::RequestTemplate {
        addr,
        wire: Bytes::from(wire),
        head: method == Method::HEAD,
        timeout: plan.timeout,
        tls: tls_target,
    })
}

/// Checks a plan without sending anything (what `spawn` would refuse).
pub fn check(plan: &LoadPlan) -> Result<(), LoadError> {
    check_with_tls(plan, None)
}

/// Like [`check`], for a plan whose https URL uses `tls`.
pub fn check_with_tls(plan: &LoadPlan, tls: Option<&LoadTls>) -> Result<(), LoadError> {
    if plan.connections == 0 {
        return Err(LoadError::NoConnections);
    }
    template(plan, tls).map(|_| ())
}

/// Starts the attack. It ends by itself after `plan.duration` or at `deadline`, whichever
/// comes first; `on_second(n, figures)` is called after each full second (n from 1).
pub fn spawn<F>(
    plan: &LoadPlan,
    deadline: std::time::Instant,
    on_second: F,
) -> Result<LoadHandle, LoadError>
where
    F: Fn(u64, LoadFigures) + Send + 'static,
{
    spawn_with_tls(plan, None, deadline, on_second)
}

/// Like [`spawn`]; an https URL is attacked over TLS with `tls` (required for https).
pub fn spawn_with_tls<F>(
    plan: &LoadPlan,
    tls: Option<&LoadTls>,
    deadline: std::time::Instant,
    on_second: F,
) -> Result<LoadHandle, LoadError>
where
    F: Fn(u64, LoadFigures) + Send + 'static,
{
    if plan.connections == 0 {
        return Err(LoadError::NoConnections);
    }
    let template = template(plan, tls)?;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let until_deadline = deadline.saturating_duration_since(std::time::Instant::now());
    let end = start + plan.duration.min(until_deadline);
    let shared = Arc::new(conn::Shared {
        template,
        schedule: plan.schedule,
        next: AtomicU64::new(0),
        start,
        end,
        stop: stop.child_token(),
    });
    let connections = plan.connections;
    let span = tracing::info_span!("load", url = %plan.url, schedule = %plan.schedule.describe());
    let stop_outer = stop.clone();
    let task = tokio::spawn(
        async move { drive(shared, connections, stop_outer, on_second).await }.instrument(span),
    );
    Ok(LoadHandle { stop, task })
}

async fn drive<F>(
    sh: Arc<conn::Shared>,
    connections: usize,
    stop: CancellationToken,
    on_second: F,
) -> LoadOutcome
where
    F: Fn(u64, LoadFigures) + Send + 'static,
{
    let windows: Vec<Arc<std::sync::Mutex<Window>>> = (0..connections)
        .map(|_| Arc::new(std::sync::Mutex::new(Window::default())))
        .collect();
    // The connection workers run on one single-threaded runtime per core, on threads of their
    // own: at high rates that saves the work-stealing hand-offs of a shared runtime, and it
    // keeps the generator off the threads the engine and the probes use.
    let cores = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, connections);
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..cores {
        let mine: Vec<_> = windows.iter().skip(k).step_by(cores).cloned().collect();
        let sh = Arc::clone(&sh);
        let span = tracing::Span::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("chaosbot-load-{k}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a load worker thread's runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for w in mine {
                        set.spawn(conn::worker(Arc::clone(&sh), w).instrument(span.clone()));
                    }
                    // Stopping aborts the workers: in-flight requests are dropped and their
                    // connections closed at once.
                    let stop = sh.stop.cancelled();
                    tokio::pin!(stop);
                    loop {
                        tokio::select! {
                            _ = &mut stop => {
                                set.abort_all();
                                break;
                            }
                            done = set.join_next() => if done.is_none() { break },
                        }
                    }
                    while set.join_next().await.is_some() {}
                });
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a load worker thread");
            continue;
        }
        // Finishes when the thread's workers are done (or the thread ended without them).
        workers.spawn(async move {
            let _ = done_rx.await;
        });
    }
    info!(connections, "load started");
    let mut second = Window::default();
    let mut total = Window::default();
    let collect = |into: &mut Window| {
        for w in &windows {
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            into.merge(&w);
            w.reset();
        }
    };
    let mut tick =
        tokio::time::interval_at(sh.start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut last = sh.start;
    let mut stopped_early = false;
    let end = sh.end;
    loop {
        tokio::select! {
            _ = stop.cancelled() => { stopped_early = Instant::now() < end; break; }
            _ = tokio::time::sleep_until(end) => break,
            done = workers.join_next() => {
                if done.is_none() { break; }
            }
            now = tick.tick() => {
                if now > end { continue; }
                n += 1;
                collect(&mut second);
                let planned = sh.schedule.planned_by(now - sh.start) - sh.schedule.planned_by(last - sh.start);
                let secs = (now - last).as_secs_f64().max(1e-9);
                let figures = second.figures(now - last, planned / secs);
                debug!(second = n, rps = figures.achieved_rps, p99_ms = figures.latency.p99_ms, "load second");
                on_second(n, figures);
                total.merge(&second);
                second.reset();
                last = now;
            }
        }
    }
    // Stop every worker: in-flight requests are dropped and their connections closed.
    sh.stop.cancel();
    while workers.join_next().await.is_some() {}
    collect(&mut total);
    let elapsed = (Instant::now().min(end)) - sh.start;
    let planned = sh.schedule.planned_by(elapsed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let figures = total.figures(elapsed, planned / secs);
    info!(
        requests = figures.requests,
        rps = figures.achieved_rps,
        p99_ms = figures.latency.p99_ms,
        errors = figures.errors,
        "load finished"
    );
    LoadOutcome {
        total: figures,
        service_time: total.service_latencies(),
        elapsed,
        stopped_early,
    }
}
