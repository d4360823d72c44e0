//! The lease keeper against a real local agent process: the controller loses contact (a cut
//! between the two, as a partition would), the agent reverts by itself when the lease lapses,
//! and when contact returns the journal says what the agent did and the run closes cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chaosbot::agent::client::AgentClient;
use chaosbot::agent::protocol::{
    Applied, Apply, FaultList, Hello, ProxiesAnswer, ProxiesUp, Renew, Renewed, Revert, Reverted,
};
use chaosbot::agent::{AgentError, AgentLink};
use chaosbot::engine::agents::AgentRouter;
use chaosbot::engine::{Engine, EngineOptions};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::{Event, RollbackOutcome, RunState};

use crate::support::*;

/// The real client, with renewals that can be cut (they fail as an unreachable agent's do).
struct Partition {
    inner: AgentClient,
    cut: AtomicBool,
}

impl Partition {
    fn check(&self) -> Result<(), AgentError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(AgentError::Unreachable {
                agent: "local".into(),
                address: "the test's cut".into(),
                why: "connection timed out".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AgentLink for Partition {
    fn name(&self) -> &str {
        "local"
    }
    async fn hello(&self) -> Result<Hello, AgentError> {
        self.check()?;
        self.inner.hello().await
    }
    async fn proxies_up(&self, req: &ProxiesUp) -> Result<ProxiesAnswer, AgentError> {
        self.check()?;
        self.inner.proxies_up(req).await
    }
    async fn apply(&self, req: &Apply) -> Result<Applied, AgentError> {
        self.check()?;
        self.inner.apply(req).await
    }
    async fn renew(&self, req: &Renew) -> Result<Renewed, AgentError> {
        self.check()?;
        self.inner.renew(req).await
    }
    async fn revert(&self, id: &str, req: &Revert) -> Result<Reverted, AgentError> {
        self.check()?;
        self.inner.revert(id, req).await
    }
    async fn faults(&self) -> Result<FaultList, AgentError> {
        self.check()?;
        self.inner.faults().await
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(socket: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_chaosbot"))
        .args(["agent", "--on-demand", "--idle-exit", "30s", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < until, "the agent never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Agent(child)
}

#[tokio::test]
async fn a_lost_agent_reverts_by_itself_and_the_journal_says_so_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&socket);
    let svc = service().await;
    let mut cfg = config(free_port(), svc.addr);
    cfg.agent.lease_ttl = Duration::from_secs(2);
    cfg.agent.renew_every = Duration::from_millis(500);
    let cfg = Arc::new(cfg);
    let link = Arc::new(Partition {
        inner: AgentClient::unix("local", socket.clone(), None).unwrap(),
        cut: AtomicBool::new(false),
    });
    let router = AgentRouter::with_links(cfg.clone(), link.clone(), vec![]);
    let mut opts = EngineOptions::new(cfg.guard_rails.clone());
    opts.agents = Some(Arc::new(router));
    let store = sqlite_store(dir.path()).await;
    let engine = Engine::new(store.clone(), TargetRegistry::new(cfg.clone()), opts);
    engine.start().await.unwrap();
    let listen = cfg.targets.proxy[0].listen;
    let exp = experiment(
        vec![http_probe("api", listen, 2_000, 200)],
        vec![latency_step("slow", 50, 8_000)],
        vec![],
    );
    let id = engine.submit(&exp, test_request()).await.unwrap();

    let injected = async {
        loop {
            let j = store.journal(&id, 0).await.unwrap();
            if j.iter()
                .any(|e| matches!(e.event, Event::FaultInjected { .. }))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), injected)
        .await
        .expect("the fault was never injected");
    link.cut.store(true, Ordering::SeqCst);
    // Past the 2 s lease: the agent reverts by itself.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    link.cut.store(false, Ordering::SeqCst);

    let run = tokio::time::timeout(Duration::from_secs(30), engine.wait(&id))
        .await
        .expect("the run never closed")
        .unwrap();
    assert_eq!(run.state, RunState::Done);
    let journal = store.journal(&id, 0).await.unwrap();
    let lost = journal
        .iter()
        .position(|e| matches!(&e.event, Event::AgentLost { agent, .. } if agent == "local"));
    let back = journal
        .iter()
        .position(|e| matches!(&e.event, Event::AgentBack { .. }));
    assert!(lost.is_some() && back > lost, "{journal:#?}");
    let Some(Event::AgentBack { reverted, .. }) = back.map(|i| &journal[i].event) else {
        unreachable!()
    };
    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert_eq!(reverted[0].step, "slow");
    assert!(reverted[0].reason.contains("lease"), "{:?}", reverted[0]);
    // The step's own revert did not fail on a fault that was already gone.
    assert_eq!(
        run.rollback,
        Some(RollbackOutcome::Reverted),
        "{:?}",
        run.reason
    );
    assert!(store.open_faults(&id).await.unwrap().is_empty());
    engine.shutdown("test over", Duration::from_secs(5)).await;
}
