//! The bound images of a system being installed (`install to-disk`,
//! `install to-filesystem`): pulled into the new system's own podman storage
//! (`/var/lib/containers/storage` of its stateroot's `/var`) and pinned by
//! digest, as staging does on a running host ([`crate::apps::bound`]), so
//! that its first boot runs them with the registry unreachable.
//!
//! The installing host's podman does the pull, pointed at the target's
//! storage with `--root` and given a scratch `--runroot` and `--tmpdir`. It
//! uses the storage driver the new system is configured with (its
//! `storage.conf`), since that system's podman reads the images with that
//! driver. podman records the paths it ran with in its database (`libpod/`
//! in the storage); the installed system's podman refuses a database made
//! with other paths ("database static dir … does not match our static dir
//! …: database configuration mismatch"), and nothing but images was made, so
//! that database is removed after the pulls and the installed system's
//! podman creates its own at first use. Where it is depends on podman's
//! version and build: boltdb in `libpod/` before podman 5; SQLite in
//! `libpod/` or, as Debian trixie's podman 5.4 puts it, at the top of the
//! storage (`db.sql`). Both places are cleared.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::apps::bound::{BoundImagesHook, STATE_DIR};
use crate::deploy::hooks::StageHook;
use crate::deploy::stage::{Deployer, Staged};
use crate::host::podman::{PodmanCli, PullSettings};

/// Where podman keeps images, under a root (`/var/lib/containers/storage`).
pub const STORAGE_DIR: &str = "var/lib/containers/storage";

/// The storage.conf files a system's podman reads, most important first:
/// the admin's (the image's `/etc`, kept in `usr/etc` until the first
/// deployment's `/etc` is made) and the vendor's.
const STORAGE_CONFS: [&str; 3] =
    ["usr/etc/containers/storage.conf", "etc/containers/storage.conf", "usr/share/containers/storage.conf"];

/// The stage hook of an install: pulls the new deployment's bound images
/// into the target's podman storage and pins them (the drop-ins and the
/// record in the tree, the ledger in the target's `/var/lib/hostctl`).
pub struct TargetBoundImages {
    /// The podman that pulls (the installing host's), before it is pointed at the target.
    pub podman: PodmanCli,
    /// Registry settings for the pulls (the install's command line).
    pub pull: PullSettings,
}

impl StageHook for TargetBoundImages {
    fn name(&self) -> &str {
        "pulling bound images into the new system"
    }

    fn staged(&self, d: &Deployer, staged: &Staged) -> Result<()> {
        let tree = d.layout.tree(&staged.id);
        if crate::apps::bound::scan(&tree)?.is_empty() {
            return Ok(());
        }
        pull_into(&self.podman, &self.pull, &tree, &d.layout.var())
    }
}

