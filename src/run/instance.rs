//! Who this process is, as a run owner: `host/pid/start_ms`. Recovery uses it to tell a run
//! held by a live process from one left behind by a dead one.

use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    pub host: String,
    pub pid: u32,
    pub started_ms: i64,
}

impl InstanceId {
    /// This process (one id per process; several engines in one process share it).
    pub fn current() -> InstanceId {
        static ID: OnceLock<InstanceId> = OnceLock::new();
        ID.get_or_init(|| InstanceId {
            host: hostname(),
            pid: std::process::id(),
            started_ms: crate::run::now_ms(),
        })
        .clone()
    }

    pub fn parse(s: &str) -> Option<InstanceId> {
        let mut parts = s.rsplitn(3, '/');
        let started_ms = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_string();
        Some(InstanceId {
            host,
            pid,
            started_ms,
        })
    }

    /// Whether an owner recorded in the store is certainly dead: it ran on this host and its
    /// process is gone, or it is an earlier incarnation of this very pid.
    pub fn is_dead_owner(&self, owner: &InstanceId) -> bool {
        if owner.host != self.host {
            return false; // another host: only its lease can tell
        }
        if owner.pid == self.pid {
            return owner.started_ms != self.started_ms;
        }
        !pid_alive(owner.pid)
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.pid, self.started_ms)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence without touching the process.
    // SAFETY: kill(2) with signal 0 has no side effects.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_judges_liveness() {
        let me = InstanceId::current();
        let parsed = InstanceId::parse(&me.to_string()).unwrap();
        assert_eq!(parsed, me);
        assert!(!me.is_dead_owner(&me));
        let earlier = InstanceId {
            started_ms: me.started_ms - 1,
            ..me.clone()
        };
        assert!(me.is_dead_owner(&earlier));
        // A child that has exited and been reaped is dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = InstanceId { pid, ..me.clone() };
        assert!(me.is_dead_owner(&gone));
        let elsewhere = InstanceId {
            host: "other-host".into(),
            ..gone
        };
        assert!(!me.is_dead_owner(&elsewhere));
    }
}
