//! The FleetLock v1 client: takes a reboot slot before the agent reboots
//! (`pre-reboot`), gives it back once the new deployment is healthy
//! (`steady-state`), and reports health (hostctl's `report` extension). It
//! speaks to any FleetLock server (airlock, poseidon/fleetlock, hostctl's).
//!
//! No retries here: the agent's loop retries with its own backoff, and a
//! refusal is an answer, not a failure to retry at once.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::protocol::{
    ClientParams, ErrorBody, LockRequest, PRE_REBOOT_PATH, PROTOCOL_HEADER, RELEASE_HEADER, REPORT_PATH, STATUS_PATH,
    STEADY_STATE_PATH,
};

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a reply body read.
const MAX_REPLY: usize = 1024 * 1024;

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The server answered and said no (a held lock, a halted release, a bad request).
    #[error("lock server {url} refused {what} (HTTP {status}): {kind}: {value}")]
    Refused {
        /// The request's URL.
        url: String,
        /// What was asked (`pre-reboot`, ...).
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The error body's kind (empty when the body was not FleetLock's).
        kind: String,
        /// The error body's value, or the start of the body.
        value: String,
    },
    /// The server could not be reached, or its answer could not be read.
    #[error("lock server {url} unreachable for {what}: {detail}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What was asked.
        what: &'static str,
        /// The transport error.
        detail: String,
    },
}

impl LockError {
    /// The server answered (as opposed to being down).
    pub fn is_refusal(&self) -> bool {
        matches!(self, LockError::Refused { .. })
    }
}

/// The body of hostctl's `POST /v1/report` extension: a host's health after
/// an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRequest {
    /// Who reports.
    pub client_params: ClientParams,
    /// The image digest the host updated to.
    pub digest: String,
    /// Whether its health checks passed.
    pub healthy: bool,
    /// What failed, for people.
    pub detail: String,
}

/// A FleetLock client for one host in one group.
#[derive(Clone, Debug)]
pub struct LockClient {
    http: reqwest::Client,
    base: String,
    params: ClientParams,
}

