//! Trust end to end: images signed by real signers (cosign 2.5 with keys it
//! generated or imported; openssl signing a cosign payload that cosign then
//! attaches) in a real registry, verified by `hostctl image pull` and
//! `hostctl switch` under containers-policy.json policies. Every refusal must
//! exit 4, name the rule, and leave nothing in the store or staged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

use crate::support::images::push_one_layer;
use crate::support::registry::Registry;
use crate::support::x509::self_signed_ca;
use crate::support::{hostctl_bin, require_tool, run};

pub(crate) const KERNEL: &str = "usr/lib/modules/6.1.0-test/vmlinuz";
pub(crate) const PASSWORD: &str = "test-password";

/// A test's registry, working directory and sysroot.
pub(crate) struct Env {
    pub(crate) reg: Registry,
    pub(crate) work: tempfile::TempDir,
    pub(crate) sysroot: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Env {
        require_tool("cosign");
        require_tool("skopeo");
        Env { reg: Registry::start(), work: tempfile::tempdir().unwrap(), sysroot: tempfile::tempdir().unwrap() }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Builds a one-layer OCI image holding `files` (plus a kernel), pushes it to
    /// `repo_tag` and returns its manifest digest as the registry stores it.
    pub(crate) fn push(&self, repo_tag: &str, files: &[(&str, &str)]) -> String {
        let layout = self.path(&format!("layout-{}", repo_tag.replace([':', '/'], "-")));
        let mut all: Vec<(&str, &str, u32)> = vec![(KERNEL, "kernel", 0o644), ("etc/os-release", "ID=test\n", 0o644)];
        all.extend(files.iter().map(|(p, c)| (*p, *c, 0o644)));
        push_one_layer(&layout, &self.reg.image(repo_tag), repo_tag, &all);
        self.remote_digest(repo_tag)
    }

    /// The digest of the manifest at `repo_ref` in the registry.
    pub(crate) fn remote_digest(&self, repo_ref: &str) -> String {
        let raw = self.raw_manifest(repo_ref).expect("manifest exists");
        format!("sha256:{}", hex::encode(Sha256::digest(&raw)))
    }

    pub(crate) fn raw_manifest(&self, repo_ref: &str) -> Option<Vec<u8>> {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", self.reg.image(repo_ref)))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// Copies the manifest at `from` (a tag) to tag `to` byte for byte.
    pub(crate) fn copy_manifest(&self, repo: &str, from: &str, to: &str) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests"])
            .arg(format!("docker://{}", self.reg.image(&format!("{repo}:{from}"))))
            .arg(format!("docker://{}", self.reg.image(&format!("{repo}:{to}")))));
    }

    /// `cosign generate-key-pair` into the work dir with `prefix`; returns the public key path.
    pub(crate) fn cosign_keys(&self, prefix: &str) -> PathBuf {
        run(cosign(self.work.path()).args(["generate-key-pair", "--output-key-prefix", prefix]));
        self.path(&format!("{prefix}.pub"))
    }

    /// `cosign sign --key` of `repo@digest`, without a transparency log.
    pub(crate) fn cosign_sign(&self, key_prefix: &str, repo: &str, digest: &str) {
        run(cosign(self.work.path())
            .args(["sign", "-y", "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry"])
            .arg("--key")
            .arg(self.path(&format!("{key_prefix}.key")))
            .arg(self.reg.image(&format!("{repo}@{digest}"))));
    }

