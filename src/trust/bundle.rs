//! Sigstore bundles (`application/vnd.dev.sigstore.bundle.v0.1`–`v0.3+json`):
//! verifying one against a `trusted_root.json`, for `hostctl trust
//! verify-bundle` and for image signatures found as OCI referrers.
//!
//! The cryptography and the protocol checks are sigstore-rust's
//! `sigstore-verify` crate (with its `sigstore-trust-root`): message
//! signatures and DSSE envelopes, the certificate chain to a Fulcio CA of the
//! trusted root at the signing time, embedded SCTs against its CT logs, Rekor
//! v1/v2 entries (inclusion proof, signed checkpoint, signed entry timestamp,
//! entry/bundle consistency), RFC 3161 timestamps against its timestamp
//! authorities, and the validity windows of every key in the root. Written
//! here, by hand, and only this:
//! * **regular-expression identities** (cosign's `--certificate-identity-regexp`,
//!   `--certificate-oidc-issuer-regexp`): the crate matches identities exactly
//!   only, so a regex policy verifies with `any_identity()` and this module
//!   matches the SAN and issuer the crate *verified* against the pattern,
//!   anchored as a whole-string match;
//! * when a transparency-log entry is required ([`log_entry_required`]):
//!   the crate either verifies entries or skips them, so whether a root
//!   without logs lets an RFC 3161 timestamp stand alone is decided here;
//! * choosing the trusted root (a file, or the snapshot of the public-good
//!   production or staging root the crate ships) and reading the artifact as a
//!   file or a `sha256:` digest, as the conformance CLI protocol says.

use std::path::Path;

use anyhow::{bail, Context, Result};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::{ArtifactDigest, Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{IdentityMatcher, PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

use super::keyed::fingerprint;

/// The media type prefix of sigstore bundles (v0.1, v0.2, v0.3).
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// The in-toto predicate type cosign gives the statement it signs for an image
/// in the sigstore bundle format (`cosign sign` with bundles; `cosign attest
/// --new-bundle-format --type` this URI writes the same).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// A trusted root with no authorities.
const EMPTY_ROOT: &str = r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#;

/// The image name a *verified* image-signing bundle states for `digest`: its
/// DSSE envelope holds an in-toto statement with cosign's signing predicate
/// and a subject with that digest, whose name is the repository signed.
/// Message-signature bundles name no image and are refused.
pub fn image_claim(bundle_json: &[u8], digest: &crate::digest::Digest) -> Result<String> {
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_slice(bundle_json).context("the bundle is not JSON")?;
    let Some(env) = v.get("dsseEnvelope") else {
        bail!("a message-signature bundle names no image: hostctl needs cosign's in-toto statement (DSSE)");
    };
    let payload = env["payload"].as_str().context("DSSE envelope without payload")?;
    let payload = base64::engine::general_purpose::STANDARD.decode(payload).context("DSSE payload is not base64")?;
    let st: serde_json::Value = serde_json::from_slice(&payload).context("the DSSE payload is not JSON")?;
    let pt = st["predicateType"].as_str().unwrap_or_default();
    if pt != COSIGN_SIGN_PREDICATE {
        bail!("the statement's predicate type is {pt:?}, not cosign's image signature {COSIGN_SIGN_PREDICATE:?}");
    }
    let subjects = st["subject"].as_array().context("the statement has no subject")?;
    subjects
        .iter()
        .find(|s| s["digest"]["sha256"].as_str() == Some(digest.hex()))
        .and_then(|s| s["name"].as_str())
        .map(str::to_string)
        .with_context(|| format!("the statement names no subject with digest {digest}"))
}

/// Where a trusted root comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSource {
    /// A `trusted_root.json` file.
    File(std::path::PathBuf),
    /// The public-good production root as shipped with sigstore-rust.
    Production,
    /// The public-good staging root as shipped with sigstore-rust.
    Staging,
}

impl RootSource {
    /// Reads the root.
    pub fn load(&self) -> Result<TrustedRoot> {
        use sigstore_verify::trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, SIGSTORE_STAGING_TRUSTED_ROOT};
        match self {
            RootSource::File(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("reading trusted root {}", p.display()))?;
                TrustedRoot::from_json(&text).with_context(|| format!("trusted root {}", p.display()))
            }
            RootSource::Production => Ok(TrustedRoot::from_json(SIGSTORE_PRODUCTION_TRUSTED_ROOT)?),
            RootSource::Staging => Ok(TrustedRoot::from_json(SIGSTORE_STAGING_TRUSTED_ROOT)?),
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            RootSource::File(p) => p.display().to_string(),
            RootSource::Production => "the built-in public-good Sigstore root".into(),
            RootSource::Staging => "the built-in public-good Sigstore staging root".into(),
        }
    }
}

