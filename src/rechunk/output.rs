//! Writing the rechunked image into an OCI image layout directory: blobs
//! moved in under their digests, then `index.json` replaced atomically so
//! that a reader sees the old tag or the new one, never a half-written image.
//!
//! The tag given (`oci:DIR:TAG`) replaces the manifest that carried the same
//! `org.opencontainers.image.ref.name`; other tags are kept. Without a tag
//! the index holds this image alone.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::digest::Digest;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The media type of the manifests written.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI layout being written.
pub struct LayoutWriter {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("hostctl-tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

impl LayoutWriter {
    /// Opens (creating when needed) the layout at `dir`.
    pub fn create(dir: &Path) -> Result<LayoutWriter> {
        fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(LayoutWriter { dir: dir.to_path_buf() })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(digest.algorithm()).join(digest.hex())
    }

    /// Moves the finished file `from` (on the same filesystem) in as the blob `digest`.
    pub fn put_file(&self, from: &Path, digest: &Digest) -> Result<()> {
        let to = self.blob_path(digest);
        fs::rename(from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
    }

    /// Writes a small blob and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let to = self.blob_path(&digest);
        if !to.exists() {
            write_atomic(&to, bytes)?;
        }
        Ok(digest)
    }

    /// Points `tag` (or the whole index, without one) at the manifest.
    pub fn set_manifest(&self, tag: Option<&str>, digest: &Digest, size: u64) -> Result<()> {
        let path = self.dir.join("index.json");
        let mut index: Value = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is not JSON", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({"schemaVersion": 2, "manifests": []}),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut entry = json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest.to_string(), "size": size});
        let mut kept = Vec::new();
        if let Some(tag) = tag {
            entry["annotations"] = json!({ REF_NAME: tag });
            kept = index["manifests"]
                .as_array()
                .map(|m| m.iter().filter(|d| d["annotations"][REF_NAME].as_str() != Some(tag)).cloned().collect())
                .unwrap_or_default();
        }
        kept.push(entry);
        index["schemaVersion"] = json!(2);
        index["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        index["manifests"] = Value::Array(kept);
        write_atomic(&path, &serde_json::to_vec(&index)?)
    }
}
