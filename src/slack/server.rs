//! `chaosbot serve`: the composition root of the long-running process. One process holds the
//! HTTP server for Slack (or the Socket Mode connection), the worker pool, the proxies of every
//! declared target, the projector that renders runs into the channel, and the outbox that
//! delivers to Slack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::api::{HttpSlackApi, SlackApi, install_crypto_provider};
use super::edge::{SlackApp, SlashCommand, http::router};
use super::outbox::{Outbox, OutboxOptions};
use super::projector::Projector;
use super::socket::{SocketHandler, SocketKind, SocketModeClient};
use crate::config::{Config, DEFAULT_SLACK_API_URL};
use crate::engine::{Engine, EngineOptions};
use crate::faults::TargetRegistry;
use crate::store::DynStore;

/// What `serve` needs and does not have: said before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "SLACK_SIGNING_SECRET is not set: chaosbot checks every request from Slack with it. Copy it from your app's Basic Information page into SLACK_SIGNING_SECRET (or [slack] signing_secret)"
    )]
    NoSigningSecret,
    #[error(
        "SLACK_BOT_TOKEN is not set: chaosbot needs the bot token (xoxb-…) to post to Slack. Copy it from OAuth & Permissions into SLACK_BOT_TOKEN (or [slack] bot_token)"
    )]
    NoBotToken,
}

/// Checks the settings `serve` cannot run without.
pub fn check_settings(cfg: &Config) -> Result<(), ServeError> {
    if cfg.slack.signing_secret.is_none() {
        return Err(ServeError::NoSigningSecret);
    }
    if cfg.slack.bot_token.is_none() {
        return Err(ServeError::NoBotToken);
    }
    Ok(())
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub outbox: Outbox,
    pub app: Arc<SlackApp>,
    stop: CancellationToken,
    scheduler_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    outbox_task: JoinHandle<()>,
    /// Game days: stopped before the engine, so a shutdown never reads as a run's end.
    gameday_stop: CancellationToken,
    gameday_task: JoinHandle<()>,
}

/// Answers Socket Mode envelopes with the same handlers the HTTP routes use.
struct SocketBridge(Arc<SlackApp>);

#[async_trait::async_trait]
impl SocketHandler for SocketBridge {
    async fn handle(
        &self,
        kind: SocketKind,
        payload: serde_json::Value,
    ) -> Option<serde_json::Value> {
        match kind {
            SocketKind::SlashCommands => match SlashCommand::from_json(payload) {
                Ok(cmd) => Some(self.0.handle_command(cmd).await),
                Err(e) => {
                    warn!(error = %e, "malformed slash command over Socket Mode");
                    None
                }
            },
            SocketKind::EventsApi => self.0.handle_event(payload, None).await,
            SocketKind::Interactive => {
                let v = self.0.handle_interaction(payload).await;
                (!v.is_null()).then_some(v)
            }
        }
    }
}

impl Server {
    /// Starts everything on `listener`. The caller has checked [`check_settings`].
    pub async fn start(
        cfg: Config,
        store: DynStore,
        listener: TcpListener,
    ) -> anyhow::Result<Server> {
        Server::start_with_clock(cfg, store, listener, crate::clock::system()).await
    }

