//! [`AgentClient`]: the controller's side of the agent API over HTTP (a Unix socket, loopback
//! or TLS), mapping every outcome to an [`AgentError`] that names the agent.

use std::error::Error as StdError;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{
    self, Applied, ErrorBody, FaultList, Hello, PROTOCOL_HEADER, PROTOCOL_VERSION, ProxiesAnswer,
    ProxiesUp, Renewed, Reverted,
};
use super::{AgentError, AgentLink};
use crate::config::{AgentAddress, AgentEntry, ConfigError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Applying may take a while (a memory fault allocates, a process lookup runs a command).
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an unexpected body is quoted in an error.
const QUOTE: usize = 120;

/// One agent reached over HTTP.
pub struct AgentClient {
    name: String,
    /// For people: the socket path or the URL.
    address: String,
    base: url::Url,
    client: reqwest::Client,
    secret: Option<String>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Why a client cannot be built from its config entry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("agent `{agent}`: {why}")]
    Build { agent: String, why: String },
}

impl AgentClient {
    /// A client for a configured `[[agents]]` entry.
    pub fn from_entry(entry: &AgentEntry) -> Result<AgentClient, ClientError> {
        let secret = entry.read_secret()?;
        let build = |why: String| ClientError::Build {
            agent: entry.name.clone(),
            why,
        };
        match entry.address()? {
            AgentAddress::Unix(path) => AgentClient::unix(&entry.name, path, secret),
            AgentAddress::Http { mut base, tls } => {
                let opts = if tls {
                    entry.tls()
                } else {
                    crate::tls::TlsOptions::default()
                };
                let mut builder = base_builder(&opts).map_err(build)?;
                if tls {
                    // The certificate names `server_name`; the URL's host is where it lives.
                    if let Some(name) = &entry.server_name {
                        let host = base.host_str().unwrap_or_default().to_string();
                        let port = base.port_or_known_default().unwrap_or(443);
                        let addr = (host.trim_matches(['[', ']']), port)
                            .to_socket_addrs()
                            .map_err(|e| build(format!("cannot resolve {host}: {e}")))?
                            .next()
                            .ok_or_else(|| build(format!("{host} resolves to no address")))?;
                        builder = builder.resolve(name, addr);
                        base.set_host(Some(name))
                            .map_err(|e| build(format!("server_name `{name}`: {e}")))?;
                    }
                }
                let client = builder.build().map_err(|e| build(e.to_string()))?;
                Ok(AgentClient {
                    name: entry.name.clone(),
                    address: entry.url.clone(),
                    base,
                    client,
                    secret,
                })
            }
        }
    }

    /// A client for an agent on a Unix socket (the local agent: no secret needed).
    pub fn unix(
        name: &str,
        path: PathBuf,
        secret: Option<String>,
    ) -> Result<AgentClient, ClientError> {
        let build = |why: String| ClientError::Build {
            agent: name.to_string(),
            why,
        };
        let client = base_builder(&crate::tls::TlsOptions::default())
            .map_err(build)?
            .unix_socket(path.clone())
            .build()
            .map_err(|e| build(e.to_string()))?;
        let base = url::Url::parse("http://agent/").map_err(|e| build(e.to_string()))?;
        Ok(AgentClient {
            name: name.to_string(),
            address: path.display().to_string(),
            base,
            client,
            secret,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
        context: &Context<'_>,
    ) -> Result<T, AgentError> {
        let url = self.base.join(path).map_err(|e| AgentError::Refused {
            agent: self.name.clone(),
            code: "bad_request".into(),
            message: format!("cannot build the request path `{path}`: {e}"),
        })?;
        let mut req = self
            .client
            .request(method, url)
            .timeout(timeout)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string());
        if let Some(secret) = &self.secret {
            req = req.bearer_auth(secret);
        }
        if let Some(b) = body {
            let json = serde_json::to_vec(b).map_err(|e| AgentError::Refused {
                agent: self.name.clone(),
                code: "bad_request".into(),
                message: format!("cannot encode the request: {e}"),
            })?;
            req = req.header("content-type", "application/json").body(json);
        }
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let theirs = resp
            .headers()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| self.transport(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| AgentError::Garbage {
                agent: self.name.clone(),
                why: format!(
                    "status {status} with a body that does not parse ({e}): {}",
                    quote(&bytes)
                ),
            });
        }
        Err(self.refusal(status, &bytes, theirs, context))
    }

