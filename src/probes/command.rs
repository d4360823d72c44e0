//! Runs a declared command once (a probe sample, an action step, a rollback): its exit code
//! and output, within a time limit. The command line is the operator's, from the config.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::spec::model::CommandRun;

/// Output kept per stream; more is cut (a probe's judgement needs the start, not a log).
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutput {
    /// The exit code; -1 when a signal ended it.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the command; `Err` when it cannot start or outlives `limit` (it is then killed).
pub async fn run(c: &CommandRun, limit: Duration) -> Result<CommandOutput, String> {
    let mut cmd = match &c.shell {
        Some(line) => {
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c").arg(line);
            cmd
        }
        None => {
            let Some((program, args)) = c.argv.split_first() else {
                return Err(format!("command `{}` has no program", c.target));
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", c.display()))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let work = async {
        let read = |s: Option<tokio::process::ChildStdout>| async move {
            let mut buf = Vec::new();
            if let Some(s) = s {
                let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        let read_err = |s: Option<tokio::process::ChildStderr>| async move {
            let mut buf = Vec::new();
            if let Some(s) = s {
                let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        let (stdout, stderr) = tokio::join!(read(out.take()), read_err(err.take()));
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(CommandOutput {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r.map_err(|e| format!("cannot wait for `{}`: {e}", c.display())),
        Err(_) => Err(format!(
            "`{}` still ran after {} and was killed",
            c.display(),
            humantime::format_duration(limit)
        )),
    }
}

impl CommandOutput {
    /// As Chaos Toolkit's process provider returns it: `{status, stdout, stderr}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"status": self.status, "stdout": self.stdout, "stderr": self.stderr})
    }
}