/// A string matched exactly or by a regular expression (whole string).
#[derive(Clone, Debug)]
pub enum Match {
    /// Equal to this.
    Exact(String),
    /// Matches this pattern as a whole (as cosign's `-regexp` flags, anchored).
    Regex(regex::Regex),
}

impl PartialEq for Match {
    fn eq(&self, other: &Match) -> bool {
        match (self, other) {
            (Match::Exact(a), Match::Exact(b)) => a == b,
            (Match::Regex(a), Match::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Match {
    /// A whole-string regular expression.
    pub fn regex(pattern: &str) -> Result<Match> {
        let anchored = format!("^(?:{pattern})$");
        Ok(Match::Regex(
            regex::Regex::new(&anchored).with_context(|| format!("invalid regular expression {pattern:?}"))?,
        ))
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Match::Exact(e) => e == s,
            Match::Regex(r) => r.is_match(s),
        }
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Exact(e) => f.write_str(e),
            Match::Regex(r) => {
                let inner = r.as_str().strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or(r.as_str());
                write!(f, "regexp {inner:?}")
            }
        }
    }
}

/// Which kind of certificate identity (SAN) is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanKind {
    /// Any kind (email or URI), as the conformance protocol's `--certificate-identity`.
    Any,
    /// An email SAN (`subjectEmail`).
    Email,
    /// A URI SAN (`subjectURI`, workflow identities).
    Uri,
}

impl SanKind {
    /// For messages: `email`, `URI` or `identity`.
    pub fn describe(self) -> &'static str {
        match self {
            SanKind::Any => "identity",
            SanKind::Email => "email",
            SanKind::Uri => "URI",
        }
    }
}

/// A certificate identity a policy accepts: SAN and OIDC issuer.
#[derive(Clone, Debug, PartialEq)]
pub struct CertIdentity {
    /// The SAN kind required.
    pub kind: SanKind,
    /// The SAN value.
    pub subject: Match,
    /// The OIDC issuer.
    pub issuer: Match,
}

/// Who must have signed a bundle.
#[derive(Clone, Debug, PartialEq)]
pub enum Signer {
    /// A managed key (SubjectPublicKeyInfo DER); `tlog`: whether a
    /// transparency-log entry is required.
    Key {
        /// The key's SubjectPublicKeyInfo DER.
        der: Vec<u8>,
        /// Whether the bundle must prove a transparency-log entry.
        tlog: bool,
    },
    /// A Fulcio certificate for this identity.
    Identity(CertIdentity),
}

impl Signer {
    /// A managed key from a PEM `PUBLIC KEY` file.
    pub fn key_file(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
        let key = DerPublicKey::from_pem(&text).with_context(|| format!("{}: not a PEM public key", path.display()))?;
        Ok(Signer::Key { der: key.as_bytes().to_vec(), tlog: true })
    }
}

/// The artifact a bundle signs: its bytes, or only its SHA-256.
#[derive(Clone, Debug)]
pub enum Subject {
    /// The whole artifact.
    Bytes(Vec<u8>),
    /// The artifact's SHA-256 (an OCI manifest digest, or the protocol's `sha256:` input).
    Sha256([u8; 32]),
}

impl Subject {
    /// The conformance protocol's `FILE_OR_DIGEST`: a `sha256:` digest of the
    /// right length that is not a path on disk, else a file path.
    pub fn from_arg(arg: &str) -> Result<Subject> {
        if let Some(hexpart) = arg.strip_prefix("sha256:") {
            if hexpart.len() == 64 && !Path::new(arg).exists() {
                if let Ok(bytes) = hex::decode(hexpart) {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&bytes);
                    return Ok(Subject::Sha256(d));
                }
            }
        }
        Ok(Subject::Bytes(std::fs::read(arg).with_context(|| format!("reading {arg}"))?))
    }
}

