//! Trust: containers-policy.json policies and sigstore/cosign signature checks,
//! deciding whether an image may be deployed.
// CONTRACT (skeleton): the trust work replaces this with the real policy
// engine and may reshape `Verdict`; pull calls `ImageVerifier::verify` after
// the manifest is fetched and before any layer is committed.

use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::imgref::ImageRef;
use crate::oci::{ImageSource, ResolvedManifest};

/// The outcome of a successful verification, stored with the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The policy requirement that accepted the image (e.g. `insecureAcceptAnything`).
    pub rule: String,
    /// Whether a signature was checked (false for insecureAcceptAnything).
    pub signature_verified: bool,
    /// Who signed: key fingerprint or certificate identity, one per accepted signature.
    pub signers: Vec<String>,
}

/// Decides whether an image may be used. Errors with
/// [`crate::error::PolicyRejected`] when the policy refuses it.
#[async_trait]
pub trait ImageVerifier: Send + Sync {
    async fn verify(&self, imgref: &ImageRef, resolved: &ResolvedManifest, source: &dyn ImageSource)
        -> Result<Verdict>;
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
/// whose default is `insecureAcceptAnything`.
// CONTRACT (skeleton): the trust work fills in the policy engine.
pub fn verifier_from_policy(
    sysroot: &std::path::Path,
    policy: Option<&std::path::Path>,
    enforce: bool,
) -> Result<std::sync::Arc<dyn ImageVerifier>> {
    let path = policy.map(std::path::Path::to_path_buf).unwrap_or_else(|| sysroot.join("etc/containers/policy.json"));
    if !path.exists() && policy.is_none() {
        anyhow::ensure!(!enforce, "--enforce-signature-policy: no policy file at {}", path.display());
        return Ok(std::sync::Arc::new(AcceptAnything));
    }
    anyhow::bail!("trust policy {} cannot be enforced yet: policy verification is not implemented", path.display())
}
