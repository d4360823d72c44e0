//! The agent's own netem, for `delay`, `reorder`, `corrupt` and correlated `loss` on kernels
//! without sch_netem:
//! the fault's nftables rules send matching packets to an nfnetlink queue (`NFQUEUE` with
//! bypass), and a thread of the agent bound to that queue gives each one its verdict — now,
//! later (held in a timer heap until its time to send) or now with one bit flipped.
//!
//! Why it is safe to run: the queue rule carries `--queue-bypass` and the queue is
//! fail-open, so when the agent dies (its socket closes) or falls behind (the kernel's queue or
//! the socket buffer is full) packets pass unshaped rather than being lost; the thread stops
//! at the fault's deadline on its own and lets every held packet go at once; revert deletes
//! the table (no new packets come) and then stops the thread the same way.
//!
//! Semantics follow netem's (`tc-netem(8)`): a delay of `latency ± jitter` drawn uniformly,
//! each draw correlated with the one before (`next = (1 - c)·U + c·last`); with jitter a later
//! packet may leave first, as with netem. `reorder`: `percent` of packets go at once, the
//! others wait `latency`. `corrupt`: `percent` of packets get one bit flipped at a random
//! place past the IP header (so the receiver's checksum drops them, as with netem's).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{info, warn};

use super::netlink::{self, Msg, NFNL_SUBSYS_QUEUE, NLM_F_ACK, NLM_F_REQUEST, Socket};

const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQA_CFG_F_FAIL_OPEN: u32 = 0x1;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Packets the kernel keeps queued for us at most (past it they pass, fail-open).
const QUEUE_MAX_LEN: u32 = 65_536;
/// The first queue number tried; a busy one (another program's) is skipped.
const FIRST_QUEUE: u16 = 0x4c00;
const QUEUE_TRIES: u16 = 256;

/// What a shaped fault does to each matching packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Delay {
        latency: Duration,
        jitter: Duration,
        /// 0 to 1.
        correlation: f64,
    },
    /// `share` (0 to 1) of packets go at once, the others wait `latency`.
    Reorder { share: f64, latency: Duration },
    /// `share` (0 to 1) of packets get one bit flipped.
    Corrupt { share: f64 },
    /// `share` (0 to 1) of packets dropped, in bursts: after a loss the next is lost with
    /// probability `c + (1 - c)·share`, after a delivery with `(1 - c)·share` (a two-state
    /// Markov chain: the long-run loss stays `share`, and consecutive packets have
    /// correlation `c`).
    Loss { share: f64, correlation: f64 },
}

impl Shape {
    fn needs_payload(&self) -> bool {
        matches!(self, Shape::Corrupt { .. })
    }
}

/// One packet's fate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Pass,
    Hold(Duration),
    Corrupt,
    Drop,
}

/// Draws each packet's fate (seeded, so tests can replay it).
pub struct Decider {
    shape: Shape,
    rng: ChaCha8Rng,
    last: f64,
    last_lost: bool,
}

impl Decider {
    pub fn new(shape: Shape, seed: u64) -> Decider {
        Decider {
            shape,
            rng: ChaCha8Rng::seed_from_u64(seed),
            last: 0.5,
            last_lost: false,
        }
    }

    /// A uniform draw in [0, 1), correlated with the previous one by `c` (netem's
    /// `get_crandom`).
    fn correlated(&mut self, c: f64) -> f64 {
        let u: f64 = self.rng.random();
        if c <= 0.0 {
            return u;
        }
        self.last = (1.0 - c) * u + c * self.last;
        self.last
    }

    pub fn decide(&mut self) -> Decision {
        match self.shape.clone() {
            Shape::Delay {
                latency,
                jitter,
                correlation,
            } => {
                let j = jitter.as_secs_f64();
                let d = if j > 0.0 {
                    latency.as_secs_f64() - j + 2.0 * j * self.correlated(correlation)
                } else {
                    latency.as_secs_f64()
                };
                Decision::Hold(Duration::from_secs_f64(d.max(0.0)))
            }
            Shape::Reorder { share, latency } => {
                if self.rng.random::<f64>() < share {
                    Decision::Pass
                } else {
                    Decision::Hold(latency)
                }
            }
            Shape::Corrupt { share } => {
                if self.rng.random::<f64>() < share {
                    Decision::Corrupt
                } else {
                    Decision::Pass
                }
            }
            Shape::Loss { share, correlation } => {
                let c = correlation.clamp(0.0, 1.0);
                let p = if self.last_lost {
                    c + (1.0 - c) * share
                } else {
                    (1.0 - c) * share
                };
                self.last_lost = self.rng.random::<f64>() < p;
                if self.last_lost {
                    Decision::Drop
                } else {
                    Decision::Pass
                }
            }
        }
    }

