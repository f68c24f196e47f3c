//! The registry source: OCI distribution spec client with auth, TLS options,
//! retries and resumable blob streams.
// CONTRACT (skeleton): the registry work replaces the bodies below.

use anyhow::Result;
use async_trait::async_trait;
use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::imgref::RegistryRef;
use crate::oci::platform::Platform;
use crate::oci::{BlobReader, ImageSource, RawManifest, RegistryOptions, ResolvedManifest};

/// A repository in a registry.
pub struct RegistrySource {
    reference: RegistryRef,
}

impl RegistrySource {
    pub fn new(reference: RegistryRef, _opts: &RegistryOptions) -> Result<Self> {
        Ok(RegistrySource { reference })
    }
}

#[async_trait]
impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("registry {}", self.reference)
    }
    async fn resolve(&self, _platform: &Platform) -> Result<ResolvedManifest> {
        todo!("registry")
    }
    async fn fetch_manifest(&self, _reference: &str) -> Result<Option<RawManifest>> {
        todo!("registry")
    }
    async fn referrers(&self, _subject: &Digest) -> Result<Vec<Descriptor>> {
        todo!("registry")
    }
    async fn fetch_small_blob(&self, _desc: &Descriptor) -> Result<Vec<u8>> {
        todo!("registry")
    }
    async fn open_blob(&self, _desc: &Descriptor, _offset: u64) -> Result<BlobReader> {
        todo!("registry")
    }
}
