//! The live run pages `chaosbot serve` answers at `/runs`: signed links (missing, forged,
//! expired and another run's are refused with a page that says how to get a working one),
//! the page and its chart, the SSE stream of journal entries (live, and resumed by
//! `Last-Event-ID`), the operator's list, escaping, the parent message's link, and the page
//! in a headless Chromium following a run as it goes on.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chaosbot::config::Secret;
use chaosbot::run::{Event, RunSource};
use chaosbot::slack::server::Server;
use chaosbot::store::{AbortScope, NewRun};
use chaosbot::web::link::{Links, Scope};
use support::app::{TestApp, run_id_in};
use support::stored::store_journal;
use support::web::{self, Browser, Sse};

const SECRET: &str = "pages-signing-secret";
const ALICE: &str = "UALICE";

/// Probes five times a second: a run of a few seconds journals a steady stream of samples.
const SLOW_API: &str = r#"
name: slow-api
title: The API stays fast with 30 ms of latency
owner: "@sre"
parameters:
  duration: {type: duration, default: 2s, min: 1s, max: 2m}
hypothesis:
  recovery_timeout: 5s
  probes:
    - name: api-ok
      http: {endpoint: api-http, path: /, status: 200, max_latency: 1s}
      interval: 200ms
method:
  - name: slow
    target: api
    fault: latency
    latency: 30ms
    duration: ${duration}
"#;

/// A test app whose server knows its own public URL (bound before the server starts).
struct Rig {
    app: TestApp,
    server: Server,
    links: Links,
}

impl Rig {
    async fn start(page_secret: Option<&str>) -> Rig {
        let app = TestApp::new(SECRET).await;
        app.add_to_catalog("slow-api.yaml", SLOW_API);
        Rig::serve(app, page_secret).await
    }

    /// The server on `app` (its database may hold runs already).
    async fn serve(mut app: TestApp, page_secret: Option<&str>) -> Rig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        app.cfg.server.public_url = Some(format!("http://{addr}/"));
        app.cfg.server.page_secret = page_secret.map(|s| Secret(s.into()));
        let links = Links::from_config(&app.cfg).unwrap();
        let server = Server::start(app.cfg.clone(), app.store().await, listener)
            .await
            .unwrap();
        Rig { app, server, links }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// A run link valid for an hour.
    fn run_path(&self, id: &str) -> String {
        self.links.run_path(id, now_unix() + 3600)
    }

    async fn start_run(&self, duration: &str) -> String {
        let answer = self
            .app
            .slash(
                self.addr(),
                ALICE,
                &format!("start slow-api duration={duration}"),
            )
            .await;
        run_id_in(&answer.to_string())
    }
}

fn now_unix() -> i64 {
    chaosbot::run::now_ms() / 1000
}

/// Swaps one hex digit of the link's signature.
fn forge(path: &str) -> String {
    let at = path.find("sig=").unwrap() + 4;
    let mut s = path.to_string();
    let c = if &s[at..at + 1] == "0" { "1" } else { "0" };
    s.replace_range(at..at + 1, c);
    s
}

