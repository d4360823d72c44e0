//! Process faults: `kill` (a signal, optionally followed by the target's restart command) and
//! `pause` (SIGSTOP, SIGCONT on revert) on the processes of a declared process target.
//!
//! Safety rules, enforced here and not by callers:
//! - only pids the target's matcher returned at `prepare` are signalled, and each one is
//!   re-checked (same start time, same name, still a process and not a thread) right before
//!   every signal, so a recycled pid is never hit;
//! - pid 1, pids ≤ 0 (which `kill(2)` would broadcast) and chaosbot's own pid are never signalled;
//! - a paused process is resumed at the fault's deadline by a thread this module owns (a
//!   dead-man's switch that does not need the engine's task or even its runtime); after a crash
//!   of chaosbot itself, [`ProcessFaults::recover`] resumes it from the persisted pids.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{ProcessMatch, ProcessTarget};
use crate::spec::model::{FaultSpec, FaultStep};
pub use crate::spec::model::{ProcessAction, Signal};
use crate::store::FaultRecord;

// The signal is a spec parameter; turning it into a number is this family's business.
impl Signal {
    pub fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Int => libc::SIGINT,
            Signal::Hup => libc::SIGHUP,
            Signal::Quit => libc::SIGQUIT,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "target `{0}` is not a declared process target; add it under [[targets.process]] in the config"
    )]
    Undeclared(String),
    #[error(
        "target `{target}` matches no running process ({how}); start it, or fix its matcher in the config"
    )]
    NoProcess { target: String, how: String },
    #[error(
        "process {pid} (`{comm}`) of target `{target}` is gone (it exited before it could be {what}); nothing was signalled"
    )]
    Gone {
        target: String,
        pid: i32,
        comm: String,
        what: &'static str,
    },
    #[error(
        "not permitted to signal process {pid} (`{comm}`) of target `{target}` (EPERM: it belongs to another user); run chaosbot as that user or with CAP_KILL"
    )]
    PermissionDenied {
        target: String,
        pid: i32,
        comm: String,
    },
    #[error("refusing to signal pid {pid} of target `{target}`: {why}")]
    Forbidden {
        target: String,
        pid: i32,
        why: &'static str,
    },
    #[error("cannot signal process {pid} of target `{target}`: {source}")]
    Signal {
        target: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("target `{target}`: {what}")]
    Matcher { target: String, what: String },
    #[error("restart command of target `{target}` failed: {what}; start the process by hand")]
    Restart { target: String, what: String },
    #[error(
        "the recorded process fault cannot be read ({0}); check the processes of its target by hand"
    )]
    Record(String),
    /// An undo that already ran and failed, asked again.
    #[error("{0}")]
    UndoFailed(String),
}

/// One process as seen at `prepare`: enough to recognise it again (a recycled pid has another
/// start time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcIdentity {
    pub pid: i32,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22).
    pub start_ticks: u64,
    pub comm: String,
}

/// What `prepare` persists and `inject` and `recover` act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub action: ProcessAction,
    pub target: String,
    pub pids: Vec<ProcIdentity>,
    /// Set when the step asked for a restart: the command recovery must run.
    pub restart_command: Option<String>,
}

/// (state, start_ticks, comm) of a pid from /proc/PID/stat; None when there is no such process.
fn stat(pid: i32) -> Option<(char, u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself contain spaces and parentheses: cut at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    // Field 22 overall; `rest` starts at field 3.
    let start = rest.get(19)?.parse().ok()?;
    Some((state, start, comm))
}

/// The process state letter of a pid (`R`, `S`, `T`, `Z`...), for tests and logs.
pub fn process_state(pid: i32) -> Option<char> {
    stat(pid).map(|(s, _, _)| s)
}

