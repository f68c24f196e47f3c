//! Authorising registry requests: anonymous, Basic, and the Bearer token flow
//! (token server named by the registry's `WWW-Authenticate` challenge, tokens
//! cached per scope until they expire).
//!
//! Written by hand rather than through oci-client: its token fetch swallows
//! token-server errors (a refused password becomes an anonymous request), so
//! it could not say why access failed, and it has no notion of credentials
//! found in files.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};

use super::authfile::{AuthSearch, Credentials};
use super::challenge::{self, Challenge};

/// Token lifetime assumed when the token server gives none (distribution spec: 60 s).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token-server response read.
const MAX_TOKEN_RESPONSE: u64 = 1024 * 1024;

/// Per-repository authorisation state.
pub struct Auth {
    registry: String,
    repository: String,
    search: AuthSearch,
    credentials: OnceCell<Option<Credentials>>,
    /// The registry's last challenge (`None`: anonymous access works).
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

struct CachedToken {
    header: HeaderValue,
    valid_until: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(registry: &str, repository: &str, search: AuthSearch) -> Self {
        Auth {
            registry: registry.to_string(),
            repository: repository.to_string(),
            search,
            credentials: OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The pull scope of this repository.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    async fn credentials(&self) -> Result<Option<&Credentials>> {
        let c =
            self.credentials.get_or_try_init(|| async { self.search.lookup(&self.registry, &self.repository) }).await?;
        Ok(c.as_ref())
    }

    /// Says whether credentials were found, and where (never the secret).
    pub async fn credentials_note(&self) -> String {
        match self.credentials().await {
            Ok(Some(c)) => format!("credentials for user {:?} were found in {}", c.username, c.source.display()),
            Ok(None) => {
                format!("no credentials for {} were found (searched {})", self.registry, self.search.describe())
            }
            Err(e) => format!("credentials could not be read: {e:#}"),
        }
    }

    /// Records the challenge of a 401 reply (an unanswerable or missing one
    /// keeps the challenge known before).
    pub async fn record_challenge(&self, www_authenticate: Option<&str>) {
        let parsed = www_authenticate.map(challenge::parse).unwrap_or_default();
        // Prefer Bearer, then Basic; other schemes cannot be answered.
        let chosen = parsed
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
            .or_else(|| parsed.iter().find(|c| c.scheme == "basic"))
            .cloned();
        if chosen.is_some() {
            *self.challenge.lock().await = chosen;
        }
    }

    /// Forgets the cached token for `scope` (after the registry refused it).
    pub async fn forget_token(&self, scope: &str) {
        self.tokens.lock().await.remove(scope);
    }

    /// The `Authorization` header for a request needing `scope`, if any.
    pub async fn header(&self, http: &reqwest::Client, scope: &str) -> Result<Option<HeaderValue>> {
        let challenge = self.challenge.lock().await.clone();
        let Some(challenge) = challenge else { return Ok(None) };
        match challenge.scheme.as_str() {
            "basic" => Ok(self.credentials().await?.map(basic_header)),
            "bearer" => self.bearer(http, &challenge, scope).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn bearer(&self, http: &reqwest::Client, challenge: &Challenge, scope: &str) -> Result<HeaderValue> {
        // Holding the lock across the fetch makes concurrent layer downloads
        // share one token request instead of each asking the token server.
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(scope).filter(|t| Instant::now() < t.valid_until) {
            return Ok(t.header.clone());
        }
        let realm = challenge.param("realm").ok_or_else(|| anyhow!("Bearer challenge without a realm"))?;
        let mut url = reqwest::Url::parse(realm)
            .with_context(|| format!("registry {} named an invalid token realm {realm:?}", self.registry))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let mut req = http.get(url.clone());
        let creds = self.credentials().await?;
        if let Some(c) = creds {
            req = req.header(AUTHORIZATION, basic_header(c));
        }
        let started = Instant::now();
        let resp = req.send().await.with_context(|| format!("requesting a token from {}", url_without_query(&url)))?;
        let status = resp.status();
        let body = super::client::read_capped(resp, MAX_TOKEN_RESPONSE, "token server response").await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let note = self.credentials_note().await;
            bail!(
                "the token server {} refused access to {}/{} ({status}{}{}); {note}",
                url_without_query(&url),
                self.registry,
                self.repository,
                if text.is_empty() { "" } else { ": " },
                text.chars().take(200).collect::<String>()
            );
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .with_context(|| format!("the token server {} sent an invalid reply", url_without_query(&url)))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("the token server {} sent no token", url_without_query(&url)))?;
        let lifetime = parsed.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token does not expire between check and use.
        let valid_until = started + lifetime.saturating_sub(lifetime.min(Duration::from_secs(10)) / 2);
        let mut header =
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token server sent a malformed token")?;
        header.set_sensitive(true);
        tokens.insert(scope.to_string(), CachedToken { header: header.clone(), valid_until });
        Ok(header)
    }
}

fn basic_header(c: &Credentials) -> HeaderValue {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut h = HeaderValue::from_str(&format!("Basic {raw}")).expect("base64 is a valid header value");
    h.set_sensitive(true);
    h
}

fn url_without_query(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}
