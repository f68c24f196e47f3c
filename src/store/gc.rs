//! Garbage collection: everything reachable from the recorded images and the
//! caller's roots (deployments) stays; other blobs, layer indexes, by-blob
//! aliases and objects are removed.
//!
//! Reachability is decided first ([`reachable`], a function of the roots and
//! the indexes it reads), removal second. The caller holds the sysroot lock:
//! gc must not run while an import is in flight, or it would remove the
//! objects of a layer that is not committed yet.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::digest::Digest;
use crate::store::{EntryKind, GcRoots, GcStats, ImageRecord, ObjectId};

/// What must be kept.
#[derive(Debug, Default)]
pub struct Reachable {
    /// Blobs to keep, by digest.
    pub blobs: HashSet<Digest>,
    /// Layer indexes to keep, by diff ID.
    pub diff_ids: HashSet<Digest>,
    /// Objects to keep.
    pub objects: HashSet<ObjectId>,
}

/// Computes what `roots` and `images` reach; `read_index` loads a layer's
/// index (None when it is not in the store).
pub fn reachable(
    roots: &GcRoots,
    images: &[ImageRecord],
    mut read_index: impl FnMut(&Digest) -> Result<Option<crate::store::LayerIndex>>,
) -> Result<Reachable> {
    let mut r = Reachable::default();
    r.blobs.extend(roots.blobs.iter().cloned());
    r.diff_ids.extend(roots.diff_ids.iter().cloned());
    for image in images {
        r.blobs.insert(image.manifest_digest.clone());
        r.blobs.insert(image.config_digest.clone());
        r.blobs.extend(image.index_digest.iter().cloned());
        r.diff_ids.extend(image.layers.iter().cloned());
    }
    for diff_id in &r.diff_ids {
        if let Some(index) = read_index(diff_id)? {
            for entry in index.entries {
                if let EntryKind::File { object, .. } = entry.kind {
                    r.objects.insert(object);
                }
            }
        }
    }
    Ok(r)
}

/// Removes what `keep` does not hold from the repository at `repo`.
pub fn sweep(repo: &Path, keep: &Reachable) -> Result<GcStats> {
    let mut stats = GcStats::default();

    let blobs = repo.join("blobs").join("sha256");
    for_each_file(&blobs, |name, path, size| {
        let keep_it = format!("sha256:{name}").parse::<Digest>().map(|d| keep.blobs.contains(&d)).unwrap_or(false);
        if !keep_it {
            crate::fsutil::remove_file_if_present(path)?;
            stats.blobs += 1;
            stats.bytes += size;
        }
        Ok(())
    })?;

    let layers = repo.join("layers");
    for_each_file(&layers, |name, path, size| {
        let diff_id = name.strip_suffix(".json").and_then(|h| format!("sha256:{h}").parse::<Digest>().ok());
        if !diff_id.map(|d| keep.diff_ids.contains(&d)).unwrap_or(false) {
            crate::fsutil::remove_file_if_present(path)?;
            stats.layers += 1;
            stats.bytes += size;
        }
        Ok(())
    })?;

    // Aliases whose layer is gone go too.
    for_each_file(&layers.join("by-blob"), |_, path, _| {
        let target = fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<Digest>().ok());
        if !target.map(|d| keep.diff_ids.contains(&d)).unwrap_or(false) {
            crate::fsutil::remove_file_if_present(path)?;
        }
        Ok(())
    })?;

    let objects = repo.join("objects");
    for fan in fs::read_dir(&objects).with_context(|| format!("listing {}", objects.display()))? {
        let fan = fan?;
        let prefix = fan.file_name().to_string_lossy().into_owned();
        if !fan.file_type()?.is_dir() {
            continue;
        }
        for_each_file(&fan.path(), |rest, path, size| {
            if !keep.objects.contains(&ObjectId(format!("{prefix}{rest}"))) {
                crate::fsutil::remove_file_if_present(path)?;
                stats.objects += 1;
                stats.bytes += size;
            }
            Ok(())
        })?;
    }
    Ok(stats)
}

/// Calls `f(name, path, size)` for each non-directory entry directly in `dir`.
fn for_each_file(dir: &Path, mut f: impl FnMut(&str, &Path, u64) -> Result<()>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        f(&name, &entry.path(), meta.size())?;
    }
    Ok(())
}
