//! A pump's fast path (Linux): `src` → pipe → `dst` with `splice(2)`, driven by tokio readiness,
//! while no toxic of the direction forbids it. The syscalls are in the sibling `splice` module.

use std::io;
use std::os::fd::AsRawFd;

use tokio::io::Interest;

use super::super::splice::{self, Pipe};
use super::{Flow, Pump, sleep_opt, write_some};

/// Splice iterations that moved bytes before the fast path yields to other tasks.
const YIELD_EVERY: u32 = 8;

/// How a splice phase ended.
pub(super) enum SpliceEnd {
    /// This direction is finished.
    Done,
    /// A toxic now affects this direction; the pipe is empty.
    Toxic,
    /// The kernel refused to splice; the pipe is empty. Use the copy path from now on.
    Unsupported,
}

impl Pump {
    /// The fast path: `src` → pipe → `dst` with splice(2), driven by readiness, until the
    /// direction ends or a toxic affects it (then the pipe is drained first).
    pub(super) async fn splice(&mut self, pipe: &mut Pipe) -> SpliceEnd {
        tracing::trace!(proxy = %self.shared.name, dir = %self.dir, "splicing");
        let src_fd = self.src.as_raw_fd();
        let dst_fd = self.dst.as_raw_fd();
        let mut eof = false;
        // A toxic arrived, or the kernel refused: stop reading, drain the pipe, leave.
        let mut leaving = false;
        let mut refused = false;
        let mut spins: u32 = 0;
        loop {
            if self.kill.is_cancelled() {
                return SpliceEnd::Done;
            }
            // The loop below may run long without awaiting anything: look at the set here too.
            if matches!(self.toxics.has_changed(), Ok(true)) {
                self.refresh();
            }
            if self.shaped {
                leaving = true;
            }
            let mut progress = false;
            if !eof && !leaving && pipe.len < pipe.cap {
                // With bytes in the pipe, EAGAIN may mean "pipe full" rather than "socket
                // empty": then it must not clear the socket's read readiness (we would wait for
                // an edge that never comes). Such an attempt reports `None` instead.
                let ambiguous = pipe.len > 0;
                let r = self
                    .src
                    .try_io(Interest::READABLE, || match pipe.fill_from(src_fd) {
                        Err(e) if ambiguous && e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                        r => r.map(Some),
                    });
                match r {
                    Ok(Some(0)) => {
                        eof = true;
                        progress = true;
                    }
                    Ok(Some(_)) => progress = true,
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if splice::unsupported(&e) => {
                        tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                            "splice from the socket refused; copying instead");
                        leaving = true;
                        refused = true;
                    }
                    Err(e) => {
                        tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                            "read failed; closing the connection");
                        self.kill.cancel();
                        return SpliceEnd::Done;
                    }
                }
            }
            if pipe.len > 0 {
                match self
                    .dst
                    .try_io(Interest::WRITABLE, || pipe.drain_to(dst_fd))
                {
                    Ok(n) => {
                        self.account(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if splice::unsupported(&e) => {
                        tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                            "splice to the socket refused; copying instead");
                        if self.write_pipe_by_copy(pipe).await == Flow::Stop {
                            return SpliceEnd::Done;
                        }
                        leaving = true;
                        refused = true;
                    }
                    Err(e) => {
                        tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                            "write failed; closing the connection");
                        self.kill.cancel();
                        return SpliceEnd::Done;
                    }
                }
            }
            if pipe.len == 0 {
                if eof {
                    // Also honours a slow_close or blackhole that arrived meanwhile.
                    self.close_write().await;
                    return SpliceEnd::Done;
                }
                if leaving {
                    return if refused {
                        SpliceEnd::Unsupported
                    } else {
                        SpliceEnd::Toxic
                    };
                }
            }
            if progress {
                // A bulk transfer may never block: yield now and then so that the other tasks
                // of this worker (other connections, the listener) are not starved. tokio's
                // coop budget alone allows 128 splices of up to a pipeful each.
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                } else {
                    tokio::task::consume_budget().await;
                }
                continue;
            }
            // Nothing moved: wait for the socket that blocks us. With bytes in the pipe that is
            // `dst`; otherwise `src` (its EAGAIN was unambiguous and cleared its readiness).
            let timer = self.next_timer();
            let want_read = pipe.len == 0 && !eof && !leaving;
            let want_write = pipe.len > 0;
            tokio::select! {
                biased;
                _ = self.kill.cancelled() => return SpliceEnd::Done,
                r = self.toxics.changed() => {
                    if r.is_err() { return SpliceEnd::Done }
                    self.refresh();
                }
                // Only while draining for a toxic can a timer (timeout, reset_peer) be due.
                _ = sleep_opt(timer) => {
                    if self.fire_timers() == Flow::Stop { return SpliceEnd::Done }
                }
                r = self.src.readable(), if want_read => if let Err(e) = r {
                    tracing::debug!(error = %e, "waiting to read failed; closing the connection");
                    self.kill.cancel();
                    return SpliceEnd::Done;
                },
                r = self.dst.writable(), if want_write => if let Err(e) = r {
                    tracing::debug!(error = %e, "waiting to write failed; closing the connection");
                    self.kill.cancel();
                    return SpliceEnd::Done;
                },
            }
        }
    }

    /// Writes what sits in the pipe the ordinary way (splicing into `dst` was refused).
    async fn write_pipe_by_copy(&mut self, pipe: &mut Pipe) -> Flow {
        let data = match pipe.read_all() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                    "reading back the pipe failed; closing the connection");
                self.kill.cancel();
                return Flow::Stop;
            }
        };
        let mut done = 0;
        while done < data.len() {
            let r = tokio::select! {
                _ = self.kill.cancelled() => return Flow::Stop,
                r = write_some(&self.dst, &data[done..]) => r,
            };
            match r {
                Ok(n) => {
                    done += n;
                    self.account(n);
                }
                Err(e) => {
                    tracing::debug!(proxy = %self.shared.name, dir = %self.dir, error = %e,
                        "write failed; closing the connection");
                    self.kill.cancel();
                    return Flow::Stop;
                }
            }
        }
        Flow::Go
    }
}
