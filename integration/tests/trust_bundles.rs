//! Sigstore bundles end to end: real cosign 2.5 writes bundles
//! (`cosign attest --new-bundle-format` with cosign's image-signing predicate,
//! which is what cosign's bundle-format `sign` writes) and attaches them as OCI
//! 1.1 referrers to images in a real registry (Distribution has no referrers
//! API: cosign keeps the referrers tag schema's index). Keyed, and keyless
//! against a local CA standing in for Fulcio and a local RFC 3161 timestamp
//! authority (real `openssl ts`), with a `trusted_root.json` made here. Every
//! refusal exits 4, names the rule, and stores and stages nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;

use crate::support::{require_tool, run};
use crate::trust::{cosign, Env};

/// cosign's predicate type for image signatures in the bundle format.
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/example/os/.github/workflows/release.yml@refs/heads/main";

/// `cosign attest --new-bundle-format` of `repo@digest` with `extra` signing flags.
fn attest(env: &Env, repo: &str, digest: &str, extra: &[&str]) {
    let pred = env.path("predicate.json");
    std::fs::write(&pred, "{}").unwrap();
    run(cosign(env.work.path())
        .args(["attest", "-y", "--new-bundle-format", "--tlog-upload=false", "--type", SIGN_PREDICATE])
        .arg("--predicate")
        .arg(&pred)
        .args(["--allow-http-registry", "--allow-insecure-registry"])
        .args(extra)
        .arg(env.reg.image(&format!("{repo}@{digest}"))));
}

/// The referrers tag schema's index for `digest` (`sha256-<hex>`), raw.
fn referrers_index(env: &Env, repo: &str, digest: &str) -> Vec<u8> {
    env.raw_manifest(&format!("{repo}:{}", digest.replacen(':', "-", 1))).expect("cosign wrote the referrers tag")
}

/// PUTs `index` as the referrers tag of `digest` (what a registry attacker could do).
fn put_referrers_index(env: &Env, repo: &str, digest: &str, index: &[u8]) {
    let file = env.path("index.json");
    std::fs::write(&file, index).unwrap();
    run(Command::new("curl")
        .args(["-fsS", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.index.v1+json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/v2/{repo}/manifests/{}", env.reg.addr, digest.replacen(':', "-", 1))));
}

fn policy_with(env: &Env, name: &str, req: serde_json::Value) -> PathBuf {
    env.policy(name, "os", serde_json::json!([req]))
}

#[test]
fn keyed_bundle_referrer_deploys_and_status_names_rule_and_signer() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    attest(&env, "os", &digest, &["--key", env.path("release.key").to_str().unwrap()]);
    // Another key's policy refuses the bundle.
    let other = env.cosign_keys("other");
    let wrong = policy_with(
        &env,
        "wrong.json",
        serde_json::json!({"type": "sigstoreSigned", "keyPath": other, "signedIdentity": {"type": "matchRepository"}}),
    );
    env.assert_refused(&wrong, "os:v1", "sigstoreSigned", "invalid signature");

    let policy = policy_with(
        &env,
        "policy.json",
        serde_json::json!({"type": "sigstoreSigned", "keyPath": pubkey, "signedIdentity": {"type": "matchRepository"}}),
    );
    let v = env.pull_ok(&policy, "os:v1");
    assert_eq!(v["verdict"]["signatureVerified"], true, "{v}");
    let signer = v["verdict"]["signers"][0].as_str().unwrap().to_string();
    assert!(signer.starts_with("key SHA256:") && signer.contains("sigstore bundle"), "{signer}");
    assert!(signer.contains(&format!("signed as {}", env.reg.image("os"))), "{signer}");

    let out = env.hostctl(&policy, &["switch", &env.reg.image("os:v1")]);
    assert!(out.status.success(), "switch: {}", String::from_utf8_lossy(&out.stderr));
    let out = env.hostctl(&policy, &["status", "--json"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains(&signer), "status should show the signer {signer}: {status}");
    assert!(status.contains("sigstoreSigned"), "status should show the rule: {status}");
}

#[test]
fn deleted_bundle_signature_is_refused() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[]);
    attest(&env, "os", &digest, &["--key", env.path("release.key").to_str().unwrap()]);
    let index: serde_json::Value = serde_json::from_slice(&referrers_index(&env, "os", &digest)).unwrap();
    let bundle_manifest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    run(Command::new("skopeo")
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}", env.reg.image(&format!("os@{bundle_manifest}")))));
    let policy = policy_with(
        &env,
        "policy.json",
        serde_json::json!({"type": "sigstoreSigned", "keyPath": pubkey, "signedIdentity": {"type": "matchRepository"}}),
    );
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "the image is not signed");
}

