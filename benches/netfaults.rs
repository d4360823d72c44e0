//! Benchmark of host network faults (prints numbers; not a test).
//!
//! `cargo bench --bench netfaults` — needs root, `ip` and `nft` (it makes a network namespace
//! joined by a veth pair, as the agent tests do; without them it prints `SKIP:` and exits 0).
//! The agent runs inside; everything is measured across the link. Optional env:
//! - `TRIALS` (default 50): inject / revert pairs of a blackhole rule set, timed as the agent
//!   API requests (HTTPS round trip included).
//! - `PACKETS` (default 10000): UDP datagrams sent to an echo in the host under `loss` 10 %.
//! - `ECHOES` (default 1000): echoes, one every 5 ms, timed under `delay` 100 ms (the host's
//!   answers held by the agent's shaper) and without it (the floor of the measurement).
//!
//! Targets: inject and revert p99 ≤ 50 ms each (blackhole and delay rule sets); observed loss
//! within 1 point of 10 %; delay 100 ms: added delay error p99 ≤ 1 ms.

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

use netsite::{
    NetAction, NetScope, OTHER_PORT, UDP_PORT, chaosbot_tables, net_site, quantile_ms, scope,
    udp_echoes, udp_rtts_pipelined,
};

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
    let echoes = env_num("ECHOES", 1000);
    let Some(mut net) = net_site("max_loss_percent = 50").await else {
        return;
    };
    let mut to_controller = scope(None, "udp", "egress");
    to_controller.destinations = vec![net.site.host.controller_ip().to_string()];
    let delay_100 = NetAction::Delay {
        latency_ms: 100.0,
        jitter_ms: 0.0,
        correlation: 0.0,
    };
    let blackhole = (
        NetAction::Blackhole,
        scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
    );
    let shaped = (delay_100.clone(), to_controller.clone());
    for (kind, (action, s)) in [("blackhole", blackhole), ("delay", shaped)] {
        inject_revert(&mut net, kind, trials, action, s).await;
    }
    let to = net.addr(UDP_PORT);
    let gap = Duration::from_millis(5);
    let base = udp_rtts_pipelined(to, echoes, gap);
    let base_p50 = quantile_ms(&base, 0.5);
    let (fid, rid) = net
        .apply(delay_100, to_controller)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let (cpu_before, wall) = (agent_cpu(net.site.agent_pid()), Instant::now());
    let rtts = udp_rtts_pipelined(to, echoes, gap);
    let cpu = agent_cpu(net.site.agent_pid()) - cpu_before;
    let wall = wall.elapsed().as_secs_f64();
    net.revert(&fid, &rid).await;
    let error: Vec<Duration> = rtts
        .iter()
        .map(|r| Duration::from_secs_f64((r.as_secs_f64() * 1e3 - base_p50 - 100.0).abs() / 1e3))
        .collect();
    let floor: Vec<Duration> = base
        .iter()
        .map(|r| Duration::from_secs_f64((r.as_secs_f64() * 1e3 - base_p50).abs() / 1e3))
        .collect();
    let p99 = quantile_ms(&error, 0.99);
    println!(
        "delay 100 ms, {} of {echoes} echoes answered: added delay error p50 {:.3} ms, p99 {p99:.3} ms, max {:.3} ms (target p99 <= 1 ms: {}); without the fault rtt p50 {base_p50:.3} ms, spread p99 {:.3} ms",
        rtts.len(),
        quantile_ms(&error, 0.5),
        quantile_ms(&error, 1.0),
        if p99 <= 1.0 && rtts.len() == echoes as usize {
            "ok"
        } else {
            "MISSED"
        },
        quantile_ms(&floor, 0.99),
    );
    println!(
        "  agent CPU while shaping: {:.0} % of one core ({cpu:.2} s over {wall:.1} s)",
        100.0 * cpu / wall
    );
    let (fid, rid) = net
        .apply(
            NetAction::Loss {
                percent: 10.0,
                correlation: 0.0,
            },
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

/// CPU seconds (user and system) process `pid` has used.
fn agent_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) end with `)`: utime is the 14th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Times `trials` inject / revert pairs of one rule set and prints their percentiles.
async fn inject_revert(
    net: &mut netsite::NetSite,
    kind: &str,
    trials: u32,
    action: NetAction,
    s: NetScope,
) {
    let (mut inject, mut revert) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let t = Instant::now();
        let (fid, rid) = net
            .apply(action.clone(), s.clone())
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
    println!("{kind}, {trials} inject/revert pairs (agent API, HTTPS):");
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
}
