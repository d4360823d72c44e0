//! Benchmark of an agent on its own host (prints a table; not a test).
//!
//! `cargo bench --bench agent` — needs root and `ip` (it makes a network namespace joined by a
//! veth pair, as the agent tests do; without them it prints `SKIP:` and exits 0). The agent
//! runs inside with TLS and a secret; everything is measured across the link. Optional env:
//! - `FAULT_TRIALS` (default 200): fault add / remove pairs (a latency toxic on a proxy target).
//! - `KILL_TRIALS` (default 100): controllers killed with a fault held. The controller here is a
//!   tiny client process (this binary, re-executed) that applies a pause fault under a 2 s lease,
//!   renews it every 500 ms, and is SIGKILLed at a varying phase of its renewals; measured from
//!   the kill to the agent no longer listing the fault and to the paused process running again.
//! - `RESTARTS` (default 5), `RATE` (default 200): `chaosbot run` controllers holding a latency
//!   toxic on the proxy target, SIGKILLed and replaced (the next one recovers the killed run)
//!   while a client sends `RATE` req/s through the agent's proxy, each on a new connection.
//!
//! Targets: add/remove p99 ≤ 5 ms; kill → gone p99 ≤ TTL + 1 s (TTL 2 s here: 3 s); no failed
//! request during the restarts.

#[path = "../tests/agent/hosts/api.rs"]
mod api;
#[path = "../tests/agent/hosts/certs.rs"]
mod certs;
#[path = "../tests/agent/hosts/fixture.rs"]
mod fixture;
#[path = "../tests/agent/hosts/netns.rs"]
mod netns;
#[path = "../tests/agent/hosts/traffic.rs"]
mod traffic;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{Apply, Renew, Revert};
use chaosbot::faults::process::process_state;
use chaosbot::spec::model::{Direction, FaultSpec, FaultStep, ProcessAction, ToxicKind};
use hdrhistogram::Histogram;

use api::AgentApi;
use fixture::{Site, SiteOptions, experiment_yaml};
use traffic::Traffic;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LEASE_MS: u64 = 2_000;
const RENEW_MS: u64 = 500;
/// Parallel kill lanes, each on its own process target (`worker-1` ..).
const LANES: usize = 4;
const CHILD_ENV: &str = "CHAOSBOT_AGENT_BENCH_CHILD";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn step(name: &str, target: &str, fault: FaultSpec) -> FaultStep {
    FaultStep {
        name: name.into(),
        target: target.into(),
        duration: Duration::from_secs(60),
        fault,
    }
}

fn apply(run_id: &str, fault_id: &str, step: FaultStep, lease_ms: u64) -> Apply {
    Apply {
        run_id: run_id.into(),
        epoch: 1,
        fault_id: fault_id.into(),
        step,
        seed: 1,
        ttl_ms: 60_000,
        lease_ms,
        declare: None,
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(what: &str, h: &Histogram<u64>) {
    println!(
        "{what:<58} {:>9.2} {:>9.2} {:>9.2} {:>5}",
        ms(h, 0.5),
        ms(h, 0.99),
        h.max() as f64 / 1000.0,
        h.len()
    );
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        std::process::exit(match child_controller() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench child: {e}");
                1
            }
        });
    }
    if let Some(why) = netns::unsupported() {
        eprintln!("SKIP: {why}");
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench()) {
        eprintln!("agent bench failed: {e}");
        std::process::exit(1);
    }
}

async fn bench() -> Res<()> {
    let mut site = Site::new(SiteOptions {
        extra_workers: LANES,
        lease_ttl: "2s",
        renew_every: "500ms",
    })?;
    site.start_agent().await;
    let fault_trials = env_usize("FAULT_TRIALS", 200);
    let kill_trials = env_usize("KILL_TRIALS", 100);
    let restarts = env_usize("RESTARTS", 5);
    let rate = env_usize("RATE", 200) as u32;

    println!(
        "agent on {} (network namespace {}, veth link), TLS + secret; lease TTL 2 s, renew 500 ms",
        site.host.ip(),
        site.host.name
    );
    // Other work on the machine skews the tails: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "load average at start: {} ({cpus} CPUs)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<58} {:>9} {:>9} {:>9} {:>5}",
        "", "p50 ms", "p99 ms", "max ms", "n"
    );
    // The agent fsyncs its journal on both paths: the disk's own sync time bounds the tails.
    row(
        "context: fdatasync of 100 bytes in the agent's state dir",
        &fsync_times(&site, 200)?,
    );
    let (add, remove) = add_remove(&site, fault_trials).await?;
    row("fault add (latency toxic on proxy target `api`)", &add);
    row("fault remove (revert)", &remove);
    let (listed, effect) = kill_trials_run(&site, kill_trials).await?;
    row(
        "controller SIGKILLed -> agent no longer lists the fault",
        &listed,
    );
    row("controller SIGKILLed -> paused process runs again", &effect);
    let (sent, failed, errors, took) = restart_under_traffic(&site, restarts, rate).await?;
    println!(
        "proxy traffic during {restarts} control-plane restarts at {rate} req/s: {sent} requests in {:.1} s, {failed} failed{}",
        took.as_secs_f64(),
        if errors.is_empty() {
            String::new()
        } else {
            format!(" (first: {})", errors.join("; "))
        }
    );
    println!("targets: add/remove p99 <= 5 ms; kill -> gone p99 <= TTL + 1 s = 3000 ms; 0 failed");
    Ok(())
}