impl LockClient {
    /// A client for the server at `base_url` (`http://host:port`, or with a
    /// path prefix), as `id` in `group`.
    pub fn new(base_url: &str, id: &str, group: &str) -> anyhow::Result<LockClient> {
        let base = base_url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "lock server URL {base_url:?} is not http:// or https://"
        );
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(LockClient { http, base, params: ClientParams { id: id.to_string(), group: group.to_string() } })
    }

    /// Who this client speaks for.
    pub fn params(&self) -> &ClientParams {
        &self.params
    }

    /// `POST /v1/pre-reboot`: takes a reboot slot (idempotent for a holder).
    /// `release`, the digest the host is about to reboot into, goes in
    /// hostctl's `hostctl-release-digest` header: hostctl's server records it
    /// with the holder and refuses the slot for a halted release; other
    /// FleetLock servers ignore it.
    pub async fn pre_reboot(&self, release: Option<&str>) -> Result<(), LockError> {
        let body = LockRequest { client_params: self.params.clone() };
        self.post_with("pre-reboot", PRE_REBOOT_PATH, &body, release.map(|d| (RELEASE_HEADER, d))).await
    }

    /// `POST /v1/steady-state`: gives the slot back (idempotent).
    pub async fn steady_state(&self) -> Result<(), LockError> {
        self.post("steady-state", STEADY_STATE_PATH, &LockRequest { client_params: self.params.clone() }).await
    }

    /// `POST /v1/report` (hostctl's extension): the host's health on `digest`.
    pub async fn report(&self, digest: &str, healthy: bool, detail: &str) -> Result<(), LockError> {
        let body = ReportRequest {
            client_params: self.params.clone(),
            digest: digest.to_string(),
            healthy,
            detail: detail.to_string(),
        };
        self.post("report", REPORT_PATH, &body).await
    }

    /// `GET /v1/status` (hostctl's extension), as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, LockError> {
        let url = format!("{}{STATUS_PATH}", self.base);
        let what = "status";
        let unreachable = |e: reqwest::Error| LockError::Unreachable { url: url.clone(), what, detail: chain(&e) };
        let resp = self.http.get(&url).header(PROTOCOL_HEADER, "true").send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(refusal(&url, what, status, &bytes));
        }
        serde_json::from_slice(&bytes[..bytes.len().min(MAX_REPLY)]).map_err(|e| LockError::Unreachable {
            url: url.clone(),
            what,
            detail: format!("the status is not JSON: {e}"),
        })
    }

    /// Whether the server's status lists `digest` as halted. The status's
    /// `halted` field is read as a list of digests or of objects with a
    /// `digest`; a server without the extension (404) halts nothing.
    pub async fn is_halted(&self, digest: &str) -> Result<bool, LockError> {
        let status = match self.status().await {
            Ok(s) => s,
            Err(LockError::Refused { status: 404 | 405 | 501, .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(halted_digests(&status).iter().any(|d| d == digest))
    }

    async fn post<T: Serialize>(&self, what: &'static str, path: &str, body: &T) -> Result<(), LockError> {
        self.post_with(what, path, body, None).await
    }

    async fn post_with<T: Serialize>(
        &self,
        what: &'static str,
        path: &str,
        body: &T,
        extra: Option<(&str, &str)>,
    ) -> Result<(), LockError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: reqwest::Error| LockError::Unreachable { url: url.clone(), what, detail: chain(&e) };
        let mut req = self.http.post(&url).header(PROTOCOL_HEADER, "true").json(body);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await.map_err(unreachable)?;
        Err(refusal(&url, what, status, &bytes))
    }
}

/// The digests a status document lists as halted.
pub fn halted_digests(status: &serde_json::Value) -> Vec<String> {
    let Some(list) = status.get("halted").and_then(|h| h.as_array()) else { return Vec::new() };
    list.iter()
        .filter_map(|v| v.as_str().or_else(|| v.get("digest").and_then(|d| d.as_str())))
        .map(str::to_string)
        .collect()
}

fn refusal(url: &str, what: &'static str, status: StatusCode, body: &[u8]) -> LockError {
    let (kind, value) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.kind, e.value),
        Err(_) => (String::new(), String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string()),
    };
    LockError::Refused { url: url.to_string(), what, status: status.as_u16(), kind, value }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server saw: (method, path, protocol header, body, release header).
    type Seen = Arc<Mutex<Vec<(String, String, Option<String>, String, Option<String>)>>>;

    /// A one-slot FleetLock server over real HTTP/1.1 on loopback, written
    /// from the protocol's description: it refuses requests without the
    /// header, and a second holder while the slot is taken.
    async fn server() -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let holder: Arc<Mutex<Option<String>>> = Arc::default();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (seen, holder) = (seen2.clone(), holder.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(sock);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let (method, path) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
                        let (mut len, mut header, mut release) = (0, None, None);
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).await.unwrap();
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            let (k, v) = h.split_once(':').unwrap();
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap(),
                                "fleet-lock-protocol" => header = Some(v.trim().to_string()),
                                "hostctl-release-digest" => release = Some(v.trim().to_string()),
                                _ => {}
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).await.unwrap();
                        let body = String::from_utf8(body).unwrap();
                        seen.lock().unwrap().push((
                            method.clone(),
                            path.clone(),
                            header.clone(),
                            body.clone(),
                            release,
                        ));
                        let reply = |code: u16, b: String| {
                            format!(
                                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                                b.len()
                            )
                        };
                        let err = |code, kind: &str, value: &str| {
                            reply(code, serde_json::json!({"kind": kind, "value": value}).to_string())
                        };
                        let out = if header.as_deref() != Some("true") {
                            err(400, "missing_header", "fleet-lock-protocol header missing")
                        } else if path == STATUS_PATH {
                            reply(200, r#"{"halted":["sha256:bad",{"digest":"sha256:worse"}]}"#.into())
                        } else {
                            let req: serde_json::Value = serde_json::from_str(&body).unwrap();
                            let id = req["client_params"]["id"].as_str().unwrap().to_string();
                            let mut h = holder.lock().unwrap();
                            match path.as_str() {
                                PRE_REBOOT_PATH if h.as_ref().is_some_and(|x| *x != id) => {
                                    err(409, "failed_lock", "all 1 slots are held")
                                }
                                PRE_REBOOT_PATH => {
                                    *h = Some(id);
                                    reply(200, String::new())
                                }
                                STEADY_STATE_PATH => {
                                    if h.as_ref() == Some(&id) {
                                        *h = None;
                                    }
                                    reply(200, String::new())
                                }
                                REPORT_PATH => reply(200, String::new()),
                                _ => err(404, "not_found", "no such path"),
                            }
                        };
                        r.get_mut().write_all(out.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn one_slot_is_taken_refused_to_another_and_given_back() {
        let (url, seen) = server().await;
        let a = LockClient::new(&url, "host-a", "workers").unwrap();
        let b = LockClient::new(&format!("{url}/"), "host-b", "workers").unwrap();
        a.pre_reboot(None).await.unwrap();
        a.pre_reboot(Some("sha256:aa")).await.unwrap(); // a holder may ask again
        let err = b.pre_reboot(None).await.unwrap_err();
        assert!(err.is_refusal(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("refused pre-reboot (HTTP 409): failed_lock: all 1 slots are held"), "{msg}");
        a.steady_state().await.unwrap();
        b.pre_reboot(None).await.unwrap();
        b.report("sha256:aa", false, "10-web failed").await.unwrap();
        let seen = seen.lock().unwrap().clone();
        // Every request carries the header and the FleetLock body.
        for (method, _, header, _, _) in &seen {
            assert_eq!(method, "POST");
            assert_eq!(header.as_deref(), Some("true"));
        }
        // The release header only where a release was named.
        assert_eq!(seen[0].4, None);
        assert_eq!(seen[1].4.as_deref(), Some("sha256:aa"));
        let first: serde_json::Value = serde_json::from_str(&seen[0].3).unwrap();
        assert_eq!(first, serde_json::json!({"client_params": {"id": "host-a", "group": "workers"}}));
        let report: serde_json::Value = serde_json::from_str(&seen.last().unwrap().3).unwrap();
        assert_eq!(
            report,
            serde_json::json!({"client_params": {"id": "host-b", "group": "workers"},
                "digest": "sha256:aa", "healthy": false, "detail": "10-web failed"})
        );
    }

    #[tokio::test]
    async fn halted_releases_are_read_from_the_status() {
        let (url, _) = server().await;
        let c = LockClient::new(&url, "h", "default").unwrap();
        assert!(c.is_halted("sha256:bad").await.unwrap());
        assert!(c.is_halted("sha256:worse").await.unwrap());
        assert!(!c.is_halted("sha256:good").await.unwrap());
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_unreachable_not_a_refusal() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = LockClient::new(&format!("http://127.0.0.1:{port}"), "h", "default").unwrap();
        let err = c.pre_reboot(None).await.unwrap_err();
        assert!(!err.is_refusal());
        assert!(err.to_string().contains("unreachable for pre-reboot"), "{err}");
        assert!(LockClient::new("ftp://x", "h", "g").is_err());
    }
}
