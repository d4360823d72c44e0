//! An existing Toxiproxy server as the backend of a proxy target (`toxiproxy = URL`): the
//! network faults of its steps are toxics added through the server's HTTP API, each named
//! `chaosbot-<run>-<step>` so chaosbot only ever removes its own; `down` is the proxy's
//! `enabled: false`.
//!
//! The shapes follow Shopify/toxiproxy (`api.go` for routes and status codes, `toxics/*.go`
//! for attribute names and units: milliseconds, except the slicer's `delay` in microseconds;
//! bandwidth in KB/s). A Toxiproxy server has no lease and no deadline of its own: this
//! process removes the toxic at its deadline while it lives, and crash recovery removes what
//! a dead process left (from the fault record written before the toxic was added).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ToxiproxyTarget;
use crate::spec::model::{Direction, ToxicKind};

/// A toxic's name starts with this, then the run id and the step name.
pub const NAME_PREFIX: &str = "chaosbot-";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Generous on purpose: Toxiproxy itself can take up to 25 s to add or remove a toxic on a
/// saturated link (its issues #412 and #558), and giving up early would leave the toxic.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    #[error(
        "cannot reach the Toxiproxy server at {url} ({why}); start it, or fix `toxiproxy` of the target in chaosbot.toml"
    )]
    Unreachable { url: String, why: String },
    #[error(
        "the Toxiproxy server at {url} has no proxy `{proxy}`; create it there (POST {url}/proxies, or `toxiproxy-cli create`), or set the target's `proxy` to one the server lists (GET {url}/proxies)"
    )]
    NoProxy { url: String, proxy: String },
    #[error(
        "the Toxiproxy server at {url} already has a toxic `{toxic}` on proxy `{proxy}` (left by an earlier attempt of this step?); remove it with DELETE {url}/proxies/{proxy}/toxics/{toxic} and run again"
    )]
    Conflict {
        url: String,
        proxy: String,
        toxic: String,
    },
    #[error(
        "proxy `{proxy}` on the Toxiproxy server at {url} is already disabled (enabled: false), by someone else; chaosbot would enable it when the step ends. Enable it first (POST {url}/proxies/{proxy} with {{\"enabled\": true}}) or leave the `down` step out"
    )]
    AlreadyDisabled { url: String, proxy: String },
    #[error(
        "the Toxiproxy server at {url} answered {status} to {what}: {body}; check the server's log"
    )]
    Status {
        url: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error(
        "the server at {url} does not answer like Toxiproxy ({why}); check that `toxiproxy` points at its API (port 8474 by default), not at a proxy's listen port"
    )]
    BadAnswer { url: String, why: String },
}

/// A toxic as the server lists it (only what chaosbot reads).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ToxicInfo {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A proxy as the server shows it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProxyInfo {
    pub name: String,
    #[serde(default)]
    pub listen: String,
    #[serde(default)]
    pub upstream: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub toxics: Vec<ToxicInfo>,
}

fn yes() -> bool {
    true
}

