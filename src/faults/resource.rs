//! Resource faults on the host chaosbot runs on: `cpu` (duty-cycled busy threads), `memory`
//! (resident, touched pages), `disk` (a file filling a declared directory) and `io` (sustained
//! fsync'd writes in a declared directory).
//!
//! Each fault runs on OS threads it owns, which stop by themselves at the fault's deadline, so
//! nothing here depends on the engine's task being alive; a revert stops them and waits for
//! them (well under 100 ms). Every kind checks its guard rail from the operator config in
//! `prepare`, before anything is allocated or written. Files are named in the persisted record
//! before they are created, so crash recovery can delete them.

mod disk;
mod load;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

pub use crate::spec::model::{DiskAmount, MemoryAmount, ResourceKind};
use crate::spec::model::{FaultSpec, FaultStep};
use crate::store::FaultRecord;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error(
        "target `{target}` is not a declared {kind} target; add it under [[targets.{kind}]] in the config"
    )]
    Undeclared { target: String, kind: &'static str },
    #[error(
        "cpu fault refused: {workers} workers is above the guard rail of target `{target}` (max_cpu_workers = {max}); ask for fewer workers"
    )]
    TooManyWorkers {
        target: String,
        workers: u32,
        max: u32,
    },
    #[error("cpu fault refused: percent {0} is outside 1..100")]
    BadPercent(f64),
    #[error(
        "memory fault refused: taking {want_mib} MiB would leave {left_mib} MiB available, below the guard rail of target `{target}` (min_free_memory_mib = {min_mib}); ask for less"
    )]
    MemoryGuard {
        target: String,
        want_mib: u64,
        left_mib: i64,
        min_mib: u64,
    },
    #[error(
        "memory fault refused: {want_mib} MiB is above the guard rail of target `{target}` (max_memory_mib = {max_mib})"
    )]
    MemoryCap {
        target: String,
        want_mib: u64,
        max_mib: u64,
    },
    #[error("cannot read {what}: {why}")]
    Host { what: String, why: String },
    #[error(
        "disk fault refused: the filesystem of `{target}` ({path}) would be {would:.1}% full, above its guard rail (max_fill_percent = {max}); ask for less"
    )]
    DiskGuard {
        target: String,
        path: String,
        would: f64,
        max: f64,
    },
    #[error(
        "disk fault refused: the filesystem of `{target}` is already {now:.1}% full, at or above the {want}% asked for"
    )]
    AlreadyFull { target: String, now: f64, want: f64 },
    #[error(
        "io fault refused: {want} MiB/s is above the guard rail of target `{target}` (max_io_mib_per_s = {max})"
    )]
    IoGuard { target: String, want: u64, max: u64 },
    #[error(
        "directory {path} of disk target `{target}` is not usable: {why}; create it or fix `path` in the config"
    )]
    Directory {
        target: String,
        path: String,
        why: String,
    },
    #[error("cannot allocate {mib} MiB: {why}")]
    Alloc { mib: u64, why: String },
    #[error("cannot write {path}: {why}")]
    Write { path: String, why: String },
    #[error("cannot start a worker thread: {0}")]
    Thread(String),
    #[error("the recorded resource fault cannot be read ({0}); check the target by hand")]
    Record(String),
}

/// What `prepare` resolves and persists (sizes in bytes, files by full path).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Prepared {
    Cpu {
        workers: u32,
        percent: f64,
    },
    Memory {
        bytes: u64,
    },
    Disk {
        path: PathBuf,
        bytes: u64,
    },
    Io {
        path: PathBuf,
        block_bytes: u64,
        bytes_per_s: u64,
        /// The file is rewritten from its start past this size, so `io` never fills a disk.
        max_file_bytes: u64,
    },
}

