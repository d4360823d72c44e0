//! Loopback ports for listeners a test binds later (its own, or a server's it starts).
//! Also included by the agent tests, which do not use the rest of the support module.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// A free loopback port for a listener the test (or the server it starts) binds later.
///
/// The port comes from below the kernel's ephemeral range: a port the kernel handed out
/// (`bind :0`) and released can be taken as the source port of any outgoing connection
/// before the server binds it, which failed CI with "Address already in use". Each process
/// walks the pool from its own offset and never hands a port out twice, so two test
/// binaries or two tests in one binary do not collide either.
pub fn free_port() -> SocketAddr {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    const POOL_START: u32 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(POOL_START);
    if span >= 1_000 {
        let offset = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
            let port = POOL_START + (offset + n) % span;
            // RabbitMQ's distribution port sits in the pool; skip it even when it is idle.
            if port == 25_672 {
                continue;
            }
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
                return l.local_addr().unwrap();
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
