//! A minimal HTTP/1.1 client for probes and rollback calls: one fresh connection per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Probes read at most this much of a body (enough for a health page; protects the bot).
const MAX_BODY: usize = 256 * 1024;

/// Sends one request and returns the status and body text, or why it failed.
pub async fn request(url: &str, method: &str) -> Result<(u16, String), String> {
    send(url, method, None).await
}

/// Like [`request`], with an optional body.
pub async fn send(url: &str, method: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{url}`: only http:// endpoints can be probed (TLS probes are not built yet)"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    let conn_task = tokio::spawn(async move {
        // The connection ends with the request; its error, if any, shows up in send_request.
        let _ = conn.await;
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method: hyper::Method = method
        .parse()
        .map_err(|_| format!("`{method}` is not an HTTP method"))?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::USER_AGENT, "chaosbot-probe")
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
        .map_err(|e| format!("cannot build request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request to {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body from {url}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    conn_task.abort();
    result
}
