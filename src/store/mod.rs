//! The content store under `<sysroot>/hostctl/repo`: manifests and configs as
//! blobs, one index per pulled layer, and deduplicated file objects that
//! deployments hardlink.
//!
//! Layout (see docs/store.md):
//! ```text
//! repo/blobs/sha256/<hex>        manifests and configs, verified
//! repo/layers/<diff_id hex>.json layer indexes (LayerIndex), keyed by diff_id
//! repo/layers/by-blob/<hex>      compressed digest → diff_id alias
//! repo/objects/<2 hex>/<62 hex>  file objects (mode/uid/gid/xattrs set, mtime 0)
//! repo/images/<hex>.json         images pulled by reference
//! repo/unsynced/<diff_id hex>    layers committed before a sync (boot id)
//! repo/tmp/                      staging of in-flight writes; cleared on open
//! ```
//!
//! Files, one concept each: [`repo`] (the `Store` handle), [`import`] (the
//! layer pipeline), [`gzip`] (its gzip reader), [`tarsafe`] (path checks and limits), [`targuard`] (extension
//! record caps), [`objects`] (object ids and writes), [`durability`] (when writes reach the
//! disk, and recovery after a crash), [`toc`] (zstd:chunked tables of contents),
//! [`partial`] (layers built from a TOC and the files the store lacks), [`chunks`] (the
//! unchanged chunks of changed files a partial pull copies from the store), [`blobs`], [`images`], [`gc`],
//! [`fsck`] (checking it all against its ids).

pub mod blobs;
pub mod chunks;
pub mod durability;
pub mod fsck;
pub mod gc;
pub mod gzip;
pub mod images;
pub mod import;
pub mod layer_index;
pub mod objects;
pub mod partial;
pub mod repo;
pub mod targuard;
pub mod tarsafe;
pub mod toc;

pub use layer_index::{Chunk, Entry, EntryKind, LayerIndex, Meta, ObjectId};
pub use repo::{GcRoots, GcStats, ImageRecord, LayerSpec, Recovery, Store};
pub use tarsafe::Limits;

#[cfg(test)]
mod tests;
