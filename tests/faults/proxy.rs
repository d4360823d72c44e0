//! The fault-injecting proxy against real sockets on 127.0.0.1: one test (at least) per toxic,
//! plus direction, toxicity, live add/remove, deadlines and the robustness cases.
//! Every loop is bounded in count, every read in time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::faults::proxy::{
    Proxy, ProxyError, ProxyHandle, ProxySettings, ToxicRequest, toxicity_affects,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MS: Duration = Duration::from_millis(1);
/// Upper bound for any single read in these tests.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// Echo server; reports the arrival time of every chunk it reads on `arrivals`.
async fn echo_server(arrivals: Option<mpsc::UnboundedSender<Instant>>) -> SocketAddr {
    echo_server_counting(arrivals, false).await
}

/// Like [`echo_server`], with one arrival per byte instead of one per read: a busy machine may
/// deliver two one-byte writes in one read, and each byte still arrived at that moment.
async fn echo_server_per_byte(arrivals: mpsc::UnboundedSender<Instant>) -> SocketAddr {
    echo_server_counting(Some(arrivals), true).await
}

async fn echo_server_counting(
    arrivals: Option<mpsc::UnboundedSender<Instant>>,
    per_byte: bool,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                s.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(tx) = &arrivals {
                        let now = Instant::now();
                        for _ in 0..if per_byte { n } else { 1 } {
                            let _ = tx.send(now);
                        }
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Server that writes `n` bytes (in one go) to each client, then closes.
async fn source_server(n: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let data = vec![7u8; n];
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn start(upstream: SocketAddr) -> ProxyHandle {
    Proxy::start(ProxySettings {
        name: "test".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
    })
    .await
    .unwrap()
}

fn toxic(kind: ToxicKind, direction: Direction) -> ToxicRequest {
    ToxicRequest {
        label: "test".into(),
        kind,
        direction,
        toxicity: 1.0,
        seed: 1,
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

fn latency(ms: u64) -> ToxicKind {
    ToxicKind::Latency {
        latency: Duration::from_millis(ms),
        jitter: Duration::ZERO,
    }
}

async fn connect(p: &ProxyHandle) -> TcpStream {
    let s = TcpStream::connect(p.listen_addr()).await.unwrap();
    // May fail if the proxy already reset the connection (reset_peer with zero timeout).
    let _ = s.set_nodelay(true);
    s
}

/// Reads exactly `n` bytes (bounded in time).
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(READ_LIMIT, s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

/// Round trip of a small message through the echo server.
async fn rtt(s: &mut TcpStream) -> Duration {
    let t0 = Instant::now();
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(s, 4).await, b"ping");
    t0.elapsed()
}

/// Reads until EOF or error; returns the data, the result kind and when it ended.
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, Result<(), std::io::ErrorKind>, Instant) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + READ_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!("no EOF within {READ_LIMIT:?}"),
            Ok(Ok(0)) => return (all, Ok(()), Instant::now()),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (all, Err(e.kind()), Instant::now()),
        }
    }
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(2 * MS).await;
    }
    panic!("condition not met within 1 s");
}

