//! Staging and finalising deployments, and reconciling the sysroot with
//! `state.json` after a crash.
//!
//! Order of writes when staging (each step atomic; a crash between two steps
//! leaves leftovers that [`Deployer::reconcile`] removes):
//! 1. the tree is checked out into `deploy/<stateroot>/.tmp-<id>`;
//! 2. the stateroot's `/var` is seeded if it does not exist yet;
//! 3. the metadata `<id>.json` is written, the tree renamed to `<id>`;
//! 4. `state.json` records the deployment as staged (the commit point).
//!
//! Finalising ([`Deployer::finalize_staged`]) merges `/etc` into
//! `<id>/.tmp-etc`, renames it to `<id>/etc`, copies the kernel, marks the
//! metadata finalised, commits `state.json` with the deployment first in the
//! boot order, and writes the boot entries last.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::boot::entry::{self, DEFAULT_ROOT_KARG};
use crate::boot::{bls, kargs, kernel};
use crate::deploy::checkout::{checkout, CheckoutOptions};
use crate::deploy::deployment::{make_id, DeploymentId, KernelInfo, Layout, Metadata, METADATA_VERSION};
use crate::deploy::etc_merge::{self, Conflict};
use crate::deploy::state::{self, Spec, State};
use crate::deploy::{booted, preflight, var};
use crate::error::InsufficientSpace;
use crate::fsutil;
use crate::oci::identity::ImageIdentity;
use crate::pull::PulledImage;
use crate::store::Store;
use crate::sysroot::Sysroot;

/// Everything needed to change a stateroot's deployments. Callers hold the sysroot lock.
pub struct Deployer {
    /// The physical root.
    pub sysroot: Sysroot,
    /// The boot partition's mount point.
    pub boot: PathBuf,
    /// Where the stateroot's deployments live.
    pub layout: Layout,
    /// The content store the trees are checked out from.
    pub store: Store,
}

/// What staging produced.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    /// The new deployment's id.
    pub id: DeploymentId,
    /// Its metadata, as written.
    pub metadata: Metadata,
    /// /etc conflicts between the admin's changes and the new image, listed before staging.
    pub conflicts: Vec<Conflict>,
    /// The stateroot's /var was created from the image's `var` (it did not exist).
    pub var_created: bool,
}

/// What [`Deployer::stage`] records with the new deployment, in the same
/// `state.json` commit.
#[derive(Clone, Debug, Default)]
pub struct StageOptions {
    /// Becomes the tracked image (`switch`).
    pub spec: Option<Spec>,
    /// Locked (`--download-only`): the shutdown service leaves it
    /// unfinalised; only the next `upgrade` or `switch` finalises it.
    pub locked: bool,
}

/// What finalising did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finalized {
    /// The deployment finalised.
    pub id: DeploymentId,
    /// The deployment whose /etc was merged (the booted one, else the default).
    pub merged_from: Option<String>,
    /// /etc paths changed both locally and in the image; the local version won.
    pub conflicts: Vec<Conflict>,
    /// The kernel was copied to the boot partition (false: a copy was there).
    pub kernel_copied: bool,
}

impl Deployer {
    /// Opens the sysroot's store and the stateroot recorded in `state.json`.
    pub fn open(sysroot: &Sysroot, boot: &Path) -> Result<Deployer> {
        let state = State::load(&sysroot.state_path())?;
        Ok(Deployer {
            sysroot: sysroot.clone(),
            boot: boot.to_path_buf(),
            layout: Layout::new(sysroot, &state.stateroot),
            store: Store::open(sysroot)?,
        })
    }

    /// Reads the stateroot's state.
    pub fn load_state(&self) -> Result<State> {
        State::load(&self.sysroot.state_path())
    }

    /// Writes the stateroot's state, crash-safely.
    pub fn save_state(&self, s: &State) -> Result<()> {
        s.save(&self.sysroot.state_path())
    }

    /// The booted deployment (see [`booted`]).
    pub fn booted(&self) -> Result<Option<String>> {
        Ok(booted::detect(&self.sysroot, &self.boot, &self.layout)?.0)
    }

