//! Blobs: manifests, indexes and configs, stored under `repo/blobs/sha256/<hex>`
//! and checked against their digest when written and again when read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::digest::Digest;
use crate::error::DigestMismatch;

/// Where the blob `digest` lives.
pub fn blob_path(repo: &Path, digest: &Digest) -> PathBuf {
    repo.join("blobs").join(digest.algorithm()).join(digest.hex())
}

/// Stores `bytes` as `digest` after checking that they hash to it.
pub fn put_blob(repo: &Path, digest: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = Digest::of(bytes);
    if actual != *digest {
        return Err(DigestMismatch { what: format!("blob {digest}"), expected: digest.clone(), actual }.into());
    }
    let path = blob_path(repo, digest);
    // A blob already there with the right content is kept as it is.
    if let Ok(existing) = fs::read(&path) {
        if Digest::of(&existing) == *digest {
            return Ok(());
        }
    }
    crate::fsutil::write_atomic(&path, bytes).with_context(|| format!("storing blob {digest}"))
}

/// Reads the blob `digest`, refusing content that no longer matches it.
pub fn read_blob(repo: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let path = blob_path(repo, digest);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => anyhow::bail!("blob {digest} is not in the store"),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(DigestMismatch {
            what: format!("stored blob {}", path.display()),
            expected: digest.clone(),
            actual,
        }
        .into());
    }
    Ok(bytes)
}

/// Digests of every stored blob (names that are not digests are skipped).
pub fn list_blobs(repo: &Path) -> Result<Vec<Digest>> {
    let dir = repo.join("blobs").join("sha256");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        if let Ok(d) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}