// ---- latency --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_round_trip() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    p.add_toxic(toxic(latency(50), Direction::Downstream))
        .unwrap();
    for _ in 0..3 {
        let d = rtt(&mut s).await;
        assert!(d >= 50 * MS && d < 90 * MS, "rtt {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_pipelined_not_cumulative() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let p = start(echo_server_per_byte(tx).await).await;
    let mut s = connect(&p).await;
    p.add_toxic(toxic(latency(60), Direction::Upstream))
        .unwrap();
    // 40 chunks 3 ms apart (about 20 in flight at once): each must arrive ~60 ms after it was
    // sent, not later because of the ones held before it.
    let mut sent = Vec::new();
    for _ in 0..40 {
        sent.push(Instant::now());
        s.write_all(b"x").await.unwrap();
        tokio::time::sleep(3 * MS).await;
    }
    read_n(&mut s, 40).await;
    for (i, t) in sent.iter().enumerate() {
        let arrived = tokio::time::timeout(READ_LIMIT, rx.recv())
            .await
            .expect("the echo server saw fewer bytes than were sent")
            .unwrap();
        let d = arrived - *t;
        assert!(d >= 60 * MS && d < 100 * MS, "chunk {i}: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_jitter_stays_in_bounds() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    p.add_toxic(toxic(
        ToxicKind::Latency {
            latency: 40 * MS,
            jitter: 20 * MS,
        },
        Direction::Downstream,
    ))
    .unwrap();
    let mut ds = Vec::new();
    for _ in 0..12 {
        ds.push(rtt(&mut s).await);
    }
    assert!(ds.iter().all(|d| *d >= 20 * MS && *d < 85 * MS), "{ds:?}");
    let spread = ds
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*ds.iter().min().unwrap());
    assert!(spread > 5 * MS, "jitter had no effect: {ds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direction_matters() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let p = start(echo_server(Some(tx)).await).await;
    let mut s = connect(&p).await;
    let id = p
        .add_toxic(toxic(latency(80), Direction::Downstream))
        .unwrap();
    // Downstream latency: the request reaches the server at once, the reply is late.
    let t0 = Instant::now();
    s.write_all(b"abc").await.unwrap();
    let arrived = tokio::time::timeout(READ_LIMIT, rx.recv())
        .await
        .expect("no arrival")
        .unwrap();
    read_n(&mut s, 3).await;
    assert!(
        arrived - t0 < 20 * MS,
        "upstream slowed: {:?}",
        arrived - t0
    );
    assert!(t0.elapsed() >= 80 * MS);
    p.remove_toxic(id).unwrap();
    // Upstream latency: the request itself is late.
    p.add_toxic(toxic(latency(50), Direction::Upstream))
        .unwrap();
    let t0 = Instant::now();
    s.write_all(b"abc").await.unwrap();
    let arrived = tokio::time::timeout(READ_LIMIT, rx.recv())
        .await
        .expect("no arrival")
        .unwrap();
    read_n(&mut s, 3).await;
    assert!(arrived - t0 >= 50 * MS, "{:?}", arrived - t0);
}

// ---- bandwidth ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limits_the_rate() {
    let p = start(source_server(60_000).await).await;
    p.add_toxic(toxic(
        ToxicKind::Bandwidth { rate_kbps: 200 },
        Direction::Downstream,
    ))
    .unwrap();
    let t0 = Instant::now();
    let mut s = connect(&p).await;
    let (data, end, _) = read_to_end(&mut s).await;
    let took = t0.elapsed();
    assert_eq!(end, Ok(()));
    assert_eq!(data.len(), 60_000);
    // 60 kB at 200 kB/s = 300 ms.
    assert!(took >= 270 * MS && took < 600 * MS, "took {took:?}");

    // The other direction is not limited.
    let p2 = start(echo_server(None).await).await;
    p2.add_toxic(toxic(
        ToxicKind::Bandwidth { rate_kbps: 1 },
        Direction::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p2).await;
    let t0 = Instant::now();
    s.write_all(&[1u8; 1]).await.unwrap();
    read_n(&mut s, 1).await;
    assert!(t0.elapsed() < 50 * MS);
}

// ---- timeout (blackhole) --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_drops_data_then_closes() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    let t0 = Instant::now();
    p.add_toxic(toxic(
        ToxicKind::Timeout { timeout: 100 * MS },
        Direction::Downstream,
    ))
    .unwrap();
    s.write_all(b"lost").await.unwrap();
    let (data, _, ended) = read_to_end(&mut s).await;
    assert!(data.is_empty(), "blackhole let {data:?} through");
    let d = ended - t0;
    assert!(d >= 95 * MS && d < 400 * MS, "closed after {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_timer_runs_without_traffic() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    let t0 = Instant::now();
    p.add_toxic(toxic(
        ToxicKind::Timeout { timeout: 60 * MS },
        Direction::Upstream,
    ))
    .unwrap();
    let (_, _, ended) = read_to_end(&mut s).await;
    let d = ended - t0;
    assert!(d >= 55 * MS && d < 400 * MS, "closed after {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_removal_resumes_at_once() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    let id = p
        .add_toxic(toxic(
            ToxicKind::Timeout {
                timeout: Duration::ZERO,
            },
            Direction::Downstream,
        ))
        .unwrap();
    s.write_all(b"lost").await.unwrap();
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(150 * MS, s.read(&mut buf))
            .await
            .is_err(),
        "data or close went through a zero-timeout blackhole"
    );
    p.remove_toxic(id).unwrap();
    let d = rtt(&mut s).await;
    assert!(d < 20 * MS, "after removal rtt {d:?}");
}

// ---- reset_peer -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_sends_rst_after_timeout() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    let t0 = Instant::now();
    p.add_toxic(toxic(
        ToxicKind::ResetPeer { timeout: 60 * MS },
        Direction::Downstream,
    ))
    .unwrap();
    let (_, end, ended) = read_to_end(&mut s).await;
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    let d = ended - t0;
    assert!(d >= 55 * MS && d < 400 * MS, "reset after {d:?}");

    // Zero timeout: new connections are reset at once.
    p.remove_all_toxics();
    p.add_toxic(toxic(
        ToxicKind::ResetPeer {
            timeout: Duration::ZERO,
        },
        Direction::Downstream,
    ))
    .unwrap();
    let t0 = Instant::now();
    // The RST can win the race with the connect call itself.
    let end = match TcpStream::connect(p.listen_addr()).await {
        Ok(mut s) => read_to_end(&mut s).await.1,
        Err(e) => Err(e.kind()),
    };
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    assert!(t0.elapsed() < 200 * MS);
}