    /// Like [`Server::start`], with the clock planned times are read from (schedules; a
    /// [`crate::clock::ManualClock`] in tests).
    pub async fn start_with_clock(
        cfg: Config,
        store: DynStore,
        listener: TcpListener,
        clock: crate::clock::DynClock,
    ) -> anyhow::Result<Server> {
        check_settings(&cfg)?;
        install_crypto_provider();
        let cfg = Arc::new(cfg);
        let api_url = cfg
            .slack
            .api_url
            .clone()
            .unwrap_or_else(|| DEFAULT_SLACK_API_URL.to_string());
        let bot_token = cfg
            .slack
            .bot_token
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let api: Arc<dyn SlackApi> = Arc::new(
            HttpSlackApi::new(&api_url, &bot_token)
                .with_context(|| format!("SLACK_API_URL `{api_url}` is not a usable URL"))?,
        );

        // Proxies of every declared target run all the time, so traffic always flows.
        let targets = TargetRegistry::new(cfg.clone());
        let mut opts = EngineOptions::new(cfg.guard_rails.clone());
        opts.agents = crate::engine::agents::for_binary(&cfg).context("cannot reach the agents")?;
        let stop = CancellationToken::new();
        let mut keep_up = None;
        match &opts.agents {
            Some(router) => {
                let names: Vec<String> = cfg.targets.proxy.iter().map(|p| p.name.clone()).collect();
                if !names.is_empty() {
                    router.proxies_up(&names, false).await.context(
                        "cannot start the proxies of the declared targets on their agents",
                    )?;
                }
                // Kept up for the server's whole life, so traffic always flows.
                keep_up = Some(tokio::spawn(
                    Arc::clone(router).keep_proxies_up(names, stop.clone()),
                ));
            }
            None => targets
                .start_all()
                .await
                .context("cannot start the proxies of the declared targets")?,
        }
        let engine = Engine::new(store.clone(), targets, opts);
        let recovered = engine.start().await.context("cannot start the engine")?;
        for id in &recovered {
            warn!(run_id = %id, "recovered a run left in flight by a process that died");
        }

        let outbox = Outbox::new(
            store.clone(),
            api.clone(),
            OutboxOptions {
                post_interval: cfg.slack.post_interval,
                post_burst: cfg.slack.post_burst,
                ..OutboxOptions::default()
            },
        );
        let outbox_task = outbox.start();
        let mut tasks: Vec<_> = keep_up.into_iter().collect();
        // Run pages: the parent message links to them when a public URL is set.
        let links = crate::web::link::Links::from_config(&cfg);
        let projector = {
            let outbox = outbox.clone();
            Projector::with_links(store.clone(), cfg.qa.clone(), links.clone(), move || {
                outbox.notify()
            })
        };
        tasks.push(tokio::spawn(
            projector.run(engine.subscribe(), stop.clone()),
        ));

        let app = Arc::new(SlackApp {
            engine: engine.clone(),
            store: store.clone(),
            cfg: cfg.clone(),
            api: api.clone(),
            bot_user_id: std::sync::OnceLock::new(),
            qa_boards: Default::default(),
            clock: clock.clone(),
        });
        // Schedules: stopped first on shutdown, so nothing new starts while runs wind down.
        let scheduler_stop = CancellationToken::new();
        tasks.push(tokio::spawn(
            crate::slack::scheduler::Scheduler::new(app.clone(), clock).run(scheduler_stop.clone()),
        ));
        // Who the bot is, to ignore its own messages. Asked in the background: a slow or
        // unreachable Slack must not hold up start-up (bot_id still identifies its messages).
        {
            let app = app.clone();
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(30), api.call("auth.test", serde_json::json!({}))).await {
                    Ok(Ok(v)) => {
                        if let Some(id) = v["user_id"].as_str() {
                            let _ = app.bot_user_id.set(id.to_string());
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "auth.test failed; the bot's own messages are recognised by bot_id only"),
                    Err(_) => warn!("auth.test did not answer within 30s; the bot's own messages are recognised by bot_id only"),
                }
            }));
        }

        // The weekly digest, when a channel is configured.
        if let Some(channel) = cfg.digest.enabled_channel() {
            let time = cfg
                .digest
                .time()
                .context("the [digest] settings are not usable")?;
            let outbox = outbox.clone();
            let task = super::digest::DigestTask {
                store: store.clone(),
                // The app's clock, as schedules use: a test's manual clock moves the digest too.
                clock: app.clock.clone(),
                channel: channel.to_string(),
                time,
                // A look is one store read; a digest due at 14:30 goes out by 14:30:05.
                poll: Duration::from_secs(5),
                instance: format!("pid-{}", std::process::id()),
                notify: Arc::new(move || outbox.notify()),
            };
            tasks.push(tokio::spawn(task.run(stop.clone())));
            info!(%channel, weekday = %time.weekday, at = %time.at, timezone = %time.timezone, "weekly digest on");
        }
        // Game days: resumes those left open by an earlier process (or a dead replica).
        let gameday_stop = CancellationToken::new();
        let gameday_task = {
            let outbox = outbox.clone();
            let driver = crate::slack::gameday::GamedayDriver::new(
                app.clone(),
                app.clock.clone(),
                crate::slack::gameday::GamedayOptions::default(),
                move || outbox.notify(),
            );
            tokio::spawn(driver.run(gameday_stop.clone()))
        };

        if let Some(app_token) = &cfg.slack.app_token {
            let client = SocketModeClient::new(
                &api_url,
                app_token.expose(),
                Arc::new(SocketBridge(app.clone())),
            )
            .with_context(|| format!("SLACK_API_URL `{api_url}` is not a usable URL"))?;
            tasks.push(client.start(stop.clone()));
            info!("Socket Mode on: commands, events and interactions arrive over the WebSocket");
        }

        let addr = listener.local_addr()?;
        let http_stop = stop.clone();
        let pages = {
            let engine = engine.clone();
            crate::web::Pages::new(store.clone(), links, Arc::new(move || engine.subscribe()))
        };
        let routes = router(app.clone()).merge(crate::web::router(pages));
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, routes)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "the HTTP server stopped");
            }
        }));
        info!(%addr, "chaosbot serve is listening");
        Ok(Server {
            addr,
            engine,
            outbox,
            app,
            stop,
            scheduler_stop,
            tasks,
            outbox_task,
            gameday_stop,
            gameday_task,
        })
    }

    /// Graceful stop: halts running runs (they revert and journal), renders what they wrote,
    /// gives the outbox a moment to deliver it (the rest is delivered after the next start),
    /// then stops.
    pub async fn shutdown(self, reason: &str) {
        // Game days first: they hand their leases back and leave their progress as it is.
        self.gameday_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.gameday_task).await;
        self.scheduler_stop.cancel();
        self.engine.shutdown(reason, Duration::from_secs(60)).await;
        // The projector renders on stop; then the outbox gets a few seconds to flush.
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let store = self.app.store.clone();
        for _ in 0..50 {
            match store.pending_count().await {
                Ok(0) | Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.outbox.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.outbox_task).await;
    }
}
