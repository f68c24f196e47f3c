//! The HTTP side of one registry repository: finding the endpoint (HTTPS, or
//! plain HTTP for insecure registries), authorised GETs with retries and
//! exponential backoff, capped body reads and clear errors.
//!
//! Built on reqwest directly rather than oci-client's `Client`: that client
//! reads manifest bodies whole with no size cap, follows descriptor `urls`,
//! fixes the scheme up front (no HTTPS→HTTP fallback) and does not retry.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tracing::{debug, warn};

use super::auth::Auth;
use super::authfile::AuthSearch;
use crate::oci::RegistryOptions;

/// Attempts per request (the first plus retries) on connection errors and 5xx/429 replies.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; it doubles with each retry up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait a registry's `Retry-After` (seconds or date) can impose on a retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The delay before retry number `retry` (1-based).
pub fn backoff(retry: u32) -> Duration {
    BASE_BACKOFF.saturating_mul(1 << retry.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// The wait before retry number `retry`: the backoff, or longer when the
/// server's `Retry-After` asks for it, within [`MAX_RETRY_AFTER`].
pub fn retry_delay(retry: u32, retry_after: Option<Duration>) -> Duration {
    backoff(retry).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

/// A repository in a registry, reachable over HTTP(S).
pub struct Client {
    pub(super) http: reqwest::Client,
    /// The registry's host (`host[:port]`).
    pub registry: String,
    /// The repository's path in it.
    pub repository: String,
    insecure: bool,
    /// The TLS files in use (for messages).
    tls_note: Option<String>,
    /// `https://host[:port]` or, for insecure registries that do not speak TLS, `http://…`.
    base: OnceLock<String>,
    /// Held while `base` is being found: concurrent first requests wait for it.
    probe: tokio::sync::Mutex<()>,
    pub(super) auth: Auth,
}

impl Client {
    /// A client for `repository` on `registry`.
    pub fn new(registry: &str, repository: &str, opts: &RegistryOptions) -> Result<Arc<Self>> {
        let (http, tls_note) = super::tls::http_client(opts, registry)?;
        Ok(Arc::new(Client {
            http,
            registry: registry.to_string(),
            repository: repository.to_string(),
            insecure: opts.insecure,
            tls_note,
            base: OnceLock::new(),
            probe: tokio::sync::Mutex::new(()),
            auth: Auth::new(registry, repository, AuthSearch::new(opts.authfile.as_deref())),
        }))
    }

    /// The endpoint, found once with a `GET /v2/` ping: HTTPS first; when the
    /// registry is insecure and HTTPS fails at the connection or TLS level,
    /// plain HTTP (as skopeo does). The ping's 401 challenge seeds the auth.
    /// Only pushes use it: reads find the endpoint with their first request
    /// (`first_contact`).
    pub(super) async fn base(&self) -> Result<&str> {
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let _probe = self.probe.lock().await;
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let https = format!("https://{}", self.registry);
        let found = match self.ping(&https).await {
            Ok(()) => https,
            Err(e) if self.insecure => {
                debug!("HTTPS to {} failed ({e:#}); trying plain HTTP", self.registry);
                let http = format!("http://{}", self.registry);
                self.ping(&http).await.map_err(|e2| self.unreachable_over_both(&e, &e2))?;
                http
            }
            Err(e) => return Err(self.unreachable_over_https(e)),
        };
        Ok(self.base.get_or_init(|| found))
    }

    async fn ping(&self, base: &str) -> Result<()> {
        let url = format!("{base}/v2/");
        let resp = self.http.get(&url).send().await.map_err(anyhow::Error::new)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.auth.record_challenge(header_str(&resp, WWW_AUTHENTICATE)).await;
        }
        Ok(())
    }

    fn unreachable_over_https(&self, e: anyhow::Error) -> anyhow::Error {
        e.context(format!(
            "cannot reach registry {} over HTTPS ({}; for a registry without valid TLS, --tls-verify=false)",
            self.registry,
            match &self.tls_note {
                Some(n) => n.clone(),
                None => format!(
                    "for a private CA or a client certificate, pass --cert-dir or use a certs.d directory named {}",
                    self.registry
                ),
            }
        ))
    }

    fn unreachable_over_both(&self, https: &anyhow::Error, http: &anyhow::Error) -> anyhow::Error {
        anyhow!("cannot reach registry {} over HTTPS ({https:#}) nor over HTTP ({http:#})", self.registry)
    }

    /// Sends the first request to this registry, which finds the endpoint as
    /// the ping did (HTTPS, then plain HTTP for an insecure registry that
    /// fails at the connection or TLS level) without a request of its own:
    /// the distribution spec has a client go straight to the resource and
    /// read the auth challenge from its 401, so `app update --check` makes one
    /// request per app, not two. `build` makes the request for a base URL.
    /// `None`: the endpoint is known (found by an earlier request, or by a
    /// concurrent one this waited for); send it there. Failing to connect is
    /// not retried, as the ping was not: a registry that is down says so at once.
    async fn first_contact(&self, build: &(dyn Fn(&str) -> RequestBuilder + Sync)) -> Result<Option<Response>> {
        if self.base.get().is_some() {
            return Ok(None);
        }
        let _probe = self.probe.lock().await;
        if self.base.get().is_some() {
            return Ok(None);
        }
        let https = format!("https://{}", self.registry);
        let (base, resp) = match build(&https).send().await.map_err(anyhow::Error::new) {
            Ok(resp) => (https, resp),
            Err(e) if self.insecure => {
                debug!("HTTPS to {} failed ({e:#}); trying plain HTTP", self.registry);
                let http = format!("http://{}", self.registry);
                match build(&http).send().await.map_err(anyhow::Error::new) {
                    Ok(resp) => (http, resp),
                    Err(e2) => return Err(self.unreachable_over_both(&e, &e2)),
                }
            }
            Err(e) => return Err(self.unreachable_over_https(e)),
        };
        self.base.get_or_init(|| base);
        Ok(Some(resp))
    }

    /// `GET {base}/v2/{repository}/{path}`, authorised, retried on connection
    /// errors and 5xx/429 with backoff. A 401 to a request sent without
    /// authorisation (the first, before any challenge is known) is answered
    /// with the challenge it carries; a 401 to an authorised one is answered
    /// once more with fresh authorisation (a new challenge, an expired
    /// token). Other replies are returned for the caller to judge.
    pub async fn get(&self, path: &str, accept: &[&str], range_from: Option<u64>) -> Result<Response> {
        let range = range_from.filter(|n| *n > 0).map(|from| format!("bytes={from}-"));
        self.get_range(path, accept, range.as_deref()).await
    }

    /// [`Client::get`] with any `Range` header value (`bytes=a-b,c-d`), or none.
    pub async fn get_range(&self, path: &str, accept: &[&str], range: Option<&str>) -> Result<Response> {
        let scope = self.auth.pull_scope();
        let (mut reauthorised, mut challenged) = (false, false);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let authorization = self.auth.header(&self.http, &scope).await?;
            let sent_authorised = authorization.is_some();
            let build = |base: &str| {
                let mut req = self.http.get(format!("{base}/v2/{}/{path}", self.repository));
                if !accept.is_empty() {
                    req = req.header(ACCEPT, accept.join(", "));
                }
                if let Some(range) = range {
                    req = req.header(RANGE, range);
                }
                if let Some(h) = &authorization {
                    req = req.header(AUTHORIZATION, h.clone());
                }
                req
            };
            let sent = match self.first_contact(&build).await? {
                Some(resp) => Ok(resp),
                None => build(self.known_base()).send().await,
            };
            let url = format!("{}/v2/{}/{path}", self.known_base(), self.repository);
            let mut server_delay = None;
            let retry_why = match sent {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = header_str(&resp, WWW_AUTHENTICATE).map(str::to_string);
                    self.auth.record_challenge(challenge.as_deref()).await;
                    self.auth.forget_token(&scope).await;
                    // Each kind of 401 is answered once: the challenge to an
                    // unauthorised request, a refusal of an authorised one.
                    let answered = if sent_authorised { &mut reauthorised } else { &mut challenged };
                    if challenge.is_some() && !std::mem::replace(answered, true) {
                        attempt -= 1;
                        continue;
                    }
                    return Err(self.unauthorized(resp).await);
                }
                Ok(resp) if is_retryable_status(resp.status()) => {
                    server_delay = retry_after(&resp);
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) => return Ok(resp),
                Err(e) => format!("{:#}", anyhow::Error::new(e)),
            };
            if attempt >= MAX_ATTEMPTS || crate::interrupt::is_ending() {
                bail!("GET {url} failed {attempt} times; last: {retry_why}");
            }
            let delay = retry_delay(attempt, server_delay);
            warn!("GET {url}: {retry_why}; retrying in {delay:?} (attempt {}/{MAX_ATTEMPTS})", attempt + 1);
            tokio::time::sleep(delay).await;
        }
    }

    /// The endpoint, once a request found it.
    fn known_base(&self) -> &str {
        self.base.get().map(String::as_str).expect("the endpoint is known after the first contact")
    }

    async fn unauthorized(&self, resp: Response) -> anyhow::Error {
        let detail = error_detail(resp).await;
        let note = self.auth.credentials_note().await;
        anyhow!("registry {} refused access to {} (401 Unauthorized{detail}); {note}", self.registry, self.repository)
    }

    /// The error for an unexpected reply to a request about `what`.
    pub async fn status_error(&self, resp: Response, what: &str) -> anyhow::Error {
        let status = resp.status();
        let detail = error_detail(resp).await;
        anyhow!("registry {} answered {status} for {what} in {}{detail}", self.registry, self.repository)
    }
}