// ---- down -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_refuses_then_accepts_again() {
    let p = start(echo_server(None).await).await;
    let mut open = connect(&p).await;
    assert!(rtt(&mut open).await < 20 * MS);
    let id = p
        .add_toxic(toxic(ToxicKind::Down, Direction::Downstream))
        .unwrap();
    // The open connection is closed.
    let (_, _, _) = read_to_end(&mut open).await;
    // New connects are refused (the listener is gone, not just ignoring us).
    wait_for(|| std::net::TcpStream::connect(p.listen_addr()).is_err()).await;
    let e = TcpStream::connect(p.listen_addr()).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    p.remove_toxic(id).unwrap();
    wait_for(|| std::net::TcpStream::connect(p.listen_addr()).is_ok()).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
}

// ---- slow_close -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delays_the_close() {
    let p = start(source_server(10).await).await;
    let mut s = connect(&p).await;
    let t0 = Instant::now();
    let (data, _, ended) = read_to_end(&mut s).await;
    assert_eq!(data.len(), 10);
    assert!(ended - t0 < 50 * MS);

    p.add_toxic(toxic(
        ToxicKind::SlowClose { delay: 100 * MS },
        Direction::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    let t0 = Instant::now();
    let first = read_n(&mut s, 10).await;
    let data_at = t0.elapsed();
    assert_eq!(first.len(), 10);
    let (rest, end, ended) = read_to_end(&mut s).await;
    assert!(rest.is_empty());
    assert_eq!(end, Ok(()));
    assert!(data_at < 50 * MS, "data itself was delayed: {data_at:?}");
    let d = ended - t0;
    assert!(d >= 95 * MS && d < 400 * MS, "closed after {d:?}");
}

// ---- slicer ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_cuts_data_into_small_pieces() {
    let p = start(source_server(100).await).await;
    p.add_toxic(toxic(
        ToxicKind::Slicer {
            average_size: 10,
            size_variation: 0,
            delay: 5 * MS,
        },
        Direction::Downstream,
    ))
    .unwrap();
    let t0 = Instant::now();
    let mut s = connect(&p).await;
    let mut sizes = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..200 {
        match tokio::time::timeout(READ_LIMIT, s.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) | Err(_) => break,
            Ok(n) => sizes.push(n),
        }
    }
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    // Slices of exactly 10 bytes, 5 ms apart. A client that reads late (a busy machine) may
    // get two or more slices in one read, but never a cut one, and never all at once.
    assert!(sizes.iter().all(|n| n % 10 == 0), "{sizes:?}");
    assert!(sizes.len() >= 4, "{sizes:?}");
    assert!(t0.elapsed() >= 45 * MS);
}

