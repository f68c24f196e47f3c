//! Pushing a rechunked image from the OCI layout it was written to into a
//! registry repository (`image rechunk SRC docker://REG/REPO[:TAG]`): each
//! blob the manifest names, streamed from its file (the registry already
//! holding one is asked with a HEAD and skipped), then the manifest, PUT by
//! tag (or by its digest when none is given). The registry checks every
//! digest as it stores the upload.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::digest::Digest;
use crate::imgref::RegistryRef;
use crate::oci::registry::client::Client;
use crate::oci::RegistryOptions;
// An OCI layout's blobs sit where the store keeps its own: `blobs/sha256/<hex>`.
use crate::store::blobs::blob_path;

/// Pushes the image whose manifest is `manifest` in the layout at `dir` to `dest`.
pub async fn push_layout(dir: &Path, manifest: &Digest, dest: &RegistryRef, opts: &RegistryOptions) -> Result<()> {
    let bytes = std::fs::read(blob_path(dir, manifest)).context("reading the rechunked manifest")?;
    let m: Value = serde_json::from_slice(&bytes).context("parsing the rechunked manifest")?;
    let media_type = m["mediaType"].as_str().context("the manifest has no mediaType")?.to_string();
    let client = Client::new(&dest.registry, &dest.repository, opts)?;
    let descriptors = m["layers"].as_array().into_iter().flatten().chain(std::iter::once(&m["config"]));
    for d in descriptors {
        let digest: Digest = d["digest"].as_str().context("a descriptor without digest")?.parse()?;
        let size = d["size"].as_u64().context("a descriptor without size")?;
        client
            .push_blob_file(&blob_path(dir, &digest), &digest, size)
            .await
            .with_context(|| format!("pushing blob {digest} to {}/{}", dest.registry, dest.repository))?;
    }
    let reference = dest.tag.clone().unwrap_or_else(|| manifest.to_string());
    let put = client.put_manifest(&reference, &media_type, &bytes).await?;
    anyhow::ensure!(&put.digest == manifest, "the registry stored the manifest as {}, not {manifest}", put.digest);
    Ok(())
}