    /// Writes a policy with `scope_reqs` for the docker scope `repo` (rest rejected).
    pub(crate) fn policy(&self, name: &str, repo: &str, scope_reqs: serde_json::Value) -> PathBuf {
        let policy = serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {self.reg.image(repo): scope_reqs}}
        });
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
        p
    }

    pub(crate) fn hostctl(&self, policy: &Path, args: &[&str]) -> Output {
        Command::new(hostctl_bin())
            .arg("--sysroot")
            .arg(self.sysroot.path())
            .arg("--tls-verify=false")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("HOSTCTL_BOOTED")
            .output()
            .unwrap()
    }

    /// `image pull --json` that must succeed; returns the summary.
    pub(crate) fn pull_ok(&self, policy: &Path, repo_ref: &str) -> serde_json::Value {
        let out = self.hostctl(policy, &["image", "pull", "--json", &self.reg.image(repo_ref)]);
        assert!(out.status.success(), "pull {repo_ref} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A pull and a switch that must both be refused by `rule` (exit 4) with
    /// `reason` in the message, leaving the store and the deployments empty.
    pub(crate) fn assert_refused(&self, policy: &Path, repo_ref: &str, rule: &str, reason: &str) {
        let image = self.reg.image(repo_ref);
        for args in [vec!["image", "pull", image.as_str()], vec!["switch", image.as_str()]] {
            let out = self.hostctl(policy, &args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{args:?} should be refused (exit 4): {err}");
            assert!(err.contains(rule), "{args:?}: the error should name the rule {rule:?}: {err}");
            assert!(err.contains(reason), "{args:?}: the error should say {reason:?}: {err}");
        }
        let list = self.hostctl(policy, &["image", "list", "--json"]);
        let listed = String::from_utf8_lossy(&list.stdout);
        assert!(!listed.contains(repo_ref.split(['@', ':']).next().unwrap()), "refused image was stored: {listed}");
        let deployed = self.sysroot.path().join("hostctl/deploy/default");
        let entries: Vec<_> = std::fs::read_dir(&deployed)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| n != "var").collect())
            .unwrap_or_default();
        assert!(entries.is_empty(), "something was staged: {entries:?}");
    }
}

pub(crate) fn cosign(dir: &Path) -> Command {
    let mut c = Command::new("cosign");
    c.current_dir(dir).env("COSIGN_PASSWORD", PASSWORD).env("HOME", dir).env_remove("COSIGN_EXPERIMENTAL");
    c
}

pub(crate) fn key_policy(public_key: &Path, identity: &str) -> serde_json::Value {
    serde_json::json!([{"type": "sigstoreSigned", "keyPath": public_key, "signedIdentity": {"type": identity}}])
}

#[test]
fn signed_and_trusted_deploys() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    env.cosign_sign("release", "os", &digest);
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));

    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["image"]["imageDigest"], digest.as_str());
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    assert_eq!(v["verdict"]["rule"], format!("docker scope \"{}\": sigstoreSigned", env.reg.image("os")));
    let signer = v["verdict"]["signers"][0].as_str().unwrap();
    assert!(signer.starts_with("key SHA256:") && signer.contains(pubkey.to_str().unwrap()), "{signer}");

    let out = env.hostctl(&policy, &["switch", &env.reg.image("os:v1")]);
    assert!(out.status.success(), "switch: {}", String::from_utf8_lossy(&out.stderr));
    let out = env.hostctl(&policy, &["status", "--json"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("\"signatureVerified\": true") || status.contains("\"signatureVerified\":true"),
        "{status}"
    );
    assert!(status.contains(signer), "status should show the signer {signer}: {status}");

    // Pulled by digest, cosign's tagless identity also satisfies the default rule.
    let strict = env.policy("strict.json", "os", key_policy(&pubkey, "matchRepoDigestOrExact"));
    env.pull_ok(&strict, &format!("os@{digest}"));
}

#[test]
fn tagless_cosign_identity_under_match_repo_digest_or_exact_is_refused_by_tag() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[]);
    env.cosign_sign("release", "os", &digest);
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepoDigestOrExact"));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "is not exactly");
}

#[test]
fn unsigned_under_sigstore_signed_is_refused() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    env.push("os:v1", &[]);
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    let rule = format!("docker scope \"{}\": sigstoreSigned", env.reg.image("os"));
    env.assert_refused(&policy, "os:v1", &rule, "the image is not signed");
}

#[test]
fn signed_by_another_key_is_refused() {
    let env = Env::new();
    let trusted = env.cosign_keys("release");
    env.cosign_keys("attacker");
    let digest = env.push("os:v1", &[]);
    env.cosign_sign("attacker", "os", &digest);
    let policy = env.policy("policy.json", "os", key_policy(&trusted, "matchRepository"));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "not signed by any trusted key");
}

