//! The live run page, served as `chaosbot serve` serves it (the `/runs` routes on loopback,
//! a SQLite store): time to the first byte and to the whole page (p50/p99 over
//! `PAGES_BENCH_N` requests, 200) for a ten-minute run sampled four times a second (2 400
//! samples, a fault, a load step), for a run still queued and for a ten-hour run at one sample
//! a second (36 000, `PAGES_BENCH_N / 10` requests; its first, cold load is shown apart); and
//! how long a journal entry takes to reach an SSE client of `/runs/<id>/events`: appended and
//! told through the process's journal broadcast (what the engine does), appended by another
//! process on SQLite (no wake-up: the stream's one-second sweep finds it), and, when
//! `TEST_POSTGRES_URL` names a server, appended by another replica on Postgres (its
//! `LISTEN/NOTIFY` wake-up). Targets: first byte ≤ 50 ms, live update ≤ 1 s.
//!
//! `cargo bench --bench pages`. The chart's own render time is `cargo bench --bench chart`.

#[path = "../tests/support/journal.rs"]
mod journal;
#[path = "../tests/support/stored.rs"]
mod stored;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::{Config, Secret};
use chaosbot::run::{Entry, Event, SamplePhase};
use chaosbot::web::link::Links;
use chaosbot::web::{Pages, router};
use hdrhistogram::Histogram;
use journal::Shape;
use stored::store_journal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Time from writing the request to the first byte and to the end of the answer, on a fresh
/// connection.
async fn first_byte(addr: SocketAddr, path: &str) -> (Duration, Duration, u16) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    s.set_nodelay(true).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    s.write_all(req.as_bytes()).await.expect("sent");
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.expect("an answer");
    let took = start.elapsed();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let whole = start.elapsed();
    let head = String::from_utf8_lossy(&rest[..rest.len().min(16)]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (took, whole, status)
}

/// Reads an SSE stream until the event with id `want` (or `deadline`).
async fn until_event(
    s: &mut tokio::net::TcpStream,
    buf: &mut String,
    want: i64,
    deadline: Instant,
) -> bool {
    let needle = format!("id: {want}\n");
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(at) = buf.find(&needle) {
            buf.drain(..at + needle.len());
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            _ => return false,
        }
    }
}

fn sample(n: u64) -> Event {
    Event::ProbeSample {
        probe: "api-ok".into(),
        phase: SamplePhase::After,
        ok: true,
        latency_ms: 10.0 + (n % 7) as f64,
        detail: "200".into(),
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("PAGES_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(1);
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = format!("sqlite://{}", dir.path().join("pages.db").display());
    let store = chaosbot::store::open(&db).await.expect("the store opens");
    let mut cfg = Config::default();
    cfg.server.page_secret = Some(Secret("bench-page-secret-0123456789".into()));
    let links = Links::from_config(&cfg).expect("a key");
    let (tx, _) = broadcast::channel::<Entry>(1024);
    let subscribe = {
        let tx = tx.clone();
        Arc::new(move || tx.subscribe())
    };
    let pages = Pages::new(store.clone(), Some(links.clone()), subscribe);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router(pages)).await });

    let (_, entries) = journal::finished_run(
        "r-benchpage1",
        &Shape {
            seconds: 600,
            samples_per_second: 4,
            with_load: true,
            all_fail: false,
        },
    );
    let last = store_journal(&store, &db, "r-benchpage1", &entries, &[]).await;
    let (_, queued) = journal::finished_run(
        "r-benchqueue",
        &Shape {
            seconds: 0,
            samples_per_second: 1,
            with_load: false,
            all_fail: false,
        },
    );
    store_journal(&store, &db, "r-benchqueue", &queued[..1], &[]).await;
    let (_, long) = journal::finished_run(
        "r-bench10hrs",
        &Shape {
            seconds: 36_000,
            samples_per_second: 1,
            with_load: false,
            all_fail: false,
        },
    );
    store_journal(&store, &db, "r-bench10hrs", &long, &[]).await;
    let exp = chaosbot::run::now_ms() / 1000 + 3600;

    println!(
        "run page, time to first byte over {n} requests (fresh connection each, loopback, SQLite)"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}   {:>9} {:>9}",
        "page", "p50", "p99", "max", "whole p50", "whole p99"
    );
    for (name, id, rounds) in [
        ("10 min, 4 samples/s, load step (2 400+)", "r-benchpage1", n),
        ("still queued (empty chart)", "r-benchqueue", n),
        ("10 h, 1 sample/s (36 000)", "r-bench10hrs", (n / 10).max(1)),
    ] {
        let path = links.run_path(id, exp);
        let mut h = Histogram::<u64>::new(3).expect("a histogram");
        let mut whole = Histogram::<u64>::new(3).expect("a histogram");
        for round in 0..rounds {
            let (took, all, status) = first_byte(addr, &path).await;
            assert_eq!(status, 200, "the page answers");
            if round == 0 {
                // The first request reads the whole journal and draws it; later ones read
                // what was appended since (nothing here) and the drawing kept for an ended run.
                println!(
                    "{:<44} {:>7.1}ms first byte, {:.1}ms whole",
                    format!("{name}, first load"),
                    took.as_secs_f64() * 1000.0,
                    all.as_secs_f64() * 1000.0
                );
            }
            h.record(took.as_micros() as u64).ok();
            whole.record(all.as_micros() as u64).ok();
        }
        println!(
            "{:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms   {:>7.1}ms {:>7.1}ms",
            name,
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
            ms(&whole, 0.5),
            ms(&whole, 0.99)
        );
    }
    let forged = links
        .run_path("r-benchpage1", exp)
        .replace("sig=", "sig=00");
    let (took, _, status) = first_byte(addr, &forged).await;
    println!(
        "{:<44} {:>7.1}ms (status {status})",
        "a forged link, refused",
        took.as_secs_f64() * 1000.0
    );

    // Live updates: one SSE client; each entry appended, then (or not) told.
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let path = links
        .run_path("r-benchpage1", exp)
        .replacen('?', "/events?", 1);
    let req = format!(
        "GET {path}&after={last} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("sent");
    let mut buf = String::new();
    println!("\nlive update: journal append → event received by an SSE client");
    println!("{:<44} {:>9} {:>9} {:>9}", "path", "p50", "p99", "max");
    for (name, told, rounds) in [
        ("same process (journal broadcast)", true, n),
        ("another process (the stream's 1 s sweep)", false, 20.min(n)),
    ] {
        let mut h = Histogram::<u64>::new(3).expect("a histogram");
        let mut missed = 0;
        for i in 0..rounds {
            let start = Instant::now();
            let entry = store
                .append("r-benchpage1", &sample(i as u64))
                .await
                .expect("appended");
            if told {
                let _ = tx.send(entry.clone());
            }
            if until_event(&mut s, &mut buf, entry.seq, start + Duration::from_secs(5)).await {
                h.record(start.elapsed().as_micros() as u64).ok();
            } else {
                missed += 1;
            }
            // Spread the appends (a probe samples a few times a second at most).
            tokio::time::sleep(Duration::from_millis(if told { 20 } else { 137 })).await;
        }
        println!(
            "{:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms{}",
            name,
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
            if missed > 0 {
                format!("  ({missed} not received within 5 s)")
            } else {
                String::new()
            }
        );
    }
    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        postgres_live(&url, &cfg, n).await;
    }
    println!("targets: first byte ≤ 50 ms; a live update within 1 s of its journal entry");
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let end = base[start..].find('/').map_or(base.len(), |i| start + i);
    match query {
        Some(q) => format!("{}/{db}?{q}", &base[..end]),
        None => format!("{}/{db}", &base[..end]),
    }
}

