//! Benchmark of host network faults (prints numbers; not a test).
//!
//! `cargo bench --bench netfaults` — needs root, `ip` and `nft` (it makes a network namespace
//! joined by a veth pair, as the agent tests do; without them it prints `SKIP:` and exits 0).
//! The agent runs inside; everything is measured across the link. Optional env:
//! - `TRIALS` (default 50): inject / revert pairs of a blackhole rule set, timed as the agent
//!   API requests (HTTPS round trip included).
//! - `PACKETS` (default 10000): UDP datagrams sent to an echo in the host under `loss` 10 %.
//!
//! Targets: inject and revert p99 ≤ 50 ms each; observed loss within 1 point of 10 %.

#[path = "../tests/agent/hosts/api.rs"]
mod api;
#[path = "../tests/agent/hosts/certs.rs"]
mod certs;
#[path = "../tests/agent/hosts/fixture.rs"]
mod fixture;
#[path = "../tests/agent/hosts/netns.rs"]
mod netns;
#[path = "../tests/agent/hosts/netsite.rs"]
mod netsite;

use std::time::{Duration, Instant};

use netsite::{NetAction, OTHER_PORT, UDP_PORT, chaosbot_tables, net_site, scope, udp_echoes};

fn env_num(key: &str, default: u32) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials = env_num("TRIALS", 50);
    let packets = env_num("PACKETS", 10_000);
    let Some(mut net) = net_site("max_loss_percent = 50").await else {
        return;
    };
    let (mut inject, mut revert) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let t = Instant::now();
        let (fid, rid) = net
            .apply(
                NetAction::Blackhole,
                scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
            )
            .await
            .unwrap_or_else(|e| panic!("apply: {e}"));
        inject.push(t.elapsed());
        let t = Instant::now();
        net.revert(&fid, &rid).await;
        revert.push(t.elapsed());
    }
    assert!(chaosbot_tables(&net.site).is_empty());
    inject.sort();
    revert.sort();
    println!("host network faults, {trials} inject/revert pairs (agent API, HTTPS):");
    for (name, v) in [("inject", &inject), ("revert", &revert)] {
        let p99 = percentile(v, 0.99);
        println!(
            "  {name:6}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (target p99 <= 50 ms: {})",
            percentile(v, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            percentile(v, 1.0).as_secs_f64() * 1e3,
            if p99 <= Duration::from_millis(50) {
                "ok"
            } else {
                "MISSED"
            }
        );
    }
    let to = net.addr(UDP_PORT);
    let (fid, rid) = net
        .apply(
            NetAction::Loss { percent: 10.0 },
            scope(Some(&UDP_PORT.to_string()), "udp", "ingress"),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let got = udp_echoes(to, packets);
    net.revert(&fid, &rid).await;
    let loss = 100.0 * f64::from(packets - got) / f64::from(packets);
    println!(
        "loss 10 %: observed {loss:.2} % over {packets} datagrams (target within 1 point: {})",
        if (loss - 10.0).abs() <= 1.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
}
