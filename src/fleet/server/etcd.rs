//! The lock server's one store: the etcd connection, the key layout under
//! the prefix, and the retries that carry requests over a leader change or a
//! member that went away. The server keeps no state of its own, so any
//! number of replicas can serve one fleet from the same etcd cluster.
//!
//! Keys (all under the prefix, `hostctl/fleet/` by default):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `holders/GROUP/ID` | [`HolderRecord`] JSON | the holder's (`--holder-ttl`); none once it reported itself unhealthy |
//! | `seq/GROUP` | empty; rewritten by every lock so that two locks of one group cannot both pass on the same count | none |
//! | `slots/GROUP` | decimal slot count set by `fleet slots` | none |
//! | `reports/DIGEST/ID` | [`ReportRecord`] JSON, the host's last report on the release | none |
//! | `halted/DIGEST` | [`HaltRecord`] JSON | none |
//! | `resumed/DIGEST` | RFC 3339 time; its revision is where unhealthy reports start to count again | none |

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, Txn, TxnResponse};
use serde::{Deserialize, Serialize};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "hostctl/fleet/";

/// How long one etcd call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request keeps retrying etcd calls that failed for a reason
/// that passes (no leader, a member gone, a timeout).
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// A connection to the etcd cluster and the prefix the fleet's keys live under.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
}

/// A holder's record under `holders/GROUP/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// When it took the slot (RFC 3339).
    pub since: String,
    /// The release it took the slot for, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// It reported itself unhealthy: the slot no longer expires.
    #[serde(default)]
    pub unhealthy: bool,
}

/// A host's last report on a release, under `reports/DIGEST/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    /// The host's group.
    pub group: String,
    /// Whether its health checks passed.
    pub healthy: bool,
    /// What it said about them.
    #[serde(default)]
    pub detail: String,
    /// When it reported (RFC 3339).
    pub at: String,
}

/// Why and when a release was halted, under `halted/DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    /// Why, in a sentence.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

impl Etcd {
    /// Connects to the cluster at `endpoints` (`http://HOST:PORT` or
    /// `HOST:PORT`); requests are spread over every endpoint and refused by a
    /// member that has lost its leader, so they are retried elsewhere.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd> {
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoints given");
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(2))
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        Ok(Etcd { client, prefix: prefix.to_string() })
    }

    /// The client, for one call (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The full key of `rest` under the prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The prefix every key of the fleet starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `call` until it succeeds, fails for good, or the retry budget is
    /// spent; failures that pass (see [`is_transient`]) are retried with a
    /// growing pause.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match call(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && start.elapsed() + pause < RETRY_BUDGET => {
                    tracing::debug!("etcd {what}: {e}; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(Unavailable(format!("etcd {what}: {e}")).into()),
            }
        }
    }
}

impl Etcd {
    /// One transaction, retried ([`Etcd::retry`]).
    pub async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.retry(what, |mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        })
        .await
    }

    /// One range read, retried.
    pub async fn get(&self, what: &str, key: &str, options: Option<GetOptions>) -> Result<GetResponse> {
        self.retry(what, |mut c| {
            let (k, o) = (key.to_string(), options.clone());
            async move { c.get(k, o).await }
        })
        .await
    }

    /// One put, retried.
    pub async fn put(&self, what: &str, key: &str, value: Vec<u8>) -> Result<()> {
        self.retry(what, |mut c| {
            let (k, v) = (key.to_string(), value.clone());
            async move { c.put(k, v, None).await }
        })
        .await
        .map(drop)
    }
}

/// etcd could not be reached or answer in time: the request failed, and a
/// later one may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Whether an etcd error is one that passes: no leader (an election is
/// under way), a member that went away, a timeout.
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        // gRPC codes: 1 cancelled, 2 unknown (etcd's "leader changed"), 4
        // deadline exceeded, 14 unavailable (no leader, member gone).
        E::GRpcStatus(s) => matches!(s.code() as i32, 1 | 2 | 4 | 14),
        _ => false,
    }
}

/// Now, as RFC 3339 in UTC (whole seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