#[test]
fn signature_for_a_different_digest_replayed_onto_this_tag_is_refused() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let old = env.push("os:v1", &[("etc/motd", "old, vulnerable\n")]);
    env.cosign_sign("release", "os", &old);
    let new = env.push("os:v2", &[("etc/motd", "unsigned\n")]);
    let sig_tag = |d: &str| d.replacen(':', "-", 1) + ".sig";
    env.copy_manifest("os", &sig_tag(&old), &sig_tag(&new));
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    // The signature is genuine for the image it was made for...
    env.pull_ok(&policy, "os:v1");
    // ...and worthless for the one it was copied onto (checked in a fresh sysroot).
    let env = Env { sysroot: tempfile::tempdir().unwrap(), ..env };
    env.assert_refused(&policy, "os:v2", "sigstoreSigned", &format!("signed for manifest {old}, not {new}"));
}

#[test]
fn manifest_changed_after_signing_is_refused() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let signed = env.push("os:v1", &[("etc/motd", "as signed\n")]);
    env.cosign_sign("release", "os", &signed);
    // The tag is moved to a changed manifest (one more file) after signing.
    let changed = env.push("os:v1", &[("etc/motd", "as signed\n"), ("usr/bin/backdoor", "x")]);
    assert_ne!(signed, changed);
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "the image is not signed");
}

