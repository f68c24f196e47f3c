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
    /// Format version of this file.
    pub version: u32,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Digest of the blob as it was downloaded (compressed).
    pub blob_digest: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size, in bytes.
    pub compressed_size: u64,
    /// The tar's size, in bytes.
    pub uncompressed_size: u64,
    /// Entries in tar order.
    pub entries: Vec<Entry>,
    /// For a layer built from a zstd:chunked table of contents (a partial
    /// pull): the TOC's digest. Its `diff_id` was then not computed, only
    /// taken from the image config (docs/store.md, "Partial pulls").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toc_digest: Option<Digest>,
    /// sha256 of the content of the layer's objects: from the TOC for a
    /// partial pull, hashed while unpacking for a full one (indexes written
    /// before hostctl did that have none). How a later partial pull finds
    /// files the store has.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub content_digests: BTreeMap<ObjectId, Digest>,
    /// For a layer built from a zstd:chunked TOC: the chunks of each object
    /// the TOC cut into more than one, with their sha256 (a one-chunk file's
    /// chunk is its content, already in `content_digests`). How a later
    /// partial pull finds the unchanged chunks of a changed file. Indexes
    /// written before hostctl did that have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chunks: BTreeMap<ObjectId, Vec<Chunk>>,
}

/// A piece of an object's content whose sha256 a TOC named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Where it starts in the content.
    pub offset: u64,
    /// Its length.
    pub size: u64,
    /// sha256 of its bytes.
    pub digest: Digest,
}

/// One tar entry, checked and normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path in the image, normalised (relative, no `.`/`..`).
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Its owner, mode and extended attributes.
    #[serde(flatten)]
    pub meta: Meta,
}

/// Ownership, permissions, time and extended attributes of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
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
    /// A directory.
    Dir,
    /// A regular file; its bytes and metadata are the object.
    File {
        /// The object holding its bytes and metadata.
        object: ObjectId,
        /// Its size, in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// What it points to, as written.
        target: String,
    },
    /// A hard link to an earlier path of the same image (normalised like `path`).
    Hardlink {
        /// The earlier path, normalised.
        target: String,
    },
    /// A character device.
    CharDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// `.wh.NAME`: `path` (with the prefix removed) is deleted from lower layers.
    Whiteout,
    /// `.wh..wh..opq` inside `path`: lower layers' content of the directory is hidden.
    OpaqueWhiteout,
}
