//! hostctl's FleetLock lock server (`hostctl fleet server`): FleetLock v1
//! plus the report and status extensions, over HTTP, with every bit of state
//! in etcd so that several replicas can serve one fleet.
//!
//! - [`http`]: routes, request checks and refusals.
//! - [`slots`]: the per-group reboot semaphore and its leases.
//! - [`health`]: reports, thresholds, halts and resumes.
//! - [`status`]: the fleet's state for `GET /v1/status`.
//! - [`etcd`]: the connection, key layout and retries.

pub mod etcd;
pub mod health;
pub mod http;
pub mod slots;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::fleet::protocol::HaltAfter;

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
}

/// One replica's handles on the shared state (it holds nothing else).
pub struct Server {
    etcd: etcd::Etcd,
    slots: slots::Slots,
    health: health::Health,
}

impl Server {
    /// Connects to etcd.
    pub async fn connect(config: &ServerConfig) -> Result<Server> {
        anyhow::ensure!(config.slots >= 1, "--slots must be at least 1");
        anyhow::ensure!(config.holder_ttl >= Duration::from_secs(1), "--holder-ttl must be at least 1s");
        let etcd = etcd::Etcd::connect(&config.etcd, &config.prefix).await?;
        Ok(Server {
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

    /// Serves HTTP/1.1 on `listener` until the task is dropped; each
    /// connection on its own task.
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
                let service = hyper::service::service_fn(move |req| http::handle(server.clone(), req));
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
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
    tracing::info!(
        "fleet lock server on http://{addr}, state in etcd at {} under {:?}, {} slot(s) per group, holder TTL {:?}",
        config.etcd.join(","),
        config.prefix,
        config.slots,
        config.holder_ttl
    );
    eprintln!("hostctl fleet server: listening on http://{addr}");
    server.serve(listener).await
}