    /// Brings the disk in line with `state.json` after an interrupted run:
    /// removes `.tmp-` leftovers and deployments the state does not know,
    /// undoes a half-finalised /etc, rewrites the boot entries and removes
    /// kernels no entry uses. Cheap when there is nothing to do.
    pub fn reconcile(&self) -> Result<State> {
        let state = self.load_state()?;
        let dir = &self.layout.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fsutil::remove_tmp_leftovers(dir)?;
        let known = state.all();
        for id in &known {
            if !self.layout.tree(id).is_dir() || !self.layout.metadata(id).is_file() {
                bail!(
                    "deployment {id} is listed in {} but its tree or metadata is missing in {}",
                    self.sysroot.state_path().display(),
                    dir.display()
                );
            }
        }
        if let Some(id) = state.staged_unfinalized() {
            fsutil::remove_tmp_leftovers(&self.layout.tree(id))?;
        }
        // Entries first: an entry may still name a deployment that an
        // interrupted cleanup already dropped from the state.
        self.write_boot_entries(&state)?;
        let mut removed = false;
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "var" {
                continue;
            }
            let id = name.strip_suffix(".json").unwrap_or(&name);
            if DeploymentId::parse(id).is_ok() && !known.iter().any(|k| k == id) {
                tracing::info!("removing {} (not in state.json: left by an interrupted run)", e.path().display());
                remove_any(&e.path())?;
                removed = true;
            }
        }
        if removed {
            fsutil::sync_dir(dir)?;
        }
        Ok(state)
    }

    /// Writes the boot entries for `state`'s order and removes unused kernels.
    pub fn write_boot_entries(&self, state: &State) -> Result<()> {
        let mut entries = Vec::new();
        let mut kernels = Vec::new();
        for id in &state.deployments {
            let m = Metadata::load(&self.layout, id)?;
            entries.push((id.clone(), self.entry_for(state, &m)));
            kernels.push(m.kernel.checksum.clone());
        }
        if let Some(id) = state.staged_unfinalized() {
            // Its kernel may already be on the boot partition; keep it.
            kernels.push(Metadata::load(&self.layout, id)?.kernel.checksum);
        }
        // New entries are counted when there is something to fall back to (docs/boot.md).
        let tries = (entries.len() > 1).then(|| self.boot_tries(state));
        bls::sync_counted(&bls::entries_dir(&self.boot), &state.stateroot, &entries, tries)?;
        kernel::prune(&self.boot, &state.stateroot, &kernels)?;
        Ok(())
    }

    /// The tries a new entry starts with: `/etc/kernel/tries` of the default
    /// deployment (its merged /etc, so the image can ship a value and the admin
    /// override it, as with systemd's kernel-install), else
    /// [`counting::DEFAULT_TRIES`](crate::boot::counting::DEFAULT_TRIES).
    fn boot_tries(&self, state: &State) -> u32 {
        let Some(id) = state.deployments.first() else { return crate::boot::counting::DEFAULT_TRIES };
        let path = self.layout.tree(id).join("etc/kernel/tries");
        match std::fs::read_to_string(&path) {
            Ok(text) => crate::boot::counting::parse_tries(&text).unwrap_or_else(|| {
                tracing::warn!(
                    "{} should hold a number of tries from 1 to {}; using {}",
                    path.display(),
                    crate::boot::counting::MAX_TRIES,
                    crate::boot::counting::DEFAULT_TRIES
                );
                crate::boot::counting::DEFAULT_TRIES
            }),
            Err(_) => crate::boot::counting::DEFAULT_TRIES,
        }
    }

    /// The boot entry `m`'s deployment gets in `state` (what `fsck` checks the entries against).
    pub fn entry_for(&self, state: &State, m: &Metadata) -> bls::BlsEntry {
        entry::build(&entry::EntryInputs {
            title: m.title(),
            stateroot: &state.stateroot,
            kernel_checksum: &m.kernel.checksum,
            has_initramfs: m.kernel.has_initramfs,
            local_kargs: &state.local_kargs,
            deployment_path: self.layout.karg_path(&m.id),
            image_kargs: &m.kargs,
        })
    }

    /// The deployment whose /etc is merged into a new one: the booted one,
    /// else the default, never `except`.
    fn merge_source(&self, state: &State, booted: Option<&str>, except: &str) -> Option<String> {
        let r = state::roles(state, booted);
        r.booted.or(r.default).filter(|d| d != except && state.deployments.contains(d))
    }

    /// Checks out `image` as a new deployment and records it as staged (not
    /// finalised), with `opts` (tracked image, lock) in the same commit.
    pub fn stage(&self, image: &PulledImage, opts: StageOptions, booted: Option<&str>) -> Result<Staged> {
        let state = self.load_state()?;
        let id = make_id(&image.manifest_digest, state.next_serial);
        let tmp = self.layout.dir.join(format!("{}{id}", fsutil::TMP_PREFIX));
        std::fs::create_dir_all(&self.layout.dir)?;
        let result = self.stage_tree(image, &state, &id, &tmp, booted);
        let (metadata, conflicts, var_created) = match result {
            Ok(r) => r,
            Err(e) => {
                // Nothing half-staged stays behind, even on a full disk.
                if let Err(e2) = remove_any(&tmp) {
                    tracing::warn!("could not remove {}: {e2:#}", tmp.display());
                }
                let _ = std::fs::remove_file(self.layout.metadata(&id));
                return Err(e);
            }
        };
        let mut next = state::after_stage(&state, &id, booted);
        next.next_serial = state.next_serial + 1;
        if let Some(spec) = opts.spec {
            next.spec = Some(spec);
        }
        next.staged_locked = opts.locked;
        if state.deployments.is_empty() && state.local_kargs.is_empty() {
            next.local_kargs = initial_local_kargs(&self.sysroot);
        }
        self.save_state(&next)?;
        tracing::debug!("staged {id}; order {:?}", next.deployments);
        Ok(Staged { id, metadata, conflicts, var_created })
    }

    fn stage_tree(
        &self,
        image: &PulledImage,
        state: &State,
        id: &str,
        tmp: &Path,
        booted: Option<&str>,
    ) -> Result<(Metadata, Vec<Conflict>, bool)> {
        let mut indexes = Vec::new();
        for l in &image.layers {
            indexes.push(self.store.layer_index(&l.diff_id).with_context(|| format!("layer {}", l.diff_id))?);
        }
        if tmp.symlink_metadata().is_ok() {
            remove_any(tmp)?;
        }
        let started = std::time::Instant::now();
        let stats = checkout(&self.store, &indexes, tmp, &CheckoutOptions { relocate_etc: true })
            .with_context(|| format!("checking out {} into {}", image.imgref, tmp.display()))?;
        tracing::info!(
            "checked out deployment {id} in {:.1}s: {} files, {} directories, {} symlinks",
            started.elapsed().as_secs_f64(),
            stats.files,
            stats.dirs,
            stats.symlinks
        );
        let k = kernel::find(tmp)?;
        tracing::info!(
            "kernel {} ({})",
            k.version,
            if k.initramfs.is_some() { "with initramfs" } else { "no initramfs" }
        );
        let (checksum, ksize) = k.checksum()?;
        // The kernel's real size is known now: check the boot partition before copying.
        if !kernel::kernels_dir(&self.boot, &state.stateroot).join(&checksum).is_dir() {
            let free = preflight::free(&self.boot)?;
            if ksize > free.available {
                return Err(
                    InsufficientSpace { path: self.boot.clone(), needed: ksize, available: free.available }.into()
                );
            }
        }
        let image_kargs = kargs::read_image_kargs(tmp)?;
        let conflicts = match self.merge_source(state, booted, id) {
            Some(src) => {
                let s = self.layout.tree(&src);
                etc_merge::plan(&s.join("usr/etc"), &s.join("etc"), &tmp.join("usr/etc"))
                    .context("planning the /etc merge")?
                    .conflicts
            }
            None => Vec::new(),
        };
        for c in &conflicts {
            tracing::warn!("/etc conflict: {}: {}", c.path.display(), c.resolution);
        }
        let var_created = var::seed(&self.layout.var(), tmp)?;
        let metadata = Metadata {
            version: METADATA_VERSION,
            id: id.to_string(),
            stateroot: state.stateroot.clone(),
            image: ImageIdentity::new(
                &image.imgref,
                image.manifest_digest.clone(),
                image.config_digest.clone(),
                &image.config,
            ),
            layers: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            kernel: KernelInfo { version: k.version.clone(), checksum, has_initramfs: k.initramfs.is_some() },
            kargs: image_kargs,
            verdict: Some(image.verdict.clone()),
            staged_at: crate::util::now_rfc3339(),
            finalized_at: None,
        };
        metadata.save(&self.layout)?;
        // The checkout's directories and links, and the store's objects they
        // link to (a pull commits layers without waiting for the disk: see
        // store::durability), must be on disk before the rename makes the
        // tree visible under its final name. The second syncfs only matters
        // when the deployments are on another filesystem than the store.
        self.store.sync()?;
        fsutil::syncfs(tmp)?;
        std::fs::rename(tmp, self.layout.tree(id)).with_context(|| format!("renaming {} into place", tmp.display()))?;
        fsutil::sync_dir(&self.layout.dir)?;
        Ok((metadata, conflicts, var_created))
    }

    /// Finalises the staged deployment: merges /etc from the booted (or
    /// default) deployment, copies the kernel, makes it the default and writes
    /// the boot entries. `Ok(None)` when nothing is staged unfinalised.
    pub fn finalize_staged(&self, booted: Option<&str>) -> Result<Option<Finalized>> {
        let state = self.load_state()?;
        let Some(id) = state.staged_unfinalized() else { return Ok(None) };
        let id = DeploymentId::parse(id).context("the staged deployment in state.json")?;
        let tree = self.layout.tree(&id);
        let mut meta = Metadata::load(&self.layout, &id)?;
        let src = self.merge_source(&state, booted, &id);
        let tmp_etc = tree.join(format!("{}etc", fsutil::TMP_PREFIX));
        let etc = tree.join("etc");
        for p in [&tmp_etc, &etc] {
            if p.symlink_metadata().is_ok() {
                remove_any(p)?; // a previous, interrupted finalisation
            }
        }
        let defaults = tree.join("usr/etc");
        let conflicts = match &src {
            Some(s) => {
                let s = self.layout.tree(s);
                let (old_defaults, current) = (s.join("usr/etc"), s.join("etc"));
                let plan = etc_merge::plan(&old_defaults, &current, &defaults).context("planning the /etc merge")?;
                etc_merge::apply(&plan, &current, &defaults, &tmp_etc).context("merging /etc")?;
                plan.conflicts
            }
            None if defaults.is_dir() => {
                // Keeps xattrs (e.g. SELinux labels) and syncs, like the merge.
                etc_merge::copy_defaults(&defaults, &tmp_etc).context("copying the first /etc")?;
                Vec::new()
            }
            None => {
                std::fs::create_dir(&tmp_etc)?;
                Vec::new()
            }
        };
        fsutil::sync_dir(&tmp_etc)?;
        std::fs::rename(&tmp_etc, &etc).with_context(|| format!("renaming {} into place", etc.display()))?;
        fsutil::sync_dir(&tree)?;
        let k = kernel::find(&tree)?;
        let installed = kernel::install(&k, &self.boot, &state.stateroot)?;
        if installed.checksum != meta.kernel.checksum {
            bail!("the kernel of deployment {id} changed since it was staged");
        }
        meta.finalized_at = Some(crate::util::now_rfc3339());
        meta.save(&self.layout)?;
        let next = state::after_finalize(&state)?;
        self.save_state(&next)?;
        self.write_boot_entries(&next)?;
        Ok(Some(Finalized { id, merged_from: src, conflicts, kernel_copied: installed.copied }))
    }
}

