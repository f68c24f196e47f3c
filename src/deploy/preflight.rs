//! The space check made before anything is downloaded: what an upgrade will
//! need on the store's filesystem and on the boot partition, against what is
//! free there (`statvfs`).
//!
//! Estimates (documented in docs/deployments.md): objects are stored
//! uncompressed, so each missing compressed layer counts
//! [`UNCOMPRESSED_RATIO`] times its size (plain tar layers count once),
//! plus [`MARGIN`] for metadata, directories and the copied `/etc`. On the
//! boot partition a new kernel is assumed as large as the current one. When
//! both directories are on one filesystem the needs add up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::InsufficientSpace;

/// How much larger than its compressed size a layer is assumed to unpack to.
pub const UNCOMPRESSED_RATIO: u64 = 3;
/// Headroom for metadata, directories and the /etc copy.
pub const MARGIN: u64 = 4 * 1024 * 1024;

/// A layer the store lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingLayer {
    /// Its size as downloaded, in bytes.
    pub compressed_size: u64,
    /// False for plain (uncompressed) tar layers.
    pub compressed: bool,
}

/// Free space on one filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Free {
    /// A path on the file system.
    pub path: PathBuf,
    /// Filesystem id (st_dev), to notice two paths on one filesystem.
    pub dev: u64,
    /// Bytes free for hostctl there.
    pub available: u64,
}

/// Bytes the store needs for `missing`.
pub fn store_need(missing: &[MissingLayer]) -> u64 {
    let layers: u64 = missing
        .iter()
        .map(|l| if l.compressed { l.compressed_size.saturating_mul(UNCOMPRESSED_RATIO) } else { l.compressed_size })
        .sum();
    layers + MARGIN
}

/// Refuses with [`InsufficientSpace`] when the needs do not fit.
pub fn check(store_bytes: u64, store: &Free, boot_bytes: u64, boot: &Free) -> Result<(), InsufficientSpace> {
    if store.dev == boot.dev {
        let needed = store_bytes + boot_bytes;
        if needed > store.available {
            return Err(InsufficientSpace { path: store.path.clone(), needed, available: store.available });
        }
        return Ok(());
    }
    if store_bytes > store.available {
        return Err(InsufficientSpace { path: store.path.clone(), needed: store_bytes, available: store.available });
    }
    if boot_bytes > boot.available {
        return Err(InsufficientSpace { path: boot.path.clone(), needed: boot_bytes, available: boot.available });
    }
    Ok(())
}

/// Free space on the filesystem holding `path` (or its nearest existing
/// ancestor): blocks available to unprivileged users, so that the root
/// reserve stays for the running system.
pub fn free(path: &Path) -> Result<Free> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    let v = rustix::fs::statvfs(&p).with_context(|| format!("statvfs {}", p.display()))?;
    let dev = std::fs::metadata(&p).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).unwrap_or(0);
    Ok(Free { path: path.to_path_buf(), dev, available: v.f_bavail.saturating_mul(v.f_frsize) })
}

/// Whether a layer media type is compressed.
pub fn is_compressed(media_type: &str) -> bool {
    media_type.ends_with("gzip") || media_type.ends_with("zstd")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(dev: u64, available: u64) -> Free {
        Free { path: PathBuf::from(format!("/fs{dev}")), dev, available }
    }

    #[test]
    fn store_need_table() {
        let l = |s, c| MissingLayer { compressed_size: s, compressed: c };
        assert_eq!(store_need(&[]), MARGIN);
        assert_eq!(store_need(&[l(10, true)]), 30 + MARGIN);
        assert_eq!(store_need(&[l(10, true), l(7, false)]), 37 + MARGIN);
    }

    #[test]
    fn check_table() {
        // (store need, store free, boot need, boot free, same fs) -> Err(path, needed)?
        type Case<'a> = (u64, u64, u64, u64, bool, Option<(&'a str, u64)>);
        let cases: &[Case] = &[
            (10, 100, 10, 100, false, None),
            (10, 5, 0, 100, false, Some(("/fs1", 10))),
            (10, 100, 50, 20, false, Some(("/fs2", 50))),
            (60, 100, 50, 100, true, Some(("/fs1", 110))),
            (50, 100, 50, 100, true, None),
        ];
        for (sn, sf, bn, bf, same, want) in cases {
            let s = free(1, *sf);
            let b = free(if *same { 1 } else { 2 }, *bf);
            let got = check(*sn, &s, *bn, &b).err().map(|e| (e.path.display().to_string(), e.needed));
            assert_eq!(got, want.map(|(p, n)| (p.to_string(), n)), "{sn} {sf} {bn} {bf} {same}");
        }
    }

    #[test]
    fn free_reads_a_real_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let f = super::free(&d.path().join("not/yet/there")).unwrap();
        assert!(f.available > 0);
        assert_eq!(f.dev, std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(d.path()).unwrap()));
    }
}