/// The thread-group id of a pid: equal to the pid for a process, different for a thread.
fn tgid(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A live (not zombie) process identity, or None.
fn identify(pid: i32) -> Option<ProcIdentity> {
    let (state, start_ticks, comm) = stat(pid)?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    Some(ProcIdentity {
        pid,
        start_ticks,
        comm,
    })
}

/// Why a pid may never be signalled, if it may not.
fn forbidden(pid: i32) -> Option<&'static str> {
    if pid <= 0 {
        Some("pids of zero or below address process groups")
    } else if pid == 1 {
        Some("pid 1 is init")
    } else if u32::try_from(pid).ok() == Some(std::process::id()) {
        Some("it is chaosbot itself")
    } else if tgid(pid).is_some_and(|t| t != pid) {
        // /proc also answers for thread ids; signalling one hits its whole process.
        if tgid(pid).and_then(|t| u32::try_from(t).ok()) == Some(std::process::id()) {
            Some("it is a thread of chaosbot itself")
        } else {
            Some("it is a thread id, not a process")
        }
    } else {
        None
    }
}

fn describe_matcher(m: &ProcessMatch) -> String {
    match m {
        ProcessMatch::Comm(c) => format!("no process named `{c}`"),
        ProcessMatch::PidFile(p) => format!("pid file {}", p.display()),
        ProcessMatch::FindCommand(c) => format!("`{c}` printed no pid"),
    }
}

/// Resolves a declared target to the processes it matches now (pid 1, chaosbot and threads
/// are left out; none at all is an error).
pub fn resolve(t: &ProcessTarget) -> Result<Vec<ProcIdentity>, ProcessError> {
    let m = t.matcher().ok_or_else(|| ProcessError::Matcher {
        target: t.name.clone(),
        what: "needs exactly one of `comm`, `pid_file` or `find_command`".into(),
    })?;
    let candidates: Vec<i32> = match &m {
        ProcessMatch::Comm(name) => {
            let mut out = Vec::new();
            let dir = std::fs::read_dir("/proc").map_err(|e| ProcessError::Matcher {
                target: t.name.clone(),
                what: format!("cannot list /proc: {e}"),
            })?;
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if stat(pid).is_some_and(|(_, _, c)| c == *name) {
                    out.push(pid);
                }
            }
            out
        }
        ProcessMatch::PidFile(path) => vec![read_pid_file(&t.name, path)?],
        ProcessMatch::FindCommand(cmd) => run_find_command(&t.name, cmd)?,
    };
    let mut pids: Vec<ProcIdentity> = Vec::new();
    for pid in candidates {
        if let Some(why) = forbidden(pid) {
            warn!(target = %t.name, pid, why, "matched pid left out");
            continue;
        }
        if let Some(id) = identify(pid)
            && !pids.iter().any(|p| p.pid == pid)
        {
            pids.push(id);
        }
    }
    if pids.is_empty() {
        return Err(ProcessError::NoProcess {
            target: t.name.clone(),
            how: describe_matcher(&m),
        });
    }
    Ok(pids)
}

fn read_pid_file(target: &str, path: &Path) -> Result<i32, ProcessError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProcessError::NoProcess {
        target: target.to_string(),
        how: format!("cannot read pid file {}: {e}", path.display()),
    })?;
    text.trim().parse().map_err(|_| ProcessError::Matcher {
        target: target.to_string(),
        what: format!(
            "pid file {} holds `{}`, not a pid",
            path.display(),
            text.trim()
        ),
    })
}

/// Runs `sh -c cmd`, bounded in time; returns its exit status and stdout.
fn run_shell(cmd: &str, limit: Duration) -> Result<(i32, String), String> {
    let mut child = spawn_sh(cmd, Stdio::piped(), Stdio::null())?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // Read on a helper thread so the time limit below also bounds a command that hangs
        // with its output open.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        out = rx.recv_timeout(limit).unwrap_or_default();
    }
    let code = wait_bounded(
        &mut child,
        cmd,
        limit,
        "it must start the process in the background and return",
    )?;
    Ok((code, out))
}

fn spawn_sh(cmd: &str, stdout: Stdio, stderr: Stdio) -> Result<std::process::Child, String> {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start `sh -c {cmd}`: {e}"))
}

