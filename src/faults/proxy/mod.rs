//! The built-in fault-injecting TCP proxy: one listener per declared proxied target, forwarding
//! to its upstream, with toxics that can be added and removed while connections stay open.
//!
//! The engine depends only on the surface here ([`Proxy::start`], [`ProxyHandle`]).
//!
//! Layout: this file holds the public types, the handle and the listener; [`link`] runs one
//! connection (per direction: `splice(2)` zero-copy while no toxic affects it, otherwise a
//! reader and a writer that applies the toxics); [`toxic`] holds the toxics, one file per kind
//! behind one small trait.
//! Toxic semantics follow Toxiproxy (<https://github.com/Shopify/toxiproxy#toxics>).
//!
//! The toxic set lives in a `tokio::sync::watch` channel: every writer waits on it alongside its
//! data, so a change interrupts a latency hold, a bandwidth sleep or a blackhole at once. Every
//! toxic carries a deadline that a task owned by the proxy enforces (and writers ignore expired
//! toxics meanwhile), whoever added it and whether or not they are still alive.
//!
//! Choices where Toxiproxy leaves room:
//! - `down` is proxy-wide: it ignores direction and toxicity (Toxiproxy models it as disabling
//!   the proxy, not as a toxic).
//! - `reset_peer` resets the socket that receives the toxic's direction: `downstream` → the
//!   client sees RST, `upstream` → the server does; the other side is closed normally.
//! - `timeout` and `reset_peer` timers start when the connection first sees the toxic; a zero
//!   `timeout` swallows data (and a half-close) until the toxic goes.
//! - A blackhole of a direction swallows its chunks before any other toxic sees them; the others
//!   each narrow when the next piece may go and how long it may be, so their order does not
//!   matter; of several latencies the largest applies (they do not add up).
//! - Latency holds use a dedicated sub-millisecond timer thread ([`timer`]).

mod link;
#[cfg(target_os = "linux")]
mod splice;
mod timer;
mod toxic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::spec::model::{Direction, ToxicKind};

pub use toxic::affects as toxicity_affects;
use toxic::{Installed, ToxicSet};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "cannot listen on {addr} for target `{target}`: {source}. Is another process using the port? Pick a free port in the config or stop that process"
    )]
    Bind {
        target: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no toxic with id {0} on this proxy (it may have expired or been removed already)")]
    NoSuchToxic(u64),
    #[error("the proxy for `{0}` has shut down")]
    ShutDown(String),
    #[error("invalid toxic: {reason}")]
    InvalidToxic { reason: String },
}

/// What the operator declared for a proxied target.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub name: String,
    pub listen: SocketAddr,
    /// host:port of the real service.
    pub upstream: String,
}

/// A toxic to add, with the hard deadline it enforces on itself.
#[derive(Debug, Clone)]
pub struct ToxicRequest {
    /// Label shown in logs (the step name).
    pub label: String,
    pub kind: ToxicKind,
    pub direction: Direction,
    /// Probability in [0, 1] that a connection is affected; decided once per connection.
    pub toxicity: f64,
    /// Seed for every random decision of this toxic (toxicity draws, jitter, slice sizes).
    pub seed: u64,
    /// The proxy removes the toxic by itself at this instant, whoever else is alive.
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub struct ToxicInfo {
    pub id: u64,
    pub label: String,
    pub kind: ToxicKind,
    pub direction: Direction,
    pub toxicity: f64,
    pub deadline: Instant,
}

/// Counters of one proxy since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections open right now.
    pub open_connections: u64,
    /// Client connections accepted in total.
    pub accepted: u64,
    /// Bytes written to the upstream (client → server).
    pub bytes_up: u64,
    /// Bytes written to clients (server → client).
    pub bytes_down: u64,
    /// Client connections closed because the upstream refused, failed or timed out.
    pub upstream_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    upstream_failures: AtomicU64,
}

/// State shared by the handle, the listener, the reaper and every connection.
#[derive(Debug)]
struct Shared {
    name: String,
    upstream: String,
    listen: SocketAddr,
    toxics: watch::Sender<ToxicSet>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    stats: Counters,
    shutdown: CancellationToken,
    closed: AtomicBool,
    /// Whether the listener is open (it is closed while a `down` toxic is active).
    listening: AtomicBool,
    tracker: TaskTracker,
}

/// The fault-injecting TCP proxy.
pub struct Proxy;

impl Proxy {
    /// Binds the listener now (a port in use is [`ProxyError::Bind`]) and starts serving.
    pub async fn start(settings: ProxySettings) -> Result<ProxyHandle, ProxyError> {
        let bind_err = |source| ProxyError::Bind {
            target: settings.name.clone(),
            addr: settings.listen,
            source,
        };
        let listener = bind(settings.listen).map_err(bind_err)?;
        let listen = listener.local_addr().map_err(bind_err)?;
        let (toxics, _) = watch::channel(ToxicSet::default());
        let shared = Arc::new(Shared {
            name: settings.name,
            upstream: settings.upstream,
            listen,
            toxics,
            next_id: AtomicU64::new(1),
            next_conn: AtomicU64::new(0),
            stats: Counters::default(),
            shutdown: CancellationToken::new(),
            closed: AtomicBool::new(false),
            listening: AtomicBool::new(true),
            tracker: TaskTracker::new(),
        });
        shared.tracker.spawn(accept_loop(shared.clone(), listener));
        shared.tracker.spawn(reaper(shared.clone()));
        tracing::info!(proxy = %shared.name, listen = %listen, upstream = %shared.upstream, "proxy started");
        Ok(ProxyHandle { shared })
    }
}

