//! `down`: the service is down. Proxy-wide, whatever its direction and toxicity: the listener
//! closes (new connects are refused) and every open connection is closed, until it goes.

use std::sync::Arc;

use tokio::time::Instant;

use crate::spec::model::ToxicKind;

use super::{Installed, Toxic};

#[derive(Debug)]
pub(super) struct Down;

impl Toxic for Down {
    fn proxy_wide(&self) -> bool {
        true
    }
}

/// Whether an unexpired `down` is installed.
pub(crate) fn is_down(set: &[Arc<Installed>], now: Instant) -> bool {
    set.iter()
        .any(|t| matches!(t.req.kind, ToxicKind::Down) && !t.expired(now))
}