/// Fault add and remove across the link, one keep-alive TLS connection.
async fn add_remove(site: &Site, trials: usize) -> Res<(Histogram<u64>, Histogram<u64>)> {
    let mut add = Histogram::<u64>::new(3)?;
    let mut remove = Histogram::<u64>::new(3)?;
    let latency = FaultSpec::Network {
        toxic: ToxicKind::Latency {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
        },
        direction: Direction::Downstream,
        toxicity: 1.0,
    };
    let run_id = "r-bench-add";
    // Warm-up: the connection, the TLS session, the proxy.
    for i in 0..(trials + 10) {
        let id = format!("f-add-{i}");
        let t = Instant::now();
        site.api
            .apply(&apply(
                run_id,
                &id,
                step("slow-api", "api", latency.clone()),
                10_000,
            ))
            .await
            .map_err(|e| format!("apply {id}: {e:?}"))?;
        let added = t.elapsed();
        let t = Instant::now();
        site.api
            .revert(
                &id,
                &Revert {
                    run_id: run_id.into(),
                    epoch: 1,
                },
            )
            .await
            .map_err(|e| format!("revert {id}: {e:?}"))?;
        let removed = t.elapsed();
        if i >= 10 {
            add.record(added.as_micros() as u64)?;
            remove.record(removed.as_micros() as u64)?;
        }
    }
    Ok((add, remove))
}

