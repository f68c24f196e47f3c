//! Sigstore bundles end to end: real cosign 2.5 writes bundles
//! (`cosign attest --new-bundle-format` with cosign's image-signing predicate,
//! which is what cosign's bundle-format `sign` writes) and attaches them as OCI
//! 1.1 referrers to images in a real registry (Distribution has no referrers
//! API: cosign keeps the referrers tag schema's index), and hostctl finds them
//! there. cosign uploads each signature to a transparency log on loopback
//! (`support::rekor`, Rekor's upload API over a real RFC 6962 tree, with its
//! own key), so its bundles carry a genuine inclusion proof, signed
//! checkpoint and signed entry timestamp; the test pins that log's key (and
//! for keyless signing, a Fulcio-like CA made with openssl) in a
//! `trusted_root.json`. Accepted images switch and `status` names the rule
//! and signer; every refusal is exit 4, names the rule, stores and stages
//! nothing.
//!
//! Timestamped bundles: cosign fetches an RFC 3161 timestamp over its
//! signature from a timestamp authority on loopback (`support::tsa`, real
//! `openssl ts -reply` with its own certificate chain) and uploads to no log;
//! the trusted root lists that authority, its chain and validity window.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::json;

use crate::support::rekor::{Fault, Rekor};
use crate::support::tsa::Tsa;
use crate::support::x509::{openssl, self_signed_ca};
use crate::support::{require_tool, run};
use crate::trust::{cosign, Env};

/// cosign's predicate type for image signatures in the bundle format.
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The workflow identity the keyless tests' certificates carry (a URI SAN).
const WORKFLOW: &str = "https://github.com/example/os/.github/workflows/release.yml@refs/heads/main";
/// The OIDC issuer their Fulcio issuer extension names.
const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `cosign attest --new-bundle-format` of `repo@digest` with `extra` signing flags.
fn attest(env: &Env, repo: &str, digest: &str, extra: &[&str]) {
    let pred = env.path("predicate.json");
    std::fs::write(&pred, "{}").unwrap();
    run(cosign(env.work.path())
        .args(["attest", "-y", "--new-bundle-format", "--type", SIGN_PREDICATE])
        .arg("--predicate")
        .arg(&pred)
        .args(["--allow-http-registry", "--allow-insecure-registry"])
        .args(extra)
        .arg(env.reg.image(&format!("{repo}@{digest}"))));
}

