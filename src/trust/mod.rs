//! Trust: containers-policy.json policies and sigstore/cosign signature checks,
//! deciding whether an image may be deployed.
//!
//! `pull` calls [`ImageVerifier::verify`] after the manifest is fetched and
//! before any layer is committed. The policy engine ([`policy`],
//! [`identity`]) and the signature search ([`cosign`]) are plain logic; the
//! cryptography ([`keyed`], [`keyless`]) sits behind [`SignatureCheck`] so
//! [`verifier`] can be tested with fakes as well as with real keys.

pub mod bundle;
pub mod cosign;
pub mod identity;
pub mod keyed;
pub mod keyless;
pub mod policy;
pub mod tuf;
pub mod verifier;

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::imgref::ImageRef;
use crate::oci::{ImageSource, ResolvedManifest};

/// The pinned sigstore trusted root, relative to the sysroot: Fulcio CAs,
/// Rekor and CT log keys and timestamp authorities for bundle signatures.
pub const PINNED_TRUSTED_ROOT: &str = "etc/hostctl/sigstore/trusted_root.json";

/// The outcome of a successful verification, stored with the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The policy rule that accepted the image: the scope and its requirement
    /// types (e.g. `docker scope "r.io/os": sigstoreSigned`).
    pub rule: String,
    /// Whether a signature was checked (false for insecureAcceptAnything).
    #[serde(alias = "signature_verified")]
    pub signature_verified: bool,
    /// Who signed: key fingerprint or certificate identity, and the identity
    /// signed, one per satisfied `sigstoreSigned` requirement.
    pub signers: Vec<String>,
}

/// Decides whether an image may be used. Errors with
/// [`crate::error::PolicyRejected`] when the policy refuses it.
#[async_trait]
pub trait ImageVerifier: Send + Sync {
    /// Checks `resolved` against the policy for `imgref`; an error when it is rejected.
    async fn verify(&self, imgref: &ImageRef, resolved: &ResolvedManifest, source: &dyn ImageSource)
        -> Result<Verdict>;
}

/// The cryptographic check of one found signature: `Ok(who signed)` or
/// `Err(why not)`. Payload contents (digest, identity) are checked by the caller.
pub trait SignatureCheck: Send + Sync {
    /// The signer's identity if `candidate`'s signature checks out, else why not.
    fn check(&self, candidate: &cosign::Candidate) -> Result<String, String>;
}

/// Accepts every image: what a missing policy file means (see docs/trust.md).
pub struct AcceptAnything;

#[async_trait]
impl ImageVerifier for AcceptAnything {
    async fn verify(
        &self,
        _imgref: &ImageRef,
        _resolved: &ResolvedManifest,
        _source: &dyn ImageSource,
    ) -> Result<Verdict> {
        Ok(Verdict {
            rule: "insecureAcceptAnything (no policy file)".into(),
            signature_verified: false,
            signers: Vec::new(),
        })
    }
}

/// The verifier for a sysroot's policy (`policy` overrides
/// `<sysroot>/etc/containers/policy.json`). With no policy file at all every
/// image is accepted, unless `enforce` is set, which also refuses a policy
/// whose default is `insecureAcceptAnything`. A policy given with `--policy`
/// must exist.
pub fn verifier_from_policy(sysroot: &Path, policy: Option<&Path>, enforce: bool) -> Result<Arc<dyn ImageVerifier>> {
    let path = policy.map(Path::to_path_buf).unwrap_or_else(|| sysroot.join("etc/containers/policy.json"));
    if !path.exists() && policy.is_none() {
        ensure!(!enforce, "--enforce-signature-policy: no policy file at {}", path.display());
        tracing::info!("no trust policy at {}: any image is accepted", path.display());
        return Ok(Arc::new(AcceptAnything));
    }
    tracing::info!("trust policy {}", path.display());
    let parsed = policy::Policy::load(&path)?;
    if enforce {
        ensure!(
            !parsed.default.contains(&policy::Requirement::InsecureAcceptAnything),
            "--enforce-signature-policy: the default of {} is insecureAcceptAnything",
            path.display()
        );
    }
    Ok(Arc::new(verifier::PolicyVerifier::new(parsed).with_pinned_root(sysroot.join(PINNED_TRUSTED_ROOT))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforce_refuses_missing_and_accept_anything_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert!(verifier_from_policy(dir.path(), None, false).is_ok());
        let err = verifier_from_policy(dir.path(), None, true).err().unwrap();
        assert!(err.to_string().contains("no policy file"), "{err}");
        let p = dir.path().join("p.json");
        std::fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        assert!(verifier_from_policy(dir.path(), Some(&p), false).is_ok());
        let err = verifier_from_policy(dir.path(), Some(&p), true).err().unwrap();
        assert!(err.to_string().contains("is insecureAcceptAnything"), "{err}");
        std::fs::write(&p, r#"{"default":[{"type":"reject"}]}"#).unwrap();
        assert!(verifier_from_policy(dir.path(), Some(&p), true).is_ok());
        // The sysroot's own policy is the default one.
        std::fs::create_dir_all(dir.path().join("etc/containers")).unwrap();
        std::fs::write(dir.path().join("etc/containers/policy.json"), r#"{"default":[{"type":"reject"}]}"#).unwrap();
        assert!(verifier_from_policy(dir.path(), None, true).is_ok());
        std::fs::write(dir.path().join("etc/containers/policy.json"), "{").unwrap();
        let err = verifier_from_policy(dir.path(), None, false).err().unwrap();
        assert!(format!("{err:#}").contains("etc/containers/policy.json"), "{err:#}");
        let missing = dir.path().join("missing.json");
        let err = verifier_from_policy(dir.path(), Some(&missing), false).err().unwrap();
        assert!(format!("{err:#}").contains("missing.json"), "{err:#}");
    }
}