/// A cheap, cloneable handle on a running proxy.
#[derive(Clone, Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address actually bound (useful when the settings asked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Installs a toxic; it applies to open connections at once. Returns its id.
    pub fn add_toxic(&self, req: ToxicRequest) -> Result<u64, ProxyError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ProxyError::ShutDown(self.shared.name.clone()));
        }
        toxic::validate(&req)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::from_std(req.deadline);
        tracing::info!(proxy = %self.shared.name, id, label = %req.label, toxic = %req.kind.summary(),
            direction = %req.direction, toxicity = req.toxicity, "toxic added");
        let toxic = Arc::new(Installed { id, req, deadline });
        self.shared.toxics.send_modify(|set| {
            let mut v = Vec::clone(set);
            v.push(toxic);
            *set = Arc::new(v);
        });
        Ok(id)
    }

    /// Removes a toxic; held data is released and waits are cut short at once.
    pub fn remove_toxic(&self, id: u64) -> Result<(), ProxyError> {
        let mut found = false;
        self.shared.toxics.send_if_modified(|set| {
            found = set.iter().any(|t| t.id == id);
            if found {
                *set = Arc::new(set.iter().filter(|t| t.id != id).cloned().collect());
            }
            found
        });
        if found {
            tracing::info!(proxy = %self.shared.name, id, "toxic removed");
            Ok(())
        } else {
            Err(ProxyError::NoSuchToxic(id))
        }
    }

    pub fn remove_all_toxics(&self) {
        self.shared.toxics.send_if_modified(|set| {
            let had = !set.is_empty();
            *set = ToxicSet::default();
            had
        });
        tracing::info!(proxy = %self.shared.name, "all toxics removed");
    }

    pub fn toxics(&self) -> Vec<ToxicInfo> {
        let now = tokio::time::Instant::now();
        self.shared
            .toxics
            .borrow()
            .iter()
            .filter(|t| !t.expired(now))
            .map(|t| ToxicInfo {
                id: t.id,
                label: t.req.label.clone(),
                kind: t.req.kind.clone(),
                direction: t.req.direction,
                toxicity: t.req.toxicity,
                deadline: t.req.deadline,
            })
            .collect()
    }

    /// Waits (at most `limit`) until the listener is open (`true`) or closed (`false`): a
    /// `down` added or removed takes effect on the listener a moment later. Says whether it is.
    pub async fn wait_listening(&self, open: bool, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.shared.listening.load(Ordering::Acquire) == open {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.stats;
        ProxyStats {
            open_connections: c.open.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops listening, closes every connection and waits for the proxy's tasks to end.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!(proxy = %self.shared.name, "proxy shut down");
    }
}

/// Binds a listener with SO_REUSEADDR, so listening again after `down` does not trip over the
/// TIME_WAIT sockets of the connections it just closed.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts clients; closes the listener while a `down` toxic is active (new connects are
/// refused) and listens again on the same address when it goes.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut rx = shared.toxics.subscribe();
    let mut retry: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let down = toxic::is_down(&rx.borrow_and_update(), now);
        if down && listener.is_some() {
            listener = None;
            shared.listening.store(false, Ordering::Release);
            tracing::info!(proxy = %shared.name, "down: listener closed");
        } else if !down && listener.is_none() && retry.is_none_or(|t| t <= now) {
            match bind(shared.listen) {
                Ok(l) => {
                    listener = Some(l);
                    shared.listening.store(true, Ordering::Release);
                    retry = None;
                    tracing::info!(proxy = %shared.name, listen = %shared.listen, "listening again");
                }
                Err(e) => {
                    retry = Some(now + Duration::from_millis(100));
                    tracing::warn!(proxy = %shared.name, listen = %shared.listen, error = %e,
                        "cannot listen again after down; retrying");
                }
            }
        }
        let wake = if listener.is_none() && !down {
            retry
        } else {
            None
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            r = accept_opt(&listener) => match r {
                Ok((stream, peer)) => {
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let seq = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(proxy = %shared.name, %peer, seq, "accepted");
                    shared.tracker.spawn(link::serve(shared.clone(), stream, seq));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(proxy = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// The dead-man's switch: removes each toxic at its deadline, whoever added it.
async fn reaper(shared: Arc<Shared>) {
    let mut rx = shared.toxics.subscribe();
    loop {
        let next = rx.borrow_and_update().iter().map(|t| t.deadline).min();
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let now = tokio::time::Instant::now();
                shared.toxics.send_if_modified(|set| {
                    let keep: Vec<_> = set.iter().filter(|t| !t.expired(now)).cloned().collect();
                    let changed = keep.len() != set.len();
                    if changed {
                        for t in set.iter().filter(|t| t.expired(now)) {
                            tracing::info!(proxy = %shared.name, id = t.id, label = %t.req.label,
                                "toxic reached its deadline; removed");
                        }
                        *set = Arc::new(keep);
                    }
                    changed
                });
            }
        }
    }
}
