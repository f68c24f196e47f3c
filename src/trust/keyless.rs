//! Keyless (Fulcio) signatures, checked entirely offline:
//!
//! 1. the Rekor bundle's SignedEntryTimestamp (SET) verifies under one of the
//!    policy's Rekor public keys, chosen by the bundle's `logID` (the SHA-256
//!    of that key);
//! 2. the leaf certificate chains (with the signature's chain annotation as
//!    intermediates) to the policy's Fulcio CA, for code signing, valid at
//!    the time Rekor says the entry was integrated;
//! 3. the certificate's identity (email or URI SAN) and OIDC issuer extension
//!    are what the policy names, exactly or by regular expression;
//! 4. the signature over the payload verifies under the certificate's key;
//! 5. the logged entry (a `hashedrekord`) is for this very signature,
//!    certificate and payload hash.
//!
//! What this cannot do offline: prove the entry is still in the log (no
//! inclusion proof against a fresh checkpoint), check revocation, or notice a
//! compromised CA or log key. See docs/trust.md.

use anyhow::{bail, Context, Result};
use base64::Engine;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};
use x509_cert::der::{Decode, Encode};

use super::bundle::{CertIdentity, SanKind};
use super::cosign::Candidate;
use super::keyed::TrustedKey;
use super::policy::Material;
use super::SignatureCheck;

/// Extended key usage id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's OIDC issuer extension, v1 (raw string) and v2 (DER UTF8String).
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";

/// The policy's keyless trust: Fulcio CA, expected identity, Rekor keys.
pub struct Keyless {
    roots: Vec<Vec<u8>>,
    identity: CertIdentity,
    /// (logID = hex SHA-256 of the key's SPKI DER, key).
    rekor_keys: Vec<(String, TrustedKey)>,
}

/// A cosign Rekor bundle, as in the `dev.sigstore.cosign/bundle` annotation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}

/// What the SET signs (canonical JSON of these four fields).
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