#[tokio::test]
async fn a_run_page_opens_only_through_a_valid_link() {
    let rig = Rig::start(Some("a-page-secret-for-these-tests")).await;
    let id = rig.start_run("1s").await;
    rig.server.engine.wait(&id).await.unwrap();
    let good = rig.run_path(&id);

    let page = web::get(rig.addr(), &good).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.content_type.starts_with("text/html"));
    assert!(
        page.body
            .contains("The API stays fast with 30 ms of latency")
    );
    assert!(page.body.contains("HELD"), "the verdict is on the page");
    assert!(page.body.contains("id=\"timeline\""));
    assert!(page.body.contains("<svg"), "the chart is inline");
    for (h, want) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(page.headers.get(h).unwrap(), want);
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'sha256-") && !csp.contains("unsafe-eval"));

    let svg = web::get(rig.addr(), &good.replacen('?', "/chart.svg?", 1)).await;
    assert_eq!(
        (svg.status, svg.content_type.as_str()),
        (200, "image/svg+xml")
    );
    assert!(svg.body.contains("api-ok"));

    // Refused: no link, a forged one, an expired one, another run's, a run link for the list.
    let exp_past = now_unix() - 5;
    let expired = rig.links.run_path(&id, exp_past);
    let other_run = rig.run_path("r-someoneelse").replace("r-someoneelse", &id);
    let refused = [
        (format!("/runs/{id}"), "needs a signed link"),
        (forge(&good), "invalid"),
        (expired.clone(), "expired"),
        (other_run, "invalid"),
        (good.replacen(&format!("/runs/{id}"), "/runs", 1), "invalid"),
        (format!("/runs/{id}?exp=abc&sig=00"), "invalid"),
        (forge(&good).replacen('?', "/chart.svg?", 1), "invalid"),
        (expired.replacen('?', "/events?", 1), "expired"),
        (forge(&good).replacen('?', "/body?", 1), "invalid"),
    ];
    for (path, says) in refused {
        let p = web::get(rig.addr(), &path).await;
        assert_eq!(p.status, 403, "{path} must be refused: {}", p.body);
        assert!(
            p.body.contains(says),
            "{path}: the refusal says {says:?}: {}",
            p.body
        );
        assert!(
            p.body.contains("/chaos summary"),
            "it says how to get a link"
        );
        assert!(!p.body.contains("slow-api"), "nothing about the run leaks");
    }
    // A link made with another key (another chaosbot, or a guessed one) is forged too.
    let mut other = rig.app.cfg.clone();
    other.server.page_secret = Some(Secret("another-page-secret-entirely".into()));
    let foreign = Links::from_config(&other)
        .unwrap()
        .run_path(&id, now_unix() + 60);
    assert_eq!(web::get(rig.addr(), &foreign).await.status, 403);
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn the_operator_link_lists_recent_runs_with_working_links() {
    // No page_secret: the key is derived from the Slack signing secret.
    let rig = Rig::start(None).await;
    let id = rig.start_run("1s").await;
    rig.server.engine.wait(&id).await.unwrap();
    let exp = now_unix() + 600;
    let list = rig.links.runs_url(exp);
    let path = list.trim_start_matches(&format!("http://{}", rig.addr()));
    let page = web::get(rig.addr(), path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let href = format!("/runs/{id}?{}", rig.links.query(&Scope::Run(&id), exp));
    assert!(
        page.body.contains(&href.replace('&', "&amp;")),
        "{}",
        page.body
    );
    assert_eq!(web::get(rig.addr(), &href).await.status, 200);
    assert_eq!(web::get(rig.addr(), &forge(path)).await.status, 403);
    assert_eq!(web::get(rig.addr(), "/runs").await.status, 403);
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn the_event_stream_sends_entries_as_they_land_and_resumes_after_last_event_id() {
    let rig = Rig::start(None).await;
    let id = rig.start_run("3s").await;
    let events = rig.run_path(&id).replacen('?', "/events?", 1);
    let mut sse = Sse::open(rig.addr(), &events, None).await;
    assert_eq!(sse.status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut seqs, mut done, mut samples) = (Vec::new(), false, 0);
    while let Some(ev) = sse.next(deadline).await {
        match ev.event.as_str() {
            "entry" => {
                let entry: chaosbot::run::Entry = serde_json::from_str(&ev.data).unwrap();
                assert_eq!(ev.id.as_deref(), Some(entry.seq.to_string().as_str()));
                assert_eq!(entry.run_id, id);
                if matches!(entry.event, Event::ProbeSample { .. }) {
                    samples += 1;
                }
                seqs.push(entry.seq);
            }
            "done" => {
                done = true;
                break;
            }
            other => panic!("unexpected event {other}: {ev:?}"),
        }
    }
    assert!(done, "the stream ends with `done` after the verdict");
    assert!(samples > 5, "probe samples streamed while the run went on");
    // Every entry once, in order, as the journal has them.
    let journal = rig.app.store().await.journal(&id, 0).await.unwrap();
    let want: Vec<i64> = journal.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, want);

    // Resumed after entry 3: the rest, from 4 on.
    let mut again = Sse::open(rig.addr(), &events, Some(3)).await;
    let first = again
        .next(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.id.as_deref(), Some("4"));
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn entries_another_process_appends_reach_the_stream() {
    let rig = Rig::start(None).await;
    // A run in the shared database that this server does not execute: queued behind a halt
    // of nothing, then closed by an abort from "another terminal".
    let store = rig.app.store().await;
    let id = "r-elsewhere1".to_string();
    store
        .create_run(
            NewRun {
                id: id.clone(),
                experiment: "elsewhere".into(),
                title: "Run by another process".into(),
                spec: serde_json::Value::Null,
                params: BTreeMap::new(),
                seed: 1,
                requested_by: "bob".into(),
                source: RunSource::Terminal,
            },
            Event::Submitted {
                experiment: "elsewhere".into(),
                title: "Run by another process".into(),
                requested_by: "bob".into(),
                source: RunSource::Terminal,
                params: BTreeMap::new(),
                seed: 1,
                targets: vec!["nothing-declared".into()],
            },
        )
        .await
        .unwrap();
    let events = rig.run_path(&id).replacen('?', "/events?", 1);
    let mut sse = Sse::open(rig.addr(), &events, None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = sse.next(deadline).await.unwrap();
    assert_eq!(first.id.as_deref(), Some("1"), "the journal so far");
    // Another handle on the database closes it (no wake-up reaches this process for that).
    let other = rig.app.store().await;
    other
        .request_abort(AbortScope::Run(id.clone()), "bob", "not today")
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while let Some(ev) = sse.next(deadline).await {
        kinds.push(ev.event.clone());
        if ev.event == "done" {
            break;
        }
    }
    assert_eq!(kinds.last().map(String::as_str), Some("done"), "{kinds:?}");
    assert!(kinds.iter().filter(|k| *k == "entry").count() >= 1);
    rig.server.shutdown("test over").await;
}

/// A replica that does not execute the run serves its page: entries the owning replica
/// appends reach the page's event stream through Postgres' wake-ups, well inside the one-second
/// sweep that is only the fallback.
#[tokio::test]
async fn on_postgres_another_replicas_entries_reach_the_stream_at_once() {
    support::with_postgres(|url| async move {
        let app = TestApp::new(SECRET).await;
        // "The owner": another process with its own pool, which holds the run by lease.
        let owner = chaosbot::store::open(&url).await.unwrap();
        let id = "r-pgowned01".to_string();
        owner
            .create_run(
                NewRun {
                    id: id.clone(),
                    experiment: "elsewhere".into(),
                    title: "Run by another replica".into(),
                    spec: serde_json::Value::Null,
                    params: BTreeMap::new(),
                    seed: 1,
                    requested_by: "bob".into(),
                    source: RunSource::Terminal,
                },
                Event::Submitted {
                    experiment: "elsewhere".into(),
                    title: "Run by another replica".into(),
                    requested_by: "bob".into(),
                    source: RunSource::Terminal,
                    params: BTreeMap::new(),
                    seed: 1,
                    targets: vec![],
                },
            )
            .await
            .unwrap();
        let claimed = owner
            .claim_run(&id, "replica-elsewhere", Duration::from_secs(600), 10)
            .await
            .unwrap();
        assert!(claimed.is_some(), "the other replica holds the run");
        let last = owner.journal(&id, 0).await.unwrap().last().unwrap().seq;

        // The page's replica, started after: it executes nothing of this run.
        let server = app.start_replica(&url).await;
        let links = Links::from_config(&app.cfg).unwrap();
        let events = format!(
            "{}&after={last}",
            links
                .run_path(&id, now_unix() + 3600)
                .replacen('?', "/events?", 1)
        );
        let mut sse = Sse::open(server.addr, &events, None).await;
        assert_eq!(sse.status, 200);
        let sample = |n: u64| Event::ProbeSample {
            probe: "api-ok".into(),
            phase: chaosbot::run::SamplePhase::During,
            ok: true,
            latency_ms: 10.0 + n as f64,
            detail: "200".into(),
        };
        // A first entry, however it comes (the stream is surely open after it).
        let warm = owner.append(&id, &sample(0)).await.unwrap();
        let first = sse
            .next(Instant::now() + Duration::from_secs(10))
            .await
            .expect("the first entry arrives");
        assert_eq!(first.id, Some(warm.seq.to_string()));

        let mut took = Vec::new();
        for n in 1..=10u64 {
            tokio::time::sleep(Duration::from_millis(50 + 37 * n)).await;
            let start = Instant::now();
            let entry = owner.append(&id, &sample(n)).await.unwrap();
            let ev = sse
                .next(start + Duration::from_secs(5))
                .await
                .expect("the entry arrives");
            assert_eq!(ev.event, "entry");
            assert_eq!(ev.id, Some(entry.seq.to_string()));
            took.push(start.elapsed());
        }
        // The sweep alone (once a second) would find an entry after 500 ms on average; each
        // of these came by the wake-up.
        let slowest = took.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < Duration::from_millis(400),
            "entries came late, as if swept: {took:?}"
        );
        drop(sse);
        server.shutdown("test over").await;
    })
    .await;
}

/// Two servers on one Postgres database, a run started through one of them (whichever
/// claims it executes it): the pages of both follow it live, the non-executing one by the
/// database's wake-ups, each entry within a fraction of the one-second fallback sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_both_follow_a_run_live() {
    support::with_postgres(|url| async move {
        let mut app = TestApp::new(SECRET).await;
        app.add_to_catalog("slow-api.yaml", SLOW_API);
        app.cfg.database_url = Some(url.clone());
        let servers = [app.start_replica(&url).await, app.start_replica(&url).await];
        let links = Links::from_config(&app.cfg).unwrap();
        let answer = app
            .slash(servers[0].addr, ALICE, "start slow-api duration=3s")
            .await;
        let id = run_id_in(&answer.to_string());
        let events = links
            .run_path(&id, now_unix() + 3600)
            .replacen('?', "/events?", 1);
        let mut readers = Vec::new();
        for server in &servers {
            let mut sse = Sse::open(server.addr, &events, None).await;
            assert_eq!(sse.status, 200);
            let opened = chaosbot::run::now_ms();
            readers.push(tokio::spawn(async move {
                // (seq, ms from the entry's journal time to its arrival) of entries appended
                // after the stream opened.
                let mut lags = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while let Some(ev) = sse.next(deadline).await {
                    if ev.event == "done" {
                        return (lags, true);
                    }
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
                    let at = v["at_ms"].as_i64().unwrap();
                    if at > opened + 100 {
                        lags.push((v["seq"].as_i64().unwrap(), chaosbot::run::now_ms() - at));
                    }
                }
                (lags, false)
            }));
        }
        for (i, r) in readers.into_iter().enumerate() {
            let (lags, done) = r.await.unwrap();
            assert!(done, "server {i}: the stream saw the verdict");
            assert!(
                lags.len() >= 5,
                "server {i}: entries while it ran: {lags:?}"
            );
            let slowest = lags.iter().map(|(_, l)| *l).max().unwrap_or(0);
            assert!(
                slowest < 400,
                "server {i}: entries came late, as if swept: {lags:?}"
            );
        }
        for s in servers {
            s.shutdown("test over").await;
        }
    })
    .await;
}

/// A made-up journal as a run going on now, holding target `api` (a run holding `api`
/// keeps it queued).
async fn put_journal(app: &TestApp, id: &str, entries: &[chaosbot::run::Entry]) {
    let store = app.store().await;
    store_journal(&store, app.cfg.database_url(), id, entries, &["api"]).await;
}

/// The inline chart of a page: the `<svg …>…</svg>` inside `id="chart"`.
fn inline_svg(page: &str) -> &str {
    let start = page
        .find("<div class=\"chart\" id=\"chart\">")
        .expect("the page has a chart");
    let svg = &page[start..];
    &svg[..svg.find("</svg>").expect("the chart ends") + 6]
}

/// A run still queued, one that ended with no samples, one whose probe failed every sample
/// and a ten-hour run: each page answers with a drawn chart, the empty ones saying why, the
/// ten-hour one bucketed over the whole run; a second load (kept journal) says the same.
#[tokio::test]
async fn pages_of_empty_failed_and_ten_hour_runs_draw_their_chart() {
    use support::journal::{Shape, finished_run};
    let app = TestApp::new(SECRET).await;
    let shape = |seconds, all_fail| Shape {
        seconds,
        samples_per_second: 1,
        with_load: false,
        all_fail,
    };
    // A run another replica executes holds `api`, before this server starts: the runs below
    // stay queued behind it (they have no experiment this server could run).
    let (_, queued) = finished_run("r-badholder", &shape(60, false));
    put_journal(&app, "r-badholder", &queued[..1]).await;
    let held = app
        .store()
        .await
        .claim_run(
            "r-badholder",
            "replica-elsewhere",
            Duration::from_secs(600),
            10,
        )
        .await
        .unwrap();
    assert!(held.is_some());
    // Queued: its submission only.
    put_journal(&app, "r-badqueued", &queued[..1]).await;
    // Ended before any sample: a queued run aborted.
    put_journal(&app, "r-badnosamp", &queued[..1]).await;
    app.store()
        .await
        .request_abort(AbortScope::Run("r-badnosamp".into()), "bob", "not today")
        .await
        .unwrap();
    let (_, failing) = finished_run("r-badallfail", &shape(120, true));
    let samples = failing
        .iter()
        .filter(|e| matches!(e.event, Event::ProbeSample { .. }))
        .count();
    put_journal(&app, "r-badallfail", &failing).await;
    let (_, long) = finished_run("r-badtenhrs", &shape(36_000, false));
    put_journal(&app, "r-badtenhrs", &long).await;
    let rig = Rig::serve(app, None).await;

    for round in 0..2 {
        let page = |id: &'static str| {
            let path = rig.run_path(id);
            let addr = rig.addr();
            async move {
                let p = web::get(addr, &path).await;
                assert_eq!(p.status, 200, "{id}: {}", p.body);
                assert!(
                    p.body.ends_with("</html>\n"),
                    "{id}: the whole page came (round {round})"
                );
                p.body
            }
        };
        let q = page("r-badqueued").await;
        assert!(
            q.contains("id=\"chart-empty\">No samples yet: the run is still queued"),
            "{q}"
        );
        assert!(
            inline_svg(&q).contains("still queued"),
            "the picture says why too"
        );

        let n = page("r-badnosamp").await;
        assert!(n.contains(">ABORTED<"), "{n}");
        assert!(
            n.contains("No probe samples: the run recorded none before it ended"),
            "{n}"
        );
        inline_svg(&n);

        let f = page("r-badallfail").await;
        assert!(
            !f.contains("id=\"chart-empty\""),
            "a failing probe is something to draw"
        );
        assert!(
            f.contains(&format!("<td>{samples} of {samples}</td>")),
            "every sample failed: {f}"
        );
        inline_svg(&f);

        let t = page("r-badtenhrs").await;
        let svg = inline_svg(&t);
        // Still going, so some seconds past ten hours by now (more on a busy machine): wide
        // buckets (at most about 600 along the axis) over the whole run.
        assert!(
            (svg.contains("10:00:") || svg.contains("10:01:"))
                && (svg.contains("per 1 min bucket") || svg.contains("per 2 min bucket")),
            "the whole run, in wide buckets: {}",
            &svg[..svg.len().min(3000)]
        );
    }
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn what_the_journal_says_is_escaped_on_the_page() {
    let rig = Rig::start(None).await;
    let store = rig.app.store().await;
    let id = "r-inject0001".to_string();
    let hostile = "<script>alert('title')</script>";
    store
        .create_run(
            NewRun {
                id: id.clone(),
                experiment: "x\"><img src=x onerror=alert(1)>".into(),
                title: hostile.into(),
                spec: serde_json::Value::Null,
                params: BTreeMap::from([("k".into(), "<b>v</b>".into())]),
                seed: 1,
                requested_by: "<i>mallory</i>".into(),
                source: RunSource::Terminal,
            },
            Event::Submitted {
                experiment: "x".into(),
                title: hostile.into(),
                requested_by: "<i>mallory</i>".into(),
                source: RunSource::Terminal,
                params: BTreeMap::new(),
                seed: 1,
                targets: vec!["nothing-declared".into()],
            },
        )
        .await
        .unwrap();
    store
        .request_abort(
            AbortScope::Run(id.clone()),
            "<u>mallory</u>",
            "</li><script>alert('reason')</script>",
        )
        .await
        .unwrap();
    let page = web::get(rig.addr(), &rig.run_path(&id)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for raw in [
        "<script>alert",
        "<img src=x",
        "<b>v</b>",
        "<i>mallory</i>",
        "<u>mallory</u>",
        "</li><script>",
    ] {
        assert!(
            !page.body.contains(raw),
            "{raw:?} reached the page unescaped"
        );
    }
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;")
    );
    // The only script is the page's own.
    assert_eq!(page.body.matches("<script>").count(), 1);
    // The queued run that never ran: the chart's empty state says why.
    assert!(page.body.contains("id=\"chart-empty\""), "{}", page.body);
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn the_parent_message_links_to_the_live_page() {
    let rig = Rig::start(None).await;
    let id = rig.start_run("1s").await;
    let calls = rig
        .app
        .fake
        .wait_for(
            |c| {
                c.iter()
                    .any(|c| c.method == "chat.postMessage" && c.body.get("thread_ts").is_none())
            },
            Duration::from_secs(20),
        )
        .await;
    let parent = calls
        .iter()
        .find(|c| c.method == "chat.postMessage" && c.body.get("thread_ts").is_none())
        .unwrap();
    let blocks = parent.body["blocks"].to_string();
    let prefix = format!("<http://{}/runs/{id}?exp=", rig.addr());
    let at = blocks
        .find(&prefix)
        .unwrap_or_else(|| panic!("no page link: {blocks}"));
    let link = &blocks[at + 1..];
    let link = &link[..link.find('|').unwrap()];
    // Slack reads `&amp;` as `&`.
    let path = link
        .replace("&amp;", "&")
        .trim_start_matches(&format!("http://{}", rig.addr()))
        .to_string();
    // Valid for link_ttl (7 days) from the submission.
    let exp: i64 = path[path.find("exp=").unwrap() + 4..path.find('&').unwrap()]
        .parse()
        .unwrap();
    let week = 7 * 24 * 3600;
    assert!((exp - now_unix() - week).abs() < 120, "{exp}");
    let page = web::get(rig.addr(), &path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&id));
    rig.server.engine.wait(&id).await.unwrap();

    // `/chaos summary <run>` hands out a fresh link, valid for link_ttl from now.
    let answer = rig
        .app
        .slash(rig.addr(), ALICE, &format!("summary {id}"))
        .await
        .to_string();
    let at = answer
        .find(&prefix)
        .unwrap_or_else(|| panic!("no page link in the summary: {answer}"));
    let link = &answer[at + 1..];
    let path = link[..link.find('|').unwrap()]
        .replace("&amp;", "&")
        .trim_start_matches(&format!("http://{}", rig.addr()))
        .to_string();
    assert_eq!(web::get(rig.addr(), &path).await.status, 200);
    rig.server.shutdown("test over").await;
}

#[tokio::test]
async fn in_chromium_the_page_follows_the_run_and_bad_links_are_refused() {
    if !web::browser_available() {
        eprintln!(
            "SKIPPED: chromium and chromedriver are not installed (CI installs them: apt-get install chromium chromium-driver)"
        );
        return;
    }
    let rig = Rig::start(None).await;
    let id = rig.start_run("6s").await;
    let url = format!("http://{}{}", rig.addr(), rig.run_path(&id));
    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert!(
        browser
            .title()
            .await
            .starts_with("The API stays fast with 30 ms of latency"),
        "the page's title is the run's"
    );
    let read = "var b = document.getElementById('run-body'); var c = document.getElementById('chart'); \
                return [b ? Number(b.dataset.seq) : -1, c ? c.innerHTML : '', \
                document.getElementById('live-status').textContent];";
    let first = browser.eval(read).await;
    let seq0 = first[0].as_i64().unwrap();
    let svg0 = first[1].as_str().unwrap().to_string();
    // The chart is redrawn in place (no reload) as samples land; bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut changed = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = browser.eval(read).await;
        let seq = now[0].as_i64().unwrap_or(-1);
        let svg = now[1].as_str().unwrap_or_default();
        if seq > seq0 && svg != svg0 && !svg.is_empty() {
            changed = Some((seq, now[2].clone()));
            break;
        }
    }
    let (seq, status) = changed.expect("the chart changed while the run went on");
    assert!(seq > seq0);
    assert_eq!(status, "live", "the page follows the event stream");
    // Still the page loaded first: the swap happened in place.
    assert_eq!(
        browser
            .eval("return performance.getEntriesByType('navigation').length;")
            .await,
        1
    );

    // The verdict arrives on the page by itself.
    rig.server.engine.wait(&id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut verdict = String::new();
    while Instant::now() < deadline {
        verdict = browser
            .eval("var v = document.getElementById('verdict'); return v ? v.textContent : '';")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string();
        if verdict == "HELD" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(verdict, "HELD");

    // An expired and a forged link: the refusal page, and nothing of the run.
    let expired = format!(
        "http://{}{}",
        rig.addr(),
        rig.links.run_path(&id, now_unix() - 1)
    );
    let forged = format!("http://{}{}", rig.addr(), forge(&rig.run_path(&id)));
    for (link, says) in [(expired, "expired"), (forged, "invalid")] {
        browser.goto(&link).await;
        assert!(browser.title().await.starts_with("Link refused"));
        let text = browser
            .eval("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.contains(says), "{text}");
        assert!(!text.contains("30 ms of latency"));
    }
    browser.quit().await;
    rig.server.shutdown("test over").await;
}