/// Waits for `child` at most `limit`; its exit code, or why not (with `hint` on a timeout).
fn wait_bounded(
    child: &mut std::process::Child,
    cmd: &str,
    limit: Duration,
    hint: &str,
) -> Result<i32, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.code().unwrap_or(-1)),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                return Err(format!(
                    "`{cmd}` still runs after {}s ({hint})",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{cmd}`: {e}")),
        }
    }
}

fn run_find_command(target: &str, cmd: &str) -> Result<Vec<i32>, ProcessError> {
    let (code, out) =
        run_shell(cmd, Duration::from_secs(10)).map_err(|what| ProcessError::Matcher {
            target: target.to_string(),
            what,
        })?;
    let mut pids = Vec::new();
    for tok in out.split_whitespace() {
        match tok.parse::<i32>() {
            Ok(p) => pids.push(p),
            Err(_) => {
                return Err(ProcessError::Matcher {
                    target: target.to_string(),
                    what: format!(
                        "find_command `{cmd}` printed `{tok}`, not a pid; it must print pids only"
                    ),
                });
            }
        }
    }
    // pgrep and friends exit 1 when nothing matches: that is "no process", reported later.
    if pids.is_empty() && code > 1 {
        return Err(ProcessError::Matcher {
            target: target.to_string(),
            what: format!("find_command `{cmd}` exited with status {code}"),
        });
    }
    Ok(pids)
}

/// Signals one process after checking it is still the one `prepare` saw.
fn signal(
    target: &str,
    p: &ProcIdentity,
    sig: libc::c_int,
    what: &'static str,
) -> Result<(), ProcessError> {
    if let Some(why) = forbidden(p.pid) {
        return Err(ProcessError::Forbidden {
            target: target.to_string(),
            pid: p.pid,
            why,
        });
    }
    let gone = || ProcessError::Gone {
        target: target.to_string(),
        pid: p.pid,
        comm: p.comm.clone(),
        what,
    };
    match identify(p.pid) {
        Some(now) if now == *p => {}
        // Exited, or the pid now belongs to another process: never signal that one.
        _ => return Err(gone()),
    }
    // SAFETY: kill(2) has no memory effects; the pid is > 1, not ours, and was just re-checked.
    let rc = unsafe { libc::kill(p.pid, sig) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => gone(),
        Some(libc::EPERM) => ProcessError::PermissionDenied {
            target: target.to_string(),
            pid: p.pid,
            comm: p.comm.clone(),
        },
        _ => ProcessError::Signal {
            target: target.to_string(),
            pid: p.pid,
            source: err,
        },
    })
}

/// SIGCONT to every process still alive and still the same; returns (resumed, gone).
fn resume_all(target: &str, pids: &[ProcIdentity]) -> (usize, usize) {
    let (mut resumed, mut gone) = (0, 0);
    for p in pids {
        match signal(target, p, libc::SIGCONT, "resumed") {
            Ok(()) => resumed += 1,
            Err(ProcessError::Gone { .. }) => {
                warn!(
                    target,
                    pid = p.pid,
                    "paused process exited during the fault"
                );
                gone += 1;
            }
            Err(e) => {
                warn!(target, pid = p.pid, error = %e, "cannot resume");
                gone += 1;
            }
        }
    }
    (resumed, gone)
}

fn run_restart(target: &str, cmd: &str) -> Result<(), ProcessError> {
    info!(target, cmd, "running the restart command");
    let started = Instant::now();
    let fail = |what: String| ProcessError::Restart {
        target: target.to_string(),
        what,
    };
    let out = RestartOutput::create().map_err(|e| fail(format!("cannot keep its output: {e}")))?;
    let result = run_shell_to(cmd, RESTART_LIMIT, out.stdio());
    let took = started.elapsed();
    let tail = out.tail();
    match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(fail(format!(
            "`{cmd}` exited with status {code} after {}{tail}",
            humantime::format_duration(round_ms(took))
        ))),
        Err(what) => Err(fail(format!("{what}{tail}"))),
    }
}

/// How long a restart command may take to return (it must start the process in the background).
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// How many of the last output lines a failed restart quotes.
const OUTPUT_TAIL_LINES: usize = 5;

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Runs `sh -c cmd` with stdout and stderr going to `output`, waiting at most `limit`; its exit
/// code.
fn run_shell_to(cmd: &str, limit: Duration, output: Option<(Stdio, Stdio)>) -> Result<i32, String> {
    let (stdout, stderr) = output.unwrap_or_else(|| (Stdio::null(), Stdio::null()));
    let mut child = spawn_sh(cmd, stdout, stderr)?;
    wait_bounded(
        &mut child,
        cmd,
        limit,
        "timed out: it must start the process in the background and return",
    )
}

/// A restart command's output, kept in a file rather than a pipe: the process it starts in the
/// background inherits the descriptor, and a pipe would stay open as long as that process lives.
struct RestartOutput {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl RestartOutput {
    fn create() -> std::io::Result<RestartOutput> {
        let path = std::env::temp_dir().join(format!(
            "chaosbot-restart-{}-{}.log",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&path)?;
        Ok(RestartOutput {
            path,
            file: Some(file),
        })
    }

    fn stdio(&self) -> Option<(Stdio, Stdio)> {
        let f = self.file.as_ref()?;
        Some((
            Stdio::from(f.try_clone().ok()?),
            Stdio::from(f.try_clone().ok()?),
        ))
    }

    /// "; last output: a | b" (the last few non-empty lines), or nothing when it printed none.
    fn tail(&self) -> String {
        let text = std::fs::read(&self.path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return "; it printed nothing".into();
        }
        let from = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
        let mut tail = lines[from..].join(" | ");
        if tail.chars().count() > 400 {
            tail = tail.chars().take(400).collect::<String>() + "…";
        }
        format!("; last output: {tail}")
    }
}

impl Drop for RestartOutput {
    fn drop(&mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A one-shot undo shared by the revert and the deadline thread: whoever comes first runs it.
struct Undo {
    done: Mutex<bool>,
    wake: Condvar,
    action: Box<dyn Fn() -> Result<String, ProcessError> + Send + Sync>,
    /// Why the undo failed, when it did: asked again (the engine retries a revert, or the
    /// deadline thread ran it first), it says so again instead of "already done".
    failed: Mutex<Option<String>>,
}

impl Undo {
    fn new(action: Box<dyn Fn() -> Result<String, ProcessError> + Send + Sync>) -> Undo {
        Undo {
            done: Mutex::new(false),
            wake: Condvar::new(),
            action,
            failed: Mutex::new(None),
        }
    }

    /// Runs the undo unless it already ran; Ok(None) when it had and succeeded, the same
    /// error when it had and failed.
    fn run_once(&self) -> Result<Option<String>, ProcessError> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return match self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some(why) => Err(ProcessError::UndoFailed(why)),
                None => Ok(None),
            };
        }
        // Marked done even on error: a restart that failed is reported, not re-run by the
        // deadline thread behind the operator's back.
        *done = true;
        let r = (self.action)();
        if let Err(e) = &r {
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        self.wake.notify_all();
        r.map(Some)
    }

    /// The dead-man's switch: an OS thread that undoes at the deadline unless told it is done.
    fn arm(self: &Arc<Self>, deadline: Instant, what: String) {
        let me = Arc::clone(self);
        let label = what.clone();
        let spawned = std::thread::Builder::new()
            .name("chaosbot-deadline".into())
            .spawn(move || {
                let mut done = me.done.lock().unwrap_or_else(|p| p.into_inner());
                while !*done {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    done = match me.wake.wait_timeout(done, deadline - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                if *done {
                    return;
                }
                drop(done);
                warn!(%what, "fault deadline reached before a revert; undoing it now");
                if let Err(e) = me.run_once() {
                    warn!(%what, error = %e, "undo at the deadline failed");
                }
            });
        if let Err(e) = spawned {
            // Without the switch the engine's revert still runs; say so loudly.
            warn!(what = %label, error = %e, "cannot start the deadline thread");
        }
    }

    /// Wakes the deadline thread so it exits (after the undo ran).
    fn disarm(&self) {
        self.wake.notify_all();
    }
}

struct ActiveProcessFault {
    undo: Arc<Undo>,
    summary: String,
}

#[async_trait::async_trait]
impl super::ActiveFault for ActiveProcessFault {
    async fn revert(&self) -> Result<(), super::FaultError> {
        let undo = Arc::clone(&self.undo);
        // The restart command may take seconds: keep it off the async workers.
        let r = tokio::task::spawn_blocking(move || {
            let r = undo.run_once();
            undo.disarm();
            r
        })
        .await
        .map_err(|e| super::FaultError::Other(format!("the revert task failed: {e}")))?;
        match r {
            Ok(Some(what)) => {
                info!(%what, "process fault reverted");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

fn pid_list(pids: &[ProcIdentity]) -> String {
    let list: Vec<String> = pids.iter().take(5).map(|p| p.pid.to_string()).collect();
    let more = if pids.len() > 5 {
        format!(" and {} more", pids.len() - 5)
    } else {
        String::new()
    };
    format!("{}{more}", list.join(", "))
}

/// The process family.
pub struct ProcessFaults;

fn action_of(step: &FaultStep) -> Result<&ProcessAction, super::FaultError> {
    match &step.fault {
        FaultSpec::Process { action } => Ok(action),
        _ => Err(super::FaultError::Other(format!(
            "step `{}` is not a process fault",
            step.name
        ))),
    }
}

#[async_trait::async_trait]
impl super::FaultFamily for ProcessFaults {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn prepare(
        &self,
        step: &FaultStep,
        ctx: &super::InjectContext<'_>,
    ) -> Result<serde_json::Value, super::FaultError> {
        let action = action_of(step)?.clone();
        let declared = ctx
            .targets
            .config()
            .process_target(&step.target)
            .cloned()
            .ok_or_else(|| ProcessError::Undeclared(step.target.clone()))?;
        let restart_command = match &action {
            ProcessAction::Kill { restart: true, .. } => {
                Some(declared.restart_command.clone().ok_or_else(|| {
                    ProcessError::Restart {
                        target: declared.name.clone(),
                        what: "the step asks for `restart: true` but the target declares no `restart_command`".into(),
                    }
                })?)
            }
            _ => None,
        };
        let pids = tokio::task::spawn_blocking(move || resolve(&declared))
            .await
            .map_err(|e| super::FaultError::Other(format!("the resolve task failed: {e}")))??;
        let prepared = Prepared {
            action,
            target: step.target.clone(),
            pids,
            restart_command,
        };
        serde_json::to_value(&prepared)
            .map_err(|e| super::FaultError::Other(format!("cannot encode the pids: {e}")))
    }

    async fn inject(
        &self,
        step: &FaultStep,
        ctx: &super::InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn super::ActiveFault>, super::FaultError> {
        let p: Prepared = serde_json::from_value(prepared.clone())
            .map_err(|e| ProcessError::Record(e.to_string()))?;
        let target = p.target.clone();
        match p.action {
            ProcessAction::Pause => {
                let mut stopped: Vec<ProcIdentity> = Vec::new();
                for pid in &p.pids {
                    if let Err(e) = signal(&target, pid, libc::SIGSTOP, "paused") {
                        // Put back what this step already stopped before reporting.
                        resume_all(&target, &stopped);
                        return Err(e.into());
                    }
                    stopped.push(pid.clone());
                }
                // SIGSTOP lands when the target is next scheduled: wait (briefly) until the
                // kernel shows it stopped, so "injected" means paused.
                let settle = Instant::now();
                while settle.elapsed() < Duration::from_millis(500)
                    && stopped
                        .iter()
                        .any(|p| !matches!(process_state(p.pid), Some('T') | Some('Z') | None))
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let summary = format!(
                    "paused {} process(es) of `{target}` (pid {})",
                    stopped.len(),
                    pid_list(&stopped)
                );
                let (t, s) = (target.clone(), stopped.clone());
                let undo = Arc::new(Undo::new(Box::new(move || {
                    let (resumed, gone) = resume_all(&t, &s);
                    Ok(format!(
                        "resumed {resumed} process(es) of `{t}`{}",
                        if gone > 0 {
                            format!(" ({gone} exited while paused)")
                        } else {
                            String::new()
                        }
                    ))
                })));
                undo.arm(ctx.deadline, format!("pause of `{target}`"));
                info!(step = %step.name, %summary, "processes paused");
                Ok(Box::new(ActiveProcessFault { undo, summary }))
            }
            ProcessAction::Kill { signal: sig, .. } => {
                let mut hit = 0usize;
                let mut failure = None;
                for pid in &p.pids {
                    match signal(&target, pid, sig.number(), "signalled") {
                        Ok(()) => hit += 1,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failure {
                    // Something was killed already: bring it back before failing the step.
                    if hit > 0
                        && let Some(cmd) = p.restart_command.clone()
                    {
                        let t = target.clone();
                        let r = tokio::task::spawn_blocking(move || run_restart(&t, &cmd)).await;
                        if let Ok(Err(re)) = r {
                            warn!(error = %re, "restart after a partial kill failed");
                        }
                    }
                    return Err(e.into());
                }
                let summary = format!(
                    "sent {sig} to {hit} process(es) of `{target}` (pid {}){}",
                    pid_list(&p.pids),
                    if p.restart_command.is_some() {
                        ", restart when the step ends"
                    } else {
                        ""
                    }
                );
                let (t, cmd) = (target.clone(), p.restart_command.clone());
                let undo = Arc::new(Undo::new(Box::new(move || match &cmd {
                    Some(c) => run_restart(&t, c).map(|()| format!("restarted `{t}`")),
                    None => Ok(format!("nothing to undo for `{t}` (no restart asked)")),
                })));
                if p.restart_command.is_some() {
                    undo.arm(ctx.deadline, format!("restart of `{target}`"));
                }
                info!(step = %step.name, %summary, "processes signalled");
                Ok(Box::new(ActiveProcessFault { undo, summary }))
            }
        }
    }

    async fn recover(&self, record: &FaultRecord) -> Result<String, super::FaultError> {
        let p: Prepared = serde_json::from_value(record.detail.clone())
            .map_err(|e| ProcessError::Record(e.to_string()))?;
        let out = tokio::task::spawn_blocking(move || -> Result<String, ProcessError> {
            match &p.action {
                ProcessAction::Pause => {
                    let (resumed, gone) = resume_all(&p.target, &p.pids);
                    Ok(format!(
                        "resumed {resumed} paused process(es) of `{}` (SIGCONT){}",
                        p.target,
                        if gone > 0 {
                            format!("; {gone} had exited")
                        } else {
                            String::new()
                        }
                    ))
                }
                ProcessAction::Kill { .. } => match &p.restart_command {
                    Some(cmd) => {
                        run_restart(&p.target, cmd)?;
                        Ok(format!("ran the restart command of `{}`", p.target))
                    }
                    None => Ok(format!(
                        "signal to `{}` needs no undo (no restart asked)",
                        p.target
                    )),
                },
            }
        })
        .await
        .map_err(|e| super::FaultError::Other(format!("the recovery task failed: {e}")))??;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_with_or_without_sig() {
        assert_eq!(Signal::parse("term"), Some(Signal::Term));
        assert_eq!(Signal::parse("SIGKILL"), Some(Signal::Kill));
        assert_eq!(Signal::parse("usr2"), Some(Signal::Usr2));
        assert_eq!(Signal::parse("STOP"), None);
        assert_eq!(Signal::Kill.to_string(), "SIGKILL");
    }

    #[test]
    fn init_self_and_threads_are_forbidden() {
        assert!(forbidden(0).is_some());
        assert!(forbidden(-1).is_some());
        assert!(forbidden(1).is_some());
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(forbidden(me).is_some());
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
        });
        let other = rx.recv().unwrap();
        h.join().unwrap();
        assert!(tid == me || forbidden(tid).is_some());
        // The thread has exited; its id is gone or forbidden either way.
        assert!(forbidden(other).is_some() || stat(other).is_none());
    }

    #[test]
    fn stat_reads_our_own_start_time() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, start, _) = stat(me).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(start > 0);
    }
}
