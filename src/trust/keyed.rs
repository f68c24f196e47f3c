//! Keyed signatures: public keys from the policy (`keyPath`, `keyPaths`,
//! `keyData`, `keyDatas`) checking the signature over a candidate's payload.
//!
//! Key types are those cosign produces or imports: ECDSA P-256 (cosign's
//! default), P-384 and P-521, RSA (PKCS#1 v1.5 with SHA-256) and Ed25519; the
//! cryptography is the `sigstore` crate's `CosignVerificationKey`.

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::cosign::Candidate;
use super::policy::Material;
use super::SignatureCheck;

/// A public key the policy trusts.
pub struct TrustedKey {
    key: CosignVerificationKey,
    /// The key's SubjectPublicKeyInfo DER.
    pub der: Vec<u8>,
    /// `SHA256:<hex>` of the key's SubjectPublicKeyInfo DER.
    pub fingerprint: String,
    /// Where the policy named it.
    pub origin: String,
}

impl TrustedKey {
    /// Every `PUBLIC KEY` block of a PEM file or inline data.
    pub fn load(material: &Material) -> Result<Vec<TrustedKey>> {
        let bytes = material.load()?;
        let origin = material.describe();
        let blocks = pem::parse_many(&bytes).with_context(|| format!("{origin}: not PEM"))?;
        let mut keys = Vec::new();
        for block in blocks.iter().filter(|b| b.tag() == "PUBLIC KEY") {
            keys.push(TrustedKey::from_spki_der(block.contents(), &origin)?);
        }
        if keys.is_empty() {
            bail!("{origin}: no PEM \"PUBLIC KEY\" block (cosign.pub format expected)");
        }
        Ok(keys)
    }

    /// A key from SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8], origin: &str) -> Result<TrustedKey> {
        let key = CosignVerificationKey::try_from_der(der)
            .map_err(|e| anyhow::anyhow!("{origin}: unsupported or invalid public key: {e}"))?;
        Ok(TrustedKey { key, der: der.to_vec(), fingerprint: fingerprint(der), origin: origin.to_string() })
    }

    /// Whether `signature_b64` signs `payload` under this key.
    pub fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        self.key.verify_signature(Signature::Base64Encoded(signature_b64.trim().as_bytes()), payload).is_ok()
    }
}

/// `SHA256:<hex>` of DER bytes, the fingerprint shown for keys.
pub fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(Sha256::digest(der)))
}

/// Accepts candidates signed by any one of a set of keys.
pub struct KeySet {
    /// The trusted keys: any one of them may have signed.
    pub keys: Vec<TrustedKey>,
}

impl KeySet {
    /// Loads every key a `sigstoreSigned` requirement names.
    pub fn load(materials: &[Material]) -> Result<KeySet> {
        let mut keys = Vec::new();
        for m in materials {
            keys.extend(TrustedKey::load(m)?);
        }
        Ok(KeySet { keys })
    }
}

impl SignatureCheck for KeySet {
    fn check(&self, c: &Candidate) -> Result<String, String> {
        for k in &self.keys {
            if k.verifies(&c.payload, &c.signature) {
                return Ok(format!("key {} ({})", k.fingerprint, k.origin));
            }
        }
        Err("not signed by any trusted key".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigstore::crypto::SigningScheme;

    fn candidate(payload: &[u8], signature: String) -> Candidate {
        Candidate {
            origin: "test".into(),
            payload: payload.to_vec(),
            signature,
            certificate: None,
            chain: None,
            bundle: None,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn each_cosign_key_type_verifies_and_other_keys_do_not() {
        for scheme in [
            SigningScheme::ECDSA_P256_SHA256_ASN1,
            SigningScheme::ECDSA_P384_SHA384_ASN1,
            SigningScheme::ED25519,
            SigningScheme::RSA_PKCS1_SHA256(2048),
        ] {
            let signer = scheme.create_signer().unwrap();
            let other = scheme.create_signer().unwrap();
            let pem = signer.to_sigstore_keypair().unwrap().public_key_to_pem().unwrap();
            let keys = KeySet::load(&[Material::Data(pem.into_bytes())]).unwrap();
            let sig = b64(&signer.sign(b"payload").unwrap());
            let who = keys.check(&candidate(b"payload", sig.clone())).unwrap();
            assert!(who.starts_with("key SHA256:"), "{who}");
            assert!(keys.check(&candidate(b"payload2", sig)).is_err(), "{scheme:?}: other payload");
            let forged = b64(&other.sign(b"payload").unwrap());
            assert_eq!(keys.check(&candidate(b"payload", forged)).unwrap_err(), "not signed by any trusted key");
            assert!(keys.check(&candidate(b"payload", "%%%".into())).is_err());
        }
    }

    #[test]
    fn key_files_without_public_keys_are_errors() {
        let err = KeySet::load(&[Material::Data(b"hello".to_vec())]).err().unwrap();
        assert!(format!("{err:#}").contains("inline keyData"), "{err:#}");
        let priv_only =
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let err = KeySet::load(&[Material::Data(priv_only.to_vec())]).err().unwrap();
        assert!(format!("{err:#}").contains("no PEM \"PUBLIC KEY\" block"), "{err:#}");
    }
}
