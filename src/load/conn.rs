//! One connection worker: a keep-alive HTTP/1.1 connection (hyper's client `conn` API, no
//! pool) that takes the next request number, waits for its intended send time, sends it and
//! records what came back.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::Schedule;
use super::stats::{ErrorKind, Window};

/// The request every worker sends, prepared once.
pub(crate) struct RequestTemplate {
    /// host:port to connect to.
    pub addr: String,
    pub method: Method,
    /// Path and query only (origin form), as HTTP/1.1 wants.
    pub uri: Uri,
    /// Includes `Host`.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

impl RequestTemplate {
    fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// What the workers share: the request counter, the schedule and the clock.
pub(crate) struct Shared {
    pub template: RequestTemplate,
    pub schedule: Schedule,
    pub next: AtomicU64,
    pub start: Instant,
    pub end: Instant,
    pub stop: CancellationToken,
}

type Driver = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// An open connection. Its driver (hyper's connection future, which does the socket I/O) is
/// polled by the worker itself alongside each request rather than spawned: no cross-task
/// wake-ups per request, and dropping the worker closes the socket at once.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: std::pin::Pin<Box<Driver>>,
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionAborted => ErrorKind::ClosedEarly,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

/// Classifies a hyper error by what a person would want to know.
fn hyper_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return ErrorKind::BadResponse;
    }
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    // The io error, if any, is somewhere down the source chain.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io_kind(io);
        }
        src = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return ErrorKind::ClosedEarly;
    }
    ErrorKind::Other
}

async fn connect(t: &RequestTemplate) -> Result<Conn, ErrorKind> {
    let stream = match tokio::time::timeout(t.timeout, TcpStream::connect(&t.addr)).await {
        Err(_) => return Err(ErrorKind::ConnectFailed),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ErrorKind::ConnectRefused);
        }
        Ok(Err(_)) => return Err(ErrorKind::ConnectFailed),
        Ok(Ok(s)) => s,
    };
    // Small requests must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_kind(&e))?;
    Ok(Conn {
        sender,
        driver: Box::pin(conn),
    })
}

/// Sends one request on `conn` and reads the whole answer. `Ok(status)` or why not.
async fn exchange(conn: &mut Conn, t: &RequestTemplate) -> Result<u16, ErrorKind> {
    let Conn { sender, driver } = conn;
    let request = async {
        sender.ready().await.map_err(|e| hyper_kind(&e))?;
        let resp = sender
            .send_request(t.build())
            .await
            .map_err(|e| hyper_kind(&e))?;
        let status = resp.status().as_u16();
        // Read the body to the end so that the connection can carry the next request.
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| hyper_kind(&e))?;
        }
        Ok(status)
    };
    let mut request = std::pin::pin!(request);
    tokio::select! {
        biased;
        r = &mut request => r,
        // The driver ends when the connection does. It may have handed the request its
        // answer or its error (garbage, a reset) just before: ask the request first.
        r = driver.as_mut() => match futures::FutureExt::now_or_never(request) {
            Some(answer) => answer,
            None => Err(match r {
                Ok(()) => ErrorKind::ClosedEarly,
                Err(e) => hyper_kind(&e),
            }),
        },
    }
}

/// Runs one worker until the schedule ends, the end instant passes or `stop` fires.
pub(crate) async fn worker(sh: Arc<Shared>, window: Arc<std::sync::Mutex<Window>>) {
    let t = &sh.template;
    let paced = !matches!(sh.schedule, Schedule::Unthrottled);
    let mut conn: Option<Conn> = None;
    loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        let Some(offset) = sh.schedule.intended(i) else {
            return;
        };
        let intended = sh.start + offset;
        if intended >= sh.end || sh.stop.is_cancelled() {
            return;
        }
        if paced && intended > Instant::now() {
            tokio::select! {
                biased;
                _ = sh.stop.cancelled() => return,
                _ = tokio::time::sleep_until(intended) => {}
            }
        }
        // Unthrottled: each request is "intended" when the connection is free.
        let intended = if paced { intended } else { Instant::now() };
        let attempt = async {
            // A connection the server closed (keep-alive ended) is replaced silently: that is
            // HTTP doing its job, not an error of the target.
            // (The driver is polled once here: a close while idle is seen only then.)
            let dead = conn.as_mut().is_none_or(|c| {
                c.sender.is_closed()
                    || futures::FutureExt::now_or_never(c.driver.as_mut()).is_some()
            });
            if dead {
                conn = None;
                conn = Some(connect(t).await?);
            }
            let c = conn.as_mut().ok_or(ErrorKind::Other)?;
            let sent = Instant::now();
            let status = exchange(c, t).await?;
            Ok::<_, ErrorKind>((sent, status))
        };
        let outcome = tokio::select! {
            biased;
            _ = sh.stop.cancelled() => return,
            r = tokio::time::timeout(t.timeout, attempt) => r,
        };
        let done = Instant::now();
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(Ok((sent, status))) => w.answer(status, done - intended, done - sent),
            Ok(Err(kind)) => {
                w.error(kind);
                conn = None;
            }
            Err(_) => {
                w.error(ErrorKind::Timeout);
                // The connection may still carry the late answer: start over on a fresh one.
                conn = None;
            }
        }
    }
}
