//! Zero-copy forwarding on Linux: socket → pipe → socket with `splice(2)`, so bytes of a
//! direction without toxics never enter user space (the copy path costs two copies per byte,
//! and on loopback everything is CPU-bound).
//!
//! Only the syscalls live here; [`super::link`] drives them from tokio readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pipe size we ask for: fewer splice calls per MiB. The kernel refuses more than
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default) or past the per-user pipe budget; then the
/// default size stays.
const PIPE_SIZE: usize = 1024 * 1024;

/// A non-blocking pipe and how many bytes it holds. Both ends close on drop.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity in bytes as the kernel reports it.
    pub cap: usize,
    /// Bytes spliced in and not yet spliced out.
    pub len: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Self> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let size = libc::c_int::try_from(PIPE_SIZE).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int. A refusal is fine.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        // SAFETY: fcntl on a descriptor we own; F_GETPIPE_SZ takes no argument.
        let cap = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        // The page-size default if the kernel does not say.
        let cap = usize::try_from(cap)
            .ok()
            .filter(|c| *c > 0)
            .unwrap_or(64 * 1024);
        Ok(Self {
            read,
            write,
            cap,
            len: 0,
        })
    }

    /// Moves up to the free space of the pipe from `src` into it. `Ok(0)` is EOF on `src`.
    /// EAGAIN means the socket is empty *or* the pipe has no free slot (slots hold partial pages).
    pub fn fill_from(&mut self, src: RawFd) -> io::Result<usize> {
        let n = splice(src, self.write.as_raw_fd(), self.cap - self.len)?;
        self.len += n;
        Ok(n)
    }

    /// Moves what the pipe holds into `dst`.
    pub fn drain_to(&mut self, dst: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), dst, self.len)?;
        self.len -= n.min(self.len);
        Ok(n)
    }

    /// Reads what the pipe holds into memory: the way out when splicing into `dst` is refused.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len];
        let mut got = 0;
        while got < buf.len() {
            let rest = &mut buf[got..];
            // SAFETY: `rest` is valid, writable memory of `rest.len()` bytes; the fd is ours.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    rest.as_mut_ptr().cast::<libc::c_void>(),
                    rest.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        buf.truncate(got);
        self.len = 0;
        Ok(buf)
    }
}

/// One non-blocking splice between two descriptors, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the whole call (their owners outlive it); null
        // offsets are what pipes and sockets require; no memory is passed.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Errors that mean "this kernel or descriptor pair cannot splice": use the copy path.
pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}
