//! The `Store` handle: opening the repository and reading and writing blobs,
//! layer indexes, objects and image records.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::format;
use crate::fsutil::remove_file_if_present;
use crate::store::layer_index::LAYER_INDEX_VERSION;
use crate::store::objects::Claims;
use crate::store::tarsafe::Limits;
use crate::store::{blobs, durability, gc, images, import, objects, EntryKind, LayerIndex, ObjectId};
use crate::sysroot::Sysroot;

/// What the pipeline needs to know about a layer before reading it.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// The compressed blob's digest.
    pub blob_digest: Digest,
    /// The blob's size, in bytes.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
}

/// An image the store holds, by the reference it was pulled as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The reference it was pulled by.
    pub imgref: String,
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The config's digest.
    pub config_digest: Digest,
    /// The index's digest, when pulled through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// RFC 3339.
    pub pulled_at: String,
    /// diff_ids in layer order.
    pub layers: Vec<Digest>,
}

/// Roots for garbage collection: everything reachable from these stays.
#[derive(Clone, Debug, Default)]
pub struct GcRoots {
    /// Blobs to keep, by digest.
    pub blobs: Vec<Digest>,
    /// Layers to keep, by diff ID.
    pub diff_ids: Vec<Digest>,
}

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcStats {
    /// Blobs removed.
    pub blobs: u64,
    /// Layer indexes removed.
    pub layers: u64,
    /// Objects removed.
    pub objects: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// What [`Store::recover`] found of the layers an earlier boot committed but
/// never synced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Layers whose objects were re-hashed.
    pub layers_checked: usize,
    /// Layers dropped because objects did not survive (pulled again next time).
    pub layers_dropped: Vec<Digest>,
    /// Objects that were missing or no longer matched their ids (removed).
    pub objects_lost: usize,
}

/// An open content store.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    claims: Arc<Claims>,
    limits: Limits,
}

impl Store {
    /// Opens (creating if needed) the store of `sysroot`, clearing leftovers of interrupted writes.
    pub fn open(sysroot: &Sysroot) -> Result<Store> {
        format::check_sysroot(&sysroot.hostctl_dir())?;
        Store::open_dir(&sysroot.repo_dir())
    }

    /// Opens (creating if needed) the store in the repository directory `dir`.
    ///
    /// A store written by a newer hostctl is refused before anything is
    /// touched; an older one is migrated in place (docs/store.md, "Format
    /// versions"): a store without a marker is format 1, unless it is new.
    pub fn open_dir(dir: &Path) -> Result<Store> {
        let marker = format::read_store_marker(dir)?;
        let version = match &marker {
            Some(m) => {
                let path = dir.join(format::STORE_MARKER);
                format::refuse_newer(&path, "store", m.version, format::STORE_VERSION, m.written_by.as_deref())?;
                m.version
            }
            None if is_new_store(dir)? => 0,
            None => 1,
        };
        for sub in ["blobs/sha256", "layers/by-blob", "objects", "images", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // "": the repository itself, where the format marker is written.
        for sub in ["tmp", "blobs/sha256", "layers", "layers/by-blob", "images", ""] {
            clear_leftovers(&dir.join(sub), sub == "tmp")?;
        }
        if version == 0 {
            format::write_store_marker(dir, format::STORE_VERSION)?;
        } else if version < format::STORE_VERSION {
            format::migrate(dir, version, format::STORE_STEPS)?;
        }
        Ok(Store { dir: dir.to_path_buf(), claims: Arc::default(), limits: Limits::default() })
    }

    /// The same store with other import limits (tests use small ones).
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.limits = limits;
        self
    }