    fn transport(&self, e: &reqwest::Error) -> AgentError {
        if e.is_connect() || e.is_timeout() {
            let why = if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                root_cause(e)
            };
            return AgentError::Unreachable {
                agent: self.name.clone(),
                address: self.address.clone(),
                why,
            };
        }
        if let Some(msg) = crate::tls::explain(e, self.base.host_str().unwrap_or_default()) {
            return AgentError::Unreachable {
                agent: self.name.clone(),
                address: self.address.clone(),
                why: msg,
            };
        }
        AgentError::Garbage {
            agent: self.name.clone(),
            why: root_cause(e),
        }
    }

    fn refusal(
        &self,
        status: StatusCode,
        bytes: &[u8],
        theirs: Option<String>,
        context: &Context<'_>,
    ) -> AgentError {
        let agent = self.name.clone();
        let body: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
        if status == StatusCode::UNAUTHORIZED {
            let message = body
                .map(|b| b.message)
                .unwrap_or_else(|| format!("status 401 ({})", quote(bytes)));
            return AgentError::Unauthenticated { agent, message };
        }
        let Some(body) = body else {
            return AgentError::Garbage {
                agent,
                why: format!(
                    "status {status} with a body that is not an agent error: {}",
                    quote(bytes)
                ),
            };
        };
        match body.code.as_str() {
            protocol::CODE_PROTOCOL => AgentError::Protocol {
                agent,
                theirs: theirs.unwrap_or(body.message),
                ours: PROTOCOL_VERSION,
            },
            protocol::CODE_HELD => AgentError::Held {
                agent,
                target: context.target.unwrap_or("?").to_string(),
                holder: body.holder.unwrap_or_else(|| "another run".into()),
            },
            protocol::CODE_STALE_EPOCH => AgentError::StaleEpoch {
                agent,
                run_id: context.run_id.unwrap_or("?").to_string(),
                message: body.message,
            },
            _ => AgentError::Refused {
                agent,
                code: body.code,
                message: body.message,
            },
        }
    }
}

/// What a request is about, for the errors that name it.
#[derive(Default)]
struct Context<'a> {
    target: Option<&'a str>,
    run_id: Option<&'a str>,
}

/// Every client gets a rustls config (reqwest is built without a default crypto provider),
/// even one that only speaks plain HTTP.
fn base_builder(tls: &crate::tls::TlsOptions) -> Result<reqwest::ClientBuilder, String> {
    let config = crate::tls::shared_client_config(tls).map_err(|e| e.to_string())?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured((*config).clone())
        .http1_only()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chaosbot/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT))
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    if t.is_empty() {
        return "an empty body".into();
    }
    let cut: String = t.chars().take(QUOTE).collect();
    if cut.len() < t.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[async_trait::async_trait]
impl AgentLink for AgentClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn hello(&self) -> Result<Hello, AgentError> {
        let hello: Hello = self
            .call::<(), _>(
                Method::GET,
                "v1/hello",
                None,
                REQUEST_TIMEOUT,
                &Context::default(),
            )
            .await?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(AgentError::Protocol {
                agent: self.name.clone(),
                theirs: hello.protocol.to_string(),
                ours: PROTOCOL_VERSION,
            });
        }
        Ok(hello)
    }

    async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, AgentError> {
        let cx = Context {
            target: req.names.first().map(String::as_str),
            run_id: None,
        };
        self.call(Method::POST, "v1/proxies", Some(req), APPLY_TIMEOUT, &cx)
            .await
    }

    async fn apply(&self, req: &protocol::Apply) -> Result<Applied, AgentError> {
        let cx = Context {
            target: Some(&req.step.target),
            run_id: Some(&req.run_id),
        };
        self.call(Method::POST, "v1/faults", Some(req), APPLY_TIMEOUT, &cx)
            .await
    }

    async fn renew(&self, req: &protocol::Renew) -> Result<Renewed, AgentError> {
        let cx = Context {
            target: None,
            run_id: Some(&req.run_id),
        };
        // A renewal stuck for longer than half the lease is as good as lost: say so in time.
        let timeout = REQUEST_TIMEOUT.min(Duration::from_millis((req.lease_ms / 2).max(500)));
        self.call(Method::POST, "v1/leases", Some(req), timeout, &cx)
            .await
    }

    async fn revert(&self, fault_id: &str, req: &protocol::Revert) -> Result<Reverted, AgentError> {
        let cx = Context {
            target: None,
            run_id: Some(&req.run_id),
        };
        // Fault ids hold a `/` (`<run>/<step>`): one path segment, percent-encoded.
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .clear()
                .extend(["v1", "faults", fault_id, "revert"]);
        }
        self.call(
            Method::POST,
            url.path().trim_start_matches('/'),
            Some(req),
            APPLY_TIMEOUT,
            &cx,
        )
        .await
    }

    async fn faults(&self) -> Result<FaultList, AgentError> {
        self.call::<(), _>(
            Method::GET,
            "v1/faults",
            None,
            REQUEST_TIMEOUT,
            &Context::default(),
        )
        .await
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