impl Keyless {
    /// Loads the CA certificates and Rekor keys a requirement names.
    pub fn load(ca: &Material, identity: &CertIdentity, rekor: &[Material]) -> Result<Keyless> {
        let ca_bytes = ca.load()?;
        let roots: Vec<Vec<u8>> = pem::parse_many(&ca_bytes)
            .with_context(|| format!("Fulcio CA {}: not PEM", ca.describe()))?
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect();
        if roots.is_empty() {
            bail!("Fulcio CA {}: no PEM certificate", ca.describe());
        }
        for r in &roots {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(r.as_slice()))
                .map_err(|e| anyhow::anyhow!("Fulcio CA {}: unusable certificate: {e:?}", ca.describe()))?;
        }
        let mut rekor_keys = Vec::new();
        for m in rekor {
            for k in TrustedKey::load(m)? {
                let id = k.fingerprint.trim_start_matches("SHA256:").to_string();
                rekor_keys.push((id, k));
            }
        }
        Ok(Keyless { roots, identity: identity.clone(), rekor_keys })
    }

    fn check_inner(&self, c: &Candidate) -> Result<String> {
        let cert_pem = c.certificate.as_deref().context("no certificate: not a keyless signature")?;
        let bundle = c.bundle.as_deref().context(
            "no Rekor bundle: hostctl verifies keyless signatures offline and needs the bundle cosign attaches",
        )?;
        let bundle: RekorBundle = serde_json::from_str(bundle).context("malformed Rekor bundle")?;

        // 1. The SET, under a trusted Rekor key.
        let (_, rekor_key) =
            self.rekor_keys.iter().find(|(id, _)| *id == bundle.payload.log_id).with_context(|| {
                format!("logged in Rekor log {} whose key the policy does not trust", bundle.payload.log_id)
            })?;
        let canonical =
            serde_json_canonicalizer::to_vec(&bundle.payload).context("canonicalising the Rekor bundle payload")?;
        if !rekor_key.verifies(&canonical, &bundle.signed_entry_timestamp) {
            bail!("the Rekor SignedEntryTimestamp does not verify under the trusted Rekor key");
        }

        // 2. The certificate chain at the integration time.
        let leaf_der = single_cert(cert_pem).context("certificate annotation")?;
        let chain: Vec<Vec<u8>> = match c.chain.as_deref() {
            Some(p) => pem::parse_many(p.as_bytes())
                .context("chain annotation is not PEM")?
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| b.into_contents())
                .collect(),
            None => Vec::new(),
        };
        let anchors: Vec<_> = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(&CertificateDer::from(r.as_slice())).map(|a| a.to_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("Fulcio CA: {e:?}"))?;
        let intermediates: Vec<CertificateDer> = chain.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
        let leaf_cd = CertificateDer::from(leaf_der.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf_cd).map_err(|e| anyhow::anyhow!("certificate: {e:?}"))?;
        let when = u64::try_from(bundle.payload.integrated_time).context("negative integratedTime")?;
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(when)),
            webpki::KeyUsage::required(EKU_CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| anyhow::anyhow!("certificate does not chain to the Fulcio CA at the logged time {when}: {e:?}"))?;

        // 3. Identity.
        let cert = x509_cert::Certificate::from_der(&leaf_der).context("parsing the certificate")?;
        let (emails, uris, issuer) = identity_of(&cert)?;
        let id = &self.identity;
        let names: Vec<&String> = match id.kind {
            SanKind::Email => emails.iter().collect(),
            SanKind::Uri => uris.iter().collect(),
            SanKind::Any => emails.iter().chain(&uris).collect(),
        };
        let Some(subject) = names.iter().find(|n| id.subject.matches(n)) else {
            bail!("certificate subject {names:?} is not {} ({})", id.subject, id.kind.describe());
        };
        let issuer = match &issuer {
            Some(i) if id.issuer.matches(i) => i.clone(),
            other => bail!("certificate OIDC issuer {other:?} is not {}", id.issuer),
        };

        // 4. The signature, under the certificate's key.
        let spki = cert.tbs_certificate().subject_public_key_info().to_der().context("certificate key")?;
        let key = CosignVerificationKey::try_from_der(&spki).map_err(|e| anyhow::anyhow!("certificate key: {e}"))?;
        key.verify_signature(Signature::Base64Encoded(c.signature.trim().as_bytes()), &c.payload)
            .map_err(|_| anyhow::anyhow!("signature does not verify under the certificate's key"))?;

        // 5. The log entry is about this signature.
        check_entry(&bundle.payload.body, c, &leaf_der)?;
        Ok(format!(
            "{subject} (OIDC issuer {issuer}, Fulcio certificate, Rekor log index {})",
            bundle.payload.log_index
        ))
    }
}

impl SignatureCheck for Keyless {
    fn check(&self, c: &Candidate) -> Result<String, String> {
        self.check_inner(c).map_err(|e| format!("{e:#}"))
    }
}

fn single_cert(pem_text: &str) -> Result<Vec<u8>> {
    let blocks = pem::parse_many(pem_text.as_bytes()).context("not PEM")?;
    let mut certs = blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE");
    let first = certs.next().context("no PEM certificate")?;
    Ok(first.into_contents())
}