#[test]
fn reject_scope_is_refused() {
    let env = Env::new();
    env.push("os:v1", &[]);
    let policy = env.policy("policy.json", "os", serde_json::json!([{"type": "reject"}]));
    let rule = format!("docker scope \"{}\": reject", env.reg.image("os"));
    env.assert_refused(&policy, "os:v1", &rule, "rejects every image");
    // An unsupported requirement type refuses too, naming itself.
    let gpg = env.policy(
        "gpg.json",
        "os",
        serde_json::json!([{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent"}]),
    );
    env.assert_refused(&gpg, "os:v1", "signedBy", "does not support signedBy");
}

#[test]
fn malformed_signature_payload_is_a_clear_error() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[]);
    // A payload that is not a simple-signing document, correctly signed by the
    // trusted key (cosign sign-blob) and attached by cosign.
    let bad = env.path("bad-payload.json");
    std::fs::write(&bad, format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{digest}"}}}}}}"#)).unwrap();
    let sig = run(cosign(env.work.path())
        .args(["sign-blob", "-y", "--tlog-upload=false", "--key"])
        .arg(env.path("release.key"))
        .arg(&bad))
    .stdout;
    let sig_file = env.path("bad.sig");
    std::fs::write(&sig_file, String::from_utf8(sig).unwrap().trim()).unwrap();
    run(cosign(env.work.path())
        .args(["attach", "signature", "--allow-http-registry", "--allow-insecure-registry", "--payload"])
        .arg(&bad)
        .arg("--signature")
        .arg(&sig_file)
        .arg(env.reg.image(&format!("os@{digest}"))));
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "malformed signature payload");
}

#[test]
fn malformed_policy_is_a_clear_error() {
    let env = Env::new();
    env.push("os:v1", &[]);
    for (name, text, want) in [
        ("syntax.json", "{\"default\": [", "not a valid containers-policy.json"),
        ("unknown.json", r#"{"default":[{"type":"acceptIfSigned"}]}"#, "unknown requirement type \"acceptIfSigned\""),
        ("typo.json", r#"{"default":[{"type":"sigstoreSigned","keyPth":"/k.pub"}]}"#, "unknown field `keyPth`"),
    ] {
        let p = env.path(name);
        std::fs::write(&p, text).unwrap();
        let out = env.hostctl(&p, &["image", "pull", &env.reg.image("os:v1")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} accepted");
        assert!(err.contains(p.to_str().unwrap()) && err.contains(want), "{name}: {err}");
    }
    let missing_key = env.policy("nokey.json", "os", key_policy(&env.path("absent.pub"), "matchRepository"));
    let out = env.hostctl(&missing_key, &["image", "pull", &env.reg.image("os:v1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.pub"));
}

#[test]
fn enforce_signature_policy_refuses_an_accept_anything_default() {
    let env = Env::new();
    env.push("os:v1", &[]);
    let p = env.path("open.json");
    std::fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let out = env.hostctl(&p, &["--enforce-signature-policy", "image", "pull", &env.reg.image("os:v1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is insecureAcceptAnything"));
    let v = env.pull_ok(&p, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], false);
    assert_eq!(v["verdict"]["rule"], "default: insecureAcceptAnything");
}

/// Another producer: an openssl Ed25519 key imported into cosign signs with
/// `cosign sign`, and openssl itself signs (ECDSA P-384, SHA-384) a
/// `cosign generate` payload that `cosign attach signature` uploads. (Debian's skopeo 1.9 and
/// podman 4.3 refuse `--sign-by-sigstore-private-key`: "Debian-local change:
/// sigstore disabled".)
#[test]
fn other_key_types_and_producers_verify() {
    require_tool("openssl");
    let env = Env::new();
    let digest = env.push("os:v1", &[]);
    // Ed25519 through cosign import-key-pair (cosign 2.5 here refuses to
    // import the RSA and EC keys openssl writes, but takes Ed25519).
    let ed = env.path("ed.pem");
    run(Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&ed));
    run(cosign(env.work.path()).args(["import-key-pair", "-y", "--output-key-prefix", "imported", "--key"]).arg(&ed));
    env.cosign_sign("imported", "os", &digest);
    let policy = env.policy("ed25519.json", "os", key_policy(&env.path("imported.pub"), "matchRepository"));
    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true);

    // ECDSA P-384 signed by openssl over cosign's own payload for this image.
    let d2 = env.push("other:v1", &[("etc/motd", "p384\n")]);
    let p384 = env.path("p384.pem");
    run(Command::new("openssl").args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"]).arg(&p384));
    let p384_pub = env.path("p384.pub");
    run(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&p384).arg("-out").arg(&p384_pub));
    let payload = run(cosign(env.work.path())
        .args(["generate", "--allow-http-registry", "--allow-insecure-registry"])
        .arg(env.reg.image(&format!("other@{d2}"))))
    .stdout;
    let payload_file = env.path("payload.json");
    std::fs::write(&payload_file, &payload).unwrap();
    let raw_sig = env.path("payload.sig.raw");
    run(Command::new("openssl")
        .args(["dgst", "-sha384", "-sign"])
        .arg(&p384)
        .arg("-out")
        .arg(&raw_sig)
        .arg(&payload_file));
    use base64::Engine;
    let sig_b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&raw_sig).unwrap());
    let sig_file = env.path("payload.sig");
    std::fs::write(&sig_file, sig_b64).unwrap();
    run(cosign(env.work.path())
        .args(["attach", "signature", "--allow-http-registry", "--allow-insecure-registry", "--payload"])
        .arg(&payload_file)
        .arg("--signature")
        .arg(&sig_file)
        .arg(env.reg.image(&format!("other@{d2}"))));
    let policy = env.policy("p384.json", "other", key_policy(&p384_pub, "matchRepository"));
    let v = env.pull_ok(&policy, "other:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    // The Ed25519 key does not vouch for it.
    let wrong = env.policy("wrong.json", "other", key_policy(&env.path("imported.pub"), "matchRepository"));
    let fresh = Env { sysroot: tempfile::tempdir().unwrap(), ..env };
    fresh.assert_refused(&wrong, "other:v1", "sigstoreSigned", "not signed by any trusted key");
}

/// Keyless, offline: a local CA stands in for Fulcio (openssl issues a
/// code-signing certificate with an email SAN and the OIDC issuer extension),
/// openssl signs cosign's payload with the certificate's key, and a local
/// Rekor key signs the SignedEntryTimestamp. `cosign attach signature` uploads
/// the signature with its certificate and chain; cosign 2.5 does not turn
/// `--rekor-response` into a bundle annotation here, so that first upload has
/// no bundle and must be refused; the test then pushes the same signature
/// with the bundle annotation itself (skopeo, from an OCI layout).
#[test]
fn keyless_signature_with_local_fulcio_and_rekor_verifies_offline() {
    require_tool("openssl");
    let env = Env::new();
    let digest = env.push("os:v1", &[]);
    let dir = env.work.path();
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    self_signed_ca(dir, "ca", "secp384r1", "/O=test/CN=local fulcio", &[]);
    ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.key"]);
    ossl(&["req", "-new", "-key", "leaf.key", "-subj", "/", "-out", "leaf.csr"]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=critical,email:release@example.com\nextendedKeyUsage=codeSigning\n\
         keyUsage=critical,digitalSignature\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:https://issuer.example.com\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "rekor.key"]);
    ossl(&["ec", "-in", "rekor.key", "-pubout", "-out", "rekor.pub"]);
    ossl(&["ec", "-pubin", "-in", "rekor.pub", "-outform", "DER", "-out", "rekor.der"]);
    let payload = run(cosign(dir)
        .args(["generate", "--allow-http-registry", "--allow-insecure-registry"])
        .arg(env.reg.image(&format!("os@{digest}"))))
    .stdout;
    std::fs::write(dir.join("payload.json"), &payload).unwrap();
    ossl(&["dgst", "-sha256", "-sign", "leaf.key", "-out", "payload.sig.raw", "payload.json"]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64.encode(std::fs::read(dir.join("payload.sig.raw")).unwrap());
    std::fs::write(dir.join("payload.sig"), &sig).unwrap();
    run(cosign(dir)
        .args(["attach", "signature", "--allow-http-registry", "--allow-insecure-registry"])
        .args(["--payload", "payload.json", "--signature", "payload.sig"])
        .args(["--certificate", "leaf.pem", "--certificate-chain", "ca.pem"])
        .arg(env.reg.image(&format!("os@{digest}"))));
    let policy = env.policy(
        "keyless.json",
        "os",
        serde_json::json!([{"type": "sigstoreSigned",
            "fulcio": {"caPath": dir.join("ca.pem"), "oidcIssuer": "https://issuer.example.com",
                       "subjectEmail": "release@example.com"},
            "rekorPublicKeyPath": dir.join("rekor.pub"),
            "signedIdentity": {"type": "matchRepository"}}]),
    );
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "no Rekor bundle");

    // The Rekor bundle: a hashedrekord entry for this payload, signature and
    // certificate, its SET made by the local Rekor key over the canonical JSON.
    let cert = std::fs::read_to_string(dir.join("leaf.pem")).unwrap();
    let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))}},
        "signature": {"content": sig, "publicKey": {"content": b64.encode(&cert)}}}});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let set_payload = serde_json::json!({
        "body": b64.encode(serde_json::to_vec(&body).unwrap()),
        "integratedTime": now,
        "logID": hex::encode(Sha256::digest(std::fs::read(dir.join("rekor.der")).unwrap())),
        "logIndex": 7,
    });
    // serde_json's map is sorted and compact: this is the canonical form for these fields.
    std::fs::write(dir.join("set.json"), serde_json::to_vec(&set_payload).unwrap()).unwrap();
    ossl(&["dgst", "-sha256", "-sign", "rekor.key", "-out", "set.raw", "set.json"]);
    let bundle = serde_json::json!({"SignedEntryTimestamp": b64.encode(std::fs::read(dir.join("set.raw")).unwrap()),
                                    "Payload": set_payload});
    let chain = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let layout = dir.join("sig-layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (pd, ps) = put(&payload);
    let (cd, cs) = put(b"{}");
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": ps,
            "annotations": {"dev.cosignproject.cosign/signature": sig, "dev.sigstore.cosign/certificate": cert,
                            "dev.sigstore.cosign/chain": chain, "dev.sigstore.cosign/bundle": bundle.to_string()}}]});
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "sig"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let sig_tag = digest.replacen(':', "-", 1) + ".sig";
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:sig", layout.display()))
        .arg(format!("docker://{}", env.reg.image(&format!("os:{sig_tag}")))));

    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    let signer = v["verdict"]["signers"][0].as_str().unwrap();
    assert!(signer.starts_with("release@example.com (OIDC issuer https://issuer.example.com"), "{signer}");

    // The same signature under a policy expecting another signer is refused.
    let other = env.policy(
        "other.json",
        "os",
        serde_json::json!([{"type": "sigstoreSigned",
            "fulcio": {"caPath": dir.join("ca.pem"), "oidcIssuer": "https://issuer.example.com",
                       "subjectEmail": "intruder@example.com"},
            "rekorPublicKeyPath": dir.join("rekor.pub")}]),
    );
    let env = Env { sysroot: tempfile::tempdir().unwrap(), ..env };
    env.assert_refused(&other, "os:v1", "sigstoreSigned", "is not intruder@example.com");
}