/// A client of one Toxiproxy server's API.
#[derive(Clone)]
pub struct ToxiproxyClient {
    base: url::Url,
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ToxiproxyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToxiproxyClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ToxiproxyClient {
    /// A client for `url` (checked when the config loaded: http(s), no path).
    pub fn new(url: &str) -> Result<ToxiproxyClient, ToxiproxyError> {
        let bad = |why: String| ToxiproxyError::BadAnswer {
            url: url.to_string(),
            why,
        };
        let base = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
        let tls = crate::tls::shared_client_config(&crate::tls::TlsOptions::default())
            .map_err(|e| bad(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chaosbot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(ToxiproxyClient {
            base,
            url: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The server's API address, as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn at(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.clear().extend(segments);
        }
        u
    }

    async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<(u16, String), ToxiproxyError> {
        let mut req = self.http.request(method, self.at(segments));
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| ToxiproxyError::Unreachable {
            url: self.url.clone(),
            why: root_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| ToxiproxyError::Unreachable {
            url: self.url.clone(),
            why: root_cause(&e),
        })?;
        Ok((status, text))
    }

    fn status(&self, what: String, status: u16, body: &str) -> ToxiproxyError {
        // Toxiproxy's errors are `{"error": ..., "status": ...}`; quote the message alone.
        let said = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        ToxiproxyError::Status {
            url: self.url.clone(),
            what,
            status,
            body: if said.is_empty() {
                "an empty body".into()
            } else {
                said
            },
        }
    }

    /// `GET /version`: JSON `{"version": ...}` (plain text before Toxiproxy 2.6).
    pub async fn version(&self) -> Result<String, ToxiproxyError> {
        let (status, body) = self.call(reqwest::Method::GET, &["version"], None).await?;
        if status != 200 {
            return Err(self.status("GET /version".into(), status, &body));
        }
        let v = match serde_json::from_str::<Value>(&body) {
            Ok(Value::Object(o)) => o.get("version").and_then(Value::as_str).map(str::to_string),
            Ok(Value::String(s)) => Some(s),
            _ => Some(body.trim().to_string())
                .filter(|s| !s.is_empty() && s.len() < 40 && s.chars().all(|c| !c.is_whitespace())),
        };
        v.ok_or_else(|| ToxiproxyError::BadAnswer {
            url: self.url.clone(),
            why: format!(
                "GET /version answered `{}`",
                body.chars().take(80).collect::<String>()
            ),
        })
    }

    /// `GET /proxies/{name}`.
    pub async fn proxy(&self, name: &str) -> Result<ProxyInfo, ToxiproxyError> {
        let (status, body) = self
            .call(reqwest::Method::GET, &["proxies", name], None)
            .await?;
        match status {
            200 => serde_json::from_str(&body).map_err(|e| ToxiproxyError::BadAnswer {
                url: self.url.clone(),
                why: format!("GET /proxies/{name}: {e}"),
            }),
            404 => Err(self.no_proxy(name)),
            s => Err(self.status(format!("GET /proxies/{name}"), s, &body)),
        }
    }

    fn no_proxy(&self, proxy: &str) -> ToxiproxyError {
        ToxiproxyError::NoProxy {
            url: self.url.clone(),
            proxy: proxy.to_string(),
        }
    }

    /// `POST /proxies/{proxy}/toxics`.
    pub async fn add_toxic(&self, proxy: &str, toxic: &Value) -> Result<(), ToxiproxyError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &["proxies", proxy, "toxics"],
                Some(toxic),
            )
            .await?;
        let name = toxic["name"].as_str().unwrap_or_default().to_string();
        match status {
            200 | 201 => Ok(()),
            404 => Err(self.no_proxy(proxy)),
            409 => Err(ToxiproxyError::Conflict {
                url: self.url.clone(),
                proxy: proxy.to_string(),
                toxic: name,
            }),
            s => Err(self.status(format!("adding toxic `{name}` to `{proxy}`"), s, &body)),
        }
    }

    /// `DELETE /proxies/{proxy}/toxics/{name}`. `Ok(false)`: it was not there (already
    /// removed, or the proxy is gone and its toxics with it).
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<bool, ToxiproxyError> {
        let (status, body) = self
            .call(
                reqwest::Method::DELETE,
                &["proxies", proxy, "toxics", name],
                None,
            )
            .await?;
        match status {
            200 | 204 => Ok(true),
            404 => Ok(false),
            s => Err(self.status(format!("removing toxic `{name}` from `{proxy}`"), s, &body)),
        }
    }

    /// `POST /proxies/{proxy}` with `{"enabled": ...}` (a partial update).
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) -> Result<(), ToxiproxyError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &["proxies", proxy],
                Some(&json!({ "enabled": enabled })),
            )
            .await?;
        match status {
            200 | 201 => Ok(()),
            404 => Err(self.no_proxy(proxy)),
            s => Err(self.status(
                format!(
                    "{} proxy `{proxy}`",
                    if enabled { "enabling" } else { "disabling" }
                ),
                s,
                &body,
            )),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A kind's Toxiproxy attributes (every attribute, in Toxiproxy's names and units). `down`
/// has none: Toxiproxy models it as `enabled: false`.
pub fn attributes_of(kind: &ToxicKind) -> Value {
    match kind {
        ToxicKind::Latency { latency, jitter } => {
            json!({ "latency": ms(*latency), "jitter": ms(*jitter) })
        }
        ToxicKind::Bandwidth { rate_kbps } => json!({ "rate": rate_kbps }),
        ToxicKind::Timeout { timeout } => json!({ "timeout": ms(*timeout) }),
        ToxicKind::ResetPeer { timeout } => json!({ "timeout": ms(*timeout) }),
        ToxicKind::SlowClose { delay } => json!({ "delay": ms(*delay) }),
        ToxicKind::Slicer {
            average_size,
            size_variation,
            delay,
        } => json!({
            "average_size": average_size,
            "size_variation": size_variation,
            "delay": us(*delay),
        }),
        ToxicKind::LimitData { bytes } => json!({ "bytes": bytes }),
        ToxicKind::Down => json!({}),
    }
}

/// The body of `POST /proxies/{p}/toxics` for one of chaosbot's toxics.
pub fn toxic_body(name: &str, kind: &ToxicKind, direction: Direction, toxicity: f64) -> Value {
    json!({
        "name": name,
        "type": kind.name(),
        "stream": direction.to_string(),
        "toxicity": toxicity,
        "attributes": attributes_of(kind),
    })
}

/// The name of a run's toxic for a step: `chaosbot-<run>-<step>`.
pub fn toxic_name(run_id: &str, step: &str) -> String {
    format!("{NAME_PREFIX}{run_id}-{step}")
}

/// What a Toxiproxy fault changed on the server, as persisted before it is applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    /// The server's API.
    pub toxiproxy: String,
    pub proxy: String,
    /// The toxic added (absent for `down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toxic: Option<String>,
    /// `down`: the proxy was disabled and is enabled again on revert.
    #[serde(default)]
    pub disabled: bool,
}

