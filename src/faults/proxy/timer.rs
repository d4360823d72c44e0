//! A sub-millisecond timer for latency holds.
//!
//! tokio's timer wheel rounds every deadline up to the next whole millisecond, so a 100 ms
//! latency toxic would add 100–101 ms. This timer is one thread that sleeps on a condvar until
//! the earliest deadline (the kernel's timer slack, ~50 µs, is its error) and then completes a
//! oneshot; the waiting writer still awaits it inside a `select!`, so holds stay interruptible.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tokio::sync::oneshot;
use tokio::time::Instant;

struct Entry {
    at: std::time::Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

type Service = Arc<(Mutex<Queue>, Condvar)>;

/// The process-wide timer thread, started on first use; `None` if it could not be spawned.
fn service() -> Option<&'static Service> {
    static SERVICE: OnceLock<Option<Service>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            let svc: Service = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
            let worker = svc.clone();
            match std::thread::Builder::new()
                .name("chaosbot-proxy-timer".into())
                .spawn(move || run(&worker))
            {
                Ok(_) => Some(svc),
                Err(e) => {
                    tracing::warn!(error = %e, "precise timer thread unavailable; latency uses tokio's millisecond timer");
                    None
                }
            }
        })
        .as_ref()
}

fn run(svc: &Service) {
    let (lock, cvar) = &**svc;
    let Ok(mut q) = lock.lock() else { return };
    loop {
        let now = std::time::Instant::now();
        while q.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = q.heap.pop() {
                // The waiter may have gone (interrupted hold): nothing to do then.
                let _ = e.tx.send(());
            }
        }
        let next = q.heap.peek().map(|Reverse(e)| e.at);
        q = match next {
            None => match cvar.wait(q) {
                Ok(q) => q,
                Err(_) => return,
            },
            Some(at) => match cvar.wait_timeout(q, at.saturating_duration_since(now)) {
                Ok((q, _)) => q,
                Err(_) => return,
            },
        };
    }
}

/// Completes at `at`, with sub-millisecond accuracy.
pub(crate) async fn sleep_until(at: Instant) {
    let Some(svc) = service() else {
        return tokio::time::sleep_until(at).await;
    };
    let (tx, rx) = oneshot::channel();
    {
        let (lock, cvar) = &**svc;
        let Ok(mut q) = lock.lock() else {
            return tokio::time::sleep_until(at).await;
        };
        q.seq += 1;
        let seq = q.seq;
        let wake_thread = q.heap.peek().is_none_or(|Reverse(e)| at.into_std() < e.at);
        q.heap.push(Reverse(Entry {
            at: at.into_std(),
            seq,
            tx,
        }));
        // Only an earlier deadline changes how long the thread must sleep.
        if wake_thread {
            cvar.notify_one();
        }
    }
    if rx.await.is_err() {
        // Never dropped unsent while the thread lives; fall back rather than return early.
        tokio::time::sleep_until(at).await;
    }
}
