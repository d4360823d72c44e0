//! One proxied connection: two pumps (client → server is `upstream`, server → client is
//! `downstream`), each a reader feeding a writer through a small bounded channel.
//!
//! Fast path (Linux): while no toxic that affects a direction forbids it
//! ([`super::toxic::Toxic::forbids_splice`]), its pump moves bytes with `splice(2)` through a
//! pipe instead (see [`fast`]). When such a toxic arrives, the pump first drains the pipe to the
//! destination, then starts the reader/writer path below; once the direction has no such toxic
//! again, the writer asks the reader to stop, writes every chunk still
//! queued (the reader's hand-off marker comes after them), and splicing resumes. Bytes are
//! therefore never lost, duplicated or reordered across a switch.
//!
//! The reader timestamps every chunk when it is read; the writer asks the toxics (see
//! [`super::toxic`]) when and how much of it may go out, once per piece. Latency is
//! therefore pipelined (each chunk is held until `read_at + delay`, so a stream is not delayed
//! cumulatively), and every wait of the writer also watches the toxic set, so adding or removing
//! a toxic takes effect at once, in the middle of a hold.
//!
//! Both sockets are shared (`Arc<TcpStream>`) rather than split into owned halves: an owned write
//! half sends FIN when dropped, which would spoil a reset (the peer must see RST, not EOF).

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::spec::model::Direction;

#[cfg(target_os = "linux")]
mod fast;

#[cfg(target_os = "linux")]
use super::splice::Pipe;
use super::toxic::{self, Chunk, Plan, TimerAction, ToxicSet, ToxicState};
use super::{Shared, timer};
#[cfg(target_os = "linux")]
use fast::SpliceEnd;

/// Largest single read. 256 KiB rather than 64: on loopback the syscall count is what limits
/// bulk throughput (measured ~40% of a direct connection with 64 KiB, ~50% with 256 KiB).
const READ_SIZE: usize = 256 * 1024;
/// Chunks in flight between a reader and its writer. Generous, so that a latency hold over a
/// stream of small chunks (100 ms of 2 ms-apart requests is 50 chunks) does not stall the reader
/// and delay chunks cumulatively; memory is bounded by [`BYTE_BUDGET`] instead.
const CHANNEL_DEPTH: usize = 1024;
/// Bytes read but not yet written, per direction (backpressure to the sender beyond that).
const BYTE_BUDGET: usize = 1024 * 1024;
/// How long we try to reach the upstream before giving up on the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Msg {
    Data {
        bytes: Bytes,
        read_at: Instant,
    },
    Eof,
    /// The reader stopped for a switch to splicing; nothing follows.
    Handoff,
}

/// The per-direction byte budget: the reader takes `READ_SIZE` before reading, gives back what
/// it did not use, and the writer gives back each chunk's length once the chunk is done.
type Budget = Arc<Semaphore>;

/// Decrements the open-connection gauge however the connection ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client until both directions are done or the connection is killed.
pub(crate) async fn serve(shared: Arc<Shared>, client: TcpStream, conn_seq: u64) {
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(shared.clone());
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(proxy = %shared.name, error = %e, "set TCP_NODELAY on client failed");
    }
    let kill = shared.shutdown.child_token();
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&shared.upstream));
    let server = tokio::select! {
        _ = kill.cancelled() => return,
        r = connect => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                shared.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(proxy = %shared.name, upstream = %shared.upstream, error = %e,
                    "upstream refused or unreachable; closing the client connection");
                return;
            }
            Err(_) => {
                shared.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(proxy = %shared.name, upstream = %shared.upstream,
                    "upstream connect timed out; closing the client connection");
                return;
            }
        },
    };
    if let Err(e) = server.set_nodelay(true) {
        tracing::debug!(proxy = %shared.name, error = %e, "set TCP_NODELAY on upstream failed");
    }
    let client = Arc::new(client);
    let server = Arc::new(server);

    let up = Pump::new(
        &shared,
        Direction::Upstream,
        conn_seq,
        client.clone(),
        server.clone(),
        kill.clone(),
    );
    let down = Pump::new(
        &shared,
        Direction::Downstream,
        conn_seq,
        server,
        client,
        kill.clone(),
    );
    // Each direction is one task (its reader and writer polled together: still pipelined, but
    // without a cross-thread wake-up per chunk). The two directions can use two cores.
    let down = shared.tracker.spawn(down.drive());
    up.drive().await;
    if down.await.is_err() {
        tracing::warn!(proxy = %shared.name, "downstream pump task failed");
    }
    // Both directions are done (or one failed): let the readers go and drop the sockets.
    kill.cancel();
}

