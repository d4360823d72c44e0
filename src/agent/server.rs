//! The agent's HTTP API ([`super::protocol`]) on a Unix socket, plain TCP (loopback only) or
//! TLS (optionally requiring client certificates), and the process around it: lock and replay
//! the journal, start the core, serve until SIGTERM/SIGINT (revert everything, exit 0) or,
//! for the local agent, until idle (no fault held and no request for the idle period).
//!
//! The routes and their guard are in [`super::api`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt as _;
use tracing::{info, warn};

use super::api::{Peer, Served, Transport, metrics_handle, router};
use super::config::{AgentConfig, Endpoint, TlsServer};
use super::core::AgentCore;
use super::journal::{Journal, JournalError};

/// Why the agent could not start (the CLI maps each to an exit code).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another agent holds the state dir.
    #[error(transparent)]
    Locked(JournalError),
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Runs the agent until it is told to stop (or, on demand, until idle).
pub async fn run(cfg: AgentConfig) -> Result<(), StartError> {
    let (journal, pending) = Journal::open(&cfg.state_dir).map_err(|e| match e {
        JournalError::Locked { .. } => StartError::Locked(e),
        other => StartError::Failed(other.into()),
    })?;
    metrics_handle();
    let core = AgentCore::start(&cfg, journal, pending)
        .await
        .map_err(StartError::Failed)?;
    serve(&cfg, core).await.map_err(StartError::Failed)
}

async fn serve(cfg: &AgentConfig, core: AgentCore) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let listener = Listener::bind(cfg).await?;
    let transport = listener.transport();
    let served = Arc::new(Served {
        core: core.clone(),
        secret: cfg.secret.clone(),
        transport,
    });
    let router = router(served);
    info!(agent = %cfg.name, endpoint = %cfg.endpoint, on_demand = cfg.on_demand, "agent listening");
    let mut idle_tick = tokio::time::interval(Duration::from_millis(250));
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = idle_tick.tick(), if cfg.idle_exit.is_some() => {
                if let (Some(limit), Some(idle)) = (cfg.idle_exit, core.idle_for().await)
                    && idle >= limit
                {
                    break "idle";
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    let router = router.clone();
                    tokio::spawn(async move { conn.serve(router, peer).await });
                }
                // Out of descriptors and the like: wait a moment rather than spin.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    };
    // No new requests to an agent that is going away.
    if let Endpoint::Unix(path) = &cfg.endpoint {
        let _ = std::fs::remove_file(path);
    }
    info!(agent = %cfg.name, why, "agent stopping: reverting every fault it holds");
    core.shutdown().await;
    info!(agent = %cfg.name, "agent stopped");
    Ok(())
}

enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
}

impl Listener {
    async fn bind(cfg: &AgentConfig) -> anyhow::Result<Listener> {
        match &cfg.endpoint {
            Endpoint::Unix(path) => Ok(Listener::Unix(bind_unix(path)?)),
            Endpoint::Tcp(addr) => {
                let tls = cfg.tls.as_ref().map(tls_acceptor).transpose()?;
                let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr}; is another process using it? Change `listen` in agent.toml")
                })?;
                Ok(Listener::Tcp(l, tls))
            }
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Listener::Unix(_) => Transport::Unix,
            Listener::Tcp(_, None) => Transport::Tcp,
            Listener::Tcp(_, Some(_)) => Transport::Tls,
        }
    }

    async fn accept(&self) -> std::io::Result<(Conn, Peer)> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Conn::Unix(s), Peer("unix socket".into())))
            }
            Listener::Tcp(l, tls) => {
                let (s, addr) = l.accept().await?;
                let peer = Peer(addr.to_string());
                Ok(match tls {
                    Some(t) => (Conn::Tls(s, t.clone()), peer),
                    None => (Conn::Tcp(s), peer),
                })
            }
        }
    }
}

impl Conn {
    async fn serve(self, router: Router, peer: Peer) {
        match self {
            Conn::Unix(s) => serve_conn(s, router, peer).await,
            Conn::Tcp(s) => serve_conn(s, router, peer).await,
            Conn::Tls(s, acceptor) => {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
                    Ok(Ok(tls)) => serve_conn(tls, router, peer).await,
                    Ok(Err(e)) => {
                        warn!(target: "chaosbot::audit", peer = %peer.0, why = %e, "TLS handshake refused")
                    }
                    Err(_) => {
                        warn!(target: "chaosbot::audit", peer = %peer.0, why = "no handshake within 10s", "TLS handshake refused")
                    }
                }
            }
        }
    }
}

async fn serve_conn<S>(io: S, router: Router, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req)
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Binds the socket 0600 in a 0700 directory (created if missing), replacing a stale socket
/// file but never a live agent's.
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .with_context(|| format!("cannot create the socket's directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another agent already listens on {}; stop it first or choose another socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the socket {} to its owner", path.display()))?;
    Ok(l)
}

fn tls_acceptor(t: &TlsServer) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_certs = |key: &str, path: &PathBuf| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                anyhow::anyhow!(
                    "[tls] {key} = {}: cannot read PEM certificates ({e}); point it at a PEM file",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            anyhow::bail!(
                "[tls] {key} = {}: no certificate in it; point it at a PEM file",
                path.display()
            );
        }
        Ok(certs)
    };
    let certs = read_certs("cert", &t.cert)?;
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| {
        anyhow::anyhow!(
            "[tls] key = {}: cannot read a PEM private key ({e}); point it at the certificate's key",
            t.key.display()
        )
    })?;
    let provider = crate::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version available")?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client_ca", ca)? {
                roots.add(c).with_context(|| {
                    format!("[tls] client_ca = {}: not a CA certificate", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("[tls] client_ca: cannot build the client verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("[tls] cert and key do not match or are not usable")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
