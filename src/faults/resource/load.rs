//! CPU and memory load, each on threads that end at the deadline or on a stop.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{MIB, ResourceError, Running, Stop};

/// Length of one duty cycle: short enough that the load looks steady to a sampler, long enough
/// that the busy/idle switch costs nothing.
const PERIOD: Duration = Duration::from_millis(100);

/// CPU time this thread has used (None if the clock cannot be read).
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// `workers` threads, each busy `percent` of every period until stopped or the deadline.
pub(super) fn cpu(
    target: &str,
    workers: u32,
    percent: f64,
    deadline: Instant,
) -> Result<Running, ResourceError> {
    let stop = Arc::new(Stop::default());
    let busy = PERIOD.mul_f64((percent / 100.0).clamp(0.0, 1.0));
    let mut threads = Vec::new();
    for n in 0..workers {
        let st = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name(format!("chaosbot-cpu-{n}"))
            .spawn(move || {
                let mut cycle = Instant::now();
                while !st.is_stopped() && Instant::now() < deadline {
                    // Busy until this thread has had `busy` of CPU in this period (not `busy`
                    // of wall time), so time lost to preemption on a loaded host is made up,
                    // within the period.
                    let cpu0 = thread_cpu();
                    // Without a thread clock, wall time stands in for CPU time.
                    let used = || match (cpu0, thread_cpu()) {
                        (Some(a), Some(b)) => b.saturating_sub(a),
                        _ => cycle.elapsed(),
                    };
                    while used() < busy && cycle.elapsed() < PERIOD {
                        if st.is_stopped() {
                            return;
                        }
                        // Spin a little between clock reads.
                        for i in 0..1000u32 {
                            std::hint::black_box(i);
                        }
                    }
                    let idle = PERIOD.saturating_sub(cycle.elapsed());
                    if !idle.is_zero() && st.wait(idle) {
                        return;
                    }
                    // Next period starts where this one should have ended, so a late wake-up
                    // does not stretch the cycle (unless we fell a whole period behind).
                    cycle += PERIOD;
                    if cycle.elapsed() > PERIOD {
                        cycle = Instant::now();
                    }
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.stop();
                for t in threads {
                    let _ = t.join();
                }
                return Err(ResourceError::Thread(e.to_string()));
            }
        }
    }
    Ok(Running {
        stop,
        threads: std::sync::Mutex::new(threads),
        file: None,
        summary: format!("cpu: {workers} worker(s) at {percent}% on `{target}`"),
    })
}

/// An anonymous private mapping, unmapped on drop (so the memory goes back to the OS at once,
/// which a `Vec` freed through malloc does not promise).
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; moving it between threads is
// fine and nothing else aliases it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize) -> Result<Mapping, String> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(Mapping { ptr, len })
    }

    /// Writes one byte in every page so each page is really backed (resident).
    fn touch(&mut self, page: usize) {
        let base = self.ptr.cast::<u8>();
        let mut off = 0;
        while off < self.len {
            // SAFETY: off < len, inside the mapping this value owns, mapped read-write.
            unsafe { std::ptr::write_volatile(base.add(off), 0xA5) };
            off += page;
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to the memory now.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Allocates and touches `bytes`, holds them until stopped or the deadline, then frees them.
pub(super) fn memory(
    target: &str,
    bytes: u64,
    deadline: Instant,
) -> Result<Running, ResourceError> {
    let stop = Arc::new(Stop::default());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let st = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("chaosbot-memory".into())
        .spawn(move || {
            let page = page_size();
            // In chunks, so a stop during a large allocation is seen quickly.
            const CHUNK: u64 = 64 * MIB;
            let mut held: Vec<Mapping> = Vec::new();
            let mut left = bytes;
            while left > 0 {
                if st.is_stopped() || Instant::now() >= deadline {
                    let _ = ready_tx.send(Ok(()));
                    return;
                }
                let n = usize::try_from(left.min(CHUNK)).unwrap_or(usize::MAX);
                match Mapping::new(n) {
                    Ok(mut m) => {
                        m.touch(page);
                        held.push(m);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                left = left.saturating_sub(n as u64);
            }
            let _ = ready_tx.send(Ok(()));
            st.wait_until(deadline);
            drop(held);
        })
        .map_err(|e| ResourceError::Thread(e.to_string()))?;
    let mib = bytes / MIB;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            let _ = thread.join();
            return Err(ResourceError::Alloc { mib, why });
        }
        Err(_) => {
            let _ = thread.join();
            return Err(ResourceError::Alloc {
                mib,
                why: "the allocating thread ended early".into(),
            });
        }
    }
    Ok(Running {
        stop,
        threads: std::sync::Mutex::new(vec![thread]),
        file: None,
        summary: format!("memory: {mib} MiB held resident on `{target}`"),
    })
}
