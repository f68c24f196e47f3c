//! A real Distribution registry (`docker-registry`) on a random loopback port:
//! plain HTTP, TLS with a test CA (`openssl` CLI) and htpasswd Basic auth
//! (`htpasswd -Bbn`), or TLS with Bearer tokens from [`super::tokenserver`];
//! and [`FaultProxy`], a loopback TCP proxy that cuts or fails blob responses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::run;

/// A running registry; killed (by its PID) when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` (`[::1]:PORT` for [`Registry::start_ipv6`]).
    pub addr: String,
    /// For TLS registries: a directory holding the test CA as `ca.crt`
    /// (what `--cert-dir` and skopeo's `--dest-cert-dir` take).
    pub cert_dir: Option<PathBuf>,
    /// For registries requiring client certificates: the test CA as `ca.crt`
    /// plus `client.cert` and `client.key` (a containers-certs.d(5) directory).
    pub client_cert_dir: Option<PathBuf>,
    /// Where the TLS key material lives (removed with the registry).
    keys: Option<tempfile::TempDir>,
}

/// A test CA and a server certificate it signed for `IP:127.0.0.1`, made with the openssl CLI.
pub struct TestTls {
    /// Holds `ca.crt` only.
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A self-signed P-256 CA named `cn`: its key at `key`, its certificate at `crt`.
fn make_ca(key: &Path, crt: &Path, cn: &str) {
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(crt));
}

/// A P-256 key (`key`) and a certificate (`crt`) for `cn` signed by the CA
/// `ca` (`.crt`, `.key` given), with the X.509v3 extensions `ext`; scratch
/// files go to `dir`.
fn issue(dir: &Path, (ca_crt, ca_key): (&Path, &Path), cn: &str, ext: &str, serial: u32, key: &Path, crt: &Path) {
    let csr = dir.join(format!("{serial}.csr"));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", &format!("/CN={cn}")])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(&csr));
    let ext_file = dir.join(format!("{serial}.ext"));
    std::fs::write(&ext_file, ext).unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", &serial.to_string()])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(ca_crt)
        .arg("-CAkey")
        .arg(ca_key)
        .arg("-extfile")
        .arg(&ext_file)
        .arg("-out")
        .arg(crt));
}

impl TestTls {
    /// Creates the CA and server certificate under `dir`.
    pub fn create(dir: &Path) -> TestTls {
        super::require_tool("openssl");
        let cert_dir = dir.join("certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let (ca_key, ca_crt) = (dir.join("ca.key"), cert_dir.join("ca.crt"));
        make_ca(&ca_key, &ca_crt, "hostctl test CA");
        let (server_key, server_cert) = (dir.join("server.key"), dir.join("server.crt"));
        let ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                   keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
        issue(dir, (&ca_crt, &ca_key), "127.0.0.1", ext, 2, &server_key, &server_cert);
        TestTls { cert_dir, server_cert, server_key }
    }

    /// A client CA (`client-ca.crt` under `dir`) and a client certificate it
    /// signed, written with the server CA as `ca.crt`, `client.cert` and
    /// `client.key` into a new directory `dir/client-certs`, which is returned.
    pub fn create_client(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (ca_key, ca_crt) = (dir.join("client-ca.key"), dir.join("client-ca.crt"));
        make_ca(&ca_key, &ca_crt, "hostctl test client CA");
        let out = dir.join("client-certs");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(self.cert_dir.join("ca.crt"), out.join("ca.crt")).unwrap();
        let ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
        issue(
            dir,
            (&ca_crt, &ca_key),
            "hostctl test client",
            ext,
            3,
            &out.join("client.key"),
            &out.join("client.cert"),
        );
        (out, ca_crt)
    }

    /// The registry config's `http.tls` lines (indented for the `http:` section).
    fn http_tls(&self) -> String {
        format!("  tls:\n    certificate: {}\n    key: {}\n", self.server_cert.display(), self.server_key.display())
    }
}

/// A client certificate `out/NAME.cert` and its key `out/NAME.key`, signed by
/// a fresh CA that no test registry trusts (scratch files go to `scratch`).
pub fn untrusted_client_pair(scratch: &Path, out: &Path, name: &str) {
    super::require_tool("openssl");
    let (ca_key, ca_crt) = (scratch.join(format!("{name}-ca.key")), scratch.join(format!("{name}-ca.crt")));
    make_ca(&ca_key, &ca_crt, &format!("hostctl test untrusted CA {name}"));
    let ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
    let (key, cert) = (out.join(format!("{name}.key")), out.join(format!("{name}.cert")));
    issue(scratch, (&ca_crt, &ca_key), &format!("hostctl test client {name}"), ext, 4, &key, &cert);
}

/// A free TCP port on 127.0.0.1 (bound then released; callers retry on a clash).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// Plain HTTP, anonymous, deletes enabled.
    pub fn start() -> Registry {
        Registry::start_with_config(|_dir, port| format!("http:\n  addr: 127.0.0.1:{port}\n"))
    }

