//! One container, not the whole host: a host network fault with `namespace_of` acts inside the
//! network namespace of a declared process target (as a container's or a pod's processes share
//! one). The namespace is named by the inode of `/proc/PID/ns/net`; `nft` is run inside it by
//! `setns` in the child before it execs, so the host's own tables are never touched.
//!
//! While the fault is in place the agent holds the namespace open, so its revert and its
//! deadline reach it even when the process that named it has died. After an agent restart the
//! journal names the namespace by pid and inode: a process still in it (the same pid, or any
//! other) opens it again; with none left the namespace, and the rules in it, are gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use super::HostNetError;
use crate::config::ProcessTarget;

/// The namespace a fault acts in, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetNs {
    /// The process target that named it.
    pub process: String,
    /// A process that was in it when the fault was prepared.
    pub pid: i32,
    /// The inode of its `/proc/PID/ns/net`: the namespace's identity.
    pub inode: u64,
}

fn inode_of(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The namespace the process target's processes are in now. Refused: no process, processes
/// in several namespaces, or the agent's own namespace (the fault would act on the whole host).
pub fn of_process(t: &ProcessTarget) -> Result<NetNs, HostNetError> {
    let procs =
        crate::faults::process::resolve(t).map_err(|e| HostNetError::Namespace(e.to_string()))?;
    let mut found: Vec<(u64, i32)> = Vec::new();
    for p in &procs {
        if let Some(inode) = inode_of(&format!("/proc/{}/ns/net", p.pid))
            && !found.iter().any(|(i, _)| *i == inode)
        {
            found.push((inode, p.pid));
        }
    }
    let (inode, pid) = match found.as_slice() {
        [] => {
            return Err(HostNetError::Namespace(format!(
                "cannot read the network namespace of process target `{}` (/proc/PID/ns/net); the agent must run as root on the process's host",
                t.name
            )));
        }
        [one] => *one,
        several => {
            return Err(HostNetError::Namespace(format!(
                "the processes of target `{}` are in {} network namespaces; narrow the target to one container's processes",
                t.name,
                several.len()
            )));
        }
    };
    if inode_of("/proc/self/ns/net") == Some(inode) {
        return Err(HostNetError::Namespace(format!(
            "process target `{}` shares the host's network namespace, so `namespace_of` would act on the whole host; remove `namespace_of` to act on the host on purpose",
            t.name
        )));
    }
    Ok(NetNs {
        process: t.name.clone(),
        pid,
        inode,
    })
}

/// Opens the namespace: through its pid if that is still in it, else through any process
/// that is. None: no process is left in it, so it is gone (with every rule in it).
pub fn open(ns: &NetNs) -> Option<File> {
    let at = |path: &str| -> Option<File> {
        let f = File::open(path).ok()?;
        (f.metadata().ok()?.ino() == ns.inode).then_some(f)
    };
    if let Some(f) = at(&format!("/proc/{}/ns/net", ns.pid)) {
        return Some(f);
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let path = format!("/proc/{pid}/ns/net");
        if inode_of(&path) == Some(ns.inode)
            && let Some(f) = at(&path)
        {
            return Some(f);
        }
    }
    None
}

/// Makes `cmd` enter the namespace `ns` before it execs.
pub fn enter_before_exec(cmd: &mut tokio::process::Command, ns: &File) {
    let fd = ns.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls setns(2), which is
    // async-signal-safe; `fd` stays open in the child until exec (it is the parent's, which
    // outlives the spawn).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Moves the calling thread into network namespace `ns` (for a thread of its own: sockets it
/// opens afterwards live there; the agent's other threads stay where they are).
pub fn enter_on_this_thread(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns(2) acts on the calling thread only, with a namespace fd the caller holds.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether interface `name` exists inside `ns` (looked up from a thread that enters it, so
/// the agent's own threads stay where they are).
pub fn interface_exists_in(ns: &File, name: &str) -> bool {
    let Ok(fd) = ns.try_clone() else {
        return false;
    };
    let name = name.to_string();
    std::thread::spawn(move || {
        if enter_on_this_thread(&fd).is_err() {
            return false;
        }
        super::interface_exists(&name)
    })
    .join()
    .unwrap_or(false)
}