/// A stop signal the worker threads check (busy loops read the flag; sleeps wait on the
/// condvar so a revert wakes them at once).
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`; true when stopped (now or during the sleep).
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_stopped() {
            return true;
        }
        let _ = self.cv.wait_timeout_while(g, d, |_| !self.is_stopped());
        self.is_stopped()
    }

    /// Sleeps until the deadline or a stop; true when stopped by someone.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return self.is_stopped();
            }
            if self.wait(deadline - now) {
                return true;
            }
        }
    }
}

/// Worker threads of one fault and the file (if any) they leave behind.
pub(crate) struct Running {
    stop: std::sync::Arc<Stop>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    file: Option<PathBuf>,
    summary: String,
}

#[async_trait::async_trait]
impl super::ActiveFault for Running {
    async fn revert(&self) -> Result<(), super::FaultError> {
        self.stop.stop();
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            match file {
                Some(f) => remove_ours(&f),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| super::FaultError::Other(format!("the revert task failed: {e}")))??;
        info!(summary = %self.summary, "resource fault reverted");
        Ok(())
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

/// Deletes a file this family created (its name says so); a missing file is fine.
fn remove_ours(path: &Path) -> Result<(), ResourceError> {
    let ours = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".chaosbot-"));
    if !ours {
        return Err(ResourceError::Record(format!(
            "{} is not a file chaosbot creates; not deleting it",
            path.display()
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ResourceError::Write {
            path: path.display().to_string(),
            why: format!("cannot delete it: {e}"),
        }),
    }
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn mem_available() -> Result<u64, ResourceError> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| ResourceError::Host {
        what: "/proc/meminfo".into(),
        why: e.to_string(),
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| ResourceError::Host {
            what: "/proc/meminfo".into(),
            why: "no MemAvailable line".into(),
        })
}

fn unique_name(prefix: &str, step: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let clean: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!(
        ".chaosbot-{prefix}-{clean}-{}-{nanos}.tmp",
        std::process::id()
    )
}

/// The resource family.
pub struct ResourceFaults;

fn kind_of(step: &FaultStep) -> Result<&ResourceKind, super::FaultError> {
    match &step.fault {
        FaultSpec::Resource { stress } => Ok(stress),
        _ => Err(super::FaultError::Other(format!(
            "step `{}` is not a resource fault",
            step.name
        ))),
    }
}

#[async_trait::async_trait]
impl super::FaultFamily for ResourceFaults {
    fn name(&self) -> &'static str {
        "resource"
    }

    async fn prepare(
        &self,
        step: &FaultStep,
        ctx: &super::InjectContext<'_>,
    ) -> Result<serde_json::Value, super::FaultError> {
        let cfg = ctx.targets.config();
        let undeclared = |kind| ResourceError::Undeclared {
            target: step.target.clone(),
            kind,
        };
        let prepared = match kind_of(step)? {
            ResourceKind::Cpu { workers, percent } => {
                let host = cfg
                    .host_target(&step.target)
                    .ok_or_else(|| undeclared("host"))?;
                let max = host.cpu_worker_limit();
                if *workers == 0 || *workers > max {
                    return Err(ResourceError::TooManyWorkers {
                        target: host.name.clone(),
                        workers: *workers,
                        max,
                    }
                    .into());
                }
                if !(*percent > 0.0 && *percent <= 100.0) {
                    return Err(ResourceError::BadPercent(*percent).into());
                }
                Prepared::Cpu {
                    workers: *workers,
                    percent: *percent,
                }
            }
            ResourceKind::Memory { amount } => {
                let host = cfg
                    .host_target(&step.target)
                    .ok_or_else(|| undeclared("host"))?;
                let avail = mem_available()?;
                let bytes = match amount {
                    MemoryAmount::Mib(m) => m.saturating_mul(MIB),
                    MemoryAmount::Fraction(f) => (avail as f64 * f.clamp(0.0, 1.0)) as u64,
                };
                let want_mib = bytes.div_ceil(MIB);
                if let Some(max_mib) = host.max_memory_mib
                    && want_mib > max_mib
                {
                    return Err(ResourceError::MemoryCap {
                        target: host.name.clone(),
                        want_mib,
                        max_mib,
                    }
                    .into());
                }
                let left = i64::try_from(avail / MIB).unwrap_or(i64::MAX)
                    - i64::try_from(want_mib).unwrap_or(i64::MAX);
                if left < i64::try_from(host.min_free_memory_mib).unwrap_or(i64::MAX) {
                    return Err(ResourceError::MemoryGuard {
                        target: host.name.clone(),
                        want_mib,
                        left_mib: left,
                        min_mib: host.min_free_memory_mib,
                    }
                    .into());
                }
                Prepared::Memory { bytes }
            }
            ResourceKind::Disk { amount } => {
                let d = cfg
                    .disk_target(&step.target)
                    .ok_or_else(|| undeclared("disk"))?;
                let fs = disk::usage(&d.name, &d.path)?;
                let bytes = match amount {
                    DiskAmount::Mib(m) => m.saturating_mul(MIB),
                    DiskAmount::UntilPercent(p) => {
                        let goal = (p / 100.0 * fs.size() as f64) as u64;
                        if goal <= fs.used {
                            return Err(ResourceError::AlreadyFull {
                                target: d.name.clone(),
                                now: fs.percent_used(0),
                                want: *p,
                            }
                            .into());
                        }
                        goal - fs.used
                    }
                };
                let would = fs.percent_used(bytes);
                if bytes > fs.avail || would > d.max_fill_percent {
                    return Err(ResourceError::DiskGuard {
                        target: d.name.clone(),
                        path: d.path.display().to_string(),
                        would,
                        max: d.max_fill_percent,
                    }
                    .into());
                }
                Prepared::Disk {
                    path: d.path.join(unique_name("fill", &step.name)),
                    bytes,
                }
            }
            ResourceKind::Io {
                block_kib,
                mib_per_s,
            } => {
                let d = cfg
                    .disk_target(&step.target)
                    .ok_or_else(|| undeclared("disk"))?;
                if *mib_per_s > d.max_io_mib_per_s {
                    return Err(ResourceError::IoGuard {
                        target: d.name.clone(),
                        want: *mib_per_s,
                        max: d.max_io_mib_per_s,
                    }
                    .into());
                }
                let fs = disk::usage(&d.name, &d.path)?;
                let block_bytes = block_kib.saturating_mul(1024).max(4096);
                // A few seconds of writes, at least a few blocks, at most 64 MiB.
                let max_file_bytes = (mib_per_s.saturating_mul(MIB) * 2)
                    .clamp(block_bytes * 4, 64 * MIB)
                    .max(block_bytes);
                let would = fs.percent_used(max_file_bytes);
                if max_file_bytes > fs.avail || would > d.max_fill_percent {
                    return Err(ResourceError::DiskGuard {
                        target: d.name.clone(),
                        path: d.path.display().to_string(),
                        would,
                        max: d.max_fill_percent,
                    }
                    .into());
                }
                Prepared::Io {
                    path: d.path.join(unique_name("io", &step.name)),
                    block_bytes,
                    bytes_per_s: mib_per_s.saturating_mul(MIB),
                    max_file_bytes,
                }
            }
        };
        serde_json::to_value(&prepared)
            .map_err(|e| super::FaultError::Other(format!("cannot encode the fault: {e}")))
    }

    async fn inject(
        &self,
        step: &FaultStep,
        ctx: &super::InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn super::ActiveFault>, super::FaultError> {
        let p: Prepared = serde_json::from_value(prepared.clone())
            .map_err(|e| ResourceError::Record(e.to_string()))?;
        let deadline = ctx.deadline;
        let target = step.target.clone();
        // Allocation and file creation block: keep them off the async workers.
        let running = tokio::task::spawn_blocking(move || match p {
            Prepared::Cpu { workers, percent } => load::cpu(&target, workers, percent, deadline),
            Prepared::Memory { bytes } => load::memory(&target, bytes, deadline),
            Prepared::Disk { path, bytes } => disk::fill(&target, path, bytes, deadline),
            Prepared::Io {
                path,
                block_bytes,
                bytes_per_s,
                max_file_bytes,
            } => disk::io(
                &target,
                path,
                block_bytes,
                bytes_per_s,
                max_file_bytes,
                deadline,
            ),
        })
        .await
        .map_err(|e| super::FaultError::Other(format!("the inject task failed: {e}")))??;
        info!(step = %step.name, summary = %running.summary, "resource fault injected");
        Ok(Box::new(running))
    }

    async fn recover(&self, record: &FaultRecord) -> Result<String, super::FaultError> {
        let p: Prepared = serde_json::from_value(record.detail.clone())
            .map_err(|e| ResourceError::Record(e.to_string()))?;
        Ok(match p {
            Prepared::Cpu { .. } | Prepared::Memory { .. } => format!(
                "{} load on `{}` ended with the process that held it",
                if matches!(p, Prepared::Cpu { .. }) {
                    "cpu"
                } else {
                    "memory"
                },
                record.target
            ),
            Prepared::Disk { path, .. } | Prepared::Io { path, .. } => {
                remove_ours(&path)?;
                format!("deleted {}", path.display())
            }
        })
    }
}
