//! Benchmark of the fault-injecting proxy (prints a table; not a test).
//!
//! `cargo bench --bench proxy` — optional env:
//! - `NOXIOUS_BIN=/path/to/noxious-server`: also measure that Toxiproxy-compatible server, driven
//!   through its HTTP API, side by side.
//! - `BULK_GIB` (default 2): size of each bulk transfer.
//! - `BULK_ROUNDS` (default 3): rounds in which the paths take turns (best and median shown).
//!
//! Everything runs on 127.0.0.1. The upstream server speaks two modes, chosen by the first byte
//! of a connection: `E` echo, `S` sink (read and discard; answer one byte at EOF).

#[path = "../tests/support/ports.rs"]
mod ports;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::faults::proxy::{Proxy, ProxyHandle, ProxySettings, ToxicRequest};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
/// |error| histogram, signed min and max (µs) of the added delay.
type Accuracy = (Histogram<u64>, f64, f64);

const RTT_ITERS: usize = 20_000;
const LAT_SAMPLES: usize = 500;
const REMOVAL_ITERS: usize = 200;
/// Fewer for noxious: each of its iterations costs an HTTP round trip, and a held request may
/// wait out the whole 5 s toxic (observed: removal does not cut an ongoing hold short).
const NOXIOUS_REMOVAL_ITERS: usize = 3;

async fn upstream_server() -> Res<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut mode = [0u8; 1];
                if s.read_exact(&mut mode).await.is_err() {
                    return;
                }
                // Sink: an 8-byte length, then that many bytes, then a one-byte ack (no
                // half-close needed: not every proxy propagates it).
                let mut left = u64::MAX;
                if mode[0] == b'S' {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    left = u64::from_le_bytes(len);
                }
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if mode[0] == b'E' && s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    if mode[0] == b'S' {
                        left = left.saturating_sub(n as u64);
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    Ok(addr)
}

async fn conn(addr: SocketAddr, mode: u8) -> Res<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&[mode]).await?;
    Ok(s)
}

async fn sink(addr: SocketAddr, bytes: u64) -> Res<TcpStream> {
    let mut s = conn(addr, b'S').await?;
    s.write_all(&bytes.to_le_bytes()).await?;
    Ok(s)
}

/// Sends `bytes` one way and waits for the sink's acknowledgement; returns GB/s.
async fn bulk(addr: SocketAddr, bytes: u64) -> Res<f64> {
    let mut s = sink(addr, bytes).await?;
    let chunk = vec![0x5au8; 64 * 1024];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Sequential 64-byte round trips.
async fn rtts(addr: SocketAddr, iters: usize) -> Res<Histogram<u64>> {
    let mut s = conn(addr, b'E').await?;
    let mut h = hist();
    let msg = [1u8; 64];
    let mut back = [0u8; 64];
    for i in 0..iters + 500 {
        let t0 = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        if i >= 500 {
            // The first 500 warm up.
            h.record(t0.elapsed().as_nanos() as u64)?;
        }
    }
    Ok(h)
}

/// Round trips of timestamped messages sent every 2 ms on one connection (pipelined); returns
/// the histogram of |rtt - base - expected| and the signed min/max in µs.
async fn latency_accuracy(addr: SocketAddr, expected: Duration, base: Duration) -> Res<Accuracy> {
    let s = conn(addr, b'E').await?;
    let (mut r, mut w) = s.into_split();
    let epoch = Instant::now();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for _ in 0..LAT_SAMPLES {
            tick.tick().await;
            let at = epoch.elapsed().as_nanos() as u64;
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&at.to_le_bytes());
            if w.write_all(&msg).await.is_err() {
                return None;
            }
        }
        // Handed back so it is not dropped (shutdown(Write)) before the replies are in:
        // not every proxy supports half-close.
        Some(w)
    });
    let mut h = hist();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    let target = expected + base;
    for _ in 0..LAT_SAMPLES {
        let mut msg = [0u8; 16];
        r.read_exact(&mut msg).await?;
        let now = epoch.elapsed().as_nanos() as i128;
        let mut at = [0u8; 8];
        at.copy_from_slice(&msg[..8]);
        let rtt = now - u64::from_le_bytes(at) as i128;
        let err = rtt - target.as_nanos() as i128;
        h.record(err.unsigned_abs() as u64)?;
        lo = lo.min(err as f64 / 1e3);
        hi = hi.max(err as f64 / 1e3);
    }
    drop(sender.await?);
    Ok((h, lo, hi))
}