    /// Plain HTTP, anonymous, on the IPv6 loopback: `addr` is `[::1]:PORT`.
    pub fn start_ipv6() -> Registry {
        Registry::start_on("[::1]", |_dir, port| format!("http:\n  addr: \"[::1]:{port}\"\n"))
    }

    /// Starts a registry whose config gets the `storage` section from here and
    /// the rest (`http`, `auth`) from `extra(dir, port)`.
    pub fn start_with_config(extra: impl Fn(&std::path::Path, u16) -> String) -> Registry {
        Registry::start_on("127.0.0.1", extra)
    }

    /// [`Registry::start_with_config`] for a registry listening on `host`.
    fn start_on(host: &str, extra: impl Fn(&std::path::Path, u16) -> String) -> Registry {
        super::require_tool("docker-registry");
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{}",
                dir.path().join("data").display(),
                extra(dir.path(), port)
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = std::fs::File::create(dir.path().join("log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("starting docker-registry");
            let mut reg = Registry {
                child,
                port,
                dir,
                addr: format!("{host}:{port}"),
                cert_dir: None,
                client_cert_dir: None,
                keys: None,
            };
            if reg.wait_ready() {
                return reg;
            }
        }
        panic!("docker-registry did not start after 5 attempts");
    }

    /// TLS with a fresh test CA and htpasswd Basic auth for `user`/`password`.
    pub fn start_tls_basic(user: &str, password: &str) -> Registry {
        super::require_tool("htpasswd");
        let keys = tempfile::tempdir().unwrap();
        let tls = TestTls::create(keys.path());
        let htpasswd = keys.path().join("htpasswd");
        let out = run(Command::new("htpasswd").args(["-Bbn", user, password]));
        std::fs::write(&htpasswd, out.stdout).unwrap();
        let mut reg = Registry::start_with_config(|_dir, port| {
            format!(
                "http:\n  addr: 127.0.0.1:{port}\n{}auth:\n  htpasswd:\n    realm: hostctl-test\n    path: {}\n",
                tls.http_tls(),
                htpasswd.display()
            )
        });
        reg.adopt_tls(keys, tls);
        reg
    }

    /// Mutual TLS: a fresh test CA for the server, and client certificates
    /// required (`http.tls.clientcas`, a second test CA); anonymous otherwise.
    /// [`Registry::client_cert_dir`] holds what a client needs.
    pub fn start_tls_mutual() -> Registry {
        let keys = tempfile::tempdir().unwrap();
        let tls = TestTls::create(keys.path());
        let (client_dir, client_ca) = tls.create_client(keys.path());
        let mut reg = Registry::start_with_config(|_dir, port| {
            format!(
                "http:\n  addr: 127.0.0.1:{port}\n{}    clientcas:\n      - {}\n",
                tls.http_tls(),
                client_ca.display()
            )
        });
        reg.adopt_tls(keys, tls);
        reg.client_cert_dir = Some(client_dir);
        reg
    }

    /// TLS with a fresh test CA and Bearer token auth against `tokens`.
    pub fn start_tls_token(tokens: &super::tokenserver::TokenServer) -> Registry {
        let keys = tempfile::tempdir().unwrap();
        let tls = TestTls::create(keys.path());
        let mut reg = Registry::start_with_config(|_dir, port| {
            format!(
                "http:\n  addr: 127.0.0.1:{port}\n{}auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                tls.http_tls(),
                tokens.realm(),
                super::tokenserver::SERVICE,
                super::tokenserver::ISSUER,
                tokens.signing_cert().display()
            )
        });
        reg.adopt_tls(keys, tls);
        reg
    }

    /// Keeps the key material alive as long as the registry.
    fn adopt_tls(&mut self, keys: tempfile::TempDir, tls: TestTls) {
        self.cert_dir = Some(tls.cert_dir);
        self.keys = Some(keys);
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited: port clash or bad config; the caller retries
            }
            if std::net::TcpStream::connect(self.addr.as_str()).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        false
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Where the registry keeps its data (to tamper with blobs in tests).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:PORT/REPO:TAG`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_tag)
    }

    /// Stops the registry now (e.g. to test a registry that goes away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`FaultProxy`] does to requests whose request line contains `path_match`.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Substring of the request line that selects the requests to disturb.
    pub path_match: String,
    /// Reply `503` to this many matching requests (without forwarding them) ...
    pub fail_503: u32,
    /// ... with this `Retry-After` (seconds), if any ...
    pub retry_after: Option<u32>,
    /// ... or this one (any text, e.g. an HTTP-date).
    pub retry_after_text: Option<String>,
    /// Cut this many matching responses (to requests without `Range`) ...
    pub cuts: u32,
    /// ... after this many response bytes (headers included).
    pub cut_after: u64,
    /// Once those cuts are spent, answer `503` to every further matching
    /// request (a registry that goes down in the middle of a download).
    pub down_after_cuts: bool,
    /// Instead of cutting, stop sending after `cut_after` bytes and hold the
    /// connection open (a registry that hangs), until the proxy is dropped.
    pub stall: bool,
    /// Remove `Range` headers from matching requests (a registry that ignores ranges).
    pub strip_range: bool,
    /// Replace the first string with the second in matching request lines
    /// (a registry that serves other content than was asked for).
    pub rewrite: Option<(String, String)>,
    /// Answer matching requests with these raw bytes (a whole HTTP response,
    /// `Connection: close` is added) instead of forwarding them.
    pub respond: Option<Arc<Vec<u8>>>,
}

/// A loopback TCP proxy in front of a registry that injects faults, and
/// records every request head it forwards. Stops accepting when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`, to be used as the registry address.
    pub addr: String,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let proxy =
            FaultProxy { addr, faults: Arc::new(Mutex::new(faults)), seen: Arc::default(), stop: Arc::default() };
        let (faults, seen, stop, upstream) =
            (proxy.faults.clone(), proxy.seen.clone(), proxy.stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (faults, seen, stop) = (faults.clone(), seen.clone(), stop.clone());
                std::thread::spawn(move || proxy_connection(client, server, faults, seen, stop));
            }
        });
        proxy
    }

    /// Request heads seen so far (matching or not), lower-cased.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Matching request heads seen so far.
    pub fn matching_requests(&self) -> Vec<String> {
        let m = self.faults.lock().unwrap().path_match.to_lowercase();
        self.requests().into_iter().filter(|r| r.lines().next().unwrap_or("").contains(&m)).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
    }
}