/// `root=` for a new sysroot: the running system's when the sysroot is `/`,
/// else [`DEFAULT_ROOT_KARG`] (an installer records its own choice).
fn initial_local_kargs(sysroot: &Sysroot) -> Vec<String> {
    if sysroot.is_running_root() {
        if let Ok(c) = std::fs::read_to_string("/proc/cmdline") {
            if let Some(r) = bls::karg(&c, "root") {
                return vec![format!("root={r}")];
            }
        }
    }
    vec![DEFAULT_ROOT_KARG.to_string()]
}

/// Removes a file, symlink or directory tree; missing is fine.
pub fn remove_any(p: &Path) -> Result<()> {
    let r = match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.with_context(|| format!("removing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::oci::identity::ImageReference;

    fn fake_deployment(d: &Deployer, id: &str, kernel: &str) {
        std::fs::create_dir_all(d.layout.tree(id).join("etc")).unwrap();
        Metadata {
            version: METADATA_VERSION,
            id: id.into(),
            stateroot: "default".into(),
            image: ImageIdentity {
                image: ImageReference::from_text("reg/os:latest"),
                image_digest: Digest::of(id.as_bytes()),
                config_digest: Digest::of(b"config"),
                version: None,
                timestamp: None,
                architecture: None,
            },
            layers: vec![],
            kernel: KernelInfo { version: "6.1".into(), checksum: kernel.into(), has_initramfs: false },
            kargs: vec!["quiet".into()],
            verdict: None,
            staged_at: "2026-01-01T00:00:00Z".into(),
            finalized_at: Some("2026-01-01T00:00:00Z".into()),
        }
        .save(&d.layout)
        .unwrap();
        std::fs::create_dir_all(kernel::kernels_dir(&d.boot, "default").join(kernel)).unwrap();
    }

    /// What a crash can leave behind, and what the next run does with it.
    #[test]
    fn reconcile_removes_crash_leftovers_and_rewrites_entries_from_state() {
        let tmp = tempfile::tempdir().unwrap();
        let sysroot = Sysroot::open(tmp.path()).unwrap();
        let d = Deployer::open(&sysroot, &tmp.path().join("boot")).unwrap();
        std::fs::create_dir_all(&d.layout.dir).unwrap();
        fake_deployment(&d, "aaa.1", "k1");
        fake_deployment(&d, "bbb.2", "k2");
        // Crashed after renaming a new tree, before committing the state.
        fake_deployment(&d, "ccc.3", "k3");
        // Crashed mid-checkout and mid-kernel-copy.
        std::fs::create_dir_all(d.layout.dir.join(".tmp-ddd.4/usr")).unwrap();
        std::fs::create_dir_all(kernel::kernels_dir(&d.boot, "default").join(".tmp-k4")).unwrap();
        std::fs::create_dir_all(d.layout.var()).unwrap();
        let state = State { deployments: vec!["bbb.2".into(), "aaa.1".into()], ..State::default() };
        d.save_state(&state).unwrap();

        assert_eq!(d.reconcile().unwrap(), state);
        let mut left: Vec<String> =
            std::fs::read_dir(&d.layout.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["aaa.1", "aaa.1.json", "bbb.2", "bbb.2.json", "var"]);
        let mut kernels: Vec<String> = std::fs::read_dir(kernel::kernels_dir(&d.boot, "default"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kernels.sort();
        assert_eq!(kernels, ["k1", "k2"]);
        let entries = bls::list(&bls::entries_dir(&d.boot), "default").unwrap();
        let ids: Vec<_> = entries.iter().map(|(n, _)| n.deployment.as_str()).collect();
        assert_eq!(ids, ["bbb.2", "aaa.1"]);
        let text = std::fs::read_to_string(&entries[0].1).unwrap();
        assert!(text.contains("options root=LABEL=hostctl-root hostctl=/hostctl/deploy/default/bbb.2 quiet"), "{text}");
        assert!(text.contains("linux /hostctl/default/k2/vmlinuz") && !text.contains("initrd"), "{text}");

        // A listed deployment whose tree vanished is an error that names it, not a silent fix.
        std::fs::remove_dir_all(d.layout.tree("aaa.1")).unwrap();
        let e = format!("{:#}", d.reconcile().unwrap_err());
        assert!(e.contains("aaa.1") && e.contains("missing"), "{e}");
    }
}
