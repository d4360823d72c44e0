//! A test "host": a network namespace joined to the root namespace by a veth pair, so an agent
//! in it is reached over a real link that the test can cut. Host `n` gets 10.203.n.0/30 and
//! fd00:cb:n::/64: the controller side (root namespace) is .1 / ::1, the host side .2 / ::2.
//! Names are `cb-<pid>-<n>` (the namespace and the root-side veth), so a sweep can tell
//! leftovers of dead test processes.
//!
//! Uses only std and libc: the agent bench includes this file too.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where per-subnet lock files live: holding `<n>.lock` (flock) owns 10.203.n.0/30 across
/// processes; the kernel drops the lock when its holder dies.
const LOCK_DIR: &str = "/tmp/chaosbot-netns-locks";

pub struct TestHost {
    /// The namespace's name and the root-side veth's name.
    pub name: String,
    pub n: u8,
    /// Logs of the commands spawned inside.
    logs: PathBuf,
    spawned: AtomicUsize,
    _lock: File,
}

/// Runs `ip` with `args`; Err carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a `cb-<pid>-<n>` name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cb-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u8>().ok()?;
    pid.parse().ok()
}

/// Why namespaces cannot be made here, if they cannot.
pub fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root (run the tests as root, as CI does)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is not installed".into()),
    }
}

