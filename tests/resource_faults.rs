//! Resource faults measured from /proc on this very process (the engine runs in the test):
//! CPU time of the workers, resident memory, real files in a temporary directory; plus the
//! guard-rail refusals and the spec checks of the new kinds.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaosbot::config::Config;
use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::resource::{DiskAmount, MemoryAmount, ResourceFaults, ResourceKind};
use chaosbot::faults::{FaultFamily, InjectContext, TargetRegistry};
use chaosbot::run::{RollbackOutcome, Verdict};
use chaosbot::spec::model::{FaultSpec, FaultStep, Step};
use chaosbot::store::{DynStore, FaultRecord};
use support::*;

struct Rig {
    engine: Arc<Engine>,
    store: DynStore,
    targets: TargetRegistry,
    cfg: Config,
    scratch: PathBuf,
    _dir: tempfile::TempDir,
}

/// Targets: host `local` (max 2 workers, at most 1024 MiB, keep 256 MiB free), host `tight`
/// (keeps more free than any machine has), disk `scratch` (a temp dir, up to 99% full, 50 MiB/s)
/// and disk `tiny` (may not fill past 0.001%).
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let cfg = Config::from_toml(&format!(
        r#"
[guard_rails]
max_run_duration = "2m"

[[targets.host]]
name = "local"
min_free_memory_mib = 256
max_memory_mib = 1024
max_cpu_workers = 2

[[targets.host]]
name = "tight"
min_free_memory_mib = 100000000

[[targets.disk]]
name = "scratch"
path = "{}"
max_fill_percent = 99.9
max_io_mib_per_s = 50

[[targets.disk]]
name = "tiny"
path = "{}"
max_fill_percent = 0.001
"#,
        scratch.display(),
        scratch.display()
    ))
    .unwrap();
    cfg.validate().unwrap();
    let shared = Arc::new(cfg.clone());
    let store = sqlite_store(dir.path()).await;
    let (engine, targets) = started_engine(shared.clone(), store.clone()).await;
    Rig {
        engine,
        store,
        targets,
        cfg,
        scratch,
        _dir: dir,
    }
}

fn resource_step(name: &str, target: &str, stress: ResourceKind, ms: u64) -> Step {
    Step::Fault(FaultStep {
        name: name.into(),
        target: target.into(),
        duration: Duration::from_millis(ms),
        fault: FaultSpec::Resource { stress },
    })
}

async fn submit(rig: &Rig, step: Step) -> String {
    rig.engine
        .submit(&experiment(vec![], vec![step], vec![]), test_request())
        .await
        .unwrap()
}

async fn wait_injected(rig: &Rig, id: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let j = rig.store.journal(id, 0).await.unwrap();
        if j.iter().any(|e| e.event.kind() == "fault_injected") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no fault injected within 10s");
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest: Vec<&str> = text[text.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn rss_mib() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

fn our_files(dir: &Path, prefix: &str) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

async fn cpu_share_over(window: Duration) -> f64 {
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    (cpu_seconds() - c0) / t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_fault_burns_about_the_requested_share_and_stops_on_revert() {
    let rig = rig().await;
    let idle = cpu_share_over(Duration::from_millis(500)).await;
    let id = submit(
        &rig,
        resource_step(
            "burn",
            "local",
            ResourceKind::Cpu {
                workers: 1,
                percent: 50.0,
            },
            2500,
        ),
    )
    .await;
    wait_injected(&rig, &id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = cpu_share_over(Duration::from_millis(1500)).await - idle;
    // Loose bounds: two cores are shared with other work on this machine.
    assert!(
        (0.35..=0.65).contains(&busy),
        "1 worker at 50% used {busy:.2} of a core"
    );
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    let after = cpu_share_over(Duration::from_millis(500)).await;
    assert!(after < idle + 0.1, "still busy after revert: {after:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fault_is_resident_while_held_and_released_after() {
    let rig = rig().await;
    let before = rss_mib();
    let id = submit(
        &rig,
        resource_step(
            "hog",
            "local",
            ResourceKind::Memory {
                amount: MemoryAmount::Mib(128),
            },
            1500,
        ),
    )
    .await;
    wait_injected(&rig, &id).await;
    let during = rss_mib();
    assert!(
        during - before >= 120.0,
        "RSS grew by {:.1} MiB only",
        during - before
    );
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    let after = rss_mib();
    assert!(
        after - before < 40.0,
        "RSS still {:.1} MiB above the start after revert",
        after - before
    );
}

#[tokio::test]
async fn disk_fill_file_exists_during_the_step_and_is_gone_after() {
    let rig = rig().await;
    let id = submit(
        &rig,
        resource_step(
            "fill",
            "scratch",
            ResourceKind::Disk {
                amount: DiskAmount::Mib(16),
            },
            1000,
        ),
    )
    .await;
    wait_injected(&rig, &id).await;
    let files = our_files(&rig.scratch, ".chaosbot-fill-");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, 16 * 1024 * 1024);
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::Reverted));
    assert!(our_files(&rig.scratch, ".chaosbot-").is_empty());
}

#[tokio::test]
async fn io_fault_writes_its_file_and_removes_it() {
    let rig = rig().await;
    let id = submit(
        &rig,
        resource_step(
            "churn",
            "scratch",
            ResourceKind::Io {
                block_kib: 64,
                mib_per_s: 5,
            },
            1000,
        ),
    )
    .await;
    wait_injected(&rig, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = our_files(&rig.scratch, ".chaosbot-io-");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].1 >= 64 * 1024, "{files:?}");
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Held), "{:?}", run.reason);
    assert!(our_files(&rig.scratch, ".chaosbot-").is_empty());
}

