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

/// The verifier for a sysroot's policy (`policy` overrides
/// `<sysroot>/etc/containers/policy.json`); with `enforce`, a policy whose
/// default is `insecureAcceptAnything` is refused.
// CONTRACT (skeleton): the trust work replaces this body with the policy engine.
pub fn verifier_from_policy(
    _sysroot: &std::path::Path,
    _policy: Option<&std::path::Path>,
    _enforce: bool,
) -> Result<std::sync::Arc<dyn ImageVerifier>> {
    anyhow::bail!("trust policy verification is not implemented yet")
}
