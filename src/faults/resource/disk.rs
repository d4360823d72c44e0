//! Disk fill and I/O load in a declared directory. Each fault writes one file whose path was
//! persisted before it was created; the file is deleted on stop, at the deadline, or by crash
//! recovery.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{MIB, ResourceError, Running, Stop, remove_ours};

/// Space on one filesystem, as `df` counts it (reserved blocks are neither used nor available).
pub(super) struct FsUsage {
    pub used: u64,
    pub avail: u64,
}

impl FsUsage {
    pub fn size(&self) -> u64 {
        self.used + self.avail
    }

    /// Percent used once `extra` more bytes are written.
    pub fn percent_used(&self, extra: u64) -> f64 {
        if self.size() == 0 {
            return 100.0;
        }
        100.0 * (self.used.saturating_add(extra)) as f64 / self.size() as f64
    }
}

pub(super) fn usage(target: &str, dir: &Path) -> Result<FsUsage, ResourceError> {
    let bad = |why: String| ResourceError::Directory {
        target: target.to_string(),
        path: dir.display().to_string(),
        why,
    };
    if !dir.is_dir() {
        return Err(bad("it does not exist or is not a directory".into()));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| bad("the path holds a NUL byte".into()))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(bad(format!(
            "statvfs failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    let avail = st.f_bavail as u64 * frsize;
    Ok(FsUsage {
        used: total.saturating_sub(free),
        avail,
    })
}

fn create_new(path: &Path) -> Result<File, ResourceError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ResourceError::Write {
            path: path.display().to_string(),
            why: e.to_string(),
        })
}

/// Gives the file `bytes` of real blocks: fallocate where the filesystem has it, else zeros.
fn allocate(file: &mut File, path: &Path, bytes: u64, stop: &Stop) -> Result<(), ResourceError> {
    let werr = |e: std::io::Error| ResourceError::Write {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let len = libc::off_t::try_from(bytes).map_err(|_| ResourceError::Write {
        path: path.display().to_string(),
        why: "size too large".into(),
    })?;
    // SAFETY: fallocate on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(werr(err));
    }
    let block = vec![0u8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        if stop.is_stopped() {
            return Ok(());
        }
        let n = usize::try_from(left.min(MIB)).unwrap_or(block.len());
        file.write_all(&block[..n]).map_err(werr)?;
        left -= n as u64;
    }
    file.sync_data().map_err(werr)
}

/// Creates the fill file and holds it until stopped or the deadline, then deletes it.
pub(super) fn fill(
    target: &str,
    path: PathBuf,
    bytes: u64,
    deadline: Instant,
) -> Result<Running, ResourceError> {
    let stop = Arc::new(Stop::default());
    let mut file = create_new(&path)?;
    if let Err(e) = allocate(&mut file, &path, bytes, &stop) {
        drop(file);
        let _ = remove_ours(&path);
        return Err(e);
    }
    drop(file);
    let st = Arc::clone(&stop);
    let p = path.clone();
    let thread = std::thread::Builder::new()
        .name("chaosbot-disk".into())
        .spawn(move || {
            st.wait_until(deadline);
            if let Err(e) = remove_ours(&p) {
                tracing::warn!(error = %e, "cannot delete the fill file");
            }
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            let _ = remove_ours(&path);
            return Err(ResourceError::Thread(e.to_string()));
        }
    };
    Ok(Running {
        stop,
        threads: std::sync::Mutex::new(vec![thread]),
        summary: format!(
            "disk: {} MiB written to {} on `{target}`",
            bytes / MIB,
            path.display()
        ),
        file: Some(path),
    })
}

/// Writes `block_bytes` blocks, each followed by fdatasync, at up to `bytes_per_s`, wrapping at
/// `max_file_bytes`, until stopped or the deadline; then deletes the file.
pub(super) fn io(
    target: &str,
    path: PathBuf,
    block_bytes: u64,
    bytes_per_s: u64,
    max_file_bytes: u64,
    deadline: Instant,
) -> Result<Running, ResourceError> {
    let stop = Arc::new(Stop::default());
    let mut file = create_new(&path)?;
    let st = Arc::clone(&stop);
    let p = path.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ResourceError>>();
    let thread = std::thread::Builder::new()
        .name("chaosbot-io".into())
        .spawn(move || {
            let block = vec![0x5Au8; usize::try_from(block_bytes).unwrap_or(4096)];
            let start = Instant::now();
            let mut written: u64 = 0;
            let mut pos: u64 = 0;
            let mut first = true;
            while !st.is_stopped() && Instant::now() < deadline {
                let r = (|| -> std::io::Result<()> {
                    if pos + block_bytes > max_file_bytes {
                        file.seek(SeekFrom::Start(0))?;
                        pos = 0;
                    }
                    file.write_all(&block)?;
                    file.sync_data()
                })();
                if let Err(e) = r {
                    let err = ResourceError::Write {
                        path: p.display().to_string(),
                        why: e.to_string(),
                    };
                    if first {
                        let _ = ready_tx.send(Err(err));
                    } else {
                        tracing::warn!(error = %err, "io fault stopped writing");
                    }
                    break;
                }
                if first {
                    let _ = ready_tx.send(Ok(()));
                    first = false;
                }
                pos += block_bytes;
                written += block_bytes;
                // Pace: the next block is due when the bytes so far fit the rate.
                if bytes_per_s > 0 {
                    let due = Duration::from_secs_f64(written as f64 / bytes_per_s as f64);
                    let ahead = due.saturating_sub(start.elapsed());
                    if !ahead.is_zero() && st.wait(ahead) {
                        break;
                    }
                }
            }
            if first {
                let _ = ready_tx.send(Ok(()));
            }
            drop(file);
            if let Err(e) = remove_ours(&p) {
                tracing::warn!(error = %e, "cannot delete the io file");
            }
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            let _ = remove_ours(&path);
            return Err(ResourceError::Thread(e.to_string()));
        }
    };
    // The first block shows the directory is writable; report it if not.
    if let Ok(Err(e)) = ready_rx.recv_timeout(Duration::from_secs(10)) {
        let _ = thread.join();
        return Err(e);
    }
    Ok(Running {
        stop,
        threads: std::sync::Mutex::new(vec![thread]),
        summary: format!(
            "io: {} KiB fsync'd writes at up to {} MiB/s in {} on `{target}`",
            block_bytes / 1024,
            bytes_per_s / MIB,
            path.display()
        ),
        file: Some(path),
    })
}
