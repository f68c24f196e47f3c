//! Room for an app image, checked before podman pulls it: the layers of the
//! image that podman's storage lacks (by compressed digest), their sizes from
//! the registry's manifest, against the free space where podman will put
//! them. A pull that cannot fit is refused with [`InsufficientSpace`] (exit
//! code 6) before a byte is downloaded, so a full disk never starves the apps
//! already running (podman could not even record their health checks).
//!
//! The estimate is the OS pull's ([`crate::deploy::preflight`]): a missing
//! compressed layer unpacks to [`preflight::UNCOMPRESSED_RATIO`] times its
//! size in the graph root, plus a margin; and podman keeps the compressed
//! blob in its temporary directory until it is unpacked, so that much more is
//! needed there (the two add up when they share a filesystem). Free space is
//! what unprivileged writers may use, as for the OS, so root's reserve is
//! left to the running system. When the image's layers cannot be found out
//! (a short name, an unreachable registry) nothing is refused: the pull
//! itself then says what is wrong, and a disk filled by it still ends in exit
//! code 6 ([`crate::host::podman`]).

use anyhow::{bail, Result};

use crate::deploy::preflight::{self, MissingLayer};
use crate::error::InsufficientSpace;
use crate::host::podman::{Podman, Storage};
use crate::imgref::ImageRef;
use crate::oci::registry::RegistrySource;
use crate::oci::{ImageSource, RegistryOptions};

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

/// Where the layers of an image come from.
pub trait ImageLayers: Send + Sync {
    /// The layers of the image `reference` names, for this host's platform.
    fn layers(&self, reference: &str) -> Result<Vec<LayerBlob>>;
}

/// The real thing: the manifest from the registry, through hostctl's
/// registry client (auth.json, certs.d, registries.conf, as podman reads
/// them), on a thread of its own so that it can be called from sync code
/// and from within the async runtime alike.
pub struct RegistryLayers(pub RegistryOptions);

impl ImageLayers for RegistryLayers {
    fn layers(&self, reference: &str) -> Result<Vec<LayerBlob>> {
        let ImageRef::Registry(r) = reference.parse::<ImageRef>()? else {
            bail!("{reference} is not a registry reference");
        };
        let opts = self.0.clone();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<Vec<LayerBlob>> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let source = RegistrySource::new(r, &opts)?;
                    let resolved = source.resolve(&crate::oci::platform::Platform::host()).await?;
                    Ok(resolved
                        .manifest
                        .layers()
                        .iter()
                        .map(|d| LayerBlob {
                            digest: d.digest().to_string(),
                            size: d.size(),
                            compressed: preflight::is_compressed(d.media_type().as_ref()),
                        })
                        .collect())
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("reading the manifest of {reference} panicked"))?
        })
    }
}

/// What a pull of an image needs: bytes in the graph root and in the
/// temporary directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Layers podman's storage lacks.
    pub missing: usize,
    /// Bytes the unpacked layers need in the graph root (with the margin).
    pub graphroot: u64,
    /// Bytes the downloaded blobs need in the temporary directory.
    pub tmpdir: u64,
}

/// What pulling `layers` into `storage` needs.
pub fn need(layers: &[LayerBlob], storage: &Storage) -> Need {
    let missing: Vec<&LayerBlob> = layers.iter().filter(|l| !storage.layers.contains(&l.digest)).collect();
    let unpacked: Vec<MissingLayer> =
        missing.iter().map(|l| MissingLayer { compressed_size: l.size, compressed: l.compressed }).collect();
    Need {
        missing: missing.len(),
        graphroot: if missing.is_empty() { 0 } else { preflight::store_need(&unpacked) },
        tmpdir: missing.iter().map(|l| l.size).sum(),
    }
}

