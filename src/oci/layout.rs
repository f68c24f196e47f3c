//! OCI image layout sources: `oci:DIR[:TAG]` directories and `oci-archive:FILE[:TAG]` tars.
// CONTRACT (skeleton): bodies to be written.

use std::path::{Path, PathBuf};

use anyhow::Result;
use async_trait::async_trait;
use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::{BlobReader, ImageSource, RawManifest, ResolvedManifest};

/// An OCI image layout, as a directory or inside a tar archive.
pub struct OciLayoutSource {
    path: PathBuf,
    tag: Option<String>,
}

impl OciLayoutSource {
    pub fn open_dir(path: &Path, tag: Option<&str>) -> Result<Self> {
        Ok(OciLayoutSource { path: path.to_path_buf(), tag: tag.map(str::to_string) })
    }
    pub fn open_archive(path: &Path, tag: Option<&str>) -> Result<Self> {
        Ok(OciLayoutSource { path: path.to_path_buf(), tag: tag.map(str::to_string) })
    }
}

#[async_trait]
impl ImageSource for OciLayoutSource {
    fn describe(&self) -> String {
        format!("oci:{}{}", self.path.display(), self.tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default())
    }
    async fn resolve(&self, _platform: &Platform) -> Result<ResolvedManifest> {
        todo!("layout")
    }
    async fn fetch_manifest(&self, _reference: &str) -> Result<Option<RawManifest>> {
        todo!("layout")
    }
    async fn referrers(&self, _subject: &Digest) -> Result<Vec<Descriptor>> {
        Ok(Vec::new())
    }
    async fn fetch_small_blob(&self, _desc: &Descriptor) -> Result<Vec<u8>> {
        todo!("layout")
    }
    async fn open_blob(&self, _desc: &Descriptor, _offset: u64) -> Result<BlobReader> {
        todo!("layout")
    }
}
