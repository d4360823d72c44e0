//! The toxics: one file per kind, each behind the small [`Toxic`] trait.
//!
//! A pump (see [`super::link`]) builds one [`ToxicState`] per installed toxic of its direction
//! when the connection first sees it; the state owns a boxed [`Toxic`] holding the toxic's
//! parameters and whatever it remembers on this connection. The pump asks it, once per piece of
//! a chunk, for a [`Plan`] (when and how much may go out), tells it what was written, and asks
//! about timers and the close. Dispatch is per chunk, never per byte.
//!
//! Every random decision comes from a ChaCha8 generator seeded from the toxic's seed and the
//! connection's sequence number, so the same seed and connection order replay identically.

mod bandwidth;
mod down;
mod latency;
mod limit_data;
mod reset_peer;
mod slicer;
mod slow_close;
mod timeout;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::spec::model::{Direction, ToxicKind};

use super::{ProxyError, ToxicRequest};

pub(crate) use down::is_down;

/// What one toxic does to one direction of one connection. Every method has the default of a
/// toxic that does nothing there.
pub(crate) trait Toxic: Send + Debug {
    /// Rejects parameter values that have no sensible meaning (checked when it is added).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the direction must leave the splice fast path while this toxic affects it: it
    /// shapes the bytes, or its timers and the close are watched by the copy path.
    fn forbids_splice(&self) -> bool {
        true
    }

    /// Proxy-wide (`down`): handled by the listener and [`is_down`], never per direction.
    fn proxy_wide(&self) -> bool {
        false
    }

    /// A timer that started when the connection first saw the toxic, and what it does then.
    fn timer(&self) -> Option<(Instant, TimerAction)> {
        None
    }

    /// How long the sender's close is held before it is passed on.
    fn close_delay(&self) -> Option<Duration> {
        None
    }

    /// Whether data (and a half-close) is swallowed while the toxic is active (blackhole).
    fn swallows(&self) -> bool {
        false
    }

    /// Constrains the next piece of `chunk`. Called again for the same chunk after every wait,
    /// so a decision taken once per chunk (a latency draw) is kept by `chunk.seq`.
    fn plan(&mut self, _chunk: &Chunk, _plan: &mut Plan) {}

    /// `n` bytes of this direction were written at `now`.
    fn sent(&mut self, _n: usize, _now: Instant) {}
}

/// A chunk as the reader read it, as the toxics see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    /// Per pump, increases by one per chunk.
    pub seq: u64,
    /// When it was read: latency is timed from here (pipelined, not cumulative).
    pub read_at: Instant,
}

/// What the toxics allow for the next piece of a chunk; each one only narrows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Not before this instant.
    pub ready: Instant,
    /// At most this many bytes.
    pub piece: usize,
    /// Close the connection instead, for this reason.
    pub close: Option<&'static str>,
}

impl Plan {
    pub fn not_before(&mut self, t: Instant) {
        self.ready = self.ready.max(t);
    }

    pub fn at_most(&mut self, n: usize) {
        self.piece = self.piece.min(n);
    }
}

/// What a connection-level timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerAction {
    /// timeout: close the connection.
    Close,
    /// reset_peer: close with SO_LINGER 0 so the peer sees RST.
    Reset,
}

/// The implementation of a kind, with its parameters, for a connection that first saw it at
/// `since`; `rng` is its own generator.
fn build(kind: &ToxicKind, rng: ChaCha8Rng, since: Instant) -> Box<dyn Toxic> {
    match *kind {
        ToxicKind::Latency { latency, jitter } => {
            Box::new(latency::Latency::new(latency, jitter, rng))
        }
        ToxicKind::Bandwidth { rate_kbps } => Box::new(bandwidth::Bandwidth::new(rate_kbps)),
        ToxicKind::Timeout { timeout } => Box::new(timeout::Timeout::new(timeout, since)),
        ToxicKind::ResetPeer { timeout } => Box::new(reset_peer::ResetPeer::new(timeout, since)),
        ToxicKind::Down => Box::new(down::Down),
        ToxicKind::SlowClose { delay } => Box::new(slow_close::SlowClose::new(delay)),
        ToxicKind::Slicer {
            average_size,
            size_variation,
            delay,
        } => Box::new(slicer::Slicer::new(
            average_size,
            size_variation,
            delay,
            rng,
        )),
        ToxicKind::LimitData { bytes } => Box::new(limit_data::LimitData::new(bytes)),
    }
}

/// A toxic installed on a proxy.
#[derive(Debug)]
pub(crate) struct Installed {
    pub id: u64,
    pub req: ToxicRequest,
    /// `req.deadline` on tokio's clock.
    pub deadline: Instant,
}

impl Installed {
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// The proxy's current toxic set; replaced as a whole on every change (copy on write).
pub(crate) type ToxicSet = Arc<Vec<Arc<Installed>>>;

/// Rejects a request whose toxicity or parameters have no sensible meaning.
pub(crate) fn validate(req: &ToxicRequest) -> Result<(), ProxyError> {
    if !(0.0..=1.0).contains(&req.toxicity) {
        return Err(ProxyError::InvalidToxic {
            reason: format!("toxicity must be between 0 and 1, got {}", req.toxicity),
        });
    }
    build(&req.kind, ChaCha8Rng::seed_from_u64(0), Instant::now())
        .validate()
        .map_err(|reason| ProxyError::InvalidToxic { reason })
}

/// SplitMix64 finaliser: spreads (seed, connection, purpose) into independent generator seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether connection `conn_seq` is affected by a toxic with this seed and toxicity.
/// Decided once per (toxic, connection).
pub fn affects(seed: u64, conn_seq: u64, toxicity: f64) -> bool {
    if toxicity >= 1.0 {
        return true;
    }
    if toxicity <= 0.0 || toxicity.is_nan() {
        return false;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ conn_seq);
    rng.random_bool(toxicity)
}

/// What one pump remembers about one toxic on its connection.
#[derive(Debug)]
pub(crate) struct ToxicState {
    pub toxic: Arc<Installed>,
    pub affected: bool,
    /// The kind's behaviour and its state on this connection.
    pub effect: Box<dyn Toxic>,
}

impl ToxicState {
    /// `now` is when this connection first sees the toxic: its timers start there.
    pub fn new(toxic: Arc<Installed>, conn_seq: u64, dir: Direction, now: Instant) -> Self {
        let seed = toxic.req.seed;
        let affected = affects(seed, conn_seq, toxic.req.toxicity);
        let dir_salt = match dir {
            Direction::Upstream => 0x5550,
            Direction::Downstream => 0xD0D0,
        };
        let rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(conn_seq ^ mix(dir_salt))));
        let effect = build(&toxic.req.kind, rng, now);
        Self {
            toxic,
            affected,
            effect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxicity_extremes_and_determinism() {
        assert!((0..100).all(|c| affects(7, c, 1.0)));
        assert!((0..100).all(|c| !affects(7, c, 0.0)));
        let a: Vec<bool> = (0..200).map(|c| affects(42, c, 0.5)).collect();
        let b: Vec<bool> = (0..200).map(|c| affects(42, c, 0.5)).collect();
        assert_eq!(a, b);
        let hit = a.iter().filter(|x| **x).count();
        assert!((60..140).contains(&hit), "{hit} of 200 at toxicity 0.5");
    }
}