/// A prepared verifier for one trusted root.
pub struct BundleVerifier {
    verifier: Verifier,
    /// Whether the root lists CT logs: without any (a private CA), SCTs are
    /// not required.
    ct_logs: bool,
    /// Whether the root lists transparency logs: see [`log_entry_required`].
    tlogs: bool,
    /// Where the root came from, for messages.
    pub root: String,
}

impl BundleVerifier {
    /// Loads `source` and checks its material (keys, certificates, validity windows).
    pub fn new(source: &RootSource) -> Result<BundleVerifier> {
        let root = source.load()?;
        let verifier = Verifier::new(&root).with_context(|| format!("trusted root {}", source.describe()))?;
        Ok(BundleVerifier {
            verifier,
            ct_logs: !root.ctlogs.is_empty(),
            tlogs: !root.tlogs.is_empty(),
            root: source.describe(),
        })
    }

    /// A verifier with no authorities at all: enough for managed-key bundles
    /// when no transparency-log entry is required.
    pub fn empty() -> Result<BundleVerifier> {
        let root = TrustedRoot::from_json(EMPTY_ROOT)?;
        Ok(BundleVerifier {
            verifier: Verifier::new(&root)?,
            ct_logs: false,
            tlogs: false,
            root: "no trusted root (a key alone)".into(),
        })
    }

    /// Verifies `bundle_json` over `subject` for `signer`: who signed and how
    /// (for the verdict), or why not.
    pub fn verify(&self, bundle_json: &[u8], subject: &Subject, signer: &Signer) -> Result<String> {
        let text = std::str::from_utf8(bundle_json).context("the bundle is not UTF-8 JSON")?;
        let bundle = Bundle::from_json(text).context("not a valid sigstore bundle")?;
        let digest;
        let artifact: sigstore_verify::types::Artifact<'_> = match subject {
            Subject::Bytes(b) => sigstore_verify::types::Artifact::from_blob(b),
            Subject::Sha256(d) => {
                digest = ArtifactDigest::sha256(Sha256Hash::new(*d));
                sigstore_verify::types::Artifact::from_digest(digest)
            }
        };
        let log_required = log_entry_required(self.tlogs, signer);
        if log_required && bundle.verification_material.tlog_entries.is_empty() {
            bail!(
                "the bundle has no transparency-log entry, but the trusted root lists a log, so one is required \
                 (a timestamp authority's timestamp alone is enough only under a root that lists no log)"
            );
        }
        match signer {
            Signer::Key { der, .. } => {
                let mut policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(der.clone()));
                if !log_required {
                    policy = policy.skip_tlog_unsafe();
                }
                let result = self.verifier.verify(artifact, &bundle, &policy)?;
                Ok(format!("key {}{}", fingerprint(der), log_note(&result, &bundle)))
            }
            Signer::Identity(CertIdentity { kind, subject, issuer }) => {
                // Exact identities are the crate's own check; regular
                // expressions are matched here against what it verified.
                let mut policy = VerificationPolicy::any_identity();
                if !self.ct_logs {
                    policy = policy.skip_sct();
                }
                if !log_required {
                    // The crate still demands a verified signing time: an
                    // RFC 3161 timestamp from one of the root's authorities
                    // (a log's entry timestamp cannot verify without a log).
                    policy = policy.skip_tlog_unsafe();
                }
                if let Match::Exact(s) = subject {
                    policy = policy.require_identity(match kind {
                        SanKind::Any => IdentityMatcher::Exact(s.clone()),
                        SanKind::Email => IdentityMatcher::Email(s.clone()),
                        SanKind::Uri => IdentityMatcher::Uri(s.clone()),
                    });
                }
                if let Match::Exact(i) = issuer {
                    policy = policy.require_issuer(i.clone());
                }
                let result = self.verifier.verify(artifact, &bundle, &policy)?;
                if !result.certificate_verified() {
                    bail!("the bundle has no verified signing certificate (signed with a key?)");
                }
                let san = result.identity().context("the signing certificate names no identity")?;
                use sigstore_verify::SubjectAltName as San;
                let kind_ok = matches!(
                    (kind, san),
                    (SanKind::Any, _) | (SanKind::Email, San::Email(_)) | (SanKind::Uri, San::Uri(_))
                );
                if !kind_ok || !subject.matches(san.as_str()) {
                    bail!("identity mismatch: the certificate names {:?}, the policy wants {subject}", san.as_str());
                }
                let iss = result.issuer().unwrap_or_default();
                if !issuer.matches(iss) {
                    bail!("issuer mismatch: the certificate names {iss:?}, the policy wants {issuer}");
                }
                Ok(format!("certificate {} (issuer {iss}){}", san.as_str(), log_note(&result, &bundle)))
            }
        }
    }
}

