//! One connection worker: a keep-alive HTTP/1.1 connection that takes the next request number,
//! waits for its intended send time, sends it and records what came back.
//!
//! The request is serialized once, when the attack starts, and written as-is; the answer is
//! parsed in place with `httparse` from one reusable buffer. A general HTTP client (hyper's
//! `conn` API, used before) builds a request, hands it through a dispatch channel and frames
//! its body for every request; at the highest rates that work was the generator's largest cost
//! (see `benches/load.rs`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::schedule::Schedule;
use super::stats::{ErrorKind, Window};

/// The request every worker sends, prepared once.
pub(crate) struct RequestTemplate {
    /// host:port to connect to.
    pub addr: String,
    /// The whole request as it goes on the wire: request line, headers, body.
    pub wire: Bytes,
    /// A HEAD request: the answer has no body, whatever its headers say.
    pub head: bool,
    pub timeout: Duration,
    /// Set for https: every connection is wrapped in TLS, all through one connector (one
    /// client config, one session cache, so reconnections resume their sessions).
    pub tls: Option<TlsTarget>,
}

/// How connections to an https target are wrapped.
pub(crate) struct TlsTarget {
    pub connector: TlsConnector,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// A connection, plain or TLS. An enum rather than a trait object: the plain path stays a
/// direct call.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                // Pushes the records out now rather than when rustls' buffer fills.
                s.flush().await
            }
        }
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

/// Longest status line plus headers accepted; longer is not a sane answer.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per answer.
const MAX_HEADERS: usize = 64;

/// An open connection and what has been read from it but not consumed yet.
struct Conn {
    stream: Stream,
    buf: BytesMut,
    /// The server said `Connection: close` or ended the body with the connection.
    closing: bool,
    /// Some byte of the current answer has arrived.
    answered: bool,
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionAborted => ErrorKind::ClosedEarly,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
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
    let stream = match &t.tls {
        None => Stream::Plain(stream),
        Some(tls) => Stream::Tls(Box::new(handshake(t, tls, stream).await?)),
    };
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
        closing: false,
        answered: false,
    })
}

/// The TLS handshake on a fresh connection, within the request timeout.
async fn handshake(
    t: &RequestTemplate,
    tls: &TlsTarget,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, ErrorKind> {
    match tokio::time::timeout(t.timeout, tls.connector.connect(tls.name.clone(), stream)).await {
        Err(_) => Err(ErrorKind::Timeout),
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            // Counted by kind; the reason is for whoever reads the logs.
            let host = tls.name.to_str();
            let why = crate::tls::explain(&e, &host).unwrap_or_else(|| e.to_string());
            tracing::debug!(error = %why, "load: TLS handshake failed");
            Err(match e.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
                _ => ErrorKind::TlsFailed,
            })
        }
    }
}

impl Conn {
    /// Reads more bytes into the buffer; the connection ending is `ClosedEarly`.
    async fn fill(&mut self) -> Result<(), ErrorKind> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(ErrorKind::ClosedEarly),
            Ok(_) => {
                self.answered = true;
                Ok(())
            }
            Err(e) => Err(io_kind(&e)),
        }
    }

    /// Consumes `n` body bytes, reading as needed.
    async fn skip(&mut self, mut n: u64) -> Result<(), ErrorKind> {
        loop {
            let have = self.buf.len() as u64;
            if have >= n {
                self.buf.advance(n as usize);
                return Ok(());
            }
            n -= have;
            self.buf.clear();
            self.fill().await?;
        }
    }

    /// A line ending in CRLF (without it), for chunk sizes and trailers.
    async fn line(&mut self) -> Result<BytesMut, ErrorKind> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at);
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ErrorKind::BadResponse);
            }
            self.fill().await?;
        }
    }

    /// Consumes a chunked body (RFC 9112 §7.1), trailers included.
    async fn skip_chunked(&mut self) -> Result<(), ErrorKind> {
        loop {
            let line = self.line().await?;
            let size = line[..].split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or(ErrorKind::BadResponse)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.skip(size).await?;
            if !self.line().await?.is_empty() {
                return Err(ErrorKind::BadResponse);
            }
        }
    }

    /// Reads until the server closes the connection (a body without a length).
    async fn skip_to_close(&mut self) -> Result<(), ErrorKind> {
        self.closing = true;
        loop {
            self.buf.clear();
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(io_kind(&e)),
            }
        }
    }
}

/// How the answer's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Parses the status line and headers at the front of `buf`: `Some((head length, status,
/// framing, connection close))` once they are complete.
fn parse_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, u16, Framing, bool)>, ErrorKind> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrorKind::BadResponse),
    };
    let status = resp.code.ok_or(ErrorKind::BadResponse)?;
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ErrorKind::BadResponse)?;
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.trim_ascii().eq_ignore_ascii_case(b"close");
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        Framing::UntilClose
    };
    Ok(Some((n, status, framing, close)))
}

/// Sends one request on `conn` and reads the whole answer. `Ok(status)` or why not.
async fn exchange(conn: &mut Conn, t: &RequestTemplate) -> Result<u16, ErrorKind> {
    // Bytes left over from the last answer count as an answer already begun (garbage).
    conn.answered = !conn.buf.is_empty();
    conn.stream
        .write_all(&t.wire)
        .await
        .map_err(|e| io_kind(&e))?;
    loop {
        let parsed = parse_head(&conn.buf, t.head)?;
        let Some((n, status, framing, close)) = parsed else {
            if conn.buf.len() > MAX_HEAD {
                return Err(ErrorKind::BadResponse);
            }
            conn.fill().await?;
            continue;
        };
        conn.buf.advance(n);
        // An interim answer (100 Continue, 103 Early Hints): the real one follows.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        match framing {
            Framing::None => {}
            Framing::Length(len) => conn.skip(len).await?,
            Framing::Chunked => conn.skip_chunked().await?,
            Framing::UntilClose => conn.skip_to_close().await?,
        }
        conn.closing |= close || status == 101;
        return Ok(status);
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
        if intended >= sh.end {
            return;
        }
        // Stopping aborts this task (see `drive`): nothing here watches the stop token, whose
        // every poll takes a lock all workers share.
        if paced && intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        // Unthrottled: each request is "intended" when the connection is free.
        let intended = if paced { intended } else { Instant::now() };
        let attempt = async {
            let mut fresh = false;
            if conn.as_ref().is_none_or(|c| c.closing) {
                conn = None;
                conn = Some(connect(t).await?);
                fresh = true;
            }
            let c = conn.as_mut().ok_or(ErrorKind::Other)?;
            let sent = Instant::now();
            match exchange(c, t).await {
                Ok(status) => Ok((sent, status)),
                // A kept-alive connection the server closed while it sat idle fails before a
                // single byte of the answer: that is HTTP doing its job, not an error of the
                // target. Like HTTP clients, try once more on a fresh connection.
                Err(ErrorKind::ClosedEarly | ErrorKind::Reset) if !fresh && !c.answered => {
                    let c = conn.insert(connect(t).await?);
                    let sent = Instant::now();
                    Ok((sent, exchange(c, t).await?))
                }
                Err(kind) => Err(kind),
            }
        };
        let outcome = tokio::time::timeout(t.timeout, attempt).await;
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
