//! Clients for the run pages: plain GETs, a server-sent events reader, and a headless
//! Chromium driven through chromedriver's WebDriver HTTP API.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>()
}

/// A GET response: status, content type, body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// GETs `path_and_query` from `addr` (at most 10 s).
pub async fn get(addr: SocketAddr, path_and_query: &str) -> Page {
    let uri: hyper::Uri = format!("http://{addr}{path_and_query}").parse().unwrap();
    let fut = async {
        let resp = client().get(uri).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("the page answers within 10 s")
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// A server-sent events stream, read event by event.
pub struct Sse {
    pub status: u16,
    body: Incoming,
    buf: String,
}

impl Sse {
    /// Opens `path_and_query` with `Last-Event-ID` when given.
    pub async fn open(addr: SocketAddr, path_and_query: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = hyper::Request::get(format!("http://{addr}{path_and_query}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
            .await
            .expect("the stream opens within 10 s")
            .unwrap();
        Sse {
            status: resp.status().as_u16(),
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` when the stream ended or
    /// nothing came before `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    ..SseEvent::default()
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return None,
            }
        }
    }
}

/// chromedriver and a headless Chromium session, ended (and the driver killed) on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

/// chromedriver and chromium, when both are installed.
pub fn browser_available() -> bool {
    let found = |name: &str| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    found("chromedriver") && found("chromium")
}

async fn webdriver(method: &str, url: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let c = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let fut = async {
        let resp = c.request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("chromedriver answers within 30 s")
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        let port = super::free_port().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        super::wait_listening(addr).await;
        let base = format!("http://{addr}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run", "--window-size=1300,1000"]
            }
        }}});
        let answer = webdriver("POST", &format!("{base}/session"), Some(caps)).await;
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opened no session: {answer}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/session/{}/{rest}", self.base, self.session)
    }

    pub async fn goto(&self, url: &str) {
        let v = webdriver("POST", &self.url("url"), Some(json!({"url": url}))).await;
        assert!(v["value"].is_null(), "navigation failed: {v}");
    }

    pub async fn title(&self) -> String {
        let v = webdriver("GET", &self.url("title"), None).await;
        v["value"].as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn eval(&self, script: &str) -> Value {
        let v = webdriver(
            "POST",
            &self.url("execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await;
        v["value"].clone()
    }
}

impl Browser {
    /// Ends the session (chromedriver closes its Chromium), then the driver.
    pub async fn quit(self) {
        let _ = webdriver(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM first: chromedriver closes the browsers it started; then make sure.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        for _ in 0..40 {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