    /// The repository directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the layer is already indexed (by diff_id, or by compressed digest).
    pub fn has_layer(&self, blob: &Digest, diff_id: &Digest) -> bool {
        if self.index_path(diff_id).is_file() {
            return true;
        }
        // An alias naming another diff_id than the config says is no match:
        // the import would then fail its diff_id check, as it should.
        match fs::read_to_string(self.alias_path(blob)) {
            Ok(s) => {
                s.trim().parse::<Digest>().map(|d| d == *diff_id && self.index_path(&d).is_file()).unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// [`Store::has_layer`], for a pull that may build the layer from a
    /// zstd:chunked TOC (`toc`): an index built from a TOC stands for the
    /// layer only for a pull of that same TOC, and never when the full layer
    /// digest is required (it was not computed); an index built from the
    /// whole blob stands for every pull (docs/store.md, "Partial pulls").
    pub fn has_layer_for(&self, blob: &Digest, diff_id: &Digest, toc: Option<&Digest>, require_full: bool) -> bool {
        if !self.has_layer(blob, diff_id) {
            return false;
        }
        match self.layer_index(diff_id) {
            Ok(index) => match &index.toc_digest {
                None => true,
                Some(built_from) => !require_full && toc == Some(built_from),
            },
            Err(_) => false,
        }
    }

    /// Contents the store knows the sha256 of (for partial pulls).
    pub fn known_contents(&self) -> Result<crate::store::partial::Known> {
        crate::store::partial::Known::load(&self.dir)
    }

    /// What a partial pull of `plan` must build and fetch: see [`crate::store::partial::missing`].
    pub fn missing_contents(
        &self,
        plan: &crate::store::toc::Plan,
        known: &crate::store::partial::Known,
    ) -> crate::store::partial::Missing {
        crate::store::partial::missing(&self.dir, plan, known)
    }

    /// Builds a layer from its zstd:chunked TOC: see [`crate::store::partial`].
    #[allow(clippy::too_many_arguments)]
    pub fn import_partial(
        &self,
        spec: &LayerSpec,
        toc_digest: &Digest,
        plan: &crate::store::toc::Plan,
        known: crate::store::partial::Known,
        missing: &[crate::store::chunks::Build],
        fetched: &mut dyn Read,
    ) -> Result<LayerIndex> {
        crate::store::partial::import(
            &self.dir,
            &self.claims,
            &self.limits,
            spec,
            toc_digest,
            plan,
            known,
            missing,
            fetched,
        )
    }

    /// Streams one layer into the store: checks the compressed digest and size,
    /// decompresses by media type, checks the diff_id, refuses unsafe entries,
    /// writes new objects and commits the index only when every check passed.
    pub fn import_layer(
        &self,
        spec: &LayerSpec,
        blob: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<LayerIndex> {
        import::import_layer(&self.dir, &self.claims, &self.limits, spec, blob, progress)
    }

    /// Makes every layer committed so far durable: one `syncfs` of the store's
    /// filesystem. Callers run it before they build anything a machine will
    /// boot from the store, and at shutdown (see [`durability`]). Returns how
    /// many layers were waiting for it.
    pub fn sync(&self) -> Result<usize> {
        durability::sync(&self.dir)
    }

    /// Checks what a crash of the machine may have lost: layers committed but
    /// not synced in an earlier boot have every object re-hashed; a layer with
    /// a missing or damaged object loses its index (and the damaged objects),
    /// so that the next pull downloads it again. Runs under the sysroot lock,
    /// before a pull decides which layers it has.
    pub fn recover(&self) -> Result<Recovery> {
        let mut r = Recovery::default();
        for diff_id in durability::from_earlier_boots(&self.dir)? {
            if self.index_path(&diff_id).exists() {
                let index = self.layer_index(&diff_id)?;
                r.layers_checked += 1;
                let mut lost = 0;
                for entry in &index.entries {
                    let EntryKind::File { object, .. } = &entry.kind else { continue };
                    let path = self.object_path(object);
                    if objects::verify_object(&path, object).unwrap_or(false) {
                        continue;
                    }
                    lost += 1;
                    remove_file_if_present(&path).context("removing a damaged object")?;
                }
                if lost > 0 {
                    // The alias first: it must never name a missing index.
                    remove_file_if_present(&self.alias_path(&index.blob_digest))?;
                    remove_file_if_present(&self.index_path(&diff_id))?;
                    crate::fsutil::sync_dir(&self.dir.join("layers"))?;
                    r.layers_dropped.push(diff_id.clone());
                    r.objects_lost += lost;
                }
            }
            durability::forget(&self.dir, &diff_id)?;
        }
        Ok(r)
    }

    /// Reads the index of a pulled layer.
    pub fn layer_index(&self, diff_id: &Digest) -> Result<LayerIndex> {
        let path = self.index_path(diff_id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => anyhow::bail!("layer {diff_id} is not in the store"),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let index: LayerIndex =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing layer index {}", path.display()))?;
        crate::format::refuse_newer(&path, "layer index", index.version, LAYER_INDEX_VERSION, None)?;
        anyhow::ensure!(
            index.version == crate::store::layer_index::LAYER_INDEX_VERSION,
            "layer index {} has version {}; this hostctl reads version {}",
            path.display(),
            index.version,
            crate::store::layer_index::LAYER_INDEX_VERSION
        );
        anyhow::ensure!(index.diff_id == *diff_id, "layer index {} describes {}", path.display(), index.diff_id);
        Ok(index)
    }

    /// Where an object lives (for hardlinking into deployments).
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        objects::object_path_in(&self.dir.join("objects"), id)
    }

    /// Re-hashes a stored object (content and metadata); false if it no longer matches its id.
    pub fn verify_object(&self, id: &ObjectId) -> Result<bool> {
        objects::verify_object(&self.object_path(id), id)
    }

    /// Stores a manifest or config after checking its digest.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        blobs::put_blob(&self.dir, digest, bytes)
    }

    /// Reads a stored manifest or config (digest re-checked).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        blobs::read_blob(&self.dir, digest)
    }

    /// Records (or replaces) the image pulled as `record.imgref`.
    pub fn record_image(&self, record: &ImageRecord) -> Result<()> {
        images::record_image(&self.dir, record)
    }

    /// Images the store holds, sorted by reference.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        images::list_images(&self.dir)
    }

    /// Forgets the image pulled as `imgref` (its content goes at the next gc).
    pub fn remove_image(&self, imgref: &str) -> Result<bool> {
        images::remove_image(&self.dir, imgref)
    }

    /// Removes blobs, layer indexes and objects not reachable from `roots` or
    /// from recorded images. The caller holds the sysroot lock (no import may
    /// be in flight).
    pub fn gc(&self, roots: &GcRoots) -> Result<GcStats> {
        let images = self.list_images()?;
        let keep = gc::reachable(roots, &images, |d| match self.layer_index(d) {
            Ok(i) => Ok(Some(i)),
            Err(_) if !self.index_path(d).exists() => Ok(None),
            Err(e) => Err(e),
        })?;
        gc::sweep(&self.dir, &keep)
    }

    /// The index file of layer `diff_id` (`layers/<hex>.json`).
    pub fn index_file(&self, diff_id: &Digest) -> PathBuf {
        self.index_path(diff_id)
    }

    /// Makes the store forget layer `diff_id` (its by-blob alias `blob`, then
    /// its index), so that the next import of it writes it anew.
    pub fn forget_layer(&self, diff_id: &Digest, blob: Option<&Digest>) -> Result<()> {
        if let Some(blob) = blob {
            remove_file_if_present(&self.alias_path(blob))?;
        }
        remove_file_if_present(&self.index_path(diff_id))?;
        crate::fsutil::sync_dir(&self.dir.join("layers"))
    }

    fn index_path(&self, diff_id: &Digest) -> PathBuf {
        index_path(&self.dir, diff_id)
    }

    fn alias_path(&self, blob: &Digest) -> PathBuf {
        self.dir.join("layers").join("by-blob").join(blob.hex())
    }
}

/// A store directory that does not exist or holds none of a store's
/// directories yet: it gets the current format, not a migration.
fn is_new_store(dir: &Path) -> Result<bool> {
    for sub in ["blobs", "layers", "objects", "images"] {
        match fs::symlink_metadata(dir.join(sub)) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", dir.join(sub).display())),
        }
    }
    Ok(true)
}