pub(super) fn header_str(resp: &Response, name: reqwest::header::HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok())
}

/// The delay a reply's `Retry-After` asks for (seconds or an HTTP-date).
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = header_str(resp, reqwest::header::RETRY_AFTER)?;
    super::retry_after::delay(v, time::OffsetDateTime::now_utc())
}

fn is_retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    errors: Vec<ErrorItem>,
}
#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `": CODE: message"` from an OCI error body (or its first line of text), or nothing.
async fn error_detail(resp: Response) -> String {
    let Ok(body) = read_capped(resp, 64 * 1024, "error body").await else { return String::new() };
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(&body) {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| if e.message.is_empty() { e.code.clone() } else { format!("{}: {}", e.code, e.message) })
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&body);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(": {}", line.chars().take(200).collect::<String>()),
        None => String::new(),
    }
}

/// A body longer than allowed (not worth retrying, unlike a broken connection).
#[derive(Debug, thiserror::Error)]
#[error("{what} is {size} bytes, more than the {cap} bytes allowed")]
pub struct TooLarge {
    /// What was being read, for the message.
    pub what: String,
    /// Bytes known so far (the Content-Length, or what was read before giving up).
    pub size: u64,
    /// The most allowed, in bytes.
    pub cap: u64,
}

/// Reads a whole body, refusing more than `cap` bytes (by Content-Length up
/// front, and while reading for replies without one).
pub async fn read_capped(resp: Response, cap: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length().filter(|l| *l > cap) {
        return Err(TooLarge { what: what.to_string(), size: len, cap }.into());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {what}"))?;
        let size = out.len() as u64 + chunk.len() as u64;
        if size > cap {
            return Err(TooLarge { what: what.to_string(), size, cap }.into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A small document's reply: its capped body on 200, else the reply itself.
pub enum Small {
    /// A 200 reply and its body.
    Body {
        /// The reply's headers.
        headers: HeaderMap,
        /// The body, at most the cap.
        bytes: Vec<u8>,
    },
    /// Any other reply, unread.
    Other(Response),
}

impl Client {
    /// GETs a small document (manifest, config, referrers list) whole. Like
    /// [`Client::get`], and a body cut short by a broken connection is asked
    /// for again (bounded): small documents are re-read, not resumed.
    pub async fn get_small(&self, path: &str, accept: &[&str], cap: u64, what: &str) -> Result<Small> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.get(path, accept, None).await?;
            if resp.status() != StatusCode::OK {
                return Ok(Small::Other(resp));
            }
            let headers = resp.headers().clone();
            match read_capped(resp, cap, what).await {
                Ok(bytes) => return Ok(Small::Body { headers, bytes }),
                Err(e) if e.is::<TooLarge>() || attempt >= MAX_ATTEMPTS => return Err(e),
                Err(e) => {
                    let delay = backoff(attempt);
                    warn!("{what}: {e:#}; reading again in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), BASE_BACKOFF);
        assert_eq!(backoff(2), BASE_BACKOFF * 2);
        assert_eq!(backoff(3), BASE_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_lengthens_the_wait_within_the_cap_in_both_forms() {
        let now = time::OffsetDateTime::now_utc();
        let delay = |v: &str| retry_delay(1, super::super::retry_after::delay(v, now));
        assert_eq!(delay("2"), Duration::from_secs(2));
        assert_eq!(delay("0"), BASE_BACKOFF);
        assert_eq!(delay("86400"), MAX_RETRY_AFTER);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let in_a_day = (now + time::Duration::days(1)).format(fmt).unwrap();
        assert_eq!(delay(&in_a_day), MAX_RETRY_AFTER);
        let an_hour_ago = (now - time::Duration::hours(1)).format(fmt).unwrap();
        assert_eq!(delay(&an_hour_ago), BASE_BACKOFF);
        assert_eq!(delay("garbage"), BASE_BACKOFF);
    }
}
