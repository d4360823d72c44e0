//! Per-connection state of each toxic and the small pure decisions each toxic makes.
//!
//! A pump (see [`super::link`]) keeps one [`ToxicState`] per toxic that applies to its direction.
//! Every random decision comes from a ChaCha8 generator seeded from the toxic's seed and the
//! connection's sequence number, so the same seed and connection order replay identically.

use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::spec::model::{Direction, ToxicKind};

use super::{ProxyError, ToxicRequest};

/// A toxic installed on a proxy.
#[derive(Debug)]
pub(crate) struct Toxic {
    pub id: u64,
    pub req: ToxicRequest,
    /// `req.deadline` on tokio's clock.
    pub deadline: Instant,
}

impl Toxic {
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// The proxy's current toxic set; replaced as a whole on every change (copy on write).
pub(crate) type ToxicSet = Arc<Vec<Arc<Toxic>>>;

/// `down` is proxy-wide: it ignores direction and toxicity.
pub(crate) fn is_down(set: &[Arc<Toxic>], now: Instant) -> bool {
    set.iter()
        .any(|t| matches!(t.req.kind, ToxicKind::Down) && !t.expired(now))
}

/// Rejects attribute values that have no sensible meaning.
pub(crate) fn validate(req: &ToxicRequest) -> Result<(), ProxyError> {
    let invalid = |reason: String| Err(ProxyError::InvalidToxic { reason });
    if !(0.0..=1.0).contains(&req.toxicity) {
        return invalid(format!(
            "toxicity must be between 0 and 1, got {}",
            req.toxicity
        ));
    }
    if let ToxicKind::Slicer { average_size, .. } = req.kind
        && average_size == 0
    {
        return invalid("slicer average_size must be at least 1 byte".into());
    }
    Ok(())
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
    pub toxic: Arc<Toxic>,
    pub affected: bool,
    /// When this connection first saw the toxic: timers (timeout, reset_peer) start here.
    pub since: Instant,
    /// Jitter and slice sizes.
    pub rng: ChaCha8Rng,
    /// limit_data: bytes passed since activation.
    pub passed: u64,
    /// bandwidth: earliest instant the next byte may go out.
    pub next_send: Option<Instant>,
    /// slicer: bytes left in the current slice, and when the next slice may start.
    pub slice_left: usize,
    pub next_slice: Option<Instant>,
}

impl ToxicState {
    pub fn new(toxic: Arc<Toxic>, conn_seq: u64, dir: Direction, now: Instant) -> Self {
        let seed = toxic.req.seed;
        let affected = affects(seed, conn_seq, toxic.req.toxicity);
        let dir_salt = match dir {
            Direction::Upstream => 0x5550,
            Direction::Downstream => 0xD0D0,
        };
        let rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(conn_seq ^ mix(dir_salt))));
        Self {
            toxic,
            affected,
            since: now,
            rng,
            passed: 0,
            next_send: None,
            slice_left: 0,
            next_slice: None,
        }
    }

    pub fn kind(&self) -> &ToxicKind {
        &self.toxic.req.kind
    }
}

// ---- latency ----------------------------------------------------------------------------------

/// The delay for one chunk: `latency` plus a uniform draw in ±`jitter`, never negative.
pub(crate) fn latency_draw(st: &mut ToxicState) -> Duration {
    let ToxicKind::Latency { latency, jitter } = *st.kind() else {
        return Duration::ZERO;
    };
    if jitter.is_zero() {
        return latency;
    }
    let j = jitter.as_nanos().min(i64::MAX as u128) as i64;
    let off = st.rng.random_range(-j..=j);
    let base = latency.as_nanos().min(i64::MAX as u128) as i64;
    Duration::from_nanos(base.saturating_add(off).max(0) as u64)
}

// ---- bandwidth --------------------------------------------------------------------------------

/// Bytes per second for a `rate_kbps` (Toxiproxy's KB is 1000 bytes); `None` is unlimited.
pub(crate) fn bandwidth_rate(rate_kbps: u64) -> Option<u64> {
    (rate_kbps > 0).then(|| rate_kbps.saturating_mul(1000))
}

/// Largest piece written at once: about 10 ms worth, so the rate is smooth.
pub(crate) fn bandwidth_piece(rate: u64) -> usize {
    (rate / 100).clamp(1, 64 * 1024) as usize
}

/// Books `n` bytes sent at `now` against the rate.
pub(crate) fn bandwidth_sent(st: &mut ToxicState, rate: u64, n: usize, now: Instant) {
    let start = st.next_send.map_or(now, |t| t.max(now));
    let cost = Duration::from_nanos((n as u128 * 1_000_000_000 / rate as u128) as u64);
    st.next_send = Some(start + cost);
}

// ---- slicer -----------------------------------------------------------------------------------

/// Size of the next slice: `average` ± a uniform draw in `variation`, at least 1 byte.
pub(crate) fn slice_size(st: &mut ToxicState, average: usize, variation: usize) -> usize {
    if variation == 0 {
        return average.max(1);
    }
    let v = variation.min(average.saturating_sub(1)) as i64;
    let off = if v == 0 {
        0
    } else {
        st.rng.random_range(-v..=v)
    };
    (average as i64 + off).max(1) as usize
}

// ---- timers (timeout, reset_peer) -------------------------------------------------------------

/// What a connection-level timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerAction {
    /// timeout: close the connection.
    Close,
    /// reset_peer: close with SO_LINGER 0 so the peer sees RST.
    Reset,
}

/// The timer of a timeout / reset_peer toxic on this connection, if any.
pub(crate) fn timer(st: &ToxicState) -> Option<(Instant, TimerAction)> {
    match *st.kind() {
        ToxicKind::Timeout { timeout } if !timeout.is_zero() => {
            Some((st.since + timeout, TimerAction::Close))
        }
        ToxicKind::ResetPeer { timeout } => Some((st.since + timeout, TimerAction::Reset)),
        _ => None,
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

    #[test]
    fn bandwidth_books_time() {
        let now = Instant::now();
        let toxic = Arc::new(Toxic {
            id: 1,
            req: ToxicRequest {
                label: "t".into(),
                kind: ToxicKind::Bandwidth { rate_kbps: 100 },
                direction: Direction::Downstream,
                toxicity: 1.0,
                seed: 1,
                deadline: std::time::Instant::now() + Duration::from_secs(5),
            },
            deadline: now + Duration::from_secs(5),
        });
        let mut st = ToxicState::new(toxic, 0, Direction::Downstream, now);
        bandwidth_sent(&mut st, 100_000, 10_000, now);
        assert_eq!(st.next_send, Some(now + Duration::from_millis(100)));
    }
}
