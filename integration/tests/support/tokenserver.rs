//! A small Docker registry token server for tests (the Bearer flow): checks
//! Basic credentials, mints RS256 JWTs whose `access` claim grants the scopes
//! asked for, signed with a key made by the openssl CLI. The registry trusts
//! the signing certificate through `auth.token.rootcertbundle` and finds it in
//! the token's `x5c` header. Optionally one identity (refresh) token, taken by
//! the OAuth2 refresh-token grant (a form POST) or, for a server without the
//! OAuth2 endpoint (POST answered 404), as the Basic password of user
//! `<token>` on the GET. Std threads; stops accepting when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::run;

/// The `service` (JWT audience) the registry is configured with.
pub const SERVICE: &str = "hostctl-test-registry";
/// The JWT issuer the registry is configured with.
pub const ISSUER: &str = "hostctl-test-issuer";

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// Whether a token was granted (credentials accepted).
    pub granted: bool,
    /// `GET`, or `POST` (OAuth2).
    pub method: String,
    /// The OAuth2 `grant_type` of a POST.
    pub grant_type: Option<String>,
}

pub struct TokenServer {
    pub addr: String,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
}

struct Minter {
    key: PathBuf,
    x5c: String,
    user: String,
    password: String,
    expires_in: u64,
    /// The identity (refresh) token accepted, if any.
    refresh_token: Option<String>,
    /// Whether the OAuth2 POST is served (else it is answered 404).
    oauth2: bool,
}

impl TokenServer {
    /// Serves tokens to `user`/`password`; tokens say they live `expires_in` seconds.
    pub fn start(user: &str, password: &str, expires_in: u64) -> TokenServer {
        TokenServer::start_with_refresh_token(user, password, expires_in, None)
    }

    /// Like [`TokenServer::start`], and answers OAuth2 POSTs with
    /// `grant_type=refresh_token` when the refresh token is `refresh_token`.
    pub fn start_with_refresh_token(
        user: &str,
        password: &str,
        expires_in: u64,
        refresh_token: Option<&str>,
    ) -> TokenServer {
        TokenServer::start_inner(user, password, expires_in, refresh_token, refresh_token.is_some())
    }

    /// A token server without the OAuth2 endpoint (every POST is answered
    /// 404) that takes the identity token `identity_token` on the GET, as
    /// the Basic password of user `<token>`.
    pub fn start_without_oauth2(user: &str, password: &str, expires_in: u64, identity_token: &str) -> TokenServer {
        TokenServer::start_inner(user, password, expires_in, Some(identity_token), false)
    }

    fn start_inner(
        user: &str,
        password: &str,
        expires_in: u64,
        refresh_token: Option<&str>,
        oauth2: bool,
    ) -> TokenServer {
        super::require_tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hostctl test tokens"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = run(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert)).stdout;
        let minter = Arc::new(Minter {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
            user: user.to_string(),
            password: password.to_string(),
            expires_in,
            refresh_token: refresh_token.map(str::to_string),
            oauth2,
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (minter, log) = (minter.clone(), log2.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &minter, &log);
                });
            }
        });
        TokenServer { addr, dir, log, stop }
    }

    /// The realm URL for the registry config.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate whose key signs the tokens (`rootcertbundle`).
    pub fn signing_cert(&self) -> PathBuf {
        self.dir.path().join("token.crt")
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(conn: TcpStream, minter: &Minter, log: &Mutex<Vec<TokenRequest>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let method = request_line.split_whitespace().next().unwrap_or("").to_string();
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    // GET: parameters in the query; POST: in the form body.
    let params = if method == "POST" {
        let mut body = vec![0u8; content_length.min(64 * 1024)];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        String::from_utf8_lossy(&body).into_owned()
    } else {
        target.split_once('?').map(|(_, q)| q).unwrap_or("").to_string()
    };
    let mut scopes = Vec::new();
    let mut service = None;
    let (mut grant_type, mut refresh_token) = (None, None);
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "scope" => scopes.extend(percent_decode(v).split(' ').map(str::to_string)),
            "service" => service = Some(percent_decode(v)),
            "grant_type" => grant_type = Some(percent_decode(v)),
            "refresh_token" => refresh_token = Some(percent_decode(v)),
            _ => {}
        }
    }
    if method == "POST" {
        let ok = minter.oauth2
            && grant_type.as_deref() == Some("refresh_token")
            && refresh_token.is_some()
            && refresh_token == minter.refresh_token;
        let (status, body) = if ok {
            let token = minter.mint(&scopes);
            ("200 OK", serde_json::json!({ "access_token": token, "expires_in": minter.expires_in }).to_string())
        } else if !minter.oauth2 {
            ("404 Not Found", String::new())
        } else {
            ("401 Unauthorized", r#"{"error":"invalid_grant"}"#.to_string())
        };
        log.lock().unwrap().push(TokenRequest { scopes, service, granted: ok, method, grant_type });
        return respond(conn, status, &body);
    }
    let basic = |user: &str, password: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    let accepted = |a: &str| {
        a == basic(&minter.user, &minter.password)
            || minter.refresh_token.as_deref().is_some_and(|t| a == basic("<token>", t))
    };
    let (status, body) = match authorization.as_deref() {
        Some(a) if accepted(a) => {
            let token = minter.mint(&scopes);
            let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": minter.expires_in });
            ("200 OK", body.to_string())
        }
        // Anonymous: a token that grants nothing (as public token servers do).
        None => {
            let token = minter.mint(&[]);
            ("200 OK", serde_json::json!({ "token": token, "expires_in": minter.expires_in }).to_string())
        }
        Some(_) => ("401 Unauthorized", r#"{"details":"incorrect username or password"}"#.to_string()),
    };
    let granted = authorization.is_some() && status == "200 OK";
    log.lock().unwrap().push(TokenRequest { scopes, service, granted, method, grant_type });
    respond(conn, status, &body)
}

/// Writes a JSON reply with `status` and closes the connection.
fn respond(mut conn: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

impl Minter {
    fn mint(&self, scopes: &[String]) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // repository:NAME:ACTIONS (NAME may hold no colon for these tests)
                let mut parts = s.splitn(3, ':');
                let (t, n, a) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({ "type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [self.x5c] });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE, "exp": now + self.expires_in,
            "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_suffix()), "access": access,
        });
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (JWT `RS256`) by the openssl CLI.
fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running openssl dgst");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