/// [`attest`] with a key, uploading to `log`.
fn attest_logged(env: &Env, log: &Rekor, repo: &str, digest: &str, key: &Path, extra: &[&str]) {
    let mut args = vec!["--rekor-url", log.url.as_str(), "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    attest(env, repo, digest, &args);
}

/// The referrers tag schema's index for `digest` (`sha256-<hex>`), raw.
fn referrers_index(env: &Env, repo: &str, digest: &str) -> Vec<u8> {
    env.raw_manifest(&format!("{repo}:{}", digest.replacen(':', "-", 1))).expect("cosign wrote the referrers tag")
}

/// A `trusted_root.json` naming `log` and, for keyless signing, the CA `ca_pem`.
fn trusted_root(env: &Env, log: &Rekor, ca_pem: Option<&Path>) -> PathBuf {
    trusted_root_file(env, "trusted_root.json", &[log], ca_pem, Vec::new())
}

/// A `trusted_root.json` in the work dir as `name`, listing `logs`, the CA
/// `ca_pem` (for keyless signing) and the timestamp authorities `tsas`.
fn trusted_root_file(
    env: &Env,
    name: &str,
    logs: &[&Rekor],
    ca_pem: Option<&Path>,
    tsas: Vec<serde_json::Value>,
) -> PathBuf {
    let cas: Vec<serde_json::Value> = ca_pem
        .map(|p| {
            let der = pem::parse(std::fs::read(p).unwrap()).unwrap().into_contents();
            json!({"subject": {"organization": "hostctl test", "commonName": "local fulcio"},
                   "uri": "https://fulcio.hostctl.test",
                   "certChain": {"certificates": [{"rawBytes": b64(&der)}]},
                   "validFor": {"start": "2020-01-01T00:00:00Z"}})
        })
        .into_iter()
        .collect();
    let tlogs: Vec<serde_json::Value> = logs.iter().map(|l| l.trusted_root_tlog()).collect();
    let root = json!({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs, "certificateAuthorities": cas, "ctlogs": [], "timestampAuthorities": tsas});
    let p = env.path(name);
    std::fs::write(&p, serde_json::to_vec_pretty(&root).unwrap()).unwrap();
    p
}

fn keyed_policy(env: &Env, pubkey: &Path, root: &Path) -> PathBuf {
    env.policy(
        "policy.json",
        "os",
        json!([{"type": "sigstoreSigned", "keyPath": pubkey, "trustedRootPath": root,
                "signedIdentity": {"type": "matchRepository"}}]),
    )
}

/// The same registry and work directory with an empty sysroot.
fn fresh(env: Env) -> Env {
    Env { sysroot: tempfile::tempdir().unwrap(), ..env }
}

/// Switches to `repo_ref` under `policy`, then `status` must name the rule and `signer`.
fn switch_and_status_names(env: &Env, policy: &Path, repo_ref: &str, signer: &str) {
    let out = env.hostctl(policy, &["switch", &env.reg.image(repo_ref)]);
    assert!(out.status.success(), "switch: {}", String::from_utf8_lossy(&out.stderr));
    let out = env.hostctl(policy, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sigstoreSigned") && text.contains(signer), "status should name rule and signer: {text}");
    let out = env.hostctl(policy, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v.to_string();
    assert!(s.contains("sigstoreSigned") && s.contains(signer), "status --json should name rule and signer: {s}");
}

#[test]
fn keyed_bundle_referrer_without_log_entry_is_found_and_refused_by_the_rule() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    attest(&env, "os", &digest, &["--tlog-upload=false", "--key", env.path("release.key").to_str().unwrap()]);
    let policy = env.policy(
        "policy.json",
        "os",
        json!([{"type": "sigstoreSigned", "keyPath": pubkey, "signedIdentity": {"type": "matchRepository"}}]),
    );
    // Found as a referrer (the message names it), checked, refused.
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "must have at least one tlog entry or timestamp");
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "referrer sha256:");
}

/// Signed with a key, logged: accepted, switched to, named by `status`; then
/// the bundle deleted from the registry, refused.
#[test]
fn keyed_bundle_with_a_log_entry_is_accepted_and_refused_once_deleted() {
    let env = Env::new();
    let log = Rekor::start();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    attest_logged(&env, &log, "os", &digest, &env.path("release.key"), &[]);
    assert_eq!(log.size(), 1, "cosign logged the signature");
    let root = trusted_root(&env, &log, None);
    let policy = keyed_policy(&env, &pubkey, &root);

    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    assert_eq!(v["verdict"]["rule"], format!("docker scope \"{}\": sigstoreSigned", env.reg.image("os")));
    let signer = v["verdict"]["signers"][0].as_str().unwrap().to_string();
    assert!(signer.starts_with("key SHA256:"), "{signer}");
    assert!(signer.contains("transparency log verified") && signer.contains("(sigstore bundle)"), "{signer}");
    switch_and_status_names(&env, &policy, "os:v1", "(sigstore bundle)");

    // Another key's policy refuses the same bundle.
    let other = env.cosign_keys("other");
    let wrong = env.policy(
        "wrong.json",
        "os",
        json!([{"type": "sigstoreSigned", "keyPath": other, "trustedRootPath": root,
                "signedIdentity": {"type": "matchRepository"}}]),
    );
    let env = fresh(env);
    env.assert_refused(&wrong, "os:v1", "sigstoreSigned", "referrer sha256:");

    let index: serde_json::Value = serde_json::from_slice(&referrers_index(&env, "os", &digest)).unwrap();
    let bundle_manifest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    run(Command::new("skopeo")
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}", env.reg.image(&format!("os@{bundle_manifest}")))));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "the image is not signed");
}

