//! Host fault parameters: process signals (`kill`, `pause`) and resource stress (`cpu`,
//! `memory`, `disk`, `io`). `crate::faults::process` and `crate::faults::resource` apply them.

use serde::{Deserialize, Serialize};

/// The signals a `kill` step may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    /// Names accepted in YAML (with or without `SIG`, any case).
    pub const NAMES: &'static [&'static str] =
        &["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2"];

    pub fn parse(text: &str) -> Option<Signal> {
        let up = text.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        Some(match bare {
            "TERM" => Signal::Term,
            "KILL" => Signal::Kill,
            "INT" => Signal::Int,
            "HUP" => Signal::Hup,
            "QUIT" => Signal::Quit,
            "USR1" => Signal::Usr1,
            "USR2" => Signal::Usr2,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        };
        f.write_str(s)
    }
}

/// What a process step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProcessAction {
    /// Sends `signal`; with `restart`, the target's restart command runs when the step ends.
    Kill { signal: Signal, restart: bool },
    /// SIGSTOP now, SIGCONT on revert or at the deadline.
    Pause,
}

impl ProcessAction {
    pub const NAMES: &'static [&'static str] = &["kill", "pause"];

    pub fn name(&self) -> &'static str {
        match self {
            ProcessAction::Kill { .. } => "kill",
            ProcessAction::Pause => "pause",
        }
    }
}

/// How much memory a `memory` fault takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAmount {
    Mib(u64),
    /// Share of the memory available when the fault starts (MemAvailable), in (0, 1].
    Fraction(f64),
}

/// How much a `disk` fault writes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskAmount {
    Mib(u64),
    /// Fill the filesystem until this share of it is used (as `df` counts it).
    UntilPercent(f64),
}

/// What a resource step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ResourceKind {
    /// `workers` threads, each busy `percent` of every 100 ms period.
    Cpu {
        workers: u32,
        percent: f64,
    },
    Memory {
        amount: MemoryAmount,
    },
    Disk {
        amount: DiskAmount,
    },
    /// fsync'd writes of `block_kib` blocks at up to `mib_per_s`.
    Io {
        block_kib: u64,
        mib_per_s: u64,
    },
}

impl ResourceKind {
    pub const NAMES: &'static [&'static str] = &["cpu", "memory", "disk", "io"];

    pub fn name(&self) -> &'static str {
        match self {
            ResourceKind::Cpu { .. } => "cpu",
            ResourceKind::Memory { .. } => "memory",
            ResourceKind::Disk { .. } => "disk",
            ResourceKind::Io { .. } => "io",
        }
    }
}
