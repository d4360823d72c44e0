//! The HTTP(S) client of probes and rollback calls.
//!
//! An [`HttpClient`] belongs to one endpoint: it carries that endpoint's [`TlsOptions`] and
//! keeps its connections alive between requests. The free functions [`request`] and [`send`]
//! open a fresh connection for every request (what a new client of the service sees), with
//! default TLS options.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::tls::{self, TlsError, TlsOptions};

/// Probes read at most this much of a body (enough for a health page; protects the bot).
const MAX_BODY: usize = 256 * 1024;

/// An HTTP/1.1 client for one endpoint, over TLS for https:// URLs.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    server_name: Option<String>,
    resolver: Arc<Resolver>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client whose connections are kept alive between requests (one per endpoint).
    pub fn new(tls: &TlsOptions) -> Result<HttpClient, TlsError> {
        HttpClient::build(tls, true)
    }

    /// A client that opens a fresh connection for every request.
    pub fn fresh_connections(tls: &TlsOptions) -> Result<HttpClient, TlsError> {
        HttpClient::build(tls, false)
    }

    fn build(tls: &TlsOptions, keep_alive: bool) -> Result<HttpClient, TlsError> {
        let config = tls::shared_client_config(tls)?;
        let resolver = Arc::new(Resolver::default());
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured((*config).clone())
            .http1_only()
            .no_proxy()
            // A probe judges the answer it gets, redirects included.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("chaosbot-probe")
            .dns_resolver(Arc::clone(&resolver));
        if !keep_alive {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder
            .build()
            .map_err(|e| TlsError::Client(e.to_string()))?;
        Ok(HttpClient {
            client,
            server_name: tls.server_name.clone(),
            resolver,
        })
    }

    /// Sends one request and returns the status and body text, or why it failed.
    pub async fn request(&self, url: &str, method: &str) -> Result<(u16, String), String> {
        self.send(url, method, None).await
    }

    /// Like [`HttpClient::request`], with an optional body.
    pub async fn send(
        &self,
        url: &str,
        method: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let none = std::collections::BTreeMap::new();
        self.exchange(url, method, &none, body)
            .await
            .map(|a| (a.status, a.body))
    }

    /// One request with headers and an optional body; the whole answer, or why it failed.
    pub async fn exchange(
        &self,
        url: &str,
        method: &str,
        headers: &std::collections::BTreeMap<String, String>,
        body: Option<&str>,
    ) -> Result<Answer, String> {
        let mut target = check_url(url)?;
        let host = target.host_str().unwrap_or_default().to_string();
        let port = target.port_or_known_default().unwrap_or(80);
        let https = target.scheme() == "https";
        // The name verified in the certificate (and sent as SNI): `server_name` replaces the
        // URL's host, which is then reached through the resolver's pin.
        let name = match (&self.server_name, https) {
            (Some(name), true) if !name.eq_ignore_ascii_case(&host) => {
                self.resolver.pin(name, &host);
                target
                    .set_host(Some(name))
                    .map_err(|e| format!("`server_name` `{name}` cannot stand for {host}: {e}"))?;
                name.clone()
            }
            _ => host.clone(),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("`{method}` is not an HTTP method"))?;
        let mut req = self.client.request(method, target);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let fail = |e: &reqwest::Error| -> String {
            if let Some(msg) = https.then(|| tls::explain(e, &name)).flatten() {
                return msg;
            }
            if let Some(d) = find::<DnsError>(e) {
                return format!("{d}; check the host in `{url}`");
            }
            if e.is_connect() {
                return format!("connect to {host}:{port}: {}", root_cause(e));
            }
            format!("request to {url}: {}", causes(e))
        };
        let mut resp = req.send().await.map_err(|e| fail(&e))?;
        let status = resp.status().as_u16();
        let answer_headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if https && let Some(msg) = tls::explain(&e, &name) {
                return msg;
            }
            format!("reading the body from {url}: {}", causes(&e))
        })? {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "reading the body from {url}: length limit exceeded ({} KiB)",
                    MAX_BODY / 1024
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers: answer_headers,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// An HTTP answer: status, headers (names lowercase, in order) and body text.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of a header (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that `url` can be requested at all: it parses, is http:// or https://, has a host.
pub fn check_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "`{url}`: scheme `{other}` is not supported; use an http:// or https:// URL"
            ));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(parsed)
}