/// A way to add and remove a latency toxic on some proxy.
trait Toxics {
    async fn add_latency(&self, ms: u64) -> Res<u64>;
    async fn remove(&self, id: u64) -> Res<()>;
}

impl Toxics for ProxyHandle {
    async fn add_latency(&self, ms: u64) -> Res<u64> {
        Ok(self.add_toxic(ToxicRequest {
            label: "bench".into(),
            kind: ToxicKind::Latency {
                latency: Duration::from_millis(ms),
                jitter: Duration::ZERO,
            },
            direction: Direction::Downstream,
            toxicity: 1.0,
            seed: 1,
            deadline: Instant::now() + Duration::from_secs(120),
        })?)
    }
    async fn remove(&self, id: u64) -> Res<()> {
        Ok(self.remove_toxic(id)?)
    }
}

/// `noxious-server` driven over its Toxiproxy-compatible HTTP API.
struct Noxious {
    child: Child,
    /// Each toxic gets a fresh name, so a removed one still winding down cannot clash.
    next: std::cell::Cell<u64>,
    api: SocketAddr,
    listen: SocketAddr,
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
async fn http(api: SocketAddr, method: &str, path: &str, body: &str) -> Res<(u16, String)> {
    let mut s = TcpStream::connect(api).await?;
    s.set_nodelay(true)?;
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

impl Noxious {
    async fn start(bin: &str, upstream: SocketAddr) -> Res<Self> {
        let api = ports::free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &api.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let listen = ports::free_port();
        let mut n = Noxious {
            child,
            next: std::cell::Cell::new(0),
            api,
            listen,
        };
        for _ in 0..100 {
            if http(api, "GET", "/proxies", "").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = serde_json::json!({
            "name": "bench", "listen": listen.to_string(), "upstream": upstream.to_string(), "enabled": true
        });
        let (st, b) = http(api, "POST", "/proxies", &body.to_string()).await?;
        if st >= 300 {
            let _ = n.child.kill();
            return Err(format!("noxious: create proxy: {st} {b}").into());
        }
        Ok(n)
    }
}

impl Toxics for Noxious {
    async fn add_latency(&self, ms: u64) -> Res<u64> {
        let id = self.next.get() + 1;
        self.next.set(id);
        let body = serde_json::json!({
            "name": format!("lat{id}"), "type": "latency", "stream": "downstream", "toxicity": 1.0,
            "attributes": { "latency": ms, "jitter": 0 }
        });
        let (st, b) = http(self.api, "POST", "/proxies/bench/toxics", &body.to_string()).await?;
        if st >= 300 {
            return Err(format!("noxious: add toxic: {st} {b}").into());
        }
        Ok(id)
    }
    async fn remove(&self, id: u64) -> Res<()> {
        let path = format!("/proxies/bench/toxics/lat{id}");
        let (st, b) = http(self.api, "DELETE", &path, "").await?;
        if st >= 300 {
            return Err(format!("noxious: remove toxic: {st} {b}").into());
        }
        Ok(())
    }
}

impl Noxious {
    /// Cleans up after a failed measurement (unknown names just get a 404).
    async fn remove_all(&self) {
        for id in 1..=self.next.get() {
            let _ = self.remove(id).await;
        }
    }
}

impl Drop for Noxious {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Removal {
    fresh: Histogram<u64>,
    held: Histogram<u64>,
}

/// Removal latency: (fresh) time from the remove call to a new request's reply on an open
/// connection; (held) time from the remove call to the reply of a request held by the toxic.
async fn removal<T: Toxics>(t: &T, addr: SocketAddr, iters: usize) -> Res<Removal> {
    let mut s = conn(addr, b'E').await?;
    let mut r = Removal {
        fresh: hist(),
        held: hist(),
    };
    let mut b = [0u8; 8];
    for i in 0..iters * 2 {
        let id = t.add_latency(5000).await?;
        let held = i % 2 == 1;
        if held {
            s.write_all(b"heldheld").await?;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        t.remove(id).await?;
        if !held {
            s.write_all(b"freshfre").await?;
        }
        tokio::time::timeout(Duration::from_secs(15), s.read_exact(&mut b)).await??;
        let d = t0.elapsed().as_nanos() as u64;
        if held {
            r.held.record(d)?;
        } else {
            r.fresh.record(d)?;
        }
    }
    Ok(r)
}

/// Runs `f` while a bulk upstream transfer saturates the same proxy.
async fn saturated<T: Toxics>(t: &T, addr: SocketAddr, iters: usize) -> Res<(Removal, f64)> {
    let stop = tokio_util::sync::CancellationToken::new();
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut s = sink(addr, u64::MAX).await?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0u64;
        let t0 = Instant::now();
        while !stop2.is_cancelled() {
            s.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        Res::Ok(sent as f64 / t0.elapsed().as_secs_f64() / 1e9)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = removal(t, addr, iters).await;
    stop.cancel();
    let gbps = load.await??;
    Ok((r?, gbps))
}

/// A failed measurement of the peer becomes an empty cell and a note, not an aborted run.
fn report_err<T>(what: &str, r: Res<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{what} failed: {e}");
            None
        }
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn row(name: &str, cols: &[String]) {
    print!("{name:<44}");
    for c in cols {
        print!("{c:>16}");
    }
    println!();
}

/// Starts the proxy on a runtime with threads of its own, as it runs inside the chaosbot
/// process: it must not share worker threads with this bench's clients and server (noxious, a
/// separate process, gets its own threads from the OS too).
fn start_proxy_in_its_own_runtime(name: &str, up: SocketAddr) -> Res<ProxyHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>));
                return;
            }
        };
        rt.block_on(async move {
            let started = Proxy::start(ProxySettings {
                name,
                listen: "127.0.0.1:0".parse().expect("literal address"),
                upstream: up.to_string(),
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            let _ = tx.send(started);
            // Serve until the bench process exits.
            std::future::pending::<()>().await
        });
    });
    rx.recv()?
}

async fn run() -> Res<()> {
    let gib: u64 = std::env::var("BULK_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let bulk_bytes = gib << 30;
    let up = upstream_server().await?;
    let proxy = start_proxy_in_its_own_runtime("bench", up)?;
    let noxious = match std::env::var("NOXIOUS_BIN") {
        Ok(bin) => Some(Noxious::start(&bin, up).await?),
        Err(_) => None,
    };
    let mut targets: Vec<(&str, SocketAddr)> =
        vec![("direct", up), ("chaosbot", proxy.listen_addr())];
    if let Some(n) = &noxious {
        targets.push(("noxious", n.listen));
    }
    let names: Vec<String> = targets.iter().map(|(n, _)| n.to_string()).collect();
    println!();
    row("measure", &names);
    println!("{}", "-".repeat(44 + 16 * names.len()));

    // The machine's noise is large (±20% between back-to-back runs of the same thing): the
    // paths take turns for several rounds, and each keeps its best and its median.
    let rounds: usize = std::env::var("BULK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, (n, a)) in targets.iter().enumerate() {
            let gbps = bulk(*a, bulk_bytes)
                .await
                .map_err(|e| format!("bulk via {n}: {e}"))?;
            runs[i].push(gbps);
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cols: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.2} GB/s", best(r)))
        .collect();
    row(&format!("bulk {gib} GiB upstream, best of {rounds}"), &cols);
    let cols: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.2} GB/s", median(r)))
        .collect();
    row(
        &format!("bulk {gib} GiB upstream, median of {rounds}"),
        &cols,
    );
    let cols: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.0}%", 100.0 * median(r) / median(&runs[0]).max(1e-9)))
        .collect();
    row("bulk: median as % of direct", &cols);
    let cols: Vec<String> = runs
        .iter()
        .map(|r| {
            let each: Vec<String> = r.iter().map(|g| format!("{g:.1}")).collect();
            each.join(" ")
        })
        .collect();
    row("bulk rounds (GB/s)", &cols);

