//! What an app's image reference names at its registry now, asked once
//! through hostctl's own registry client (auth.json, certs.d,
//! registries.conf, as podman reads them) before podman runs: the manifest
//! digests, the layers, and whether the trust policy accepts the image.
//!
//! Two decisions hang on it. The space check ([`super::room`]) weighs the
//! layers podman's storage lacks. And `app install` skips `podman pull`
//! when the image podman holds under that name already is the registry's
//! ([`RemoteImage::pull_changes_nothing`]): a pull would fetch the same
//! manifest, find every layer present and run the policy check, which has
//! been run here. The policy check here is hostctl's own, the one that
//! guards OS images, over the same `policy.json` podman reads; it is only
//! asked when that file exists, and anything it cannot accept (a refusal,
//! a requirement it does not implement, a signature it cannot find) leaves
//! the decision to podman's pull, so podman's verdict stays the one that
//! refuses an image (exit code 4).

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::deploy::preflight;
use crate::host::podman::ImageInfo;
use crate::imgref::ImageRef;
use crate::oci::registry::RegistrySource;
use crate::oci::{ImageSource, RegistryOptions};
use crate::trust::{ImageVerifier, Verdict};

/// A layer of an image, as the registry's manifest gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Its digest (`sha256:…`), as it is downloaded.
    pub digest: String,
    /// Its size as downloaded, in bytes.
    pub size: u64,
    /// False for a plain (uncompressed) tar layer.
    pub compressed: bool,
}

/// An image as its registry gives it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteImage {
    /// The digests the reference resolves to: the platform manifest's, then
    /// the index's when the reference names an index.
    pub digests: Vec<String>,
    /// The platform manifest's layers.
    pub layers: Vec<LayerBlob>,
    /// The trust policy's verdict when it accepted the image; `None` when it
    /// was not asked or did not accept (podman's pull decides then).
    pub accepted: Option<Verdict>,
}

impl RemoteImage {
    /// The policy's verdict when pulling the reference would leave podman's
    /// image `local` (the one it holds under that name) as it is: the
    /// registry's manifest is the one `local` was pulled by, and the policy
    /// accepted it. `None`: a pull could change something, or only podman's
    /// pull may decide.
    pub fn pull_changes_nothing(&self, local: &ImageInfo) -> Option<&Verdict> {
        self.accepted.as_ref().filter(|_| local.digests().iter().any(|d| self.digests.contains(d)))
    }
}

/// Where app images are looked up.
pub trait RemoteImages: Send + Sync {
    /// The image `reference` names now, for this host's platform.
    fn look(&self, reference: &str) -> Result<RemoteImage>;
}

/// The real thing: the registry, and the trust policy when there is one.
pub struct RegistryImages {
    /// How the registry is reached.
    pub options: RegistryOptions,
    /// The policy's verifier; `None` when there is no policy file (podman
    /// refuses every pull then, so no pull is ever skipped).
    pub verifier: Option<Arc<dyn ImageVerifier>>,
}

impl RemoteImages for RegistryImages {
    fn look(&self, reference: &str) -> Result<RemoteImage> {
        let imgref = reference.parse::<ImageRef>()?;
        let ImageRef::Registry(r) = imgref.clone() else {
            bail!("{reference} is not a registry reference");
        };
        let (opts, verifier) = (self.options.clone(), self.verifier.clone());
        // On a thread of its own, so that it can be called from sync code
        // and from within the async runtime alike.
        std::thread::scope(|s| {
            s.spawn(move || -> Result<RemoteImage> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let started = std::time::Instant::now();
                    let source = RegistrySource::new(r, &opts)?;
                    let resolved = source.resolve(&crate::oci::platform::Platform::host()).await?;
                    let resolved_in = started.elapsed();
                    let mut digests = vec![resolved.raw.digest.to_string()];
                    digests.extend(resolved.index_digest.iter().map(|d| d.to_string()));
                    let layers = resolved
                        .manifest
                        .layers()
                        .iter()
                        .map(|d| LayerBlob {
                            digest: d.digest().to_string(),
                            size: d.size(),
                            compressed: preflight::is_compressed(d.media_type().as_ref()),
                        })
                        .collect();
                    let accepted = match verifier {
                        None => None,
                        Some(v) => match v.verify(&imgref, &resolved, &source).await {
                            Ok(verdict) => Some(verdict),
                            Err(e) => {
                                tracing::debug!("{reference}: hostctl's policy check did not accept it: {e:#}");
                                None
                            }
                        },
                    };
                    tracing::debug!(
                        "{reference}: looked up at its registry in {:?}, the policy asked in {:?}",
                        resolved_in,
                        started.elapsed() - resolved_in
                    );
                    Ok(RemoteImage { digests, layers, accepted })
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("looking up {reference} at its registry panicked"))?
        })
    }
}

#[cfg(test)]
pub mod testing {
    //! A fixed answer for the unit tests.
    use super::*;
    use std::collections::HashMap;

    /// reference -> what the registry says; absent: not known.
    #[derive(Default)]
    pub struct FakeRemote(pub HashMap<String, RemoteImage>);

    impl FakeRemote {
        /// One image whose layers are `layers`, not checked against a policy.
        pub fn with_layers(reference: &str, layers: Vec<LayerBlob>) -> Self {
            FakeRemote([(reference.to_string(), RemoteImage { layers, ..Default::default() })].into())
        }
    }

    impl RemoteImages for FakeRemote {
        fn look(&self, reference: &str) -> Result<RemoteImage> {
            match self.0.get(reference) {
                Some(r) => Ok(r.clone()),
                None => bail!("{reference}: manifest unknown"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::podman::fake_image;

    #[test]
    fn a_pull_changes_nothing_only_for_the_same_digest_accepted_by_the_policy() {
        let verdict =
            Verdict { rule: "default: insecureAcceptAnything".into(), signature_verified: false, signers: vec![] };
        let local = ImageInfo {
            repo_digests: Some(vec!["r.io/app@sha256:index".into()]),
            ..fake_image("id1", "sha256:instance")
        };
        let remote = |digests: &[&str], accepted: Option<Verdict>| RemoteImage {
            digests: digests.iter().map(|d| d.to_string()).collect(),
            layers: vec![],
            accepted,
        };
        let by_instance = remote(&["sha256:instance"], Some(verdict.clone()));
        assert_eq!(by_instance.pull_changes_nothing(&local), Some(&verdict));
        // Known by its index's digest too (podman keeps both).
        assert!(remote(&["sha256:other", "sha256:index"], Some(verdict.clone()))
            .pull_changes_nothing(&local)
            .is_some());
        // The tag moved on.
        assert!(remote(&["sha256:newer"], Some(verdict)).pull_changes_nothing(&local).is_none());
        // The same image, but the policy was not asked or did not accept it.
        assert!(remote(&["sha256:instance"], None).pull_changes_nothing(&local).is_none());
    }
}