/// Reads chunks from `src` and hands them, timestamped, to the writer, until EOF, kill, or
/// `pause` (the writer wants to splice again): then it sends [`Msg::Handoff`] and stops. It
/// only stops between reads, so every byte it read is in the channel before the marker.
async fn read_loop(
    src: Arc<TcpStream>,
    tx: mpsc::Sender<Msg>,
    budget: Budget,
    kill: CancellationToken,
    pause: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        if pause.is_cancelled() {
            tokio::select! {
                _ = kill.cancelled() => {}
                _ = tx.send(Msg::Handoff) => {}
            }
            return;
        }
        tokio::select! {
            _ = kill.cancelled() => return,
            _ = pause.cancelled() => continue,
            p = budget.acquire_many(READ_SIZE as u32) => match p {
                Ok(p) => p.forget(),
                Err(_) => return,
            },
        }
        // Reuses the allocation once the writer has dropped the previous chunks.
        buf.reserve(READ_SIZE);
        let n = loop {
            let r = {
                let mut limited = (&mut buf).limit(READ_SIZE);
                src.try_read_buf(&mut limited)
            };
            match r {
                Ok(n) => break Some(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        _ = kill.cancelled() => return,
                        _ = pause.cancelled() => break None,
                        r = src.readable() => if r.is_err() { kill.cancel(); return },
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "read failed; closing the connection");
                    kill.cancel();
                    return;
                }
            }
        };
        let Some(n) = n else {
            // Paused while waiting for data: nothing was read; hand off at the loop's top.
            budget.add_permits(READ_SIZE);
            continue;
        };
        budget.add_permits(READ_SIZE - n);
        let msg = if n == 0 {
            Msg::Eof
        } else {
            Msg::Data {
                bytes: buf.split().freeze(),
                read_at: Instant::now(),
            }
        };
        let eof = matches!(msg, Msg::Eof);
        tokio::select! {
            _ = kill.cancelled() => return,
            r = tx.send(msg) => if r.is_err() { return },
        }
        if eof {
            return;
        }
    }
}

