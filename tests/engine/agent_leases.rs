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
use chaosbot::store::AbortScope;

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

/// A real local agent behind a [`Partition`], its lease 2 s (renewed every 500 ms), and an
/// engine on a SQLite store that reaches it through the partition.
struct Rig {
    _dir: tempfile::TempDir,
    _agent: Agent,
    _svc: Service,
    link: Arc<Partition>,
    store: chaosbot::store::DynStore,
    engine: Arc<Engine>,
    /// The proxy target's listen address.
    listen: std::net::SocketAddr,
    /// The engine's run lease.
    run_lease: Duration,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let agent = start_agent(&socket);
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
        let run_lease = opts.lease;
        let store = sqlite_store(dir.path()).await;
        let engine = Engine::new(store.clone(), TargetRegistry::new(cfg.clone()), opts);
        engine.start().await.unwrap();
        let listen = cfg.targets.proxy[0].listen;
        Rig {
            _dir: dir,
            _agent: agent,
            _svc: svc,
            link,
            store,
            engine,
            listen,
            run_lease,
        }
    }
}

#[tokio::test]
async fn a_lost_agent_reverts_by_itself_and_the_journal_says_so_when_it_is_back() {
    let Rig {
        _dir,
        _agent,
        _svc,
        link,
        store,
        engine,
        listen,
        ..
    } = Rig::start().await;
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

/// With `on_owner_loss: continue` a run's agent faults are leased past the run lease (plus
/// `ADOPTION_MARGIN`), so when their owner stops renewing (dead, on another host than the
/// replica that adopts the run) they are still in place when the adopter comes; with the
/// default `revert` they keep the agent's short `lease_ttl` and go by themselves first.
#[tokio::test]
async fn a_continue_run_leases_its_faults_past_the_run_lease_and_a_revert_run_does_not() {
    use chaosbot::engine::agents::ADOPTION_MARGIN;
    use chaosbot::spec::model::OnOwnerLoss;
    let Rig {
        _dir,
        _agent,
        _svc,
        link,
        store: _,
        engine,
        listen,
        run_lease,
    } = Rig::start().await;

    for (mode, step) in [
        (OnOwnerLoss::Continue, "held"),
        (OnOwnerLoss::Revert, "short"),
    ] {
        let mut exp = experiment(
            vec![http_probe("api", listen, 2_000, 200)],
            vec![latency_step(step, 50, 20_000)],
            vec![],
        );
        exp.on_owner_loss = mode;
        let id = engine.submit(&exp, test_request()).await.unwrap();
        let fault_id = format!("{id}/{step}");
        let view = async {
            loop {
                let list = link.inner.faults().await.unwrap();
                if let Some(f) = list.faults.into_iter().find(|f| f.fault_id == fault_id) {
                    return f;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let f = tokio::time::timeout(Duration::from_secs(10), view)
            .await
            .expect("the fault was never applied");
        let leased = Duration::from_millis((f.lease_until_ms - f.applied_ms).max(0) as u64);
        // Renewals stop, as they do when the owner dies; past the agent's 2 s lease_ttl.
        link.cut.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let still = link
            .inner
            .faults()
            .await
            .unwrap()
            .faults
            .iter()
            .any(|f| f.fault_id == fault_id);
        link.cut.store(false, Ordering::SeqCst);
        match mode {
            OnOwnerLoss::Continue => {
                assert!(
                    leased >= run_lease + ADOPTION_MARGIN - Duration::from_secs(1),
                    "leased for {leased:?}"
                );
                assert!(
                    still,
                    "the fault went before another replica could adopt it"
                );
            }
            OnOwnerLoss::Revert => {
                assert!(leased <= Duration::from_secs(3), "leased for {leased:?}");
                assert!(!still, "the fault outlived its 2 s lease");
            }
        }
        engine
            .abort(AbortScope::Run(id.clone()), "test", "next case")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), engine.wait(&id))
            .await
            .expect("the run never closed")
            .unwrap();
        let gone = link
            .inner
            .faults()
            .await
            .unwrap()
            .faults
            .iter()
            .all(|f| f.fault_id != fault_id);
        assert!(gone, "the abort took the fault off");
    }
    engine.shutdown("test over", Duration::from_secs(5)).await;
}
