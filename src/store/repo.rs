//! The `Store` handle: opening the repository and reading and writing blobs,
//! layer indexes, objects and image records.
// CONTRACT (skeleton): signatures below are what pull and deploy call. The
// store work fills in the bodies and may add more.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::{LayerIndex, ObjectId};
use crate::sysroot::Sysroot;

/// What the pipeline needs to know about a layer before reading it.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub blob_digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// An image the store holds, by the reference it was pulled as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub imgref: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
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
    pub blobs: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
}

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcStats {
    pub blobs: u64,
    pub layers: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// An open content store.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store of `sysroot`, clearing leftovers of interrupted writes.
    pub fn open(sysroot: &Sysroot) -> Result<Store> {
        Ok(Store { dir: sysroot.repo_dir() })
    }

    /// The repository directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the layer is already indexed (by diff_id, or by compressed digest).
    pub fn has_layer(&self, _blob: &Digest, _diff_id: &Digest) -> bool {
        todo!("store")
    }

    /// Streams one layer into the store: checks the compressed digest and size,
    /// decompresses by media type, checks the diff_id, refuses unsafe entries,
    /// writes new objects and commits the index only when every check passed.
    pub fn import_layer(
        &self,
        _spec: &LayerSpec,
        _blob: &mut dyn Read,
        _progress: &mut dyn FnMut(u64),
    ) -> Result<LayerIndex> {
        todo!("store")
    }

    /// Reads the index of a pulled layer.
    pub fn layer_index(&self, _diff_id: &Digest) -> Result<LayerIndex> {
        todo!("store")
    }

    /// Where an object lives (for hardlinking into deployments).
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.dir.join("objects").join(&id.0[..2]).join(&id.0[2..])
    }

    /// Stores a manifest or config after checking its digest.
    pub fn put_blob(&self, _digest: &Digest, _bytes: &[u8]) -> Result<()> {
        todo!("store")
    }

    /// Reads a stored manifest or config (digest re-checked).
    pub fn read_blob(&self, _digest: &Digest) -> Result<Vec<u8>> {
        todo!("store")
    }

    /// Records (or replaces) the image pulled as `record.imgref`.
    pub fn record_image(&self, _record: &ImageRecord) -> Result<()> {
        todo!("store")
    }

    /// Images the store holds, sorted by reference.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        todo!("store")
    }

    /// Forgets the image pulled as `imgref` (its content goes at the next gc).
    pub fn remove_image(&self, _imgref: &str) -> Result<bool> {
        todo!("store")
    }

    /// Removes blobs, layer indexes and objects not reachable from `roots` or
    /// from recorded images.
    pub fn gc(&self, _roots: &GcRoots) -> Result<GcStats> {
        todo!("store")
    }
}
