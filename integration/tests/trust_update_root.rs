//! `hostctl trust update-root --mirror URL`: the pinned `trusted_root.json`
//! refreshed through TUF from a repository made by python-tuf (the reference
//! implementation, in the venv integration/setup.sh makes) and served over
//! loopback by Python's `http.server`. Expired, tampered or rolled-back
//! metadata is refused with exit 4 and the old file kept; an unreachable
//! mirror is exit 1, file kept.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::support::registry::free_port;
use crate::support::{hostctl, run};

/// The venv with python-tuf (integration/setup.sh; HOSTCTL_TUF_VENV overrides).
fn python() -> PathBuf {
    let venv = std::env::var_os("HOSTCTL_TUF_VENV").map(PathBuf::from).unwrap_or("/var/cache/hostctl-tuf/venv".into());
    let py = venv.join("bin/python");
    assert!(py.exists(), "no python-tuf venv at {} (run integration/setup.sh)", venv.display());
    py
}

/// A TUF repository directory, served over loopback while this lives.
struct Mirror {
    dir: tempfile::TempDir,
    server: Child,
    url: String,
}

impl Mirror {
    /// `tuf_repo.py init` with `trusted_root` as the target, served.
    fn new(trusted_root: &[u8]) -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir.path().join("repo"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let m = Mirror { dir, server, url: format!("http://127.0.0.1:{port}") };
        std::fs::create_dir(m.repo()).unwrap();
        m.step(&["init"], Some(trusted_root), &[]);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("http.server did not start on port {port}");
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn step(&self, step: &[&str], target: Option<&[u8]>, extra: &[&str]) {
        let mut cmd = Command::new(python());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tests/support/tuf_repo.py"));
        cmd.args(step).arg(self.repo());
        if let Some(t) = target {
            let f = self.dir.path().join("target.json");
            std::fs::write(&f, t).unwrap();
            cmd.arg(f);
        }
        run(cmd.args(extra));
    }

    /// New targets, snapshot and timestamp, `trusted_root` as the target.
    fn publish(&self, trusted_root: &[u8], extra: &[&str]) {
        self.step(&["publish"], Some(trusted_root), extra);
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.repo().join(name)).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.repo().join(name), bytes).unwrap();
    }

    /// The served file of the trusted root target `bytes`.
    fn target_file(&self, bytes: &[u8]) -> String {
        format!("targets/{}.trusted_root.json", hex::encode(Sha256::digest(bytes)))
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A trusted root naming one transparency log with a fresh key; `n` tells them apart.
fn sample_root(n: u32) -> Vec<u8> {
    let key = sigstore_crypto::KeyPair::generate_ecdsa_p256().unwrap();
    let spki = key.public_key_der().unwrap().as_bytes().to_vec();
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_vec_pretty(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{"baseUrl": format!("https://log{n}.example"), "hashAlgorithm": "SHA2_256",
                   "publicKey": {"rawBytes": b64.encode(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                 "validFor": {"start": "2020-01-01T00:00:00Z"}},
                   "logId": {"keyId": b64.encode(Sha256::digest(&spki))}}],
        "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []
    }))
    .unwrap()
}

/// A sysroot whose pinned TUF root is the mirror's first root.
fn sysroot_pinning(m: &Mirror) -> tempfile::TempDir {
    let s = tempfile::tempdir().unwrap();
    let dir = s.path().join("etc/hostctl/sigstore");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tuf-root.json"), m.read("1.root.json")).unwrap();
    s
}

fn pinned(s: &Path) -> PathBuf {
    s.join("etc/hostctl/sigstore/trusted_root.json")
}

fn update(s: &Path, m: &Mirror) -> Output {
    hostctl(s, &["trust", "update-root", "--mirror", &m.url])
}

