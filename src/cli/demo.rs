//! `chaosbot demo`: the whole loop with no setup. A built-in HTTP service, the fault proxy in
//! front of it, steady client traffic through the proxy, and `experiments/demo-latency.yaml`,
//! which injects latency and breaks a latency hypothesis on purpose.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::run::{current_user, run_in_foreground};
use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, open_store};
use crate::config::{Config, HttpEndpoint, ProxyTarget};
use crate::engine::SubmitRequest;
use crate::faults::TargetRegistry;
use crate::faults::proxy::{Proxy, ProxySettings};
use crate::run::{Event, now_ms};
use crate::run::{RollbackOutcome, Verdict};

const DEMO_EXPERIMENT: &str = include_str!("../../experiments/demo-latency.yaml");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Override a demo parameter, e.g. --set latency=500ms or --set duration=5s.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Write the run's journal as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
}

pub async fn demo(global: &GlobalArgs, args: DemoArgs) -> u8 {
    match demo_inner(global, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

async fn demo_inner(global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    let service = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a loopback port for the demo service")?;
    let service_addr = service.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(serve_demo_api(service, stop.clone()));

    let mut cfg = Config {
        database_url: global
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok()),
        ..Config::default()
    };
    if let Some(p) = std::env::var_os("CHAOSBOT_AGENT_SOCKET").filter(|p| !p.is_empty()) {
        cfg.agent.socket = Some(p.into());
    }
    // The proxy binds port 0 (in this process, or on the local agent, which says what it got).
    let mut demo_proxy = ProxyTarget {
        name: "demo-api".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: service_addr.to_string(),
        description: "the demo service, behind the fault proxy".into(),
        agent: None,
    };
    let (proxy, proxy_addr, router) = match crate::engine::agents::for_binary(&Arc::new(
        cfg.clone(),
    ))? {
        None => {
            let proxy = Proxy::start(ProxySettings {
                name: demo_proxy.name.clone(),
                listen: demo_proxy.listen,
                upstream: demo_proxy.upstream.clone(),
            })
            .await
            .context("cannot start the demo proxy")?;
            let addr = proxy.listen_addr();
            (Some(proxy), addr, None)
        }
        Some(_) => {
            // The local agent is shared and keeps what it was told: a name of this demo's own
            // (its service port is new each time), declared exactly as every later request
            // declares it (port 0).
            demo_proxy.name = format!("demo-api-{}", service_addr.port());
            let mut probe_cfg = cfg.clone();
            probe_cfg.targets.proxy.push(demo_proxy.clone());
            let router = crate::engine::agents::AgentRouter::from_config(Arc::new(probe_cfg))?;
            let views = router
                .proxies_up(std::slice::from_ref(&demo_proxy.name), false)
                .await
                .context("cannot start the demo proxy on the local agent")?;
            let listen = views
                .iter()
                .find(|v| v.name == demo_proxy.name)
                .map(|v| v.listen.clone())
                .context("the local agent did not say where the demo proxy listens")?;
            let addr: SocketAddr = listen.parse().with_context(|| {
                format!("the local agent says the demo proxy listens at `{listen}`, which is not host:port")
            })?;
            // Its declarations keep port 0, as the agent first heard them.
            (None, addr, Some(Arc::new(router)))
        }
    };
    demo_proxy.listen = proxy_addr;
    let demo_target = demo_proxy.name.clone();
    cfg.targets.proxy.push(demo_proxy);
    cfg.targets.http.push(HttpEndpoint {
        name: "demo-http".into(),
        url: format!("http://{proxy_addr}"),
        description: "the demo service, reached through the proxy".into(),
        ..HttpEndpoint::default()
    });

    let mut overrides = Vec::new();
    for s in &args.set {
        match crate::spec::parse_override(s) {
            Ok(kv) => overrides.push(kv),
            Err(e) => {
                eprintln!("error: --set {s}: {e}");
                return Ok(EXIT_INVALID);
            }
        }
    }
    let exp = match crate::spec::parse_experiment(
        &DEMO_EXPERIMENT.replace("target: demo-api", &format!("target: {demo_target}")),
        "experiments/demo-latency.yaml",
        &cfg,
        &overrides,
    ) {
        Ok(e) => e,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(EXIT_INVALID);
        }
    };

    println!("chaosbot demo");
    println!("  demo service   http://{service_addr}");
    println!("  fault proxy    {proxy_addr} → {service_addr}  (target `{demo_target}`)");
    println!("  hypothesis     the API answers within 100 ms");
    println!(
        "  method         add {} of latency to responses for {}",
        exp.params.get("latency").map(String::as_str).unwrap_or("?"),
        exp.params
            .get("duration")
            .map(String::as_str)
            .unwrap_or("?")
    );
    println!("  store          {}\n", cfg.database_url());

    let store = match open_store(&cfg).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let targets = TargetRegistry::new(Arc::new(cfg.clone()));
    if let Some(proxy) = proxy {
        targets.adopt(proxy).await;
    }

    let traffic = tokio::spawn(drive_traffic(proxy_addr, stop.clone()));
    let outcome = run_in_foreground(
        &cfg,
        store.clone(),
        targets,
        &exp,
        SubmitRequest {
            requested_by: current_user(),
            source: "cli:demo".into(),
            seed: None,
        },
        (args.json.as_deref(), None),
        router,
    )
    .await;
    stop.cancel();
    let samples = traffic.await.unwrap_or_default();
    let run = match outcome {
        Ok(run) => run,
        Err(code) => return Ok(code),
    };

    // Client traffic by phase, split at the fault's injection and revert in the journal.
    let journal = store.journal(&run.id, 0).await.unwrap_or_default();
    let injected = journal
        .iter()
        .find(|e| matches!(e.event, Event::FaultInjected { .. }))
        .map(|e| e.at_ms);
    let reverted = journal
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::FaultReverted { .. }))
        .map(|e| e.at_ms);
    // The proxy stops with the run, so traffic after the verdict says nothing about it.
    let closed = journal
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::Verdict { .. }))
        .map(|e| e.at_ms)
        .unwrap_or(i64::MAX);
    if let (Some(i), Some(r)) = (injected, reverted) {
        println!("Demo client traffic through the proxy (10 requests/s):");
        for (name, lo, hi) in [
            ("before", i64::MIN, i),
            ("during", i, r),
            ("after", r, closed),
        ] {
            let mut lat: Vec<f64> = samples
                .iter()
                .filter(|(t, _, _)| *t >= lo && *t < hi)
                .map(|(_, l, _)| *l)
                .collect();
            lat.sort_by(f64::total_cmp);
            let failed = samples
                .iter()
                .filter(|(t, _, ok)| *t >= lo && *t < hi && !ok)
                .count();
            if let Some(median) = lat.get(lat.len() / 2) {
                println!(
                    "  {name:<7} {:>4} requests, median {median:>7.1} ms, {failed} failed",
                    lat.len()
                );
            }
        }
        println!();
    }

    let as_designed =
        run.verdict == Some(Verdict::Deviated) && run.rollback == Some(RollbackOutcome::Reverted);
    if as_designed {
        println!(
            "The hypothesis broke as designed and the revert was verified. Next: `chaosbot history`, `chaosbot show {}`.",
            run.id
        );
        Ok(0)
    } else {
        println!(
            "The demo expected `deviated` with a verified revert, and got {} / {}.",
            run.verdict.map(|v| v.to_string()).unwrap_or_default(),
            run.rollback.map(|v| v.to_string()).unwrap_or_default()
        );
        Ok(EXIT_FAILED)
    }
}

/// The demo API: answers `ok` to anything, at once.
async fn serve_demo_api(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Steady client traffic through the proxy; returns (unix ms, latency ms, ok) per request.
async fn drive_traffic(proxy: SocketAddr, stop: CancellationToken) -> Vec<(i64, f64, bool)> {
    let url = format!("http://{proxy}/");
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // Bounded: at most ten minutes of traffic whatever happens.
    for _ in 0..6000 {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = now_ms();
        let started = Instant::now();
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            crate::probes::http::request(&url, "GET"),
        )
        .await
        .is_ok_and(|r| r.is_ok_and(|(status, _)| status == 200));
        out.push((t, started.elapsed().as_secs_f64() * 1000.0, ok));
    }
    out
}
