//! An RFC 3161 timestamp authority on loopback for the tests: every request is
//! answered by real `openssl ts -reply`, signing with a certificate chain made
//! by openssl when the authority starts (a P-384 root, a P-384 intermediate,
//! and a P-256 signing certificate whose extended key usage is timeStamping,
//! critical, as RFC 3161 requires). The intermediate carries the
//! timeStamping extended key usage too, as the intermediate of GitHub's TSA
//! in sigstore-rust's built-in GitHub root does: sigstore-verify (through
//! rustls-webpki) requires it of every certificate below the root and refuses
//! a chain whose intermediate has none (`RequiredEkuNotFound`, seen here).
//!
//! It speaks the HTTP form of RFC 3161 (section 3.4 of RFC 3161, as
//! sigstore's timestamp-authority serves it at `/api/v1/timestamp`): a `POST`
//! whose body is a DER `TimeStampReq` with `Content-Type:
//! application/timestamp-query`, answered with the DER `TimeStampResp` as
//! `application/timestamp-reply`. Anything else is refused (404 for another
//! path, 415 for another content type). Its clock is the machine's, so the
//! signed time is the time of the request. Std threads; stops accepting when
//! dropped, and its keys live in a temporary directory removed with it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

use super::http1::{read_request, respond};
use super::x509::{openssl, self_signed_ca};

/// The path requests are served at.
pub const TIMESTAMP_PATH: &str = "/api/v1/timestamp";

/// `openssl ts -reply`'s configuration: SHA-256 signatures over the signed
/// attributes, the request's hash algorithm if it is a SHA-2 one, and the
/// signing certificate named by its SHA-256 (ESSCertIDv2).
const TS_CONFIG: &str = "[tsa]\ndefault_tsa = local\n[local]\nserial = tsaserial\ncrypto_device = builtin\n\
     signer_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\ndigests = sha256, sha384, sha512\n\
     accuracy = secs:1\nordering = yes\ntsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n";

