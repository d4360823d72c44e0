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

/// chromedriver and a headless Chromium session. [`Browser::quit`] ends both and checks that
/// no process of theirs is left; dropping it (a failed test) ends them too.
///
/// chromedriver starts in a process group of its own, which Chromium's processes inherit;
/// Chromium's crash handlers leave it (they start their own sessions), so every process also
/// carries a mark in its environment. The test process is made a child subreaper, so the
/// browser's processes that lose their parent become its children and are waited for here
/// instead of lingering as zombies.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// `CHAOSBOT_TEST_BROWSER=<mark>` in the environment of every process of this browser.
    mark: String,
    /// Chromium's profile and crash database (HOME), removed after the processes.
    home: Option<tempfile::TempDir>,
}

const MARK_VAR: &str = "CHAOSBOT_TEST_BROWSER";

/// A process of a browser, as `/proc` shows it.
#[derive(Debug)]
pub struct BrowserProcess {
    pub pid: i32,
    pub ppid: i32,
    /// `Z` for a zombie.
    pub state: char,
    pub name: String,
}

/// The processes in process group `pgid` or carrying `mark` (zombies included).
fn browser_processes(pgid: i32, mark: &str) -> Vec<BrowserProcess> {
    let needle = format!("{MARK_VAR}={mark}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for d in dir.flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (name) state ppid pgrp ...`; the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(state), Some(ppid), Some(pgrp)) = (
            rest.first().and_then(|s| s.chars().next()),
            rest.get(1).and_then(|s| s.parse::<i32>().ok()),
            rest.get(2).and_then(|s| s.parse::<i32>().ok()),
        ) else {
            continue;
        };
        let marked = std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()));
        if pgrp == pgid || marked {
            out.push(BrowserProcess {
                pid,
                ppid,
                state,
                name,
            });
        }
    }
    out
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
        use std::os::unix::process::CommandExt as _;
        // Orphaned browser processes become this process's children, to be waited for.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let port = super::free_port().port();
        let home = tempfile::tempdir().unwrap();
        let mark = format!("{}-{port}", std::process::id());
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .env("HOME", home.path())
            .env(MARK_VAR, &mark)
            .process_group(0)
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
            mark,
            home: Some(home),
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
    /// Ends the session (chromedriver closes its Chromium), then the driver and whatever is
    /// left of the browser; fails the test if a process of it (a zombie too) remains.
    pub async fn quit(mut self) {
        let _ = webdriver(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        )
        .await;
        let left = tokio::task::spawn_blocking(move || self.reap())
            .await
            .unwrap();
        assert!(left.is_empty(), "browser processes left behind: {left:?}");
    }

    /// SIGTERM to the driver's process group, then SIGKILL to anything of the browser still
    /// running, waiting for each process that is ours to wait for; at most about 5 s. What is
    /// still there after that.
    fn reap(&mut self) -> Vec<BrowserProcess> {
        let Ok(pgid) = i32::try_from(self.driver.id()) else {
            return Vec::new();
        };
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let start = std::time::Instant::now();
        let mut driver_done = false;
        loop {
            if !driver_done {
                driver_done = matches!(self.driver.try_wait(), Ok(Some(_)));
            }
            let procs = browser_processes(pgid, &self.mark);
            // Ours to wait for: the children of this process (orphans, by the subreaper).
            for p in procs.iter().filter(|p| p.ppid == me && p.pid != pgid) {
                unsafe {
                    libc::waitpid(p.pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            }
            let waited = start.elapsed();
            if driver_done && procs.iter().all(|p| p.pid == pgid) {
                break;
            }
            if waited > Duration::from_secs(5) {
                return procs;
            }
            // Give them a second to end on their own, then make sure.
            if waited > Duration::from_secs(1) {
                if !driver_done {
                    let _ = self.driver.kill();
                }
                for p in procs.iter().filter(|p| p.state != 'Z') {
                    unsafe {
                        libc::kill(p.pid, libc::SIGKILL);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.home.take());
        browser_processes(pgid, &self.mark)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.home.is_some() {
            let _ = self.reap();
        }
    }
}
