//! Toxiproxy's JSON shapes and error bodies, and their mapping onto chaosbot's toxics.
//!
//! The shapes follow Shopify/toxiproxy: `api.go` (routes, status codes, `ApiError`),
//! `proxy.go` (the proxy object), `toxics/toxic.go` (the toxic wrapper) and the attribute
//! structs of `toxics/*.go` (names and units: milliseconds, except the slicer's `delay` in
//! microseconds; bandwidth in KB/s).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::model::{Direction, ToxicKind};

/// Toxiproxy's error body: `{"error": ..., "status": ...}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiError {
    pub error: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            error: error.into(),
            status: status.as_u16(),
        }
    }

    /// Toxiproxy's "bad request body: ..." (400).
    pub fn bad_body(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad request body: {why}"))
    }

    /// Toxiproxy's "missing required field: ..." (400).
    pub fn missing(field: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("missing required field: {field}"),
        )
    }

    pub fn proxy_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "proxy not found")
    }

    pub fn toxic_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "toxic not found")
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status_code(), axum::Json(self)).into_response()
    }
}

/// A toxic as Toxiproxy shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToxicJson {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub toxicity: f64,
    pub attributes: Value,
}

/// A proxy as Toxiproxy shows it, with its toxics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyJson {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<ToxicJson>,
}

/// The body of `POST /proxies`, `POST|PATCH /proxies/{name}` and one entry of `/populate`:
/// every field optional, so an update keeps what it leaves out.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// The body of `POST /proxies/{name}/toxics` and of a toxic update. `seed` is chaosbot's:
/// the seed of the toxic's random decisions (toxicity draws, jitter, slice sizes).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToxicInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub toxicity: Option<f64>,
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Parses a request body; an empty body is `{}` for the updates that allow it.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::bad_body)
}

pub fn parse_stream(text: &str) -> Result<Direction, ApiError> {
    match text {
        "upstream" => Ok(Direction::Upstream),
        "downstream" => Ok(Direction::Downstream),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "stream was invalid, can be either upstream or downstream",
        )),
    }
}

/// A kind's Toxiproxy attributes: the same mapping the controller sends to a Toxiproxy server.
pub use crate::faults::toxiproxy::attributes_of;

/// An attribute as a whole number (missing is zero, as in Toxiproxy); anything else is a 400
/// naming the attribute.
fn uint(kind: &str, a: &Map<String, Value>, field: &str) -> Result<u64, ApiError> {
    match a.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::bad_body(format!(
                "attribute `{field}` of a {kind} toxic must be a whole number of at least 0, got {v}"
            ))
        }),
    }
}

/// Toxiproxy's toxic types (`down` is not one: it is `enabled: false`).
pub fn is_toxic_type(kind: &str) -> bool {
    kind != "down" && ToxicKind::NAMES.contains(&kind)
}

/// The chaosbot toxic for a Toxiproxy type and attributes (missing attributes are zero, as
/// in Toxiproxy). An unknown type is Toxiproxy's "invalid toxic type" (400).
pub fn kind_from(kind: &str, a: &Map<String, Value>) -> Result<ToxicKind, ApiError> {
    let millis = |field| uint(kind, a, field).map(Duration::from_millis);
    let size = |field| {
        uint(kind, a, field).and_then(|n| {
            usize::try_from(n)
                .map_err(|_| ApiError::bad_body(format!("attribute `{field}` is too large")))
        })
    };
    Ok(match kind {
        "latency" => ToxicKind::Latency {
            latency: millis("latency")?,
            jitter: millis("jitter")?,
        },
        "bandwidth" => ToxicKind::Bandwidth {
            rate_kbps: uint(kind, a, "rate")?,
        },
        "timeout" => ToxicKind::Timeout {
            timeout: millis("timeout")?,
        },
        "reset_peer" => ToxicKind::ResetPeer {
            timeout: millis("timeout")?,
        },
        "slow_close" => ToxicKind::SlowClose {
            delay: millis("delay")?,
        },
        "slicer" => ToxicKind::Slicer {
            average_size: size("average_size")?,
            size_variation: size("size_variation")?,
            delay: Duration::from_micros(uint(kind, a, "delay")?),
        },
        "limit_data" => ToxicKind::LimitData {
            bytes: uint(kind, a, "bytes")?,
        },
        _ => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid toxic type"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_in_toxiproxy_units() {
        let kinds = [
            ToxicKind::Latency {
                latency: Duration::from_millis(250),
                jitter: Duration::from_millis(20),
            },
            ToxicKind::Bandwidth { rate_kbps: 64 },
            ToxicKind::Timeout {
                timeout: Duration::from_millis(1500),
            },
            ToxicKind::ResetPeer {
                timeout: Duration::ZERO,
            },
            ToxicKind::SlowClose {
                delay: Duration::from_millis(300),
            },
            ToxicKind::Slicer {
                average_size: 64,
                size_variation: 8,
                delay: Duration::from_micros(150),
            },
            ToxicKind::LimitData { bytes: 4096 },
        ];
        for k in kinds {
            let Value::Object(a) = attributes_of(&k) else {
                panic!("attributes of {k:?} are not an object");
            };
            assert_eq!(kind_from(k.name(), &a), Ok(k.clone()));
        }
        assert_eq!(
            attributes_of(&ToxicKind::Slicer {
                average_size: 1,
                size_variation: 0,
                delay: Duration::from_micros(150)
            })["delay"],
            150
        );
    }

    #[test]
    fn bad_attributes_and_types_name_the_problem() {
        let mut a = Map::new();
        a.insert("latency".into(), Value::from(-5));
        let e = kind_from("latency", &a).err().map(|e| (e.status, e.error));
        assert!(
            matches!(&e, Some((400, m)) if m.contains("latency") && m.starts_with("bad request body")),
            "{e:?}"
        );
        assert_eq!(
            kind_from("down", &Map::new()).err().map(|e| e.error),
            Some("invalid toxic type".to_string())
        );
    }
}