/// Checks that `url`'s host resolves (for validation; requests report it too). With
/// `server_name` the URL's host is still the one looked up.
pub async fn check_resolves(url: &str) -> Result<(), String> {
    let parsed = check_url(url)?;
    let host = parsed.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    match tokio::net::lookup_host((bare, 0))
        .await
        .map(|mut f| f.next())
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "`{host}` does not resolve: no address; check the host in `{url}`"
        )),
        Err(e) => Err(format!(
            "`{host}` does not resolve: {e}; check the host in `{url}`"
        )),
    }
}

/// Sends one request on a fresh connection with default TLS options.
pub async fn request(url: &str, method: &str) -> Result<(u16, String), String> {
    send(url, method, None).await
}

/// Like [`request`], with an optional body.
pub async fn send(url: &str, method: &str, body: Option<&str>) -> Result<(u16, String), String> {
    // Built per call: the default TLS configuration is cached, and a client made here has no
    // pooled connection tied to another runtime.
    let client = HttpClient::fresh_connections(&TlsOptions::default())
        .map_err(|e| format!("`{url}`: {e}"))?;
    client.send(url, method, body).await
}

/// A host name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` does not resolve: {source}")]
struct DnsError {
    host: String,
    source: std::io::Error,
}

/// Resolves through the system (tokio's `lookup_host`), with a pin from `server_name` to the
/// host the URL named, so the certificate is verified under the one and the connection goes
/// to the other.
#[derive(Default)]
struct Resolver {
    pins: RwLock<Vec<(String, String)>>,
}

impl Resolver {
    fn pin(&self, name: &str, host: &str) {
        let mut pins = self.pins.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pins.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if p.1 != host {
                p.1 = host.to_string();
            }
        } else {
            pins.push((name.to_ascii_lowercase(), host.to_string()));
        }
    }
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let asked = name.as_str().to_string();
        let target = {
            let pins = self.pins.read().unwrap_or_else(|p| p.into_inner());
            pins.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&asked))
                .map_or_else(|| asked.clone(), |(_, h)| h.clone())
        };
        Box::pin(async move {
            // The connector puts the URL's port in; 0 stands for it here.
            let bare = target.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                let addrs: Addrs = Box::new(std::iter::once(SocketAddr::new(ip, 0)));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((target.as_str(), 0))
                .await
                .map_err(|source| DnsError {
                    host: target.clone(),
                    source,
                })?
                .collect();
            if found.is_empty() {
                return Err(DnsError {
                    host: target,
                    source: std::io::Error::other("no address"),
                }
                .into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// The innermost cause's message ("Connection refused (os error 111)").
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The causes under reqwest's own "error sending request" line, outermost first.
fn causes(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        assert!(check_url("http://127.0.0.1:8080/health").is_ok());
        assert!(check_url("https://svc.test/").is_ok());
        let e = check_url("ftp://svc.test/").unwrap_err();
        assert!(e.contains("scheme `ftp` is not supported"), "{e}");
        assert!(
            check_url("not a url")
                .unwrap_err()
                .contains("is not a valid URL")
        );
    }

    #[tokio::test]
    async fn hosts_are_checked_for_resolving() {
        assert!(check_resolves("http://127.0.0.1:1/").await.is_ok());
        assert!(check_resolves("https://[::1]:1/").await.is_ok());
        let e = check_resolves("https://no-such-host.invalid/")
            .await
            .unwrap_err();
        assert!(e.contains("`no-such-host.invalid` does not resolve"), "{e}");
    }
}