#[test]
fn bundle_for_another_digest_replayed_onto_an_image_is_refused() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let signed = env.push("os:v1", &[("etc/motd", "v1\n")]);
    // Another image in the same repository gets the signed image's referrers
    // index copied to its own referrers tag.
    let evil = env.push("os:evil", &[("etc/motd", "evil\n")]);
    attest(&env, "os", &signed, &["--key", env.path("release.key").to_str().unwrap()]);
    put_referrers_index(&env, "os", &evil, &referrers_index(&env, "os", &signed));
    let policy = policy_with(
        &env,
        "policy.json",
        serde_json::json!({"type": "sigstoreSigned", "keyPath": pubkey, "signedIdentity": {"type": "matchRepository"}}),
    );
    env.assert_refused(&policy, "os:evil", "sigstoreSigned", "artifact mismatch");
    env.pull_ok(&policy, "os:v1");
}

/// A local CA (Fulcio's stand-in) and timestamp authority, and the
/// `trusted_root.json` naming both.
struct Pki {
    dir: PathBuf,
    tsa: Option<Child>,
    tsa_url: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        if let Some(c) = &mut self.tsa {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        require_tool("openssl");
        require_tool("python3");
        let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
        ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        ossl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/O=test/CN=local fulcio",
        ]);
        ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "tsa.key"]);
        ossl(&["req", "-new", "-key", "tsa.key", "-subj", "/O=test/CN=local tsa", "-out", "tsa.csr"]);
        std::fs::write(
            dir.join("tsa.ext"),
            "extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "tsa.ext",
            "-out",
            "tsa.pem",
        ]);
        std::fs::write(dir.join("tsaserial"), "01\n").unwrap();
        std::fs::write(
            dir.join("tsa.cnf"),
            format!(
                "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\nserial = {}\ncrypto_device = builtin\n\
                 default_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\nsigner_digest = sha256\n\
                 certs = {}\naccuracy = secs:1\nordering = yes\ntsa_name = no\ness_cert_id_chain = no\n\
                 ess_cert_id_alg = sha256\n",
                dir.join("tsaserial").display(),
                dir.join("ca.pem").display()
            ),
        )
        .unwrap();
        let der = |pem: &str| {
            let out = run(Command::new("openssl").current_dir(dir).args(["x509", "-in", pem, "-outform", "DER"]));
            base64::engine::general_purpose::STANDARD.encode(out.stdout)
        };
        let root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [], "ctlogs": [],
            "certificateAuthorities": [{"subject": {"organization": "test", "commonName": "local fulcio"},
                "uri": "https://fulcio.invalid", "certChain": {"certificates": [{"rawBytes": der("ca.pem")}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}],
            "timestampAuthorities": [{"subject": {"organization": "test", "commonName": "local tsa"},
                "uri": "https://tsa.invalid",
                "certChain": {"certificates": [{"rawBytes": der("tsa.pem")}, {"rawBytes": der("ca.pem")}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}]
        });
        std::fs::write(dir.join("trusted_root.json"), serde_json::to_vec_pretty(&root).unwrap()).unwrap();
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixtures/tsa-server.py");
        let mut child =
            Command::new("python3").arg(server).arg(dir).stdout(Stdio::piped()).spawn().expect("python3 runs");
        let mut port = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        let tsa_url = format!("http://127.0.0.1:{}/", port.trim());
        Pki { dir: dir.to_path_buf(), tsa: Some(child), tsa_url }
    }

    /// A code-signing certificate for `san` from the local CA, for the
    /// public key of the cosign key pair `prefix` (`days` of validity).
    fn leaf(&self, env: &Env, prefix: &str, san: &str, days: &str) -> PathBuf {
        let dir = &self.dir;
        let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
        env.cosign_keys(prefix);
        ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "csr.key"]);
        ossl(&["req", "-new", "-key", "csr.key", "-subj", "/", "-out", "leaf.csr"]);
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "subjectAltName=critical,{san}\nextendedKeyUsage=codeSigning\nkeyUsage=critical,digitalSignature\n\
                 1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}\n"
            ),
        )
        .unwrap();
        let out = dir.join(format!("{prefix}-cert.pem"));
        let pubkey = env.path(&format!("{prefix}.pub"));
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
            days,
            "-extfile",
            "leaf.ext",
            "-force_pubkey",
            pubkey.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ]);
        out
    }
}

fn keyless_req(fulcio: serde_json::Value, root: &Path) -> serde_json::Value {
    serde_json::json!({"type": "sigstoreSigned", "fulcio": fulcio, "trustedRootPath": root,
                       "signedIdentity": {"type": "matchRepository"}})
}

