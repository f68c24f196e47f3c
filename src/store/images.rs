//! Image records: which references the store holds, one JSON file per
//! reference under `repo/images/<sha256 of the reference>.json`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::digest::Digest;
use crate::store::ImageRecord;

fn images_dir(repo: &Path) -> PathBuf {
    repo.join("images")
}

/// The record file of `imgref` (named by a hash: references hold `/` and `:`).
pub fn record_path(repo: &Path, imgref: &str) -> PathBuf {
    images_dir(repo).join(format!("{}.json", Digest::of(imgref.as_bytes()).hex()))
}

/// Records (or atomically replaces) the image pulled as `record.imgref`.
pub fn record_image(repo: &Path, record: &ImageRecord) -> Result<()> {
    crate::fsutil::write_json_atomic(&record_path(repo, &record.imgref), record)
        .with_context(|| format!("recording image {}", record.imgref))
}

/// Every recorded image, sorted by reference.
pub fn list_images(repo: &Path) -> Result<Vec<ImageRecord>> {
    let dir = images_dir(repo);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let record: ImageRecord =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing image record {}", path.display()))?;
        out.push(record);
    }
    out.sort_by(|a, b| a.imgref.cmp(&b.imgref));
    Ok(out)
}

/// Forgets `imgref`; returns whether it was recorded.
pub fn remove_image(repo: &Path, imgref: &str) -> Result<bool> {
    let path = record_path(repo, imgref);
    match fs::remove_file(&path) {
        Ok(()) => {
            crate::fsutil::sync_dir(&images_dir(repo))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
