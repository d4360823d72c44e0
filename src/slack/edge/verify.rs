//! Slack request signatures: HMAC-SHA256 of `v0:{timestamp}:{raw body}` with the app's signing
//! secret, sent as `X-Slack-Signature: v0=<hex>` next to `X-Slack-Request-Timestamp`.
//!
//! `now_unix` is an argument (not the wall clock) so Slack's published 2018 example can be
//! checked in a test.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Requests older or newer than this are refused (replay protection).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request has no {0} header; only Slack's signed requests are accepted")]
    MissingHeader(&'static str),
    #[error("the request's {what} is malformed: {why}")]
    Malformed { what: &'static str, why: String },
    #[error(
        "the request was signed {age_secs} s away from now (more than 5 minutes); replayed, or a clock is off"
    )]
    Stale { age_secs: i64 },
    #[error("the signature does not match the body; check the signing secret")]
    Mismatch,
}

/// Checks a Slack signature over the raw body, in constant time.
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let timestamp = timestamp.trim();
    let signature = signature.trim();
    if timestamp.is_empty() {
        return Err(VerifyError::MissingHeader("X-Slack-Request-Timestamp"));
    }
    if signature.is_empty() {
        return Err(VerifyError::MissingHeader("X-Slack-Signature"));
    }
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed {
        what: "X-Slack-Request-Timestamp",
        why: "expected Unix seconds".into(),
    })?;
    let age_secs = now_unix.saturating_sub(ts);
    if age_secs.abs() > MAX_SKEW_SECS {
        return Err(VerifyError::Stale { age_secs });
    }
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or_else(|| VerifyError::Malformed {
            what: "X-Slack-Signature",
            why: "expected `v0=` followed by 64 hex digits".into(),
        })?;
    let given = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed {
        what: "X-Slack-Signature",
        why: "expected `v0=` followed by 64 hex digits".into(),
    })?;
    let expected = sign_raw(secret, timestamp, body);
    // Length is not secret (always 32 bytes when well-formed); the bytes are compared in
    // constant time.
    if given.len() == expected.len() && bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The `X-Slack-Signature` value Slack would send (also used by tests and fakes).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!("v0={}", hex::encode(sign_raw(secret, timestamp, body)))
}

fn sign_raw(secret: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key rather
    // than panic (which would then never match a real signature).
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's published example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const NOW: i64 = 1531420618 + 30;

    #[test]
    fn slack_published_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIG);
        assert_eq!(verify(SECRET, TS, SIG, BODY.as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn tampered_body_or_wrong_secret_mismatch() {
        let mut body = BODY.to_string();
        body.push('x');
        assert_eq!(
            verify(SECRET, TS, SIG, body.as_bytes(), NOW),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("other", TS, SIG, BODY.as_bytes(), NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stale_both_ways() {
        let ts: i64 = TS.parse().unwrap();
        assert!(matches!(
            verify(SECRET, TS, SIG, BODY.as_bytes(), ts + 301),
            Err(VerifyError::Stale { age_secs: 301 })
        ));
        assert!(matches!(
            verify(SECRET, TS, SIG, BODY.as_bytes(), ts - 301),
            Err(VerifyError::Stale { age_secs: -301 })
        ));
        assert!(verify(SECRET, TS, SIG, BODY.as_bytes(), ts + 300).is_ok());
    }

    #[test]
    fn missing_and_malformed() {
        assert!(matches!(
            verify(SECRET, "", SIG, b"", NOW),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            verify(SECRET, TS, "", b"", NOW),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            verify(SECRET, "soon", SIG, b"", NOW),
            Err(VerifyError::Malformed { .. })
        ));
        assert!(matches!(
            verify(SECRET, TS, "v1=abc", b"", NOW),
            Err(VerifyError::Malformed { .. })
        ));
        assert!(matches!(
            verify(SECRET, TS, "v0=zz", b"", NOW),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            verify(SECRET, TS, "v0=abcd", BODY.as_bytes(), NOW),
            Err(VerifyError::Mismatch)
        );
    }
}
