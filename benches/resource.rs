//! CPU and memory faults against stress-ng, measured the same way from /proc: the CPU time
//! (utime + stime deltas) and resident memory (VmRSS) actually produced, the error against what
//! was asked, and the time from "stop" to the load or memory being gone.
//!
//! Run by hand: `cargo bench --bench resource`. Without `stress-ng` on PATH its rows are skipped
//! with a notice. Targets: within 5% of the request, gone within 100 ms.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::Config;
use chaosbot::faults::resource::{MemoryAmount, ResourceFaults, ResourceKind};
use chaosbot::faults::{ActiveFault, FaultFamily, InjectContext, TargetRegistry};
use chaosbot::spec::model::{FaultSpec, FaultStep};

const WINDOW: Duration = Duration::from_secs(3);

fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// (comm, ppid, utime+stime ticks) from a /proc/.../stat file.
fn stat(path: &str) -> Option<(String, i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((comm, ppid, ticks))
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn own_threads_cpu(prefix: &str) -> f64 {
    let mut ticks = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let p = format!("{}/stat", e.path().display());
            if let Some((comm, _, t)) = stat(&p)
                && comm.starts_with(prefix)
            {
                ticks += t;
            }
        }
    }
    ticks as f64 / hz()
}

fn own_threads_alive(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    stat(&format!("{}/stat", e.path().display()))
                        .is_some_and(|(c, _, _)| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Pids of `root` and all its descendants.
fn tree(root: i32) -> Vec<i32> {
    let mut all: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((_, ppid, _)) = stat(&format!("/proc/{pid}/stat")) {
                all.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// CPU seconds of every live process in the tree (zombies included until reaped).
fn tree_cpu(root: i32) -> f64 {
    tree(root)
        .iter()
        .filter_map(|p| stat(&format!("/proc/{p}/stat")).map(|(_, _, t)| t))
        .sum::<u64>() as f64
        / hz()
}

fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn tree_rss(root: i32) -> f64 {
    tree(root).iter().map(|p| rss_mib(&p.to_string())).sum()
}

/// Polls `f` every millisecond until it is true (bounded); the time it took.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

struct Row {
    tool: &'static str,
    case: String,
    requested: f64,
    produced: f64,
    unit: &'static str,
    gone_ms: Option<f64>,
}

impl Row {
    fn print(&self) {
        let err = 100.0 * (self.produced - self.requested) / self.requested;
        let gone = self
            .gone_ms
            .map(|m| format!("{m:8.1}"))
            .unwrap_or_else(|| "   >5000".into());
        println!(
            "{:<10} {:<22} {:>10.2} {:>10.2} {:<5} {:>+7.1}% {} ms",
            self.tool, self.case, self.requested, self.produced, self.unit, err, gone
        );
    }
}

fn step(stress: ResourceKind) -> FaultStep {
    FaultStep {
        name: "bench".into(),
        target: "local".into(),
        duration: Duration::from_secs(60),
        fault: FaultSpec::Resource { stress },
    }
}

async fn inject(targets: &TargetRegistry, stress: ResourceKind) -> Box<dyn ActiveFault> {
    let s = step(stress);
    let ctx = InjectContext {
        targets,
        run_id: "r-bench",
        seed: 1,
        deadline: Instant::now() + Duration::from_secs(60),
        events: tokio::sync::mpsc::unbounded_channel().0,
    };
    let prepared = match ResourceFaults.prepare(&s, &ctx).await {
        Ok(p) => p,
        Err(e) => panic!("prepare: {e}"),
    };
    match ResourceFaults.inject(&s, &ctx, &prepared).await {
        Ok(f) => f,
        Err(e) => panic!("inject: {e}"),
    }
}

async fn chaosbot_cpu(targets: &TargetRegistry, workers: u32, percent: f64) -> Row {
    let fault = inject(targets, ResourceKind::Cpu { workers, percent }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c0 = own_threads_cpu("chaosbot-cpu");
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let cores = (own_threads_cpu("chaosbot-cpu") - c0) / t0.elapsed().as_secs_f64();
    let start = Instant::now();
    if let Err(e) = fault.revert().await {
        panic!("revert: {e}");
    }
    // Gone = no worker thread left (revert joins them; checked from /proc to be sure).
    let gone = time_until(Duration::from_secs(5), || {
        own_threads_alive("chaosbot-cpu") == 0
    })
    .map(|_| start.elapsed().as_secs_f64() * 1000.0);
    Row {
        tool: "chaosbot",
        case: format!("cpu {workers}w x {percent}%"),
        requested: f64::from(workers) * percent / 100.0,
        produced: cores,
        unit: "cores",
        gone_ms: gone,
    }
}

async fn chaosbot_memory(targets: &TargetRegistry, mib: u64) -> Row {
    let before = rss_mib("self");
    let fault = inject(
        targets,
        ResourceKind::Memory {
            amount: MemoryAmount::Mib(mib),
        },
    )
    .await;
    let during = rss_mib("self") - before;
    let start = Instant::now();
    if let Err(e) = fault.revert().await {
        panic!("revert: {e}");
    }
    let gone = time_until(Duration::from_secs(5), || {
        rss_mib("self") - before < mib as f64 * 0.05
    })
    .map(|_| start.elapsed().as_secs_f64() * 1000.0);
    Row {
        tool: "chaosbot",
        case: format!("memory {mib} MiB"),
        requested: mib as f64,
        produced: during,
        unit: "MiB",
        gone_ms: gone,
    }
}

fn spawn_stress(args: &[String]) -> Option<Child> {
    Command::new("stress-ng")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Stops stress-ng the way an operator would (SIGINT to the parent) and times until nothing
/// of its tree is left running.
fn stop_stress(mut child: Child) -> Option<f64> {
    let pid = child.id() as i32;
    let start = Instant::now();
    // SAFETY: signalling the stress-ng process this bench started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let gone = time_until(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if gone.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    gone.map(|_| start.elapsed().as_secs_f64() * 1000.0)
}

fn stress_cpu(workers: u32, percent: f64) -> Option<Row> {
    let child = spawn_stress(&[
        "--cpu".into(),
        workers.to_string(),
        "--cpu-load".into(),
        format!("{percent}"),
        "--timeout".into(),
        "60s".into(),
    ])?;
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(500));
    let c0 = tree_cpu(pid);
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let cores = (tree_cpu(pid) - c0) / t0.elapsed().as_secs_f64();
    let gone = stop_stress(child);
    Some(Row {
        tool: "stress-ng",
        case: format!("cpu {workers}w x {percent}%"),
        requested: f64::from(workers) * percent / 100.0,
        produced: cores,
        unit: "cores",
        gone_ms: gone,
    })
}

fn stress_memory(mib: u64) -> Option<Row> {
    let child = spawn_stress(&[
        "--vm".into(),
        "1".into(),
        "--vm-bytes".into(),
        format!("{mib}M"),
        "--vm-keep".into(),
        "--timeout".into(),
        "60s".into(),
    ])?;
    let pid = child.id() as i32;
    // Baseline: the stress-ng processes themselves, before their buffer is touched, is small;
    // wait until the resident size settles.
    let mut last = 0.0;
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = tree_rss(pid);
        if (now - last).abs() < 1.0 && now > mib as f64 * 0.5 || settle.elapsed() > WINDOW * 2 {
            last = now;
            break;
        }
        last = now;
    }
    let gone = stop_stress(child);
    Some(Row {
        tool: "stress-ng",
        case: format!("memory {mib} MiB"),
        requested: mib as f64,
        produced: last,
        unit: "MiB",
        gone_ms: gone,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cfg = match Config::from_toml(
        "[[targets.host]]\nname = \"local\"\nmin_free_memory_mib = 256\nmax_cpu_workers = 8\n",
    ) {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    };
    let targets = TargetRegistry::new(Arc::new(cfg));
    let have_stress = Command::new("stress-ng")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_stress {
        println!(
            "notice: stress-ng not found on PATH; its rows are skipped (apt-get install -y stress-ng)"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "resource faults vs stress-ng ({cpus} CPUs, window {}s; produced = utime+stime / wall, VmRSS; gone = stop → load/memory gone)\n",
        WINDOW.as_secs()
    );
    // Other work on the machine takes CPU from both tools alike: say how busy it was.
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:<10} {:<22} {:>10} {:>10} {:<5} {:>8} {:>11}",
        "tool", "case", "requested", "produced", "unit", "error", "gone"
    );
    let mut rows = Vec::new();
    for (w, p) in [(1u32, 50.0), (2, 80.0)] {
        let r = chaosbot_cpu(&targets, w, p).await;
        r.print();
        rows.push(r);
        if have_stress
            && let Some(r) = tokio::task::spawn_blocking(move || stress_cpu(w, p))
                .await
                .ok()
                .flatten()
        {
            r.print();
            rows.push(r);
        }
    }
    for mib in [256u64, 512] {
        let r = chaosbot_memory(&targets, mib).await;
        r.print();
        rows.push(r);
        if have_stress
            && let Some(r) = tokio::task::spawn_blocking(move || stress_memory(mib))
                .await
                .ok()
                .flatten()
        {
            r.print();
            rows.push(r);
        }
    }
    println!("\ntargets: |error| <= 5%, gone <= 100 ms");
    for r in rows.iter().filter(|r| r.tool == "chaosbot") {
        let err = 100.0 * (r.produced - r.requested) / r.requested;
        let ok = err.abs() <= 5.0 && r.gone_ms.is_some_and(|g| g <= 100.0);
        println!(
            "  chaosbot {:<22} {}",
            r.case,
            if ok { "ok" } else { "MISSED" }
        );
    }
}