    let mut hs = Vec::new();
    for (_, a) in &targets {
        hs.push(rtts(*a, RTT_ITERS).await?);
    }
    row(
        "64 B round trip p50 (µs)",
        &hs.iter()
            .map(|h| format!("{:.1}", us(h, 0.5)))
            .collect::<Vec<_>>(),
    );
    row(
        "64 B round trip p99 (µs)",
        &hs.iter()
            .map(|h| format!("{:.1}", us(h, 0.99)))
            .collect::<Vec<_>>(),
    );
    row(
        "added vs direct p50 (µs)",
        &hs.iter()
            .map(|h| format!("{:.1}", us(h, 0.5) - us(&hs[0], 0.5)))
            .collect::<Vec<_>>(),
    );
    let base = Duration::from_nanos(hs[0].value_at_quantile(0.5));

    // Latency accuracy: 100 ms toxic, absolute error of the added delay.
    let mut acc: Vec<Option<Accuracy>> = vec![None];
    {
        let id = proxy.add_latency(100).await?;
        acc.push(Some(
            latency_accuracy(proxy.listen_addr(), Duration::from_millis(100), base).await?,
        ));
        proxy.remove(id).await?;
    }
    if let Some(n) = &noxious {
        let id = n.add_latency(100).await?;
        acc.push(report_err(
            "noxious latency accuracy",
            latency_accuracy(n.listen, Duration::from_millis(100), base).await,
        ));
        n.remove(id).await?;
    }
    let fmt = |f: &dyn Fn(&Accuracy) -> String| {
        acc.iter()
            .map(|a| a.as_ref().map_or("-".into(), f))
            .collect::<Vec<_>>()
    };
    row(
        "latency 100ms: |error| p50 (µs)",
        &fmt(&|a| format!("{:.0}", us(&a.0, 0.5))),
    );
    row(
        "latency 100ms: |error| p99 (µs)",
        &fmt(&|a| format!("{:.0}", us(&a.0, 0.99))),
    );
    row(
        "latency 100ms: |error| max (µs)",
        &fmt(&|a| format!("{:.0}", a.0.max() as f64 / 1e3)),
    );
    row(
        "latency 100ms: signed error min..max (µs)",
        &fmt(&|a| format!("{:.0}..{:.0}", a.1, a.2)),
    );