/// The email and URI SANs and the Fulcio OIDC issuer of a certificate.
fn identity_of(cert: &x509_cert::Certificate) -> Result<(Vec<String>, Vec<String>, Option<String>)> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let tbs = cert.tbs_certificate();
    let (mut emails, mut uris) = (Vec::new(), Vec::new());
    if let Some((_, san)) = tbs.get_extension::<SubjectAltName>().context("certificate SAN")? {
        for name in san.0 {
            match name {
                GeneralName::Rfc822Name(e) => emails.push(e.to_string()),
                GeneralName::UniformResourceIdentifier(u) => uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    let mut issuer = None;
    for ext in tbs.extensions().map(|e| e.as_slice()).unwrap_or_default() {
        let oid = ext.extn_id.to_string();
        let value = ext.extn_value.as_bytes();
        if oid == OID_ISSUER_V2 {
            let s = x509_cert::der::asn1::Utf8StringRef::from_der(value).context("issuer (v2) extension")?;
            issuer = Some(s.as_str().to_string());
        } else if oid == OID_ISSUER_V1 && issuer.is_none() {
            issuer = Some(String::from_utf8(value.to_vec()).context("issuer (v1) extension")?);
        }
    }
    Ok((emails, uris, issuer))
}

/// The Rekor entry body must be a `hashedrekord` of this payload's SHA-256,
/// this signature and this certificate.
fn check_entry(body_b64: &str, c: &Candidate, leaf_der: &[u8]) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.decode(body_b64).context("Rekor entry body is not base64")?;
    let body: serde_json::Value = serde_json::from_slice(&body).context("Rekor entry body is not JSON")?;
    let kind = body["kind"].as_str().unwrap_or_default();
    if kind != "hashedrekord" {
        bail!("Rekor entry kind {kind:?} is not supported (hashedrekord expected)");
    }
    let spec = &body["spec"];
    let hash = &spec["data"]["hash"];
    let want_hash = hex::encode(Sha256::digest(&c.payload));
    if hash["algorithm"].as_str() != Some("sha256") || hash["value"].as_str() != Some(want_hash.as_str()) {
        bail!("the Rekor entry is for another payload (hash {})", hash["value"]);
    }
    let logged_sig = spec["signature"]["content"].as_str().unwrap_or_default();
    let same_sig = match (b64.decode(logged_sig), b64.decode(c.signature.trim())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_sig {
        bail!("the Rekor entry is for another signature");
    }
    let logged_key = spec["signature"]["publicKey"]["content"].as_str().unwrap_or_default();
    let logged_pem = b64.decode(logged_key).context("Rekor entry public key is not base64")?;
    let logged_der = single_cert(&String::from_utf8_lossy(&logged_pem)).context("Rekor entry certificate")?;
    if logged_der != leaf_der {
        bail!("the Rekor entry is for another certificate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A local Fulcio stand-in (an openssl CA issuing a code-signing leaf with
    //! an email SAN and the OIDC issuer extension) and a local Rekor key
    //! signing the SET: the whole offline check with real certificates.

    use std::path::Path;
    use std::process::Command;

    use serde_json::json;
    use sigstore::crypto::SigningScheme;

    use super::*;

    const EMAIL: &str = "release@example.com";
    const ISSUER: &str = "https://issuer.example.com";

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA (P-384) and a leaf (P-256) it issued for `email`; returns (ca pem, leaf pem).
    fn pki(dir: &Path, name: &str, email: &str) -> (String, String) {
        let p = |s: &str| format!("{name}-{s}");
        openssl(dir, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", &p("ca.key")]);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "3650",
                "-subj",
                "/O=test/CN=local fulcio",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &p("leaf.key")]);
        openssl(dir, &["req", "-new", "-key", &p("leaf.key"), "-subj", "/", "-out", &p("leaf.csr")]);
        let ext = format!(
            "subjectAltName=critical,email:{email}\nextendedKeyUsage=codeSigning\nkeyUsage=critical,digitalSignature\n\
             1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}\n"
        );
        std::fs::write(dir.join(p("leaf.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &p("leaf.csr"),
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &p("leaf.ext"),
                "-out",
                &p("leaf.pem"),
            ],
        );
        let read = |s: &str| std::fs::read_to_string(dir.join(p(s))).unwrap();
        (read("ca.pem"), read("leaf.pem"))
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ca: String,
        leaf: String,
        rekor: sigstore::crypto::SigStoreSigner,
        rekor_pem: String,
        payload: Vec<u8>,
        signature: String,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let (ca, leaf) = pki(dir.path(), "good", EMAIL);
            let payload = br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":null}"#.to_vec();
            std::fs::write(dir.path().join("payload"), &payload).unwrap();
            openssl(dir.path(), &["dgst", "-sha256", "-sign", "good-leaf.key", "-out", "sig", "payload"]);
            let signature =
                base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.path().join("sig")).unwrap());
            let rekor = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().unwrap();
            let rekor_pem = rekor.to_sigstore_keypair().unwrap().public_key_to_pem().unwrap();
            Fixture { dir, ca, leaf, rekor, rekor_pem, payload, signature }
        }

        /// A bundle whose entry logs `sig`/`cert`/`payload`, signed by the Rekor key.
        fn bundle(&self, sig: &str, cert: &str, payload: &[u8], integrated_time: i64) -> String {
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {"content": sig, "publicKey": {"content": b64.encode(cert)}}}});
            let rekor_spki = self.rekor.to_sigstore_keypair().unwrap().public_key_to_der().unwrap();
            let payload = RekorPayload {
                body: b64.encode(serde_json::to_vec(&body).unwrap()),
                integrated_time,
                log_index: 42,
                log_id: hex::encode(Sha256::digest(&rekor_spki)),
            };
            let set = self.rekor.sign(&serde_json_canonicalizer::to_vec(&payload).unwrap()).unwrap();
            json!({"SignedEntryTimestamp": b64.encode(set), "Payload": payload}).to_string()
        }

        fn candidate(&self, bundle: String) -> Candidate {
            Candidate {
                origin: "test".into(),
                payload: self.payload.clone(),
                signature: self.signature.clone(),
                certificate: Some(self.leaf.clone()),
                chain: Some(self.ca.clone()),
                bundle: Some(bundle),
            }
        }

        fn keyless(&self, ca: &str, issuer: &str, email: &str) -> Keyless {
            Keyless::load(
                &Material::Data(ca.as_bytes().to_vec()),
                &email_identity(issuer, email),
                &[Material::Data(self.rekor_pem.clone().into_bytes())],
            )
            .unwrap()
        }
    }

    fn email_identity(issuer: &str, email: &str) -> CertIdentity {
        CertIdentity {
            kind: SanKind::Email,
            subject: crate::trust::bundle::Match::Exact(email.into()),
            issuer: crate::trust::bundle::Match::Exact(issuer.into()),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn fulcio_style_certificate_with_rekor_bundle_verifies_offline() {
        let f = Fixture::new();
        let good = f.bundle(&f.signature, &f.leaf, &f.payload, now());
        let who = f.keyless(&f.ca, ISSUER, EMAIL).check(&f.candidate(good.clone())).unwrap();
        assert!(who.starts_with(EMAIL) && who.contains("log index 42"), "{who}");

        let fails = |k: &Keyless, c: Candidate, want: &str| {
            let why = k.check(&c).unwrap_err();
            assert!(why.contains(want), "expected {want:?}, got {why:?}");
        };
        let k = f.keyless(&f.ca, ISSUER, EMAIL);
        fails(&f.keyless(&f.ca, ISSUER, "someone@example.com"), f.candidate(good.clone()), "is not someone@");
        fails(&f.keyless(&f.ca, "https://other", EMAIL), f.candidate(good.clone()), "OIDC issuer");
        let (other_ca, _) = pki(f.dir.path(), "other", EMAIL);
        fails(&f.keyless(&other_ca, ISSUER, EMAIL), f.candidate(good.clone()), "does not chain");
        // The SET covers the log index: changing it breaks the SET.
        let tampered = good.replace("\"logIndex\":42", "\"logIndex\":43");
        assert_ne!(tampered, good);
        fails(&k, f.candidate(tampered), "SignedEntryTimestamp does not verify");
        // A log entry made long after the certificate expired.
        fails(&k, f.candidate(f.bundle(&f.signature, &f.leaf, &f.payload, now() + 10 * 86400)), "does not chain");
        // A log entry for another payload, or without a bundle at all.
        fails(&k, f.candidate(f.bundle(&f.signature, &f.leaf, b"other", now())), "another payload");
        let mut no_bundle = f.candidate(good.clone());
        no_bundle.bundle = None;
        fails(&k, no_bundle, "no Rekor bundle");
        // A signature the certificate's key did not make.
        let mut forged = f.candidate(good);
        forged.payload = b"forged".to_vec();
        fails(&k, forged, "does not verify under the certificate's key");
        // A Rekor log the policy does not trust.
        let stranger = Keyless::load(
            &Material::Data(f.ca.clone().into_bytes()),
            &email_identity(ISSUER, EMAIL),
            &[Material::Data(
                SigningScheme::ECDSA_P256_SHA256_ASN1
                    .create_signer()
                    .unwrap()
                    .to_sigstore_keypair()
                    .unwrap()
                    .public_key_to_pem()
                    .unwrap()
                    .into_bytes(),
            )],
        )
        .unwrap();
        fails(&stranger, f.candidate(f.bundle(&f.signature, &f.leaf, &f.payload, now())), "does not trust");
    }
}
