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

use anyhow::Result;

use super::remote::LayerBlob;
use crate::deploy::preflight::{self, MissingLayer};
use crate::error::InsufficientSpace;
use crate::host::podman::{Podman, Storage};

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
    // A blob the manifest lists twice is downloaded once.
    let mut seen = std::collections::HashSet::new();
    let missing: Vec<&LayerBlob> =
        layers.iter().filter(|l| !storage.layers.contains(&l.digest) && seen.insert(&l.digest)).collect();
    let unpacked: Vec<MissingLayer> =
        missing.iter().map(|l| MissingLayer { compressed_size: l.size, compressed: l.compressed }).collect();
    Need {
        missing: missing.len(),
        graphroot: if missing.is_empty() { 0 } else { preflight::store_need(&unpacked) },
        tmpdir: missing.iter().map(|l| l.size).sum(),
    }
}

/// Refuses with [`InsufficientSpace`] when pulling `reference`, whose
/// layers are `layers`, into podman's storage cannot fit.
pub fn ensure(podman: &dyn Podman, layers: &[LayerBlob], reference: &str) -> Result<()> {
    let storage = podman.storage()?;
    let need = need(layers, &storage);
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
mod tests {
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
        // Listed twice: counted once.
        let twice = [blob("sha256:b", 10), blob("sha256:b", 10)];
        assert_eq!(need(&twice, &storage), need(&twice[..1], &storage));
    }

    #[test]
    fn a_pull_that_cannot_fit_is_refused_with_exit_6_and_one_that_can_is_not() {
        let d = tempfile::tempdir().unwrap();
        let podman = FakePodman::new();
        podman.state.lock().unwrap().storage =
            Storage { graphroot: d.path().join("storage"), tmpdir: d.path().join("tmp"), layers: Default::default() };
        let free = preflight::free(d.path()).unwrap().available;
        let (huge, small) = ([blob("sha256:h", free)], [blob("sha256:s", 1000)]);

        let err = ensure(&podman, &huge, "r/huge:1").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::code::NO_SPACE, "{err:#}");
        let text = format!("{err:#}");
        assert!(
            text.contains("not pulling r/huge:1: its 1 missing layer(s)") && text.contains("not enough space"),
            "{text}"
        );
        ensure(&podman, &small, "r/small:1").unwrap();
        // Held already: nothing to pull, nothing to check.
        podman.state.lock().unwrap().storage.layers.insert("sha256:h".into());
        ensure(&podman, &huge, "r/huge:1").unwrap();
    }
}
