//! hostctl's FleetLock lock server (`hostctl fleet server`): FleetLock v1
//! plus the report and status extensions, over HTTP, with every bit of state
//! in etcd so that several replicas can serve one fleet.
//!
//! - [`http`]: routes, request checks and refusals.
//! - [`slots`]: the per-group reboot semaphore and its leases.
//! - [`health`]: reports, thresholds, halts and resumes.
//! - [`status`]: the fleet's state for `GET /v1/status`.
//! - [`etcd`]: the connection, key layout and retries.
//! - [`tls`]: HTTPS, and hosts known by their client certificates.

pub mod etcd;
pub mod health;
pub mod http;
pub mod slots;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::fleet::protocol::HaltAfter;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How `hostctl fleet server` runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// The key prefix in etcd ([`etcd::DEFAULT_PREFIX`]).
    pub prefix: String,
    /// Slots per group unless `fleet slots` set another count.
    pub slots: u32,
    /// How long a holder that goes silent keeps its slot.
    pub holder_ttl: Duration,
    /// The halt threshold for reports that carry none.
    pub halt_after: HaltAfter,
    /// HTTPS, and with client certificates (`--tls-cert`, `--tls-key`,
    /// `--client-ca`); `None`: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
}

/// One replica's handles on the shared state (it holds nothing else).
pub struct Server {
    etcd: etcd::Etcd,
    slots: slots::Slots,
    health: health::Health,
    tls: Option<tokio_rustls::TlsAcceptor>,
    checks_clients: bool,
}

impl Server {
    /// Connects to etcd.
    pub async fn connect(config: &ServerConfig) -> Result<Server> {
        anyhow::ensure!(config.slots >= 1, "--slots must be at least 1");
        anyhow::ensure!(config.holder_ttl >= Duration::from_secs(1), "--holder-ttl must be at least 1s");
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let etcd = etcd::Etcd::connect(&config.etcd, &config.prefix).await?;
        Ok(Server {
            tls,
            checks_clients: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            slots: slots::Slots::new(etcd.clone(), config.slots, config.holder_ttl),
            health: health::Health::new(etcd.clone(), config.halt_after),
            etcd,
        })
    }

    /// The slots, for administration (`fleet slots`).
    pub fn slots(&self) -> &slots::Slots {
        &self.slots
    }

    /// Reports and halts, for administration (`fleet halt`, `fleet resume`).
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves HTTP/1.1 (over TLS when configured) on `listener` until the
    /// task is dropped; each connection on its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let served = match server.tls.clone() {
                    None => {
                        let service = hyper::service::service_fn(move |req| {
                            http::handle(server.clone(), tls::Caller::Anyone, req)
                        });
                        http.serve_connection(TokioIo::new(stream), service).await
                    }
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::info!("TLS handshake with {peer} failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::info!("TLS handshake with {peer} took longer than {HANDSHAKE_TIMEOUT:?}");
                                return;
                            }
                        };
                        let caller = tls::caller(stream.get_ref().1, server.checks_clients);
                        let service =
                            hyper::service::service_fn(move |req| http::handle(server.clone(), caller.clone(), req));
                        http.serve_connection(TokioIo::new(stream), service).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!("connection from {peer}: {e}");
                }
            });
        }
    }
}

/// Binds `listen` and serves until the process ends.
pub async fn run(config: ServerConfig, listen: &str) -> Result<()> {
    let server = Arc::new(Server::connect(&config).await?);
    let listener = TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    let clients = match config.tls.as_ref().and_then(|t| t.client_ca.as_ref()) {
        Some(ca) => format!("hosts known by their client certificates' CN (CA {})", ca.display()),
        None => "the id in each request trusted".into(),
    };
    tracing::info!(
        "fleet lock server on {scheme}://{addr} ({clients}), state in etcd at {} under {:?}, {} slot(s) per group, holder TTL {:?}",
        config.etcd.join(","),
        config.prefix,
        config.slots,
        config.holder_ttl
    );
    eprintln!("hostctl fleet server: listening on {scheme}://{addr}");
    server.serve(listener).await
}
