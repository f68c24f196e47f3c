//! Kernels and initramfs images: found in a deployment at
//! `usr/lib/modules/<kver>/{vmlinuz,initramfs.img}` and copied to
//! `<boot>/hostctl/<stateroot>/<checksum>/`, where `<checksum>` is the sha256
//! over both files, so deployments with the same kernel share one copy.
//!
//! A copy is written in a `.tmp-` directory and renamed into place, so a
//! directory named by a checksum is always complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::digest::Hasher;
use crate::fsutil;

/// A kernel found in a deployment tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// The kernel version (its `/usr/lib/modules/` directory name).
    pub version: String,
    /// The kernel image in the deployment's tree.
    pub vmlinuz: PathBuf,
    /// Its initramfs, when the image ships one.
    pub initramfs: Option<PathBuf>,
}

/// Compares kernel versions the way `sort -V` does (numeric runs as numbers).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((pd, run)) if *pd == d => run.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    };
    let (x, y) = (split(a), split(b));
    for (p, q) in x.iter().zip(&y) {
        let o = if p.0 && q.0 {
            let (pt, qt) = (p.1.trim_start_matches('0'), q.1.trim_start_matches('0'));
            pt.len().cmp(&qt.len()).then_with(|| pt.cmp(qt))
        } else {
            p.1.cmp(&q.1)
        };
        if o.is_ne() {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

/// Finds the kernel of the tree at `root`: the highest `<kver>` under
/// `usr/lib/modules` that has a `vmlinuz`.
pub fn find(root: &Path) -> Result<KernelSource> {
    let modules = root.join("usr/lib/modules");
    let mut versions = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&modules) {
        for e in rd {
            let e = e.with_context(|| format!("listing {}", modules.display()))?;
            let v = e.file_name().to_string_lossy().into_owned();
            if e.path().join("vmlinuz").symlink_metadata().map(|m| m.is_file()).unwrap_or(false) {
                versions.push(v);
            }
        }
    }
    versions.sort_by(|a, b| version_cmp(b, a));
    let Some(version) = versions.into_iter().next() else {
        bail!("the image has no kernel: no usr/lib/modules/<version>/vmlinuz regular file");
    };
    let dir = modules.join(&version);
    let initramfs = dir.join("initramfs.img");
    let initramfs = initramfs.symlink_metadata().map(|m| m.is_file()).unwrap_or(false).then_some(initramfs);
    Ok(KernelSource { version, vmlinuz: dir.join("vmlinuz"), initramfs })
}

impl KernelSource {
    /// sha256 over `vmlinuz`'s length and bytes, then the initramfs's (hex), and the total size.
    pub fn checksum(&self) -> Result<(String, u64)> {
        let mut h = Hasher::new();
        let mut total = 0;
        for p in std::iter::once(&self.vmlinuz).chain(self.initramfs.as_ref()) {
            let len = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len();
            h.update(&len.to_le_bytes());
            let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            total += std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", p.display()))?;
        }
        Ok((h.finish().0.hex().to_string(), total))
    }
}

/// Where a kernel lives on the boot partition, as paths relative to `<boot>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledKernel {
    /// [`KernelSource::checksum`]'s hex digest: the kernel directory's name.
    pub checksum: String,
    /// `/hostctl/<stateroot>/<checksum>/vmlinuz`.
    pub linux: String,
    /// `/hostctl/<stateroot>/<checksum>/initramfs.img`, when there is one.
    pub initrd: Option<String>,
    /// Whether this call copied it (false: already there).
    pub copied: bool,
}

/// The kernel's and initramfs' file names in a kernel directory.
pub const VMLINUZ: &str = "vmlinuz";
/// The initramfs's file name, next to `vmlinuz`.
pub const INITRAMFS: &str = "initramfs.img";

/// `/hostctl/<stateroot>/<checksum>/<file>`: a kernel file's path relative to
/// the boot directory, as boot entries name it.
pub fn boot_path(stateroot: &str, checksum: &str, file: &str) -> String {
    format!("/hostctl/{stateroot}/{checksum}/{file}")
}

/// `<boot>/hostctl/<stateroot>`.
pub fn kernels_dir(boot: &Path, stateroot: &str) -> PathBuf {
    boot.join("hostctl").join(stateroot)
}

/// Copies `k` to the boot directory unless a copy with the same checksum is there.
pub fn install(k: &KernelSource, boot: &Path, stateroot: &str) -> Result<InstalledKernel> {
    let (checksum, _) = k.checksum()?;
    let parent = kernels_dir(boot, stateroot);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let rel = |f: &str| boot_path(stateroot, &checksum, f);
    let dest = parent.join(&checksum);
    let out = InstalledKernel {
        checksum: checksum.clone(),
        linux: rel(VMLINUZ),
        initrd: k.initramfs.as_ref().map(|_| rel(INITRAMFS)),
        copied: false,
    };
    if dest.is_dir() {
        return Ok(out);
    }
    let tmp = copy_beside(k, &parent, &checksum)?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming {} into place", dest.display()))?;
    fsutil::sync_dir(&parent)?;
    Ok(InstalledKernel { copied: true, ..out })
}

/// Copies `k`'s files into a fresh `.tmp-<checksum>` directory in `parent`, synced.
fn copy_beside(k: &KernelSource, parent: &Path, checksum: &str) -> Result<PathBuf> {
    let tmp = parent.join(format!("{}{checksum}", fsutil::TMP_PREFIX));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    copy_synced(&k.vmlinuz, &tmp.join(VMLINUZ))?;
    if let Some(i) = &k.initramfs {
        copy_synced(i, &tmp.join(INITRAMFS))?;
    }
    fsutil::sync_dir(&tmp)?;
    Ok(tmp)
}

