//! The agent's own netem, for `delay`, `reorder` and `corrupt` on kernels without sch_netem:
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
use std::os::fd::AsRawFd;
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
}

/// Draws each packet's fate (seeded, so tests can replay it).
pub struct Decider {
    shape: Shape,
    rng: ChaCha8Rng,
    last: f64,
}

impl Decider {
    pub fn new(shape: Shape, seed: u64) -> Decider {
        Decider {
            shape,
            rng: ChaCha8Rng::seed_from_u64(seed),
            last: 0.5,
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
    pub most_held_at_once: usize,
}

/// A running shaper: its queue and the thread that serves it.
pub struct Shaper {
    pub queue: u16,
    stop: Arc<AtomicBool>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
        let chain = chain.to_string();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chaosbot-shaper".into())
            .spawn(move || {
                let setup = (|| {
                    if let Some(ns) = &ns {
                        // SAFETY: setns(2) on this thread only, with a namespace fd we hold.
                        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            return Err(io::Error::last_os_error());
                        }
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
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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

/// Waits for the socket to be readable for at most `wait`.
fn wait_readable(sock: &Socket, wait: Duration) {
    let mut fds = libc::pollfd {
        fd: sock.raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd and a valid timespec; no signal mask change.
    unsafe { libc::ppoll(&mut fds, 1, &ts, std::ptr::null()) };
}

/// Serves the queue until `stop` or the deadline, then lets every held packet go.
fn serve(
    sock: Socket,
    queue: u16,
    shape: Shape,
    deadline: Instant,
    stop: &AtomicBool,
    seed: u64,
) -> Stats {
    let mut decider = Decider::new(shape, seed);
    let mut held: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut stats = Stats::default();
    let mut order = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || now >= deadline {
            break;
        }
        // Wake for the next release, a packet, or (at most every 20 ms) to look at `stop`.
        let next = held
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20))
            .min(deadline.saturating_duration_since(now));
        if !next.is_zero() {
            wait_readable(&sock, next);
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