/// Times `n` appends + fdatasync in the agent's state directory (what its journal does).
fn fsync_times(site: &Site, n: usize) -> Res<Histogram<u64>> {
    use std::io::Write;
    let mut h = Histogram::<u64>::new(3)?;
    let path = site.state_dir.join("bench-fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&[b'x'; 100])?;
        file.sync_data()?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(h)
}

/// The kill trials, `LANES` at a time on separate process targets.
async fn kill_trials_run(site: &Site, trials: usize) -> Res<(Histogram<u64>, Histogram<u64>)> {
    let mut listed = Histogram::<u64>::new(3)?;
    let mut effect = Histogram::<u64>::new(3)?;
    let mut done = 0;
    while done < trials {
        let lanes = LANES.min(trials - done);
        let mut set = tokio::task::JoinSet::new();
        for lane in 0..lanes {
            let trial = done + lane;
            let pid = site.extra[lane].pid();
            let api = site.api.with_secret(Some(&site.tls.secret));
            let (ca, secret) = (site.tls.ca_file.clone(), site.tls.secret.clone());
            set.spawn(async move { kill_trial(trial, lane + 1, pid, api, ca, secret).await });
        }
        while let Some(r) = set.join_next().await {
            let (l, e) = r.map_err(|e| format!("kill trial task: {e}"))??;
            listed.record(l.as_micros() as u64)?;
            effect.record(e.as_micros() as u64)?;
        }
        done += lanes;
    }
    Ok((listed, effect))
}

/// One controller process applies a pause on `worker-<lane>`, then is SIGKILLed: the time
/// until the agent no longer lists the fault, and until the process runs again.
async fn kill_trial(
    trial: usize,
    lane: usize,
    pid: u32,
    api: AgentApi,
    ca: std::path::PathBuf,
    secret: String,
) -> Res<(Duration, Duration)> {
    let fault_id = format!("f-kill-{trial}");
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "1")
        .env("BENCH_AGENT", &api.base)
        .env("BENCH_CA", &ca)
        .env("BENCH_SECRET", &secret)
        .env("BENCH_TARGET", format!("worker-{lane}"))
        .env("BENCH_FAULT", &fault_id)
        .env("BENCH_RUN", format!("r-kill-{trial}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("child stdout")?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| "the bench controller did not apply within 10 s")??;
    if line.trim() != "applied" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("bench controller: {line}").into());
    }
    if process_state(pid as i32) != Some('T') {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("worker-{lane} is not paused after apply").into());
    }
    // Kill at a varying phase of the 500 ms renewal cycle.
    let phase = Duration::from_millis(((trial * 137) % RENEW_MS as usize) as u64);
    tokio::time::sleep(Duration::from_millis(RENEW_MS) + phase).await;
    child.kill()?;
    let killed = Instant::now();
    let _ = child.wait();
    let (mut listed, mut effect) = (None, None);
    let mut polls = 0u32;
    while killed.elapsed() < Duration::from_millis(LEASE_MS * 3)
        && (listed.is_none() || effect.is_none())
    {
        if effect.is_none() && process_state(pid as i32) != Some('T') {
            effect = Some(killed.elapsed());
        }
        if listed.is_none() && polls.is_multiple_of(5) {
            let faults = api
                .faults()
                .await
                .map_err(|e| format!("fault list: {e:?}"))?;
            if !faults.faults.iter().any(|f| f.fault_id == fault_id) {
                listed = Some(killed.elapsed());
            }
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    match (listed, effect) {
        (Some(l), Some(e)) => Ok((l, e)),
        _ => Err(format!(
            "trial {trial}: the fault outlived its lease by far (listed gone {listed:?}, process resumed {effect:?})"
        )
        .into()),
    }
}

/// The re-executed bench binary: a minimal controller that applies one pause and renews it.
fn child_controller() -> Res<()> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let (base, ca, secret) = (var("BENCH_AGENT")?, var("BENCH_CA")?, var("BENCH_SECRET")?);
    let (target, fault_id, run_id) = (var("BENCH_TARGET")?, var("BENCH_FAULT")?, var("BENCH_RUN")?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let api = AgentApi::new(&base, std::path::Path::new(&ca), Some(&secret));
        let pause = FaultSpec::Process {
            action: ProcessAction::Pause,
        };
        api.apply(&apply(
            &run_id,
            &fault_id,
            step("freeze", &target, pause),
            LEASE_MS,
        ))
        .await
        .map_err(|e| format!("apply: {e:?}"))?;
        println!("applied");
        let start = Instant::now();
        // Bounded: a parent that never kills us still gets its worker back.
        while start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(RENEW_MS)).await;
            let _ = api
                .renew(&Renew {
                    run_id: run_id.clone(),
                    epoch: 1,
                    fault_ids: vec![fault_id.clone()],
                    lease_ms: LEASE_MS,
                })
                .await;
        }
        Ok(())
    })
}

/// `restarts` controllers, each killed while it holds a latency toxic, the last one left to
/// finish, under `rate` req/s through the proxy.
async fn restart_under_traffic(
    site: &Site,
    restarts: usize,
    rate: u32,
) -> Res<(u64, u64, Vec<String>, Duration)> {
    let long = site.experiment(
        "bench-latency-long",
        &experiment_yaml(
            "bench-latency-long",
            "  - {name: slow-api, target: api, fault: latency, direction: downstream, latency: 1ms, duration: 2m}\n",
        ),
    );
    let short = site.experiment(
        "bench-latency-short",
        &experiment_yaml(
            "bench-latency-short",
            "  - {name: slow-api, target: api, fault: latency, direction: downstream, latency: 1ms, duration: 1s}\n",
        ),
    );
    let started = Instant::now();
    let traffic = Traffic::start(site.proxy_url(), rate, Duration::from_secs(300));
    let mut killed_runs: Vec<String> = Vec::new();
    for k in 0..restarts {
        let mut controller = site.start_run(&long);
        // Held once the agent lists a fault of a run not killed yet: this controller's (the
        // killed run's fault goes when this one recovers it, or when its lease lapses).
        let deadline = Instant::now() + Duration::from_secs(30);
        let run_id = loop {
            let faults = site.api.faults().await.map_err(|e| format!("{e:?}"))?;
            if let Some(f) = faults
                .faults
                .iter()
                .find(|f| !killed_runs.contains(&f.run_id))
            {
                break f.run_id.clone();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "restart {k}: the controller put no fault in place within 30 s:\n{}",
                    controller.log()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        controller.kill9();
        killed_runs.push(run_id);
    }
    let mut last = site.start_run(&short);
    let code = tokio::task::spawn_blocking(move || {
        let code = last.wait_exit(Duration::from_secs(60));
        (code, last.log())
    })
    .await?;
    if code.0 != Ok(Some(0)) {
        return Err(format!(
            "the last controller did not finish cleanly: {:?}\n{}",
            code.0, code.1
        )
        .into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failed, errors) = traffic.finish().await;
    Ok((sent, failed, errors, started.elapsed()))
}
