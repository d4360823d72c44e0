//! Network (proxy) steps: the toxic of a step and the direction it acts in.

use std::time::Duration;

use super::cx::Cx;
use crate::spec::did_you_mean;
use crate::spec::model::{Direction, ToxicKind};
use crate::spec::raw::RawStep;

/// `direction: upstream | downstream` (default downstream).
pub(super) fn direction(cx: &mut Cx, path: &str, s: &RawStep) -> Option<Direction> {
    match s.direction.as_deref().map(str::trim) {
        None | Some("downstream") => Some(Direction::Downstream),
        Some("upstream") => Some(Direction::Upstream),
        Some(other) => {
            let hint = match did_you_mean(other, ["upstream", "downstream"]) {
                Some(s) => format!("did you mean `{s}`?"),
                None => {
                    "use `upstream` (client → service) or `downstream` (service → client)".into()
                }
            };
            cx.at(
                &format!("{path}.direction"),
                format!("unknown direction `{other}`"),
                hint,
            );
            None
        }
    }
}

/// The toxic of a network step of kind `k` (its attribute keys are checked already).
pub(super) fn toxic(cx: &mut Cx, path: &str, k: &str, s: &RawStep) -> Option<ToxicKind> {
    let d = |cx: &mut Cx, key: &str, v: &Option<String>| {
        cx.duration(&format!("{path}.{key}"), v, Some(Duration::ZERO))
    };
    let u = |cx: &mut Cx, key: &str, v: &Option<String>, ex: &str| {
        cx.uint(&format!("{path}.{key}"), v, ex)
    };
    match k {
        "latency" => match (d(cx, "latency", &s.latency), d(cx, "jitter", &s.jitter)) {
            (Some(latency), Some(jitter)) => Some(ToxicKind::Latency { latency, jitter }),
            _ => None,
        },
        "bandwidth" => u(cx, "rate_kbps", &s.rate_kbps, "64")
            .map(|rate_kbps| ToxicKind::Bandwidth { rate_kbps }),
        "timeout" => d(cx, "timeout", &s.timeout).map(|timeout| ToxicKind::Timeout { timeout }),
        "reset_peer" => {
            d(cx, "timeout", &s.timeout).map(|timeout| ToxicKind::ResetPeer { timeout })
        }
        "down" => Some(ToxicKind::Down),
        "slow_close" => d(cx, "delay", &s.delay).map(|delay| ToxicKind::SlowClose { delay }),
        "slicer" => slicer(cx, path, s),
        "limit_data" => {
            u(cx, "bytes", &s.bytes, "1024").map(|bytes| ToxicKind::LimitData { bytes })
        }
        _ => None,
    }
}

/// `slicer`: slices of about `average_size` bytes (± `size_variation`), `delay` apart.
fn slicer(cx: &mut Cx, path: &str, s: &RawStep) -> Option<ToxicKind> {
    let size = cx.uint(&format!("{path}.average_size"), &s.average_size, "64");
    let var = match &s.size_variation {
        Some(_) => cx.uint(&format!("{path}.size_variation"), &s.size_variation, "16"),
        None => Some(0),
    };
    let delay = cx.duration(&format!("{path}.delay"), &s.delay, Some(Duration::ZERO));
    if size == Some(0) {
        cx.at(
            &format!("{path}.average_size"),
            "`average_size` is zero",
            "slices need at least one byte, like `average_size: 64`",
        );
    }
    match (size, var, delay) {
        (Some(a), Some(v), Some(delay)) if a > 0 => Some(ToxicKind::Slicer {
            average_size: usize::try_from(a).unwrap_or(usize::MAX),
            size_variation: usize::try_from(v).unwrap_or(usize::MAX),
            delay,
        }),
        _ => None,
    }
}