    /// Flips one bit of `packet` past its IP header (the header itself is left whole, so the
    /// packet still reaches its peer, whose checksum then fails). False: nothing to flip.
    pub fn corrupt(&mut self, packet: &mut [u8]) -> bool {
        let header = match packet.first().map(|b| b >> 4) {
            Some(4) => usize::from(packet[0] & 0x0f) * 4,
            Some(6) => 40,
            _ => return false,
        };
        if packet.len() <= header {
            return false;
        }
        let at = self.rng.random_range(header..packet.len());
        let bit = self.rng.random_range(0..8u32);
        packet[at] ^= 1 << bit;
        true
    }
}

/// Counts for the log line at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub packets: u64,
    pub held: u64,
    pub corrupted: u64,
    pub dropped: u64,
    pub most_held_at_once: usize,
}

/// Tells the shaper's thread to stop, waking it at once (an eventfd it polls with its queue).
struct StopSignal {
    flag: AtomicBool,
    wake: OwnedFd,
}

impl StopSignal {
    fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd(2) returns a new descriptor, owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StopSignal {
            flag: AtomicBool::new(false),
            // SAFETY: fd is fresh and nobody else owns it.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn raise(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd; failure (counter full) still wakes it.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// A running shaper: its queue and the thread that serves it.
pub struct Shaper {
    pub queue: u16,
    stop: Arc<StopSignal>,
    thread: Option<std::thread::JoinHandle<Stats>>,
}

impl Shaper {
    /// Starts the thread (in namespace `ns` when given), binds a free queue, then adds the
    /// queue rule to chain `chain` of each `(family, table)`; returns once packets are being
    /// served, or with what failed (the caller deletes the tables). Blocking: call it from
    /// `spawn_blocking`.
    pub fn start(
        shape: Shape,
        ns: Option<Arc<File>>,
        tables: Vec<(String, String)>,
        chain: &str,
        deadline: Instant,
        seed: u64,
    ) -> io::Result<Shaper> {
        let stop = Arc::new(StopSignal::new()?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
        let chain = chain.to_string();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chaosbot-shaper".into())
            .spawn(move || {
                let setup = (|| {
                    if let Some(ns) = &ns {
                        super::netns::enter_on_this_thread(ns)?;
                    }
                    // SAFETY: prctl on this thread; a 1 ns timer slack keeps release times
                    // to the microsecond.
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
                    let (sock, queue) = bind_free_queue(shape.needs_payload())?;
                    for (family, table) in &tables {
                        netlink::add_queue_rule(family, table, &chain, queue)?;
                    }
                    Ok((sock, queue))
                })();
                match setup {
                    Ok((sock, queue)) => {
                        let _ = ready_tx.send(Ok(queue));
                        serve(sock, queue, shape, deadline, &thread_stop, seed)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Stats::default()
                    }
                }
            })?;
        let queue = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the shaper thread ended before it was ready"))??;
        Ok(Shaper {
            queue,
            stop,
            thread: Some(thread),
        })
    }

    /// Lets every held packet go and ends the thread (blocking: at most a few milliseconds).
    pub fn stop(&mut self) -> Stats {
        self.stop.raise();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.raise();
    }
}

fn config(sock: &mut Socket, queue: u16, build: impl FnOnce(&mut Msg)) -> io::Result<()> {
    let seq = sock.next_seq();
    let mut m = Msg::new(
        (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        libc::AF_UNSPEC as u8,
        queue,
    );
    build(&mut m);
    let buf = m.finish();
    sock.request(&buf, seq)
}

/// Binds the first free queue from [`FIRST_QUEUE`] and configures it.
fn bind_free_queue(payload: bool) -> io::Result<(Socket, u16)> {
    let mut sock = Socket::open()?;
    sock.set_receive_buffer(8 << 20);
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for queue in FIRST_QUEUE..FIRST_QUEUE + QUEUE_TRIES {
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
        match config(&mut sock, queue, |m| {
            m.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        }) {
            Ok(()) => {
                // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } (packed)
                let mut params = if payload { 0xffffu32 } else { 0 }.to_be_bytes().to_vec();
                params.push(if payload {
                    NFQNL_COPY_PACKET
                } else {
                    NFQNL_COPY_META
                });
                config(&mut sock, queue, |m| {
                    m.attr(NFQA_CFG_PARAMS, &params);
                })?;
                config(&mut sock, queue, |m| {
                    m.attr_be32(NFQA_CFG_QUEUE_MAXLEN, QUEUE_MAX_LEN);
                })?;
                config(&mut sock, queue, |m| {
                    m.attr_be32(NFQA_CFG_MASK, NFQA_CFG_F_FAIL_OPEN)
                        .attr_be32(NFQA_CFG_FLAGS, NFQA_CFG_F_FAIL_OPEN);
                })?;
                return Ok((sock, queue));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn verdict(sock: &Socket, queue: u16, id: u32, v: u32, payload: Option<&[u8]>) {
    let mut hdr = v.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    let mut m = Msg::new(
        (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT,
        NLM_F_REQUEST,
        0,
        libc::AF_UNSPEC as u8,
        queue,
    );
    m.attr(NFQA_VERDICT_HDR, &hdr);
    if let Some(p) = payload {
        m.attr(NFQA_PAYLOAD, p);
    }
    if let Err(e) = sock.send(&m.finish()) {
        warn!(queue, error = %e, "cannot give a shaped packet its verdict");
    }
}

/// Waits at most `wait` for a packet or the stop signal; true when it timed out.
fn wait_readable(sock: &Socket, stop: &StopSignal, wait: Duration) -> bool {
    let mut fds = [sock.raw_fd(), stop.wake.as_raw_fd()].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
    };
    // SAFETY: two valid pollfds and a valid timespec; no signal mask change.
    unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) == 0 }
}

/// How much earlier than a release the thread wakes (then spins, yielding, to the exact
/// time): a timer wake-up comes late by up to several milliseconds on a virtual machine whose
/// idle vCPU the host must schedule again, so it keeps the lateness of its last
/// [`WakeMargin::WINDOW`] timed wake-ups and wakes by their worst (plus a little) before.
/// The spin costs CPU only inside that margin before each release.
struct WakeMargin {
    recent: std::collections::VecDeque<Duration>,
    margin: Duration,
}

impl WakeMargin {
    const WINDOW: usize = 128;
    const PAD: Duration = Duration::from_micros(300);
    const MOST: Duration = Duration::from_millis(10);

    fn new() -> WakeMargin {
        WakeMargin {
            recent: std::collections::VecDeque::with_capacity(Self::WINDOW),
            margin: Duration::from_millis(2),
        }
    }

    fn learn(&mut self, late: Duration) {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(late);
        let worst = self.recent.iter().max().copied().unwrap_or_default();
        self.margin = (worst + Self::PAD).min(Self::MOST);
    }
}

/// Serves the queue until `stop` or the deadline, then lets every held packet go.
fn serve(
    sock: Socket,
    queue: u16,
    shape: Shape,
    deadline: Instant,
    stop: &StopSignal,
    seed: u64,
) -> Stats {
    let mut decider = Decider::new(shape, seed);
    let mut held: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut stats = Stats::default();
    let mut order = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut margin = WakeMargin::new();
    loop {
        let now = Instant::now();
        if stop.raised() || now >= deadline {
            break;
        }
        // Sleep until a packet, the stop signal, or `margin` before the next release (then
        // spin, reading packets as they come, to the release itself).
        let wait = held
            .peek()
            .map(|Reverse((at, _, _))| {
                at.saturating_duration_since(now)
                    .saturating_sub(margin.margin)
            })
            .unwrap_or(Duration::from_secs(1))
            .min(deadline.saturating_duration_since(now));
        if wait.is_zero() {
            std::thread::yield_now();
        } else if wait_readable(&sock, stop, wait) {
            margin.learn(Instant::now().saturating_duration_since(now + wait));
        }
        // Everything queued now, without waiting (bounded per round so releases stay on time).
        for _ in 0..64 {
            let n = match sock.recv(&mut buf, false) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The socket overflowed: those packets passed (fail-open); carry on.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => {
                    warn!(queue, error = %e, "the shaper's queue socket failed; its packets pass unshaped");
                    break;
                }
            };
            let arrived = Instant::now();
            for m in netlink::messages(&buf[..n]) {
                if m.kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    continue;
                }
                let mut id = None;
                let mut payload: Option<&[u8]> = None;
                for (kind, data) in netlink::attributes(m.payload) {
                    match kind {
                        NFQA_PACKET_HDR if data.len() >= 4 => {
                            id = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
                        }
                        NFQA_PAYLOAD => payload = Some(data),
                        _ => {}
                    }
                }
                let Some(id) = id else { continue };
                stats.packets += 1;
                match decider.decide() {
                    Decision::Pass => verdict(&sock, queue, id, NF_ACCEPT, None),
                    Decision::Drop => {
                        stats.dropped += 1;
                        verdict(&sock, queue, id, NF_DROP, None)
                    }
                    Decision::Hold(d) => {
                        stats.held += 1;
                        order += 1;
                        held.push(Reverse((arrived + d, order, id)));
                        stats.most_held_at_once = stats.most_held_at_once.max(held.len());
                    }
                    Decision::Corrupt => {
                        let mut p = payload.unwrap_or_default().to_vec();
                        if decider.corrupt(&mut p) {
                            stats.corrupted += 1;
                            verdict(&sock, queue, id, NF_ACCEPT, Some(&p));
                        } else {
                            verdict(&sock, queue, id, NF_ACCEPT, None);
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        while let Some(Reverse((at, _, id))) = held.peek().copied() {
            if at > now {
                break;
            }
            held.pop();
            verdict(&sock, queue, id, NF_ACCEPT, None);
        }
    }
    // Revert or deadline: what is held goes now (nothing is dropped on the way out).
    while let Some(Reverse((_, _, id))) = held.pop() {
        verdict(&sock, queue, id, NF_ACCEPT, None);
    }
    info!(
        queue,
        packets = stats.packets,
        held = stats.held,
        corrupted = stats.corrupted,
        dropped = stats.dropped,
        most_held_at_once = stats.most_held_at_once,
        "shaper stopped"
    );
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_jitter_and_average_the_latency() {
        let mut d = Decider::new(
            Shape::Delay {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(10),
                correlation: 0.25,
            },
            7,
        );
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let Decision::Hold(h) = d.decide() else {
                panic!("a delay holds every packet");
            };
            let ms = h.as_secs_f64() * 1000.0;
            assert!((90.0..=110.0).contains(&ms), "{ms}");
            sum += ms;
        }
        assert!((sum / 10_000.0 - 100.0).abs() < 0.5);
    }

    #[test]
    fn correlation_makes_neighbours_alike() {
        let gaps = |c: f64| {
            let mut d = Decider::new(
                Shape::Delay {
                    latency: Duration::from_millis(100),
                    jitter: Duration::from_millis(50),
                    correlation: c,
                },
                3,
            );
            let mut last = 0.0;
            let mut sum = 0.0;
            for _ in 0..5000 {
                let Decision::Hold(h) = d.decide() else {
                    unreachable!()
                };
                sum += (h.as_secs_f64() - last).abs();
                last = h.as_secs_f64();
            }
            sum
        };
        assert!(gaps(0.9) < gaps(0.0) / 3.0);
    }

    #[test]
    fn reorder_and_corrupt_take_their_share() {
        let mut d = Decider::new(
            Shape::Reorder {
                share: 0.25,
                latency: Duration::from_millis(10),
            },
            1,
        );
        let passed = (0..10_000).filter(|_| d.decide() == Decision::Pass).count();
        assert!((2300..=2700).contains(&passed), "{passed}");
        let mut d = Decider::new(Shape::Corrupt { share: 0.1 }, 1);
        let hit = (0..10_000)
            .filter(|_| d.decide() == Decision::Corrupt)
            .count();
        assert!((850..=1150).contains(&hit), "{hit}");
    }

    #[test]
    fn correlated_loss_keeps_its_share_in_longer_bursts() {
        let bursts = |c: f64| {
            let mut d = Decider::new(
                Shape::Loss {
                    share: 0.1,
                    correlation: c,
                },
                9,
            );
            let lost: Vec<bool> = (0..100_000).map(|_| d.decide() == Decision::Drop).collect();
            let share = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
            let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count().max(1);
            (
                share,
                lost.iter().filter(|l| **l).count() as f64 / runs as f64,
            )
        };
        let (alone, alone_run) = bursts(0.0);
        let (tied, tied_run) = bursts(0.5);
        assert!(
            (alone - 0.1).abs() < 0.005 && (tied - 0.1).abs() < 0.01,
            "{alone} {tied}"
        );
        // Independent: mean run 1/(1-p) ≈ 1.11; with c = 0.5 about 1/(1-0.55) ≈ 2.2.
        assert!(alone_run < 1.2 && tied_run > 2.0, "{alone_run} {tied_run}");
    }

    #[test]
    fn corruption_flips_one_bit_past_the_ip_header() {
        let mut d = Decider::new(Shape::Corrupt { share: 1.0 }, 5);
        let mut v4 = vec![0u8; 60];
        v4[0] = 0x45;
        for _ in 0..200 {
            let mut p = v4.clone();
            assert!(d.corrupt(&mut p));
            let diff: u32 = p.iter().zip(&v4).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(diff, 1);
            assert_eq!(p[..20], v4[..20], "the IPv4 header is whole");
        }
        let mut header_only = vec![0x45u8; 20];
        assert!(!d.corrupt(&mut header_only));
        assert!(!d.corrupt(&mut []));
    }
}