/// cosign's OCI 1.1 mode (`--registry-referrers-mode=oci-1-1`): the signature
/// is a referrer of the image, not a `.sig` tag. Distribution 2.8 has no
/// referrers API, so cosign maintains the spec's fallback index at the tag
/// `sha256-<hex>`; hostctl asks the referrers API first, then that tag.
#[test]
fn signature_found_through_referrers() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[]);
    run(cosign(env.work.path())
        .env("COSIGN_EXPERIMENTAL", "1")
        .args(["sign", "-y", "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry"])
        .args(["--registry-referrers-mode=oci-1-1", "--key"])
        .arg(env.path("release.key"))
        .arg(env.reg.image(&format!("os@{digest}"))));
    let sig_tag = digest.replacen(':', "-", 1) + ".sig";
    assert!(env.raw_manifest(&format!("os:{sig_tag}")).is_none(), "cosign wrote a .sig tag in referrers mode");
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    // Another key's policy still refuses it.
    let other = env.cosign_keys("other");
    let wrong = env.policy("wrong.json", "os", key_policy(&other, "matchRepository"));
    let env = Env { sysroot: tempfile::tempdir().unwrap(), ..env };
    env.assert_refused(&wrong, "os:v1", "sigstoreSigned", "not signed by any trusted key");
}

