//! Steady client traffic through a proxy, counting answers and failures.
//!
//! The agent bench includes this file too.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::fixture::{fresh_client, timed_get};

/// Sends GETs to `url` at `rate` per second (each on a new connection) until `stop`; counts
/// answers and failures, keeping the first few failure messages.
pub struct Traffic {
    pub sent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(url: String, rate: u32, limit: Duration) -> Traffic {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, e, st) = (sent.clone(), failed.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = fresh_client(Duration::from_secs(2));
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let start = Instant::now();
            let mut inflight = tokio::task::JoinSet::new();
            while !st.load(Ordering::SeqCst) && start.elapsed() < limit {
                tick.tick().await;
                let (client, url, s, f, e) =
                    (client.clone(), url.clone(), s.clone(), f.clone(), e.clone());
                inflight.spawn(async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    if let Err(why) = timed_get(&client, &url).await {
                        f.fetch_add(1, Ordering::SeqCst);
                        let mut e = e.lock().unwrap_or_else(|p| p.into_inner());
                        if e.len() < 5 {
                            e.push(why);
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Traffic {
            sent,
            failed,
            errors,
            stop,
            task,
        }
    }

    /// Stops and waits for the requests in flight: (sent, failed, first errors).
    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}