/// A running timestamp authority.
pub struct Tsa {
    /// `http://127.0.0.1:PORT/api/v1/timestamp`, for `--timestamp-server-url`.
    pub url: String,
    addr: String,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

/// A new EC key on `curve` in `dir/NAME.key` and a CSR for `subject` in `dir/NAME.csr`.
fn key_and_csr(dir: &Path, name: &str, curve: &str, subject: &str) {
    let key = format!("{name}.key");
    openssl(dir, &["ecparam", "-name", curve, "-genkey", "-noout", "-out", &key]);
    openssl(dir, &["req", "-new", "-key", &key, "-subj", subject, "-out", &format!("{name}.csr")]);
}

/// Issues `dir/NAME.pem` from `NAME.csr`, signed by `issuer` (`ISSUER.pem`,
/// `ISSUER.key`), with the extensions `ext`.
fn issue(dir: &Path, name: &str, issuer: &str, ext: &str) {
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-sha384",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    pem::parse(std::fs::read(pem_file).unwrap()).unwrap().into_contents()
}

impl Tsa {
    /// Makes the authority's chain and starts serving on a free loopback port.
    pub fn start() -> Tsa {
        super::require_tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed_ca(
            d,
            "root",
            "secp384r1",
            "/O=hostctl test/CN=local tsa root",
            &["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"],
        );
        key_and_csr(d, "intermediate", "secp384r1", "/O=hostctl test/CN=local tsa intermediate");
        issue(
            d,
            "intermediate",
            "root",
            "basicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n\
             extendedKeyUsage = critical, timeStamping\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        );
        key_and_csr(d, "signer", "prime256v1", "/O=hostctl test/CN=local tsa");
        issue(
            d,
            "signer",
            "intermediate",
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = critical, timeStamping\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        );
        let chain = [std::fs::read(d.join("intermediate.pem")).unwrap(), std::fs::read(d.join("root.pem")).unwrap()];
        std::fs::write(d.join("chain.pem"), chain.concat()).unwrap();
        std::fs::write(d.join("tsa.cnf"), TS_CONFIG).unwrap();
        std::fs::write(d.join("tsaserial"), "01\n").unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, work) = (stop.clone(), d.to_path_buf());
        // One openssl at a time: they share the serial number file.
        let signer = Arc::new(Mutex::new(0u64));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let (w, s) = (work.clone(), signer.clone());
                    std::thread::spawn(move || serve(conn, &w, &s));
                }
            }
        });
        Tsa { url: format!("http://{addr}{TIMESTAMP_PATH}"), addr, dir, stop }
    }

    /// The chain as DER, signing certificate first, root last (the order of
    /// a trusted root's `certChain`).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        ["signer.pem", "intermediate.pem", "root.pem"].iter().map(|f| der_of(&self.dir.path().join(f))).collect()
    }

    /// The root certificate's PEM file.
    pub fn root_pem(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    /// The intermediate certificate's PEM file.
    pub fn intermediate_pem(&self) -> PathBuf {
        self.dir.path().join("intermediate.pem")
    }

    /// The `timestampAuthorities` entry of a sigstore `trusted_root.json` for
    /// this authority, trusted for the time window `valid_for` (`start`,
    /// optional `end`, RFC 3339).
    pub fn trusted_root_entry(&self, valid_for: Value) -> Value {
        let b64 = |der: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(der);
        let certs: Vec<Value> = self.chain_der().iter().map(|der| json!({"rawBytes": b64(der)})).collect();
        json!({
            "subject": {"organization": "hostctl test", "commonName": "local tsa"},
            "uri": self.url,
            "certChain": {"certificates": certs},
            "validFor": valid_for,
        })
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(conn: TcpStream, dir: &Path, signer: &Mutex<u64>) {
    let Some(req) = read_request(&conn) else { return };
    let (status, out_type, out) = if req.method != "POST" || req.path != TIMESTAMP_PATH {
        ("404 Not Found", "text/plain", b"not served by this test timestamp authority\n".to_vec())
    } else if req.content_type != "application/timestamp-query" {
        ("415 Unsupported Media Type", "text/plain", b"expected application/timestamp-query\n".to_vec())
    } else {
        match reply(dir, signer, &req.body) {
            Ok(der) => ("200 OK", "application/timestamp-reply", der),
            Err(why) => ("400 Bad Request", "text/plain", why.into_bytes()),
        }
    };
    respond(conn, status, out_type, "", &out);
}

/// `openssl ts -reply` for the DER request `query`: the DER response, or
/// openssl's complaint.
fn reply(dir: &Path, signer: &Mutex<u64>, query: &[u8]) -> Result<Vec<u8>, String> {
    let mut n = signer.lock().unwrap();
    *n += 1;
    let (q, r) = (format!("request-{n}.tsq"), format!("reply-{n}.tsr"));
    std::fs::write(dir.join(&q), query).map_err(|e| e.to_string())?;
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["ts", "-reply", "-config", "tsa.cnf", "-queryfile", &q])
        .args(["-signer", "signer.pem", "-inkey", "signer.key", "-chain", "chain.pem", "-out", &r])
        .output()
        .map_err(|e| e.to_string())?;
    // openssl writes a response with a failure status for a request it
    // refuses; only a granted one is an answer.
    let text = Command::new("openssl")
        .current_dir(dir)
        .args(["ts", "-reply", "-in", &r, "-text"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() || !String::from_utf8_lossy(&text.stdout).contains("Status: Granted.") {
        return Err(format!("openssl ts -reply: {}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::read(dir.join(&r)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POSTs `body` to `path` with `ctype`; returns the status line and body.
    fn post(tsa: &Tsa, path: &str, ctype: &str, body: &[u8]) -> (String, Vec<u8>) {
        let mut conn = TcpStream::connect(&tsa.addr).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            tsa.addr,
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut all = Vec::new();
        conn.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..split]).to_string();
        (head.lines().next().unwrap().to_string(), all[split + 4..].to_vec())
    }

    /// A query made by `openssl ts -query` is answered with a response that
    /// `openssl ts -verify` accepts for that data against the root (the
    /// intermediate untrusted); a response for other data is refused by it;
    /// another content type or path is not answered.
    #[test]
    fn answers_rfc3161_queries_that_openssl_verifies_against_its_root() {
        let tsa = Tsa::start();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        std::fs::write(w.join("data"), b"signature bytes").unwrap();
        std::fs::write(w.join("other"), b"other bytes").unwrap();
        openssl(w, &["ts", "-query", "-data", "data", "-sha256", "-cert", "-out", "q.tsq"]);
        let query = std::fs::read(w.join("q.tsq")).unwrap();
        let (status, body) = post(&tsa, TIMESTAMP_PATH, "application/timestamp-query", &query);
        assert_eq!(status, "HTTP/1.1 200 OK");
        std::fs::write(w.join("r.tsr"), &body).unwrap();
        let root = tsa.root_pem();
        let inter = tsa.intermediate_pem();
        let verify = |data: &str| {
            Command::new("openssl")
                .current_dir(w)
                .args(["ts", "-verify", "-in", "r.tsr", "-data", data, "-CAfile"])
                .arg(&root)
                .arg("-untrusted")
                .arg(&inter)
                .output()
                .unwrap()
        };
        let ok = verify("data");
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        assert!(!verify("other").status.success(), "a token verifies only for the data it stamps");

        let (status, _) = post(&tsa, TIMESTAMP_PATH, "application/octet-stream", &query);
        assert!(status.contains("415"), "{status}");
        let (status, _) = post(&tsa, "/other", "application/timestamp-query", &query);
        assert!(status.contains("404"), "{status}");
        let (status, body) = post(&tsa, TIMESTAMP_PATH, "application/timestamp-query", b"not DER");
        assert!(status.contains("400"), "{status}: {}", String::from_utf8_lossy(&body));
        assert_eq!(tsa.chain_der().len(), 3);
    }
}
