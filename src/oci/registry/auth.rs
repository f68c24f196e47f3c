//! Authorising registry requests: anonymous, Basic, and the Bearer token flow
//! (token server named by the registry's `WWW-Authenticate` challenge, tokens
//! cached per scope until they expire; identity tokens exchanged with an
//! OAuth2 refresh-token POST, or with the token spec's GET where the token
//! server does not take the POST).
//!
//! Written by hand rather than through oci-client: its token fetch swallows
//! token-server errors (a refused password becomes an anonymous request), so
//! it could not say why access failed, and it has no notion of credentials
//! found in files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::FutureExt as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use tracing::info;

use super::authfile::{AuthSearch, Credentials};
use super::challenge::{self, Challenge};

/// Token lifetime assumed when the token server gives none (distribution spec: 60 s).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The OAuth2 `client_id` sent with refresh-token grants.
const CLIENT_ID: &str = "hostctl";
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
    /// The token server answered the OAuth2 POST with 404 or 405: identity
    /// tokens go by GET from then on.
    no_oauth2_post: AtomicBool,
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
    /// Authenticates to `repository` on `registry`, with credentials found by `search`.
    pub fn new(registry: &str, repository: &str, search: AuthSearch) -> Self {
        Auth {
            registry: registry.to_string(),
            repository: repository.to_string(),
            search,
            credentials: OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            no_oauth2_post: AtomicBool::new(false),
        }
    }

    /// The pull scope of this repository.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    async fn credentials(&self) -> Result<Option<&Credentials>> {
        let c = self
            .credentials
            .get_or_try_init(|| async {
                // Credential helpers are programs: run the search off the async workers.
                let (search, registry, repository) =
                    (self.search.clone(), self.registry.clone(), self.repository.clone());
                tokio::task::spawn_blocking(move || search.lookup(&registry, &repository))
                    .await
                    .context("the credential search panicked")?
            })
            .await?;
        Ok(c.as_ref())
    }

    /// Says whether credentials were found, and where (never the secret).
    pub async fn credentials_note(&self) -> String {
        match self.credentials().await {
            Ok(Some(c)) if c.is_identity_token() => format!("an identity token was found in {}", c.source),
            Ok(Some(c)) => format!("credentials for user {:?} were found in {}", c.username, c.source),
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
            "basic" => match self.credentials().await? {
                Some(c) if c.is_identity_token() => bail!(
                    "registry {} asks for Basic authentication, but the credentials from {} are an identity \
                     token, which only a token server accepts",
                    self.registry,
                    c.source
                ),
                c => Ok(c.map(basic_header)),
            },
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
        let url = reqwest::Url::parse(realm)
            .with_context(|| format!("registry {} named an invalid token realm {realm:?}", self.registry))?;
        let service = challenge.param("service");
        let creds = self.credentials().await?;
        // An identity token is exchanged with the OAuth2 refresh-token grant
        // (distribution token spec, "OAuth2 token authentication").
        let post = creds.is_some_and(|c| c.is_identity_token()) && !self.no_oauth2_post.load(Ordering::Relaxed);
        let send = |post: bool| {
            token_request(http, &url, service, scope, creds, post)
                .send()
                .map(|r| r.with_context(|| format!("requesting a token from {}", url_without_query(&url))))
        };
        let started = Instant::now();
        let mut resp = send(post).await?;
        let mut post_refused = None;
        if post && matches!(resp.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) {
            // A token server without the OAuth2 endpoint (the token spec's
            // GET is the older flow; docker and containerd fall back the same
            // way). The identity token goes as the Basic password, to the
            // same realm the POST sent it to.
            info!(
                "the token server {} answered the OAuth2 POST with {}; asking with GET",
                url_without_query(&url),
                resp.status()
            );
            self.no_oauth2_post.store(true, Ordering::Relaxed);
            post_refused = Some(resp.status());
            resp = send(false).await?;
        }
        let status = resp.status();
        let body = super::client::read_capped(resp, MAX_TOKEN_RESPONSE, "token server response").await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let note = self.credentials_note().await;
            let via = match post_refused {
                Some(s) => format!(" to the GET token request, after {s} to the OAuth2 POST"),
                None => String::new(),
            };
            bail!(
                "the token server {} refused access to {}/{} ({status}{}{}{via}); {note}",
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

/// A token request to `url` for `scope`: the OAuth2 refresh-token POST with
/// the identity token in `creds` (`post`), or the token spec's GET with
/// `service` and `scope` in the query and `creds`, if any, as Basic auth.
fn token_request(
    http: &reqwest::Client,
    url: &reqwest::Url,
    service: Option<&str>,
    scope: &str,
    creds: Option<&Credentials>,
    post: bool,
) -> reqwest::RequestBuilder {
    if let Some(c) = creds.filter(|_| post) {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", c.password.as_str()),
            ("scope", scope),
        ];
        if let Some(s) = service {
            form.push(("service", s));
        }
        return http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_urlencoded(&form));
    }
    let mut get_url = url.clone();
    {
        let mut q = get_url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        q.append_pair("scope", scope);
    }
    let req = http.get(get_url);
    match creds {
        Some(c) => req.header(AUTHORIZATION, basic_header(c)),
        None => req,
    }
}

fn basic_header(c: &Credentials) -> HeaderValue {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut h = HeaderValue::from_str(&format!("Basic {raw}")).expect("base64 is a valid header value");
    h.set_sensitive(true);
    h
}

/// `application/x-www-form-urlencoded` for `pairs` (the serializer of URL
/// queries, which is that format).
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("form:").expect("a valid URL");
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or("").to_string()
}

fn url_without_query(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::form_urlencoded;

    #[test]
    fn form_bodies_are_url_encoded() {
        let body =
            form_urlencoded(&[("grant_type", "refresh_token"), ("scope", "repository:a/b:pull"), ("x", "a&b=c d")]);
        assert_eq!(body, "grant_type=refresh_token&scope=repository%3Aa%2Fb%3Apull&x=a%26b%3Dc+d");
    }
}