/// The same policy governs `oci:` layouts (air-gapped updates): the image and
/// its cosign signature are carried from the registry into a layout by skopeo,
/// the signature under its `sha256-<hex>.sig` tag, and the layout's `oci`
/// scope decides. A layout has no registry name, so the identity is pinned
/// with `exactRepository`.
#[test]
fn oci_layouts_obey_the_same_policy() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[]);
    env.cosign_sign("release", "os", &digest);
    let usb = env.path("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let layout = usb.join("os");
    let sig_tag = digest.replacen(':', "-", 1) + ".sig";
    for tag in ["v1", sig_tag.as_str()] {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false", "--preserve-digests"])
            .arg(format!("docker://{}", env.reg.image(&format!("os:{tag}"))))
            .arg(format!("oci:{}:{tag}", layout.display())));
    }
    let image = format!("oci:{}:v1", layout.display());
    let write = |name: &str, scope_reqs: serde_json::Value| {
        let p = env.path(name);
        let policy = serde_json::json!({"default": [{"type": "reject"}],
                                        "transports": {"oci": {usb.to_str().unwrap(): scope_reqs}}});
        std::fs::write(&p, serde_json::to_vec(&policy).unwrap()).unwrap();
        p
    };
    let signed = write(
        "oci.json",
        serde_json::json!([{"type": "sigstoreSigned", "keyPath": pubkey,
            "signedIdentity": {"type": "exactRepository", "dockerRepository": env.reg.image("os")}}]),
    );
    let out = env.hostctl(&signed, &["image", "pull", "--json", &image]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    assert_eq!(v["verdict"]["rule"], format!("oci scope \"{}\": sigstoreSigned", usb.display()));

    // Another repository's identity, and a rejecting scope, both refuse.
    let other_identity = write(
        "oci-other.json",
        serde_json::json!([{"type": "sigstoreSigned", "keyPath": pubkey,
            "signedIdentity": {"type": "exactRepository", "dockerRepository": "example.com/other"}}]),
    );
    let rejecting = write("oci-reject.json", serde_json::json!([{"type": "reject"}]));
    for (policy, want) in [(&other_identity, "is not in repository example.com/other"), (&rejecting, ": reject")] {
        let fresh = tempfile::tempdir().unwrap();
        let out = Command::new(hostctl_bin())
            .arg("--sysroot")
            .arg(fresh.path())
            .arg("--policy")
            .arg(policy)
            .args(["image", "pull", &image])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains(want) && err.contains("oci scope"), "{err}");
    }
}