/// Pulls and pins the bound images of `tree` into the storage under `var`
/// (the new system's `/var`).
pub fn pull_into(podman: &PodmanCli, pull: &PullSettings, tree: &Path, var: &Path) -> Result<()> {
    let graphroot = under_var(var, STORAGE_DIR);
    std::fs::create_dir_all(&graphroot).with_context(|| format!("creating {}", graphroot.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("hostctl-podman-run-")
        .tempdir()
        .context("creating podman's scratch run directory")?;
    let mut global = vec![
        format!("--root={}", graphroot.display()),
        format!("--runroot={}", scratch.path().join("run").display()),
        format!("--tmpdir={}", scratch.path().join("libpod").display()),
    ];
    if let Some(driver) = storage_driver(tree)? {
        global.push(format!("--storage-driver={driver}"));
    }
    let target = PodmanCli { global, ..podman.clone() };
    let hook = BoundImagesHook { podman: &target, pull: pull.clone(), state_dir: under_var(var, STATE_DIR) };
    let pulled = hook.pin_tree(tree);
    remove_podman_database(&graphroot)?;
    let images = pulled?;
    tracing::info!("{} bound image(s) pulled into {}", images.len(), graphroot.display());
    Ok(())
}

/// The storage driver the system in `tree` is configured with (`[storage]
/// driver` of the first storage.conf that sets it), if any. None set: its
/// podman takes the driver it finds in use in the storage, so any will do.
pub fn storage_driver(tree: &Path) -> Result<Option<String>> {
    for rel in STORAGE_CONFS {
        let path = tree.join(rel);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let conf: toml::Table = toml::from_str(&text).with_context(|| format!("parsing /{rel}"))?;
        let driver = conf.get("storage").and_then(|s| s.get("driver")).and_then(|d| d.as_str());
        if let Some(d) = driver.filter(|d| !d.is_empty()) {
            return Ok(Some(d.to_string()));
        }
    }
    Ok(None)
}

/// What the installing podman records about itself in the storage: its
/// database (boltdb before podman 5; SQLite, with its journal files, in
/// `libpod/` or at the top), which holds its paths, and its choice of network
/// backend, which is the new system's to make.
const PODMAN_DATABASE: [&str; 8] = [
    "libpod/bolt_state.db",
    "libpod/db.sql",
    "libpod/db.sql-wal",
    "libpod/db.sql-shm",
    "db.sql",
    "db.sql-wal",
    "db.sql-shm",
    "defaultNetworkBackend",
];

/// Removes [`PODMAN_DATABASE`] from `graphroot`.
fn remove_podman_database(graphroot: &Path) -> Result<()> {
    for db in PODMAN_DATABASE {
        crate::fsutil::remove_file_if_present(&graphroot.join(db))?;
    }
    Ok(())
}

/// `rel` (a path under `var/`) in the `/var` directory `var`.
fn under_var(var: &Path, rel: &str) -> PathBuf {
    var.join(rel.strip_prefix("var/").expect("a path under var/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files podman 4 (boltdb) and podman 5 (SQLite, in `libpod/` or, as
    /// Debian trixie's 5.4 does, at the top) leave in a storage it was pointed
    /// at with `--root`, and the files of the storage itself.
    #[test]
    fn the_installing_podmans_database_goes_wherever_podman_put_it_and_the_images_stay() {
        let t = tempfile::tempdir().unwrap();
        let kept = ["overlay-images/images.json", "overlay-layers/layers.json", "storage.lock", "libpod/.keep"];
        for rel in PODMAN_DATABASE.iter().chain(kept.iter()) {
            let p = t.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        remove_podman_database(t.path()).unwrap();
        for rel in PODMAN_DATABASE {
            assert!(!t.path().join(rel).exists(), "{rel} left behind");
        }
        for rel in kept {
            assert!(t.path().join(rel).exists(), "{rel} removed");
        }
        remove_podman_database(t.path()).expect("nothing to remove is fine");
    }

    #[test]
    fn the_storage_driver_comes_from_the_first_storage_conf_that_sets_one() {
        let t = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = t.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        assert_eq!(storage_driver(t.path()).unwrap(), None, "no storage.conf at all");
        write(
            "usr/share/containers/storage.conf",
            "[storage]\ndriver = \"overlay\"\nrunroot = \"/run/containers/storage\"\n",
        );
        assert_eq!(storage_driver(t.path()).unwrap().as_deref(), Some("overlay"));
        // The admin's file without a driver leaves the vendor's in force.
        write("usr/etc/containers/storage.conf", "[storage]\ngraphroot = \"/var/lib/containers/storage\"\n");
        assert_eq!(storage_driver(t.path()).unwrap().as_deref(), Some("overlay"));
        write("usr/etc/containers/storage.conf", "[storage]\ndriver = \"vfs\"\n");
        assert_eq!(storage_driver(t.path()).unwrap().as_deref(), Some("vfs"));
        write("usr/etc/containers/storage.conf", "[storage\n");
        let e = format!("{:#}", storage_driver(t.path()).unwrap_err());
        assert!(e.contains("usr/etc/containers/storage.conf"), "{e}");
    }
}