/// Whether a bundle must prove an entry in a transparency log of the
/// trusted root (inclusion proof, signed checkpoint, and for Rekor v1 the
/// signed entry timestamp), given whether the root lists any log.
///
/// A root that lists a log says that every signature of its trust domain is
/// logged there, so a bundle without an entry is refused even when a timestamp
/// authority dated it. A root that lists none (a private trust domain with a
/// CA and a timestamp authority, as GitHub's for private repositories) cannot
/// check an entry at all: the bundle's RFC 3161 timestamps, verified against
/// the root's timestamp authorities, are then what dates the signature, and
/// sigstore-verify requires at least one for a certificate. A managed key
/// whose policy names no trusted root wants no entry either way.
pub fn log_entry_required(root_lists_logs: bool, signer: &Signer) -> bool {
    match signer {
        Signer::Key { tlog, .. } => *tlog && root_lists_logs,
        Signer::Identity(_) => root_lists_logs,
    }
}

fn log_note(result: &sigstore_verify::VerificationResult, bundle: &Bundle) -> String {
    let mut notes = Vec::new();
    if result.tlog_verified() {
        notes.push("transparency log verified".to_string());
    }
    // Every timestamp a bundle carries must verify for the crate to accept it.
    if !bundle.verification_material.timestamp_verification_data.rfc3161_timestamps.is_empty() {
        notes.push("timestamp authority verified".to_string());
    }
    if let Some(t) = result.verified_timestamps().iter().min() {
        notes.push(format!("signed at {t}"));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(", {}", notes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::digest::Digest;

    /// The conformance protocol's FILE_OR_DIGEST rule.
    #[test]
    fn file_or_digest_follows_the_conformance_protocol() {
        let hex64 = "ab".repeat(32);
        match Subject::from_arg(&format!("sha256:{hex64}")).unwrap() {
            Subject::Sha256(d) => assert_eq!(hex::encode(d), hex64),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        // Too short, not hex, or an existing path: a file.
        for name in [format!("sha256:{}", "ab".repeat(31)), format!("sha256:{}", "zz".repeat(32))] {
            let err = Subject::from_arg(&dir.path().join(&name).display().to_string()).unwrap_err();
            assert!(format!("{err:#}").contains("reading"), "{name}: {err:#}");
        }
        let cwd_file = dir.path().join(format!("sha256:{hex64}"));
        std::fs::write(&cwd_file, b"bytes").unwrap();
        match Subject::from_arg(&cwd_file.display().to_string()).unwrap() {
            Subject::Bytes(b) => assert_eq!(b, b"bytes"),
            other => panic!("{other:?}"),
        }
    }

    /// Like cosign's `--certificate-identity-regexp`, a pattern must match the
    /// whole identity (cosign anchors it too), not a part of it.
    #[test]
    fn regular_expressions_match_whole_strings() {
        let m = Match::regex(r"https://github\.com/o/r/\.github/workflows/[a-z]+\.yml@refs/tags/v.*").unwrap();
        assert!(m.matches("https://github.com/o/r/.github/workflows/rel.yml@refs/tags/v1.2"));
        assert!(!m.matches("https://github.com/o/r/.github/workflows/rel.yml@refs/heads/main"));
        assert!(!m.matches("https://evil.example/https://github.com/o/r/.github/workflows/rel.yml@refs/tags/v1"));
        let alt = Match::regex("a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab") && !alt.matches("xa"));
        assert_eq!(alt.to_string(), "regexp \"a|b\"");
        assert!(Match::regex("(").is_err());
    }

    fn dsse_bundle(statement: serde_json::Value) -> Vec<u8> {
        let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
        json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
               "dsseEnvelope": {"payload": payload, "payloadType": "application/vnd.in-toto+json", "signatures": []}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn image_claims_need_cosigns_predicate_and_the_digest() {
        let d = Digest::of(b"manifest");
        let statement = |pt: &str, hex: &str| {
            json!({"_type": "https://in-toto.io/Statement/v1", "predicateType": pt, "predicate": {},
                   "subject": [{"name": "r.io/os", "digest": {"sha256": hex}}]})
        };
        assert_eq!(image_claim(&dsse_bundle(statement(COSIGN_SIGN_PREDICATE, d.hex())), &d).unwrap(), "r.io/os");
        let err = image_claim(&dsse_bundle(statement("https://slsa.dev/provenance/v1", d.hex())), &d).unwrap_err();
        assert!(err.to_string().contains("predicate type"), "{err}");
        let other = Digest::of(b"other");
        let err = image_claim(&dsse_bundle(statement(COSIGN_SIGN_PREDICATE, other.hex())), &d).unwrap_err();
        assert!(err.to_string().contains("no subject with digest"), "{err}");
        let message = json!({"messageSignature": {"messageDigest": {}, "signature": ""}}).to_string();
        let err = image_claim(message.as_bytes(), &d).unwrap_err();
        assert!(err.to_string().contains("message-signature bundle names no image"), "{err}");
    }

    /// Whether a log entry is required follows the root. The bundle is
    /// sigstore-conformance's `rekor2-timestamp-with-embedded-cert` (a Rekor
    /// v2 entry and a staging TSA timestamp over a.txt, its certificate long
    /// expired), with its trusted root (the staging root, two logs, one TSA).
    #[test]
    fn a_timestamp_without_a_log_entry_counts_only_under_a_root_without_logs() {
        let bundle: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/rekor2-timestamped.sigstore.json")).unwrap();
        let root: serde_json::Value = serde_json::from_str(include_str!("fixtures/staging-trusted-root.json")).unwrap();
        let artifact = Subject::Bytes(include_bytes!("fixtures/a.txt").to_vec());
        let anyone = Signer::Identity(CertIdentity {
            kind: SanKind::Any,
            subject: Match::regex(".*").unwrap(),
            issuer: Match::regex(".*").unwrap(),
        });
        let dir = tempfile::tempdir().unwrap();
        let check = |root: &serde_json::Value, bundle: &serde_json::Value| {
            let p = dir.path().join("trusted_root.json");
            std::fs::write(&p, root.to_string()).unwrap();
            BundleVerifier::new(&RootSource::File(p))
                .unwrap()
                .verify(bundle.to_string().as_bytes(), &artifact, &anyone)
                .map_err(|e| format!("{e:#}"))
        };

        // As published: the entry and the timestamp both verify.
        let who = check(&root, &bundle).unwrap();
        assert!(who.contains("transparency log verified") && who.contains("timestamp authority verified"), "{who}");

        // Its entry removed: the root lists logs, so the timestamp alone is refused.
        let mut unlogged = bundle.clone();
        unlogged["verificationMaterial"]["tlogEntries"] = json!([]);
        let err = check(&root, &unlogged).unwrap_err();
        assert!(err.contains("no transparency-log entry, but the trusted root lists a log"), "{err}");

        // The same root without its logs: the timestamp dates the signature.
        let mut no_logs = root.clone();
        no_logs["tlogs"] = json!([]);
        let who = check(&no_logs, &unlogged).unwrap();
        assert!(!who.contains("transparency log") && who.contains("timestamp authority verified"), "{who}");
        assert!(who.contains("signed at 20"), "{who}");

        // ... but only a timestamp of one of its authorities, and only one that verifies.
        let mut no_tsa = no_logs.clone();
        no_tsa["timestampAuthorities"] = json!([]);
        let err = check(&no_tsa, &unlogged).unwrap_err();
        assert!(err.contains("no timestamp authorities configured"), "{err}");
        let mut untimed = unlogged.clone();
        untimed["verificationMaterial"]["timestampVerificationData"] = json!({"rfc3161Timestamps": []});
        let err = check(&no_logs, &untimed).unwrap_err();
        assert!(err.contains("at least one tlog entry or timestamp"), "{err}");

        // Managed keys: an entry only when the policy has a root and it lists a log.
        let key = |tlog| Signer::Key { der: Vec::new(), tlog };
        assert!(log_entry_required(true, &key(true)));
        assert!(!log_entry_required(false, &key(true)));
        assert!(!log_entry_required(true, &key(false)));
        assert!(log_entry_required(true, &anyone) && !log_entry_required(false, &anyone));
    }

    /// The built-in public-good roots load and prepare.
    #[test]
    fn built_in_roots_load() {
        for r in [RootSource::Production, RootSource::Staging] {
            BundleVerifier::new(&r).unwrap();
        }
        BundleVerifier::empty().unwrap();
    }
}
