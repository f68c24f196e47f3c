//! Sigstore bundles end to end: real cosign 2.5 writes bundles
//! (`cosign attest --new-bundle-format` with cosign's image-signing predicate,
//! which is what cosign's bundle-format `sign` writes) and attaches them as OCI
//! 1.1 referrers to images in a real registry (Distribution has no referrers
//! API: cosign keeps the referrers tag schema's index), and hostctl finds them
//! there. Without a transparency log here (no Rekor on loopback), the bundles
//! carry no inclusion proof, which sigstore-verify requires: they are refused,
//! by the rule, exit 4, nothing stored or staged. The accepting path is the
//! conformance suite's (integration/conformance).

use std::path::PathBuf;
use std::process::Command;

use crate::support::run;
use crate::trust::{cosign, Env};

/// cosign's predicate type for image signatures in the bundle format.
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

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

fn policy_with(env: &Env, name: &str, req: serde_json::Value) -> PathBuf {
    env.policy(name, "os", serde_json::json!([req]))
}

#[test]
fn keyed_bundle_referrer_without_log_entry_is_found_and_refused_by_the_rule() {
    let env = Env::new();
    let pubkey = env.cosign_keys("release");
    let digest = env.push("os:v1", &[("etc/motd", "v1\n")]);
    attest(&env, "os", &digest, &["--key", env.path("release.key").to_str().unwrap()]);
    let policy = policy_with(
        &env,
        "policy.json",
        serde_json::json!({"type": "sigstoreSigned", "keyPath": pubkey, "signedIdentity": {"type": "matchRepository"}}),
    );
    // Found as a referrer (the message names it), checked, refused.
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "must have at least one tlog entry or timestamp");
    env.assert_refused(&policy, "os:v1", "sigstoreSigned", "referrer sha256:");
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
