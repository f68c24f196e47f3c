//! The lock server's HTTP side: routes, the FleetLock request checks
//! (method, `fleet-lock-protocol: true`, a JSON body of bounded size, a valid
//! id and group), and every refusal as FleetLock's `{"kind","value"}` body.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/pre-reboot` | 200 taken or already held; 409 `failed_lock_semaphore_full` / `failed_lock_release_halted` |
//! | `POST /v1/steady-state` | 200 whether or not the host held a slot |
//! | `POST /v1/report` | 200 `{"halted","slot_kept"}` |
//! | `GET /v1/status` | 200 [`StatusResponse`](crate::fleet::protocol::StatusResponse) |
//! | no protocol header, bad JSON, bad id or group | 400 |
//! | with `--client-ca`: no client certificate, or one naming another id | 403 `client_certificate_required` / `forbidden_client_id` |
//! | another method | 405 with `Allow` |
//! | another path | 404 |
//! | etcd unreachable | 503 `state_unavailable` |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::slots::{LockRefused, Locked};
use super::tls::Caller;
use super::Server;
use crate::fleet::protocol::{
    kind, ClientParams, ErrorBody, LockRequest, ReportRequest, ReportResponse, PRE_REBOOT_PATH, PROTOCOL_HEADER,
    RELEASE_HEADER, REPORT_PATH, STATUS_PATH, STEADY_STATE_PATH,
};

/// The largest request body read: FleetLock bodies are a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;
/// The longest host id accepted (it becomes part of an etcd key).
const MAX_ID: usize = 256;

/// A refusal: status and FleetLock error body.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    kind: &'static str,
    value: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, value: impl Into<String>) -> Refusal {
        Refusal { status, kind, value: value.into() }
    }

    fn bad(value: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, kind::BAD_REQUEST, value)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value)
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Refusal {
        if let Some(r) = e.downcast_ref::<LockRefused>() {
            let k = match r {
                LockRefused::Full { .. } => kind::SEMAPHORE_FULL,
                LockRefused::Halted { .. } => kind::RELEASE_HALTED,
                LockRefused::Busy { .. } => kind::STATE_UNAVAILABLE,
            };
            let status =
                if k == kind::STATE_UNAVAILABLE { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CONFLICT };
            return Refusal::new(status, k, r.to_string());
        }
        tracing::warn!("request failed: {e:#}");
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, kind::STATE_UNAVAILABLE, format!("{e:#}"))
    }
}

type Answer = Result<Response<Full<Bytes>>, Refusal>;

/// Answers one request (never fails: a refusal is an answer too).
pub async fn handle(
    server: Arc<Server>,
    caller: Caller,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let answer = route(&server, &caller, req).await;
    Ok(match answer {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!("{method} {path}: {} {}: {}", refusal.status.as_u16(), refusal.kind, refusal.value);
            let mut r = json(refusal.status, &ErrorBody { kind: refusal.kind.into(), value: refusal.value });
            if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
                let allow = if path == STATUS_PATH { "GET" } else { "POST" };
                r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            }
            r
        }
    })
}