/// PUTs `body` as a manifest of `media_type` at `reference` (tag or digest).
fn put_manifest(env: &Env, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let file = env.path("put-manifest.json");
    std::fs::write(&file, body).unwrap();
    run(Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {media_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/v2/{repo}/manifests/{reference}", env.reg.addr)));
}

/// v2's logged bundle, re-pointed at v1 (its manifest's `subject` rewritten,
/// listed in v1's referrers index): the signature, log entry and proof are
/// genuine, but for another digest. Refused.
#[test]
fn bundle_for_another_digest_replayed_onto_the_image_is_refused() {
    let env = Env::new();
    let log = Rekor::start();
    let pubkey = env.cosign_keys("release");
    let v1 = env.push("os:v1", &[("etc/motd", "v1\n")]);
    let v2 = env.push("os:v2", &[("etc/motd", "v2\n")]);
    attest_logged(&env, &log, "os", &v2, &env.path("release.key"), &[]);
    let root = trusted_root(&env, &log, None);
    let policy = keyed_policy(&env, &pubkey, &root);
    env.pull_ok(&policy, "os:v2");
    let env = fresh(env);

    let mut index: serde_json::Value = serde_json::from_slice(&referrers_index(&env, "os", &v2)).unwrap();
    let desc = index["manifests"][0].clone();
    let raw = env.raw_manifest(&format!("os@{}", desc["digest"].as_str().unwrap())).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let v1_raw = env.raw_manifest("os:v1").unwrap();
    manifest["subject"] = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": v1,
                                 "size": v1_raw.len()});
    let replayed = serde_json::to_vec(&manifest).unwrap();
    let replayed_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&replayed)));
    put_manifest(&env, "os", &replayed_digest, "application/vnd.oci.image.manifest.v1+json", &replayed);
    index["manifests"][0]["digest"] = json!(replayed_digest);
    index["manifests"][0]["size"] = json!(replayed.len());
    put_manifest(
        &env,
        "os",
        &v1.replacen(':', "-", 1),
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", &format!("referrer {replayed_digest}"));
}

/// The log answers cosign with an inclusion proof that does not lead from the
/// entry to its signed tree head (its checkpoint and entry timestamp are
/// genuine). Refused.
#[test]
fn bundle_whose_inclusion_proof_does_not_match_is_refused() {
    let env = Env::new();
    let log = Rekor::start();
    let pubkey = env.cosign_keys("release");
    // Two entries first, so that the third's proof has hashes to change.
    let other = env.push("other:v1", &[]);
    attest_logged(&env, &log, "other", &other, &env.path("release.key"), &[]);
    let other2 = env.push("other:v2", &[("etc/motd", "2\n")]);
    attest_logged(&env, &log, "other", &other2, &env.path("release.key"), &[]);
    let digest = env.push("os:v1", &[]);
    log.set_fault(Fault::BadInclusionProof);
    attest_logged(&env, &log, "os", &digest, &env.path("release.key"), &[]);
    let root = trusted_root(&env, &log, None);
    let policy = keyed_policy(&env, &pubkey, &root);
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "inclusion proof");
}

/// openssl: a P-384 CA, and for Ed25519 keys imported into cosign,
/// Fulcio-style certificates for [`WORKFLOW`] from [`ISSUER`] (cosign 2.5
/// refuses to import the EC keys openssl writes, and takes Ed25519, a key type
/// Fulcio also certifies).
struct LocalFulcio {
    dir: PathBuf,
    /// When the CA became valid (openssl's date form), the earliest start a
    /// leaf can have: cosign checks the chain at the leaf's start.
    ca_start: String,
}

