//! Benchmark: adding and removing a toxic through the Toxiproxy API while the proxy's link is
//! saturated (prints a table; not a test). Toxiproxy itself can hang for 25 s there (its issues
//! #412 and #558); the target is p99 ≤ 10 ms.
//!
//! `cargo bench --bench toxiproxy_api` — optional env:
//! - `NOXIOUS_BIN=/path/to/noxious-server`: also measure that Toxiproxy-compatible server (a
//!   Rust port, built separately), in the same run, side by side.
//! - `CYCLES` (default 200): add/remove cycles per server.
//!
//! Everything runs on 127.0.0.1. The bulk senders and the sink run on a runtime of their own,
//! apart from the client's, so the numbers are the server's answer time, not the client
//! waiting behind its own load. Each server is its own process: `chaosbot agent` serving its
//! Toxiproxy API, and noxious. Each gets a proxy in front of one sink (reads and discards);
//! two bulk senders keep that proxy's upstream link full while a latency toxic on the same
//! stream is added (timed from the request to its 200) and removed (to its 204), `CYCLES`
//! times, through chaosbot's own Toxiproxy client (keep-alive HTTP/1.1). A server's cycles are
//! cut off after 120 s so a hanging one still finishes the run.

#[path = "../tests/support/ports.rs"]
mod ports;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaosbot::faults::toxiproxy::ToxiproxyClient;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");
const SENDERS: usize = 2;
const CUT_OFF: Duration = Duration::from_secs(120);

/// Reads and discards whatever arrives, on every connection.
async fn sink_server() -> Res<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// One HTTP/1.1 request with `Connection: close` (setup only); returns (status, body).
async fn http(api: SocketAddr, method: &str, path: &str, body: &str) -> Res<(u16, String)> {
    let mut s = TcpStream::connect(api).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad HTTP response")?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// A Toxiproxy-API server process with one proxy `bench` in front of the sink.
struct Server {
    name: &'static str,
    child: Child,
    api: SocketAddr,
    listen: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(
        name: &'static str,
        mut cmd: Command,
        api: SocketAddr,
        sink: SocketAddr,
    ) -> Res<Server> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let listen = ports::free_port();
        let mut server = Server {
            name,
            child,
            api,
            listen,
        };
        let t0 = Instant::now();
        while http(api, "GET", "/version", "").await.is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!("{name}: the API did not come up on {api}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body =
            json!({"name": "bench", "listen": listen.to_string(), "upstream": sink.to_string()});
        let (status, text) = http(api, "POST", "/proxies", &body.to_string()).await?;
        if status != 201 {
            return Err(format!("{name}: POST /proxies answered {status}: {text}").into());
        }
        // The answer says where it listens (a server may pick its own address).
        if let Some(l) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["listen"].as_str().and_then(|l| l.parse().ok()))
        {
            server.listen = l;
        }
        Ok(server)
    }
}

struct Numbers {
    add: Histogram<u64>,
    remove: Histogram<u64>,
    cycles: usize,
    errors: usize,
    gbps: f64,
}

fn hist() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000_000, 3)?)
}