    // Removal latency, idle and saturated.
    let mut rem: Vec<Option<Removal>> = vec![
        None,
        Some(removal(&proxy, proxy.listen_addr(), REMOVAL_ITERS).await?),
    ];
    let mut sat: Vec<Option<(Removal, f64)>> = vec![
        None,
        Some(saturated(&proxy, proxy.listen_addr(), REMOVAL_ITERS).await?),
    ];
    if let Some(n) = &noxious {
        rem.push(report_err(
            "noxious removal",
            removal(n, n.listen, NOXIOUS_REMOVAL_ITERS).await,
        ));
        n.remove_all().await;
        sat.push(report_err(
            "noxious saturated removal",
            saturated(n, n.listen, NOXIOUS_REMOVAL_ITERS).await,
        ));
        n.remove_all().await;
    }
    let rfmt = |v: &[Option<&Histogram<u64>>], q: f64| {
        v.iter()
            .map(|h| h.map_or("-".into(), |h| format!("{:.0}", us(h, q))))
            .collect::<Vec<_>>()
    };
    let idle_fresh: Vec<_> = rem.iter().map(|r| r.as_ref().map(|r| &r.fresh)).collect();
    let idle_held: Vec<_> = rem.iter().map(|r| r.as_ref().map(|r| &r.held)).collect();
    let sat_fresh: Vec<_> = sat.iter().map(|r| r.as_ref().map(|r| &r.0.fresh)).collect();
    let sat_held: Vec<_> = sat.iter().map(|r| r.as_ref().map(|r| &r.0.held)).collect();
    row(
        "remove 5s latency -> fresh reply p50 (µs)",
        &rfmt(&idle_fresh, 0.5),
    );
    row(
        "remove 5s latency -> fresh reply p99 (µs)",
        &rfmt(&idle_fresh, 0.99),
    );
    row(
        "remove 5s latency -> held reply p50 (µs)",
        &rfmt(&idle_held, 0.5),
    );
    row(
        "remove 5s latency -> held reply p99 (µs)",
        &rfmt(&idle_held, 0.99),
    );
    row("saturated: fresh reply p50 (µs)", &rfmt(&sat_fresh, 0.5));
    row("saturated: fresh reply p99 (µs)", &rfmt(&sat_fresh, 0.99));
    row("saturated: held reply p50 (µs)", &rfmt(&sat_held, 0.5));
    row("saturated: held reply p99 (µs)", &rfmt(&sat_held, 0.99));
    row(
        "saturated: background bulk (GB/s)",
        &sat.iter()
            .map(|r| r.as_ref().map_or("-".into(), |r| format!("{:.2}", r.1)))
            .collect::<Vec<_>>(),
    );
    println!(
        "\n(removal: {REMOVAL_ITERS} iterations of each kind, noxious {NOXIOUS_REMOVAL_ITERS}; noxious times include its HTTP DELETE round trip)"
    );
    proxy.shutdown().await;
    Ok(())
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