#[test]
fn keyless_bundle_with_workflow_identity_and_local_tsa_verifies_offline() {
    let env = Env::new();
    let pki_dir = env.path("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    let cert = pki.leaf(&env, "ci", &format!("URI:{WORKFLOW}"), "1");
    let digest = env.push("os:v1", &[]);
    attest(
        &env,
        "os",
        &digest,
        &[
            "--key",
            env.path("ci.key").to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            "--certificate-chain",
            pki_dir.join("ca.pem").to_str().unwrap(),
            "--timestamp-server-url",
            &pki.tsa_url,
        ],
    );
    let root = pki_dir.join("trusted_root.json");
    // Another workflow, another issuer, a prefix-only regex: refused by the rule.
    for (name, fulcio, why) in [
        (
            "other-workflow.json",
            serde_json::json!({"oidcIssuer": ISSUER, "subjectURI": "https://github.com/example/os/.github/workflows/evil.yml@refs/heads/main"}),
            "identity mismatch",
        ),
        (
            "other-issuer.json",
            serde_json::json!({"oidcIssuer": "https://accounts.google.com", "subjectURI": WORKFLOW}),
            "issuer mismatch",
        ),
        ("email.json", serde_json::json!({"oidcIssuer": ISSUER, "subjectEmail": WORKFLOW}), "identity mismatch"),
        (
            "prefix-regex.json",
            serde_json::json!({"oidcIssuer": ISSUER, "subjectRegexp": "https://github.com/example/"}),
            "identity mismatch",
        ),
    ] {
        let p = env.policy(name, "os", serde_json::json!([keyless_req(fulcio, &root)]));
        env.assert_refused(&p, "os:v1", "sigstoreSigned", why);
    }

    // containers/image's form (caPath, rekorPublicKeyPath, for legacy
    // signatures) without trustedRootPath: bundles are checked against the
    // sysroot's pinned root, and refused while there is none.
    let plain = env.policy(
        "plain.json",
        "os",
        serde_json::json!([{"type": "sigstoreSigned",
            "fulcio": {"caPath": pki_dir.join("ca.pem"), "oidcIssuer": ISSUER, "subjectURI": WORKFLOW},
            "rekorPublicKeyPath": env.path("ci.pub"), "signedIdentity": {"type": "matchRepository"}}]),
    );
    env.assert_refused(&plain, "os:v1", "sigstoreSigned", "no sigstore trusted root");
    let pinned = env.sysroot.path().join("etc/hostctl/sigstore");
    std::fs::create_dir_all(&pinned).unwrap();
    std::fs::copy(&root, pinned.join("trusted_root.json")).unwrap();
    env.pull_ok(&plain, "os:v1");
    std::fs::remove_file(pinned.join("trusted_root.json")).unwrap();

    let exact = env.policy(
        "exact.json",
        "os",
        serde_json::json!([keyless_req(serde_json::json!({"oidcIssuer": ISSUER, "subjectURI": WORKFLOW}), &root)]),
    );
    let v = env.pull_ok(&exact, "os:v1");
    let signer = v["verdict"]["signers"][0].as_str().unwrap();
    assert!(signer.contains(WORKFLOW) && signer.contains(ISSUER) && signer.contains("sigstore bundle"), "{signer}");

    let regex = env.policy(
        "regex.json",
        "os",
        serde_json::json!([keyless_req(
            serde_json::json!({"oidcIssuer": ISSUER,
                               "subjectRegexp": r"https://github\.com/example/os/\.github/workflows/[a-z]+\.yml@refs/heads/main"}),
            &root
        )]),
    );
    env.pull_ok(&regex, "os:v1");
}

#[test]
fn keyless_bundle_without_timestamp_is_refused() {
    let env = Env::new();
    let pki_dir = env.path("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    let cert = pki.leaf(&env, "ci", &format!("URI:{WORKFLOW}"), "1");
    let digest = env.push("os:v1", &[]);
    // No transparency log, no timestamp authority: nothing proves when it was
    // signed, so the certificate cannot be shown valid at that time.
    attest(
        &env,
        "os",
        &digest,
        &[
            "--key",
            env.path("ci.key").to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            "--certificate-chain",
            pki_dir.join("ca.pem").to_str().unwrap(),
        ],
    );
    let p = env.policy(
        "exact.json",
        "os",
        serde_json::json!([keyless_req(
            serde_json::json!({"oidcIssuer": ISSUER, "subjectURI": WORKFLOW}),
            &pki_dir.join("trusted_root.json")
        )]),
    );
    env.assert_refused(&p, "os:v1", "sigstoreSigned", "timestamp");
}
