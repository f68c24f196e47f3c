//! The persistent `/var` of a stateroot, and the real (never hardlinked) tree
//! copy it is seeded with.
//!
//! `deploy/<stateroot>/var` is created once, from the `/var` of the first
//! image deployed in the stateroot; later images' `/var` content is ignored
//! (the deployment trees keep it, but at boot the persistent `/var` is mounted
//! over it). The copy is made in a `.tmp-` directory and renamed into place.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::deploy::fsat;
use crate::fsutil;

/// Copies `src` (a directory) to `dest` (must not exist) with ownership,
/// permissions, xattrs (SELinux labels, security capabilities) and
/// modification times; files are real copies, so writes to the copy never
/// reach the store's shared objects. Symlinks are copied as links, never
/// followed. The work is fd-relative, as for `/etc` (see `fsat`).
pub fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let ctx = || format!("copying {} to {}", src.display(), dest.display());
    let from = fsat::open_dir(src)?;
    std::fs::create_dir(dest).with_context(ctx)?;
    let to = fsat::open_dir(dest)?;
    fsat::copy_tree_contents(from.as_fd(), to.as_fd()).with_context(ctx)?;
    fsat::copy_dir_meta(from.as_fd(), to.as_fd(), Path::new(".")).with_context(ctx)
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
    use rustix::fs::{FileType, Mode, CWD};
    use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt};

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

    /// The first deployment of an image whose /var holds SELinux-labelled
    /// files: the stateroot's /var kept the labels (it lost them, and every
    /// other xattr, while /etc kept them).
    #[test]
    fn seeding_var_from_an_image_keeps_selinux_labels_and_security_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let (tree, var) = (d.path().join("tree"), d.path().join("sr/var"));
        std::fs::create_dir_all(tree.join("var/lib/app")).unwrap();
        std::fs::write(tree.join("var/lib/app/db"), "x").unwrap();
        std::fs::create_dir_all(d.path().join("sr")).unwrap();
        let label = b"system_u:object_r:var_lib_t:s0".as_slice();
        // security.* and trusted.* need CAP_SYS_ADMIN; without it user.* stands in.
        let set = |p: &Path, names: [&str; 2], v: &[u8]| -> String {
            let [privileged, fallback] = names;
            match rustix::fs::lsetxattr(p, privileged, v, rustix::fs::XattrFlags::empty()) {
                Ok(()) => privileged.to_string(),
                Err(_) => {
                    rustix::fs::lsetxattr(p, fallback, v, rustix::fs::XattrFlags::empty()).unwrap();
                    fallback.to_string()
                }
            }
        };
        let file_key = set(&tree.join("var/lib/app/db"), ["security.selinux", "user.selinux"], label);
        let dir_key = set(&tree.join("var/lib/app"), ["trusted.origin", "user.origin"], b"image");
        assert!(seed(&var, &tree).unwrap());
        let get = |p: &Path, k: &str| {
            let mut v = vec![0u8; 256];
            let n = rustix::fs::lgetxattr(p, k, &mut v).unwrap_or_else(|e| panic!("{k} on {}: {e}", p.display()));
            v.truncate(n);
            v
        };
        assert_eq!(get(&var.join("lib/app/db"), &file_key), label);
        assert_eq!(get(&var.join("lib/app"), &dir_key), b"image");
    }
}