/// `layers/<diff_id hex>.json`.
fn index_path(repo: &Path, diff_id: &Digest) -> PathBuf {
    repo.join("layers").join(format!("{}.json", diff_id.hex()))
}

/// Commits a verified layer: marks it as not yet synced (or, without a boot
/// id, syncs its objects), then writes its index and by-blob alias atomically
/// (the index is what makes the layer exist). See [`durability`].
pub(crate) fn commit_index(repo: &Path, index: &LayerIndex) -> Result<()> {
    if !durability::mark(repo, &index.diff_id)? {
        crate::fsutil::syncfs(&repo.join("objects"))?;
    }
    let bytes = serde_json::to_vec(index).context("serialising the layer index")?;
    crate::fsutil::write_atomic(&index_path(repo, &index.diff_id), &bytes)?;
    let alias = repo.join("layers").join("by-blob").join(index.blob_digest.hex());
    crate::fsutil::write_atomic(&alias, index.diff_id.to_string().as_bytes())?;
    Ok(())
}

/// Temporary files younger than this may belong to a write in progress.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes leftovers of interrupted writes in `dir`: `.tmp-*` entries (every
/// entry when `all`). Object temp files name their writer's pid and go once
/// that process is gone; others once they are older than [`LEFTOVER_AGE`].
/// A reader opening the store never disturbs a pull running beside it.
fn clear_leftovers(dir: &Path, all: bool) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(crate::fsutil::TMP_PREFIX) else {
            if all {
                remove_entry(&entry)?;
            }
            continue;
        };
        let writer_pid =
            rest.strip_prefix("obj-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        let stale = match writer_pid {
            Some(pid) => pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists(),
            None => entry.metadata()?.modified()?.elapsed().map(|age| age > LEFTOVER_AGE).unwrap_or(false),
        };
        if stale {
            remove_entry(&entry)?;
        }
    }
    Ok(())
}

fn remove_entry(entry: &fs::DirEntry) -> Result<()> {
    let path = entry.path();
    let r = if entry.file_type()?.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing leftover {}", path.display()))
        }
        _ => Ok(()),
    }
}
