//! The local agent, on demand: one `chaosbot agent --on-demand` per user, on a Unix socket,
//! started by whichever controller needs it first and shared by the others. It exits by
//! itself when idle, so there is nothing to set up or stop.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::client::AgentClient;
use super::protocol::{
    self, Applied, FaultList, Hello, ProxiesAnswer, ProxiesUp, Renewed, Reverted,
};
use super::{AgentError, AgentLink};

/// The name the local agent goes by in messages and in `chaosbot agents`.
pub const LOCAL: &str = "local";
/// How long a freshly started agent may take to answer.
const START_PATIENCE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// The socket of the local agent: `[agent] socket`, else CHAOSBOT_AGENT_SOCKET, else
/// `$XDG_RUNTIME_DIR/chaosbot/agent.sock`, else `/tmp/chaosbot-<uid>/agent.sock`.
pub fn socket_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("CHAOSBOT_AGENT_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("chaosbot").join("agent.sock");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/chaosbot-{uid}")).join("agent.sock")
}

/// Creates the directory of the local agent's `socket` when missing, readable by this user
/// only (the socket's mode is the credential); why not, otherwise.
pub fn create_private_dir(socket: &Path) -> Result<(), String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "cannot create the local agent's directory {}: {e}",
                dir.display()
            )
        })
}

/// The local agent as an [`AgentLink`]: started on first need, restarted when a call that
/// puts something in place finds nothing answering.
pub struct LocalAgent {
    socket: PathBuf,
    client: AgentClient,
    /// One start at a time from this process.
    starting: Mutex<()>,
}

impl LocalAgent {
    pub fn new(socket: PathBuf) -> Result<LocalAgent, AgentError> {
        let client =
            AgentClient::unix(LOCAL, socket.clone(), None).map_err(|e| AgentError::Refused {
                agent: LOCAL.into(),
                code: "client".into(),
                message: e.to_string(),
            })?;
        Ok(LocalAgent {
            socket,
            client,
            starting: Mutex::new(()),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn log_path(&self) -> PathBuf {
        self.socket.with_file_name("agent.log")
    }

    /// Says hello, starting the agent first when nothing answers.
    pub async fn ensure(&self) -> Result<Hello, AgentError> {
        match self.client.hello().await {
            Err(e) if e.is_unreachable() => {}
            other => return other,
        }
        let _one = self.starting.lock().await;
        // Another task of this process may have started it while we waited.
        match self.client.hello().await {
            Err(e) if e.is_unreachable() => {}
            other => return other,
        }
        self.spawn()?;
        let until = Instant::now() + START_PATIENCE;
        let mut last = None;
        while Instant::now() < until {
            tokio::time::sleep(POLL).await;
            match self.client.hello().await {
                Ok(h) => {
                    info!(socket = %self.socket.display(), "local agent started");
                    return Ok(h);
                }
                // Another controller's agent may win the race for the state dir: keep polling.
                Err(e) if e.is_unreachable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let why = match last {
            Some(AgentError::Unreachable { why, .. }) => why,
            Some(e) => e.to_string(),
            None => "no answer".into(),
        };
        Err(AgentError::Unreachable {
            agent: LOCAL.into(),
            address: self.socket.display().to_string(),
            why: format!(
                "it did not answer within {}s of being started ({why}); see its log {}",
                START_PATIENCE.as_secs(),
                self.log_path().display()
            ),
        })
    }

    /// Starts `<exe> agent --on-demand --socket PATH`, detached so it outlives this command.
    fn spawn(&self) -> Result<(), AgentError> {
        let fail = |why: String| AgentError::Unreachable {
            agent: LOCAL.into(),
            address: self.socket.display().to_string(),
            why,
        };
        create_private_dir(&self.socket).map_err(fail)?;
        let dir = self.socket.parent().unwrap_or(Path::new("/"));
        // Only this user may reach the socket (its mode is the credential).
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn!(dir = %dir.display(), "the local agent's directory is open to other users; only the socket's mode protects it");
        }
        let exe = match std::env::var_os("CHAOSBOT_AGENT_BIN").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .map_err(|e| fail(format!("cannot find this program to start the agent: {e}")))?,
        };
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                fail(format!(
                    "cannot open the agent log {}: {e}",
                    log_path.display()
                ))
            })?;
        let log2 = log.try_clone().map_err(|e| {
            fail(format!(
                "cannot open the agent log {}: {e}",
                log_path.display()
            ))
        })?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("agent")
            .arg("--on-demand")
            .arg("--socket")
            .arg(&self.socket);
        // How long it stays without work (tests shorten it); the agent checks the value.
        if let Some(idle) = std::env::var_os("CHAOSBOT_AGENT_IDLE_EXIT").filter(|v| !v.is_empty()) {
            cmd.arg("--idle-exit").arg(idle);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                fail(format!(
                    "cannot start `{} agent --on-demand`: {e}; set CHAOSBOT_AGENT_BIN to the chaosbot binary",
                    exe.display()
                ))
            })?;
        info!(pid = child.id(), exe = %exe.display(), socket = %self.socket.display(), "starting the local agent");
        // Reap it if it exits while we live (a loser of the start race exits at once).
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl AgentLink for LocalAgent {
    fn name(&self) -> &str {
        LOCAL
    }

    async fn hello(&self) -> Result<Hello, AgentError> {
        self.ensure().await
    }

    async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, AgentError> {
        match self.client.proxies_up(req).await {
            Err(e) if e.is_unreachable() => {
                self.ensure().await?;
                self.client.proxies_up(req).await
            }
            other => other,
        }
    }

    async fn apply(&self, req: &protocol::Apply) -> Result<Applied, AgentError> {
        match self.client.apply(req).await {
            Err(e) if e.is_unreachable() => {
                self.ensure().await?;
                self.client.apply(req).await
            }
            other => other,
        }
    }

    async fn renew(&self, req: &protocol::Renew) -> Result<Renewed, AgentError> {
        self.client.renew(req).await
    }

    async fn revert(&self, fault_id: &str, req: &protocol::Revert) -> Result<Reverted, AgentError> {
        self.client.revert(fault_id, req).await
    }

    async fn faults(&self) -> Result<FaultList, AgentError> {
        self.client.faults().await
    }
}