impl Placed {
    pub fn new(target: &ToxiproxyTarget, run_id: &str, step: &str, kind: &ToxicKind) -> Placed {
        let down = matches!(kind, ToxicKind::Down);
        Placed {
            toxiproxy: target.url.clone(),
            proxy: target.proxy.clone(),
            toxic: (!down).then(|| toxic_name(run_id, step)),
            disabled: down,
        }
    }

    /// Takes back exactly what this fault changed: its own toxic, or the enabled flag it
    /// cleared. Returns what was done, for people.
    pub async fn undo(&self, client: &ToxiproxyClient) -> Result<String, ToxiproxyError> {
        let at = client.url();
        match &self.toxic {
            Some(name) => Ok(match client.remove_toxic(&self.proxy, name).await? {
                true => format!(
                    "removed toxic `{name}` from proxy `{}` on Toxiproxy at {at}",
                    self.proxy
                ),
                false => format!(
                    "toxic `{name}` was already gone from proxy `{}` on Toxiproxy at {at}",
                    self.proxy
                ),
            }),
            None if self.disabled => {
                client.set_enabled(&self.proxy, true).await?;
                Ok(format!(
                    "enabled proxy `{}` again on Toxiproxy at {at}",
                    self.proxy
                ))
            }
            None => Ok("nothing was changed on the Toxiproxy server".into()),
        }
    }
}

/// Checks, before a run injects anything, that the server answers and has the proxy (and
/// that a `down` step would not take over a disable someone else made). Returns a line for
/// the journal.
pub async fn check(target: &ToxiproxyTarget) -> Result<String, ToxiproxyError> {
    let client = ToxiproxyClient::new(&target.url)?;
    let version = client.version().await?;
    let proxy = client.proxy(&target.proxy).await?;
    Ok(format!(
        "Toxiproxy {version} at {} holds the toxics of target `{}` (proxy `{}`: listen {}, upstream {}). It has no dead-man's switch: chaosbot removes its toxics at their deadline while this process lives, and crash recovery removes what a dead one left; until then they stay",
        client.url(),
        target.name,
        proxy.name,
        proxy.listen,
        proxy.upstream
    ))
}

/// A toxic (or a disable) on a Toxiproxy server, with the timer that removes it at its
/// deadline if nobody reverts it first.
pub struct ToxiproxyFault {
    client: ToxiproxyClient,
    placed: Placed,
    timer: CancellationToken,
    summary: String,
}