// ---- limit_data -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_closes_after_n_bytes() {
    let p = start(source_server(1000).await).await;
    p.add_toxic(toxic(
        ToxicKind::LimitData { bytes: 100 },
        Direction::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    let (data, _, _) = read_to_end(&mut s).await;
    assert_eq!(data.len(), 100);
}

// ---- toxicity and determinism ---------------------------------------------------------------

/// Which of `n` sequential connections a 40 ms latency toxic (toxicity 0.5, `seed`) slowed.
async fn affected_pattern(seed: u64, toxicity: f64, n: u64) -> Vec<bool> {
    let p = start(echo_server(None).await).await;
    let mut t = toxic(latency(40), Direction::Downstream);
    t.toxicity = toxicity;
    t.seed = seed;
    p.add_toxic(t).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut s = connect(&p).await;
        out.push(rtt(&mut s).await >= 40 * MS);
    }
    p.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_zero_and_one() {
    assert!(affected_pattern(3, 0.0, 6).await.iter().all(|a| !a));
    assert!(affected_pattern(3, 1.0, 6).await.iter().all(|a| *a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_replays_identically() {
    let a = affected_pattern(99, 0.5, 16).await;
    let b = affected_pattern(99, 0.5, 16).await;
    assert_eq!(a, b);
    let expected: Vec<bool> = (0..16).map(|c| toxicity_affects(99, c, 0.5)).collect();
    assert_eq!(a, expected);
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !x), "{a:?}");
}

// ---- live changes ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_on_an_open_connection() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    let id = p
        .add_toxic(toxic(latency(40), Direction::Upstream))
        .unwrap();
    assert_eq!(p.toxics().len(), 1);
    assert!(rtt(&mut s).await >= 40 * MS);
    p.remove_toxic(id).unwrap();
    assert!(rtt(&mut s).await < 20 * MS);
    assert!(matches!(
        p.remove_toxic(id),
        Err(ProxyError::NoSuchToxic(_))
    ));
    // Counters are bumped just after the write that the client already saw.
    wait_for(|| p.stats().bytes_up == 12 && p.stats().bytes_down == 12).await;
    let st = p.stats();
    assert_eq!(st.open_connections, 1);
    assert_eq!(st.accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_latency_reaches_an_idle_connection_opened_before_it() {
    // A keep-alive client: its connection was opened and used before the fault, then sat
    // idle (both directions parked in the splice fast path) when the toxic came.
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    tokio::time::sleep(100 * MS).await;
    p.add_toxic(toxic(latency(60), Direction::Downstream))
        .unwrap();
    for n in 0..5 {
        let d = rtt(&mut s).await;
        assert!(
            d >= 60 * MS,
            "round trip {n} took {d:?}: the toxic missed the open connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_releases_a_held_latency_at_once() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    let id = p
        .add_toxic(toxic(latency(5000), Direction::Downstream))
        .unwrap();
    s.write_all(b"held").await.unwrap();
    tokio::time::sleep(50 * MS).await;
    let t0 = Instant::now();
    p.remove_toxic(id).unwrap();
    read_n(&mut s, 4).await;
    assert!(t0.elapsed() < 20 * MS, "released after {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_removes_the_toxic_by_itself() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    let mut t = toxic(latency(5000), Direction::Downstream);
    let t0 = Instant::now();
    t.deadline = t0 + 100 * MS;
    p.add_toxic(t).unwrap();
    s.write_all(b"held").await.unwrap();
    read_n(&mut s, 4).await;
    let d = t0.elapsed();
    assert!(d >= 95 * MS && d < 300 * MS, "released after {d:?}");
    wait_for(|| p.toxics().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_toxicity_is_rejected() {
    let p = start(echo_server(None).await).await;
    let mut t = toxic(latency(1), Direction::Downstream);
    t.toxicity = 1.5;
    assert!(matches!(
        p.add_toxic(t),
        Err(ProxyError::InvalidToxic { .. })
    ));
}

// ---- robustness -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_one_way() {
    // Server reads until EOF, then answers with the byte count: it only works if our
    // shutdown(Write) reaches it while the other direction stays open.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("got {}", all.len()).as_bytes())
            .await
            .unwrap();
    });
    let p = start(addr).await;
    let mut s = connect(&p).await;
    s.write_all(&[0u8; 5000]).await.unwrap();
    s.shutdown().await.unwrap();
    let (data, end, _) = read_to_end(&mut s).await;
    assert_eq!(end, Ok(()));
    assert_eq!(data, b"got 5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_stream_closes_the_client() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"partial").await.unwrap();
        // Die abruptly: RST instead of FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let p = start(addr).await;
    let mut s = connect(&p).await;
    let (data, _, _) = read_to_end(&mut s).await;
    assert!(data.len() <= 7);
    wait_for(|| p.stats().open_connections == 0).await;
    // The proxy still serves.
    assert_eq!(p.stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusing_closes_the_client_and_counts() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = start(dead).await;
    let mut s = connect(&p).await;
    let (data, _, _) = read_to_end(&mut s).await;
    assert!(data.is_empty());
    wait_for(|| p.stats().upstream_failures == 1).await;
    assert_eq!(p.stats().open_connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_a_bind_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let r = Proxy::start(ProxySettings {
        name: "clash".into(),
        listen: taken.local_addr().unwrap(),
        upstream: "127.0.0.1:1".into(),
    })
    .await;
    match r {
        Err(ProxyError::Bind { target, addr, .. }) => {
            assert_eq!(target, "clash");
            assert_eq!(addr, taken.local_addr().unwrap());
        }
        other => panic!("expected Bind, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_listener() {
    let p = start(echo_server(None).await).await;
    let mut s = connect(&p).await;
    assert!(rtt(&mut s).await < 20 * MS);
    tokio::time::timeout(READ_LIMIT, p.shutdown())
        .await
        .unwrap();
    let (_, _, _) = read_to_end(&mut s).await;
    assert!(TcpStream::connect(p.listen_addr()).await.is_err());
    assert!(matches!(
        p.add_toxic(toxic(latency(1), Direction::Upstream)),
        Err(ProxyError::ShutDown(_))
    ));
}

// ---- bulk transfers (splice fast path while no toxic applies) ---------------------------------

/// Bytes per block of patterned data: an 8-byte sequence number, an 8-byte send time (ns since
/// `epoch`), then words derived from the sequence number.
const BLOCK: usize = 16 * 1024;

fn pattern_word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

fn make_block(seq: u64, sent_ns: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    for (i, w) in out[16..].chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&pattern_word(seq, i).to_le_bytes());
    }
}

/// Checks one block: in order (`seq` expected) and intact. Returns its send time.
fn check_block(expected_seq: u64, b: &[u8]) -> u64 {
    let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(word(0), expected_seq, "block out of order");
    for i in 0..(BLOCK - 16) / 8 {
        if word(16 + i * 8) != pattern_word(expected_seq, i) {
            panic!("block {expected_seq} corrupted at word {i}");
        }
    }
    word(8)
}

/// Server that sends patterned blocks (timestamped against `epoch`) to each client: `limit`
/// blocks then shutdown(Write), or until the client goes.
async fn block_source(epoch: Instant, limit: u64) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; BLOCK * 16];
                let mut seq = 0;
                while seq < limit {
                    let n = (limit - seq).min(16) as usize;
                    let now = epoch.elapsed().as_nanos() as u64;
                    for b in buf[..n * BLOCK].chunks_exact_mut(BLOCK) {
                        make_block(seq, now, b);
                        seq += 1;
                    }
                    if s.write_all(&buf[..n * BLOCK]).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// 64 MiB each way with half-closes in between: the client sends, shuts down its write side,
/// the server verifies everything (proving the EOF went through on its own), answers with
/// 64 MiB and closes; the client verifies those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_64_mib_each_way_arrives_intact_with_half_close() {
    const BLOCKS: u64 = 64 * 1024 * 1024 / BLOCK as u64;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = vec![0u8; BLOCK];
        for seq in 0..BLOCKS {
            s.read_exact(&mut b).await.unwrap();
            check_block(seq, &b);
        }
        // The client's half-close arrives as EOF while our sending side is still open.
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            0,
            "data after the last block"
        );
        for seq in 0..BLOCKS {
            make_block(seq, 0, &mut b);
            s.write_all(&b).await.unwrap();
        }
        s.shutdown().await.unwrap();
    });
    let p = start(addr).await;
    let mut s = connect(&p).await;
    let t0 = Instant::now();
    let mut b = vec![0u8; BLOCK];
    for seq in 0..BLOCKS {
        make_block(seq, 0, &mut b);
        s.write_all(&b).await.unwrap();
    }
    s.shutdown().await.unwrap();
    for seq in 0..BLOCKS {
        tokio::time::timeout(READ_LIMIT, s.read_exact(&mut b))
            .await
            .expect("read timed out")
            .unwrap();
        check_block(seq, &b);
    }
    let (rest, end, _) = read_to_end(&mut s).await;
    assert!(rest.is_empty());
    assert_eq!(end, Ok(()));
    tokio::time::timeout(READ_LIMIT, server)
        .await
        .unwrap()
        .unwrap();
    let bytes = BLOCKS * BLOCK as u64;
    wait_for(|| p.stats().bytes_up == bytes && p.stats().bytes_down == bytes).await;
    eprintln!("128 MiB through the proxy in {:?}", t0.elapsed());
}

/// The server half-closes first while the client keeps sending through the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_server_side_with_the_fast_path() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        let _ = got_tx.send(all);
    });
    let p = start(addr).await;
    let mut s = connect(&p).await;
    let (data, end, _) = read_to_end(&mut s).await;
    assert_eq!(data, b"bye");
    assert_eq!(end, Ok(()));
    // Our sending side still works after the server's EOF reached us.
    let payload = vec![3u8; 4 << 20];
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(READ_LIMIT, got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(got == payload, "payload changed on the way");
    assert_eq!(p.stats().bytes_up, 4 << 20);
    wait_for(|| p.stats().open_connections == 0).await;
}

/// Reads blocks `from..` until `until` says stop; checks order and content. Returns the next
/// sequence number and (send time, arrival time) in ns since `epoch` per block.
async fn read_blocks(
    s: &mut TcpStream,
    epoch: Instant,
    from: u64,
    mut until: impl FnMut(u64, Instant) -> bool,
) -> (u64, Vec<(u64, u64)>) {
    let mut b = vec![0u8; BLOCK];
    let mut seq = from;
    let mut times = Vec::new();
    // Bounded: at most 1 GiB of blocks.
    for _ in 0..65_536 {
        if until(seq, Instant::now()) {
            break;
        }
        tokio::time::timeout(READ_LIMIT, s.read_exact(&mut b))
            .await
            .expect("read timed out")
            .unwrap();
        let sent = check_block(seq, &b);
        times.push((sent, epoch.elapsed().as_nanos() as u64));
        seq += 1;
    }
    (seq, times)
}

/// A latency toxic added in the middle of a bulk transfer applies to the bytes sent after it,
/// the stream stays intact and in order, and removing it restores full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_added_mid_bulk_applies_and_removal_restores_speed() {
    const MIB32: u64 = 32 * 1024 * 1024 / BLOCK as u64;
    let epoch = Instant::now();
    let p = start(block_source(epoch, 60_000).await).await;
    let mut s = connect(&p).await;

    // Phase 1: no toxic.
    let t0 = Instant::now();
    let (seq, _) = read_blocks(&mut s, epoch, 0, |seq, _| seq == MIB32).await;
    let fast = t0.elapsed();

    // Phase 2: 100 ms downstream latency for 1.5 s (long enough for the data already in
    // flight before the toxic, up to a few MiB of buffers, to drain on a loaded machine).
    let id = p
        .add_toxic(toxic(latency(100), Direction::Downstream))
        .unwrap();
    // The pump sees the change before its next splice; 1 ms covers one in progress.
    let added = (epoch.elapsed() + MS).as_nanos() as u64;
    let until = Instant::now() + 1500 * MS;
    let (seq, times) = read_blocks(&mut s, epoch, seq, |_, now| now >= until).await;
    // Blocks the server produced after the toxic was in place were read by the proxy after
    // that, so each was held at least 100 ms.
    let late: Vec<u64> = times
        .iter()
        .filter(|(sent, _)| *sent > added)
        .map(|(sent, arrived)| arrived - sent)
        .collect();
    assert!(
        late.len() >= 3,
        "too few blocks under the toxic: {}",
        late.len()
    );
    let min = Duration::from_nanos(*late.iter().min().unwrap());
    assert!(
        min >= 99 * MS,
        "a block sent under the toxic took only {min:?}"
    );

    // Phase 3: removed; the next 32 MiB go at about the first phase's speed.
    p.remove_toxic(id).unwrap();
    let t0 = Instant::now();
    let (_, _) = read_blocks(&mut s, epoch, seq, |s, _| s == seq + MIB32).await;
    let after = t0.elapsed();
    eprintln!("32 MiB: {fast:?} before the toxic, {after:?} after its removal");
    assert!(
        after < fast * 3 + 100 * MS,
        "not back to speed: {after:?} vs {fast:?}"
    );
}