impl LocalFulcio {
    fn new(env: &Env) -> LocalFulcio {
        require_tool("openssl");
        let dir = env.path("fulcio");
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = local\n[local]\ndatabase = index.txt\nnew_certs_dir = newcerts\nserial = serial\n\
             default_md = sha384\npolicy = anything\nunique_subject = no\ncopy_extensions = none\n\
             [anything]\ncommonName = optional\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "subjectAltName = critical, URI:{WORKFLOW}\nextendedKeyUsage = codeSigning\n\
                 keyUsage = critical, digitalSignature\n1.3.6.1.4.1.57264.1.8 = ASN1:UTF8String:{ISSUER}\n"
            ),
        )
        .unwrap();
        self_signed_ca(&dir, "ca", "secp384r1", "/O=hostctl test/CN=local fulcio", &[]);
        LocalFulcio { dir, ca_start: openssl_date(0) }
    }

    fn openssl(&self, args: &[&str]) {
        openssl(&self.dir, args);
    }

    /// A new leaf key imported into cosign (`NAME.key`, in `env`'s work dir)
    /// and its certificate `NAME.pem` valid from `start` to `end`.
    fn issue(&self, env: &Env, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{name}.ed25519"));
        self.openssl(&["genpkey", "-algorithm", "ed25519", "-out", key.to_str().unwrap()]);
        let csr = self.dir.join(format!("{name}.csr"));
        self.openssl(&[
            "req",
            "-new",
            "-subj",
            "/O=hostctl test",
            "-key",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        let cert = self.dir.join(format!("{name}.pem"));
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key"])
            .args(["-extfile", "leaf.ext", "-startdate", start, "-enddate", end, "-in"])
            .arg(&csr)
            .arg("-out")
            .arg(&cert));
        run(cosign(env.work.path()).args(["import-key-pair", "-y", "--output-key-prefix", name, "--key"]).arg(&key));
        (env.path(&format!("{name}.key")), cert)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// openssl's date form, `secs` from now.
fn openssl_date(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let f = time::macros::format_description!("[year][month][day][hour][minute][second]Z");
    t.format(f).unwrap()
}

fn keyless_policy(env: &Env, root: &Path, subject: serde_json::Value) -> PathBuf {
    env.policy(
        "keyless.json",
        "os",
        json!([{"type": "sigstoreSigned", "fulcio": subject, "trustedRootPath": root,
                "signedIdentity": {"type": "matchRepository"}}]),
    )
}

/// Keyless: a certificate for a workflow identity from the local CA, the
/// signature logged. Accepted by the exact and the regexp identity, switched
/// to, named by `status`; another workflow's policy refuses it.
#[test]
fn keyless_bundle_for_a_workflow_identity_is_accepted_and_named_in_status() {
    let env = Env::new();
    let log = Rekor::start();
    let fulcio = LocalFulcio::new(&env);
    let start = fulcio.ca_start.clone();
    let (key, cert) = fulcio.issue(&env, "leaf", &start, &openssl_date(3600));
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    let ca = fulcio.ca();
    attest_logged(
        &env,
        &log,
        "os",
        &digest,
        &key,
        &["--certificate", cert.to_str().unwrap(), "--certificate-chain", ca.to_str().unwrap()],
    );
    let root = trusted_root(&env, &log, Some(&ca));
    let policy = keyless_policy(&env, &root, json!({"oidcIssuer": ISSUER, "subjectURI": WORKFLOW}));
    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    let signer = v["verdict"]["signers"][0].as_str().unwrap().to_string();
    assert!(signer.starts_with(&format!("certificate {WORKFLOW} (issuer {ISSUER})")), "{signer}");
    assert!(signer.contains("transparency log verified"), "{signer}");
    switch_and_status_names(&env, &policy, "os:v1", WORKFLOW);

    let by_regexp = keyless_policy(
        &env,
        &root,
        json!({"oidcIssuerRegexp": r"https://token\.actions\.githubusercontent\.com",
               "subjectRegexp": r"https://github\.com/example/os/\.github/workflows/[a-z]+\.yml@refs/heads/main"}),
    );
    let env = fresh(env);
    env.pull_ok(&by_regexp, "os:v1");
    let wrong = keyless_policy(
        &env,
        &root,
        json!({"oidcIssuer": ISSUER, "subjectURI": "https://github.com/example/os/.github/workflows/nightly.yml@refs/heads/main"}),
    );
    let env = fresh(env);
    env.assert_refused(&wrong, "os:v1", "sigstoreSigned", "identity");
}

/// Keyless with a certificate whose validity ended before the signature was
/// logged, and no timestamp authority's timestamp: refused. (cosign checks a
/// chain it is given at the leaf's start, before the CA's: it is given none.)
#[test]
fn keyless_bundle_with_a_certificate_outside_its_validity_window_is_refused() {
    let env = Env::new();
    let log = Rekor::start();
    let fulcio = LocalFulcio::new(&env);
    let (key, cert) = fulcio.issue(&env, "old", &openssl_date(-7200), &openssl_date(-3600));
    let digest = env.push("os:v1", &[]);
    attest_logged(&env, &log, "os", &digest, &key, &["--certificate", cert.to_str().unwrap()]);
    assert_eq!(log.size(), 1);
    let root = trusted_root(&env, &log, Some(&fulcio.ca()));
    let policy = keyless_policy(&env, &root, json!({"oidcIssuer": ISSUER, "subjectURI": WORKFLOW}));
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "certificate chain validation failed: CertExpired");
}

/// How long the timestamped keyless certificate lives, in seconds: enough for
/// an image push and cosign to sign, fetch a timestamp and attach the bundle
/// on a loaded CI machine (the VM scenario runs beside the tests); short
/// enough to wait out beside the other tests.
const SHORT_LIFE: i64 = 40;

/// [`attest`] with a key, a timestamp from `tsa` and no transparency log.
fn attest_timestamped(env: &Env, tsa: &Tsa, repo: &str, digest: &str, key: &Path, extra: &[&str]) {
    let mut args =
        vec!["--tlog-upload=false", "--timestamp-server-url", tsa.url.as_str(), "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    attest(env, repo, digest, &args);
}

/// `tsa`'s `timestampAuthorities` entry, trusted from 2020 on.
fn tsa_entry(tsa: &Tsa) -> serde_json::Value {
    tsa.trusted_root_entry(json!({"start": "2020-01-01T00:00:00Z"}))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// The earliest verified signing time a verdict's signer names (`signed at T`).
fn signed_at(signer: &str) -> time::OffsetDateTime {
    let t = signer.split("signed at ").nth(1).and_then(|r| r.split(',').next()).expect("a signing time");
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
}

fn curl_ok(cmd: &mut Command) -> Vec<u8> {
    run(cmd).stdout
}

/// The bundle manifest of `repo@digest` (its digest and parsed manifest) and the bundle it holds.
fn bundle_of(env: &Env, repo: &str, digest: &str) -> (String, serde_json::Value, serde_json::Value) {
    let index: serde_json::Value = serde_json::from_slice(&referrers_index(env, repo, digest)).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.raw_manifest(&format!("{repo}@{manifest_digest}")).unwrap()).unwrap();
    let blob = manifest["layers"][0]["digest"].as_str().unwrap();
    let bundle =
        curl_ok(Command::new("curl").arg("-sSf").arg(format!("http://{}/v2/{repo}/blobs/{blob}", env.reg.addr)));
    (manifest_digest, manifest, serde_json::from_slice(&bundle).unwrap())
}

/// Uploads `bytes` as a blob of `repo` (a monolithic upload: POST, then PUT
/// with the digest); returns its digest.
fn put_blob(env: &Env, repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)));
    let head = curl_ok(
        Command::new("curl")
            .args(["-sSf", "-o", "/dev/null", "-D", "-", "-X", "POST"])
            .arg(format!("http://{}/v2/{repo}/blobs/uploads/", env.reg.addr)),
    );
    let head = String::from_utf8(head).unwrap();
    let location = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim()))
        .expect("the registry names the upload's location")
        .to_string();
    let location = if location.starts_with('/') { format!("http://{}{location}", env.reg.addr) } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let file = env.path("put-blob");
    std::fs::write(&file, bytes).unwrap();
    curl_ok(
        Command::new("curl")
            .args(["-sSf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("{location}{sep}digest={digest}")),
    );
    digest
}

/// Rewrites the bundle attached to `repo@digest` with `edit`, as someone with
/// write access to the registry could: a new bundle blob, a new bundle
/// manifest, and the referrers index pointing at it.
fn replace_bundle(env: &Env, repo: &str, digest: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let (_, mut manifest, mut bundle) = bundle_of(env, repo, digest);
    edit(&mut bundle);
    let bytes = serde_json::to_vec(&bundle).unwrap();
    manifest["layers"][0]["digest"] = json!(put_blob(env, repo, &bytes));
    manifest["layers"][0]["size"] = json!(bytes.len());
    let m = serde_json::to_vec(&manifest).unwrap();
    let m_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&m)));
    put_manifest(env, repo, &m_digest, "application/vnd.oci.image.manifest.v1+json", &m);
    let mut index: serde_json::Value = serde_json::from_slice(&referrers_index(env, repo, digest)).unwrap();
    index["manifests"][0]["digest"] = json!(m_digest);
    index["manifests"][0]["size"] = json!(m.len());
    let tag = digest.replacen(':', "-", 1);
    put_manifest(env, repo, &tag, "application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&index).unwrap());
}