const NO_CUT: u64 = u64::MAX;

fn proxy_connection(
    mut client: TcpStream,
    mut server: TcpStream,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    // Bytes of the current response still allowed through (NO_CUT: unlimited).
    let budget = Arc::new(AtomicU64::new(NO_CUT));
    let stall = faults.lock().unwrap().stall;
    let (mut c2, mut s2, budget2) = (client.try_clone().unwrap(), server.try_clone().unwrap(), budget.clone());
    // Server → client, cutting both sides once the budget is spent.
    let down = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let allowed = budget2.load(Ordering::SeqCst);
            if stall && allowed == 0 {
                // Hang: send nothing more, close nothing, until the proxy goes.
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                break;
            }
            let n = match s2.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = budget2.load(Ordering::SeqCst);
            if stall && allowed != NO_CUT && n as u64 >= allowed {
                let _ = c2.write_all(&buf[..allowed as usize]);
                budget2.store(0, Ordering::SeqCst);
                continue;
            }
            if allowed != NO_CUT && n as u64 >= allowed {
                let _ = c2.write_all(&buf[..allowed as usize]);
                let _ = c2.shutdown(Shutdown::Both);
                let _ = s2.shutdown(Shutdown::Both);
                break;
            }
            if allowed != NO_CUT {
                budget2.store(allowed - n as u64, Ordering::SeqCst);
            }
            if c2.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c2.shutdown(Shutdown::Write);
    });
    // Client → server: GET requests have no bodies, so everything is heads.
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    'outer: loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        if !pending.starts_with(b"GET ") && !pending.starts_with(b"HEAD ") && !pending.starts_with(b"PUT ") {
            // Not HTTP (a TLS hello): pass through untouched.
            if server.write_all(&pending).is_err() {
                break;
            }
            pending.clear();
            continue;
        }
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let mut text = String::from_utf8_lossy(&head).into_owned();
            let mut f = faults.lock().unwrap();
            let matches = !f.path_match.is_empty() && text.lines().next().unwrap_or("").contains(&f.path_match);
            let has_range = text.to_lowercase().contains("\r\nrange:");
            seen.lock().unwrap().push(text.to_lowercase());
            if matches && f.fail_503 > 0 {
                f.fail_503 -= 1;
                let retry_after = f
                    .retry_after
                    .map(|s| s.to_string())
                    .or_else(|| f.retry_after_text.clone())
                    .map(|v| format!("Retry-After: {v}\r\n"))
                    .unwrap_or_default();
                let reply = format!(
                    "HTTP/1.1 503 Service Unavailable\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = client.write_all(reply.as_bytes());
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                break 'outer;
            }
            if let Some(canned) = f.respond.clone().filter(|_| matches) {
                drop(f);
                let _ = client.write_all(&canned);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                break 'outer;
            }
            if matches && f.strip_range && has_range {
                text = text
                    .split("\r\n")
                    .filter(|l| !l.to_lowercase().starts_with("range:"))
                    .collect::<Vec<_>>()
                    .join("\r\n");
            }
            if let Some((from, to)) = f.rewrite.as_ref().filter(|_| matches) {
                text = text.replacen(from.as_str(), to, 1);
            }
            if matches && !has_range && f.cuts > 0 {
                f.cuts -= 1;
                if f.cuts == 0 && f.down_after_cuts {
                    f.fail_503 = u32::MAX;
                }
                budget.store(f.cut_after, Ordering::SeqCst);
            } else {
                budget.store(NO_CUT, Ordering::SeqCst);
            }
            drop(f);
            if server.write_all(text.as_bytes()).is_err() {
                break 'outer;
            }
        }
    }
    let _ = server.shutdown(Shutdown::Write);
    let _ = down.join();
}