async fn route(server: &Server, caller: &Caller, req: Request<Incoming>) -> Answer {
    let want = match req.uri().path() {
        PRE_REBOOT_PATH | STEADY_STATE_PATH | REPORT_PATH => Method::POST,
        STATUS_PATH => Method::GET,
        other => return Err(Refusal::new(StatusCode::NOT_FOUND, kind::NOT_FOUND, format!("no such path: {other}"))),
    };
    if req.method() != want {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            kind::METHOD_NOT_ALLOWED,
            format!("{} takes {want}, not {}", req.uri().path(), req.method()),
        ));
    }
    if req.uri().path() == STATUS_PATH {
        return Ok(json(StatusCode::OK, &super::status::read(&server.etcd, server.slots.default_slots()).await?));
    }
    // FleetLock: the header guards against a request that reached the server
    // by an unintended redirect. The extension asks for it too.
    if req.headers().get(PROTOCOL_HEADER).map(HeaderValue::as_bytes) != Some(b"true") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            kind::MISSING_HEADER,
            format!("the request lacks the header '{PROTOCOL_HEADER}: true'"),
        ));
    }
    let digest = match req.headers().get(RELEASE_HEADER) {
        None => None,
        Some(v) => Some(check_digest(v.to_str().map_err(|_| Refusal::bad(format!("{RELEASE_HEADER} is not text")))?)?),
    };
    let path = req.uri().path().to_string();
    match path.as_str() {
        PRE_REBOOT_PATH => {
            let LockRequest { client_params: p } = body(req).await?;
            let p = authorize(caller, check_client(p)?)?;
            let outcome = server.slots.lock(&p.group, &p.id, digest.as_deref()).await?;
            match outcome {
                Locked::Taken => tracing::info!("{} took a slot of group {}", p.id, p.group),
                Locked::AlreadyHeld => tracing::debug!("{} already holds a slot of group {}", p.id, p.group),
            }
            Ok(empty())
        }
        STEADY_STATE_PATH => {
            let LockRequest { client_params: p } = body(req).await?;
            let p = authorize(caller, check_client(p)?)?;
            if server.slots.unlock(&p.group, &p.id).await? {
                tracing::info!("{} released its slot of group {}", p.id, p.group);
            }
            Ok(empty())
        }
        _ => {
            let r: ReportRequest = body(req).await?;
            let p = authorize(caller, check_client(r.client_params)?)?;
            let digest = check_digest(&r.digest)?;
            let slot_kept = !r.healthy && server.slots.keep(&p.group, &p.id).await?;
            let outcome = server.health.report(&p.id, &p.group, &digest, r.healthy, &r.detail, r.halt_after).await?;
            tracing::info!(
                "{} reports {} on {digest}{}{}",
                p.id,
                if r.healthy { "healthy" } else { "unhealthy" },
                if slot_kept { ", keeps its slot" } else { "" },
                if outcome.halted { "; the release is halted" } else { "" }
            );
            Ok(json(StatusCode::OK, &ReportResponse { halted: outcome.halted, slot_kept }))
        }
    }
}

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes.
async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refusal> {
    let bytes = Limited::new(req.into_body(), MAX_BODY).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                kind::BAD_REQUEST,
                format!("the body is larger than {MAX_BODY} bytes"),
            )
        } else {
            Refusal::bad(format!("reading the body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes.to_bytes())
        .map_err(|e| Refusal::bad(format!("the body is not the JSON expected: {e}")))
}

/// Checks `client_params` as the protocol says: a non-empty id and a group
/// matching `^[a-zA-Z0-9.-]+$`.
pub fn check_client(p: ClientParams) -> Result<ClientParams, Refusal> {
    if p.id.is_empty() {
        return Err(Refusal::bad("client_params.id is empty"));
    }
    if p.id.len() > MAX_ID || p.id.chars().any(char::is_control) {
        return Err(Refusal::bad(format!(
            "client_params.id is longer than {MAX_ID} bytes or holds control characters"
        )));
    }
    if p.group.is_empty() || !p.group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err(Refusal::bad(format!("client_params.group {:?} does not match ^[a-zA-Z0-9.-]+$", p.group)));
    }
    Ok(p)
}

/// With `--client-ca`, a host acts only for the id its certificate names.
pub fn authorize(caller: &Caller, p: ClientParams) -> Result<ClientParams, Refusal> {
    match caller {
        Caller::Anyone => Ok(p),
        Caller::Certified(id) if *id == p.id => Ok(p),
        Caller::Certified(id) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            kind::FORBIDDEN,
            format!("the client certificate names {id:?}, not {:?}: a host may act only for itself", p.id),
        )),
        Caller::Uncertified(why) => Err(Refusal::new(StatusCode::FORBIDDEN, kind::CERTIFICATE_REQUIRED, why.clone())),
    }
}

/// Checks that `d` is an image digest (`sha256:` and 64 hex digits).
fn check_digest(d: &str) -> Result<String, Refusal> {
    d.parse::<crate::digest::Digest>()
        .map(|_| d.to_string())
        .map_err(|e| Refusal::bad(format!("{d:?} is not an image digest: {e}")))
}

fn empty() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::new()))
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, group: &str) -> ClientParams {
        ClientParams { id: id.into(), group: group.into() }
    }

    #[test]
    fn client_params_are_checked_as_the_protocol_says() {
        // (id, group, accepted): id non-empty; group ^[a-zA-Z0-9.-]+$.
        let table = [
            ("c988d2509fdf4cdcbed39037c56406fb", "default", true),
            ("node-1.example.org", "workers.eu-1", true),
            ("", "default", false),
            ("a", "", false),
            ("a", "a/b", false),
            ("a", "a_b", false),
            ("a", "grüppe", false),
            ("tab\there", "default", false),
        ];
        for (id, group, ok) in table {
            assert_eq!(check_client(client(id, group)).is_ok(), ok, "{id:?} in {group:?}");
        }
        assert!(check_client(client(&"x".repeat(MAX_ID + 1), "g")).is_err());
    }

    #[test]
    fn with_client_certificates_a_host_acts_only_for_itself() {
        // (caller, body id, status, kind)
        let table = [
            (Caller::Anyone, "host-b", None),
            (Caller::Certified("host-a".into()), "host-a", None),
            (Caller::Certified("host-a".into()), "host-b", Some(kind::FORBIDDEN)),
            (Caller::Certified("host-a".into()), "host-A", Some(kind::FORBIDDEN)),
            (Caller::Uncertified("no certificate".into()), "host-a", Some(kind::CERTIFICATE_REQUIRED)),
        ];
        for (caller, id, want) in table {
            let got = authorize(&caller, client(id, "g"));
            match want {
                None => assert_eq!(got.unwrap().id, id),
                Some(k) => {
                    let r = got.unwrap_err();
                    assert_eq!((r.status, r.kind), (StatusCode::FORBIDDEN, k), "{caller:?} as {id}");
                }
            }
        }
    }
}