/// Two replicas on one Postgres database: the page is served by one, the entries appended by
/// the other (its own pool, as another process has); the page's replica hears of them through
/// its store's `LISTEN/NOTIFY` wake-ups.
async fn postgres_live(admin_url: &str, cfg: &Config, n: usize) {
    use sqlx::{AssertSqlSafe, Connection};
    let name = format!("chaosbot_pagesbench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("TEST_POSTGRES_URL connects");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("the bench database is created");
    let url = with_database(admin_url, &name);
    {
        let serving = chaosbot::store::open_with_pool(&url, Some(2))
            .await
            .expect("the serving replica's store opens");
        let other = chaosbot::store::open_with_pool(&url, Some(2))
            .await
            .expect("the other replica's store opens");
        let (_, entries) = journal::finished_run(
            "r-benchpgrun",
            &Shape {
                seconds: 60,
                samples_per_second: 1,
                with_load: false,
                all_fail: false,
            },
        );
        let (run, submitted) = stored::new_run("r-benchpgrun", &entries);
        other
            .create_run(run, submitted)
            .await
            .expect("the run is created");
        let links = Links::from_config(cfg).expect("a key");
        // No journal broadcast reaches the serving replica: it executes nothing.
        let (quiet, _) = broadcast::channel::<Entry>(16);
        let subscribe = Arc::new(move || quiet.subscribe());
        let pages = Pages::new(serving.clone(), Some(links.clone()), subscribe);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("an address");
        let server = tokio::spawn(async move { axum::serve(listener, router(pages)).await });
        let exp = chaosbot::run::now_ms() / 1000 + 3600;
        let path = links
            .run_path("r-benchpgrun", exp)
            .replacen('?', "/events?", 1);
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let req = format!(
            "GET {path}&after=1 HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("sent");
        let mut buf = String::new();
        // The stream is open once the retry comment has come.
        let _ = until_text(
            &mut s,
            &mut buf,
            ": chaosbot",
            Instant::now() + Duration::from_secs(5),
        )
        .await;
        let mut h = Histogram::<u64>::new(3).expect("a histogram");
        let mut missed = 0;
        let rounds = 50.min(n);
        for i in 0..rounds {
            let start = Instant::now();
            let entry = other
                .append("r-benchpgrun", &sample(i as u64))
                .await
                .expect("appended");
            if until_event(&mut s, &mut buf, entry.seq, start + Duration::from_secs(5)).await {
                h.record(start.elapsed().as_micros() as u64).ok();
            } else {
                missed += 1;
            }
            tokio::time::sleep(Duration::from_millis(137)).await;
        }
        println!(
            "{:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms{}",
            "another replica (Postgres LISTEN/NOTIFY)",
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
            if missed > 0 {
                format!("  ({missed} not received within 5 s)")
            } else {
                String::new()
            }
        );
        drop(s);
        server.abort();
    }
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// Reads a stream until `text` has come (or `deadline`).
async fn until_text(
    s: &mut tokio::net::TcpStream,
    buf: &mut String,
    text: &str,
    deadline: Instant,
) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(at) = buf.find(text) {
            buf.drain(..at + text.len());
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            _ => return false,
        }
    }
}
