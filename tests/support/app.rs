//! `chaosbot serve` in-process for Slack end-to-end tests: a fresh directory with a catalog and
//! a SQLite database, the loopback service behind the proxy target `api`, a fake Slack, and
//! the config tying them together. The server listens on port 0; requests to it are signed
//! the way Slack signs them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chaosbot::clock::DynClock;
use chaosbot::config::{AllowRule, Config};
use chaosbot::slack::server::Server;
use chaosbot::store::DynStore;
use serde_json::Value;

use super::fake_slack::{Call, FakeSlack};
use super::{Service, config, free_port, service, slack};

/// The workspace and the channel every suite talks in.
pub const TEAM: &str = "T1";
pub const CHANNEL: &str = "CCHAOS";
/// The operator the default settings name.
pub const OPERATOR: &str = "UOPS";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub fake: FakeSlack,
    /// What [`TestApp::start`] serves with; change it before starting.
    pub cfg: Config,
    pub service: Service,
    /// The signing secret requests are signed with.
    pub secret: &'static str,
    /// The clock servers run on; the system's when `None`.
    pub clock: Option<DynClock>,
}

impl TestApp {
    /// Everything but the experiments: an empty catalog, Slack settings with `secret`, the
    /// fake's URL, team [`TEAM`], [`OPERATOR`] as operator, and anyone allowed to run
    /// anything in [`CHANNEL`].
    pub async fn new(secret: &'static str) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSlack::start().await;
        let service = service().await;
        let catalog = dir.path().join("experiments");
        std::fs::create_dir_all(&catalog).unwrap();
        let mut cfg = config(free_port(), service.addr);
        cfg.catalog = catalog;
        cfg.database_url = Some(format!("sqlite://{}", dir.path().join("runs.db").display()));
        cfg.slack = slack::settings(
            secret,
            fake.url(),
            TEAM,
            &[OPERATOR],
            vec![AllowRule {
                experiments: vec!["*".into()],
                users: vec![],
                channels: vec![CHANNEL.into()],
            }],
        );
        TestApp {
            dir,
            fake,
            cfg,
            service,
            secret,
            clock: None,
        }
    }

    /// Writes `text` to `file` in the catalog (`gamedays/x.yaml` creates the folder).
    pub fn add_to_catalog(&self, file: &str, text: &str) {
        let path = self.cfg.catalog.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    pub fn catalog(&self) -> &Path {
        &self.cfg.catalog
    }

    /// A new handle on the app's database.
    pub async fn store(&self) -> DynStore {
        chaosbot::store::open(self.cfg.database_url())
            .await
            .unwrap()
    }

    /// A server on `cfg` (as it is now) and the app's database, on a free loopback port.
    pub async fn start(&self) -> Server {
        let store = self.store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match &self.clock {
            Some(clock) => {
                Server::start_with_clock(self.cfg.clone(), store, listener, clock.clone())
                    .await
                    .unwrap()
            }
            None => Server::start(self.cfg.clone(), store, listener)
                .await
                .unwrap(),
        }
    }

    /// Another replica of the server on the Postgres database `url`, with its own store pool
    /// (as another process has) and its own proxy port for the `api` target, which its probes
    /// go through (so its runs do not depend on another replica's proxy).
    pub async fn start_replica(&self, url: &str) -> Server {
        let mut cfg = self.cfg.clone();
        cfg.database_url = Some(url.to_string());
        let listen = free_port();
        cfg.targets.proxy[0].listen = listen;
        cfg.targets.http[0].url = format!("http://{listen}");
        let store = chaosbot::store::open(url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match &self.clock {
            Some(clock) => Server::start_with_clock(cfg, store, listener, clock.clone())
                .await
                .unwrap(),
            None => Server::start(cfg, store, listener).await.unwrap(),
        }
    }

    /// POSTs a signed form to `path`; the status and the body.
    pub async fn post_signed(&self, addr: SocketAddr, path: &str, body: String) -> (u16, String) {
        slack::post_signed(self.secret, addr, path, slack::FORM, body).await
    }

    /// `/chaos <text>` from `user` in [`CHANNEL`]; the JSON answer.
    pub async fn slash(&self, addr: SocketAddr, user: &str, text: &str) -> Value {
        slack::slash(self.secret, addr, (TEAM, CHANNEL), user, text).await
    }

    /// An Events API callback carrying `event`.
    pub async fn event(&self, addr: SocketAddr, event_id: &str, event: Value) {
        slack::event(self.secret, addr, TEAM, event_id, event).await
    }

    /// An interaction payload; the status and the body.
    pub async fn interaction(&self, addr: SocketAddr, payload: &Value) -> (u16, String) {
        slack::interaction(self.secret, addr, payload).await
    }

    /// `user` presses the button `action_id` (carrying `value`) in [`CHANNEL`]; the status
    /// and the body.
    pub async fn press(
        &self,
        addr: SocketAddr,
        user: &str,
        action_id: &str,
        value: &str,
    ) -> (u16, String) {
        let payload = slack::button_press(TEAM, CHANNEL, user, action_id, value);
        self.interaction(addr, &payload).await
    }

    /// Waits up to `timeout` for a delivered reply in the thread under `thread_ts` (in any
    /// thread when `None`) that satisfies `pred`; that reply.
    pub async fn wait_reply(
        &self,
        thread_ts: Option<&str>,
        pred: impl Fn(&Call) -> bool,
        timeout: Duration,
    ) -> Call {
        let calls = self
            .fake
            .wait_for(|c| replies(c, thread_ts).into_iter().any(&pred), timeout)
            .await;
        replies(&calls, thread_ts)
            .into_iter()
            .find(|c| pred(c))
            .cloned()
            .unwrap()
    }
}

/// The replies Slack took (`chat.postMessage` answered 200 with a `thread_ts`), in the thread
/// under `thread_ts` or, when `None`, in any thread.
pub fn replies<'a>(calls: &'a [Call], thread_ts: Option<&str>) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.status == 200)
        .filter(|c| match thread_ts {
            Some(ts) => c.str("thread_ts") == Some(ts),
            None => c.body.get("thread_ts").is_some(),
        })
        .collect()
}

/// The run id (`r-` and ten characters) an answer names.
pub fn run_id_in(text: &str) -> String {
    let at = text
        .find("r-")
        .unwrap_or_else(|| panic!("the answer names the run: {text}"));
    text[at..at + 12].to_string()
}