#[tokio::test]
async fn a_fill_file_left_by_a_crash_is_deleted_by_recovery() {
    let rig = rig().await;
    let step = FaultStep {
        name: "fill".into(),
        target: "scratch".into(),
        duration: Duration::from_secs(60),
        fault: FaultSpec::Resource {
            stress: ResourceKind::Disk {
                amount: DiskAmount::Mib(8),
            },
        },
    };
    let ctx = InjectContext {
        targets: &rig.targets,
        run_id: "r-test",
        seed: 1,
        deadline: Instant::now() + Duration::from_secs(60),
        events: tokio::sync::mpsc::unbounded_channel().0,
    };
    let detail = ResourceFaults.prepare(&step, &ctx).await.unwrap();
    // The path is known (and persisted by the engine) before the file exists.
    let path = PathBuf::from(detail["path"].as_str().unwrap());
    assert!(!path.exists());
    let fault = ResourceFaults.inject(&step, &ctx, &detail).await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 * 1024 * 1024);
    // As if the process died here: the revert never runs; a new process recovers the record.
    std::mem::forget(fault);
    let record = FaultRecord {
        id: 1,
        run_id: "r-x".into(),
        step: "fill".into(),
        target: "scratch".into(),
        family: "resource".into(),
        detail,
        injected_ms: 0,
        deadline_ms: 0,
        reverted_ms: None,
        owner: "gone/1/1".into(),
    };
    let family = chaosbot::faults::family_named("resource").unwrap();
    let what = family.recover(&record).await.unwrap();
    assert!(what.contains("deleted"), "{what}");
    assert!(!path.exists());
}

async fn refused(rig: &Rig, target: &str, stress: ResourceKind) -> String {
    let id = submit(rig, resource_step("refused", target, stress, 500)).await;
    let run = rig.engine.wait(&id).await.unwrap();
    assert_eq!(run.verdict, Some(Verdict::Failed), "{:?}", run.reason);
    assert_eq!(run.rollback, Some(RollbackOutcome::NothingToRevert));
    run.reason.unwrap()
}

#[tokio::test]
async fn guard_rails_refuse_with_specific_errors() {
    let rig = rig().await;
    let r = refused(
        &rig,
        "tight",
        ResourceKind::Memory {
            amount: MemoryAmount::Mib(64),
        },
    )
    .await;
    assert!(
        r.contains("memory fault refused") && r.contains("min_free_memory_mib"),
        "{r}"
    );
    let r = refused(
        &rig,
        "local",
        ResourceKind::Memory {
            amount: MemoryAmount::Mib(4096),
        },
    )
    .await;
    assert!(r.contains("max_memory_mib = 1024"), "{r}");
    let r = refused(
        &rig,
        "local",
        ResourceKind::Cpu {
            workers: 3,
            percent: 10.0,
        },
    )
    .await;
    assert!(
        r.contains("cpu fault refused") && r.contains("max_cpu_workers = 2"),
        "{r}"
    );
    let r = refused(
        &rig,
        "tiny",
        ResourceKind::Disk {
            amount: DiskAmount::Mib(1),
        },
    )
    .await;
    assert!(
        r.contains("disk fault refused") && r.contains("max_fill_percent"),
        "{r}"
    );
    let r = refused(
        &rig,
        "scratch",
        ResourceKind::Io {
            block_kib: 64,
            mib_per_s: 500,
        },
    )
    .await;
    assert!(
        r.contains("io fault refused") && r.contains("max_io_mib_per_s = 50"),
        "{r}"
    );
    assert!(our_files(&rig.scratch, ".chaosbot-").is_empty());
}