/// The bundle's RFC 3161 timestamps (base64 DER, as cosign stores them).
fn timestamps(bundle: &serde_json::Value) -> Vec<String> {
    bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
        .as_array()
        .map(|a| a.iter().map(|t| t["signedTimestamp"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn policy_named(env: &Env, name: &str, root: &Path) -> PathBuf {
    env.policy(
        name,
        "os",
        json!([{"type": "sigstoreSigned", "fulcio": {"oidcIssuer": ISSUER, "subjectURI": WORKFLOW},
                "trustedRootPath": root, "signedIdentity": {"type": "matchRepository"}}]),
    )
}

/// Keyless, no log entry, a timestamp from the local authority while the
/// certificate was valid; verified after the certificate expired, under a
/// root with the CA and the authority and no log: accepted, and `status`
/// names the rule and the workflow. The same bundle is refused under a root
/// without the authority, under one whose window for the authority ended
/// before the timestamp, and under one that also lists a log (then an entry
/// is required).
#[test]
fn keyless_bundle_timestamped_while_its_certificate_was_valid_is_accepted_after_it_expired() {
    let env = Env::new();
    let tsa = Tsa::start();
    let fulcio = LocalFulcio::new(&env);
    let start = fulcio.ca_start.clone();
    // openssl_date keeps whole seconds: so does the certificate.
    let not_after =
        time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(SHORT_LIFE);
    let (key, cert) = fulcio.issue(&env, "leaf", &start, &openssl_date(SHORT_LIFE));
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    let ca = fulcio.ca();
    attest_timestamped(
        &env,
        &tsa,
        "os",
        &digest,
        &key,
        &["--certificate", cert.to_str().unwrap(), "--certificate-chain", ca.to_str().unwrap()],
    );
    let (_, _, bundle) = bundle_of(&env, "os", &digest);
    assert_eq!(timestamps(&bundle).len(), 1, "cosign put the authority's timestamp in the bundle: {bundle}");
    assert!(bundle["verificationMaterial"]["tlogEntries"].as_array().is_none_or(Vec::is_empty), "{bundle}");

    let wait = not_after + time::Duration::seconds(2) - time::OffsetDateTime::now_utc();
    assert!(wait < time::Duration::seconds(SHORT_LIFE + 2), "{wait}");
    std::thread::sleep(std::time::Duration::try_from(wait).unwrap_or_default());
    assert!(time::OffsetDateTime::now_utc() > not_after, "the certificate has expired");

    let root = trusted_root_file(&env, "tsa-root.json", &[], Some(&ca), vec![tsa_entry(&tsa)]);
    let policy = policy_named(&env, "tsa-policy.json", &root);
    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    let signer = v["verdict"]["signers"][0].as_str().unwrap().to_string();
    assert!(signer.starts_with(&format!("certificate {WORKFLOW} (issuer {ISSUER})")), "{signer}");
    assert!(signer.contains("timestamp authority verified") && !signer.contains("transparency log"), "{signer}");
    let at = signed_at(&signer);
    assert!(at <= not_after, "timestamped at {at}, while the certificate (until {not_after}) was valid");
    switch_and_status_names(&env, &policy, "os:v1", WORKFLOW);
    let status = env.hostctl(&policy, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("timestamp authority verified"));

    // The root does not list the authority.
    let env = fresh(env);
    let no_tsa = trusted_root_file(&env, "no-tsa-root.json", &[], Some(&ca), Vec::new());
    let policy = policy_named(&env, "no-tsa-policy.json", &no_tsa);
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "invalid RFC 3161 timestamp");

    // The root trusted the authority only until an hour ago.
    let hour_ago = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    let ended = tsa.trusted_root_entry(json!({"start": "2020-01-01T00:00:00Z", "end": hour_ago}));
    let ended = trusted_root_file(&env, "ended-tsa-root.json", &[], Some(&ca), vec![ended]);
    let policy = policy_named(&env, "ended-tsa-policy.json", &ended);
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "outside the validity period of the authority");

    // The root lists a transparency log as well: the bundle has no entry in it.
    let log = Rekor::start();
    let logged = trusted_root_file(&env, "log-root.json", &[&log], Some(&ca), vec![tsa_entry(&tsa)]);
    let policy = policy_named(&env, "log-policy.json", &logged);
    env.assert_refused(
        &policy,
        "os:v1",
        "sigstoreSigned",
        "no transparency-log entry, but the trusted root lists a log",
    );
}

/// Keyed, timestamped by the local authority, no log: accepted under a root
/// listing the authority. Then v1's bundle rewritten in the registry with
/// one byte of its timestamp changed (the signed time, moved by ten
/// minutes), and with v2's genuine timestamp (over another signature): each
/// refused.
#[test]
fn keyed_bundle_with_a_tampered_or_borrowed_timestamp_is_refused() {
    let env = Env::new();
    let tsa = Tsa::start();
    let pubkey = env.cosign_keys("release");
    let v1 = env.push("os:v1", &[("etc/motd", "v1\n")]);
    let v2 = env.push("os:v2", &[("etc/motd", "v2\n")]);
    attest_timestamped(&env, &tsa, "os", &v1, &env.path("release.key"), &[]);
    attest_timestamped(&env, &tsa, "os", &v2, &env.path("release.key"), &[]);
    let root = trusted_root_file(&env, "tsa-root.json", &[], None, vec![tsa_entry(&tsa)]);
    let policy = keyed_policy(&env, &pubkey, &root);
    let v = env.pull_ok(&policy, "os:v1");
    let signer = v["verdict"]["signers"][0].as_str().unwrap();
    assert!(signer.starts_with("key SHA256:") && signer.contains("timestamp authority verified"), "{signer}");
    assert!(!signer.contains("transparency log"), "{signer}");
    let env = fresh(env);

    // One byte: a digit of the minutes of the token's genTime (the first
    // GeneralizedTime, tag 0x18, of 15 bytes: YYYYMMDDhhmmssZ).
    replace_bundle(&env, "os", &v1, |b| {
        let token = &mut b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0];
        let mut der =
            base64::engine::general_purpose::STANDARD.decode(token["signedTimestamp"].as_str().unwrap()).unwrap();
        let at = der.windows(2).position(|w| w == [0x18, 0x0f]).expect("a genTime") + 2;
        let minute_tens = &mut der[at + 10];
        assert!(minute_tens.is_ascii_digit());
        *minute_tens ^= 1;
        token["signedTimestamp"] = json!(b64(&der));
    });
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "invalid RFC 3161 timestamp");

    let (_, _, other) = bundle_of(&env, "os", &v2);
    let borrowed = timestamps(&other).remove(0);
    replace_bundle(&env, "os", &v1, |b| {
        b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
            json!(borrowed);
    });
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "message hash mismatch");
}