/// Saturates the proxy's upstream link, then runs the add/remove cycles.
async fn measure(
    s: &Server,
    cycles: usize,
    senders: usize,
    load_rt: &tokio::runtime::Handle,
) -> Res<Numbers> {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for _ in 0..senders {
        let listen = s.listen;
        let mut c = load_rt
            .spawn(async move { TcpStream::connect(listen).await })
            .await??;
        let (sent, stop) = (Arc::clone(&sent), stop.clone());
        load.push(load_rt.spawn(async move {
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.is_cancelled() {
                tokio::select! {
                    r = c.write_all(&chunk) => {
                        if r.is_err() { break; }
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    _ = stop.cancelled() => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = ToxiproxyClient::new(&format!("http://{}", s.api))?;
    let mut n = Numbers {
        add: hist()?,
        remove: hist()?,
        cycles: 0,
        errors: 0,
        gbps: 0.0,
    };
    let before = sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for i in 0..cycles {
        if t0.elapsed() > CUT_OFF {
            eprintln!("{}: cut off after {} cycles ({:?})", s.name, i, CUT_OFF);
            break;
        }
        // A fresh name each time, so a removed one still winding down cannot clash.
        let name = format!("bench-{i}");
        let toxic = json!({"name": name, "type": "latency", "stream": "upstream",
                           "toxicity": 1.0, "attributes": {"latency": 5, "jitter": 0}});
        let a = Instant::now();
        let added = client.add_toxic("bench", &toxic).await;
        let add_ns = a.elapsed().as_nanos() as u64;
        if let Err(e) = added {
            n.errors += 1;
            eprintln!("{}: add {name}: {e}", s.name);
            continue;
        }
        n.add.record(add_ns.max(1))?;
        let r = Instant::now();
        let removed = client.remove_toxic("bench", &name).await;
        let remove_ns = r.elapsed().as_nanos() as u64;
        match removed {
            Ok(true) => n.remove.record(remove_ns.max(1))?,
            Ok(false) => {
                n.errors += 1;
                eprintln!("{}: remove {name}: it was not there", s.name);
            }
            Err(e) => {
                n.errors += 1;
                eprintln!("{}: remove {name}: {e}", s.name);
            }
        }
        n.cycles += 1;
    }
    let took = t0.elapsed().as_secs_f64();
    n.gbps = (sent.load(Ordering::Relaxed) - before) as f64 / took / 1e9;
    stop.cancel();
    for l in load {
        let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
    }
    Ok(n)
}

fn ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!("{:.2} ms", h.value_at_quantile(q) as f64 / 1e6)
}

fn row(name: &str, cols: &[String]) {
    print!("{name:<34}");
    for c in cols {
        print!("{c:>16}");
    }
    println!();
}

async fn run(load: tokio::runtime::Handle) -> Res<()> {
    let cycles: usize = std::env::var("CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let sink = load.spawn(sink_server()).await??;
    let dir = tempfile::tempdir()?;
    let api = ports::free_port();
    let d = dir.path().display();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"bench\"\nsocket = \"{d}/agent.sock\"\nsecret = \"bench-secret\"\nstate_dir = \"{d}/state\"\n[toxiproxy]\nlisten = \"{api}\"\n"
        ),
    )?;
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--config"])
        .arg(&cfg)
        .env_remove("CHAOSBOT_CONFIG")
        .env("RUST_LOG", "warn");
    let mut servers = vec![Server::start("chaosbot agent", cmd, api, sink).await?];
    match std::env::var("NOXIOUS_BIN") {
        Ok(bin) => {
            let api = ports::free_port();
            let mut cmd = Command::new(bin);
            cmd.args(["--host", "127.0.0.1", "--port", &api.port().to_string()]);
            servers.push(Server::start("noxious", cmd, api, sink).await?);
        }
        Err(_) => eprintln!("NOXIOUS_BIN is not set: measuring chaosbot's Toxiproxy API alone"),
    }
    // The same cycles on an idle link first: the floor this machine gives (on a busy shared
    // machine, scheduling delay alone shows here), against which the saturated link compares.
    let idle_cycles = (cycles / 4).max(1);
    let mut idle = Vec::new();
    let mut results = Vec::new();
    for s in &servers {
        idle.push(measure(s, idle_cycles, 0, &load).await?);
        results.push(measure(s, cycles, SENDERS, &load).await?);
    }
    println!();
    let names: Vec<String> = servers.iter().map(|s| s.name.to_string()).collect();
    row(&format!("{idle_cycles} cycles, idle link"), &names);
    println!("{}", "-".repeat(34 + 16 * names.len()));
    let col = |f: &dyn Fn(&Numbers) -> String| idle.iter().map(f).collect::<Vec<_>>();
    row("add latency toxic p50", &col(&|n| ms(&n.add, 0.5)));
    row("add latency toxic p99", &col(&|n| ms(&n.add, 0.99)));
    row("remove it p50", &col(&|n| ms(&n.remove, 0.5)));
    row("remove it p99", &col(&|n| ms(&n.remove, 0.99)));
    println!();
    row(&format!("{cycles} cycles, link saturated"), &names);
    println!("{}", "-".repeat(34 + 16 * names.len()));
    let col = |f: &dyn Fn(&Numbers) -> String| results.iter().map(f).collect::<Vec<_>>();
    row("add latency toxic p50", &col(&|n| ms(&n.add, 0.5)));
    row("add latency toxic p99", &col(&|n| ms(&n.add, 0.99)));
    row("add latency toxic max", &col(&|n| ms(&n.add, 1.0)));
    row("remove it p50", &col(&|n| ms(&n.remove, 0.5)));
    row("remove it p99", &col(&|n| ms(&n.remove, 0.99)));
    row("remove it max", &col(&|n| ms(&n.remove, 1.0)));
    row(
        "cycles done / errors",
        &col(&|n| format!("{} / {}", n.cycles, n.errors)),
    );
    row(
        "link throughput meanwhile",
        &col(&|n| format!("{:.2} GB/s", n.gbps)),
    );
    println!(
        "\n(target: p99 ≤ 10 ms for add and for remove; {SENDERS} bulk senders through the proxy upstream)"
    );
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let load = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the load's runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(load.handle().clone())) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