/// `upgrade` enforces the policy too: after a signed image is deployed, its
/// tag is moved to an unsigned image; the upgrade is refused, names the rule,
/// and stages nothing, and the deployment (with its verdict) stays as it was.
#[test]
fn upgrade_to_an_unsigned_image_is_refused_and_stages_nothing() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let v1 = env.push("os:stable", &[("etc/motd", "v1\n")]);
    env.cosign_sign("release", "os", &v1);
    let policy = env.policy("policy.json", "os", key_policy(&pubkey, "matchRepository"));
    let out = env.hostctl(&policy, &["switch", &env.reg.image("os:stable")]);
    assert!(out.status.success(), "switch: {}", String::from_utf8_lossy(&out.stderr));
    let before = env.hostctl(&policy, &["status", "--json"]).stdout;
    let deployments = || {
        let mut v: Vec<_> = std::fs::read_dir(env.sysroot.path().join("hostctl/deploy/default"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let listed = deployments();

    let v2 = env.push("os:stable", &[("etc/motd", "v2, unsigned\n")]);
    assert_ne!(v1, v2);
    let out = env.hostctl(&policy, &["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("docker scope \"{}\": sigstoreSigned", env.reg.image("os"))), "{err}");
    assert!(err.contains("the image is not signed"), "{err}");
    assert_eq!(deployments(), listed, "a refused upgrade left something behind");
    assert_eq!(env.hostctl(&policy, &["status", "--json"]).stdout, before, "status changed");

    // Signing v2 lets the same upgrade through.
    env.cosign_sign("release", "os", &v2);
    let out = env.hostctl(&policy, &["upgrade"]);
    assert!(out.status.success(), "upgrade: {}", String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&env.hostctl(&policy, &["status", "--json"]).stdout).to_string();
    assert!(status.contains(&v2), "{status}");
}

/// The attack of issue #10: a policy whose scope says `reject` and, with a
/// second `type` key in the same requirement, `insecureAcceptAnything`. Read
/// last-key-wins, as it once was, the image was accepted unsigned. Now the
/// policy is refused as containers/image refuses it (exit 1, naming the file,
/// the key and the scope) and nothing is pulled; the same policy with only the
/// smuggled key does pull, so the refusal is the duplicate key's doing.
#[test]
fn duplicate_type_key_smuggling_accept_anything_past_reject_pulls_nothing() {
    let env = Env::new();
    env.push("os:v1", &[]);
    let scope = env.reg.image("os");
    let write = |name: &str, requirement: &str| {
        let p = env.path(name);
        let text = format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"{scope}": [{requirement}]}}}}}}"#
        );
        std::fs::write(&p, text).unwrap();
        p
    };
    let smuggled = write("smuggled.json", r#"{"type": "reject", "type": "insecureAcceptAnything"}"#);
    let out = env.hostctl(&smuggled, &["image", "pull", &env.reg.image("os:v1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a malformed policy is exit 1 (docs/trust.md): {err}");
    assert!(err.contains(smuggled.to_str().unwrap()), "the error names the file: {err}");
    assert!(
        err.contains(&format!(r#"duplicate key "type" in transport "docker" scope "{scope}", requirement 1"#)),
        "the error names the key and where it is: {err}"
    );
    let list = env.hostctl(&smuggled, &["image", "list", "--json"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing may be pulled: {listed}");

    // The key that used to win, alone: the image is pulled.
    let accepting = write("accepting.json", r#"{"type": "insecureAcceptAnything"}"#);
    let v = env.pull_ok(&accepting, "os:v1");
    assert_eq!(v["verdict"]["rule"], format!("docker scope \"{scope}\": insecureAcceptAnything"), "{v}");
}
