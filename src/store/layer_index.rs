//! The layer index: what one image layer contains, entry by entry, with regular
//! files referring to objects in the store. This is the contract between the
//! pull pipeline (which writes indexes) and deployments (which check them out).
//!
//! Paths are relative, normalised (no leading `/` or `./`, no `.` or `..`
//! components, no empty components; an absolute tar name is recorded relative
//! to the layer root) and checked when the index is built, so readers may join
//! them beneath a root without further checks other than for symlinks in the
//! tree being built: a path is recorded as written even where an ancestor is a
//! symlink of the same or a lower layer, and the checkout resolves it inside
//! the image (docs/store.md, "Where each resolution happens").

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Version of the on-disk layer index format.
pub const LAYER_INDEX_VERSION: u32 = 1;

/// The id of a stored file object: sha256 over its metadata header and content
/// (see docs/store.md), as 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub String);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "obj:{}", self.0)
    }
}

/// Everything known about one pulled layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub version: u32,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Digest of the blob as it was downloaded (compressed).
    pub blob_digest: Digest,
    pub media_type: String,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Entries in tar order.
    pub entries: Vec<Entry>,
}

/// One tar entry, checked and normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    #[serde(flatten)]
    pub meta: Meta,
}

/// Ownership, permissions, time and extended attributes of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, as in the tar header.
    pub mtime: i64,
    /// Extended attributes (`security.capability`, `user.*`, ...): name → hex value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// The kinds of entry a layer can hold, OCI whiteouts included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EntryKind {
    Dir,
    /// A regular file; its bytes and metadata are the object.
    File {
        object: ObjectId,
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// A hard link to an earlier path of the same image (normalised like `path`).
    Hardlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `.wh.NAME`: `path` (with the prefix removed) is deleted from lower layers.
    Whiteout,
    /// `.wh..wh..opq` inside `path`: lower layers' content of the directory is hidden.
    OpaqueWhiteout,
}