#[async_trait::async_trait]
impl super::ActiveFault for ToxiproxyFault {
    async fn revert(&self) -> Result<(), super::FaultError> {
        let done = self.placed.undo(&self.client).await?;
        // Only once it is off: a revert that failed leaves the deadline timer to try again,
        // and one that succeeded must not let the timer act on the proxy later (a person may
        // have disabled it by hand meanwhile).
        self.timer.cancel();
        info!(%done, "Toxiproxy fault reverted");
        Ok(())
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

/// Applies a network step's toxic through the server, and arms the deadline timer.
pub async fn inject(
    target: &ToxiproxyTarget,
    placed: Placed,
    kind: &ToxicKind,
    direction: Direction,
    toxicity: f64,
    deadline: Instant,
) -> Result<ToxiproxyFault, ToxiproxyError> {
    let client = ToxiproxyClient::new(&target.url)?;
    let what = match &placed.toxic {
        Some(name) => {
            client
                .add_toxic(&placed.proxy, &toxic_body(name, kind, direction, toxicity))
                .await?;
            format!("toxic `{name}`")
        }
        None => {
            let proxy = client.proxy(&placed.proxy).await?;
            if !proxy.enabled {
                return Err(ToxiproxyError::AlreadyDisabled {
                    url: client.url().to_string(),
                    proxy: placed.proxy.clone(),
                });
            }
            client.set_enabled(&placed.proxy, false).await?;
            "enabled: false".to_string()
        }
    };
    let how = match kind {
        ToxicKind::Down => String::new(),
        _ if toxicity < 1.0 => format!(" ({direction}, {:.0}% of connections)", toxicity * 100.0),
        _ => format!(" ({direction})"),
    };
    let summary = format!(
        "{} on {}{how} through Toxiproxy at {} (proxy `{}`, {what})",
        kind.summary(),
        target.name,
        client.url(),
        placed.proxy
    );
    let timer = CancellationToken::new();
    tokio::spawn(remove_at_deadline(
        client.clone(),
        placed.clone(),
        deadline,
        timer.clone(),
    ));
    Ok(ToxiproxyFault {
        client,
        placed,
        timer,
        summary,
    })
}

/// The deadline this process enforces for the server (which has none): at `deadline`, the
/// fault comes off unless a revert cancelled the timer first. Retried for a while, since
/// this is the last chance short of crash recovery.
async fn remove_at_deadline(
    client: ToxiproxyClient,
    placed: Placed,
    deadline: Instant,
    cancelled: CancellationToken,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = cancelled.cancelled() => return,
    }
    for attempt in 0..10u32 {
        if cancelled.is_cancelled() {
            return;
        }
        match placed.undo(&client).await {
            Ok(done) => {
                info!(%done, "Toxiproxy fault removed at its deadline");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, "cannot remove a Toxiproxy fault at its deadline; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Crash recovery: undoes what a dead process's fault record says it placed.
pub async fn recover(detail: &Value) -> Result<String, super::FaultError> {
    let placed: Placed = serde_json::from_value(detail.clone()).map_err(|e| {
        super::FaultError::Other(format!(
            "the fault record does not say what was placed on the Toxiproxy server ({e})"
        ))
    })?;
    let client = ToxiproxyClient::new(&placed.toxiproxy)?;
    Ok(placed.undo(&client).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxic_bodies_are_toxiproxy_shapes_and_units() {
        let body = toxic_body(
            "chaosbot-r-1-slow",
            &ToxicKind::Slicer {
                average_size: 64,
                size_variation: 8,
                delay: Duration::from_micros(150),
            },
            Direction::Upstream,
            0.5,
        );
        assert_eq!(
            body,
            json!({"name": "chaosbot-r-1-slow", "type": "slicer", "stream": "upstream",
                   "toxicity": 0.5,
                   "attributes": {"average_size": 64, "size_variation": 8, "delay": 150}})
        );
        assert_eq!(
            attributes_of(&ToxicKind::Latency {
                latency: Duration::from_millis(250),
                jitter: Duration::from_millis(20)
            }),
            json!({"latency": 250, "jitter": 20})
        );
    }

    #[test]
    fn a_down_step_disables_and_others_add_a_named_toxic() {
        let t = ToxiproxyTarget {
            name: "api".into(),
            url: "http://127.0.0.1:8474".into(),
            proxy: "shop".into(),
            description: String::new(),
        };
        let down = Placed::new(&t, "r-1", "cut", &ToxicKind::Down);
        assert_eq!((down.toxic.as_deref(), down.disabled), (None, true));
        let lat = Placed::new(
            &t,
            "r-1",
            "slow",
            &ToxicKind::Latency {
                latency: Duration::from_millis(1),
                jitter: Duration::ZERO,
            },
        );
        assert_eq!(lat.toxic.as_deref(), Some("chaosbot-r-1-slow"));
        let round: Placed = serde_json::from_value(serde_json::to_value(&lat).unwrap()).unwrap();
        assert_eq!(round, lat);
    }
}