fn update_ok(s: &Path, m: &Mirror) -> String {
    let out = update(s, m);
    assert!(out.status.success(), "update-root: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Refused with exit 4, `reason` said, `kept` still the pinned root, and no
/// temporary file left beside it.
fn assert_refused(s: &Path, m: &Mirror, reason: &str, kept: &[u8]) {
    let out = update(s, m);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "should be refused (exit 4): {err}");
    assert!(err.contains(reason), "the error should say {reason:?}: {err}");
    assert!(err.contains("was left as it was"), "{err}");
    assert_eq!(std::fs::read(pinned(s)).unwrap(), kept, "the pinned root changed");
    let names: Vec<_> =
        std::fs::read_dir(pinned(s).parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "only tuf-root.json and trusted_root.json: {names:?}");
}

#[test]
fn trust_update_root_from_a_mirror_writes_the_root_and_follows_new_targets_and_root_rotation() {
    let (a, b) = (sample_root(1), sample_root(2));
    let m = Mirror::new(&a);
    let s = sysroot_pinning(&m);
    let out = update_ok(s.path(), &m);
    assert!(out.contains("updated (TUF root version 1, targets version 1"), "{out}");
    assert_eq!(std::fs::read(pinned(s.path())).unwrap(), a);
    let out = update_ok(s.path(), &m);
    assert!(out.contains("unchanged"), "{out}");

    m.publish(&b, &[]);
    m.step(&["rotate-root"], None, &[]);
    let out = update_ok(s.path(), &m);
    assert!(out.contains("updated (TUF root version 2, targets version 2"), "{out}");
    assert_eq!(std::fs::read(pinned(s.path())).unwrap(), b);

    // Named paths instead of the sysroot's.
    let elsewhere = tempfile::tempdir().unwrap();
    let (tuf_root, out_file) = (elsewhere.path().join("root.json"), elsewhere.path().join("out/root.json"));
    std::fs::write(&tuf_root, m.read("1.root.json")).unwrap();
    let args = ["--tuf-root", tuf_root.to_str().unwrap(), "--trusted-root", out_file.to_str().unwrap()];
    let mut all = vec!["trust", "update-root", "--mirror", &m.url, "--metadata-dir"];
    let md = elsewhere.path().join("md");
    all.push(md.to_str().unwrap());
    all.extend(args);
    let out = hostctl(s.path(), &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), b);
}

#[test]
fn trust_update_root_refuses_expired_metadata_and_an_unreachable_mirror_keeping_the_old_root() {
    let a = sample_root(1);
    let m = Mirror::new(&a);
    let s = sysroot_pinning(&m);
    update_ok(s.path(), &m);
    m.publish(&sample_root(2), &["--expires-in", "-60"]);
    assert_refused(s.path(), &m, "expired", &a);

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let out = hostctl(s.path(), &["trust", "update-root", "--mirror", &nobody]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an unreachable mirror is not a verdict: {err}");
    assert!(err.contains("was left as it was"), "{err}");
    assert_eq!(std::fs::read(pinned(s.path())).unwrap(), a);
}

#[test]
fn trust_update_root_refuses_a_tampered_target_or_timestamp_keeping_the_old_root() {
    let (a, b) = (sample_root(1), sample_root(2));
    let m = Mirror::new(&a);
    let s = sysroot_pinning(&m);
    update_ok(s.path(), &m);
    m.publish(&b, &[]);

    // The target's bytes changed on the mirror (same name, same length).
    let target = m.target_file(&b);
    let mut evil = b.clone();
    let i = evil.iter().position(|&c| c == b'1').unwrap_or(0);
    evil[i] = if evil[i] == b'1' { b'2' } else { b'1' };
    m.write(&target, &evil);
    assert_refused(s.path(), &m, "integrity check failed", &a);
    m.write(&target, &b);

    // The timestamp's content changed without its signature.
    let ts = m.read("timestamp.json");
    let mut v: serde_json::Value = serde_json::from_slice(&ts).unwrap();
    v["signed"]["expires"] = serde_json::json!("2099-01-01T00:00:00Z");
    m.write("timestamp.json", &serde_json::to_vec(&v).unwrap());
    assert_refused(s.path(), &m, "signature threshold not met for role timestamp", &a);
    m.write("timestamp.json", &ts);
    update_ok(s.path(), &m);
    assert_eq!(std::fs::read(pinned(s.path())).unwrap(), b);
}

#[test]
fn trust_update_root_refuses_a_mirror_that_rolls_back_to_older_metadata() {
    let (a, b) = (sample_root(1), sample_root(2));
    let m = Mirror::new(&a);
    let old_timestamp = m.read("timestamp.json");
    m.publish(&b, &[]);
    let s = sysroot_pinning(&m);
    update_ok(s.path(), &m);
    assert_eq!(std::fs::read(pinned(s.path())).unwrap(), b);
    // A mirror (or an attacker in between) serving the first release again:
    // validly signed, unexpired, but older than what this host trusted.
    m.write("timestamp.json", &old_timestamp);
    assert_refused(s.path(), &m, "rollback detected for timestamp", &b);
}