/// Writes some of `data`; cancel-safe (nothing is written unless it returns).
async fn write_some(dst: &TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match dst.try_write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

async fn sleep_opt(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn precise_opt(t: Option<Instant>) {
    match t {
        Some(t) => timer::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Why an interruptible wait returned.
enum Wake {
    /// The awaited instant came.
    Elapsed,
    /// The toxic set changed or a timer fired: re-evaluate.
    Changed,
    /// The connection is being closed.
    Killed,
}

/// Whether the pump goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// How a copy phase ended.
#[derive(PartialEq, Eq)]
enum Phase {
    /// This direction is finished.
    Done,
    /// The reader handed off: the direction has no toxic, splice again.
    Splice,
}

/// One direction: splices while no toxic affects it, otherwise a reader and a writer that
/// applies the toxics and writes to `dst`.
struct Pump {
    shared: Arc<Shared>,
    dir: Direction,
    conn_seq: u64,
    src: Arc<TcpStream>,
    dst: Arc<TcpStream>,
    toxics: watch::Receiver<ToxicSet>,
    kill: CancellationToken,
    /// Toxics of this direction that this connection has seen, by id.
    states: HashMap<u64, ToxicState>,
    /// Ids of affected, unexpired toxics of this direction, in the order they were added.
    active: Vec<u64>,
    /// Whether one of them forbids the splice fast path.
    shaped: bool,
    /// Sequence number of the next chunk (see [`Chunk::seq`]).
    next_chunk: u64,
    /// Whether the splice fast path may be used (cleared when the kernel refuses it).
    splice_ok: bool,
}

impl Pump {
    fn new(
        shared: &Arc<Shared>,
        dir: Direction,
        conn_seq: u64,
        src: Arc<TcpStream>,
        dst: Arc<TcpStream>,
        kill: CancellationToken,
    ) -> Self {
        Self {
            shared: shared.clone(),
            dir,
            conn_seq,
            src,
            dst,
            toxics: shared.toxics.subscribe(),
            kill,
            states: HashMap::new(),
            active: Vec::new(),
            shaped: false,
            next_chunk: 0,
            splice_ok: cfg!(target_os = "linux"),
        }
    }

    /// Runs this direction to its end, switching between splicing and copying as the toxic set
    /// changes.
    async fn drive(mut self) {
        self.refresh();
        #[cfg(target_os = "linux")]
        let mut pipe: Option<Pipe> = None;
        loop {
            if self.kill.is_cancelled() {
                return;
            }
            #[cfg(target_os = "linux")]
            if self.splice_ok && !self.shaped {
                if pipe.is_none() {
                    match Pipe::new() {
                        Ok(p) => pipe = Some(p),
                        Err(e) => {
                            // Typically out of descriptors: copying still works.
                            tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                                "no pipe for splicing; copying instead");
                            self.splice_ok = false;
                        }
                    }
                }
                if let Some(p) = pipe.as_mut() {
                    match self.splice(p).await {
                        SpliceEnd::Done => return,
                        SpliceEnd::Toxic => {}
                        SpliceEnd::Unsupported => {
                            self.splice_ok = false;
                            // Its descriptors are of no further use.
                            pipe = None;
                        }
                    }
                    continue;
                }
            }
            // Fresh channel and budget per phase: the previous reader is gone, and whatever
            // it read was written before it handed off.
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let budget: Budget = Arc::new(Semaphore::new(BYTE_BUDGET));
            let pause = CancellationToken::new();
            let reader = read_loop(
                self.src.clone(),
                tx,
                budget.clone(),
                self.kill.clone(),
                pause.clone(),
            );
            let ((), phase) = tokio::join!(reader, self.run(rx, budget, pause));
            if phase == Phase::Done {
                return;
            }
        }
    }

    /// The copy path: takes chunks from the reader and applies the toxics, until the direction
    /// ends or, with no toxic left, the reader has handed off.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        budget: Budget,
        pause: CancellationToken,
    ) -> Phase {
        loop {
            if self.kill.is_cancelled() || self.fire_timers() == Flow::Stop {
                return Phase::Done;
            }
            if self.splice_ok && !self.shaped {
                // Idempotent; the reader stops at its next read boundary.
                pause.cancel();
            }
            let wake = self.next_timer();
            let msg = tokio::select! {
                biased;
                _ = self.kill.cancelled() => return Phase::Done,
                r = self.toxics.changed() => {
                    if r.is_err() { return Phase::Done }
                    self.refresh();
                    continue;
                }
                _ = sleep_opt(wake) => continue,
                m = rx.recv() => m,
            };
            let flow = match msg {
                None => Flow::Stop,
                Some(Msg::Handoff) => return Phase::Splice,
                Some(Msg::Eof) => self.close_write().await,
                Some(Msg::Data { bytes, read_at }) => {
                    let len = bytes.len();
                    let flow = self.forward(bytes, read_at).await;
                    budget.add_permits(len);
                    flow
                }
            };
            if flow == Flow::Stop {
                return Phase::Done;
            }
        }
    }

    /// Re-reads the toxic set: new toxics get their per-connection state (and toxicity draw),
    /// removed ones are forgotten, `down` closes the connection.
    fn refresh(&mut self) {
        let set = self.toxics.borrow_and_update().clone();
        let now = Instant::now();
        if toxic::is_down(&set, now) {
            self.kill.cancel();
        }
        self.states.retain(|id, _| set.iter().any(|t| t.id == *id));
        self.active.clear();
        self.shaped = false;
        for t in set.iter() {
            if t.req.direction != self.dir {
                continue;
            }
            let st = self
                .states
                .entry(t.id)
                .or_insert_with(|| ToxicState::new(t.clone(), self.conn_seq, self.dir, now));
            if st.affected && !st.effect.proxy_wide() && !t.expired(now) {
                self.active.push(t.id);
                self.shaped |= st.effect.forbids_splice();
            }
        }
    }

    fn active_states(&self) -> impl Iterator<Item = &ToxicState> {
        self.active.iter().filter_map(|id| self.states.get(id))
    }

    /// The earliest instant something changes by itself: a timer or a toxic's deadline.
    fn next_timer(&self) -> Option<Instant> {
        self.active_states()
            .flat_map(|st| [st.effect.timer().map(|(t, _)| t), Some(st.toxic.deadline)])
            .flatten()
            .min()
    }

    /// Fires due timers (timeout closes, reset_peer resets) and drops expired toxics.
    fn fire_timers(&mut self) -> Flow {
        let now = Instant::now();
        let mut action = None;
        let mut expired = false;
        for st in self.active_states() {
            if st.toxic.expired(now) {
                expired = true;
                continue;
            }
            if let Some((at, a)) = st.effect.timer()
                && at <= now
            {
                // A reset wins over a plain close.
                if action != Some(TimerAction::Reset) {
                    action = Some(a);
                }
            }
        }
        if expired {
            self.refresh();
        }
        match action {
            None => Flow::Go,
            Some(a) => {
                if a == TimerAction::Reset {
                    // Linger 0: the close that follows sends RST instead of FIN.
                    if let Err(e) =
                        socket2::SockRef::from(&*self.dst).set_linger(Some(Duration::ZERO))
                    {
                        tracing::debug!(error = %e, "SO_LINGER 0 failed");
                    }
                }
                tracing::debug!(proxy = %self.shared.name, dir = %self.dir, action = ?a,
                    "toxic timer fired; closing the connection");
                self.kill.cancel();
                Flow::Stop
            }
        }
    }

    /// Waits until `until` (or forever), interrupted by toxic changes, timers and kill.
    async fn wait(&mut self, until: Option<Instant>) -> Wake {
        let timer = self.next_timer();
        let first = match (until, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = self.kill.cancelled() => Wake::Killed,
            r = self.toxics.changed() => {
                if r.is_err() { return Wake::Killed }
                self.refresh();
                Wake::Changed
            }
            // Holds use the precise timer: tokio's rounds up to the next millisecond.
            _ = precise_opt(first) => {
                if until.is_some() && first == until { Wake::Elapsed } else { Wake::Changed }
            }
        }
    }

    /// Whether an active toxic swallows this direction's data (blackhole).
    fn swallowed(&self) -> bool {
        self.active_states().any(|st| st.effect.swallows())
    }

    /// What the active toxics allow for the next piece of `chunk`, in the order they were added.
    fn plan(&mut self, chunk: &Chunk, len: usize, now: Instant) -> Plan {
        let mut plan = Plan {
            ready: now,
            piece: len,
            close: None,
        };
        for id in &self.active {
            if let Some(st) = self.states.get_mut(id) {
                st.effect.plan(chunk, &mut plan);
            }
        }
        plan
    }

    /// Pushes one chunk through the toxics and out.
    async fn forward(&mut self, mut data: Bytes, read_at: Instant) -> Flow {
        let chunk = Chunk {
            seq: self.next_chunk,
            read_at,
        };
        self.next_chunk += 1;
        while !data.is_empty() {
            if self.kill.is_cancelled() || self.fire_timers() == Flow::Stop {
                return Flow::Stop;
            }
            // Blackhole: the data is dropped.
            if self.swallowed() {
                return Flow::Go;
            }
            let now = Instant::now();
            let plan = self.plan(&chunk, data.len(), now);
            if let Some(reason) = plan.close {
                tracing::debug!(proxy = %self.shared.name, dir = %self.dir,
                    "{reason}; closing the connection");
                self.kill.cancel();
                return Flow::Stop;
            }
            if plan.ready > now {
                match self.wait(Some(plan.ready)).await {
                    Wake::Killed => return Flow::Stop,
                    Wake::Changed | Wake::Elapsed => continue,
                }
            }
            // Write, still listening for toxic changes and timers (the peer may not read).
            let timer = self.next_timer();
            let written = tokio::select! {
                biased;
                _ = self.kill.cancelled() => return Flow::Stop,
                r = self.toxics.changed() => {
                    if r.is_err() { return Flow::Stop }
                    self.refresh();
                    continue;
                }
                _ = sleep_opt(timer) => continue,
                r = write_some(&self.dst, &data[..plan.piece]) => r,
            };
            let n = match written {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                        "write failed; closing the connection");
                    self.kill.cancel();
                    return Flow::Stop;
                }
            };
            data.advance(n);
            self.account(n);
        }
        Flow::Go
    }

    /// Books `n` written bytes against stats and the stateful toxics.
    fn account(&mut self, n: usize) {
        let ctr = match self.dir {
            Direction::Upstream => &self.shared.stats.bytes_up,
            Direction::Downstream => &self.shared.stats.bytes_down,
        };
        ctr.fetch_add(n as u64, Ordering::Relaxed);
        if self.active.is_empty() {
            return;
        }
        let now = Instant::now();
        for id in &self.active {
            if let Some(st) = self.states.get_mut(id) {
                st.effect.sent(n, now);
            }
        }
    }

    /// The source closed its sending side: propagate it as shutdown(Write), after slow_close's
    /// delay, and not while a blackhole swallows this direction.
    async fn close_write(&mut self) -> Flow {
        let eof_at = Instant::now();
        loop {
            if self.kill.is_cancelled() || self.fire_timers() == Flow::Stop {
                return Flow::Stop;
            }
            if self.swallowed() {
                match self.wait(None).await {
                    Wake::Killed => return Flow::Stop,
                    Wake::Changed | Wake::Elapsed => continue,
                }
            }
            let delay = self
                .active_states()
                .filter_map(|st| st.effect.close_delay())
                .max();
            if let Some(d) = delay
                && Instant::now() < eof_at + d
            {
                match self.wait(Some(eof_at + d)).await {
                    Wake::Killed => return Flow::Stop,
                    Wake::Changed | Wake::Elapsed => continue,
                }
            }
            break;
        }
        if let Err(e) = socket2::SockRef::from(&*self.dst).shutdown(Shutdown::Write) {
            tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                "shutdown(Write) failed; closing the connection");
            self.kill.cancel();
            return Flow::Stop;
        }
        // This direction is finished; the other one may go on (half-close).
        Flow::Stop
    }
}
