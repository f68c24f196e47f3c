//! The `ImageSource` contract: where manifests, configs and layer blobs come from.
//!
//! A registry, an OCI layout directory and an OCI archive all answer the same
//! questions, so the pull pipeline, the trust checks and the tests do not care
//! which transport an image came by. Sources hand out bytes; they do not have to
//! verify them: the store checks every digest and size before it trusts a byte.

use std::io::Read;
use std::pin::Pin;

use anyhow::{Context, Result};
use async_trait::async_trait;
use oci_spec::image::{Descriptor, ImageManifest};
use tokio::io::AsyncRead;

use crate::digest::Digest;
use crate::oci::platform::Platform;

/// Largest manifest or config accepted (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Converts an oci-spec descriptor's digest into ours.
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest> {
    desc.digest().to_string().parse().with_context(|| format!("descriptor digest {}", desc.digest()))
}

/// A manifest as fetched: its raw bytes (what digests and signatures cover) and its media type.
#[derive(Clone, Debug)]
pub struct RawManifest {
    /// The digest of `bytes`.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The manifest, exactly as served.
    pub bytes: Vec<u8>,
}

/// The image manifest chosen for a platform, with the index it came through.
#[derive(Clone, Debug)]
pub struct ResolvedManifest {
    /// The platform image manifest (the digest that gets deployed and signed).
    pub raw: RawManifest,
    /// The manifest, parsed (Docker schema 2 manifests parse into the same type).
    pub manifest: ImageManifest,
    /// The index or manifest list digest when the reference named one.
    pub index_digest: Option<Digest>,
}

/// A blob's bytes as a stream. Registry blobs arrive asynchronously; local ones
/// are plain files read on the blocking pool.
pub enum BlobReader {
    /// From a registry or other async source.
    Async(Pin<Box<dyn AsyncRead + Send>>),
    /// From a file (layout or archive).
    Sync(Box<dyn Read + Send>),
}

impl BlobReader {
    /// A blocking reader over the blob. For async streams this bridges into
    /// the runtime, so call it only from a blocking thread (`spawn_blocking`).
    pub fn into_sync(self) -> Box<dyn Read + Send> {
        match self {
            BlobReader::Sync(r) => r,
            BlobReader::Async(r) => Box::new(tokio_util::io::SyncIoBridge::new(r)),
        }
    }
}

/// Something images can be read from.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// A human description for messages (`registry 127.0.0.1:5000/os`, `oci:/path`).
    fn describe(&self) -> String;

    /// Fetches the reference's manifest; an index or manifest list is resolved
    /// to the entry for `platform`. Errors name the platforms that were offered.
    async fn resolve(&self, platform: &Platform) -> Result<ResolvedManifest>;

    /// Fetches a manifest by tag or digest in the same repository, unresolved
    /// (used for signature tags). `Ok(None)` when it does not exist.
    async fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>>;

    /// Manifests that refer to `subject` (OCI 1.1 referrers). Sources without
    /// referrers support return an empty list.
    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>>;

    /// A small blob (config, signature payload), read whole. Implementations
    /// refuse blobs larger than the descriptor says or than [`MAX_MANIFEST_SIZE`]
    /// and check the digest.
    async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>>;

    /// Opens a blob as a stream starting at byte `offset`. Registry streams
    /// retry and resume by themselves after connection errors.
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader>;

    /// Opens the bytes of `ranges` of a blob (sorted, non-overlapping), one
    /// after the other, as one stream; `Ok(None)` from sources that cannot
    /// serve ranges (the caller then reads the blob whole). Registries that
    /// turn out to ignore `Range` fail with `registry::ranges::RangesIgnored`.
    async fn open_ranges(&self, _desc: &Descriptor, _ranges: Vec<std::ops::Range<u64>>) -> Result<Option<BlobReader>> {
        Ok(None)
    }
}
