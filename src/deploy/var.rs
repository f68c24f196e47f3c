//! The persistent `/var` of a stateroot, and the real (never hardlinked) tree
//! copy it is seeded with.
//!
//! `deploy/<stateroot>/var` is created once, from the `/var` of the first
//! image deployed in the stateroot; later images' `/var` content is ignored
//! (the deployment trees keep it, but at boot the persistent `/var` is mounted
//! over it). The copy is made in a `.tmp-` directory and renamed into place.

use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};

use crate::fsutil;

/// Copies `src` (a directory) to `dest` (must not exist) with ownership,
/// permissions and modification times; files are real copies, so writes to
/// the copy never reach the store's shared objects. Symlinks are copied as
/// links, never followed.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let md = src.symlink_metadata().with_context(|| format!("reading {}", src.display()))?;
    copy_entry(src, dest, &md)
}

fn copy_entry(src: &Path, dest: &Path, md: &std::fs::Metadata) -> Result<()> {
    let ft = md.file_type();
    let ctx = || format!("copying {} to {}", src.display(), dest.display());
    if ft.is_dir() {
        std::fs::create_dir(dest).with_context(ctx)?;
        let mut names: Vec<_> = std::fs::read_dir(src)
            .with_context(ctx)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(ctx)?;
        names.sort();
        for n in names {
            let s = src.join(&n);
            let m = s.symlink_metadata().with_context(|| format!("reading {}", s.display()))?;
            copy_entry(&s, &dest.join(&n), &m)?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).with_context(ctx)?;
        symlink(&target, dest).with_context(ctx)?;
    } else if ft.is_file() {
        let mut from = std::fs::File::open(src).with_context(ctx)?;
        let mut to = std::fs::File::create_new(dest).with_context(ctx)?;
        std::io::copy(&mut from, &mut to).with_context(ctx)?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_char_device() {
            FileType::CharacterDevice
        } else {
            FileType::BlockDevice
        };
        rustix::fs::mknodat(CWD, dest, kind, Mode::from_raw_mode(md.mode() & 0o7777), md.rdev()).with_context(ctx)?;
    } else {
        bail!("{} has an unsupported file type", src.display());
    }
    lchown(dest, Some(md.uid()), Some(md.gid())).with_context(ctx)?;
    if !ft.is_symlink() {
        // After chown, which clears setuid/setgid bits.
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(md.mode() & 0o7777)).with_context(ctx)?;
    }
    let t = Timespec { tv_sec: md.mtime(), tv_nsec: md.mtime_nsec() as _ };
    rustix::fs::utimensat(CWD, dest, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(ctx)?;
    Ok(())
}

/// Creates `var_dir` from the deployment tree's `var` (or empty) unless it exists.
/// Returns whether it was created.
pub fn seed(var_dir: &Path, tree: &Path) -> Result<bool> {
    if var_dir.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let parent = var_dir.parent().context("/var has no parent directory")?;
    let tmp = parent.join(format!("{}var", fsutil::TMP_PREFIX));
    if tmp.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing leftover {}", tmp.display()))?;
    }
    let image_var = tree.join("var");
    if image_var.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
        copy_tree(&image_var, &tmp)?;
    } else {
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    fsutil::sync_dir(&tmp)?;
    std::fs::rename(&tmp, var_dir).with_context(|| format!("renaming {} into place", var_dir.display()))?;
    fsutil::sync_dir(parent)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copy_is_real_and_keeps_metadata() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib/app")).unwrap();
        std::fs::write(src.join("lib/app/data"), "x").unwrap();
        std::fs::set_permissions(src.join("lib/app/data"), std::fs::Permissions::from_mode(0o640)).unwrap();
        lchown(src.join("lib/app/data"), Some(123), Some(456)).unwrap();
        symlink("../run", src.join("run")).unwrap();
        rustix::fs::mknodat(CWD, src.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        copy_tree(&src, &d.path().join("dst")).unwrap();
        let f = d.path().join("dst/lib/app/data");
        let (a, b) = (std::fs::metadata(src.join("lib/app/data")).unwrap(), std::fs::metadata(&f).unwrap());
        assert_ne!(a.ino(), b.ino(), "a copy, not a hardlink");
        assert_eq!((b.mode() & 0o7777, b.uid(), b.gid(), b.mtime()), (0o640, 123, 456, a.mtime()));
        assert_eq!(std::fs::read_link(d.path().join("dst/run")).unwrap(), Path::new("../run"));
        assert!(std::fs::symlink_metadata(d.path().join("dst/fifo")).unwrap().file_type().is_fifo());
        assert!(copy_tree(&src, &d.path().join("dst")).is_err(), "destination must not exist");
    }

    #[test]
    fn seed_only_the_first_time() {
        let d = tempfile::tempdir().unwrap();
        let (t1, t2, var) = (d.path().join("t1"), d.path().join("t2"), d.path().join("sr/var"));
        std::fs::create_dir_all(t1.join("var/lib")).unwrap();
        std::fs::write(t1.join("var/lib/seed"), "v1").unwrap();
        std::fs::create_dir_all(t2.join("var/lib")).unwrap();
        std::fs::write(t2.join("var/lib/seed"), "v2").unwrap();
        std::fs::create_dir_all(d.path().join("sr")).unwrap();
        assert!(seed(&var, &t1).unwrap());
        std::fs::write(var.join("lib/local"), "mine").unwrap();
        assert!(!seed(&var, &t2).unwrap());
        assert_eq!(std::fs::read_to_string(var.join("lib/seed")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(var.join("lib/local")).unwrap(), "mine");
        // An image without /var gets an empty one.
        let var2 = d.path().join("sr2/var");
        std::fs::create_dir_all(d.path().join("sr2")).unwrap();
        assert!(seed(&var2, &d.path().join("none")).unwrap());
        assert_eq!(std::fs::read_dir(&var2).unwrap().count(), 0);
    }
}