#[test]
fn the_spec_checks_kinds_targets_and_guard_rails_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        r#"
[[targets.http]]
name = "api-http"
url = "http://127.0.0.1:18080"
[[targets.process]]
name = "worker"
comm = "sleep"
[[targets.host]]
name = "local"
max_memory_mib = 1024
max_cpu_workers = 2
[[targets.disk]]
name = "scratch"
path = "{}"
max_fill_percent = 80
"#,
        dir.path().display()
    ))
    .unwrap();
    let head = "name: x\ntitle: t\nowner: o\nhypothesis:\n  probes:\n    - {name: p, http: {endpoint: api-http}}\nmethod:\n";
    let problems = |steps: &str| -> Vec<String> {
        let text = format!("{head}{steps}");
        match chaosbot::spec::parse_experiment(&text, "t.yaml", &cfg, &[]) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    };
    let ok = problems(
        "  - {name: a, target: worker, fault: kill, signal: SIGKILL, duration: 1s}\n  - {name: b, target: worker, fault: pause, duration: 1s}\n  - {name: c, target: local, fault: cpu, workers: 2, percent: 80, duration: 1s}\n  - {name: d, target: local, fault: memory, fraction: 0.1, duration: 1s}\n  - {name: e, target: scratch, fault: disk, until_percent: 70, duration: 1s}\n  - {name: f, target: scratch, fault: io, mib_per_s: 10, duration: 1s}\n",
    );
    assert!(ok.is_empty(), "{ok:#?}");

    let cases: &[(&str, &str)] = &[
        (
            "  - {name: a, target: local, fault: cpu, percent: 150, duration: 1s}\n",
            "t.yaml:8:51: `percent: 150` is over 100",
        ),
        (
            "  - {name: a, target: local, fault: memory, mib: 4096, duration: 1s}\n",
            "4096 MiB is beyond the memory guard rail of `local` (max_memory_mib = 1024)",
        ),
        (
            "  - {name: a, target: scratch, fault: cpu, percent: 10, duration: 1s}\n",
            "`scratch` is a disk target; a `cpu` fault needs a host target",
        ),
        (
            "  - {name: a, target: locl, fault: memory, mib: 10, duration: 1s}\n",
            "did you mean `local`?",
        ),
        (
            "  - {name: a, target: worker, fault: kill, signal: TREM, duration: 1s}\n",
            "unknown signal `TREM`\n  hint: did you mean `TERM`?",
        ),
        (
            "  - {name: a, target: worker, fault: kill, restart: true, duration: 1s}\n",
            "target `worker` declares no `restart_command`",
        ),
        (
            "  - {name: a, target: scratch, fault: disk, until_percent: 95, duration: 1s}\n",
            "filling to 95% is beyond the guard rail of `scratch`",
        ),
        (
            "  - {name: a, target: local, fault: cpu, workers: 3, percent: 10, duration: 1s}\n",
            "3 cpu workers is above the guard rail of `local` (2)",
        ),
        (
            "  - {name: a, target: worker, fault: pause, direction: upstream, duration: 1s}\n",
            "`direction` is not an attribute of a `pause` fault",
        ),
        (
            "  - {name: a, target: local, fault: memory, duration: 1s}\n",
            "a `memory` fault needs `mib` or `fraction`",
        ),
        (
            "  - {name: a, target: local, fault: cpu, percnt: 10, duration: 1s}\n",
            "did you mean `percent`?",
        ),
        (
            "  - {name: a, target: worker, fault: puase, duration: 1s}\n",
            "did you mean `pause`?",
        ),
    ];
    for (steps, want) in cases {
        let ps = problems(steps);
        assert!(
            ps.iter().any(|p| p.contains(want)),
            "{steps}: expected `{want}` in {ps:#?}"
        );
    }
    let _ = &dir;
}

#[tokio::test]
async fn the_example_experiments_run_against_local_targets() {
    // The shipped examples name `local` and `scratch`; point them at this test's targets.
    let rig = rig().await;
    let svc = service().await;
    let listen = free_port();
    let mut cfg = config(listen, svc.addr);
    cfg.targets.host = rig.cfg.targets.host.clone();
    cfg.targets.disk = vec![chaosbot::config::DiskTarget {
        name: "scratch".into(),
        ..rig.cfg.targets.disk[0].clone()
    }];
    let sets = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let cfg = Arc::new(cfg);
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let engine = Engine::new(
        store,
        TargetRegistry::new(cfg.clone()),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    engine.start().await.unwrap();
    for (file, set) in [
        ("experiments/cpu-stress.yaml", sets(&[("duration", "1s")])),
        (
            "experiments/memory-pressure.yaml",
            sets(&[("duration", "1s"), ("mib", "64")]),
        ),
        (
            "experiments/disk-fill.yaml",
            sets(&[("duration", "1s"), ("mib", "8")]),
        ),
    ] {
        let exp = chaosbot::spec::load_experiment(Path::new(file), &cfg, &set)
            .unwrap_or_else(|e| panic!("{e}"));
        let id = engine.submit(&exp, test_request()).await.unwrap();
        let run = engine.wait(&id).await.unwrap();
        assert_eq!(run.verdict, Some(Verdict::Held), "{file}: {:?}", run.reason);
        assert_eq!(run.rollback, Some(RollbackOutcome::Reverted), "{file}");
    }
    assert!(our_files(&rig.scratch, ".chaosbot-").is_empty());
}
