//! Every temporary a killed or failed hostctl command can leave, and their
//! removal by `hostctl cleanup`.
//!
//! All of them carry the `.tmp-` prefix ([`crate::fsutil::TMP_PREFIX`]) or live in
//! the store's scratch directory:
//!
//! | where | what |
//! |---|---|
//! | `hostctl/.tmp-*` | `state.json` being replaced |
//! | `hostctl/repo/tmp/*` | objects being written by a layer import |
//! | `hostctl/repo/{blobs/sha256,layers,layers/by-blob,images,unsynced}/.tmp-*` | manifests, configs, layer indexes, aliases, image records, durability marks being replaced |
//! | `hostctl/deploy/<stateroot>/.tmp-*` | a deployment being checked out or removed, metadata being replaced, a `/var` being seeded, a path being rewritten by `fsck --repair` (`.tmp-fsck-<pid>`) |
//! | `hostctl/deploy/<stateroot>/<id>/.tmp-etc` | an `/etc` being merged |
//! | `<boot>/loader/entries/.tmp-*` | boot entries being replaced |
//! | `<boot>/hostctl/<stateroot>/.tmp-*` | a kernel being copied |
//!
//! Every command that writes them holds the sysroot lock, and so does
//! cleanup: what it finds belongs to no running command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::deploy::stage::{remove_any, Deployer};
use crate::fsutil::TMP_PREFIX;

/// The directories whose `.tmp-*` entries are leftovers (and `repo/tmp`,
/// all of whose entries are).
fn places(d: &Deployer) -> Result<(Vec<PathBuf>, PathBuf)> {
    let hostctl = d.sysroot.hostctl_dir();
    let repo = d.sysroot.repo_dir();
    let mut dirs = vec![hostctl.clone()];
    for sub in ["blobs/sha256", "layers", "layers/by-blob", "images", "unsynced"] {
        dirs.push(repo.join(sub));
    }
    dirs.push(crate::boot::bls::entries_dir(&d.boot));
    for stateroot in subdirs(&d.sysroot.deploy_dir())? {
        let name = stateroot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        dirs.push(crate::boot::kernel::kernels_dir(&d.boot, &name));
        // Deployment trees (an `/etc` being merged); not the stateroot's `/var`.
        for tree in subdirs(&stateroot)? {
            let file = tree.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if file != "var" && !file.starts_with(TMP_PREFIX) {
                dirs.push(tree);
            }
        }
        dirs.push(stateroot);
    }
    Ok((dirs, repo.join("tmp")))
}

/// Directories directly inside `dir` (none if it does not exist).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in crate::fsutil::read_dir_if_present(dir)? {
        if e.file_type()?.is_dir() {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Removes every temporary listed in the module docs; returns how many. The
/// caller holds the sysroot lock.
pub fn remove(d: &Deployer) -> Result<usize> {
    let (dirs, scratch) = places(d)?;
    let mut removed = 0;
    for dir in dirs {
        removed += crate::fsutil::remove_tmp_leftovers(&dir)?;
    }
    match std::fs::read_dir(&scratch) {
        Ok(rd) => {
            for e in rd {
                let e = e.with_context(|| format!("listing {}", scratch.display()))?;
                remove_any(&e.path())?;
                removed += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", scratch.display())),
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::Sysroot;

    /// One leftover in each place of the table in the module docs, beside
    /// files that are no leftovers: only the leftovers go.
    #[test]
    fn every_kind_of_leftover_goes_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let sysroot = Sysroot::open(tmp.path()).unwrap();
        let boot = tmp.path().join("boot");
        let d = Deployer::open(&sysroot, &boot).unwrap();
        let h = sysroot.hostctl_dir();
        let leftovers = [
            h.join(".tmp-state"),
            h.join("repo/tmp/.tmp-obj-999999-0-1"),
            h.join("repo/tmp/stray"),
            h.join("repo/blobs/sha256/.tmp-a"),
            h.join("repo/layers/.tmp-b"),
            h.join("repo/layers/by-blob/.tmp-c"),
            h.join("repo/images/.tmp-d"),
            h.join("repo/unsynced/.tmp-e"),
            h.join("deploy/default/.tmp-abc.1/usr/bin/x"),
            h.join("deploy/default/.tmp-var/lib/x"),
            h.join("deploy/default/.tmp-fsck-4242/bin/.tmp-old/x"),
            h.join("deploy/default/def.2/.tmp-etc/motd"),
            h.join("deploy/other/.tmp-f"),
            boot.join("loader/entries/.tmp-g"),
            boot.join("hostctl/default/.tmp-k/vmlinuz"),
        ];
        let kept = [
            h.join("state.json"),
            h.join("repo/unsynced/0000"),
            h.join("deploy/default/def.2/etc/motd"),
            h.join("deploy/default/def.2.json"),
            h.join("deploy/default/var/.tmp-belongs-to-the-admin"),
            boot.join("loader/entries/hostctl-default-1-def.2.conf"),
            boot.join("hostctl/default/k1/vmlinuz"),
        ];
        for p in leftovers.iter().chain(&kept) {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove(&d).unwrap(), leftovers.len());
        for p in &leftovers {
            // Gone, with the `.tmp-` entry (or scratch entry) that held it.
            let held_by = p.ancestors().find(|a| {
                a.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                    || a.parent() == Some(h.join("repo/tmp").as_path())
            });
            assert!(!held_by.unwrap().exists(), "{p:?}");
        }
        for p in &kept {
            assert!(p.is_file(), "{p:?} was removed");
        }
    }
}
