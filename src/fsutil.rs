//! Crash-safe filesystem primitives shared by every module that changes state:
//! atomic file replacement and directory syncs.
//!
//! The rule: write a temporary file beside the target, fsync it, rename it over
//! the target, fsync the directory. A crash at any instant leaves the old or the
//! new content, never a mix. Temporary names start with `.tmp-` so that the
//! next run can recognise and remove leftovers.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Prefix of every temporary file hostctl creates; leftovers may be deleted.
pub const TMP_PREFIX: &str = ".tmp-";

/// Atomically replaces `path` with `contents` (temp + fsync + rename + fsync dir).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("atomic write target has no parent directory")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(dir)
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

/// Syncs the whole filesystem holding `path` (`syncfs`): one call makes a
/// freshly written tree durable, where an fsync per file and directory would
/// cost thousands of calls.
pub fn syncfs(path: &Path) -> Result<()> {
    let dir = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::syncfs(&dir).with_context(|| format!("syncing the filesystem of {}", path.display()))
}

/// Removes the file (or symlink) at `path`; one that is already gone is fine.
pub fn remove_file_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The entries directly inside `dir`, none if it does not exist; an error
/// names the directory.
pub fn read_dir_if_present(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<std::io::Result<Vec<_>>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("listing {}", dir.display()))
}

/// Removes `.tmp-*` leftovers of an interrupted run directly inside `dir`.
pub fn remove_tmp_leftovers(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in read_dir_if_present(dir)? {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            let r = if entry.file_type()?.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            r.with_context(|| format!("removing leftover {}", p.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        fs::write(d.path().join(".tmp-abc"), b"x").unwrap();
        assert_eq!(remove_tmp_leftovers(d.path()).unwrap(), 1);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