/// Rewrites the kernel directory `checksum` of `stateroot` from `k` (`fsck
/// --repair`: its files on the boot partition were damaged). The copy is
/// checked against `checksum` before it replaces the damaged directory;
/// until the final rename, the old directory stays in place.
pub fn reinstall(k: &KernelSource, boot: &Path, stateroot: &str, checksum: &str) -> Result<()> {
    let (got, _) = k.checksum()?;
    if got != checksum {
        bail!(
            "the deployment's own kernel files ({}) do not match the recorded checksum {checksum}",
            k.vmlinuz.display()
        );
    }
    let parent = kernels_dir(boot, stateroot);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = copy_beside(k, &parent, checksum)?;
    let copied = KernelSource {
        version: k.version.clone(),
        vmlinuz: tmp.join(VMLINUZ),
        initramfs: k.initramfs.as_ref().map(|_| tmp.join(INITRAMFS)),
    };
    if copied.checksum()?.0 != checksum {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        bail!("the copy of {} on the boot partition does not read back as written", k.vmlinuz.display());
    }
    let dest = parent.join(checksum);
    let old = parent.join(format!("{}old-{checksum}", fsutil::TMP_PREFIX));
    if dest.symlink_metadata().is_ok() {
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        std::fs::rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming {} into place", dest.display()))?;
    match old.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&old),
        Ok(_) => std::fs::remove_file(&old),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("removing {}", old.display()))?;
    fsutil::sync_dir(&parent)
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut dst = std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    std::io::copy(&mut src, &mut dst).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    dst.flush()?;
    dst.sync_all().with_context(|| format!("syncing {}", to.display()))
}

/// Removes kernel directories of `stateroot` whose checksum is not in `keep`,
/// and `.tmp-` leftovers. Returns how many were removed.
pub fn prune(boot: &Path, stateroot: &str, keep: &[String]) -> Result<usize> {
    let parent = kernels_dir(boot, stateroot);
    let mut removed = fsutil::remove_tmp_leftovers(&parent)?;
    let rd = match std::fs::read_dir(&parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("listing {}", parent.display())),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) && e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsutil::sync_dir(&parent)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn version_cmp_table() {
        for (a, b, want) in [
            ("6.1.0-10-amd64", "6.1.0-9-amd64", Greater),
            ("6.12.1", "6.2.9", Greater),
            ("5.10", "5.10", Equal),
            ("5.10", "5.10.1", Less),
            ("6.1.0-rc1", "6.1.0-rc2", Less),
        ] {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
        }
    }

    fn tree(root: &Path, kvers: &[(&str, &str, bool)]) {
        for (v, content, initrd) in kvers {
            let d = root.join("usr/lib/modules").join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vmlinuz"), content).unwrap();
            if *initrd {
                std::fs::write(d.join("initramfs.img"), format!("initrd of {v}")).unwrap();
            }
        }
    }

    #[test]
    fn find_picks_highest_version_with_a_kernel() {
        let d = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", find(d.path()).unwrap_err()).contains("no kernel"));
        tree(d.path(), &[("6.1.0-9", "k9", true), ("6.1.0-10", "k10", false)]);
        std::fs::create_dir_all(d.path().join("usr/lib/modules/7.0-nokernel")).unwrap();
        let k = find(d.path()).unwrap();
        assert_eq!(k.version, "6.1.0-10");
        assert_eq!(k.initramfs, None);
    }

    /// The checksum names directories already on boot partitions: it must
    /// stay sha256(len(vmlinuz) as u64 LE, vmlinuz, len(initramfs), initramfs).
    #[test]
    fn checksum_format_is_stable() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path(), &[("6.1", "kernel one", true)]);
        let k = find(d.path()).unwrap();
        let initramfs = std::fs::read(k.initramfs.as_ref().unwrap()).unwrap();
        let mut input = Vec::new();
        for bytes in [&b"kernel one"[..], &initramfs] {
            input.extend((bytes.len() as u64).to_le_bytes());
            input.extend(bytes);
        }
        let want = crate::digest::Digest::of(&input);
        assert_eq!(k.checksum().unwrap(), (want.hex().to_string(), 10 + initramfs.len() as u64));
    }

    #[test]
    fn install_dedups_by_checksum_and_prune_keeps_listed() {
        let (a, b, boot) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(a.path(), &[("6.1", "kernel one", true)]);
        tree(b.path(), &[("6.1", "kernel two", true)]);
        let ka = find(a.path()).unwrap();
        let i1 = install(&ka, boot.path(), "default").unwrap();
        assert!(i1.copied);
        let i2 = install(&ka, boot.path(), "default").unwrap();
        assert!(!i2.copied, "same kernel is not copied twice");
        assert_eq!(i1.linux, i2.linux);
        let on_boot = boot.path().join(i1.linux.trim_start_matches('/'));
        assert_eq!(std::fs::read(on_boot).unwrap(), b"kernel one");
        let i3 = install(&find(b.path()).unwrap(), boot.path(), "default").unwrap();
        assert_ne!(i3.checksum, i1.checksum);
        // Same vmlinuz with a different initramfs is a different checksum.
        std::fs::write(a.path().join("usr/lib/modules/6.1/initramfs.img"), "other").unwrap();
        assert_ne!(find(a.path()).unwrap().checksum().unwrap().0, i1.checksum);
        assert_eq!(prune(boot.path(), "default", std::slice::from_ref(&i3.checksum)).unwrap(), 1);
        assert!(!boot.path().join(i1.linux.trim_start_matches('/')).exists());
        assert!(boot.path().join(i3.linux.trim_start_matches('/')).exists());
    }
}