/// Refuses with [`InsufficientSpace`] when pulling `reference` into
/// podman's storage cannot fit; `Ok` when it can, or when what it needs
/// cannot be told (then the reason is logged).
pub fn ensure(podman: &dyn Podman, source: &dyn ImageLayers, reference: &str) -> Result<()> {
    let layers = match source.layers(reference) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("no space check before pulling {reference}: its layers are not known: {e:#}");
            return Ok(());
        }
    };
    let storage = podman.storage()?;
    let need = need(&layers, &storage);
    if need.missing == 0 {
        return Ok(());
    }
    let graph = preflight::free(&storage.graphroot)?;
    let tmp = preflight::free(&storage.tmpdir)?;
    tracing::debug!(
        "{reference}: {} of {} layers to pull, {} bytes needed in {} ({} free), {} in {} ({} free)",
        need.missing,
        layers.len(),
        need.graphroot,
        graph.path.display(),
        graph.available,
        need.tmpdir,
        tmp.path.display(),
        tmp.available
    );
    preflight::check(need.graphroot, &graph, need.tmpdir, &tmp).map_err(|e: InsufficientSpace| {
        anyhow::Error::new(e).context(format!(
            "not pulling {reference}: its {} missing layer(s), {} bytes compressed, do not fit",
            need.missing, need.tmpdir
        ))
    })
}

#[cfg(test)]
pub mod testing {
    //! A fixed answer for the unit tests.
    use super::*;
    use std::collections::HashMap;

    /// reference -> its layers; absent: not known (no check).
    #[derive(Default)]
    pub struct FakeLayers(pub HashMap<String, Vec<LayerBlob>>);

    impl ImageLayers for FakeLayers {
        fn layers(&self, reference: &str) -> Result<Vec<LayerBlob>> {
            match self.0.get(reference) {
                Some(l) => Ok(l.clone()),
                None => bail!("{reference}: manifest unknown"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeLayers;
    use super::*;
    use crate::host::podman::FakePodman;

    fn blob(digest: &str, size: u64) -> LayerBlob {
        LayerBlob { digest: digest.into(), size, compressed: true }
    }

    #[test]
    fn need_counts_only_the_layers_podman_lacks() {
        let storage = Storage { layers: ["sha256:a".to_string()].into(), ..Default::default() };
        let layers =
            [blob("sha256:a", 100), blob("sha256:b", 10), LayerBlob { compressed: false, ..blob("sha256:c", 7) }];
        let n = need(&layers, &storage);
        assert_eq!(n.missing, 2);
        assert_eq!(n.graphroot, 10 * preflight::UNCOMPRESSED_RATIO + 7 + preflight::MARGIN);
        assert_eq!(n.tmpdir, 17);
        assert_eq!(need(&layers[..1], &storage), Need { missing: 0, graphroot: 0, tmpdir: 0 });
    }

    #[test]
    fn a_pull_that_cannot_fit_is_refused_with_exit_6_and_one_that_can_or_cannot_be_told_is_not() {
        let d = tempfile::tempdir().unwrap();
        let podman = FakePodman::new();
        podman.state.lock().unwrap().storage =
            Storage { graphroot: d.path().join("storage"), tmpdir: d.path().join("tmp"), layers: Default::default() };
        let free = preflight::free(d.path()).unwrap().available;
        let mut source = FakeLayers::default();
        source.0.insert("r/huge:1".into(), vec![blob("sha256:h", free)]);
        source.0.insert("r/small:1".into(), vec![blob("sha256:s", 1000)]);

        let err = ensure(&podman, &source, "r/huge:1").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::code::NO_SPACE, "{err:#}");
        let text = format!("{err:#}");
        assert!(
            text.contains("not pulling r/huge:1: its 1 missing layer(s)") && text.contains("not enough space"),
            "{text}"
        );
        ensure(&podman, &source, "r/small:1").unwrap();
        ensure(&podman, &source, "r/unknown:1").unwrap();
        // Held already: nothing to pull, nothing to check.
        podman.state.lock().unwrap().storage.layers.insert("sha256:h".into());
        ensure(&podman, &source, "r/huge:1").unwrap();
    }
}