/// Removes namespaces and root-side veths named `cb-<pid>-<n>` whose pid is dead (a test
/// process that was killed before its Drop ran). Once per process.
pub fn sweep() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let me = std::process::id();
        for line in ip_output(&["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = owner_pid(name)
                && pid != me
                && !pid_alive(pid)
            {
                kill_inside(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
        for line in ip_output(&["-o", "link", "show"]).lines() {
            // "7: cb-123-4@if6: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            if let Some(pid) = owner_pid(name)
                && pid != me
                && !pid_alive(pid)
            {
                let _ = ip(&["link", "del", name]);
            }
        }
        // Logs kept by hosts whose test failed, once their process is gone.
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(host) = name.strip_prefix("chaosbot-")
                    && let Some(pid) = owner_pid(host)
                    && pid != me
                    && !pid_alive(pid)
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

/// SIGKILLs every process left in namespace `name`.
fn kill_inside(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: plain kill(2) on a pid listed in a namespace this test process made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Takes the first free subnet number (1..=250) across processes.
fn take_subnet() -> Result<(u8, File), String> {
    std::fs::create_dir_all(LOCK_DIR).map_err(|e| format!("cannot create {LOCK_DIR}: {e}"))?;
    for n in 1..=250u8 {
        let path = Path::new(LOCK_DIR).join(format!("{n}.lock"));
        let file = File::create(&path).map_err(|e| format!("cannot open {path:?}: {e}"))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok((n, file));
        }
    }
    Err("all 250 test subnets 10.203.n.0/30 are in use".into())
}

impl TestHost {
    /// A new host, or why not (the caller prints `SKIP:` and returns).
    pub fn new() -> Result<TestHost, String> {
        if let Some(why) = unsupported() {
            return Err(why);
        }
        sweep();
        let (n, lock) = take_subnet()?;
        let name = format!("cb-{}-{n}", std::process::id());
        // A leftover of this pid (an earlier host with this number in this process cannot
        // exist: the lock was free), removed before use.
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &name]);
        let logs = std::env::temp_dir().join(format!("chaosbot-{name}"));
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {logs:?}: {e}"))?;
        let host = TestHost {
            name,
            n,
            logs,
            spawned: AtomicUsize::new(0),
            _lock: lock,
        };
        host.build()?;
        Ok(host)
    }

    fn build(&self) -> Result<(), String> {
        let ns = self.name.as_str();
        let root_addr = format!("{}/30", self.controller_ip());
        let host_addr = format!("{}/30", self.ip());
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", ns, "type", "veth", "peer", "name", "veth0", "netns", ns,
        ])?;
        ip(&["addr", "add", &root_addr, "dev", ns])?;
        ip(&["link", "set", ns, "up"])?;
        ip(&[
            "netns", "exec", ns, "ip", "addr", "add", &host_addr, "dev", "veth0",
        ])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", "veth0", "up"])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        // IPv6 beside it, usable at once (no duplicate address detection to wait for).
        let root6 = format!("{}/64", self.controller_ip6());
        let host6 = format!("{}/64", self.ip6());
        ip(&["-6", "addr", "add", &root6, "dev", ns, "nodad"])?;
        ip(&[
            "netns", "exec", ns, "ip", "-6", "addr", "add", &host6, "dev", "veth0", "nodad",
        ])?;
        Ok(())
    }

    /// The host's IPv6 address: fd00:cb:n::2.
    pub fn ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xcb, u16::from(self.n), 0, 0, 0, 0, 2)
    }

    /// The controller's IPv6 address on the link: fd00:cb:n::1.
    pub fn controller_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xcb, u16::from(self.n), 0, 0, 0, 0, 1)
    }

    /// The host's address (inside the namespace): 10.203.n.2.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.n, 2)
    }

    /// The controller's address on the link (root namespace): 10.203.n.1.
    pub fn controller_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.n, 1)
    }

    /// Cuts the link: the root-side veth goes down (packets stop both ways, no resets).
    pub fn link_down(&self) {
        if let Err(e) = ip(&["link", "set", &self.name, "down"]) {
            panic!("cannot cut the link of {}: {e}", self.name);
        }
    }

    /// Restores the link and waits (bounded) until the host side has carrier again.
    pub fn link_up(&self) {
        if let Err(e) = ip(&["link", "set", &self.name, "up"]) {
            panic!("cannot restore the link of {}: {e}", self.name);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let state = ip_output(&[
                "netns", "exec", &self.name, "ip", "-o", "link", "show", "veth0",
            ]);
            if state.contains("LOWER_UP") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the link of {} did not come back up within 5s", self.name);
    }

    /// Runs `cmd` (its program, arguments, environment and working directory) inside the
    /// namespace. Stdout and stderr go to a log file ([`HostChild::log`]); the child is killed
    /// on Drop.
    pub fn spawn(&self, cmd: &Command) -> io::Result<HostChild> {
        // `ip netns exec` execs the command after joining the namespace: the child's pid is
        // the command's pid.
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.name])
            .arg(cmd.get_program());
        self.spawn_logged(wrapped, cmd)
    }

    /// Runs `cmd` in the root namespace (the controller's side), logged like [`Self::spawn`].
    pub fn spawn_outside(&self, cmd: &Command) -> io::Result<HostChild> {
        let wrapped = Command::new(cmd.get_program());
        self.spawn_logged(wrapped, cmd)
    }

    /// Spawns `wrapped` (the program, or a prefix ending in it) with `cmd`'s arguments,
    /// environment and directory.
    fn spawn_logged(&self, mut wrapped: Command, cmd: &Command) -> io::Result<HostChild> {
        let k = self.spawned.fetch_add(1, Ordering::SeqCst);
        let program = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(OsStr::new("cmd"))
            .to_string_lossy()
            .into_owned();
        let log = self.logs.join(format!("{k}-{program}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        wrapped
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let child = wrapped.spawn()?;
        Ok(HostChild {
            child: Some(child),
            log,
        })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        kill_inside(&self.name);
        // Deleting the namespace destroys its veth end, and with it the root-side end.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.name]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

/// A process running inside a [`TestHost`]; SIGKILLed and reaped on Drop.
pub struct HostChild {
    child: Option<Child>,
    log: PathBuf,
}

impl HostChild {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs (not exited; a stopped process still runs).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` without reaping.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Waits up to `limit` for it to exit; its exit code (None: killed by a signal), or Err
    /// when it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<i32>, String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return Ok(status.code());
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
                Some(Err(e)) => return Err(format!("cannot wait: {e}")),
                None => return Err("already reaped".into()),
            }
        }
        Err(format!("still running after {limit:?}"))
    }
}

impl Drop for HostChild {
    fn drop(&mut self) {
        self.kill9();
    }
}
