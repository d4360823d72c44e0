//! Signed, expiring links to the run pages: `HMAC-SHA256(key, "run:<id>:<exp>")` for one
//! run, `HMAC-SHA256(key, "runs:<exp>")` for the operator's list of runs, sent as
//! `?exp=<unix seconds>&sig=<hex>`. Nothing under `/runs` answers without one that checks.
//!
//! The key is `[server] page_secret`, or derived from the Slack signing secret, so every
//! replica that verifies Slack also accepts the others' links.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Config;

type HmacSha256 = Hmac<Sha256>;

/// Domain of the key derived from the Slack signing secret (so a page signature is never a
/// valid Slack signature or anything else made with that secret).
const DERIVE_LABEL: &[u8] = b"chaosbot run page links v1";

/// What a link grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One run's page, chart and live events.
    Run(&'a str),
    /// The list of recent runs (each with its own run link).
    Runs,
}

impl Scope<'_> {
    fn message(&self, exp: i64) -> String {
        match self {
            Scope::Run(id) => format!("run:{id}:{exp}"),
            Scope::Runs => format!("runs:{exp}"),
        }
    }
}

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has no signature (`exp` and `sig` are missing)")]
    Missing,
    #[error("the link is malformed: {0}")]
    Malformed(&'static str),
    #[error("the link expired {ago_secs} s ago")]
    Expired { ago_secs: i64 },
    #[error("the link's signature does not match (it was changed, or made with another key)")]
    Forged,
}

/// The page key: signs and checks links, and builds them on the public URL.
#[derive(Clone)]
pub struct Links {
    key: Vec<u8>,
    /// `[server] public_url` without its trailing `/`; no links are built without it.
    base: Option<String>,
    /// Lifetime of a run link from the run's submission.
    pub run_ttl: Duration,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base", &self.base)
            .field("run_ttl", &self.run_ttl)
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

impl Links {
    /// The links of `cfg`: `None` when there is no key (no `page_secret` and no Slack signing
    /// secret), and then nothing under `/runs` is reachable.
    pub fn from_config(cfg: &Config) -> Option<Links> {
        let key = match (&cfg.server.page_secret, &cfg.slack.signing_secret) {
            (Some(s), _) => s.expose().as_bytes().to_vec(),
            (None, Some(slack)) => {
                let mut m = mac(slack.expose().as_bytes());
                m.update(DERIVE_LABEL);
                m.finalize().into_bytes().to_vec()
            }
            (None, None) => return None,
        };
        Some(Links {
            key,
            // Checked when the config loaded; a bad one builds no links.
            base: cfg.server.base_url().ok().flatten(),
            run_ttl: cfg.server.link_ttl,
        })
    }

    pub fn sign(&self, scope: &Scope, exp: i64) -> String {
        let mut m = mac(&self.key);
        m.update(scope.message(exp).as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Checks `exp` and `sig` (as the query carried them) for `scope` at `now_unix`; the
    /// signature is compared in constant time.
    pub fn verify(
        &self,
        scope: &Scope,
        exp: Option<&str>,
        sig: Option<&str>,
        now_unix: i64,
    ) -> Result<(), LinkError> {
        let (exp, sig) = match (exp, sig) {
            (None, None) => return Err(LinkError::Missing),
            (Some(e), Some(s)) => (e.trim(), s.trim()),
            _ => return Err(LinkError::Malformed("it needs both `exp` and `sig`")),
        };
        let exp: i64 = exp
            .parse()
            .map_err(|_| LinkError::Malformed("`exp` is not Unix seconds"))?;
        let sig = hex::decode(sig).map_err(|_| LinkError::Malformed("`sig` is not hex"))?;
        let mut m = mac(&self.key);
        m.update(scope.message(exp).as_bytes());
        // Signature first: an expired link with a forged signature is forged.
        m.verify_slice(&sig).map_err(|_| LinkError::Forged)?;
        if now_unix >= exp {
            return Err(LinkError::Expired {
                ago_secs: now_unix - exp,
            });
        }
        Ok(())
    }

    /// `?exp=…&sig=…` for `scope`, valid until `exp`.
    pub fn query(&self, scope: &Scope, exp: i64) -> String {
        format!("exp={exp}&sig={}", self.sign(scope, exp))
    }

    /// The path and query of a run's page, valid until `exp` (for links on the same host).
    pub fn run_path(&self, run_id: &str, exp: i64) -> String {
        format!("/runs/{run_id}?{}", self.query(&Scope::Run(run_id), exp))
    }

    /// The full link to a run's page for the parent message: valid for `run_ttl` from the
    /// run's submission (so every render of the message carries the same link). `None`
    /// without `[server] public_url`.
    pub fn run_url(&self, run_id: &str, created_ms: i64) -> Option<String> {
        self.run_url_from(run_id, created_ms.div_euclid(1000))
    }

    /// A link to a run's page valid for `run_ttl` from `from_unix` (a fresh one for
    /// `/chaos summary`). `None` without `[server] public_url`.
    pub fn run_url_from(&self, run_id: &str, from_unix: i64) -> Option<String> {
        let base = self.base.as_deref()?;
        let ttl = i64::try_from(self.run_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let exp = from_unix.saturating_add(ttl);
        Some(format!("{base}{}", self.run_path(run_id, exp)))
    }

    /// The operator link to the list of runs, valid until `exp`; the path alone without a
    /// public URL.
    pub fn runs_url(&self, exp: i64) -> String {
        let base = self.base.as_deref().unwrap_or("");
        format!("{base}/runs?{}", self.query(&Scope::Runs, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn links() -> Links {
        let mut cfg = Config::default();
        cfg.server.page_secret = Some(Secret("a-page-secret-of-some-length".into()));
        cfg.server.public_url = Some("https://chaos.example.com/".into());
        Links::from_config(&cfg).unwrap()
    }

    #[test]
    fn a_signed_link_checks_until_it_expires() {
        let l = links();
        let sig = l.sign(&Scope::Run("r-1"), 1_000);
        let ok = l.verify(&Scope::Run("r-1"), Some("1000"), Some(&sig), 999);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            l.verify(&Scope::Run("r-1"), Some("1000"), Some(&sig), 1_005),
            Err(LinkError::Expired { ago_secs: 5 })
        );
        // Another run, another expiry, the list: all refused.
        assert_eq!(
            l.verify(&Scope::Run("r-2"), Some("1000"), Some(&sig), 999),
            Err(LinkError::Forged)
        );
        assert_eq!(
            l.verify(&Scope::Run("r-1"), Some("2000"), Some(&sig), 999),
            Err(LinkError::Forged)
        );
        assert_eq!(
            l.verify(&Scope::Runs, Some("1000"), Some(&sig), 999),
            Err(LinkError::Forged)
        );
        assert_eq!(
            l.verify(&Scope::Runs, None, None, 999),
            Err(LinkError::Missing)
        );
        assert!(matches!(
            l.verify(&Scope::Runs, Some("x"), Some("zz"), 999),
            Err(LinkError::Malformed(_))
        ));
    }

    #[test]
    fn the_run_link_is_stable_and_on_the_public_url() {
        let l = links();
        let a = l.run_url("r-1", 1_700_000_000_123).unwrap();
        assert_eq!(a, l.run_url("r-1", 1_700_000_000_123).unwrap());
        let exp = 1_700_000_000 + 7 * 24 * 3600;
        assert!(
            a.starts_with(&format!(
                "https://chaos.example.com/runs/r-1?exp={exp}&sig="
            )),
            "{a}"
        );
    }

    #[test]
    fn the_derived_key_differs_from_the_slack_secret() {
        let mut cfg = Config::default();
        cfg.slack.signing_secret = Some(Secret("slack-secret".into()));
        let derived = Links::from_config(&cfg).unwrap();
        cfg.server.page_secret = Some(Secret("slack-secret".into()));
        let direct = Links::from_config(&cfg).unwrap();
        assert_ne!(derived.sign(&Scope::Runs, 5), direct.sign(&Scope::Runs, 5));
        assert!(Links::from_config(&Config::default()).is_none());
    }
}
